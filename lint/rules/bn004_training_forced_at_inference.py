from __future__ import annotations

from typing import Iterator

import libcst as cst

from lint.context import FileContext
from lint.flow.events import LayerCall
from lint.frameworks.keras import BN_CLASSES, BN_MODEL_TOKENS
from lint.rule import Invalid, Rule, Severity, Violation

#: a block whose call() defaults to training=True (the examples add or leave out a call relying on it)
_CONV_BLOCK = """
import tensorflow as tf
class ConvBlock(tf.keras.layers.Layer):
    def __init__(self, filters):
        super().__init__()
        self.conv = tf.keras.layers.Conv2D(filters, 3, padding="same")
        self.bn = tf.keras.layers.BatchNormalization()
    def call(self, inputs, training=True):
        return tf.nn.relu(self.bn(self.conv(inputs), training=training))
"""

#: a GAN trained in a tape whose sampling helper (model as a parameter) runs it in training mode
_GAN = """
import tensorflow as tf
def make_generator():
    return tf.keras.Sequential([tf.keras.layers.Conv2D(8, 3), tf.keras.layers.BatchNormalization()])
generator = make_generator()
@tf.function
def step(source, target):
    with tf.GradientTape() as tape:
        fake = generator(source, training=True)
        loss = tf.reduce_mean(tf.abs(target - fake))
    opt.apply_gradients(zip(tape.gradient(loss, generator.trainable_variables), generator.trainable_variables))
def show_samples(net, source):
    fake = net(source, training=True)
    plt.imshow(fake[0])
"""

#: a helper forcing training mode, called from a training step (the examples add another caller or not)
_FORWARD_HELPER = """
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Dense(8), tf.keras.layers.BatchNormalization(), tf.keras.layers.Dense(1)])
def forward(net, x):
    return net(x, training=True)
def fit_batch(x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(y - forward(model, x)))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
"""

_FIX_HINT = "mark a deliberate use (e.g. pix2pix-style GAN sampling) with `# noqa: BN004`"


class TrainingForcedAtInference(Rule):
    """
    ## What it does
    Flags `training=True` forced on a Keras model or layer that contains BatchNormalization
    outside a training step:

    - a call `model(x, training=True)` / `layer(x, training=True)` that is not inside a
      `tf.GradientTape` block, a `train_step`-like function (`train_step`, `training_step`,
      a function whose name starts with `train`) or a function that applies gradients
      (`apply_gradients`, `minimize`); this includes `BatchNormalization()(x, training=True)`
      wired into a functional model, which bakes training mode into the graph;
    - a subclassed layer or model whose `call(self, inputs, training=True)` defaults to
      training.

    Only where BatchNormalization is involved: the called value is a BatchNormalization layer,
    a `keras.applications` base that has it, or a model, `Sequential` or class of this file
    (or of another module of the project: `from nets import make_classifier`) that builds it.
    `training` is read after constant folding: a helper's `training=True` default that its
    call relies on counts, a call under `if DEBUG:` with `DEBUG = False` never runs. A helper
    is judged where it is called: called only from a training step, it runs in that step. Monte Carlo dropout (`Dropout(0.5)(x, training=True)`, or a model without
    BatchNormalization called with `training=True`) is a legitimate technique and is not
    flagged. When the called value cannot be followed within the file (a function parameter,
    a loop or unpacked variable, `self.model` of a callback), the rule reports it if the file
    builds BatchNormalization; a model loaded from another file (`load_model`, a hub layer) is
    not reported, and neither is a value it cannot follow in a file that trains in a training
    step and never runs anything in inference mode (no `training=False`, `predict()` or
    `evaluate()`): pix2pix-style GANs sample their generator in training mode on purpose, and
    nothing there disagrees. A layer called on freshly made random numbers (`tf.random.normal`)
    is a lesson showing the statistics move, not inference. A `call(..., training=True)`
    default is reported only when some call of the class relies on it (passes no `training`,
    by keyword or positionally, outside a training step): at the parameter for a class of the
    same file, at the call for a class imported from another module of the project. Unit tests
    (test files, functions named `test_*`, but not Keras' `test_step`) exercise training mode on
    purpose and are skipped.

    Severity: error. It is wrong now, not latent.

    ## Why is this bad?
    With `training=True` BatchNormalization normalizes every batch with that batch's own mean
    and variance (and updates its moving averages) instead of the moving averages learned in
    training. Predictions then depend on which other samples share the batch, a single
    sample is normalized by itself, and the results disagree with `predict()` and
    `evaluate()` on the same data. A `call(..., training=True)` default does the same to every
    plain `model(x)` call: Keras uses the signature's default when no `training` is passed and
    no outer call sets it, so only `fit()` (which passes `True`) and `predict()`/`evaluate()`
    (which pass `False`) escape it.

    Deliberate uses exist: pix2pix-style GANs sample the generator with `training=True` at
    test time on purpose. Suppress those with `# noqa: BN004` on the line.

    No automatic fix: only the author knows whether training mode was meant.

    ## Example
    ```python
    model = build_model()  # Conv2D + BatchNormalization
    model.fit(train_ds, epochs=10)
    probabilities = model(test_images, training=True)

    class Block(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.bn = keras.layers.BatchNormalization()

        def call(self, inputs, training=True):
            return self.bn(inputs, training=training)
    ```

    ## Use instead
    ```python
    model = build_model()
    model.fit(train_ds, epochs=10)
    probabilities = model(test_images, training=False)  # or model.predict(test_images)

    class Block(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.bn = keras.layers.BatchNormalization()

        def call(self, inputs, training=None):  # Keras passes the mode in
            return self.bn(inputs, training=training)
    ```

    ## References
    - Keras FAQ, "What's the difference between the `training` argument in `call()` and the
      `trainable` attribute?": https://keras.io/getting_started/faq/
    - Keras BatchNormalization: https://keras.io/api/layers/normalization_layers/batch_normalization/
    - Keras guide, "Making new layers and models via subclassing" (the `training` argument):
      https://keras.io/guides/making_new_layers_and_models_via_subclassing/
    """

    code = "BN004"
    name = "training-forced-at-inference"
    severity = Severity.ERROR
    summary = "Training mode forced on BatchNormalization outside a training step"
    prefilter = (("training=True", "training = True", "bool=True", "bool = True"), BN_MODEL_TOKENS)
    project_wide = True  # the model or layer class may come from another module of the project
    framework = "keras"
    skips_tests = True  # unit tests run BatchNormalization in training mode on purpose (cause 10)

    VALID = [
        # inside a custom training step
        """
import tensorflow as tf
from tensorflow import keras
model = keras.Sequential([keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
@tf.function
def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = keras.losses.mse(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
""",
        # Monte Carlo dropout on a model without BatchNormalization
        """
import numpy as np
import keras
model = keras.Sequential([keras.layers.Dense(64, activation="relu"), keras.layers.Dropout(0.5), keras.layers.Dense(1)])
samples = np.stack([model(x_test, training=True) for _ in range(50)])
""",
        # MC dropout on the Dropout layer only: BatchNormalization stays in inference mode
        """
from keras import layers, Model, Input
inputs = Input((32,))
x = layers.Dense(64)(inputs)
x = layers.BatchNormalization()(x)
x = layers.Dropout(0.5)(x, training=True)
model = Model(inputs, layers.Dense(1)(x))
""",
        # training passed through, default None
        """
import keras
class Block(keras.layers.Layer):
    def __init__(self):
        super().__init__()
        self.bn = keras.layers.BatchNormalization()
    def call(self, inputs, training=None):
        return self.bn(inputs, training=training)
""",
        # a model from another file: whether it has BatchNormalization is not visible here
        """
import keras
from keras.layers import BatchNormalization
model = keras.models.load_model("model.keras")
y = model(x, training=True)
""",
        # was INVALID before cause 6 of issue 11: a call() default that no call in the file relies on
        # (no call site at all) is not a mismatch yet
        _CONV_BLOCK,
        # every call of the class passes the mode: the outer model forwards it positionally, the
        # script passes it by keyword (cause 6)
        """
import tensorflow as tf
class Stem(tf.keras.Model):
    def __init__(self):
        super().__init__()
        self.norm = tf.keras.layers.BatchNormalization()
    def call(self, x, training=True):
        return self.norm(x, training=training)
class Net(tf.keras.Model):
    def __init__(self):
        super().__init__()
        self.stem = Stem()
        self.head = tf.keras.layers.Dense(3)
    def call(self, x, training=True):
        return self.head(self.stem(x, training))
net = Net()
scores = net(batch, training=False)
""",
        # a GAN sampled in training mode on purpose: the file trains in a tape and never runs anything in
        # inference mode, so training and inference cannot disagree (pix2pix-style helpers)
        _GAN,
        # the same GAN, with a look at the untrained generator before the training step is written
        """
import tensorflow as tf
generator = tf.keras.Sequential([tf.keras.layers.Conv2D(8, 3), tf.keras.layers.BatchNormalization()])
untrained = generator(example_input, training=False)
"""
        + _GAN.split("generator = make_generator()", 1)[1],
        # a lesson calling a bare layer on random numbers to show its statistics move
        """
import tensorflow as tf
norm = tf.keras.layers.BatchNormalization()
noise = tf.random.normal([4, 3])
out = norm(noise, training=True)
print(norm.moving_mean)
""",
        # inference mode explicitly
        """
import keras
base = keras.applications.ResNet50(weights=None)
features = base(images, training=False)
""",
        # a helper that forces training mode, called only inside a training step: walked at its call site,
        # it runs in the step (the file also evaluates, so this is not the GAN case)
        _FORWARD_HELPER
        + """
model.evaluate(x_test, y_test)
""",
        # code that cannot run (cause 7): a debugging branch behind a module constant that is False
        """
import keras
DEBUG = False
model = keras.Sequential([keras.layers.Dense(8), keras.layers.BatchNormalization()])
if DEBUG:
    check = model(x_test, training=True)
""",
        # the default is relied on only inside the training step; outside, every call passes the mode
        _CONV_BLOCK
        + """
block = ConvBlock(16)
@tf.function
def train_step(x):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(block(x))
    optimizer.apply_gradients(zip(tape.gradient(loss, block.trainable_variables), block.trainable_variables))
features = block(test_images, training=False)
""",
    ]

    INVALID = [
        Invalid(
            """
import keras
from keras import layers
model = keras.Sequential([layers.Conv2D(32, 3), layers.BatchNormalization(), layers.ReLU(), layers.Flatten(), layers.Dense(10)])
model.fit(x_train, y_train, epochs=5)
predictions = model(x_test, training=True)
"""
        ),
        # the call() default, relied on by a plain call outside a training step
        Invalid(
            _CONV_BLOCK
            + """
block = ConvBlock(16)
features = block(test_images)
"""
        ),
        # BatchNormalization wired into the graph in training mode
        Invalid(
            """
from tensorflow.keras import layers, Model, Input
inputs = Input((28, 28, 1))
x = layers.Conv2D(16, 3)(inputs)
x = layers.BatchNormalization()(x, training=True)
model = Model(inputs, layers.Dense(10)(layers.Flatten()(x)))
"""
        ),
        # an evaluation helper whose model is a parameter, in a file that builds BatchNormalization
        Invalid(
            """
import tensorflow as tf
def downsample(filters):
    block = tf.keras.Sequential([tf.keras.layers.Conv2D(filters, 4, strides=2), tf.keras.layers.BatchNormalization()])
    return block
def evaluate(model, dataset):
    for images, labels in dataset:
        logits = model(images, training=True)
"""
        ),
        # the same sampling helper in a file that also predicts: the helper's training mode disagrees
        # with the inference the file does
        Invalid(
            _GAN
            + """
final = generator.predict(test_sources)
"""
        ),
        # a layer called on real data in training mode, next to the random-input demo shape
        Invalid(
            """
import tensorflow as tf
norm = tf.keras.layers.BatchNormalization()
out = norm(test_features, training=True)
"""
        ),
        # training=True reaches the call through a helper's default that the call relies on (the default
        # is bound at the call site)
        Invalid(
            """
import keras
model = keras.Sequential([keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
def run(net, x, training=True):
    return net(x, training=training)
model.fit(x_train, y_train)
scores = run(model, x_test)
"""
        ),
        # a helper called from the training step and from an evaluation: the evaluation runs it in training mode
        Invalid(
            _FORWARD_HELPER
            + """
def score(x):
    return forward(model, x)
"""
        ),
    ]

    def check(self, ctx: FileContext) -> Iterator[Violation]:
        flow = ctx.flow
        calls = flow.all_of(LayerCall)
        training_only = _training_mode_only(flow, calls)
        involves_bn = None
        forced: dict[int, LayerCall] = {}  # reported where some walk of the call runs outside a training step
        for call in calls:
            if call.training != "true" or call.in_step or call.in_test or call.random_input:
                continue
            func = call.node.func
            if not (isinstance(func, (cst.Call, cst.Name)) or _self_attribute(func)):
                continue
            carries = call.module.contains_bn()
            if carries is None and call.module.kind != "parameter" and call.module.layers:
                carries = False  # a layer of a kind without BatchNormalization (Dropout, Dense)
            if carries is None:
                if involves_bn is None:
                    involves_bn = flow.builds_batchnorm()
                carries = involves_bn and not training_only
            if carries:
                forced.setdefault(id(call.node), call)
        for call in forced.values():
            yield Violation(call.node, _call_message(ctx, call.node, call.module))
        reported: set[int] = set()
        for call in calls:
            if call.default is None or call.training != "absent" or call.in_step or call.in_test:
                continue
            name, param = call.default
            where = param if param is not None else call.node
            if id(where) not in reported:
                reported.add(id(where))
                yield Violation(where, _default_message(name) if param is not None else _imported_default_message(
                    ctx, call.node, name, call.module.defined_at))


def _training_mode_only(flow, calls: list) -> bool:
    """The file trains in a training step and never runs anything in inference mode.

    pix2pix-style GANs sample their generator with ``training=True`` on purpose, in a helper
    whose model is a parameter: when nothing in the file calls with ``training=False``,
    ``predict()`` or ``evaluate()``, training and inference never disagree, so a value the rule
    cannot follow is not reported (a model the file builds with BatchNormalization still is).
    A ``training=False`` call walked before the training step (the tutorial's look at the
    untrained generator's output) is not inference on a trained model and does not count.
    """
    if flow.calls_inference_api:
        return False
    trains = False
    for call in calls:
        if call.training == "false" and trains:
            return False
        trains = trains or (call.in_step and call.training == "true")
    return trains


def _self_attribute(node) -> bool:
    return isinstance(node, cst.Attribute) and isinstance(node.value, cst.Name) and node.value.value == "self"


def _call_message(ctx: FileContext, call: cst.Call, module) -> str:
    name = ctx.code(call.func)
    if isinstance(call.func, cst.Call):
        what = "it normalizes" if module.layers & BN_CLASSES else "its BatchNormalization normalizes"
        return (
            f"`{name}` is wired into the model with training=True: {what} with "
            f"batch statistics in predict() and evaluate() too, so outputs depend on the batch and a single sample "
            f"is normalized by itself; drop the argument (Keras passes the mode) or {_FIX_HINT}"
        )
    return (
        f"`{name}`{module.provenance('BatchNormalization')} is called with training=True outside a training step: "
        f"its BatchNormalization layers normalize "
        f"with this batch's statistics and overwrite their moving averages, so results depend on the batch and "
        f"disagree with predict(); call it with training=False (or use predict()), or {_FIX_HINT}"
    )


def _default_message(name: str) -> str:
    return (
        f"`{name}.call()` defaults to training=True: every plain `{name}(...)(x)` or `model(x)` call outside "
        f"fit()/predict() runs its BatchNormalization on batch statistics and updates the moving averages; "
        f"default to `training=None` so Keras passes the right mode, or {_FIX_HINT}"
    )


def _imported_default_message(ctx: FileContext, call: cst.Call, name: str, where: str | None) -> str:
    return (
        f"`{ctx.code(call.func)}` is called without `training` outside a training step, so `{name}.call()`'s "
        f"training=True default (defined in {where}, with BatchNormalization) decides: its BatchNormalization "
        f"normalizes with this batch's statistics and updates the moving averages; pass training=False here, "
        f"or default to `training=None` in {name}, or {_FIX_HINT}"
    )
