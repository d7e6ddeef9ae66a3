from __future__ import annotations

from typing import Iterator

import libcst as cst

from lint.context import FileContext
from lint.frameworks.keras import BN_MODEL_TOKENS
from lint.frameworks.torch import is_random_tensor
from lint.flow.events import GraphReuse, ModelCall
from lint.nodes import children
from lint.rule import Fix, Invalid, Rule, Severity, Violation, assignment
from lint.rules._keras_advice import keep_frozen_too, unfrozen_note, when_it_bites


class FrozenBaseWithoutTrainingFalse(Rule):
    """
    ## What it does
    Flags a frozen model that contains BatchNormalization (a `keras.applications` base such
    as ResNet50, a model built in the same file with `BatchNormalization` layers, or a factory
    named in `extra-batchnorm-models`) that is called without `training=False`, called with
    `training=True`, or whose graph is reused through `base.output`.

    ## Why is this bad?
    BatchNormalization normalizes with the batch's statistics in training and with its moving
    averages at inference. `training=False` pins the base to inference mode. Without it the
    base follows the outer model: in Keras 3 and tf.keras 2.x a frozen
    (`trainable = False`) BatchNormalization layer still runs in inference mode, so the
    problem is latent while the base stays frozen; the moment the base is unfrozen for
    fine-tuning, its BatchNormalization layers normalize with batch statistics in `fit()` and
    overwrite the pretrained moving averages, and `fit()` and `predict()` disagree on the
    same data. In multi-backend Keras before 2.4 it bites even while frozen. Reusing
    `base.output` builds the head on the base's own graph, where no `training` argument can
    be given at all.

    Keras 3.0–3.15 add a twist (keras-team/keras#20285): a functional model trained with
    `fit()` overrides the recorded `training=False`, so on those versions the base's
    BatchNormalization layers must also be kept frozen when it is unfrozen (see BN003).

    Reported only for a base that is unfrozen somewhere in the project without keeping its
    BatchNormalization frozen: in this file (`base.trainable = True`, a loop setting its layers
    trainable, or a model containing it made trainable) or in another module of the project (a
    fine-tuning script importing the model or its builder, or a script continuing this one with
    its names); the message names an unfreeze in another file (`the base is unfrozen at
    fine_tune.py:4`). A base nothing unfreezes is feature extraction and predicts correctly as
    written: it is reported only with the `latent` setting (`--latent`, `latent = true` in
    `[tool.bncheck]`), with a message starting "latent". With `target-keras` below 2.4, where
    frozen BatchNormalization used batch statistics anyway, every frozen base is reported.

    An eager call on one concrete batch (`batch, labels = next(iter(ds))`, random numbers) is
    not reported: outside `fit()` Keras runs it in inference mode, and it is not the graph.

    Models whose origin lies in another file (`keras.models.load_model`, a hub layer) are not
    reported: the linter cannot see whether they contain BatchNormalization, and prefers
    silence to a guess. Name your own factories in `extra-batchnorm-models`.

    ## Example
    ```python
    base = keras.applications.ResNet50(include_top=False, weights="imagenet")
    base.trainable = False
    inputs = keras.Input((224, 224, 3))
    x = base(inputs)
    ```

    ## Use instead
    ```python
    base = keras.applications.ResNet50(include_top=False, weights="imagenet")
    base.trainable = False
    inputs = keras.Input((224, 224, 3))
    x = base(inputs, training=False)
    ```

    `--fix` adds `training=False` to a call that has no `training` argument. A call with an
    explicit `training=True` or a reused `base.output` is left for you to change.

    ## References
    - Keras guide, "Transfer learning & fine-tuning": https://keras.io/guides/transfer_learning/
    - keras-team/keras#20285: https://github.com/keras-team/keras/issues/20285
    - Keras BatchNormalization: https://keras.io/api/layers/normalization_layers/batch_normalization/
    """

    code = "BN001"
    name = "frozen-batchnorm-base-call"
    severity = Severity.WARNING
    project_wide = True  # a base unfrozen (BN001/BN002) or built and frozen (BN003) in another module
    framework = "keras"
    summary = "Frozen BatchNormalization base used without `training=False`"
    queries_keras_models = True
    prefilter = ((assignment("trainable", "False"),), BN_MODEL_TOKENS)
    fixable = True

    VALID = [
        # called with training=False
        """
import keras
base = keras.applications.ResNet50(include_top=False, weights=None)
base.trainable = False
inputs = keras.Input((224, 224, 3))
x = base(inputs, training=False)
""",
        # VGG16 has no BatchNormalization
        """
from tensorflow import keras
base = keras.applications.VGG16(include_top=False)
base.trainable = False
x = base(keras.Input((224, 224, 3)))
""",
        # not frozen: the whole base trains from the start, by choice
        """
import keras
base = keras.applications.MobileNetV2(weights=None)
x = base(keras.Input((224, 224, 3)))
""",
        # a model loaded from a file: origin unknown, no guess
        """
import keras
base = keras.models.load_model("backbone.keras")
base.trainable = False
x = base(keras.Input((224, 224, 3)))
""",
        # ConvNeXt normalizes with LayerNormalization
        """
import keras
base = keras.applications.ConvNeXtTiny(include_top=False)
base.trainable = False
x = base(keras.Input((224, 224, 3)))
""",
        # an eager call on one batch of a dataset, to print the feature shape: inference mode, not the graph
        """
import keras
base = keras.applications.MobileNetV2(include_top=False)
base.trainable = False
batch, labels = next(iter(train_ds))
print(base(batch).shape)
x = base(keras.Input((160, 160, 3)), training=False)
""",
        # looking at the shape of the base's output is not building on its graph
        """
import keras
base = keras.applications.ResNet50V2(include_top=False)
base.trainable = False
print("features:", base.output.shape)
x = base(keras.Input((224, 224, 3)), training=False)
""",
        # the name is rebound to a new base before the unfreeze: the first base is never unfrozen
        """
import keras
base_model = keras.applications.ResNet50V2(include_top=False)
base_model.trainable = False
features = base_model(keras.Input((224, 224, 3)))
base_model = keras.applications.EfficientNetB0(include_top=False)
base_model.trainable = False
inputs = keras.Input((224, 224, 3))
model = keras.Model(inputs, keras.layers.Dense(10)(base_model(inputs, training=False)))
base_model.trainable = True
""",
        # trainable, with only its first 100 layers frozen: not a frozen base (plain fine-tuning)
        """
import keras
base = keras.applications.EfficientNetB0(include_top=False)
base.trainable = True
for layer in base.layers[:100]:
    layer.trainable = False
head = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(base.output))
""",
        # a training argument passed through from an enclosing call() is the caller's decision
        """
import keras
class Classifier(keras.Model):
    def __init__(self):
        super().__init__()
        self.base = keras.applications.EfficientNetB0(include_top=False)
        self.base.trainable = False
    def call(self, x, training=None):
        return self.base(x, training=training)
""",
    ]

    #: Feature extraction: a frozen base that nothing unfreezes predicts correctly as written. Quiet by
    #: default (they are VALID below); flagged, marked "latent", with the ``latent`` setting.
    LATENT = [
        # the head built on the base's call on a symbolic input, next to a shape check on one batch
        """
import keras
base = keras.applications.MobileNetV2(include_top=False)
base.trainable = False
batch, labels = next(iter(train_ds))
print(base(batch).shape)
x = base(keras.Input((160, 160, 3)))
""",
        """
import keras
base = keras.applications.ResNet50(include_top=False, weights=None)
base.trainable = False
inputs = keras.Input((224, 224, 3))
x = base(inputs)
""",
        # tf.keras module path and an alias
        """
import tensorflow as tf
from tensorflow.keras.applications.resnet50 import ResNet50 as R
base = R(include_top=False)
base.trainable = False
x = base(tf.keras.Input((224, 224, 3)), training=True)
""",
        # graph reuse through base.output
        """
from tensorflow.keras.applications import MobileNetV2
from tensorflow.keras import layers, Model
base = MobileNetV2(include_top=False)
for layer in base.layers:
    layer.trainable = False
out = layers.Dense(3)(layers.GlobalAveragePooling2D()(base.output))
model = Model(base.input, out)
""",
        # a base built by a helper of the same file, frozen there
        """
import keras
def make_backbone():
    backbone = keras.applications.DenseNet121(include_top=False)
    backbone.trainable = False
    return backbone
backbone = make_backbone()
features = backbone(keras.Input((224, 224, 3)))
""",
        # a model defined in the same file with BatchNormalization layers
        """
from keras import layers, Model, Input
def encoder():
    inputs = Input((32, 32, 3))
    x = layers.Conv2D(16, 3)(inputs)
    x = layers.BatchNormalization()(x)
    return Model(inputs, x)
enc = encoder()
enc.trainable = False
y = enc(Input((32, 32, 3)))
""",
        # reached through a Sequential's layers
        """
import keras
model = keras.Sequential([keras.applications.Xception(include_top=False), keras.layers.Dense(2)])
base = model.layers[0]
base.trainable = False
z = base(keras.Input((299, 299, 3)))
""",
        # every unfreeze keeps BatchNormalization frozen: its mode does not depend on training=False
        """
import keras
base = keras.applications.EfficientNetB0(include_top=False)
base.trainable = False
x = base(keras.Input((224, 224, 3)))
for layer in base.layers[-20:]:
    if not isinstance(layer, keras.layers.BatchNormalization):
        layer.trainable = True
""",
    ]
    VALID = VALID + LATENT

    INVALID = [Invalid(code, settings={"latent": True}) for code in LATENT] + [
        # fine-tuned later: the head built on the base's call, next to a shape check on one batch
        Invalid(
            """
import keras
base = keras.applications.MobileNetV2(include_top=False)
base.trainable = False
batch, labels = next(iter(train_ds))
print(base(batch).shape)
x = base(keras.Input((160, 160, 3)))
base.trainable = True
"""
        ),
        # the top 20 layers unfrozen for fine-tuning
        Invalid(
            """
import keras
base = keras.applications.ResNet50(include_top=False, weights=None)
base.trainable = False
inputs = keras.Input((224, 224, 3))
x = base(inputs)
for layer in base.layers[-20:]:
    layer.trainable = True
""",
            fixed="""
import keras
base = keras.applications.ResNet50(include_top=False, weights=None)
base.trainable = False
inputs = keras.Input((224, 224, 3))
x = base(inputs, training=False)
for layer in base.layers[-20:]:
    layer.trainable = True
""",
        ),
        # tf.keras module path and an alias, called with training=True, unfrozen later
        Invalid(
            """
import tensorflow as tf
from tensorflow.keras.applications.resnet50 import ResNet50 as R
base = R(include_top=False)
base.trainable = False
x = base(tf.keras.Input((224, 224, 3)), training=True)
base.trainable = True
"""
        ),
        # graph reuse through base.output; the derived model's top layers (the base's own) unfrozen
        Invalid(
            """
from tensorflow.keras.applications import MobileNetV2
from tensorflow.keras import layers, Model
base = MobileNetV2(include_top=False)
for layer in base.layers:
    layer.trainable = False
out = layers.Dense(3)(layers.GlobalAveragePooling2D()(base.output))
model = Model(base.input, out)
for layer in model.layers[100:]:
    layer.trainable = True
"""
        ),
        # a base built and frozen by a helper of the same file, unfrozen by another
        Invalid(
            """
import keras
def make_backbone():
    backbone = keras.applications.DenseNet121(include_top=False)
    backbone.trainable = False
    return backbone
def fine_tune(net):
    net.trainable = True
backbone = make_backbone()
features = backbone(keras.Input((224, 224, 3)))
backbone.trainable = True
""",
            fixed="""
import keras
def make_backbone():
    backbone = keras.applications.DenseNet121(include_top=False)
    backbone.trainable = False
    return backbone
def fine_tune(net):
    net.trainable = True
backbone = make_backbone()
features = backbone(keras.Input((224, 224, 3)), training=False)
backbone.trainable = True
""",
        ),
        # a model defined in the same file with BatchNormalization layers; the model around it unfrozen
        Invalid(
            """
from keras import layers, Model, Input
def encoder():
    inputs = Input((32, 32, 3))
    x = layers.Conv2D(16, 3)(inputs)
    x = layers.BatchNormalization()(x)
    return Model(inputs, x)
enc = encoder()
enc.trainable = False
inputs = Input((32, 32, 3))
classifier = Model(inputs, layers.Dense(2)(enc(inputs)))
classifier.trainable = True
"""
        ),
        # reached through a Sequential's layers; the Sequential unfrozen
        Invalid(
            """
import keras
model = keras.Sequential([keras.applications.Xception(include_top=False), keras.layers.Dense(2)])
base = model.layers[0]
base.trainable = False
z = base(keras.Input((299, 299, 3)))
model.trainable = True
"""
        ),
    ]

    def check(self, ctx: FileContext) -> Iterator[Violation]:
        models = ctx.flow.keras_models
        seen: set[int] = set()  # a name that may denote two bases (bound on two paths) is reported once
        for event in models.of(ModelCall):
            if id(event.node) in seen:
                continue
            if event.training == "absent" and _on_concrete_batch(ctx, event.node):
                continue  # an eager call on one real batch runs in inference mode (e.g. to print shapes)
            if event.training in ("absent", "true") and event.model.contains_bn() and models.is_frozen(event.model):
                note = unfrozen_note(models, event.model, ctx.settings)
                if note is not None:
                    seen.add(id(event.node))
                    yield self._call(ctx, event, note)
        reuses = models.of(GraphReuse)
        looked_at = _shape_reads(ctx.module) if reuses else set()
        for event in reuses:
            if id(event.node) in looked_at or id(event.node) in seen:
                continue  # ``print(base.output.shape)`` looks at the graph, it does not build on it
            if event.attr.startswith("output") and event.model.contains_bn() and models.is_frozen(event.model):
                note = unfrozen_note(models, event.model, ctx.settings)
                if note is None:
                    continue
                owner = ctx.code(event.node.value)
                seen.add(id(event.node))
                yield Violation(
                    event.node,
                    f"{note[0]}the graph of frozen {event.model.label} base `{owner}` "
                    f"is reused through `.{event.attr}`, "
                    f"where no training=False can be given: {when_it_bites(ctx.target)}; build the head on "
                    f"`base(inputs, training=False)` instead{keep_frozen_too(ctx.target)}{note[1]}",
                )

    def _call(self, ctx: FileContext, event: ModelCall, note: tuple[str, str]) -> Violation:
        node: cst.Call = event.node
        name = ctx.code(node.func)
        how = "with training=True" if event.training == "true" else "without training=False"
        message = (
            f"{note[0]}frozen {event.model.label} base `{name}` is called {how}: {when_it_bites(ctx.target)}; "
            f"call it as `{name}(..., training=False)`{keep_frozen_too(ctx.target)}{note[1]}"
        )
        fix = Fix().replace(node, add_keyword(node, "training", cst.Name("False"))) if event.training == "absent" else None
        return Violation(node, message, fix)


def _shape_reads(module: cst.Module) -> set[int]:
    """Ids of the expressions whose ``.shape`` (or ``.get_shape()``) is read: ``base.output.shape``."""
    found: set[int] = set()
    stack: list[cst.CSTNode] = [module]
    while stack:
        node = stack.pop()
        if isinstance(node, cst.Attribute) and node.attr.value in ("shape", "get_shape"):
            found.add(id(node.value))
        stack.extend(children(node))
    return found


def _on_concrete_batch(ctx: FileContext, call: cst.Call) -> bool:
    """The input is one batch taken from a dataset (``batch, labels = next(iter(ds))``) or made of random numbers.

    Such a call is eager, outside ``fit()``: Keras runs it in inference mode whatever the base's
    state, and it is not part of the model's graph (the functional head is built on ``Input``)."""
    first = next((a.value for a in call.args if a.keyword is None and a.star == ""), None)
    if not isinstance(first, cst.Name):
        return False
    for target, value in ctx.assignments:
        bound = [target] if isinstance(target, cst.Name) else [
            e.value for e in getattr(target, "elements", ()) if isinstance(e.value, cst.Name)
        ]
        if not any(n.value == first.value for n in bound) or not isinstance(value, cst.Call):
            continue
        func = value.func
        if (isinstance(func, cst.Name) and func.value == "next") or (isinstance(func, cst.Attribute) and func.attr.value == "next"):
            return True
        if is_random_tensor(ctx.imports.qualname(func)):
            return True
    return False


def add_keyword(call: cst.Call, keyword: str, value: cst.BaseExpression) -> cst.Call:
    """``f(a)`` -> ``f(a, keyword=value)``, keeping a multi-line call's layout and trailing comma."""
    new = cst.Arg(keyword=cst.Name(keyword), value=value,
                  equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace("")))
    args = list(call.args)
    if not args:
        return call.with_changes(args=[new])
    last = args[-1]
    if isinstance(last.comma, cst.Comma):  # trailing comma: the new argument takes it over
        indent = call.whitespace_before_args
        args[-1] = last.with_changes(comma=cst.Comma(whitespace_after=indent if isinstance(
            indent, cst.ParenthesizedWhitespace) else cst.SimpleWhitespace(" ")))
        new = new.with_changes(comma=last.comma)
    return call.with_changes(args=[*args, new])
