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
    """In-graph ``(n_b, mu_b, M2_b)`` of one batch, reduced over every axis but ``axis``."""
    tf = _keras.tf()
    x = tf.cast(inputs, tf.float32)
    rank = x.shape.rank
    axis = axis % rank
    axes = [i for i in range(rank) if i != axis]
    mean = tf.reduce_mean(x, axis=axes)
    shape = [1] * rank
    shape[axis] = -1
    var = tf.reduce_mean(tf.square(x - tf.reshape(mean, shape)), axis=axes)
    count = tf.cast(tf.size(x) // tf.shape(x)[axis], tf.float64)
    return count, tf.cast(mean, tf.float64), tf.cast(var, tf.float64) * count


class MomentAccumulator:
    """float64 ``tf.Variable`` state for one layer, updated inside compiled passes."""

    def __init__(self, channels: int):
        tf = _keras.tf()
        self.count = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.mean = tf.Variable(tf.zeros([channels], tf.float64), trainable=False)
        self.m2 = tf.Variable(tf.zeros([channels], tf.float64), trainable=False)

    def reset(self) -> None:
        self.count.assign(0.0)
        self.mean.assign(self.mean * 0.0)
        self.m2.assign(self.m2 * 0.0)

    def update(self, n_b: Any, mean_b: Any, m2_b: Any) -> None:
        """Fold one batch in (Chan's combination; the first batch is taken as is)."""
        n_a = self.count.read_value()
        mean_a = self.mean.read_value()
        n = n_a + n_b
        delta = mean_b - mean_a
        self.mean.assign(mean_a + delta * (n_b / n))
        self.m2.assign(self.m2.read_value() + m2_b + delta * delta * (n_a * n_b / n))
        self.count.assign(n)

    def result(self) -> Moments:
        return Moments(float(self.count.numpy()), self.mean.numpy(), self.m2.numpy())


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
