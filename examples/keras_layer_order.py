"""Dropout directly before BatchNormalization (BN006), in the three shapes Keras code takes.

Li et al., CVPR 2019: Dropout changes the variance of its output between training and inference,
and a BatchNormalization right after it learns the training-time variance. Run
`bncheck examples/` to see the findings. This file is never executed by bncheck.
"""

from tensorflow import keras
from tensorflow.keras import layers

mlp = keras.Sequential(
    [
        layers.Input((784,)),
        layers.Dense(512, activation="relu"),
        layers.Dropout(0.5),
        # BN006: this BatchNormalization learns the dropout-scaled variance.
        layers.BatchNormalization(),
        layers.Dense(10, activation="softmax"),
    ]
)

cnn = keras.Sequential()
cnn.add(layers.Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)))
cnn.add(layers.SpatialDropout2D(0.2))
# BN006: SpatialDropout2D directly before BatchNormalization in a model.add() chain.
cnn.add(layers.BatchNormalization())
cnn.add(layers.Flatten())
cnn.add(layers.Dense(10))

inputs = keras.Input((64,))
x = layers.Dense(128, activation="relu")(inputs)
x = layers.Dropout(0.3)(x)
# BN006: the functional chain has the same problem.
x = layers.BatchNormalization()(x)
outputs = layers.Dense(1)(x)
functional = keras.Model(inputs, outputs)

# Done right: BatchNormalization first, Dropout after it, just before the classifier.
fixed = keras.Sequential(
    [
        layers.Input((784,)),
        layers.Dense(512),
        layers.BatchNormalization(),
        layers.Activation("relu"),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ]
)
