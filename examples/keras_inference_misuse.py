"""Training mode forced at inference (BN004) and the learning-phase API (BN005).

Shapes taken from public code: an evaluation helper that calls the model with training=True,
a custom block whose call() defaults to training=True, BatchNormalization wired into the graph
in training mode, and Keras 2 era learning-phase code. Run `bncheck examples/` to see the
findings. This file is never executed by bncheck.
"""

import numpy as np
import tensorflow as tf
from tensorflow import keras
from tensorflow.keras import backend as K
from tensorflow.keras import layers


class ConvBlock(layers.Layer):
    def __init__(self, filters):
        super().__init__()
        self.conv = layers.Conv2D(filters, 3, padding="same")
        self.bn = layers.BatchNormalization()

    # BN004: with this default a plain `model(x)` normalizes with batch statistics; use training=None.
    def call(self, inputs, training=True):
        return tf.nn.relu(self.bn(self.conv(inputs), training=training))


def build_classifier():
    inputs = keras.Input((32, 32, 3))
    x = ConvBlock(32)(inputs)
    x = layers.Conv2D(64, 3)(x)
    # BN004: training=True here is baked into the graph: predict() uses batch statistics too.
    x = layers.BatchNormalization()(x, training=True)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10)(x)
    return keras.Model(inputs, outputs)


model = build_classifier()
model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def evaluate(model, dataset):
    accuracy = keras.metrics.SparseCategoricalAccuracy()
    for images, labels in dataset:
        # BN004: evaluation in training mode: each batch is normalized by its own statistics.
        logits = model(images, training=True)
        accuracy.update_state(labels, logits)
    return accuracy.result()


def generate_images(generator, test_input):
    # Deliberate, as in the pix2pix tutorial: the generator is sampled in training mode on purpose.
    return generator(test_input, training=True)  # noqa: BN004


# Monte Carlo dropout on the Dropout layer alone leaves BatchNormalization in inference mode: not flagged.
mc_inputs = keras.Input((16,))
mc_hidden = layers.BatchNormalization()(layers.Dense(32)(mc_inputs))
mc_outputs = layers.Dense(1)(layers.Dropout(0.5)(mc_hidden, training=True))
mc_model = keras.Model(mc_inputs, mc_outputs)

# BN005: the learning-phase API is gone from Keras 3 and from tf.keras in TF 2.16+ (AttributeError).
K.set_learning_phase(0)

x_test = np.random.rand(8, 32, 32, 3).astype("float32")
# BN005: gone in Keras 3; on Keras 2 feeding 1 below put every BatchNormalization layer on batch statistics.
predict_fn = K.function([model.input, K.learning_phase()], [model.output])
predictions = predict_fn([x_test, 1])[0]
