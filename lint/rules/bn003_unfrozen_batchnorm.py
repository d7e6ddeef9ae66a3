from __future__ import annotations

import re
from typing import Iterator

import libcst as cst

from lint.context import FileContext
from lint.frameworks.keras import BN_MODEL_TOKENS
from lint.flow.events import ModelFreeze, ModelUnfreeze
from lint.flow.keras_models import KerasModels
from lint.flow.values import KerasModel
from lint.frameworks.keras import is_bn_class
from lint.names import ImportMap, keras_name
from lint.rule import Fix, Invalid, Rule, Severity, Violation, assignment


class BatchNormUnfrozenForFineTuning(Rule):
    """
    ## What it does
    Flags code that makes the BatchNormalization layers of a base trainable again for
    fine-tuning (`base.trainable = True`, or a loop such as
    `for layer in base.layers[-20:]: layer.trainable = True`) without keeping them frozen:
    no `if not isinstance(layer, BatchNormalization)` guard in the loop and no later loop that
    sets `trainable = False` on each BatchNormalization layer. Only a base that was frozen
    first (the base, a model around it or its layers, before in the same function or anywhere in
    another) counts: `trainable = True` on a base nothing froze changes nothing, its
    BatchNormalization layers were training all along (ordinary full training). Freezing a slice
    of the layers (`base.layers[:100]`) and unfreezing another (`base.layers[100:]`) unfreezes
    nothing that was frozen either.

    The base may come from another module of the project: a model or builder with
    BatchNormalization imported from it (`from yolo3.model import yolo_body`), or the names of a
    script this one continues (a course task split into `feature_extraction.py` and
    `fine_tuning.py`); a freeze there counts, and the message names both (`built in
    feature_extraction.py:2, frozen at feature_extraction.py:5`). A base fetched back from a
    derived model's layers (`model.layers[2].trainable = True`) is followed too.

    ## Why is this bad?
    A trainable BatchNormalization layer normalizes with the statistics of each training
    batch and rewrites its moving mean and variance. Fine-tuning on a small dataset replaces
    the pretrained statistics with noisy ones, and because `fit()` reports metrics computed
    with batch statistics while `evaluate()` and `predict()` use the moving averages, the two
    disagree on the very same data (in one measured case, fit accuracy 1.0 and evaluate 0.47).

    Calling the base with `training=False` is not enough on Keras 3.0–3.15: a functional model
    trained with `fit()` overrides that recorded flag (keras-team/keras#20285), so the layers
    update anyway. The fix that works on every version is to set `trainable = False` on each
    BatchNormalization layer after unfreezing, then recompile. On Keras 2 / tf.keras and on
    releases with the #20285 fix, a base that is only ever called with `training=False` is
    protected, and this rule stays quiet for it (see `target-keras`).

    `--fix` inserts the guard or the re-freeze loop where the code's shape makes it
    unambiguous: a loop whose body sets `trainable = True` on its loop variable gets an
    `isinstance` guard, and `base.trainable = True` on a `keras.applications` base (or a model
    of this file with BatchNormalization layers) gets a re-freeze loop right after it. The
    file must already import `keras`, `tensorflow` or Keras's `layers`, so that the inserted
    code can name BatchNormalization.

    ## Example
    ```python
    base.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="binary_crossentropy")
    ```

    ## Use instead
    ```python
    base.trainable = True
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="binary_crossentropy")
    ```

    ## References
    - Keras guide, "Transfer learning & fine-tuning": https://keras.io/guides/transfer_learning/
    - keras-team/keras#20285: https://github.com/keras-team/keras/issues/20285
    - TensorFlow tutorial, "Transfer learning and fine-tuning": https://www.tensorflow.org/tutorials/images/transfer_learning
    """

    code = "BN003"
    name = "batchnorm-unfrozen-for-fine-tuning"
    severity = Severity.ERROR
    project_wide = True  # a base unfrozen (BN001/BN002) or built and frozen (BN003) in another module
    framework = "keras"
    summary = "BatchNormalization layers unfrozen for fine-tuning"
    queries_keras_models = True
    prefilter = ((assignment("trainable", "True"),), BN_MODEL_TOKENS)
    fixable = True

    VALID = [
        # the first layers frozen, the rest trainable from the start: nothing frozen is unfrozen (plain fine-tuning)
        """
import keras
base = keras.applications.MobileNetV2(include_top=False)
head = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(base.output))
model = keras.Model(base.input, head)
for layer in model.layers[:20]:
    layer.trainable = False
for layer in model.layers[20:]:
    layer.trainable = True
""",
        # the builder's ``trainable`` default is overridden at its only call: the base is never frozen
        """
import keras
def build(trainable=False):
    base = keras.applications.ResNet50(include_top=False)
    base.trainable = trainable
    inputs = keras.Input((224, 224, 3))
    return keras.Model(inputs, keras.layers.Dense(2)(base(inputs, training=False)))
model = build(trainable=True)
model.layers[1].trainable = True
""",
        # guard inside the loop
        """
import keras
base = keras.applications.ResNet50(include_top=False)
for layer in base.layers[-20:]:
    if not isinstance(layer, keras.layers.BatchNormalization):
        layer.trainable = True
""",
        # re-freeze loop after unfreezing
        """
from tensorflow.keras import layers
from tensorflow.keras.applications import EfficientNetB0
base = EfficientNetB0(include_top=False)
base.trainable = True
for layer in base.layers:
    if isinstance(layer, layers.BatchNormalization):
        layer.trainable = False
""",
        # `continue` past BatchNormalization layers
        """
import keras
base = keras.applications.MobileNetV2(include_top=False)
for layer in base.layers[100:]:
    if isinstance(layer, keras.layers.BatchNormalization):
        continue
    layer.trainable = True
""",
        # VGG16: nothing to keep frozen
        """
import keras
base = keras.applications.VGG16(include_top=False)
base.trainable = True
""",
        # never frozen: trainable=True changes nothing, BatchNormalization trained from the start
        """
import keras
base = keras.applications.ResNet50(include_top=False)
base.trainable = True
model = keras.Sequential([base, keras.layers.Dense(2)])
model.fit(x, y)
""",
        # unknown model from a file
        """
import keras
model = keras.models.load_model("m.keras")
model.trainable = True
""",
    ]

    INVALID = [
        # a base built (frozen by a default argument) inside a builder, fetched back from the derived model's layers
        Invalid(
            """
import keras
def build(trainable=False):
    base = keras.applications.EfficientNetB0(include_top=False)
    base.trainable = trainable
    inputs = keras.Input((224, 224, 3))
    x = base(inputs, training=False)
    return keras.Model(inputs, keras.layers.Dense(10)(x))
model = build()
model.fit(train_ds, epochs=5)
tuned = model.layers[1]
tuned.trainable = True
for layer in tuned.layers[:-10]:
    layer.trainable = False
model.fit(train_ds, epochs=5)
"""
        ),
        # some layers frozen by index in a one-line loop, then every layer of the derived model unfrozen
        Invalid(
            """
from keras.layers import Input, Conv2D, BatchNormalization, Lambda
from keras.models import Model
def body(inputs):
    return Model(inputs, BatchNormalization()(Conv2D(8, 3)(inputs)))
def create(frozen=10):
    image = Input((None, None, 3))
    net = body(image)
    for i in range(frozen): net.layers[i].trainable = False
    loss = Lambda(lambda t: t)(net.output)
    return Model(net.input, loss)
model = create()
model.fit(data, epochs=50)
for i in range(len(model.layers)):
    model.layers[i].trainable = True
model.fit(data, epochs=100)
"""
        ),
        Invalid(
            """
import keras
base = keras.applications.ResNet50(include_top=False, weights=None)
base.trainable = False
inputs = keras.Input((224, 224, 3))
x = base(inputs, training=False)
base.trainable = True
""",
            fixed="""
import keras
base = keras.applications.ResNet50(include_top=False, weights=None)
base.trainable = False
inputs = keras.Input((224, 224, 3))
x = base(inputs, training=False)
base.trainable = True
for layer in base.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.trainable = False
""",
        ),
        Invalid(
            """
from tensorflow.keras.applications import InceptionV3
from tensorflow.keras import layers
base = InceptionV3(include_top=False)
for layer in base.layers:
    layer.trainable = False
for layer in base.layers[249:]:
    layer.trainable = True
""",
            fixed="""
from tensorflow.keras.applications import InceptionV3
from tensorflow.keras import layers
base = InceptionV3(include_top=False)
for layer in base.layers:
    layer.trainable = False
for layer in base.layers[249:]:
    if not isinstance(layer, layers.BatchNormalization):
        layer.trainable = True
""",
        ),
        # a re-freeze *before* the unfreeze is undone by it
        Invalid(
            """
import keras
base = keras.applications.DenseNet121(include_top=False)
for layer in base.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.trainable = False
base.trainable = True
"""
        ),
        # unfreezing the whole model that wraps the base
        Invalid(
            """
import tensorflow as tf
base = tf.keras.applications.MobileNetV3Small(include_top=False, pooling="avg")
base.trainable = False
model = tf.keras.Sequential([base, tf.keras.layers.Dense(10)])
model.trainable = True
"""
        ),
        # reached through get_layer by its default name
        Invalid(
            """
import keras
inputs = keras.Input((224, 224, 3))
x = keras.applications.ResNet50(include_top=False, weights=None)(inputs, training=False)
model = keras.Model(inputs, keras.layers.Dense(2)(x))
model.get_layer("resnet50").trainable = False
model.fit(x_train, y_train)
model.get_layer("resnet50").trainable = True
"""
        ),
    ]

    def check(self, ctx: FileContext) -> Iterator[Violation]:
        models = ctx.flow.keras_models
        seen: set[int] = set()
        for event in models.of(ModelUnfreeze):
            if event.guarded or id(event.node) in seen or not event.model.contains_bn():
                continue
            if not models.frozen_before(event) or models.refrozen_after(event) or _protected(models, event.model, ctx):
                continue
            seen.add(id(event.node))
            yield Violation(event.node, _message(ctx, event), _fix(ctx, event))


def _protected(models: KerasModels, model: KerasModel, ctx: FileContext) -> bool:
    """Keras 2 / fixed Keras 3: ``training=False`` on every use keeps BatchNormalization in inference mode."""
    if not ctx.target.training_false_protects:
        return False
    bearers = [m for m in model.lineage() if m.has_bn]
    return bool(bearers) and all(models.only_called_with_training_false(m) for m in bearers)


def _message(ctx: FileContext, event: ModelUnfreeze) -> str:
    if event.loop is not None:
        owner, what = ctx.code(event.loop.iter), f"layers of the {event.model.label} base"
    elif event.layer_of:
        owner, what = _owner(ctx, event.node), f"a layer of the {event.model.label}{'' if event.model.label in ('Model', 'Sequential') else ' model'} (a base inside it)"
    else:
        owner, what = _owner(ctx, event.node), f"{event.model.label} base"
    twist = (
        ""
        if ctx.target.training_false_protects
        else f" ({ctx.target.label} does this even when the base was called with training=False, keras#20285)"
    )
    return (
        f"unfreezing {what} `{owner}` makes its BatchNormalization layers trainable: fit() normalizes with "
        f"batch statistics and rewrites the moving averages{twist}, so fit() and evaluate() disagree on the same "
        f"data; after unfreezing, set trainable = False on each BatchNormalization layer and recompile"
        f"{_provenance(ctx, event)}"
    )


def _provenance(ctx: FileContext, event: ModelUnfreeze) -> str:
    """The evidence chain of a base from another module: where it is built and where it was frozen."""
    models = ctx.flow.keras_models
    for model in event.model.lineage():
        if model.defined_at:
            frozen = next((f.elsewhere for f in models.of(ModelFreeze) if f.model is model and f.elsewhere), "")
            return f" (`{model.label}` is built in {model.defined_at}" + (f", frozen at {frozen})" if frozen else ")")
    return ""


def _fix(ctx: FileContext, event: ModelUnfreeze) -> Fix | None:
    line = event.node
    if not isinstance(line, cst.SimpleStatementLine) or len(line.body) != 1:
        return None
    bn = bn_class_expression(ctx.imports)
    if bn is None:
        return None
    config = ctx.module.config_for_parsing
    indent = ctx.module.default_indent
    if event.loop_var is not None:
        guarded = cst.parse_statement(f"if not isinstance({event.loop_var}, {bn}):\n{indent}pass\n", config)
        return Fix().replace(line, guarded.with_changes(body=guarded.body.with_changes(body=[line]),
                                                       leading_lines=line.leading_lines))
    model = event.model
    if model.children or not model.has_bn:  # a wrapper's .layers do not reach a nested base's layers
        return None
    owner = _owner(ctx, line)
    var = _free_name(ctx.module.code, ("layer", "bn_layer", "bn_candidate"))
    if owner is None or var is None:
        return None
    refreeze = cst.parse_statement(
        f"for {var} in {owner}.layers:\n{indent}if isinstance({var}, {bn}):\n{indent * 2}{var}.trainable = False\n",
        config,
    )
    return Fix().replace(line, cst.FlattenSentinel([line, refreeze]))


def _owner(ctx: FileContext, line: cst.CSTNode) -> str | None:
    """``base`` in ``base.trainable = True``."""
    statement = line.body[0] if isinstance(line, cst.SimpleStatementLine) and line.body else None
    if isinstance(statement, cst.Assign) and isinstance(statement.targets[0].target, cst.Attribute):
        return ctx.code(statement.targets[0].target.value)
    return None


def bn_class_expression(imports: ImportMap) -> str | None:
    """How this file can name BatchNormalization without a new import, or None."""
    by_kind: dict[str, str] = {}
    for local, full in imports.aliases.items():
        name = keras_name(full)
        if is_bn_class(full) and name and full.endswith("BatchNormalization"):
            by_kind.setdefault("class", local)
        elif name == "keras.layers":
            by_kind.setdefault("layers", f"{local}.BatchNormalization")
        elif name == "keras":
            by_kind.setdefault("keras", f"{local}.layers.BatchNormalization")
        elif full == "tensorflow":
            by_kind.setdefault("tf", f"{local}.keras.layers.BatchNormalization")
    return next((by_kind[k] for k in ("class", "layers", "keras", "tf") if k in by_kind), None)


def _free_name(code: str, candidates: tuple[str, ...]) -> str | None:
    """A loop variable name the file does not use anywhere, so the inserted loop shadows nothing."""
    return next((c for c in candidates if not re.search(rf"\b{c}\b", code)), None)
