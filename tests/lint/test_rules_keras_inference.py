"""BN004–BN007 on realistic code: the shapes real code takes, every import form, and look-alikes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from lint.config import KerasTarget

from .helpers import check, run_cli

KERAS_2_15 = KerasTarget.parse("2.15.0", "tests")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def messages(code, codes, **kwargs) -> list[tuple[str, str]]:
    _, _, result = check(code, codes=codes, **kwargs)
    return [(v[4], v[5]) for v in result.violations]


def lines(code, codes, **kwargs) -> list[int]:
    _, _, result = check(code, codes=codes, **kwargs)
    return [v[0] for v in result.violations]


# -- BN004 -----------------------------------------------------------------------------------

BN_MODEL = {
    "import keras": "keras.Sequential([keras.layers.Dense(8), keras.layers.BatchNormalization()])",
    "import tensorflow as tf": "tf.keras.Sequential([tf.keras.layers.Dense(8), tf.keras.layers.BatchNormalization()])",
    "from tensorflow import keras": "keras.applications.ResNet50(weights=None)",
    "import tf_keras as keras": "keras.applications.MobileNetV2(weights=None)",
    "from keras.layers import BatchNormalization as BN\nfrom keras import Sequential": "Sequential([BN()])",
}


@pytest.mark.parametrize(("imports", "ctor"), BN_MODEL.items())
def test_bn004_forced_training_in_every_import_form(imports, ctor):
    code = f"{imports}\nmodel = {ctor}\npreds = model(x_test, training=True)\n"
    assert check(code, codes=("BN004",))[0] == ["BN004"]


def test_bn004_quiet_in_training_steps_of_every_shape():
    code = """
    import tensorflow as tf
    model = tf.keras.Sequential([tf.keras.layers.Dense(8), tf.keras.layers.BatchNormalization()])
    class GAN(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.generator = tf.keras.Sequential([tf.keras.layers.Dense(8), tf.keras.layers.BatchNormalization()])
        def train_step(self, data):
            fake = self.generator(data, training=True)  # Keras' own training step
            return {}
    def fit_one_batch(x, y):
        predictions = model(x, training=True)  # the tape is opened below, gradients applied
        optimizer.apply_gradients([])
    def train_epoch(ds):
        for x in ds:
            model(x, training=True)
    with tf.GradientTape() as tape:
        loss = model(x, training=True)
    """
    assert check(code, codes=("BN004",))[0] == []


def test_bn004_evaluation_shapes_are_flagged():
    code = """
    import tensorflow as tf
    from tensorflow import keras

    def make_generator():
        return keras.Sequential([keras.layers.Conv2D(8, 3), keras.layers.BatchNormalization()])

    generator = make_generator()

    def test_step(self, data):                      # evaluation, not training
        return generator(data, training=True)

    class PlotSamples(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            samples = self.model(self.noise, training=True)   # self.model is set by Keras

    def generate_images(model, test_input):
        prediction = model(test_input, training=True)
    """
    assert lines(code, ("BN004",)) == [11, 15, 18]


def test_bn004_monte_carlo_dropout_look_alikes_stay_quiet():
    code = """
    import numpy as np
    import keras
    from keras import layers

    classifier = keras.Sequential([layers.Dense(64), layers.BatchNormalization(), layers.Dense(10)])
    mc_model = keras.Sequential([layers.Dense(64), layers.Dropout(0.3), layers.Dense(10)])

    class MCDropout(layers.Layer):
        def __init__(self):
            super().__init__()
            self.dropout = layers.Dropout(0.5)
        def call(self, inputs, training=True):            # no BatchNormalization in this layer
            return self.dropout(inputs, training=True)

    drop = layers.Dropout(0.5)
    samples = np.stack([mc_model(x, training=True) for _ in range(30)])
    y = drop(x, training=True)
    loaded = keras.models.load_model("other.keras")
    z = loaded(x, training=True)                      # origin in another file: no guess
    w = classifier(x, training=False)
    """
    assert check(code, codes=("BN004",))[0] == []


def test_bn004_call_default_through_a_block_class_of_the_same_file():
    code = """
    import keras
    class ConvBlock(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.bn = keras.layers.BatchNormalization()
        def call(self, x, training=None):
            return self.bn(x, training=training)
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.block = ConvBlock()
        def call(self, x, training: bool = True):
            return self.block(x)
    class Deeper(Net):
        def call(self, x, training=True):
            return super().call(x)
    """
    # cause 6 of issue 11: with no call relying on the defaults, nothing is wrong yet
    assert messages(code, ("BN004",)) == []
    code += """
    net = Net()
    scores = net(images)
    deeper_scores = Deeper()(images)
    """
    found = messages(code, ("BN004",))
    assert [m[0] for m in found] == ["BN004", "BN004"]
    assert "`Net.call()` defaults to training=True" in found[0][1]
    assert "`Deeper.call()`" in found[1][1]


def test_bn004_layer_attribute_forced_inside_call():
    code = """
    from tensorflow.keras import layers
    class Head(layers.Layer):
        def __init__(self):
            super().__init__()
            self.norm = layers.BatchNormalization()
            self.drop = layers.Dropout(0.2)
        def call(self, x):
            x = self.drop(x, training=True)   # MC dropout: fine
            return self.norm(x, training=True)
    """
    assert lines(code, ("BN004",)) == [10]


def test_bn004_message_says_what_when_and_how():
    code = "import keras\nm = keras.applications.ResNet50()\ny = m(x, training=True)\n"
    (_, message), = messages(code, ("BN004",))
    assert "`m` is called with training=True outside a training step" in message
    assert "training=False" in message and "noqa: BN004" in message


def test_bn004_pix2pix_style_use_is_suppressible(tmp_path):
    source = textwrap.dedent(
        """
        import tensorflow as tf
        def downsample(filters):
            return tf.keras.Sequential([tf.keras.layers.Conv2D(filters, 4), tf.keras.layers.BatchNormalization()])
        def generate_images(model, test_input):
            # pix2pix samples the generator in training mode on purpose
            prediction = model(test_input, training=True)  # noqa: BN004
            return prediction
        def evaluate(model, x):
            return model(x, training=True)
        """
    )
    path = tmp_path / "pix2pix.py"
    path.write_text(source)
    result = run_cli(str(path), "--select", "BN004", "--format", "json")
    assert result.returncode == 1, result.stderr
    findings = json.loads(result.stdout)
    findings = findings["findings"] if isinstance(findings, dict) else findings
    assert [(f["code"], f["line"]) for f in findings] == [("BN004", 10)]


# -- BN005 -----------------------------------------------------------------------------------

LEARNING_PHASE_FORMS = [
    "import keras\nkeras.backend.set_learning_phase(0)",
    "import tensorflow as tf\nphase = tf.keras.backend.learning_phase()",
    "from keras import backend as K\nphase = K.learning_phase()",
    "import tensorflow as tf\ntf.compat.v1.keras.backend.set_learning_phase(0)",
    "from tensorflow.keras.backend import set_learning_phase\nset_learning_phase(0)",
    "import tensorflow.keras.backend as K\nK.set_learning_phase(False)",
    "import tensorflow as tf\nK = tf.keras.backend\nK.set_learning_phase(0)",
    "import tf_keras\ntf_keras.backend.set_learning_phase(0)",
    "from tensorflow.python.keras import backend\nbackend.set_learning_phase(0)",
    "import tensorflow as tf\nwith tf.keras.backend.learning_phase_scope(0):\n    pass",
]


@pytest.mark.parametrize("code", LEARNING_PHASE_FORMS)
def test_bn005_every_import_form(code):
    assert check(code, codes=("BN005",))[0] == ["BN005"]


def test_bn005_keras_3_says_attribute_error():
    code = "import tensorflow as tf\ntf.keras.backend.set_learning_phase(0)\n"
    (_, message), = messages(code, ("BN005",))
    assert "raises AttributeError" in message and "Keras 3.15" in message and "TensorFlow 2.16" in message


def test_bn005_tf_keras_is_alive_even_on_keras_3():
    code = "import tf_keras\ntf_keras.backend.set_learning_phase(1)\n"
    (_, message), = messages(code, ("BN005",))
    assert "sets the learning phase to 1" in message and "batch" in message
    assert "does not exist" not in message


def test_bn005_legacy_tensorflow_python_keras_is_keras_2():
    code = "from tensorflow.python.keras import backend as K\nK.set_learning_phase(0)\n"
    (_, message), = messages(code, ("BN005",))
    assert "deprecated" in message and "does not exist" not in message


def test_bn005_keras_2_set_after_model_is_built_has_no_effect():
    code = """
    from keras import backend as K
    from keras.models import load_model
    model = load_model("model.h5")
    K.set_learning_phase(0)
    """
    (_, message), = messages(code, ("BN005",), target=KERAS_2_15)
    assert "after the model is built" in message and "no effect" in message


def test_bn005_keras_2_fed_one_at_prediction():
    code = """
    import tensorflow as tf
    K = tf.keras.backend
    model = build()
    predict_fn = K.function([model.input, K.learning_phase()], [model.output])
    outputs = predict_fn([x_test, 1])[0]
    other = sess.run(model.output, feed_dict={model.input: x, K.learning_phase(): 1})
    """
    found = messages(code, ("BN005",), target=KERAS_2_15)
    assert len(found) == 2
    assert all("is fed 1 here" in m and "BatchNormalization" in m for _, m in found)


def test_bn005_keras_2_deprecated_before_the_model():
    code = "from keras import backend as K\nK.set_learning_phase(0)\nmodel = build()\n"
    (_, message), = messages(code, ("BN005",), target=KERAS_2_15)
    assert "deprecated" in message


def test_bn005_look_alikes():
    code = """
    import keras
    from mylib.backend import set_learning_phase
    set_learning_phase(1)                  # another library's function
    learning_phase = 1                     # a variable
    runner.learning_phase()
    keras.backend.clear_session()
    """
    assert check(code, codes=("BN005",))[0] == []


# -- BN006 -----------------------------------------------------------------------------------


def test_bn006_subclassed_model_with_layer_attributes():
    code = """
    import tensorflow as tf
    class Classifier(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = tf.keras.layers.Dense(128)
            self.drop = tf.keras.layers.Dropout(0.4)
            self.bn = tf.keras.layers.BatchNormalization()
        def call(self, x, training=None):
            x = self.dense(x)
            x = self.drop(x, training=training)
            x = self.bn(x, training=training)
            return x
    """
    assert lines(code, ("BN006",)) == [12]


def test_bn006_nested_functional_and_shape_only_layers_in_between():
    code = """
    from keras import layers
    drop = layers.Dropout(0.5)
    h = layers.BatchNormalization()(layers.Dropout(0.5)(inputs))
    x = drop(inputs)
    x = layers.Flatten()(x)
    x = layers.BatchNormalization()(x)
    y = layers.Dropout(0.5)(inputs)
    y = layers.Activation("relu")(y)
    y = layers.BatchNormalization()(y)
    """
    assert lines(code, ("BN006",)) == [4, 7]


def test_bn006_sequential_continued_by_add_and_star_import():
    code = """
    from tensorflow.keras.layers import *
    from tensorflow.keras import Sequential
    model = Sequential([Dense(64), Dropout(0.25)])
    model.add(BatchNormalization())
    seq = Sequential(layers=[Conv2D(8, 3), SpatialDropout2D(0.1), Flatten(), BatchNormalization()])
    """
    assert lines(code, ("BN006",)) == [5, 6]


def test_bn006_look_alikes():
    code = """
    import keras
    from keras import layers
    import torch.nn as nn
    a = keras.Sequential([layers.Dropout(0.5), layers.Dense(10), layers.BatchNormalization()])
    b = keras.Sequential([layers.BatchNormalization(), layers.Dropout(0.5)])
    t = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(10))
    x = layers.Dropout(0.5)(inputs)
    y = layers.BatchNormalization()(other)      # a different tensor
    model = keras.Sequential()
    model.add(layers.Dropout(0.5))
    if wide:
        model.add(layers.Dense(64))
    model.add(layers.LayerNormalization())
    """
    assert check(code, codes=("BN006",))[0] == []


def test_bn006_message_cites_the_paper():
    code = "from keras import layers, Sequential\nm = Sequential([layers.Dropout(0.5), layers.BatchNormalization()])\n"
    (_, message), = messages(code, ("BN006",))
    assert "Li et al., CVPR 2019" in message and "`layers.Dropout(0.5)`" in message and "Sequential" in message


# -- BN007 -----------------------------------------------------------------------------------


def test_bn007_keras_positional_batch_size_constant_and_tf_data():
    code = """
    import tensorflow as tf
    BATCH_SIZE = 1
    model = tf.keras.Sequential([tf.keras.layers.Dense(8), tf.keras.layers.BatchNormalization()])
    model.fit(x, y, 1, epochs=3)
    model.fit(x, y, batch_size=BATCH_SIZE)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(100).batch(1).prefetch(2)
    model.fit(ds, epochs=3)
    model.fit(x, y, batch_size=32)
    """
    assert lines(code, ("BN007",)) == [5, 6, 8]


def test_bn007_keras_model_without_batchnorm_or_loaded_stays_quiet():
    code = """
    import keras
    from keras import layers
    bn_model = keras.Sequential([layers.Dense(8), layers.BatchNormalization()])
    plain = keras.Sequential([layers.Dense(8), layers.Dense(1)])
    plain.fit(x, y, batch_size=1)
    loaded = keras.models.load_model("m.keras")
    loaded.fit(x, y, batch_size=1)
    """
    assert check(code, codes=("BN007",))[0] == []


def test_bn007_torch_random_split_last_batch_of_one_and_loop_detection():
    code = """
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, random_split
    model = nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.Linear(32, 2))
    train_set, val_set = random_split(full_set, [801, 200])
    loader = DataLoader(train_set, batch_size=40)        # 801 = 20 * 40 + 1
    val_loader = DataLoader(val_set, batch_size=1)       # evaluation: harmless
    batches = DataLoader(train_set, 8)                   # no shuffle, but a training loop below
    for epoch in range(3):
        for inputs, targets in batches:
            loss = nn.functional.cross_entropy(model(inputs), targets)
            loss.backward()
    """
    found = messages(code, ("BN007",))
    assert lines(code, ("BN007",)) == [7, 9]
    assert "801 samples into batches of 40" in found[0][1] and "drop_last=True" in found[0][1]
    assert "Expected more than 1 value per channel" in found[0][1]


def test_bn007_torch_default_batch_size_and_slices():
    code = """
    import torch
    import torchvision
    from torch.utils.data import DataLoader, TensorDataset
    net = torchvision.models.resnet50(weights=None)
    images = torch.randn(5000, 3, 32, 32)
    subset = TensorDataset(images[:1089], labels[:1089])
    loader = DataLoader(subset, batch_size=32, shuffle=True)     # 1089 = 34 * 32 + 1
    train_loader = DataLoader(train_data)                        # default batch_size=1
    """
    found = messages(code, ("BN007",))
    assert [m[1].split(":")[0] for m in found] == [
        "`loader` splits 1089 samples into batches of 32, so the last batch of every epoch holds one sample",
        "`train_loader` feeds a model with BatchNorm batches of one sample (DataLoader's default batch_size is 1)",
    ]


def test_bn007_torch_look_alikes():
    code = """
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    model = nn.Sequential(nn.Linear(10, 10), nn.BatchNorm1d(10))
    ds = TensorDataset(torch.randn(1024, 10))
    a = DataLoader(ds, batch_size=64, shuffle=True)                       # 1024 = 16 * 64
    b = DataLoader(TensorDataset(torch.randn(1025, 10)), batch_size=64, shuffle=True, drop_last=True)
    c = DataLoader(ds, batch_size=args.batch_size, shuffle=True)          # size unknown here
    d = DataLoader(ds, batch_sampler=sampler)
    test_loader = DataLoader(test_ds, batch_size=1)
    """
    assert check(code, codes=("BN007",))[0] == []


def test_bn007_torch_without_batchnorm_stays_quiet():
    code = """
    from torch import nn
    from torch.utils.data import DataLoader
    model = nn.Sequential(nn.Linear(10, 10), nn.LayerNorm(10))
    train_loader = DataLoader(train_set, batch_size=1, shuffle=True)
    """
    assert check(code, codes=("BN007",))[0] == []


# -- the bundled examples ----------------------------------------------------------------------


def test_every_inference_rule_fires_in_the_examples():
    result = run_cli(str(EXAMPLES), "--select", "BN004,BN005,BN006,BN007", "--format", "json")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    findings = data["findings"] if isinstance(data, dict) else data
    assert {"BN004", "BN005", "BN006", "BN007"} <= {f["code"] for f in findings}


def test_bn004_unit_tests_exercise_training_mode_on_purpose():
    code = """
    import keras
    def test_batchnorm_uses_batch_statistics_in_training():
        layer = keras.layers.BatchNormalization()
        out = layer(x, training=True)
    class NormTest:
        def test_moving_mean_updates(self):
            norm = keras.layers.BatchNormalization()
            norm(x, training=True)
    """
    assert check(code, codes=("BN004",))[0] == []


def test_extra_batchnorm_models_reach_the_keras_layer_rules():
    """``extra-batchnorm-models``: a factory the user names builds BatchNormalization for BN004 and BN007 too."""
    code = """
from mylib.zoo import build_backbone
net = build_backbone(depth=50)
net.fit(x_train, y_train, batch_size=1)
preds = net(x_test, training=True)
"""
    assert check(code, codes=("BN004", "BN007"))[0] == []
    assert sorted(check(code, codes=("BN004", "BN007"), extra_batchnorm_models=("mylib.zoo.build_backbone",))[0]) == [
        "BN004", "BN007"]
