"""Finding a torch model's BatchNorm modules, and the mode each one has in training.

Every subclass of ``torch.nn.modules.batchnorm._BatchNorm`` counts (BatchNorm1d/2d/3d,
SyncBatchNorm, the lazy variants, user subclasses), named by its ``named_modules()`` path in
the *unwrapped* model: ``DataParallel``/``DistributedDataParallel`` (``.module``) and
``torch.compile`` (``._orig_mod``) wrappers are looked through, so paths read as in the
model's own code and the passes never trigger a wrapper's buffer broadcast.

The **training view** is the set of ``training`` flags the model has while it trains.  PyTorch
cannot tell us what the training loop did, so: if the model is in training mode when checked
(typically right after the loop), its own flags are the view, which keeps a frozen backbone the
loop put in ``eval()`` in eval; otherwise (the model was put in ``eval()`` afterwards) the view
is ``model.train()``, every module in training mode.  The report says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_bncheck.errors import BNCheckInputError, BNCheckTypeError
from pytest_bncheck.pytorch._torch import torch

#: Modules that behave differently in training besides BatchNorm, in torch.nn itself.
_TRAINING_ONLY = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout", "RReLU")


@dataclass(frozen=True)
class BatchNormModule:
    """One ``_BatchNorm`` module, its path, and its mode in the training view."""

    module: Any
    path: str  # named_modules() path ("" for a model that is itself one BatchNorm)
    trains: bool  # in training mode in the training view: normalizes with batch statistics

    @property
    def label(self) -> str:
        return self.path or type(self.module).__name__

    def key(self, buffer: str) -> str:
        """The buffer's name in the model's ``named_buffers()`` (for ``functional_call``)."""
        return f"{self.path}.{buffer}" if self.path else buffer

    @property
    def tracks(self) -> bool:
        """Whether it keeps running statistics (``track_running_stats`` and the buffers exist)."""
        return self.module.track_running_stats and self.module.running_mean is not None

    @property
    def updates(self) -> bool:
        """Whether its running statistics move while the model trains."""
        return self.trains and self.tracks

    @property
    def params_frozen(self) -> bool:
        """Affine with every parameter ``requires_grad=False`` (a frozen backbone's BatchNorm)."""
        params = list(self.module.parameters(recurse=False))
        return bool(params) and not any(p.requires_grad for p in params)


def unwrap(model: Any) -> Any:
    """The module that holds the weights, through DataParallel/DDP/torch.compile wrappers."""
    nn = torch().nn
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def validate_model(model: Any) -> Any:
    """The unwrapped module, or a one-line error for what cannot be checked."""
    nn = torch().nn
    if not isinstance(model, nn.Module):
        raise BNCheckTypeError(
            f"model must be a torch.nn.Module, got {type(model).__module__}.{type(model).__qualname__}; "
            "pass the module you trained"
        )
    inner = unwrap(model)
    lazy = [name or type(inner).__name__ for name, m in inner.named_modules()
            if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params()]
    if lazy:
        raise BNCheckInputError(
            f"model has lazy modules that were never run ({', '.join(lazy[:3])}): train it, or run one forward "
            "pass, before checking it"
        )
    return inner


def training_view(model: Any) -> tuple[dict[Any, bool], str]:
    """``module -> training flag`` while the model trains, and how the view was chosen."""
    modules = [m for _, m in model.named_modules()]
    if model.training:
        return {m: m.training for m in modules}, "the model's own training flags (it was in train mode when checked)"
    return {m: True for m in modules}, "model.train() (the model was in eval mode when checked)"


def find_batchnorm(model: Any, view: dict[Any, bool]) -> list[BatchNormModule]:
    """Every ``_BatchNorm`` of ``model`` (each once, shared modules included), in module order."""
    batchnorm = torch().nn.modules.batchnorm._BatchNorm
    found = []
    for path, module in model.named_modules():
        if isinstance(module, batchnorm):
            found.append(BatchNormModule(module, path, view[module]))
    return found


def has_other_training_behaviour(model: Any, refs: list[BatchNormModule]) -> bool:
    """Whether some module besides BatchNorm may act differently in training mode.

    ``torch.nn``'s own modules are known (the dropout family and RReLU do); a module of any
    other class counts when its ``forward`` reads ``training`` (``self.training``,
    ``F.dropout(..., training=...)``), which its code object names.  When none does, the
    BN-only training view equals the training view and is not run twice.
    """
    batchnorm = {id(r.module) for r in refs}
    for module in model.modules():
        if id(module) in batchnorm:
            continue
        cls = type(module)
        if cls.__module__.startswith("torch.nn."):
            if cls.__name__ in _TRAINING_ONLY:
                return True
            continue
        code = getattr(getattr(cls, "forward", None), "__code__", None)
        if code is None or "training" in code.co_names or "training" in code.co_varnames:
            return True
    return False


def model_device(model: Any, device: Any) -> Any:
    """Where the batches go: ``device`` if given, else the device of the model's first tensor."""
    t = torch()
    if device is not None:
        try:
            return t.device(device)
        except (RuntimeError, TypeError) as exc:
            raise BNCheckInputError(
                f"device={device!r} is not a torch device ({exc}); pass e.g. 'cpu' or 'cuda:0'"
            ) from None
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return t.device("cpu")
