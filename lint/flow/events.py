"""Events the flow analysis records as it walks: what the program does to its values, in order.

Rules are queries over these (``FileContext.flow.of(Forward)``): each event names the
module value it concerns, the node to report at, and the state it saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

from lint.flow.values import TRAIN, UNKNOWN_MODE, KerasModel, Loader, Mode, ModuleValue


@dataclass
class Event:
    module: ModuleValue
    node: cst.CSTNode
    seq: int
    #: the ``if`` tests it sits under, innermost last, each with whether it holds there (its body) or not (else)
    conditions: tuple = ()


@dataclass
class Freeze(Event):
    """Parameters of ``module`` frozen: ``requires_grad_(False)`` or ``p.requires_grad = False`` over them.
    ``name`` is the module as written there (``model.backbone``)."""

    name: str = ""
    elsewhere: str = ""  # frozen in another module of the project, there ("config.py:14"); ``node`` is its first use here
    how: str = "requires_grad"  # or "no_grad": a pretrained part its class's ``forward`` runs under ``torch.no_grad()``


@dataclass
class AttributeFreeze(Event):
    """``module.requires_grad = False`` on a known ``nn.Module``: a plain attribute, nothing frozen.
    ``node`` is the ``Assign``; ``target`` its ``X.requires_grad`` attribute."""

    target: cst.Attribute | None = None


@dataclass
class ModeOverwrite(Event):
    """``model.train = True`` / ``model.eval = False``: the method replaced by a value. ``node`` is the ``Assign``."""

    attr: str = "train"


@dataclass
class ModeSet(Event):
    mode: str = "train"  # "train" | "eval" | "bn-eval" (only its BatchNorm modules put in eval)
    chain: tuple = ()  # the call sites of the helpers it sits in, outermost first


@dataclass
class Forward(Event):
    """``module(x)`` or ``module.forward(x)``.

    ``context`` is "training" (a loop or function that calls ``.backward()``), "inference"
    (``reason`` says why) or "other". ``mode`` is the set of modes the module may be in there,
    each with what set it (a constructor or a ``.train()`` call). ``data`` is where its input
    comes from: "random" (``torch.randn(...)``, a shape check), "data" or "" (unknown).
    ``training`` is the call's ``training`` argument (Keras).
    ``via`` is the outermost call site when the forward sits in a helper walked at a call.
    """

    context: str = "other"
    reason: str = ""
    mode: Mode = UNKNOWN_MODE
    data: str = ""
    training: str = "absent"  # Keras's ``training`` argument: "true" | "false" | "other" | "absent"
    function: cst.FunctionDef | None = None  # the innermost function it runs in
    via: cst.CSTNode | None = None
    state: dict = field(default_factory=dict, repr=False)

    def mode_node(self, mode: str = TRAIN) -> cst.CSTNode | None:
        return self.mode.setter(mode)


@dataclass
class EvalCarriedOver(Event):
    """An ``.eval()`` in a training loop that the next iteration trains under. ``node`` is the statement's
    call in the loop body that puts the model in eval mode."""

    forward: cst.CSTNode | None = None
    loop: cst.CSTNode | None = None
    eval_call: cst.CSTNode | None = None  # the ``.eval()`` (``node`` is the helper call when it sits in one)


@dataclass
class LoaderFeeds(Event):
    """A training forward of ``module`` on a batch read from ``loader`` (``for x, y in loader: model(x)``)."""

    loader: Loader | None = None
    mode: Mode = UNKNOWN_MODE


@dataclass
class LayerCall(Event):
    """A Keras layer or model applied: ``module(x, training=...)``. ``module`` may be a value the walk
    cannot follow (``kind == "parameter"``: a function's parameter, ``self.model`` of a callback), then
    recorded only when the call passes ``training``.

    ``training`` is as ``Forward.training``; ``in_step`` says it runs in a custom training step (a tape,
    a function that applies gradients, ``train_step``), ``in_test`` in a unit test, ``random_input`` on
    freshly made random numbers. ``default`` is (class name, parameter) when the call passes no
    ``training`` and the class's ``call(..., training=True)`` default decides (parameter None: the class is
    defined in another module of the project)."""

    training: str = "absent"
    in_step: bool = False
    in_test: bool = False
    random_input: bool = False
    default: tuple | None = None


@dataclass
class DropoutFeedsBatchNorm(Event):
    """A Dropout's output goes straight into a BatchNormalization: ``node`` is the BatchNormalization
    (its application, or its element of the ``Sequential`` list / ``add`` call), ``dropout`` the Dropout's.
    ``shape`` is "Sequential", "add" or "functional"."""

    dropout: cst.CSTNode | None = None
    shape: str = "functional"


@dataclass
class LearningPhaseUse(Event):
    """A call of the Keras learning-phase API (``set_learning_phase``, ``learning_phase``,
    ``learning_phase_scope``) as the file reaches it (``qualname``, module aliases followed).
    ``after_model``: a model was built or loaded before it in the same function (or module body);
    ``sets_one``: its argument folds to 1/True."""

    api: str = ""
    qualname: str = ""
    after_model: bool = False
    sets_one: bool = False


@dataclass
class KerasFit(Event):
    """``model.fit(...)``: its ``batch_size`` where it folds to an int (``**fit_kwargs`` dicts spread in),
    and the batch size of a ``tf.data`` pipeline passed as ``x`` (``ds.batch(1)``)."""

    batch_size: int | None = None
    batched_by: int | None = None


# -- Keras models (BN001-BN003; recorded by ``lint.flow.keras_models``) ------------------------


@dataclass
class ModelEvent:
    """What the program does to a Keras model value. ``scope`` is the walk of one function (0: another
    module of the project); order within one scope is ``seq``."""

    model: KerasModel
    node: cst.CSTNode
    scope: int
    seq: int


@dataclass
class ModelFreeze(ModelEvent):
    #: only some of its layers: ``for layer in base.layers[:100]``, ``base.layers[i]`` (not a frozen base)
    partial: bool = False
    #: frozen in another module of the project, there ("xception_model.py:40"); ``node`` is its first use here
    elsewhere: str = ""


@dataclass
class ModelUnfreeze(ModelEvent):
    guarded: bool = False  # BatchNormalization kept frozen by the same statement/loop
    partial: bool = False  # a slice of its layers (``for layer in base.layers[100:]``)
    layer_of: bool = False  # set on a layer reached through it (``model.layers[2].trainable = True``)
    loop: cst.For | None = None
    loop_var: str | None = None


@dataclass
class Refreeze(ModelEvent):
    """A loop that puts the BatchNormalization layers of a model back to ``trainable = False``."""

    recursive: bool = False  # iterates nested layers too


@dataclass
class ModelCall(ModelEvent):
    training: str = "absent"  # "absent" | "true" | "false" | "other"


@dataclass
class Placement(ModelEvent):
    """Placed in a ``Sequential`` (its list or ``add``)."""


@dataclass
class GraphReuse(ModelEvent):
    """Its graph reused through ``.output``/``.input`` (``Model(base.input, head(base.output))``)."""

    attr: str = "output"
