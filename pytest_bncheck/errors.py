"""Errors for inputs the check cannot work with: one line naming the problem and the fix."""

from __future__ import annotations


class BNCheckInputError(ValueError):
    """The model or data given to the check cannot be checked; the message says how to fix it."""


class BNCheckTypeError(BNCheckInputError, TypeError):
    """An argument has the wrong type (for example, not a Keras model)."""


class BNConsistencyWarning(UserWarning):
    """Issued by the ``--bn-consistency`` audit in warn mode instead of failing the test."""
