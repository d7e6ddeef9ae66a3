"""The front door: the public functions, dispatched on the kind of model.

``check_bn_consistency`` and ``recalibrate_batchnorm`` take a Keras 3 ``keras.Model`` (the
Keras backend, :mod:`pytest_bncheck.consistency` / :mod:`pytest_bncheck.recalibrate`) or a
``torch.nn.Module`` (:mod:`pytest_bncheck.pytorch`).  The kind is read from the module names of
the model class's MRO, so deciding imports neither framework: only the backend that runs does.
"""

from __future__ import annotations

import sys
from typing import Any

TORCH = "torch"
KERAS = "keras"


#: Keyword arguments only the PyTorch backend takes: they tell the kind when the model does not.
_TORCH_ONLY = frozenset({"loss_fn", "metrics", "fit_metrics", "device"})


def framework_of(model: Any) -> str | None:
    """``"torch"`` for a ``torch.nn.Module`` (wrappers included), ``"keras"`` for a Keras model or
    layer, None for anything else."""
    for cls in type(model).__mro__:
        module = cls.__module__ or ""
        if module == "torch.nn.modules.module" and cls.__name__ == "Module":
            return TORCH
        if module.split(".")[0] in ("keras", "tf_keras"):
            return KERAS
    return None


def backend(model: Any, kwargs: dict) -> str:
    """Which backend handles the call.  A model of neither kind goes where its error will make
    sense to the caller: PyTorch when the call uses PyTorch-only arguments, or torch is imported
    and Keras is not; Keras otherwise (each backend's error names the type it expects)."""
    kind = framework_of(model)
    if kind is not None:
        return kind
    if _TORCH_ONLY & set(kwargs) or ("torch" in sys.modules and "keras" not in sys.modules):
        return TORCH
    return KERAS


def check_bn_consistency(model: Any, *args: Any, **kwargs: Any) -> Any:
    """See :func:`pytest_bncheck.consistency.check_bn_consistency` (Keras) and
    :func:`pytest_bncheck.pytorch.check.check_bn_consistency` (PyTorch)."""
    __tracebackhide__ = True
    if backend(model, kwargs) == TORCH:
        from pytest_bncheck.pytorch.check import check_bn_consistency as check
    else:
        from pytest_bncheck.consistency import check_bn_consistency as check
    return check(model, *args, **kwargs)


def recalibrate_batchnorm(model: Any, *args: Any, **kwargs: Any) -> Any:
    """See :func:`pytest_bncheck.recalibrate.recalibrate_batchnorm` (Keras) and
    :func:`pytest_bncheck.pytorch.recalibrate.recalibrate_batchnorm` (PyTorch)."""
    if backend(model, kwargs) == TORCH:
        from pytest_bncheck.pytorch.recalibrate import recalibrate_batchnorm as recalibrate
    else:
        from pytest_bncheck.recalibrate import recalibrate_batchnorm as recalibrate
    return recalibrate(model, *args, **kwargs)
