"""Keras knowledge, in one place: which constructors build BatchNormalization (or Dropout),
what a custom training step looks like.

The analyses (``lint.flow``, ``lint.flow.keras_models``) ask these questions; the project index
(``lint.flow.project``) asks the freeze and unfreeze ones of other modules' ``ast``.
"""

from __future__ import annotations

import ast as _ast
import re as _re

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


#: Attributes through which a model's graph is reused (``Model(base.input, head(base.output))``).
GRAPH_ATTRS = frozenset({"output", "outputs", "input", "inputs"})
#: Layer iterations that reach nested layers too (``model.layers`` is shallow).
RECURSIVE_LAYER_ITERS = frozenset({"submodules", "_flatten_layers"})
#: A string naming BatchNormalization layers: ``if "bn" in layer.name``, ``"batch_normalization"``.
BN_NAME_TEXT = _re.compile(r"batch_?norm|\bbn\b", _re.IGNORECASE)


# -- freezes and unfreezes as another module of the project sees them (``ast``, for the project index) --

#: A file that may set a Keras model (or its layers) trainable again: ``X.trainable = True``.
UNFREEZE_TEXT = _re.compile(rb"\.trainable\s*=\s*True\b")


def _root(node) -> str | None:
    """``base`` in ``base.layers[3]``, ``base.get_layer("x")``, ``build(...)``, ``enumerate(base.layers)``."""
    while True:
        if isinstance(node, _ast.Call):
            if isinstance(node.func, _ast.Name) and node.func.id in ("enumerate", "list", "reversed") and node.args:
                node = node.args[0]
            else:
                node = node.func
        elif isinstance(node, (_ast.Attribute, _ast.Subscript)):
            node = node.value
        else:
            return node.id if isinstance(node, _ast.Name) else None


def _trainable_set(node, value: bool) -> bool:
    return (
        isinstance(node, _ast.Assign)
        and any(isinstance(t, _ast.Attribute) and t.attr == "trainable" for t in node.targets)
        and isinstance(node.value, _ast.Constant)
        and node.value.value is value
    )


def _mentions_bn(node) -> bool:
    for n in _ast.walk(node):
        if isinstance(n, _ast.Name) and n.id in BN_CLASSES or isinstance(n, _ast.Attribute) and n.attr in BN_CLASSES:
            return True
        if isinstance(n, _ast.Constant) and isinstance(n.value, str) and BN_NAME_TEXT.search(n.value):
            return True
    return False


def frozen_name(node) -> str | None:
    """A module-level Keras freeze, ``X.trainable = False`` or ``for layer in X.layers: layer.trainable = False``: X."""
    if _trainable_set(node, False):
        target = next(t for t in node.targets if isinstance(t, _ast.Attribute) and t.attr == "trainable")
        return _root(target.value) if isinstance(target.value, _ast.Name) else None
    if isinstance(node, _ast.For) and not isinstance(node.iter, _ast.Subscript) and any(
        _trainable_set(n, False) for n in _ast.walk(node)
    ):
        return _root(node.iter)
    return None


def freeze_line(fn) -> int | None:
    """The line of the first ``... .trainable = False`` in a function or class body, if any."""
    return next((n.lineno for n in _ast.walk(fn) if _trainable_set(n, False)), None)


def unfreezes(tree: _ast.Module) -> list[tuple[str, int]]:
    """(the name the model is reached from, line) for each ``trainable = True`` of a module that does not
    keep BatchNormalization frozen: ``base.trainable = True``, ``model.layers[i].trainable = True``,
    ``for layer in m.layers[k:]: layer.trainable = True``. Local names are followed back through plain
    assignments (``model = build()`` -> ``build``). A BatchNormalization guard in the loop, or a
    re-freeze loop anywhere in the module, keeps them frozen: then nothing is returned."""
    aliases: dict[str, str] = {}
    loops: dict[str, str] = {}
    found: list[tuple[str, int]] = []
    for node in _ast.walk(tree):
        if isinstance(node, _ast.If) and _mentions_bn(node.test) and any(_trainable_set(n, False) for n in _ast.walk(node)):
            return []  # ``if isinstance(layer, BatchNormalization): layer.trainable = False``
        if isinstance(node, _ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], _ast.Name):
            root = _root(node.value)
            if root is not None and root != node.targets[0].id:
                aliases.setdefault(node.targets[0].id, root)
        elif isinstance(node, _ast.For):
            var = node.target.elts[-1] if isinstance(node.target, _ast.Tuple) and node.target.elts else node.target
            root = _root(node.iter)
            if isinstance(var, _ast.Name) and root is not None:
                if any(isinstance(n, _ast.If) and _mentions_bn(n.test) for n in _ast.walk(node)):
                    loops[var.id] = ""  # guarded: BatchNormalization skipped
                else:
                    loops.setdefault(var.id, root)
    for node in _ast.walk(tree):
        if not _trainable_set(node, True):
            continue
        target = next(t for t in node.targets if isinstance(t, _ast.Attribute) and t.attr == "trainable")
        if isinstance(target.value, _ast.Name) and _mentions_bn(node.value):
            continue
        name = _root(target.value)
        name = loops.get(name, name) if isinstance(target.value, _ast.Name) else name
        for _ in range(5):  # follow ``m = build(); n = m`` back to the imported or continued name
            if not name or name not in aliases:
                break
            name = aliases[name]
        if name:
            found.append((name, node.lineno))
    return found
