"""A pretrained ResNet50 frozen inside a Sequential, as in the "fit and evaluate disagree" blog post."""

from tensorflow import keras

res_net = keras.applications.ResNet50(include_top=False, weights="imagenet", input_shape=(224, 224, 3))
res_net.trainable = False


def modeltrans_resnet():
    model = keras.models.Sequential()
    # BN002: inside a Sequential the base can never be called with training=False.
    model.add(res_net)
    model.add(keras.layers.GlobalAveragePooling2D())
    model.add(keras.layers.Dense(64, activation="relu"))
    model.add(keras.layers.Dropout(0.5))
    model.add(keras.layers.Dense(1, activation="sigmoid"))
    return model


model3 = modeltrans_resnet()
model3.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
# model3.fit(train_images, train_labels, epochs=5)

# Fine-tuning: from here on the base's BatchNormalization layers follow the Sequential's training flag.
res_net.trainable = True
model3.compile(optimizer=keras.optimizers.Adam(1e-5), loss="binary_crossentropy", metrics=["accuracy"])
# model3.fit(train_images, train_labels, epochs=2)
