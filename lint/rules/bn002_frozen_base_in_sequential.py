from __future__ import annotations

from typing import Iterator

from lint.context import FileContext
from lint.frameworks.keras import BN_MODEL_TOKENS
from lint.keras_models import Placement
from lint.rule import Invalid, Rule, Severity, Violation, assignment
from lint.rules._keras_advice import latent_note, keep_frozen_too, when_it_bites


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

    When nothing in the file unfreezes the base (`base.trainable = True`, or a loop setting its
    layers, or a model containing it, trainable), the message starts with "latent": the code as
    written is feature extraction and predicts correctly; the warning is for the day it is
    fine-tuned. An unfreeze in another module of the project is not seen yet.

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
    summary = "Frozen BatchNormalization base inside `Sequential`"
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

    INVALID = [
        Invalid(
            """
from tensorflow import keras
res_net = keras.applications.ResNet50(include_top=False, weights=None)
res_net.trainable = False
model = keras.models.Sequential()
model.add(res_net)
model.add(keras.layers.GlobalAveragePooling2D())
model.add(keras.layers.Dense(1, activation="sigmoid"))
"""
        ),
        Invalid(
            """
import tensorflow as tf
base = tf.keras.applications.EfficientNetB3(include_top=False, pooling="avg")
for layer in base.layers:
    layer.trainable = False
model = tf.keras.Sequential([base, tf.keras.layers.Dense(5)])
"""
        ),
    ]

    def check(self, ctx: FileContext) -> Iterator[Violation]:
        models = ctx.keras_models
        for event in models.of(Placement):
            if event.model.contains_bn() and models.is_frozen(event.model):
                yield Violation(
                    event.node,
                    f"{latent_note(models, event.model, ctx.target)}frozen {event.model.label} base "
                    f"`{ctx.code(event.node)}` is placed in a Sequential, where it "
                    f"cannot be called with training=False: {when_it_bites(ctx.target)}; build the model with the "
                    f"functional API and call `base(inputs, training=False)`{keep_frozen_too(ctx.target)}",
                )
