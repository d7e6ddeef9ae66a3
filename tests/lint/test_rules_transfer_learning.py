"""BN001–BN003 on realistic transfer-learning code: the shapes real code takes, and look-alikes."""

from __future__ import annotations

import pytest

from lint.config import KerasTarget

from .helpers import check

FROZEN_CALL = """
{imports}
base = {ctor}(include_top=False, weights=None)
base.trainable = False
x = base(inputs)
"""


@pytest.mark.parametrize(
    ("imports", "ctor"),
    [
        ("import keras", "keras.applications.ResNet50"),
        ("from tensorflow import keras", "keras.applications.ResNet50V2"),
        ("import tensorflow as tf", "tf.keras.applications.resnet50.ResNet50"),
        ("import tensorflow as tf", "tf.keras.applications.EfficientNetV2S"),
        ("from keras.applications import ResNet50 as R", "R"),
        ("from tensorflow.keras.applications.inception_v3 import InceptionV3", "InceptionV3"),
        ("import tensorflow.keras.applications as apps", "apps.DenseNet201"),
        ("from keras.applications import resnet50", "resnet50.ResNet50"),
        ("import tf_keras", "tf_keras.applications.NASNetMobile"),
        ("from keras import applications", "applications.RegNetY032"),
        ("from keras.applications import mobilenet_v3", "mobilenet_v3.MobileNetV3Large"),
        ("import keras", "keras.applications.InceptionResNetV2"),
    ],
)
def test_bn_applications_in_every_import_form(imports, ctor):
    found, _, _ = check(FROZEN_CALL.format(imports=imports, ctor=ctor), codes=("BN001",), latent=True)
    assert found == ["BN001"]


@pytest.mark.parametrize(
    ("freeze", "unfreeze"),
    [
        ("base.trainable=False", "base.trainable=True"),
        ("base.trainable = (False)", "base.trainable = (True)"),
        ("base.trainable: bool = False", "base.trainable: bool = True"),
        ("base.trainable = \\\n    False", "base.trainable = \\\n    True"),
        ("other.trainable = base.trainable = False", "other.trainable = base.trainable = True"),
        ("base.trainable = frozen = False", "base.trainable = tuned = True"),
        ("base . trainable = False", "base . trainable = True"),
    ],
)
def test_freezes_in_any_spacing_reach_the_rules(freeze, unfreeze):
    # The prefilters look for these assignments with a pattern; check() asserts they let each through.
    code = f"import keras\nbase = keras.applications.ResNet50(weights=None)\n{freeze}\nx = base(inputs)\n"
    assert check(code, codes=("BN001",), latent=True)[0] == ["BN001"]
    assert check(code + f"{unfreeze}\n", codes=("BN001", "BN003",))[0] == ["BN001", "BN003"]


@pytest.mark.parametrize(
    ("imports", "ctor"),
    [
        ("import keras", "keras.applications.VGG16"),
        ("from tensorflow.keras.applications import VGG19", "VGG19"),
        ("import keras", "keras.applications.ConvNeXtBase"),
        ("import keras", "keras.models.load_model"),
        ("import tensorflow_hub as hub", "hub.KerasLayer"),
        ("from mylib import ResNet50", "ResNet50"),  # not keras.applications: unknown contents
    ],
)
def test_bases_without_known_batchnorm_stay_quiet(imports, ctor):
    code = FROZEN_CALL.format(imports=imports, ctor=ctor) + "base.trainable = True\nm = keras.Sequential([base])\n"
    found, _, _ = check(code)
    assert found == []


def test_local_function_named_like_an_application_is_not_one():
    code = """
def ResNet50(**kwargs):
    return object()
base = ResNet50(weights=None)
base.trainable = False
x = base(inputs)
"""
    assert check(code)[0] == []


def test_layers_index_of_sequential_and_get_layer_by_explicit_name():
    code = """
import keras
backbone = keras.applications.EfficientNetB0(include_top=False, name="backbone")
model = keras.Sequential([keras.layers.Input((224, 224, 3)), backbone, keras.layers.Dense(2)])
model.layers[0].trainable = False  # the Input is not in model.layers
model.get_layer("backbone").trainable = True
"""
    found, _, _ = check(code)
    assert found == ["BN002", "BN003"]


def test_get_layer_with_an_unrelated_name_is_not_followed():
    code = """
import keras
backbone = keras.applications.EfficientNetB0(include_top=False, name="backbone")
model = keras.Sequential([backbone, keras.layers.Dense(2, name="head")])
model.get_layer("head").trainable = True
"""
    assert check(code, codes=("BN003",))[0] == []


def test_self_attributes_across_methods():
    code = """
import keras
class Classifier(keras.Model):
    def __init__(self):
        super().__init__()
        self.backbone = keras.applications.MobileNetV2(include_top=False)
        self.backbone.trainable = False
        self.head = keras.layers.Dense(3)
    def call(self, x):
        return self.head(self.backbone(x))
    def unfreeze(self):
        self.backbone.trainable = True
"""
    found, _, _ = check(code)
    assert found == ["BN001", "BN003"]


def test_enumerate_loop_freeze_and_slice_unfreeze():
    code = """
from tensorflow.keras.applications import ResNet152
base = ResNet152(include_top=False)
for i, layer in enumerate(base.layers):
    layer.trainable = False
y = base(x)
for layer in base.layers[-30:]:
    layer.trainable = True
"""
    assert check(code)[0] == ["BN001", "BN003"]


def test_guard_variants_keep_quiet():
    code = """
import keras
from keras.layers import BatchNormalization
base = keras.applications.ResNet50(include_top=False)
for layer in base.layers[143:]:
    layer.trainable = not isinstance(layer, BatchNormalization)
for layer in base.layers[100:]:
    if "batch_normalization" not in layer.name:
        layer.trainable = True
"""
    assert check(code, codes=("BN003",))[0] == []


def test_refreeze_of_a_wrapper_does_not_reach_nested_batchnorm():
    # model.layers is shallow: it lists the base, not the base's BatchNormalization layers.
    code = """
import keras
base = keras.applications.ResNet50(include_top=False)
base.trainable = False
model = keras.Sequential([base, keras.layers.Dense(2)])
base.trainable = True
for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.trainable = False
"""
    assert check(code, codes=("BN003",))[0] == ["BN003"]


def test_model_of_this_file_with_batchnorm_and_sequential_with_batchnorm():
    code = """
from keras import layers, Sequential
def block():
    return Sequential([layers.Conv2D(8, 3), layers.BatchNormalization(), layers.ReLU()])
feature = block()
feature.trainable = False
out = feature(images)
"""
    assert check(code, latent=True)[0] == ["BN001"]


def test_subclassed_model_with_batchnorm_layers():
    code = """
import keras
class Encoder(keras.Model):
    def __init__(self):
        super().__init__()
        self.bn = keras.layers.BatchNormalization()
enc = Encoder()
enc.trainable = False
seq = keras.Sequential([enc, keras.layers.Dense(1)])
"""
    assert check(code, latent=True)[0] == ["BN002"]


def test_extra_batchnorm_models_from_config():
    code = """
from mylib.zoo import build_backbone
net = build_backbone(depth=50)
net.trainable = False
h = net(x)
"""
    assert check(code)[0] == []
    assert check(code, extra_batchnorm_models=("mylib.zoo.build_backbone",), latent=True)[0] == ["BN001"]


OFFICIAL_GUIDE = """
import keras
base_model = keras.applications.Xception(weights="imagenet", include_top=False)
base_model.trainable = False
inputs = keras.Input(shape=(150, 150, 3))
x = base_model(inputs, training=False)
model = keras.Model(inputs, keras.layers.Dense(1)(x))
base_model.trainable = True
"""


@pytest.mark.parametrize(
    ("version", "expected"),
    [("3.0", ["BN003"]), ("3.15.1", ["BN003"]), ("3.16", []), ("2.15", []), ("2.3.1", [])],
)
def test_target_keras_decides_whether_training_false_protects(version, expected):
    found, _, _ = check(OFFICIAL_GUIDE, target=KerasTarget.parse(version, "test"))
    assert found == expected


def test_messages_say_when_it_bites_for_the_target():
    code = FROZEN_CALL.format(imports="import keras", ctor="keras.applications.ResNet50")
    _, _, legacy = check(code, target=KerasTarget.parse("2.2.4", "test"))
    _, _, k215 = check(code, target=KerasTarget.parse("2.15", "test"), latent=True)
    _, _, k315 = check(code, target=KerasTarget.parse("3.15", "test"), latent=True)
    assert "still normalize with batch statistics" in legacy.violations[0][5]
    assert "harmless while it stays frozen" in k215.violations[0][5]
    assert "keras#20285" not in k215.violations[0][5]
    assert "keras#20285" in k315.violations[0][5]


def test_sequential_base_is_never_protected_by_training_false():
    code = """
import keras
base = keras.applications.ResNet50(include_top=False)
base.trainable = False
model = keras.Sequential([base, keras.layers.Dense(1)])
base.trainable = True
"""
    found, _, _ = check(code, target=KerasTarget.parse("2.15", "test"))
    assert found == ["BN002", "BN003"]


def test_seed_resnet50_overfit_code_is_not_a_transfer_learning_finding():
    # The seed trains ResNet50 from scratch: nothing is frozen, so BN001–BN003 have nothing to say;
    # the runtime check (pytest --bn-consistency) is the tool for that case.
    code = """
import numpy as np
from keras.applications import ResNet50
model = ResNet50(input_shape=(197, 197, 1), classes=3, weights=None)
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["acc"])
model.fit(imgs, y, epochs=5, shuffle=True)
print(model.predict(imgs))
"""
    assert [c for c in check(code)[0] if c in ("BN001", "BN002", "BN003")] == []


def test_latent_warnings_only_with_the_latent_setting_unless_the_base_is_unfrozen():
    # cause 8 of issue 11: feature extraction that never unfreezes the base predicts correctly
    code = FROZEN_CALL.format(imports="import keras", ctor="keras.applications.ResNet50")
    assert check(code, codes=("BN001",))[0] == []
    _, _, frozen_only = check(code, codes=("BN001",), latent=True)
    _, _, unfrozen = check(code + "\nbase.trainable = True\n", codes=("BN001",))
    _, _, legacy = check(code, codes=("BN001",), target=KerasTarget.parse("2.2.4", "test"))
    assert frozen_only.violations[0][5].startswith("latent (nothing in this project unfreezes it): ")
    assert "latent" not in unfrozen.violations[0][5]
    assert "latent" not in legacy.violations[0][5]  # multi-backend Keras < 2.4: it bites while frozen


def test_an_unfreeze_that_keeps_batchnorm_frozen_leaves_the_base_latent():
    code = FROZEN_CALL.format(imports="import keras", ctor="keras.applications.ResNet50")
    guarded = code + (
        "for layer in base.layers[-20:]:\n"
        "    if not isinstance(layer, keras.layers.BatchNormalization):\n"
        "        layer.trainable = True\n"
    )
    refrozen = code + (
        "base.trainable = True\n"
        "for layer in base.layers:\n"
        "    if isinstance(layer, keras.layers.BatchNormalization):\n"
        "        layer.trainable = False\n"
    )
    assert check(guarded, codes=("BN001",))[0] == []
    assert check(refrozen, codes=("BN001",))[0] == []
    assert check(guarded, codes=("BN001",), latent=True)[0] == ["BN001"]


def test_a_name_bound_on_two_paths_may_denote_either_base():
    # issue 11 cause 1: values are joined where paths meet, not overwritten by the last branch walked
    code = """
import keras
if big:
    base = keras.applications.ResNet101(include_top=False)
else:
    base = keras.applications.MobileNetV2(include_top=False)
base.trainable = False
model = keras.Sequential([base, keras.layers.Dense(2)])
x = base(keras.Input((224, 224, 3)))
base.trainable = True
"""
    _, _, result = check(code)
    assert [v[4] for v in result.violations] == ["BN002", "BN001", "BN003"]  # each once, not once per base
    # the last branch walked binds a base without BatchNormalization: the first one is still followed
    vgg_else = code.replace("keras.applications.MobileNetV2", "keras.applications.VGG16")
    assert check(vgg_else)[0] == ["BN002", "BN001", "BN003"]
    # a base bound on one path only may be bound: still followed
    one_path = code.replace("else:\n    base = keras.applications.MobileNetV2(include_top=False)\n", "")
    assert check(one_path)[0] == ["BN002", "BN001", "BN003"]


def test_layers_of_a_model_built_on_either_path():
    code = """
import keras
def build(small):
    base = keras.applications.MobileNetV2(include_top=False) if small else keras.applications.ResNet50(include_top=False)
    base.trainable = False
    inputs = keras.Input((224, 224, 3))
    return keras.Model(inputs, keras.layers.Dense(2)(base(inputs, training=False)))
if tiny:
    model = build(True)
else:
    model = keras.Sequential([keras.layers.Dense(2)])
for i in range(len(model.layers)):
    model.layers[i].trainable = True
"""
    assert check(code, codes=("BN003",))[0] == ["BN003"]
