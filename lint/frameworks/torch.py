"""PyTorch knowledge, in one place: which classes and constructors build BatchNorm, which
calls change a module's mode or freeze it, what a training step and an inference context are.

The flow analysis (``lint.flow``) asks these questions; it never spells a torch name itself.
"""

from __future__ import annotations

import re


#: torch.nn classes that keep running statistics in training mode.
TORCH_BN_CLASS = re.compile(r"^(Lazy)?BatchNorm[123]d$|^SyncBatchNorm$|^_BatchNorm$")
#: torchvision constructors whose models contain BatchNorm (classification and segmentation;
#: detection models use FrozenBatchNorm2d in their backbones and are deliberately absent).
TORCHVISION_BN = re.compile(
    r"^(resnet\d+|resnext\w+|wide_resnet\w+|densenet\d+|mobilenet_v[23]\w*|efficientnet\w*|regnet_\w+"
    r"|inception_v3|googlenet|shufflenet\w*|mnasnet\w*|vgg\d+_bn|deeplabv3_\w+|fcn_\w+|lraspp_\w+)$"
)
#: ``torch.hub.load``/``timm.create_model`` model names that build BatchNorm.
HUB_BN_NAME = re.compile(
    r"resnet|resnext|densenet|mobilenet|efficientnet|regnet|inception|googlenet|shufflenet|mnasnet|deeplab"
    r"|yolo|ssd|unet|hrnet|dpn|senet|xception|darknet|csp|ghostnet|rexnet|mixnet|tf_efficientnet",
    re.IGNORECASE,
)
#: An import of torch or torchvision (for prefilters): without one no name resolves to them.
#: Not the bare word "torch": library code that supports several backends says it everywhere.
#: Rules put ("torch",) beside it, which settles most files with one cheap substring search.
TORCH_IMPORT = re.compile(r"\bimport\b[^\n]*\btorch|\bfrom[\s\\]+torch")
#: Substrings of every name ``TORCHVISION_BN`` matches (for prefilters).
TORCHVISION_BN_TOKENS = (
    "resnet", "resnext", "densenet", "mobilenet_v", "efficientnet", "regnet_", "inception_v3", "googlenet",
    "shufflenet", "mnasnet", "vgg", "deeplabv3_", "fcn_", "lraspp_",
)
#: Substrings a file must contain to hold a PyTorch module with BatchNorm (for prefilters): the torch
#: class names (not "BatchNorm", which every Keras file with BatchNormalization has; "_BatchNorm"
#: also matches a subclass of torch's base class), a torchvision model's name, or a source of
#: models by name (``torch.hub.load``, ``timm.create_model``, ``torchvision.models.get_model``).
#: Not "torchvision" itself: it is mostly in comments and transforms.
TORCH_BN_TOKENS = (
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "_BatchNorm", *TORCHVISION_BN_TOKENS,
    "hub.load", "torch.hub", "timm", "get_model",
)

#: A test that singles out BatchNorm modules: ``isinstance(m, nn.BatchNorm2d)``, ``"bn" in name``.
BN_TEST = re.compile(r"batch_?norm|\bbn\d*\b|_BatchNorm|\bnorm\b", re.IGNORECASE)
#: Functions whose calls are inference: predict, evaluate, test, infer, validate.
#: The iterable of an evaluation loop: ``test_loader``, ``enumerate(val_dl)``, ``tqdm(valid_dataloader)``.
EVALUATION_LOADER = re.compile(r"\b\w*(test|val|valid|validation|eval)_?(loader|dl|dataloader)\w*\b", re.IGNORECASE)
INFERENCE_FN = re.compile(
    r"(^|_)(predict\w*|prediction\w*|evaluate|evaluation|eval|infer|inference|test|testing|validate|validation|val)(_|$)",
    re.IGNORECASE,
)
#: Attributes of a torchvision model that hold no BatchNorm (the classifier heads).
HEAD_ATTRS = frozenset({"fc", "classifier", "head", "heads", "linear", "last_linear", "logits"})
TENSOR_ATTRS = frozenset({"weight", "bias", "running_mean", "running_var", "data", "grad"})
#: Module methods that return the module itself.
SELF_RETURNING = frozenset({"to", "cuda", "cpu", "float", "half", "double", "bfloat16", "type", "share_memory",
                             "to_empty", "requires_grad_", "train", "eval", "apply", "zero_grad"})
#: nn.Module's own methods (a call of any other attribute of a torchvision model runs a sub-module).
MODULE_METHODS = frozenset({
    "parameters", "named_parameters", "modules", "named_modules", "children", "named_children", "buffers",
    "named_buffers", "state_dict", "load_state_dict", "register_buffer", "register_parameter", "register_module",
    "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook", "add_module",
    "get_submodule", "get_parameter", "get_buffer", "extra_repr", "forward",
}) | SELF_RETURNING
WRAPPERS = frozenset({"DataParallel", "DistributedDataParallel", "compile", "script", "trace", "convert_sync_batchnorm"})
NOT_MODULES = frozenset({"Parameter", "ParameterList", "ParameterDict", "UninitializedParameter", "Buffer"})


def is_torch_bn_class(qualname: str | None) -> bool:
    """``torch.nn.BatchNorm2d``, ``nn.SyncBatchNorm``, ``BatchNorm1d`` (star-imported)."""
    if not qualname:
        return False
    last = qualname.rsplit(".", 1)[-1]
    return bool(TORCH_BN_CLASS.match(last)) and (qualname.startswith("torch.") or "." not in qualname)


def is_torchvision_bn_model(qualname: str | None) -> bool:
    """``torchvision.models.resnet50`` in any import form (``models.resnet50``, ``resnet50``)."""
    return bool(qualname) and qualname.startswith("torchvision.") and bool(
        TORCHVISION_BN.match(qualname.rsplit(".", 1)[-1])
    )


#: Calls that make up tensors (to look at shapes, not to predict): ``torch.randn(2, 3, 32, 32)``.
RANDOM_TENSOR_MAKERS = frozenset({
    "randn", "rand", "randint", "zeros", "ones", "empty", "full", "normal", "uniform", "random", "randn_like",
    "rand_like", "zeros_like", "ones_like", "empty_like", "full_like", "arange", "linspace", "standard_normal",
    "random_sample",
})
_RANDOM_ROOTS = ("torch.", "numpy.random.", "numpy.", "np.random.", "tensorflow.random.", "keras.random.", "jax.random.")

#: Test files: unit tests run BatchNorm in training mode on purpose (pytest's own discovery patterns).
_TEST_FILE = re.compile(r"(^|[/\\])(tests?[/\\].*|test_[^/\\]*|[^/\\]*_test|conftest)\.py$")


def is_random_tensor(qualname: str | None) -> bool:
    """``torch.randn``, ``np.random.rand``, ``np.zeros``, ``tf.random.normal``, ``keras.random.uniform``."""
    if not qualname:
        return False
    last = qualname.rsplit(".", 1)[-1]
    return last in RANDOM_TENSOR_MAKERS and qualname.startswith(_RANDOM_ROOTS)


def is_data_loader(qualname: str | None) -> bool:
    """``torch.utils.data.DataLoader`` in any import form (``DataLoader`` star-imported too)."""
    if not qualname:
        return False
    return qualname.rsplit(".", 1)[-1] == "DataLoader" and (qualname.startswith("torch.") or "." not in qualname)


def is_test_file(path: str) -> bool:
    """``tests/…``, ``test_*.py``, ``*_test.py``, ``conftest.py``."""
    return bool(_TEST_FILE.search(path))


def loads_weights(call) -> bool:
    """``resnet50(pretrained=True)``, ``resnet50(weights="IMAGENET1K_V2")``: a model built with trained weights
    (a libcst call; ``loads_weights_ast`` asks the same of Python's tree, for the project index)."""
    for arg in call.args:
        if arg.keyword is None:
            continue
        value = getattr(arg.value, "value", None)
        if arg.keyword.value == "pretrained" and value == "True":
            return True
        if arg.keyword.value == "weights" and value != "None":
            return True
    return False


def loads_weights_ast(value) -> bool:
    """``loads_weights`` for any call inside an ``ast`` expression (``nn.Sequential(*list(resnet50(weights=...).children()))``)."""
    import ast

    for n in ast.walk(value):
        if isinstance(n, ast.Call):
            for k in n.keywords:
                if k.arg == "pretrained" and isinstance(k.value, ast.Constant) and k.value.value is True:
                    return True
                if k.arg == "weights" and not (isinstance(k.value, ast.Constant) and k.value.value is None):
                    return True
    return False
