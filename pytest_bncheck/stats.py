"""Per-channel moments of each BatchNormalization layer's inputs, streamed over batches.

A batch contributes, per channel, ``n_b`` values (samples x spatial positions), their mean
``mu_b`` and their sum of squared deviations ``M2_b = n_b * var_b``.  Two partial results
combine exactly (Chan, Golub & LeVeque's parallel variance algorithm)::

    n     = n_a + n_b
    delta = mu_b - mu_a
    mu    = mu_a + delta * n_b / n
    M2    = M2_a + M2_b + delta**2 * n_a * n_b / n

and the population variance over everything seen is ``M2 / n`` (biased, as BatchNormalization
uses it).  Averaging the per-batch variances instead would drop the ``delta**2`` term, the
spread of the batch means, and underestimate the variance.  Within a batch the moments are
computed in float32 in two passes (mean first, then squared deviations); the running
combination is kept in float64 so that many batches do not accumulate rounding error.
Only these per-channel vectors are kept: never more than one batch of activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_bncheck import _keras


@dataclass(frozen=True)
class Moments:
    """Pooled per-channel statistics: ``count`` values per channel, ``mean``, ``m2``."""

    count: float
    mean: Any  # numpy float64 [channels]
    m2: Any  # numpy float64 [channels]

    @property
    def variance(self) -> Any:
        """Population (biased) variance, ``M2 / n``."""
        return self.m2 / self.count if self.count else self.m2 * float("nan")


def combine(a: Moments, b: Moments) -> Moments:
    """Chan's exact combination of two partial results (see the module docstring)."""
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    n = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    m2 = a.m2 + b.m2 + delta**2 * (a.count * b.count / n)
    return Moments(n, mean, m2)


def moments_of(values: Any, axis: int) -> Moments:
    """Exact moments of a NumPy array along every axis but ``axis`` (for tests and small data)."""
    np = _keras.np()
    values = np.asarray(values, dtype=np.float64)
    axis = axis % values.ndim
    moved = np.moveaxis(values, axis, -1).reshape(-1, values.shape[axis])
    mean = moved.mean(axis=0)
    return Moments(float(moved.shape[0]), mean, ((moved - mean) ** 2).sum(axis=0))


def batch_moments(inputs: Any, axis: int) -> tuple[Any, Any, Any]:
    """In-graph ``(n_b, mu_b, M2_b)`` of one batch, reduced over every axis but ``axis``.

    float32 on every backend (JAX runs without 64-bit types by default); the combination
    over batches is done in float64 by :class:`MomentAccumulator`.
    """
    ops = _keras.keras().ops
    x = ops.cast(inputs, "float32")
    rank = len(x.shape)
    axis = axis % rank
    axes = tuple(i for i in range(rank) if i != axis)
    mean = ops.mean(x, axis=axes)
    shape = [1] * rank
    shape[axis] = -1
    var = ops.mean(ops.square(x - ops.reshape(mean, shape)), axis=axes)
    count = ops.cast(ops.size(x), "float32") / float(x.shape[axis])
    return count, mean, var * count


class MomentAccumulator:
    """One layer's pooled moments: per-batch results are kept as the step returned them (no
    device-to-host copy per batch) and folded in float64 NumPy by :meth:`result`."""

    def __init__(self, channels: int):
        self.channels = channels
        self._pending: list[tuple[Any, Any, Any]] = []

    def reset(self) -> None:
        self._pending.clear()

    def update(self, n_b: Any, mean_b: Any, m2_b: Any) -> None:
        self._pending.append((n_b, mean_b, m2_b))

    def result(self) -> Moments:
        np = _keras.np()
        from pytest_bncheck.backends import to_numpy as convert

        total = Moments(0.0, np.zeros(self.channels), np.zeros(self.channels))
        for n_b, mean_b, m2_b in self._pending:
            batch = Moments(
                float(convert(n_b)), np.asarray(convert(mean_b), np.float64), np.asarray(convert(m2_b), np.float64)
            )
            total = combine(total, batch)
        self._pending = []
        return total


def statistics_gap(stored_mean: Any, stored_var: Any, mean: Any, var: Any, eps: float) -> tuple[float, float, float, float]:
    """``(mean_shift_max, variance_ratio_min, variance_ratio_max, output_error)`` of stored
    statistics against the data's, per channel, as defined on
    :class:`~pytest_bncheck.report.LayerDiagnosis`.  Framework-free: only arithmetic and
    ``.max()/.min()/.mean()``, so NumPy arrays and torch tensors (float64) both work."""
    shift = (stored_mean - mean) / (var + eps) ** 0.5
    ratio = (stored_var + eps) / (var + eps)
    scale = 1.0 / ratio**0.5
    error = float(((scale - 1.0) ** 2 + (shift * scale) ** 2).mean()) ** 0.5
    return float(abs(shift).max()), float(ratio.min()), float(ratio.max()), error
