"""``recalibrate_batchnorm``: set the moving statistics to the data's exact population statistics.

The "precise BN" idea (fvcore's ``update_bn_stats``, PyTorch's ``swa_utils.update_bn``): run
the model over the data in training mode, as ``fit`` does, pool every BatchNormalization
layer's per-batch input moments exactly (Chan's combination, :mod:`pytest_bncheck.stats`),
and store the pooled mean and (biased) variance as ``moving_mean`` / ``moving_variance``.
In training mode a layer's output does not depend on its moving statistics, so one pass
gives every layer's statistics at once.  The training-mode pass itself runs inside a
``keras.StatelessScope``: nothing but the moving statistics of the recalibrated layers changes.

Frozen layers (``trainable=False``) are left alone: ``fit`` normalizes with their stored
statistics too, so the layers after them were trained on outputs normalized that way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_bncheck import _keras, arguments
from pytest_bncheck.data import make_batches
from pytest_bncheck.distribute import assign_everywhere
from pytest_bncheck.diagnosis import diagnose_layer
from pytest_bncheck.errors import BNCheckInputError
from pytest_bncheck.layers import find_batchnorm_layers
from pytest_bncheck.passes import passes_for


#: The seed of ``shuffle=True``: the first order the check tries (consistency.SHUFFLE_SEEDS).
SHUFFLE_SEED = 0


@dataclass(frozen=True)
class LayerRecalibration:
    path: str
    output_error_before: float  # see LayerDiagnosis.output_error; 0 after recalibration
    mean_shift_max_before: float
    variance_ratio_min_before: float
    variance_ratio_max_before: float


@dataclass
class RecalibrationSummary:
    """What :func:`recalibrate_batchnorm` changed."""

    model_name: str
    samples: int
    batches: int
    recalibrated: list[LayerRecalibration] = field(default_factory=list)
    skipped_frozen: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"recalibrated {len(self.recalibrated)} BatchNormalization layers of {self.model_name!r} on "
            f"{self.samples} samples in {self.batches} batch{'' if self.batches == 1 else 'es'}"
            + (f"; left {len(self.skipped_frozen)} frozen layers alone" if self.skipped_frozen else "")
        ]
        for layer in sorted(self.recalibrated, key=lambda r: r.output_error_before, reverse=True)[:10]:
            lines.append(
                f"  {layer.path}: output error {layer.output_error_before:.2f} -> 0, mean shift was "
                f"{layer.mean_shift_max_before:.2f}, variance ratio was "
                f"{layer.variance_ratio_min_before:.2g}..{layer.variance_ratio_max_before:.2g}"
            )
        return "\n".join(lines)


def recalibrate_batchnorm(
    model: Any, x: Any, *, batch_size: int | None = None, steps: int | None = None, shuffle: bool = False
) -> RecalibrationSummary:
    """Recompute every non-frozen BatchNormalization layer's moving statistics on ``x``, in place.

    ``shuffle=True`` cuts array data into batches in a seeded shuffled order, as ``fit`` does
    (the check's advice says so when data order gives batches unlike fit's, e.g. sorted data).

    ``x`` is what ``Model.predict``/``evaluate`` accept (targets, if present, are ignored);
    give ``batch_size`` as given to ``fit``: deeper layers' inputs depend on it, through the
    batch statistics of the layers before them.  Returns a summary of what changed.
    """
    from pytest_bncheck.consistency import validate_model

    validate_model(model, compiled=False)
    batch_size = arguments.positive_int("batch_size", batch_size)
    steps = arguments.positive_int("steps", steps)
    arguments.flag("shuffle", shuffle)
    refs = find_batchnorm_layers(model)
    summary = RecalibrationSummary(model.name, 0, 0)
    if not refs:
        return summary
    batches = make_batches(x, batch_size=batch_size, steps=steps, order_seed=SHUFFLE_SEED if shuffle else None)
    result = passes_for(model, refs).moments_only(batches)
    if result.batches == 0:
        raise BNCheckInputError("the data yielded no batches: pass the data the model was trained on")
    summary.samples, summary.batches = result.samples, result.batches
    # Everything is computed and checked before the first write: a failure leaves the model
    # bit-identical.
    writes = []
    for ref, moments in zip(refs, result.moments):
        if ref.frozen:
            summary.skipped_frozen.append(ref.path)
            continue
        np = _keras.np()
        if not (np.all(np.isfinite(moments.mean)) and np.all(np.isfinite(moments.variance))):
            raise BNCheckInputError(
                f"the inputs of {ref.path} are not finite on this data (the model's activations overflow or it "
                "diverged): nothing was written into the model; recalibrate a model whose predictions are finite"
            )
        before = diagnose_layer(ref, moments, None)
        writes += statistics_writes(ref.layer, moments.mean, moments.variance)
        summary.recalibrated.append(
            LayerRecalibration(
                ref.path, before.output_error, before.mean_shift_max,
                before.variance_ratio_min, before.variance_ratio_max,
            )
        )
    for variable, value in writes:
        assign_everywhere(variable, value)
    return summary


def statistics_writes(layer: Any, mean: Any, variance: Any) -> list[tuple[Any, Any]]:
    """``(variable, value)`` pairs that set ``layer``'s inference statistics to ``mean``/``variance``.

    A ``renorm=True`` layer also keeps ``moving_stddev``, from which each training step
    re-derives ``moving_variance`` (``relu(stddev**2 - epsilon)``): it is set to
    ``sqrt(variance + epsilon)``, consistently, so the next step does not undo the
    recalibration.  Its ``renorm_mean``/``renorm_stddev`` are what training mode normalizes
    with; they are left alone (changing them would change the training-mode inputs of every
    later layer, on which these statistics were measured).
    """
    np = _keras.np()
    pairs = [
        (layer.moving_mean, np.asarray(mean, dtype=layer.moving_mean.dtype)),
        (layer.moving_variance, np.asarray(variance, dtype=layer.moving_variance.dtype)),
    ]
    if getattr(layer, "renorm", False):
        stddev = np.sqrt(np.asarray(variance, dtype=np.float64) + float(layer.epsilon))
        pairs.append((layer.moving_stddev, stddev.astype(layer.moving_stddev.dtype)))
    return pairs
