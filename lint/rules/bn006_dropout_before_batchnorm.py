from __future__ import annotations

from typing import Iterator

import libcst as cst

from lint.context import FileContext
from lint.flow.events import DropoutFeedsBatchNorm
from lint.rule import Invalid, Rule, Severity, Violation

_PAPER = "Li et al., CVPR 2019"


#: a block that adds Dropout before BatchNormalization only when a rate is given
_DROPOUT_FLAG = """
from keras import layers
def conv_block(x, filters, dropout_rate=None):
    x = layers.Conv2D(filters, 3)(x)
    if dropout_rate:
        x = layers.Dropout(dropout_rate)(x)
    return layers.BatchNormalization()(x)
def build(inputs, dropout_rate=0.0):
    x = conv_block(inputs, 32, dropout_rate=dropout_rate)
    return conv_block(x, 64, dropout_rate=dropout_rate)
"""


class DropoutBeforeBatchNorm(Rule):
    """
    ## What it does
    Flags a Keras `Dropout` (or `SpatialDropout1D/2D/3D`) layer that feeds a
    `BatchNormalization` layer directly: neighbours in `Sequential([...])`, consecutive
    `model.add(...)` calls on the same model, and functional chains
    (`x = Dropout(0.3)(x)` then `x = BatchNormalization()(x)`, or nested
    `BatchNormalization()(Dropout(0.3)(x))`), including layers held in variables or in
    `self.` attributes of a subclassed model. Shape-only layers in between (`Flatten`,
    `Reshape`, `Permute`) do not separate them.

    Severity: warning. The model trains and predicts, just worse than it should.

    No automatic fix: reordering layers changes the architecture and any saved weights.

    The chain is followed by the flow analysis: a helper that adds or applies a Dropout is
    walked at its call site (`regularize(model)` then `model.add(BatchNormalization())`), and
    a Dropout applied on one branch of an `if` whose condition is unknown *may* feed the
    BatchNormalization after it. Code that cannot run is not reported: `if False:`, a module
    flag that is False, `if rate:` where `rate` is a parameter whose falsy default (`0.0`,
    `None`) the call leaves in place (also when passed on from its own caller's unset
    parameter). A function nobody in the file calls may be called from elsewhere, so there its
    parameters are unknown.

    ## Why is this bad?
    Dropout scales the kept activations by `1 / (1 - rate)` in training and does nothing at
    inference, so the variance of its output differs between the two. A BatchNormalization
    layer right after it learns its moving variance from the training-time (dropout) variance
    and applies it at inference to activations with a different variance: every output is
    scaled wrongly, and the error compounds through the layers that follow. Li et al. call this
    the "variance shift" and show it costs accuracy. Put Dropout after the last
    BatchNormalization (just before the classifier), or after BatchNormalization within a
    block.

    ## Example
    ```python
    model = keras.Sequential([
        layers.Dense(256, activation="relu"),
        layers.Dropout(0.5),
        layers.BatchNormalization(),
        layers.Dense(10, activation="softmax"),
    ])
    ```

    ## Use instead
    ```python
    model = keras.Sequential([
        layers.Dense(256),
        layers.BatchNormalization(),
        layers.Activation("relu"),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])
    ```

    ## References
    - Li, Chen, Hu, Yang, "Understanding the Disharmony between Dropout and Batch Normalization
      by Variance Shift", CVPR 2019: https://arxiv.org/abs/1801.05134
    - Keras Dropout: https://keras.io/api/layers/regularization_layers/dropout/
    """

    code = "BN006"
    name = "dropout-before-batchnorm"
    severity = Severity.WARNING
    summary = "Dropout directly before BatchNormalization (variance shift)"
    # both layers must be constructed in the file for the chain to be visible
    prefilter = (("Dropout(", "Dropout1D(", "Dropout2D(", "Dropout3D("), ("BatchNormalization(",))

    VALID = [
        # dead code (cause 7 of issue 11): the Dropout is built only for a rate that no call passes
        _DROPOUT_FLAG
        + """
features = build(inputs)
""",
        # BatchNormalization first, Dropout after
        """
from keras import layers, Sequential
model = Sequential([layers.Dense(64), layers.BatchNormalization(), layers.ReLU(), layers.Dropout(0.5), layers.Dense(1)])
""",
        # a Dense layer in between: not "directly before"
        """
from tensorflow.keras import layers
x = layers.Dropout(0.2)(inputs)
x = layers.Dense(64)(x)
x = layers.BatchNormalization()(x)
""",
        # PyTorch layers are out of scope of this Keras rule
        """
import torch.nn as nn
net = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(64))
""",
        # different models
        """
import keras
a = keras.Sequential()
b = keras.Sequential()
a.add(keras.layers.Dropout(0.5))
b.add(keras.layers.BatchNormalization())
""",
        # code that cannot run (cause 7): ``if False:`` and a module flag nobody sets
        """
from keras import layers, Sequential
USE_DROPOUT = False
x = layers.Dense(64)(inputs)
if False:
    x = layers.Dropout(0.5)(x)
if USE_DROPOUT:
    x = layers.Dropout(0.5)(x)
x = layers.BatchNormalization()(x)
""",
        # a helper that adds Dropout only for a rate, called without one
        """
from tensorflow import keras
def regularize(model, rate=0.0):
    if rate:
        model.add(keras.layers.Dropout(rate))
model = keras.Sequential()
model.add(keras.layers.Dense(128, activation="relu"))
regularize(model)
model.add(keras.layers.BatchNormalization())
""",
    ]

    INVALID = [
        # the same builder with a rate that a call passes: the Dropout exists and shifts the variance
        Invalid(
            _DROPOUT_FLAG
            + """
features = build(inputs, dropout_rate=0.2)
"""
        ),
        Invalid(
            """
from keras import layers, Sequential
model = Sequential([layers.Dense(256, activation="relu"), layers.Dropout(0.5), layers.BatchNormalization(), layers.Dense(10)])
"""
        ),
        Invalid(
            """
from tensorflow.keras.models import Sequential
from tensorflow.keras.layers import Dense, Dropout, BatchNormalization
model = Sequential()
model.add(Dense(128, activation="relu"))
model.add(Dropout(0.3))
model.add(BatchNormalization())
"""
        ),
        Invalid(
            """
import tensorflow as tf
x = tf.keras.layers.Conv2D(64, 3)(inputs)
x = tf.keras.layers.SpatialDropout2D(0.2)(x)
x = tf.keras.layers.BatchNormalization()(x)
"""
        ),
        # the same helper with a rate: walked at its call site, its add() continues the model's chain
        Invalid(
            """
from tensorflow import keras
def regularize(model, rate=0.5):
    model.add(keras.layers.Dropout(rate))
model = keras.Sequential()
model.add(keras.layers.Dense(128, activation="relu"))
regularize(model)
model.add(keras.layers.BatchNormalization())
"""
        ),
        # Dropout on one branch of an ``if`` whose condition is not known: the tensor after it may come
        # from the Dropout (paths joined, not guessed)
        Invalid(
            """
from keras import layers
def head(x, rate):
    x = layers.Dense(64)(x)
    if rate > 0:
        x = layers.Dropout(rate)(x)
    else:
        x = layers.Activation("relu")(x)
    return layers.BatchNormalization()(x)
"""
        ),
        # a block builder returning a closure: the closure is walked where the builder's result is called
        Invalid(
            """
from tensorflow.keras import layers
def conv_block(filters, rate):
    def apply(x):
        x = layers.Conv2D(filters, 3)(x)
        x = layers.Dropout(rate)(x)
        return layers.BatchNormalization()(x)
    return apply
y = conv_block(32, 0.3)(inputs)
"""
        ),
        # a Dropout layer held in a variable, and the BatchNormalization nested around it
        Invalid(
            """
import tensorflow as tf
drop = tf.keras.layers.Dropout(0.4)
y = tf.keras.layers.BatchNormalization()(tf.keras.layers.Flatten()(drop(x)))
"""
        ),
    ]

    def check(self, ctx: FileContext) -> Iterator[Violation]:
        # The flow walk records each Dropout -> BatchNormalization it meets on a path that runs: a Dropout
        # built under ``if dropout_rate:`` with a default of 0.0 that no call overrides never does.
        for pair in ctx.flow.of(DropoutFeedsBatchNorm):
            # name the Dropout layer, not its application to a tensor
            layer = pair.dropout.func if pair.shape == "functional" and isinstance(pair.dropout, cst.Call) else pair.dropout
            dropout = ctx.code(layer)
            where = {
                "Sequential": "in this Sequential",
                "add": "in this chain of model.add() calls",
                "functional": "in this functional chain",
            }[pair.shape]
            yield Violation(
                pair.node,
                f"BatchNormalization directly after `{dropout}` {where}: it learns its moving variance from the "
                f"dropout-scaled training activations and applies it at inference, where Dropout is off, so every "
                f"output is mis-scaled (variance shift, {_PAPER}); move the Dropout after the BatchNormalization "
                f"(or after the last one, before the classifier)",
            )
