"""Which values in one file are PyTorch modules with BatchNorm, and what the file does to them.

The PyTorch counterpart of ``lint.keras_models``, shared by BN101–BN103 (and BN007's
``DataLoader`` part). One ordered walk over the file follows module values (torchvision
and ``torch.hub`` constructors, ``nn.*`` layers and containers, ``nn.Module`` subclasses of
the same file, their ``self.`` attributes) and the *mode* each is in (PyTorch modules are
built in training mode; ``.train()``/``.eval()`` change it for the module and everything
inside it), and records events: parameters frozen, ``requires_grad`` set as a plain
attribute, mode methods overwritten, ``.train()``/``.eval()`` calls, forward calls with
their context (training step, ``torch.no_grad()`` / ``torch.inference_mode()`` / a
function named like predict or evaluate) and the mode at that point, and an ``.eval()``
left in place for the next epoch of a training loop.

Helper functions and methods of the same file are walked *at their call sites* with the
caller's values (``evaluate(model, loader)``, ``model.train()`` of a class that overrides
``train()``, ``Net()`` runs ``__init__``), so modes follow the path through them. A
function never called in the file is walked once with unknown parameters. Anything whose
origin lies in another file (``torch.load``, a parameter nobody passes here, an unknown
attribute) has an unknown mode and unknown BatchNorm: the rules stay silent on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

import libcst as cst

from lint.names import ImportMap, dotted
from lint.nodes import children, names, walk

# -- names ------------------------------------------------------------------------------------

#: torch.nn classes that keep running statistics in training mode.
TORCH_BN_CLASS = re.compile(r"^(Lazy)?BatchNorm[123]d$|^SyncBatchNorm$|^_BatchNorm$")
#: torchvision constructors whose models contain BatchNorm (classification and segmentation;
#: detection models use FrozenBatchNorm2d in their backbones and are deliberately absent).
TORCHVISION_BN = re.compile(
    r"^(resnet\d+|resnext\w+|wide_resnet\w+|densenet\d+|mobilenet_v[23]\w*|efficientnet\w*|regnet_\w+"
    r"|inception_v3|googlenet|shufflenet\w*|mnasnet\w*|vgg\d+_bn|deeplabv3_\w+|fcn_\w+|lraspp_\w+)$"
)
#: ``torch.hub.load``/``timm.create_model`` model names that build BatchNorm.
HUB_BN_NAME = re.compile(
    r"resnet|resnext|densenet|mobilenet|efficientnet|regnet|inception|googlenet|shufflenet|mnasnet|deeplab"
    r"|yolo|ssd|unet|hrnet|dpn|senet|xception|darknet|csp|ghostnet|rexnet|mixnet|tf_efficientnet",
    re.IGNORECASE,
)
#: An import of torch or torchvision (for prefilters): without one no name resolves to them.
#: Not the bare word "torch": library code that supports several backends says it everywhere.
#: Rules put ("torch",) beside it, which settles most files with one cheap substring search.
TORCH_IMPORT = re.compile(r"\bimport\b[^\n]*\btorch|\bfrom[\s\\]+torch")
#: Substrings of every name ``TORCHVISION_BN`` matches (for prefilters).
TORCHVISION_BN_TOKENS = (
    "resnet", "resnext", "densenet", "mobilenet_v", "efficientnet", "regnet_", "inception_v3", "googlenet",
    "shufflenet", "mnasnet", "vgg", "deeplabv3_", "fcn_", "lraspp_",
)
#: Substrings a file must contain to hold a PyTorch module with BatchNorm (for prefilters): the torch
#: class names (not "BatchNorm", which every Keras file with BatchNormalization has; "_BatchNorm"
#: also matches a subclass of torch's base class), a torchvision model's name, or a source of
#: models by name (``torch.hub.load``, ``timm.create_model``, ``torchvision.models.get_model``).
#: Not "torchvision" itself: it is mostly in comments and transforms.
TORCH_BN_TOKENS = (
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "_BatchNorm", *TORCHVISION_BN_TOKENS,
    "hub.load", "torch.hub", "timm", "get_model",
)

#: A test that singles out BatchNorm modules: ``isinstance(m, nn.BatchNorm2d)``, ``"bn" in name``.
_BN_TEST = re.compile(r"batch_?norm|\bbn\d*\b|_BatchNorm|\bnorm\b", re.IGNORECASE)
#: Functions whose calls are inference: predict, evaluate, test, infer, validate.
_INFERENCE_FN = re.compile(
    r"(^|_)(predict\w*|prediction\w*|evaluate|evaluation|eval|infer|inference|test|testing|validate|validation|val)(_|$)",
    re.IGNORECASE,
)
#: Attributes of a torchvision model that hold no BatchNorm (the classifier heads).
_HEAD_ATTRS = frozenset({"fc", "classifier", "head", "heads", "linear", "last_linear", "logits"})
_TENSOR_ATTRS = frozenset({"weight", "bias", "running_mean", "running_var", "data", "grad"})
#: Module methods that return the module itself.
_SELF_RETURNING = frozenset({"to", "cuda", "cpu", "float", "half", "double", "bfloat16", "type", "share_memory",
                             "to_empty", "requires_grad_", "train", "eval", "apply", "zero_grad"})
#: nn.Module's own methods (a call of any other attribute of a torchvision model runs a sub-module).
_MODULE_METHODS = frozenset({
    "parameters", "named_parameters", "modules", "named_modules", "children", "named_children", "buffers",
    "named_buffers", "state_dict", "load_state_dict", "register_buffer", "register_parameter", "register_module",
    "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook", "add_module",
    "get_submodule", "get_parameter", "get_buffer", "extra_repr", "forward",
}) | _SELF_RETURNING
_WRAPPERS = frozenset({"DataParallel", "DistributedDataParallel", "compile", "script", "trace", "convert_sync_batchnorm"})
_NOT_MODULES = frozenset({"Parameter", "ParameterList", "ParameterDict", "UninitializedParameter", "Buffer"})
_MAX_INLINE = 4  # helpers within helpers followed this deep
_INLINE_BUDGET = 500  # helper walks per file: call sites fan out, the walk must not


def is_torch_bn_class(qualname: str | None) -> bool:
    """``torch.nn.BatchNorm2d``, ``nn.SyncBatchNorm``, ``BatchNorm1d`` (star-imported)."""
    if not qualname:
        return False
    last = qualname.rsplit(".", 1)[-1]
    return bool(TORCH_BN_CLASS.match(last)) and (qualname.startswith("torch.") or "." not in qualname)


def is_torchvision_bn_model(qualname: str | None) -> bool:
    """``torchvision.models.resnet50`` in any import form (``models.resnet50``, ``resnet50``)."""
    return bool(qualname) and qualname.startswith("torchvision.") and bool(
        TORCHVISION_BN.match(qualname.rsplit(".", 1)[-1])
    )


# -- values -----------------------------------------------------------------------------------


@dataclass(eq=False)
class TorchModule:
    """A module value (or an object holding modules, such as a trainer).

    ``has_bn`` is True/False where the file shows it and None where it does not;
    ``is_module`` says the value is known to be an ``nn.Module`` (not a tensor, not a plain
    object). ``attrs`` are its sub-modules by attribute (``model.backbone``).
    """

    label: str
    has_bn: bool | None
    is_module: bool = True
    kind: str = "constructed"  # constructed | instance | part | parameter | loop
    origin: cst.CSTNode | None = None
    parent: "TorchModule | None" = None
    attr: str | None = None
    cls: cst.ClassDef | None = None
    attrs: dict[str, "TorchModule"] = field(default_factory=dict)

    def contains_bn(self) -> bool | None:
        if self.has_bn:
            return True
        if any(child.contains_bn() for child in self.attrs.values() if child.parent is self):
            return True
        return self.has_bn

    def ancestors(self) -> Iterator["TorchModule"]:
        node: TorchModule | None = self
        seen = set()
        while node is not None and id(node) not in seen:
            seen.add(id(node))
            yield node
            node = node.parent

    def within(self, other: "TorchModule") -> bool:
        return any(a is other for a in self.ancestors())


@dataclass(eq=False)
class _Many:
    """``X.parameters()`` ("params") or ``X.modules()``/``X.children()`` ("modules") of a module."""

    owner: TorchModule
    what: str
    name: str = ""  # the owner as written (``model.backbone``)


@dataclass(eq=False)
class _Function:
    node: cst.FunctionDef
    cls: cst.ClassDef | None = None


# -- events -----------------------------------------------------------------------------------


@dataclass
class Event:
    module: TorchModule
    node: cst.CSTNode
    seq: int


@dataclass
class Freeze(Event):
    """Parameters of ``module`` frozen: ``requires_grad_(False)`` or ``p.requires_grad = False`` over them.
    ``name`` is the module as written there (``model.backbone``)."""

    name: str = ""


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
    (``reason`` says why) or "other". ``mode`` is the module's mode there ("train", "eval",
    "unknown") and ``mode_node`` what set it (a constructor or a ``.train()`` call).
    ``via`` is the outermost call site when the forward sits in a helper walked at a call.
    """

    context: str = "other"
    reason: str = ""
    mode: str = "unknown"
    mode_node: cst.CSTNode | None = None
    via: cst.CSTNode | None = None
    state: dict = field(default_factory=dict, repr=False)


@dataclass
class EvalCarriedOver(Event):
    """An ``.eval()`` in a training loop that the next iteration trains under. ``node`` is the statement's
    call in the loop body that puts the model in eval mode."""

    forward: cst.CSTNode | None = None
    loop: cst.CSTNode | None = None
    eval_call: cst.CSTNode | None = None  # the ``.eval()`` (``node`` is the helper call when it sits in one)


# -- the walk ---------------------------------------------------------------------------------


class _Frame:
    def __init__(self, parent: "_Frame | None", self_obj: TorchModule | None = None) -> None:
        self.parent = parent
        self.vars: dict[str, object] = {}
        self.self_obj = self_obj
        self.returns: list[object] = []

    def lookup(self, name: str):
        frame: _Frame | None = self
        while frame is not None:
            if name in frame.vars:
                return frame.vars[name]
            frame = frame.parent
        return None


class TorchModules:
    """The module values and events of one file. Build once per file; rules query it."""

    def __init__(self, module: cst.Module, imports: ImportMap, path: str = "") -> None:
        self.imports = imports
        self.events: list[Event] = []
        self.uses_frozen_bn = False  # FrozenBatchNorm2d anywhere: BatchNorm may be frozen by replacement
        self._pytest_file = bool(re.search(r"(^|/)(test_[^/]*|[^/]*_test|conftest)\.py$", path))
        self._seq = 0
        self._values: dict[int, TorchModule] = {}
        self._objects: dict[int, TorchModule] = {}
        self._state: dict[object, tuple[str, cst.CSTNode | None]] = {}
        self._context: list[tuple[str, str]] = []  # innermost last: ("training"|"inference", reason)
        self._stack: list[cst.FunctionDef] = []
        self._via: list[cst.CSTNode] = []
        self._walked: set[int] = set()
        self._budget = _INLINE_BUDGET
        self._guard_depth = 0  # inside ``if isinstance(m, nn.BatchNorm2d)``-like tests
        self._mute = 0  # second pass over a loop body: collect, do not record
        self._muted: list[Event] = []
        self._backward: dict[int, bool] = {}
        self._functions: dict[str, cst.FunctionDef] = {}
        self._classes: dict[str, cst.ClassDef] = {}
        self._collect(module)
        self._module_classes = self._find_module_classes()
        self._bn_classes = self._find_bn_classes()
        top = _Frame(None)
        self._top = top
        self._block(module.body, top, bn_guard=False)
        for fn in self._functions.values():
            if id(fn) not in self._walked:
                self._run_function(fn, None, {}, top, None)
        for cls in self._classes.values():
            self._walk_class_alone(cls, top)

    # -- queries ---------------------------------------------------------------------------

    def of(self, kind: type[Event]) -> list:
        """Events of one kind, once per source node (a helper walked at two call sites reports once)."""
        seen: set[int] = set()
        found = []
        for e in self.events:
            if type(e) is kind and id(e.node) not in seen:
                seen.add(id(e.node))
                found.append(e)
        return found

    def all_of(self, kind: type[Event]) -> list:
        """Every event of one kind, one per walk (the same node may come up from several call sites)."""
        return [e for e in self.events if type(e) is kind]

    def module_at(self, node: cst.CSTNode) -> TorchModule | None:
        """The module a name or attribute denoted where it stands (``model`` in ``model.train()``)."""
        return self._values.get(id(node))

    def mode_in(self, module: TorchModule, state: dict) -> tuple[str, cst.CSTNode | None]:
        """A module's mode in a recorded state (``Forward.state``): its own, else its nearest container's."""
        return _mode(module, state)

    def bn_kept_in_eval(self, module: TorchModule, state: dict) -> bool:
        """Its BatchNorm modules are in eval mode in that state (``.eval()`` on it, on them, or frozen stats)."""
        if _mode(module, state)[0] == "eval":
            return True
        return any(("bn", id(a)) in state for a in module.ancestors())

    def is_frozen(self, module: TorchModule) -> bool:
        return any(e.module is module for e in self.all_of(Freeze))

    # -- definitions -------------------------------------------------------------------------

    def _collect(self, module: cst.Module) -> None:
        for stmt in module.body:
            self._collect_def(stmt)
        for node in walk(module):
            if isinstance(node, cst.Name) and node.value == "FrozenBatchNorm2d" or (
                isinstance(node, cst.SimpleString) and "FrozenBatchNorm" in node.value
            ):
                self.uses_frozen_bn = True
                return

    def _collect_def(self, stmt: cst.CSTNode) -> None:
        if isinstance(stmt, cst.FunctionDef):
            self._functions.setdefault(stmt.name.value, stmt)
        elif isinstance(stmt, cst.ClassDef):
            self._classes.setdefault(stmt.name.value, stmt)
        elif isinstance(stmt, (cst.If, cst.Try)):
            for inner in _body(stmt.body):
                self._collect_def(inner)

    def _find_module_classes(self) -> set[str]:
        found: set[str] = set()
        changed = True
        while changed:
            changed = False
            for name, cls in self._classes.items():
                if name in found:
                    continue
                for base in cls.bases:
                    q = self.imports.qualname(base.value) or ""
                    last = q.rsplit(".", 1)[-1]
                    if q.startswith(("torch.nn", "torchvision.models")) or last == "Module" or last in found:
                        found.add(name)
                        changed = True
                        break
        return found

    def _find_bn_classes(self) -> set[str]:
        found: set[str] = set()
        changed = True
        while changed:
            changed = False
            for name, cls in self._classes.items():
                if name not in found and name in self._module_classes and self._builds_bn(cls, found):
                    found.add(name)
                    changed = True
        return found

    def _builds_bn(self, node: cst.CSTNode, local: set[str]) -> bool:
        for n in names(node):
            q = self.imports.qualname(n)
            if is_torch_bn_class(q) or is_torchvision_bn_model(q) or (isinstance(n, cst.Name) and n.value in local):
                return True
        return False

    # -- recording ---------------------------------------------------------------------------

    def _record(self, kind: type[Event], module: TorchModule, node: cst.CSTNode, **extra) -> Event:
        self._seq += 1
        event = kind(module=module, node=node, seq=self._seq, **extra)
        (self._muted if self._mute else self.events).append(event)
        return event

    def _new(self, obj: TorchModule) -> TorchModule:
        self._objects[id(obj)] = obj
        return obj

    def _set_mode(self, obj: TorchModule, mode: str, node: cst.CSTNode) -> None:
        if mode == "bn-eval":
            self._state[("bn", id(obj))] = ("eval", node)
        else:
            for key in list(self._state):
                target = self._objects.get(key[1] if isinstance(key, tuple) else key)
                if target is not None and target is not obj and target.within(obj):
                    del self._state[key]
            self._state.pop(("bn", id(obj)), None)
            self._state[id(obj)] = (mode, node)
        self._record(ModeSet, obj, node, mode=mode, chain=tuple(self._via))

    # -- statements --------------------------------------------------------------------------

    def _block(self, body, frame: _Frame, bn_guard: bool) -> None:
        for stmt in body:
            self._statement(stmt, frame, bn_guard)

    def _statement(self, stmt: cst.CSTNode, frame: _Frame, bn_guard: bool) -> None:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                self._small(small, frame, bn_guard)
        elif isinstance(stmt, cst.If):
            self._eval(stmt.test, frame)
            guard = bool(_BN_TEST.search(_code(stmt.test)))
            before = dict(self._state)
            self._guard_depth += guard
            self._block(_body(stmt.body), frame, bn_guard or guard)
            self._guard_depth -= guard
            after_if = self._state
            if guard:  # ``if isinstance(m, nn.BatchNorm2d): m.eval()`` acts on the BatchNorm modules only
                return
            self._state = before
            if stmt.orelse is not None:
                orelse = stmt.orelse
                if isinstance(orelse, cst.If):
                    self._statement(orelse, frame, bn_guard)
                else:
                    self._block(_body(orelse.body), frame, bn_guard)
            self._state = _join(after_if, self._state)
        elif isinstance(stmt, (cst.For, cst.While)):
            self._loop(stmt, frame, bn_guard)
        elif isinstance(stmt, cst.With):
            pushed = 0
            for item in stmt.items:
                reason = self._inference_context(item.item)
                if reason:
                    self._context.append(("inference", reason))
                    pushed += 1
                else:
                    self._eval(item.item, frame)
            self._block(_body(stmt.body), frame, bn_guard)
            del self._context[len(self._context) - pushed :]
        elif isinstance(stmt, cst.Try):
            self._block(_body(stmt.body), frame, bn_guard)
            saved = dict(self._state)
            for handler in stmt.handlers:
                self._block(_body(handler.body), frame, bn_guard)
            self._state = saved
            for extra in (stmt.orelse, stmt.finalbody):
                if extra is not None:
                    self._block(_body(extra.body), frame, bn_guard)
        elif isinstance(stmt, cst.FunctionDef):
            if frame is not self._top:
                frame.vars[stmt.name.value] = _Function(stmt)

    def _small(self, small, frame: _Frame, bn_guard: bool) -> None:
        if isinstance(small, (cst.Assign, cst.AnnAssign)):
            if small.value is None:
                return
            targets = [t.target for t in small.targets] if isinstance(small, cst.Assign) else [small.target]
            value = self._eval(small.value, frame)
            for target in targets:
                self._assign(target, small, value, frame, bn_guard)
        elif isinstance(small, cst.AugAssign):
            self._eval(small.value, frame)
        elif isinstance(small, cst.Expr):
            self._eval(small.value, frame)
        elif isinstance(small, cst.Return):
            if small.value is not None:
                frame.returns.append(self._eval(small.value, frame))
        else:  # assert, raise, del, ...: calls inside them still run
            self._visit(small, frame)

    def _assign(self, target, stmt, value, frame: _Frame, bn_guard: bool) -> None:
        if isinstance(target, cst.Attribute):
            owner = self._eval(target.value, frame, record=False)
            attr = target.attr.value
            literal = _bool(stmt.value)
            if attr == "requires_grad" and literal == "False":
                if isinstance(owner, _Many) and owner.what == "params" and not self._guard_depth:
                    self._record(Freeze, owner.owner, stmt, name=owner.name)
                elif isinstance(owner, _Many) and owner.what == "modules":
                    self._record(AttributeFreeze, owner.owner, stmt, target=target)
                elif isinstance(owner, TorchModule) and owner.is_module:
                    self._record(AttributeFreeze, owner, stmt, target=target)
                return
            if attr in ("train", "eval") and literal is not None:
                module = owner.owner if isinstance(owner, _Many) and owner.what == "modules" else owner
                if isinstance(module, TorchModule) and module.is_module:
                    self._record(ModeOverwrite, module, stmt, attr=attr)
                return
            if attr in ("track_running_stats", "momentum") and isinstance(owner, _Many) and owner.what == "modules":
                if attr == "momentum" and _code(stmt.value) not in ("0", "0.0", "0."):
                    return
                self._set_mode(owner.owner, "bn-eval", stmt)
                return
            if isinstance(owner, TorchModule):
                if isinstance(value, TorchModule):
                    owner.attrs[attr] = value
                    # a value built right here (``self.backbone = resnet50().features``) now lives in ``owner``
                    fresh = value.parent is None or dotted(stmt.value) is None
                    if fresh and value is not owner and not owner.within(value):
                        value.parent, value.attr = owner, attr
                else:
                    owner.attrs.pop(attr, None)
                return
        self._bind(target, value, frame)

    def _bind(self, target, value, frame: _Frame) -> None:
        if isinstance(target, cst.Name):
            frame.vars[target.value] = value
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._bind(element.value, None, frame)

    def _loop(self, stmt, frame: _Frame, bn_guard: bool) -> None:
        if isinstance(stmt, cst.For):
            items = self._eval(stmt.iter, frame)
            self._bind_loop_var(stmt.target, items, frame)
        else:
            self._eval(stmt.test, frame)
        trains = self._calls_backward(stmt.body)
        if trains:
            self._context.append(("training", ""))
        start = len(self.events)
        self._block(_body(stmt.body), frame, bn_guard)
        first = self.events[start:] if not self._mute else []
        evals = {id(e.node): e for e in first if isinstance(e, ModeSet) and e.mode == "eval"}
        if evals and any(isinstance(e, Forward) and e.context == "training" for e in first):
            self._next_iteration(stmt, frame, bn_guard, evals)
        if trains:
            self._context.pop()
        if getattr(stmt, "orelse", None) is not None:
            self._block(_body(stmt.orelse.body), frame, bn_guard)

    def _next_iteration(self, stmt, frame: _Frame, bn_guard: bool, evals: dict[int, ModeSet]) -> None:
        """Walk a training loop's body again from the state its first iteration ends in: a training
        forward under an ``.eval()`` of this body means the next epoch trains in eval mode."""
        saved_state, saved_seq = dict(self._state), self._seq
        self._mute += 1
        start = len(self._muted)
        try:
            self._block(_body(stmt.body), frame, bn_guard)
        finally:
            self._mute -= 1
            second = self._muted[start:]
            del self._muted[start:]
            self._state, self._seq = saved_state, saved_seq
        for e in second:
            if isinstance(e, Forward) and e.context == "training" and e.mode == "eval" and id(e.mode_node) in evals:
                # reported where the loop body puts the model in eval mode: the ``.eval()`` itself or the
                # helper call that does it (``validate(model)``)
                inside = {id(n) for n in walk(stmt.body)}
                chain = evals[id(e.mode_node)].chain
                where = next((c for c in chain if id(c) in inside), e.mode_node)
                if not any(isinstance(x, EvalCarriedOver) and x.node is where for x in self.events):
                    self._record(EvalCarriedOver, e.module, where, forward=e.node, loop=stmt, eval_call=e.mode_node)

    def _bind_loop_var(self, target, items, frame: _Frame) -> None:
        if isinstance(items, _Many):
            # ``for p in m.parameters()``, ``for name, p in m.named_parameters()``, ``for i, m in enumerate(...)``
            if isinstance(target, (cst.Tuple, cst.List)) and target.elements:
                self._bind(target, None, frame)
                self._bind(target.elements[-1].value, items, frame)
            else:
                self._bind(target, items, frame)
        else:
            self._bind(target, None, frame)

    # -- expressions -------------------------------------------------------------------------

    def _eval(self, node, frame: _Frame, record: bool = True):
        """The value an expression denotes (a module, its parameters or sub-modules), recording its events."""
        if isinstance(node, cst.Name):
            value = frame.lookup(node.value)
            if isinstance(value, TorchModule):
                self._values.setdefault(id(node), value)
            return value
        if isinstance(node, cst.Attribute):
            owner = self._eval(node.value, frame, record)
            value = self._attribute(owner, node.attr.value) if isinstance(owner, TorchModule) else None
            if isinstance(value, TorchModule):
                self._values.setdefault(id(node), value)
            return value
        if isinstance(node, cst.Call):
            return self._call(node, frame, record)
        if isinstance(node, cst.Subscript):
            owner = self._eval(node.value, frame, record)
            if record:
                for element in node.slice:
                    self._visit(element, frame)
            if isinstance(owner, _Many):
                return owner
            if isinstance(owner, TorchModule) and owner.is_module:  # ``model.layer4[0]``, ``features[:10]``
                return self._part(owner, "[]")
            return None
        if isinstance(node, (cst.Await, cst.Lambda)):
            return None
        if record:
            self._visit(node, frame)
        return None

    def _visit(self, node: cst.CSTNode, frame: _Frame) -> None:
        for child in children(node):
            if isinstance(child, cst.BaseExpression):
                self._eval(child, frame)
            else:
                self._visit(child, frame)

    def _attribute(self, owner: TorchModule, attr: str):
        if attr in owner.attrs:
            return owner.attrs[attr]
        if attr == "module" and owner.is_module:  # DataParallel/DDP's wrapped module: same object here
            return owner
        if attr in _TENSOR_ATTRS or not owner.is_module or attr.startswith("__"):
            return None
        return self._part(owner, attr)

    def _part(self, owner: TorchModule, attr: str) -> TorchModule:
        """A sub-module by attribute: a torchvision model's ``layer4``/``features`` carries BatchNorm, its head does not."""
        key = f"<{attr}>"
        if key not in owner.attrs:
            if owner.kind == "constructed" and owner.has_bn and owner.cls is None:
                has_bn, is_module = attr not in _HEAD_ATTRS, True
            else:
                has_bn, is_module = None, False
            owner.attrs[key] = self._new(TorchModule(label=f"{owner.label}.{attr}", has_bn=has_bn, is_module=is_module,
                                                     kind="part", parent=owner, attr=attr))
        return owner.attrs[key]

    def _call(self, node: cst.Call, frame: _Frame, record: bool):
        func = node.func
        if isinstance(func, cst.Name):
            callee = frame.lookup(func.value)
            if isinstance(callee, TorchModule):
                self._values.setdefault(id(func), callee)
        else:
            callee = self._eval(func.value if isinstance(func, cst.Attribute) else func, frame, record)
        args = [self._eval(a.value, frame, record) for a in node.args]  # once: they may build modules

        if isinstance(func, cst.Attribute):
            method = func.attr.value
            if isinstance(callee, TorchModule):
                sub = callee.attrs.get(method)
                if sub is None and callee.is_module and callee.cls is None and method not in _MODULE_METHODS:
                    sub = self._attribute(callee, method)  # ``model.features(x)`` of a torchvision model
                if isinstance(sub, TorchModule):
                    self._values.setdefault(id(func), sub)
                    if sub.is_module and record:
                        self._forward(sub, node)
                    return None
                if callee.is_module and method in ("parameters", "named_parameters"):
                    return _Many(callee, "params", _code(func.value))
                if callee.is_module and method in ("modules", "named_modules", "children", "named_children"):
                    return _Many(callee, "modules", _code(func.value))
                if not record:
                    return callee if callee.is_module and method in _SELF_RETURNING else None
                result = self._method(callee, method, node, args)
                if result is not _NOTHING:
                    return result
            elif isinstance(callee, _Many):
                return self._many_method(callee, method, node) if record else None
            elif callee is None and method in ("modules", "named_modules") and self.imports.imports_from("torch"):
                # ``m.modules()`` of a value whose origin is elsewhere: still a module's sub-modules
                return _Many(self._new(TorchModule(label=_code(func.value), has_bn=None, kind="parameter")), "modules")
        elif isinstance(callee, TorchModule):
            if callee.is_module and record:
                self._forward(callee, node)
            return None
        elif isinstance(callee, _Function):
            return self._inline(callee.node, callee.cls, None, node, args) if record else None
        elif isinstance(func, cst.Name) and callee is None:
            name = func.value
            if name in ("list", "tuple", "enumerate", "reversed", "iter", "sorted", "filter", "tqdm"):
                return next((a for a in args if isinstance(a, _Many)), None)
            if name in self._classes and record:
                return self._instantiate(self._classes[name], node, args)
            if name in self._functions and name not in self.imports.aliases:
                return self._inline(self._functions[name], None, None, node, args) if record else None
        qualname = self.imports.qualname(func) if isinstance(func, (cst.Name, cst.Attribute)) else None
        return self._constructor(node, qualname, args)

    def _constructor(self, node: cst.Call, qualname: str | None, args: list):
        if not qualname:
            return None
        last = qualname.rsplit(".", 1)[-1]
        if last in _WRAPPERS and args:  # nn.DataParallel(model), torch.compile(model): the same module here
            return args[0] if isinstance(args[0], TorchModule) else None
        if is_torchvision_bn_model(qualname):
            has_bn = not any(
                a.keyword is not None and a.keyword.value == "norm_layer" and "Frozen" in _code(a.value) for a in node.args
            )
            return self._new(TorchModule(label=f"{last}()", has_bn=has_bn, origin=node))
        if qualname.startswith("torchvision.models.") and last[:1].islower() and last not in ("get_weight", "get_model"):
            return self._new(TorchModule(label=f"{last}()", has_bn=False, origin=node))
        if qualname in ("torch.hub.load", "timm.create_model", "torchvision.models.get_model"):
            names = [a.value for a in node.args if isinstance(a.value, cst.SimpleString)]
            if qualname == "torch.hub.load":
                names = names[1:2]
            has_bn = True if any(HUB_BN_NAME.search(_code(n)) for n in names) else None
            return self._new(TorchModule(label=f"{last}()", has_bn=has_bn, origin=node))
        if qualname.startswith("torch.nn.") and last[:1].isupper() and last not in _NOT_MODULES and "." not in qualname[9:]:
            has_bn = is_torch_bn_class(qualname)
            container = self._new(TorchModule(label=f"nn.{last}(...)", has_bn=has_bn, origin=node))
            if last in ("Sequential", "ModuleList", "ModuleDict"):
                container.has_bn = self._container_bn(node, args)
                for i, value in enumerate(args):  # ``nn.Sequential(encoder, head)``: encoder now lives inside
                    if isinstance(value, TorchModule) and value.parent is None and value.is_module:
                        value.parent, value.attr = container, str(i)
                        container.attrs[str(i)] = value
            return container
        return None

    def _container_bn(self, node: cst.Call, args: list) -> bool | None:
        """``nn.Sequential(nn.Conv2d(..), nn.BatchNorm2d(..))``, ``nn.Sequential(*list(resnet.children())[:-1])``."""
        unknown = False
        for value in args:
            value = value.owner if isinstance(value, _Many) else value
            if isinstance(value, TorchModule):
                bn = value.contains_bn()
                if bn:
                    return True
                unknown = unknown or bn is None
        for arg in node.args:
            for n in walk(arg.value):
                if isinstance(n, cst.Call) and isinstance(n.func, (cst.Name, cst.Attribute)) and (
                    is_torch_bn_class(self.imports.qualname(n.func)) or dotted(n.func) in self._bn_classes
                ):
                    return True
        return None if unknown else False

    def _instantiate(self, cls: cst.ClassDef, node: cst.Call, args: list) -> TorchModule:
        name = cls.name.value
        is_module = name in self._module_classes
        obj = self._new(TorchModule(label=f"{name}()", has_bn=(name in self._bn_classes) if is_module else None,
                                    is_module=is_module, kind="instance", origin=node, cls=cls))
        init = _method(cls, "__init__")
        if init is not None:
            self._inline(init, cls, obj, node, args)
        return obj

    def _method(self, owner: TorchModule, method: str, node: cst.Call, args: list):
        """A method call on a module value; ``_NOTHING`` when it is none of the ones followed here."""
        defined = _method(owner.cls, method) if owner.cls is not None else None
        if defined is not None and method != "forward":
            if method == "train" and self._overrides_with_super(defined):
                # ``super().train(mode)`` in an override: the base class's mode change, then the override's own
                self._set_mode(owner, _train_mode(node), node)
            return self._inline(defined, owner.cls, owner, node, args)
        if not owner.is_module:
            return _NOTHING
        if method == "train":
            self._set_mode(owner, _train_mode(node), node)
            return owner
        if method == "eval":
            self._set_mode(owner, "eval", node)
            return owner
        if method == "requires_grad_":
            if node.args and _bool(node.args[0].value) == "False":
                self._record(Freeze, owner, node, name=_code(node.func.value))
            return owner
        if method == "forward":
            self._forward(owner, node)
            return None
        if method == "apply" and args:
            fn = args[0].node if isinstance(args[0], _Function) else self._functions.get(_code(node.args[0].value))
            if fn is not None and fn.params.params:  # ``model.apply(set_bn_eval)``: run on every sub-module
                self._inline(fn, None, None, node, [_Many(owner, "modules", _code(node.func.value))])
            return owner
        if method in _SELF_RETURNING:
            return owner
        return _NOTHING

    def _many_method(self, many: _Many, method: str, node: cst.Call):
        if many.what == "params" and method == "requires_grad_" and node.args and _bool(node.args[0].value) == "False":
            if not self._guard_depth:
                self._record(Freeze, many.owner, node, name=many.name)
        elif many.what == "modules":
            if method in ("parameters", "named_parameters"):
                return _Many(many.owner, "params", many.name)
            if method == "requires_grad_" and node.args and _bool(node.args[0].value) == "False":
                self._record(Freeze, many.owner, node, name=many.name)
            elif method == "eval" or (method == "train" and _train_mode(node) == "eval"):
                self._set_mode(many.owner, "bn-eval" if self._guard_depth else "eval", node)
        return None

    # -- forward calls and helpers -----------------------------------------------------------

    def _forward(self, module: TorchModule, node: cst.Call) -> None:
        context, reason = self._context[-1] if self._context else ("other", "")
        mode, setter = _mode(module, self._state)
        self._record(Forward, module, node, context=context, reason=reason, mode=mode, mode_node=setter,
                     via=self._via[0] if self._via else None, state=dict(self._state))

    def _inline(self, fn: cst.FunctionDef, cls, self_obj, call: cst.Call, args: list):
        """Walk a function of this file at a call site, its parameters bound to the caller's values."""
        if fn in self._stack or len(self._stack) >= _MAX_INLINE or self._budget <= 0:
            return None
        self._budget -= 1
        params = list(fn.params.params)
        values: dict[str, object] = {}
        if self_obj is not None and params:
            values[params[0].name.value] = self_obj
            params = params[1:]
        positional = [(a, v) for a, v in zip(call.args, args) if a.keyword is None and not a.star]
        for param, (_, value) in zip(params, positional):
            values[param.name.value] = value
        for arg, value in zip(call.args, args):
            if arg.keyword is not None:
                values[arg.keyword.value] = value
        saved_guard, self._guard_depth = self._guard_depth, 0
        try:
            return self._run_function(fn, self_obj, values, self._top, call)
        finally:
            self._guard_depth = saved_guard

    def _run_function(self, fn: cst.FunctionDef, self_obj, values, parent: _Frame, call: cst.Call | None):
        self._walked.add(id(fn))
        inner = _Frame(parent, self_obj)
        for param in [*fn.params.params, *fn.params.kwonly_params, *fn.params.posonly_params]:
            name = param.name.value
            value = values.get(name)
            if value is None and param.annotation is not None and self._annotated_module(param.annotation.annotation):
                value = self._new(TorchModule(label=name, has_bn=None, kind="parameter"))
            inner.vars[name] = value
        pushed = 0
        reason = self._inference_function(fn)
        if reason:
            self._context.append(("inference", reason))
            pushed += 1
        elif self._calls_backward(fn.body):
            self._context.append(("training", ""))
            pushed += 1
        self._stack.append(fn)
        if call is not None:
            self._via.append(call)
        try:
            self._block(_body(fn.body), inner, False)
        finally:
            self._stack.pop()
            if call is not None:
                self._via.pop()
            del self._context[len(self._context) - pushed :]
        return next((r for r in inner.returns if isinstance(r, TorchModule)), None)

    def _walk_class_alone(self, cls: cst.ClassDef, top: _Frame) -> None:
        """Methods nobody calls in this file, walked on an instance of unknown mode (``__init__`` first,
        for the attributes)."""
        methods = [m for m in cls.body.body if isinstance(m, cst.FunctionDef)]
        if all(id(m) in self._walked for m in methods):
            return
        name = cls.name.value
        is_module = name in self._module_classes
        obj = self._new(TorchModule(label="self", has_bn=(name in self._bn_classes) if is_module else None,
                                    is_module=is_module, kind="parameter", cls=cls))
        methods.sort(key=lambda m: m.name.value != "__init__")
        for method in methods:
            if id(method) in self._walked and method.name.value != "__init__":
                continue
            saved = self._state
            self._state = {}
            first = method.params.params[0].name.value if method.params.params else None
            self._run_function(method, obj, {first: obj} if first else {}, top, None)
            self._state = saved

    # -- contexts ----------------------------------------------------------------------------

    def _inference_context(self, item) -> str | None:
        """``torch.no_grad()``, ``torch.inference_mode()``, ``torch.set_grad_enabled(False)``."""
        if not isinstance(item, cst.Call):
            return None
        q = self.imports.qualname(item.func) if isinstance(item.func, (cst.Name, cst.Attribute)) else None
        if not q or not (q.startswith("torch.") or "." not in q):
            return None
        last = q.rsplit(".", 1)[-1]
        if last in ("no_grad", "inference_mode") and not (item.args and _bool(item.args[0].value) == "False"):
            return f"torch.{last}()"
        if last == "set_grad_enabled" and item.args and _bool(item.args[0].value) == "False":
            return "torch.set_grad_enabled(False)"
        return None

    def _inference_function(self, fn: cst.FunctionDef) -> str | None:
        for decorator in fn.decorators:
            d = decorator.decorator
            reason = self._inference_context(d if isinstance(d, cst.Call) else cst.Call(func=d))
            if reason:
                return f"@{reason}"
        name = fn.name.value
        if name.startswith("test_") and self._pytest_file:
            return None
        if _INFERENCE_FN.search(name):
            return f"{name}()"
        return None

    def _calls_backward(self, body) -> bool:
        key = id(body)
        if key not in self._backward:
            self._backward[key] = any(
                isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute) and n.func.attr.value == "backward"
                for n in walk(body)
            )
        return self._backward[key]

    def _annotated_module(self, annotation) -> bool:
        q = self.imports.qualname(annotation) if isinstance(annotation, (cst.Name, cst.Attribute)) else None
        return bool(q) and (q in ("torch.nn.Module", "torch.nn.modules.module.Module") or q in self._module_classes)

    def _overrides_with_super(self, fn: cst.FunctionDef) -> bool:
        return any(
            isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute) and n.func.attr.value == "train"
            and isinstance(n.func.value, cst.Call) and dotted(n.func.value.func) == "super"
            for n in walk(fn.body)
        )


_NOTHING = object()


# -- small helpers ------------------------------------------------------------------------------


def _mode(module: TorchModule, state: dict) -> tuple[str, cst.CSTNode | None]:
    for a in module.ancestors():
        if id(a) in state:
            return state[id(a)]
    root = list(module.ancestors())[-1]
    if root.kind in ("constructed", "instance") and root.is_module:
        return "train", root.origin  # PyTorch builds every module in training mode
    return "unknown", None


def _join(a: dict, b: dict) -> dict:
    """Two paths meet: a mode both agree on stays, any other becomes unknown (silence)."""
    joined = {}
    for key in a.keys() | b.keys():
        if key in a and key in b and a[key][0] == b[key][0]:
            joined[key] = a[key]
        elif not isinstance(key, tuple):
            joined[key] = ("unknown", None)
    return joined


def _train_mode(call: cst.Call) -> str:
    """``m.train()``/``m.train(True)`` -> train, ``m.train(False)``/``m.train(mode=False)`` -> eval."""
    if call.args and _bool(call.args[0].value) == "False":
        return "eval"
    return "train"


def _bool(node) -> str | None:
    return node.value if isinstance(node, cst.Name) and node.value in ("True", "False") else None


def _method(cls: cst.ClassDef | None, name: str) -> cst.FunctionDef | None:
    if cls is None or not isinstance(cls.body, cst.IndentedBlock):
        return None
    return next((s for s in cls.body.body if isinstance(s, cst.FunctionDef) and s.name.value == name), None)


def _body(block) -> list:
    return list(block.body) if isinstance(block, (cst.IndentedBlock, cst.SimpleStatementSuite)) else []


_EMPTY = cst.Module(body=[])


def _code(node: cst.CSTNode) -> str:
    return _EMPTY.code_for_node(node)
