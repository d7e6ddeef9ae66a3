"""pytest-bncheck's runtime side: is a trained Keras or PyTorch model's inference consistent with training?

The public names are imported lazily (PEP 562 ``__getattr__``): pytest imports this package
for every run once it is installed, and TensorFlow, Keras, PyTorch and NumPy must be imported
only when a check actually runs (:mod:`pytest_bncheck.api` dispatches on the model's kind).
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "check_bn_consistency": "pytest_bncheck.api",
    "BNConsistencyReport": "pytest_bncheck.report",
    "BNConsistencyError": "pytest_bncheck.report",
    "LayerDiagnosis": "pytest_bncheck.report",
    "MetricComparison": "pytest_bncheck.report",
    "recalibrate_batchnorm": "pytest_bncheck.api",
    "RecalibrationSummary": "pytest_bncheck.recalibrate",
    "BNConsistencyCallback": "pytest_bncheck.callback",
    "BNCheckInputError": "pytest_bncheck.errors",
    "BNCheckTypeError": "pytest_bncheck.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_bncheck' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
