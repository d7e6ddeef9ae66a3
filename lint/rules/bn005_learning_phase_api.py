from __future__ import annotations

from typing import Iterator

import libcst as cst

from lint.context import FileContext
from lint.flow.events import LearningPhaseUse
from lint.names import dotted
from lint.rule import Invalid, Rule, Severity, Violation



class LearningPhaseApi(Rule):
    """
    ## What it does
    Flags the Keras learning-phase API in any import form: `set_learning_phase(...)`,
    `learning_phase()` (as in `K.function([model.input, K.learning_phase()], ...)` or
    `feed_dict={K.learning_phase(): 1}`) and `learning_phase_scope(...)`, reached through
    `keras.backend`, `tf.keras.backend`, `tf.compat.v1.keras.backend`, `tf_keras.backend`,
    `from keras import backend as K`, `K = tf.keras.backend` or a direct import.

    The message says which case applies:

    - **Keras 3, and tf.keras in TF 2.16+** (which is Keras 3; `tf.compat.v1.keras` too):
      the functions are gone and the line raises `AttributeError`. Chosen when the import path
      is `keras` or `tensorflow` (other than the legacy `tensorflow.python.keras` copy) and
      `target-keras` is 3 or later.
    - **tf_keras / Keras 2**, learning phase set or fed to 1: every BatchNormalization layer
      (and Dropout) runs in training mode at prediction.
    - **tf_keras / Keras 2**, `set_learning_phase(...)` after a model has been built or
      loaded in the same scope: the learning phase is captured when the model's graph is
      built, so setting it afterwards has no effect on that model.
    - otherwise: deprecated, and an `AttributeError` on the upgrade to Keras 3.

    Severity: error.

    No automatic fix: the replacement (`training=` on the model call, or `predict()`) is at
    the call sites, not at this line.

    In a file that also uses TensorFlow-1/Keras-2-only APIs (`tf.Session`, `K.get_session()`,
    `K.gradients()`, `tf.placeholder`), setting or reading the learning phase for inference
    (`0`, `False`, a read not fed with `1`) is not reported: that code cannot run on Keras 3 at
    all, and inference is the right mode there. Forcing `1` is still reported.

    ## Why is this bad?
    The learning phase was Keras 1/2's global switch between training and inference
    behaviour. Code that sets it to 1 for prediction, or feeds 1 to a `K.function`, puts
    every BatchNormalization layer on the statistics of the batch at hand instead of its
    moving averages: predictions depend on the batch and disagree with `predict()`. Set
    after the model exists, it silently does nothing. And since Keras 3 (tf.keras from
    TensorFlow 2.16) the API no longer exists, so the same lines crash with
    `AttributeError` after an upgrade.

    ## Example
    ```python
    from tensorflow.keras import backend as K

    K.set_learning_phase(0)
    model = build_model()
    get_output = K.function([model.input, K.learning_phase()], [model.output])
    predictions = get_output([x_test, 1])[0]
    ```

    ## Use instead
    ```python
    model = build_model()
    predictions = model(x_test, training=False)  # or model.predict(x_test)
    ```

    ## References
    - Keras 3 migration guide: https://keras.io/guides/migrating_to_keras_3/
    - TensorFlow 2.16 release notes (tf.keras is Keras 3): https://github.com/tensorflow/tensorflow/releases/tag/v2.16.1
    - Keras FAQ, the `training` argument: https://keras.io/getting_started/faq/
    """

    code = "BN005"
    name = "learning-phase-api"
    severity = Severity.ERROR
    summary = "Learning-phase API: gone in Keras 3, forces training mode or does nothing in Keras 2"
    prefilter = (("learning_phase",),)

    VALID = [
        # TF1/Keras-2-only code (a Session, K.gradients) putting the model in inference mode: the right
        # mode for code that cannot run on Keras 3 anyway
        """
import tensorflow as tf
from keras import backend as K
K.set_learning_phase(0)
model = load_trained()
grads = K.gradients(model.output, model.input)
sess = K.get_session()
""",
        # the replacement
        """
import keras
model = keras.models.load_model("m.keras")
predictions = model(x_test, training=False)
""",
        # a function of the user's own with the same name
        """
def set_learning_phase(value):
    global PHASE
    PHASE = value
set_learning_phase(0)
""",
        # an attribute of some other object
        """
trainer.learning_phase()
config.set_learning_phase(1)
""",
        # code that cannot run (cause 7): a legacy branch behind a module flag that is False
        """
import tf_keras
LEGACY = False
if LEGACY:
    tf_keras.backend.set_learning_phase(1)
""",
    ]

    INVALID = [
        # the same Keras-2-only code forcing training mode at prediction is wrong on every version
        Invalid(
            """
import tensorflow as tf
from keras import backend as K
K.set_learning_phase(1)
model = load_trained()
grads = K.gradients(model.output, model.input)
sess = K.get_session()
"""
        ),
        Invalid(
            """
import tensorflow as tf
tf.keras.backend.set_learning_phase(0)
model = tf.keras.models.load_model("model.h5")
"""
        ),
        Invalid(
            """
from keras import backend as K
get_output = K.function([model.input, K.learning_phase()], [model.output])
predictions = get_output([x_test, 1])[0]
"""
        ),
        Invalid(
            """
import tf_keras
model = tf_keras.models.load_model("model.h5")
tf_keras.backend.set_learning_phase(1)
"""
        ),
        Invalid(
            """
import tensorflow as tf
K = tf.compat.v1.keras.backend
with K.learning_phase_scope(0):
    y = model.predict(x)
"""
        ),
        # the phase reaches the call through a constant: 1, training mode at prediction
        Invalid(
            """
import tf_keras
PHASE = 1
model = tf_keras.models.load_model("model.h5")
tf_keras.backend.set_learning_phase(PHASE)
"""
        ),
    ]

    def check(self, ctx: FileContext) -> Iterator[Violation]:
        flow = ctx.flow
        fed_one: set[int] | None = None  # one more walk, only in files that use the API
        for use in flow.of(LearningPhaseUse):
            call = use.node
            if fed_one is None:
                fed_one = _fed_one(ctx)
            text = ctx.code(call.func) + "()"
            one = id(call) in fed_one or use.sets_one
            if flow.keras2_only and not one:
                continue  # inference mode in code that only runs on TF1/Keras 2 anyway: right there
            if not _alive(use.qualname, ctx):
                yield Violation(call, _gone(ctx, text, one))
            elif id(call) in fed_one or (use.api != "learning_phase" and use.sets_one):
                yield Violation(call, _training_at_prediction(text, fed=id(call) in fed_one))
            elif use.api == "set_learning_phase" and use.after_model:
                yield Violation(call, _no_effect(text))
            else:
                yield Violation(call, _deprecated(text))


def _alive(qualname: str, ctx: FileContext) -> bool:
    """Does this import path still have the learning-phase API for the target Keras?"""
    if qualname.startswith(("tf_keras.", "tensorflow.python.keras.")):  # Keras 2, also in TF 2.16+
        return True
    return ctx.target.version < (3,)  # ``keras`` and ``tf.keras`` follow the installed Keras


def _is_one(node) -> bool:
    return (isinstance(node, cst.Integer) and node.value == "1") or (isinstance(node, cst.Name) and node.value == "True")


def _fed_one(ctx: FileContext) -> set[int]:
    """``learning_phase()`` calls fed 1: ``{K.learning_phase(): 1}``, or the input of a
    ``K.function`` that is later called with 1 at the same position."""
    found: set[int] = set()
    functions: dict[str, list[tuple[int, cst.Call]]] = {}

    def phase_calls(node) -> bool:
        return isinstance(node, cst.Call) and dotted(node.func) is not None and dotted(node.func).endswith("learning_phase")

    class _Visitor(cst.CSTVisitor):
        def visit_Dict(self, node: cst.Dict) -> None:
            for element in node.elements:
                if isinstance(element, cst.DictElement) and phase_calls(element.key) and _is_one(element.value):
                    found.add(id(element.key))

        def visit_Assign(self, node: cst.Assign) -> None:
            value = node.value
            if not (isinstance(value, cst.Call) and value.args and len(node.targets) == 1):
                return
            name = dotted(node.targets[0].target)
            inputs = value.args[0].value
            if name is None or not isinstance(inputs, (cst.List, cst.Tuple)):
                return
            for position, element in enumerate(inputs.elements):
                if phase_calls(element.value):
                    functions.setdefault(name, []).append((position, element.value))

        def visit_Call(self, node: cst.Call) -> None:
            name = dotted(node.func)
            if name not in functions or not node.args or not isinstance(node.args[0].value, (cst.List, cst.Tuple)):
                return
            elements = node.args[0].value.elements
            for position, phase in functions[name]:
                if position < len(elements) and _is_one(elements[position].value):
                    found.add(id(phase))

    ctx.module.visit(_Visitor())
    return found


_INSTEAD = "pass training=False to the model call (predict() and evaluate() already do)"


def _gone(ctx: FileContext, text: str, one: bool) -> str:
    also = (
        "; it also fed 1 at prediction, which put every BatchNormalization layer on batch statistics"
        if one
        else ""
    )
    return (
        f"`{text}` does not exist in {ctx.target.label} (the learning-phase API was removed in Keras 3, and tf.keras "
        f"is Keras 3 from TensorFlow 2.16): this line raises AttributeError{also}; {_INSTEAD}"
    )


def _training_at_prediction(text: str, fed: bool) -> str:
    how = "is fed 1 here" if fed else "sets the learning phase to 1"
    return (
        f"`{text}` {how}: every BatchNormalization layer normalizes with the statistics of "
        f"the batch at hand instead of its moving averages, so predictions depend on the batch and disagree with "
        f"predict(); {_INSTEAD} (the API also raises AttributeError in Keras 3)"
    )


def _no_effect(text: str) -> str:
    return (
        f"`{text}` comes after the model is built: tf_keras/Keras 2 capture the learning phase when the model's "
        f"graph is built, so this has no effect on it (and it raises AttributeError in Keras 3); {_INSTEAD}"
    )


def _deprecated(text: str) -> str:
    return (
        f"`{text}` is the deprecated learning-phase API: it raises AttributeError in Keras 3 and in tf.keras from "
        f"TensorFlow 2.16; {_INSTEAD}"
    )
