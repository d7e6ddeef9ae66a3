from __future__ import annotations

from typing import Iterator

from lint.context import FileContext
from lint.frameworks.keras import BN_MODEL_TOKENS
from lint.flow.events import Placement
from lint.rule import Invalid, Rule, Severity, Violation, assignment
from lint.rules._keras_advice import keep_frozen_too, unfrozen_note, when_it_bites


class FrozenBaseInSequential(Rule):
    """
    ## What it does
    Flags a frozen model that contains BatchNormalization placed inside a `Sequential`,
    either in `Sequential([base, ...])` or with `model.add(base)`.

    ## Why is this bad?
    A `Sequential` calls each layer with the outer model's training flag, so the base can
    never be called with `training=False`. While the base stays frozen, Keras 3 and tf.keras
    2.x keep its BatchNormalization layers in inference mode and nothing goes wrong; once the
    base is unfrozen for fine-tuning, they normalize with batch statistics in `fit()` and
    overwrite their moving averages, and `fit()` and `evaluate()` disagree on the same data
    (in multi-backend Keras before 2.4 this happens even while frozen). This is the setting of
    the classic "ResNet50 inside Sequential" reports.

    No automatic fix: moving to the functional API changes how the model is built.

    Reported only for a base that is unfrozen somewhere in the project without keeping its
    BatchNormalization frozen: in this file (`base.trainable = True`, a loop setting its layers
    trainable, or a model containing it made trainable) or in another module of the project (a
    fine-tuning script importing the model or its builder, or a script continuing this one with
    its names); the message names an unfreeze in another file (`the base is unfrozen at
    fine_tune.py:4`). A base nothing unfreezes is feature extraction and predicts correctly as
    written: it is reported only with the `latent` setting (`--latent`, `latent = true` in
    `[tool.bncheck]`), with a message starting "latent". With `target-keras` below 2.4, where
    frozen BatchNormalization used batch statistics anyway, every frozen base is reported.

    ## Example
    ```python
    base = keras.applications.ResNet50(include_top=False, pooling="avg")
    base.trainable = False
    model = keras.Sequential([base, keras.layers.Dense(1, activation="sigmoid")])
    ```

    ## Use instead
    ```python
    base = keras.applications.ResNet50(include_top=False, pooling="avg")
    base.trainable = False
    inputs = keras.Input((224, 224, 3))
    x = base(inputs, training=False)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    ```

    ## References
    - Keras guide, "Transfer learning & fine-tuning": https://keras.io/guides/transfer_learning/
    - keras-team/keras#20285: https://github.com/keras-team/keras/issues/20285
    """

    code = "BN002"
    name = "frozen-batchnorm-base-in-sequential"
    severity = Severity.WARNING
    project_wide = True  # a base unfrozen (BN001/BN002) or built and frozen (BN003) in another module
    framework = "keras"
    summary = "Frozen BatchNormalization base inside `Sequential`"
    queries_keras_models = True
    prefilter = ((assignment("trainable", "False"),), ("Sequential", ".add("), BN_MODEL_TOKENS)

    VALID = [
        # not frozen
        """
import keras
base = keras.applications.ResNet50(include_top=False, pooling="avg")
model = keras.Sequential([base, keras.layers.Dense(1)])
""",
        # no BatchNormalization in VGG19
        """
from keras.applications import VGG19
from keras import Sequential, layers
base = VGG19(include_top=False, pooling="avg")
base.trainable = False
model = Sequential([base, layers.Dense(1)])
""",
        # functional model with training=False
        """
import keras
base = keras.applications.ResNet50(include_top=False, pooling="avg")
base.trainable = False
inputs = keras.Input((224, 224, 3))
model = keras.Model(inputs, keras.layers.Dense(1)(base(inputs, training=False)))
""",
        # a hub layer: unknown contents, no guess
        """
import tensorflow as tf
import tensorflow_hub as hub
base = hub.KerasLayer("https://example.invalid/model", trainable=False)
model = tf.keras.Sequential([base, tf.keras.layers.Dense(1)])
""",
    ]

    #: Feature extraction: a frozen base that nothing unfreezes predicts correctly as written. Quiet by
    #: default (they are VALID too); flagged, marked "latent", with the ``latent`` setting.
    LATENT = [
        """
from tensorflow import keras
res_net = keras.applications.ResNet50(include_top=False, weights=None)
res_net.trainable = False
model = keras.models.Sequential()
model.add(res_net)
model.add(keras.layers.GlobalAveragePooling2D())
model.add(keras.layers.Dense(1, activation="sigmoid"))
""",
        """
import tensorflow as tf
base = tf.keras.applications.EfficientNetB3(include_top=False, pooling="avg")
for layer in base.layers:
    layer.trainable = False
model = tf.keras.Sequential([base, tf.keras.layers.Dense(5)])
""",
    ]
    VALID = VALID + LATENT

    INVALID = [Invalid(code, settings={"latent": True}) for code in LATENT] + [
        # the base unfrozen for fine-tuning after a first fit
        Invalid(
            """
from tensorflow import keras
res_net = keras.applications.ResNet50(include_top=False, weights=None)
res_net.trainable = False
model = keras.models.Sequential()
model.add(res_net)
model.add(keras.layers.GlobalAveragePooling2D())
model.add(keras.layers.Dense(1, activation="sigmoid"))
model.fit(x_train, y_train, epochs=5)
res_net.trainable = True
model.fit(x_train, y_train, epochs=2)
"""
        ),
        # the whole Sequential, base included, made trainable
        Invalid(
            """
import tensorflow as tf
base = tf.keras.applications.EfficientNetB3(include_top=False, pooling="avg")
for layer in base.layers:
    layer.trainable = False
model = tf.keras.Sequential([base, tf.keras.layers.Dense(5)])
model.trainable = True
"""
        ),
    ]

    def check(self, ctx: FileContext) -> Iterator[Violation]:
        models = ctx.flow.keras_models
        seen: set[int] = set()  # a name that may denote two bases (bound on two paths) is reported once
        for event in models.of(Placement):
            if id(event.node) in seen or not (event.model.contains_bn() and models.is_frozen(event.model)):
                continue
            note = unfrozen_note(models, event.model, ctx.settings)
            if note is not None:
                seen.add(id(event.node))
                yield Violation(
                    event.node,
                    f"{note[0]}frozen {event.model.label} base "
                    f"`{ctx.code(event.node)}` is placed in a Sequential, where it "
                    f"cannot be called with training=False: {when_it_bites(ctx.target)}; build the model with the "
                    f"functional API and call `base(inputs, training=False)`{keep_frozen_too(ctx.target)}{note[1]}",
                )
