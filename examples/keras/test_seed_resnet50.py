"""The seed report, as a test suite would have it.

"ResNet: 100% accuracy during training, but 33% prediction accuracy with the same data":
ResNet50 trained from scratch on three images reaches accuracy 1.0 in fit() while evaluate()
and predict() on the very same images are at chance.  The test below passes under plain
pytest; under ``pytest --bn-consistency`` it fails with the report: after 5 updates at
momentum 0.99, the moving averages still hold 0.99**5 = 95% of their initial values.
"""

import numpy as np

import keras


def train_seed_model():
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).random((3, 197, 197, 1), dtype=np.float32)  # three "images"
    labels = np.eye(3, dtype=np.float32)  # [1,0,0], [0,1,0], [0,0,1]
    model = keras.applications.ResNet50(input_shape=(197, 197, 1), classes=3, weights=None)
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["acc"])
    history = model.fit(images, labels, epochs=5, verbose=0)
    return model, images, labels, history


def test_resnet50_overfits_three_images():
    _, _, _, history = train_seed_model()
    assert history.history["acc"][-1] == 1.0
