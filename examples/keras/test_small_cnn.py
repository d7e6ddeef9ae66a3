"""A small CNN with BatchNormalization, trained long enough: consistent, so it passes.

Also shows the ``bn_consistency`` fixture, which checks explicitly (with or without
``--bn-consistency``) and returns the report.
"""

import numpy as np

import keras


def stripes(samples=192, size=16, seed=0):
    """Images of horizontal or vertical stripes, in two brightness ranges (random data, no downloads)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(samples) % 2
    grid = np.arange(size)
    images = np.empty((samples, size, size, 1), np.float32)
    for i, label in enumerate(labels):
        wave = np.sin(grid * rng.uniform(0.8, 1.6) + rng.uniform(0, 6.3))
        pattern = np.tile(wave, (size, 1)) if label else np.tile(wave[:, None], (1, size))
        images[i, ..., 0] = 4.0 + pattern + rng.normal(0, 0.3, (size, size))
    return images, keras.utils.to_categorical(labels, 2)


def small_cnn():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((16, 16, 1)),
        keras.layers.Conv2D(8, 3, use_bias=False), keras.layers.BatchNormalization(momentum=0.9), keras.layers.ReLU(),
        keras.layers.Conv2D(16, 3, use_bias=False), keras.layers.BatchNormalization(momentum=0.9), keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, activation="softmax"),
    ], name="small_cnn")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["acc"])
    return model


def test_small_cnn_learns_stripes(bn_consistency):
    images, labels = stripes()
    model = small_cnn()
    history = model.fit(images, labels, batch_size=32, epochs=15, verbose=0)
    assert history.history["acc"][-1] > 0.9
    report = bn_consistency(model, images, labels, batch_size=32)
    assert report.passed
