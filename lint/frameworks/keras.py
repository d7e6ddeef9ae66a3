"""Keras knowledge, in one place: which constructors build BatchNormalization (or Dropout),
what a custom training step looks like.

The analyses (``lint.flow``, ``lint.keras_models``) ask these questions.
"""

from __future__ import annotations

# Module prefixes under which the Keras API is reachable; all map to ``keras.``.
_KERAS_PREFIXES = (
    "tensorflow.compat.v2.keras.",
    "tensorflow.compat.v1.keras.",
    "tensorflow.python.keras.",
    "tensorflow.keras.",
    "tf_keras.",
    "keras.src.",
    "keras.api.",
)


def keras_name(qualname: str | None) -> str | None:
    """Canonical ``keras.…`` spelling of a Keras qualified name, or None if not Keras."""
    if qualname is None:
        return None
    for prefix in _KERAS_PREFIXES:
        if qualname.startswith(prefix):
            return "keras." + qualname[len(prefix) :]
    if qualname == "keras" or qualname.startswith("keras."):
        return qualname
    return None


# keras.applications constructors whose models contain BatchNormalization. VGG16/VGG19 have
# none and ConvNeXt uses LayerNormalization, so they are deliberately absent.
_REGNET_SIZES = ("002", "004", "006", "008", "016", "032", "040", "064", "080", "120", "160", "320")
BN_APPLICATIONS = frozenset(
    ["ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2", "ResNet152V2"]
    + [f"ResNetRS{n}" for n in (50, 101, 152, 200, 270, 350, 420)]
    + ["InceptionV3", "InceptionResNetV2", "Xception"]
    + ["MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large"]
    + [f"EfficientNetB{i}" for i in range(8)]
    + [f"EfficientNetV2B{i}" for i in range(4)]
    + ["EfficientNetV2S", "EfficientNetV2M", "EfficientNetV2L"]
    + ["DenseNet121", "DenseNet169", "DenseNet201", "NASNetMobile", "NASNetLarge"]
    + [f"RegNet{kind}{size}" for kind in "XY" for size in _REGNET_SIZES]
)
BN_CLASSES = frozenset({"BatchNormalization", "SyncBatchNormalization"})
BN_NAMES = BN_CLASSES | BN_APPLICATIONS  # the last name of every BatchNormalization constructor

#: Substrings a file must contain to hold a BatchNormalization-bearing model at all.
BN_MODEL_TOKENS = (
    "BatchNorm",
    "ResNet",
    "Inception",
    "Xception",
    "MobileNet",
    "EfficientNet",
    "DenseNet",
    "NASNet",
    "RegNet",
)

def is_bn_application(qualname: str | None) -> bool:
    name = keras_name(qualname)
    return bool(name) and name.startswith("keras.applications.") and name.rsplit(".", 1)[-1] in BN_APPLICATIONS


def is_bn_class(qualname: str | None) -> bool:
    return bool(qualname) and qualname.rsplit(".", 1)[-1] in BN_CLASSES

DROPOUT_CLASSES = frozenset({"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"})
#: Layers that move values without changing them: a Dropout stays "directly before" across them.
SHAPE_ONLY_CLASSES = frozenset({"Flatten", "Reshape", "Permute"})
#: Calls that apply gradients: a function containing one is a custom training step.
APPLY_GRADIENTS = frozenset({"apply_gradients", "minimize"})
#: Method names Keras calls as the training step of a ``Model`` subclass.
TRAIN_STEP_METHODS = frozenset({"train_step"})
#: KerasHub presets whose architecture has BatchNormalization (the name of the preset says it).
KERAS_HUB_BN_PRESET = ("resnet", "efficientnet", "mobilenet", "densenet", "csp", "yolo", "retinanet", "deeplab",
                       "inception", "xception", "vgg_bn", "mit", "basnet")


def is_keras_hub_bn_preset(name: str) -> bool:
    """``keras_hub.models.Backbone.from_preset("resnet_50_imagenet")``: an architecture with BatchNormalization."""
    name = name.lower()
    return any(token in name for token in KERAS_HUB_BN_PRESET)


def builds_bn(qualname: str | None) -> bool:
    """``keras.layers.BatchNormalization`` (any import form) or a ``keras.applications`` model with it."""
    if qualname in BN_CLASSES:  # a bare name: star-imported or aliased
        return True
    name = keras_name(qualname)
    if not name:
        return False
    return name.rsplit(".", 1)[-1] in BN_CLASSES or is_bn_application(qualname)


def is_dropout(qualname: str | None) -> bool:
    name = keras_name(qualname)
    return bool(name) and name.rsplit(".", 1)[-1] in DROPOUT_CLASSES


def is_model_base(qualname: str | None) -> bool:
    """A base class of Keras models and layers: ``keras.Model``, ``tf.keras.layers.Layer``."""
    name = keras_name(qualname)
    return bool(name) and name.rsplit(".", 1)[-1] in ("Model", "Layer", "Sequential", "Functional")


def applies_gradients(call_name: str) -> bool:
    """``optimizer.apply_gradients(...)``, ``optimizer.minimize(...)``: the call of a training step."""
    return call_name in APPLY_GRADIENTS


#: The Keras 1/2 learning-phase API (``keras.backend.*``), gone in Keras 3.
LEARNING_PHASE_API = frozenset({"set_learning_phase", "learning_phase", "learning_phase_scope"})
#: Calls that exist only in TensorFlow 1 / Keras 2: a file using them cannot run on Keras 3 at all.
KERAS2_ONLY = frozenset({"Session", "InteractiveSession", "get_session", "placeholder", "disable_eager_execution",
                         "disable_v2_behavior", "gradients"})
