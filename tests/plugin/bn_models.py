"""Small, fast models for the plugin tests (and their pytester copies).

Each builder seeds Keras, so a model and its training are the same on every run.
"""

from __future__ import annotations

import numpy as np

import keras


def blobs(samples: int = 96, features: int = 16, classes: int = 3, offset: float = 5.0, seed: int = 0):
    """Separable classes far from the origin: BatchNormalization's initial moving statistics
    (mean 0, variance 1) are far from the data's, so unconverged statistics show at once."""
    rng = np.random.default_rng(seed)
    labels = np.arange(samples) % classes
    centers = rng.normal(0.0, 3.0, (classes, features))
    x = (offset + centers[labels] + rng.normal(0.0, 1.0, (samples, features))).astype("float32")
    return x, keras.utils.to_categorical(labels, classes).astype("float32")


def bn_mlp(features: int = 16, classes: int = 3, momentum: float = 0.99, dropout: float = 0.0, name: str = "bn_mlp"):
    keras.utils.set_random_seed(1)
    layers = [
        keras.Input((features,)),
        keras.layers.Dense(32, use_bias=False),
        keras.layers.BatchNormalization(momentum=momentum),
        keras.layers.ReLU(),
    ]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers += [
        keras.layers.Dense(16, use_bias=False),
        keras.layers.BatchNormalization(momentum=momentum),
        keras.layers.ReLU(),
        keras.layers.Dense(classes, activation="softmax"),
    ]
    model = keras.Sequential(layers, name=name)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["acc"])
    return model


def undertrained(epochs: int = 3):
    """The seed's situation in miniature: fit reaches high accuracy in a few steps while the
    moving averages still hold most of their initial values."""
    x, y = blobs()
    model = bn_mlp()
    history = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return model, x, y, history


def well_trained(epochs: int = 60):
    """Enough updates (60 epochs x 3 steps at momentum 0.9) for the averages to converge."""
    x, y = blobs()
    model = bn_mlp(momentum=0.9)
    history = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return model, x, y, history


def fine_tuning(keep_batchnorm_frozen: bool = False):
    """A base pretrained to consistent statistics, a head trained on the frozen base called with
    training=False, then the base unfrozen and the model recompiled: the next fit() updates the
    base's BatchNormalization statistics anyway on Keras 3.0-3.15 (keras-team/keras#20285)
    unless each BatchNormalization layer is kept frozen."""
    x, y = blobs()
    keras.utils.set_random_seed(4)
    base = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(32, use_bias=False), keras.layers.BatchNormalization(momentum=0.9),
         keras.layers.ReLU()],
        name="base",
    )
    pretraining = keras.Sequential([base, keras.layers.Dense(3, activation="softmax")])
    pretraining.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["acc"])
    pretraining.fit(x, y, batch_size=32, epochs=30, verbose=0)
    base.trainable = False
    inputs = keras.Input((16,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(base(inputs, training=False)))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["acc"])
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    base.trainable = True
    if keep_batchnorm_frozen:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy", metrics=["acc"])
    return model, x, y
