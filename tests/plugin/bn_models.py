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
