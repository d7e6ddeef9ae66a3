"""The single place that imports Keras, TensorFlow and NumPy (backend choices: backends.py).

Loading the pytest plugin happens in every pytest run once the package is installed, so
nothing at import time of this package may pull in TensorFlow (~2.5 s); the check imports it
through these functions when it actually runs.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from pytest_bncheck.errors import BNCheckInputError

_INSTALL_HINT = 'install them with: pip install "pytest-bncheck[tensorflow]" (or [jax], [torch])'


def _load(name: str) -> ModuleType:
    # sys.modules first: these are called while tf.function traces, and AutoGraph should not
    # be asked to convert the import machinery.
    module = sys.modules.get(name)
    if module is not None:
        return module
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BNCheckInputError(
            f"the BatchNormalization check needs {name}, which is not importable ({exc}); {_INSTALL_HINT}"
        ) from None


def keras() -> ModuleType:
    if "keras" in sys.modules and "keras.src.backend" in sys.modules:
        return sys.modules["keras"]
    module = _load("keras")
    major = int(module.__version__.split(".")[0])
    if major < 3:
        raise BNCheckInputError(
            f"the BatchNormalization check needs Keras 3, found keras {module.__version__}; "
            'upgrade with: pip install "keras>=3"'
        )
    return module


def tf() -> ModuleType:
    return _load("tensorflow")


def np() -> ModuleType:
    return _load("numpy")


def keras_src(path: str) -> ModuleType:
    """A private Keras module (``keras.src.<path>``): used only where Keras has no public API."""
    keras()
    return _load(f"keras.src.{path}")
