from __future__ import annotations

from typing import Iterator

import libcst as cst

from lint.context import FileContext
from lint.flow.events import Forward
from lint.frameworks.keras import BN_MODEL_TOKENS
from lint.rule import Invalid, Rule, Severity, Violation


class TrainingStepWithoutTraining(Rule):
    """
    ## What it does
    Flags a Keras model with BatchNormalization (or Dropout) called in a custom training step
    without `training=True`. A training step is a `tf.GradientTape` block, a loop or function
    that applies gradients (`optimizer.apply_gradients(...)`, `optimizer.minimize(...)`,
    `loss.backward()` on the torch backend) or a `train_step` method. The model is followed
    through assignments, helpers and builders of the same file and of other modules of the
    project (`model = make_classifier()`, `self.encoder`, a `Sequential` grown with `.add`, a
    `Model` subclass whose `__init__` builds BatchNormalization, `BN = layers.BatchNormalization`).

    Not reported: calls that pass `training` in any form (`training=False` on purpose, a
    variable, a second positional argument), a model frozen with `trainable = False` (its
    BatchNormalization runs in inference mode whatever `training` says), a subclass whose `call`
    defaults to `training=True`, and a `GradientTape` that only takes gradients with respect to
    the input (no gradients applied: FGSM, saliency maps, integrated gradients).

    ## Why is this bad?
    Outside `fit()`, Keras calls a model in inference mode unless it is told otherwise
    (`training=None` means inference in a custom loop). BatchNormalization then normalizes with
    its moving mean and variance, which start at 0 and 1 and are never updated, instead of the
    batch's statistics; Dropout drops nothing. The network trained by this step is not the one
    `fit()` would train, and at inference its BatchNormalization layers use moving statistics
    that never moved: predictions on the very training data are far off what the training loss
    promised.

    ## Example
    ```python
    model = keras.Sequential([layers.Dense(64), layers.BatchNormalization(), layers.Dense(10)])
    for x, y in dataset:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    ```

    ## Use instead
    ```python
    for x, y in dataset:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    ```

    No automatic fix: whether the step should train BatchNormalization (`training=True`) or
    keep a pretrained part frozen (`trainable = False`, then `training=False`) is the author's
    choice.

    ## References
    - Keras, "Writing a training loop from scratch": https://keras.io/guides/writing_a_custom_training_loop_in_tensorflow/
    - Keras, "Customizing what happens in fit()" (`self(x, training=True)` in `train_step`): https://keras.io/guides/customizing_what_happens_in_fit/
    - `BatchNormalization` (training vs inference behaviour): https://keras.io/api/layers/normalization_layers/batch_normalization/
    """

    code = "BN008"
    name = "training-step-without-training"
    severity = Severity.WARNING
    summary = "Keras model with BatchNormalization called in a custom training step without `training=True`"
    project_wide = True
    framework = "keras"
    prefilter = (
        ("GradientTape", "train_step", "apply_gradients", "minimize(", "backward("),
        ("keras", "tensorflow"),
        BN_MODEL_TOKENS + ("Dropout", "from_preset"),
    )

    VALID = [
        # the step passes training=True
        """
import tensorflow as tf
from tensorflow import keras
model = keras.Sequential([keras.layers.Dense(32), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
opt = keras.optimizers.Adam()
for x, y in dataset:
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
""",
        # a tape for the gradient of the input (FGSM): no gradients applied, not a training step
        """
import tensorflow as tf
base = tf.keras.applications.MobileNetV2(weights="imagenet")
def adversarial_pattern(image, label):
    with tf.GradientTape() as tape:
        tape.watch(image)
        loss = loss_object(label, base(image))
    return tf.sign(tape.gradient(loss, image))
""",
        # a frozen pretrained base: its BatchNormalization runs in inference mode anyway
        """
import tensorflow as tf
base = tf.keras.applications.ResNet50(include_top=False, weights="imagenet")
base.trainable = False
head = tf.keras.layers.Dense(5)
@tf.function
def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = loss_fn(y, head(base(x)))
    grads = tape.gradient(loss, head.trainable_variables)
    optimizer.apply_gradients(zip(grads, head.trainable_variables))
""",
        # no BatchNormalization and no Dropout: training and inference are the same computation
        """
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Dense(16, activation="relu"), tf.keras.layers.Dense(1)])
for x, y in data:
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
""",
        # training forwarded positionally and by variable
        """
import keras
class Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.bn = keras.layers.BatchNormalization()
    def call(self, x, training=None):
        return self.bn(x, training)
net = Net()
def step(x, y, is_training):
    with tf.GradientTape() as tape:
        loss = loss_fn(y, net(x, is_training))
    optimizer.apply_gradients(zip(tape.gradient(loss, net.trainable_variables), net.trainable_variables))
""",
        # the model's own flag, forwarded by its call() as training=
        """
import tensorflow as tf
class ConvNet(tf.keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = tf.keras.layers.Conv2D(32, 5)
        self.bn = tf.keras.layers.BatchNormalization()
        self.out = tf.keras.layers.Dense(10)
    def call(self, x, is_training=False):
        return self.out(self.bn(self.conv(x), training=is_training))
net = ConvNet()
def run_optimization(x, y):
    with tf.GradientTape() as g:
        loss = cross_entropy(net(x, is_training=True), y)
    optimizer.apply_gradients(zip(g.gradient(loss, net.trainable_variables), net.trainable_variables))
""",
    ]

    INVALID = [
        Invalid(
            """
import tensorflow as tf
from tensorflow import keras
model = keras.Sequential([keras.layers.Dense(64), keras.layers.BatchNormalization(), keras.layers.Dense(10)])
for x, y in dataset:
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
"""
        ),
        # cause 4: a local alias of the layer class, the model built by a helper
        Invalid(
            """
import tensorflow as tf
BatchNorm = tf.keras.layers.BatchNormalization
def make_classifier():
    return tf.keras.Sequential([tf.keras.layers.Conv2D(8, 3), BatchNorm(), tf.keras.layers.Flatten(),
                                tf.keras.layers.Dense(2)])
classifier = make_classifier()
@tf.function
def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = loss_fn(y, classifier(x))
    grads = tape.gradient(loss, classifier.trainable_variables)
    optimizer.apply_gradients(zip(grads, classifier.trainable_variables))
    return loss
"""
        ),
        # the model is a parameter of the step, bound at the call
        Invalid(
            """
import tensorflow as tf
net = tf.keras.Sequential()
net.add(tf.keras.layers.Dense(32))
net.add(tf.keras.layers.BatchNormalization())
net.add(tf.keras.layers.Dense(1))
def train_step(model, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x) - y))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
for x, y in ds:
    train_step(net, x, y)
"""
        ),
        # a Model subclass's own train_step calling itself without training
        Invalid(
            """
import keras
class Classifier(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(16)
        self.drop = keras.layers.Dropout(0.5)
        self.out = keras.layers.Dense(2)
    def call(self, x, training=None):
        return self.out(self.drop(self.dense(x), training=training))
    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = self.compute_loss(y=y, y_pred=self(x))
        self.optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_variables), self.trainable_variables))
        return {"loss": loss}
"""
        ),
    ]

    def check(self, ctx: FileContext) -> Iterator[Violation]:
        reported: set[int] = set()
        for event in ctx.flow.all_of(Forward):
            module = event.module
            if event.context != "training" or module.framework != "keras" or event.training != "absent":
                continue
            if id(event.node) in reported or module.frozen:
                continue
            has_bn = module.contains_bn() is True
            if not (has_bn or module.has_dropout) or _defaults_to_training(module.cls):
                continue
            reported.add(id(event.node))
            name = ctx.code(event.node.func)
            what = "BatchNormalization" if has_bn else "Dropout"
            effect = (
                "its BatchNormalization layers normalize with their moving statistics (still at 0/1) instead of "
                "the batch's and never update them"
                if has_bn
                else "its Dropout layers drop nothing"
            )
            via = f" (reached through `{ctx.code(event.via)}`)" if event.via is not None else ""
            yield Violation(
                event.node,
                f"`{name}`{module.provenance(what)} is called in a custom training step{via} without `training=True`, "
                f"so it runs in inference mode: {effect}, and the network trained here is not the one fit() would "
                f"train; pass `training=True`",
            )


def _defaults_to_training(cls: cst.ClassDef | None) -> bool:
    """``def call(self, x, training=True)``: a call without ``training`` trains."""
    if cls is None or not isinstance(cls.body, cst.IndentedBlock):
        return False
    for stmt in cls.body.body:
        if isinstance(stmt, cst.FunctionDef) and stmt.name.value == "call":
            for param in [*stmt.params.params, *stmt.params.kwonly_params]:
                if param.name.value == "training" and isinstance(param.default, cst.Name):
                    return param.default.value == "True"
    return False
