"""Transfer learning and fine-tuning as the official guide does it, on Keras 3.0-3.15.

Run `bncheck examples/` to see the findings. This file is never executed by bncheck.
"""

import keras
from keras import layers

base_model = keras.applications.Xception(weights="imagenet", input_shape=(150, 150, 3), include_top=False)
base_model.trainable = False

inputs = keras.Input(shape=(150, 150, 3))
x = layers.Rescaling(scale=1 / 127.5, offset=-1)(inputs)
# BN001: without training=False the base follows the outer model's training flag; harmless while
# frozen, wrong as soon as it is unfrozen below.
x = base_model(x)
x = layers.GlobalAveragePooling2D()(x)
x = layers.Dropout(0.2)(x)
outputs = layers.Dense(1)(x)
model = keras.Model(inputs, outputs)

model.compile(optimizer=keras.optimizers.Adam(), loss=keras.losses.BinaryCrossentropy(from_logits=True))

# Fine-tuning. BN003: this makes every BatchNormalization layer trainable again; on Keras 3.0-3.15
# fit() then updates their moving statistics even where the base was called with training=False.
base_model.trainable = True
model.compile(optimizer=keras.optimizers.Adam(1e-5), loss=keras.losses.BinaryCrossentropy(from_logits=True))
