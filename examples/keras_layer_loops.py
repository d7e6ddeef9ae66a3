"""Freezing and unfreezing with loops over `base.layers`, with tf.keras aliases."""

import tensorflow as tf
from tensorflow.keras.applications import MobileNetV2 as Backbone


def build_base():
    base = Backbone(input_shape=(160, 160, 3), include_top=False, weights="imagenet")
    for layer in base.layers:
        layer.trainable = False
    return base


base = build_base()
inputs = tf.keras.Input(shape=(160, 160, 3))
features = tf.keras.layers.GlobalAveragePooling2D()(base.output)  # BN001: graph reused through .output
head = tf.keras.layers.Dense(5)(features)
model = tf.keras.Model(base.input, head)

# BN003: unfreezes the top 54 layers, BatchNormalization included.
for layer in base.layers[100:]:
    layer.trainable = True

model.compile(optimizer=tf.keras.optimizers.RMSprop(1e-5), loss="sparse_categorical_crossentropy")
