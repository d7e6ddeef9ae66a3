"""One-line validation of the arguments of the public functions, the fixture and the marker.

Every check names the argument, what is allowed and what was given; a wrong type raises
:class:`~pytest_bncheck.errors.BNCheckTypeError`, a wrong value
:class:`~pytest_bncheck.errors.BNCheckInputError`.  ``bool`` is refused where a number is
expected (``True`` is an ``int`` to Python, never a batch size to a user); NumPy integer and
float scalars are accepted like Python's.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from pytest_bncheck.errors import BNCheckInputError, BNCheckTypeError


def positive_int(name: str, value: Any) -> int | None:
    """``None`` or an integer >= 1 (``batch_size``, ``steps``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise BNCheckTypeError(f"{name} must be a positive integer or None, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise BNCheckInputError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


def tolerance(name: str, value: Any) -> float | None:
    """``None`` or a finite-or-infinite number >= 0 (``atol``, ``rtol``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BNCheckTypeError(f"{name} must be a non-negative number or None, got {value!r} ({type(value).__name__})")
    value = float(value)
    if math.isnan(value) or value < 0:
        raise BNCheckInputError(f"{name} must be a non-negative number or None, got {value}")
    return value


def flag(name: str, value: Any) -> bool:
    """``True`` or ``False`` (``raise_on_failure``, the marker's ``audit``)."""
    if not isinstance(value, bool):
        raise BNCheckTypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> str | None:
    """``None`` or one of ``allowed`` (the marker's ``mode``)."""
    if value is not None and value not in allowed:
        raise BNCheckInputError(f"{name} must be one of {', '.join(map(repr, allowed))} or None, got {value!r}")
    return value


def class_weights(value: Any) -> dict | None:
    """``None`` or a dict from class index to weight, as ``fit`` takes it."""
    if value is not None and not isinstance(value, dict):
        raise BNCheckTypeError(f"class_weight must be a dict {{class index: weight}} or None, got {value!r} ({type(value).__name__})")
    return value


#: What ``@pytest.mark.bn_consistency(...)`` takes.
MARKER_OPTIONS = ("atol", "rtol", "audit", "mode")


def marker(where: str, args: tuple, kwargs: dict, modes: tuple[str, ...]) -> None:
    """The marker's arguments: keywords only, known ones, each of its type (one line naming the bad one)."""
    if args:
        raise BNCheckInputError(f"{where} takes keyword arguments only ({', '.join(MARKER_OPTIONS)}), got {args!r}")
    unknown = sorted(set(kwargs) - set(MARKER_OPTIONS))
    if unknown:
        raise BNCheckInputError(f"{where} got unknown argument(s) {', '.join(unknown)}; it takes {', '.join(MARKER_OPTIONS)}")
    for key in ("atol", "rtol"):
        tolerance(f"{where}: {key}", kwargs.get(key))
    flag(f"{where}: audit", kwargs.get("audit", True))
    choice(f"{where}: mode", kwargs.get("mode"), modes)
