"""The single place that imports torch.

Loading the pytest plugin must never import torch (about 1 s, and it may not be installed):
the PyTorch backend imports it through :func:`torch` when a check runs on a torch model.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from pytest_bncheck.errors import BNCheckInputError

INSTALL_HINT = 'install it with: pip install "pytest-bncheck[torch]"'


def torch() -> ModuleType:
    module = sys.modules.get("torch")
    if module is not None and hasattr(module, "nn"):
        return module
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise BNCheckInputError(
            f"the BatchNorm check of a PyTorch model needs torch, which is not importable ({exc}); {INSTALL_HINT}"
        ) from None
