"""The same fine-tuning without the pitfalls: bncheck stays quiet on this file."""

import keras
from keras import layers

base_model = keras.applications.EfficientNetB0(weights="imagenet", include_top=False)
base_model.trainable = False

inputs = keras.Input(shape=(224, 224, 3))
x = base_model(inputs, training=False)
x = layers.GlobalAveragePooling2D()(x)
outputs = layers.Dense(10)(x)
model = keras.Model(inputs, outputs)

base_model.trainable = True
# Keep BatchNormalization in inference mode on every Keras version (keras-team/keras#20285).
for layer in base_model.layers:
    if isinstance(layer, layers.BatchNormalization):
        layer.trainable = False
model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="sparse_categorical_crossentropy")
