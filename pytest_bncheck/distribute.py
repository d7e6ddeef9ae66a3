"""``tf.distribute``: per-replica copies of the moving statistics (the TensorFlow-only part).

Under ``tf.distribute.MirroredStrategy`` a Keras variable wraps a ``MirroredVariable``: one
copy per replica.  BatchNormalization's moving statistics have aggregation NONE, so in a
distributed ``fit`` each replica averages the statistics of its own share of every batch and
the copies drift apart; reading the variable reads replica 0's copy only.
"""

from __future__ import annotations

from typing import Any

from pytest_bncheck import _keras


def replica_values(variable: Any) -> list[Any] | None:
    """Each replica's copy of ``variable`` as NumPy arrays, or None when it has one copy."""
    np = _keras.np()
    inner = getattr(variable, "value", variable)
    values = getattr(inner, "values", None)
    if not isinstance(values, (list, tuple)) or len(values) < 2:
        return None
    return [np.asarray(v.numpy()) for v in values]


def assign_everywhere(variable: Any, value: Any) -> None:
    """Write ``value`` to every replica's copy of ``variable`` (or to its only copy)."""
    inner = getattr(variable, "value", variable)
    values = getattr(inner, "values", None)
    if isinstance(values, (list, tuple)) and len(values) > 1:
        for copy in values:
            copy.assign(value)
    else:
        variable.assign(value)
