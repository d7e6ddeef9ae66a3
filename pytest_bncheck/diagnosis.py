"""Per-layer diagnosis (stored statistics vs the data) and the fix that applies."""

from __future__ import annotations

import math

from typing import Any

from pytest_bncheck import _keras
from pytest_bncheck.distribute import replica_values
from pytest_bncheck.layers import BatchNormRef
from pytest_bncheck.report import LayerDiagnosis, MetricComparison, StatisticsChange, fmt
from pytest_bncheck.stats import Moments

#: Share of the initial values above which a layer's moving averages count as unconverged.
UNCONVERGED_SHARE = 0.05


def diagnose_layer(
    ref: BatchNormRef, moments: Moments, updates: int | None, source: str = "estimated", start: str = "unknown"
) -> LayerDiagnosis:
    """Compare ``ref``'s moving statistics with the pooled ``moments`` of its inputs.

    The formulas are documented on :class:`~pytest_bncheck.report.LayerDiagnosis`.
    ``updates`` is how many moving-average updates the layer went through (``source``:
    "counted" by the audit or "estimated"); the share of the values it started from still in
    the averages is ``momentum ** updates``; ``start`` says what those were: "initial" (mean
    0, variance 1), "loaded" (pretrained) or "unknown".
    """
    np = _keras.np()
    layer = ref.layer
    eps = float(layer.epsilon)
    moving_mean = np.asarray(layer.moving_mean.numpy(), dtype=np.float64)
    moving_variance = np.asarray(layer.moving_variance.numpy(), dtype=np.float64)
    data_std = np.sqrt(moments.variance + eps)
    shift = (moving_mean - moments.mean) / data_std
    ratio = (moving_variance + eps) / (moments.variance + eps)
    scale = 1.0 / np.sqrt(ratio)
    error = math.sqrt(float(np.mean((scale - 1.0) ** 2 + (shift * scale) ** 2)))
    replicas = replica_spread(layer, data_std)
    momentum = float(layer.momentum)
    at_initial = bool(np.all(moving_mean == 0.0) and np.all(moving_variance == 1.0))
    if ref.frozen:
        source, share = "frozen", None
    else:
        share = momentum**updates if updates is not None else None
    if at_initial:
        start = "initial"
    return LayerDiagnosis(
        path=ref.path,
        frozen=ref.frozen,
        nested=ref.nested,
        momentum=momentum,
        epsilon=eps,
        channels=int(moving_mean.shape[0]),
        updates=updates,
        updates_source=source,
        initial_share=share,
        at_initial_values=at_initial,
        mean_shift_max=float(np.max(np.abs(shift))),
        variance_ratio_min=float(np.min(ratio)),
        variance_ratio_max=float(np.max(ratio)),
        output_error=error,
        starting_values=start,
        **replicas,
    )


def replica_spread(layer: Any, data_std: Any) -> dict:
    """How far the other replicas' moving statistics are from replica 0's (see LayerDiagnosis)."""
    np = _keras.np()
    means, variances = replica_values(layer.moving_mean), replica_values(layer.moving_variance)
    if means is None or variances is None:
        return {}
    eps = float(layer.epsilon)
    worst, worst_shift, worst_ratio = None, 0.0, 1.0
    for index in range(1, len(means)):
        shift = float(np.max(np.abs(means[index].astype(np.float64) - means[0]) / data_std))
        ratio = (variances[index].astype(np.float64) + eps) / (variances[0].astype(np.float64) + eps)
        ratio = float(np.max(np.maximum(ratio, 1.0 / ratio)))
        if worst is None or (shift, ratio) > (worst_shift, worst_ratio):
            worst, worst_shift, worst_ratio = index, shift, ratio
    return {
        "replicas": len(means),
        "replica_most_different": worst,
        "replica_mean_shift_max": worst_shift,
        "replica_variance_ratio_max": worst_ratio,
    }


def replica_notes(layers: list[LayerDiagnosis]) -> list[str]:
    """Say when replicas hold different statistics, which one and by how much."""
    split = [layer for layer in layers if layer.replicas > 1]
    differing = [l for l in split if l.replica_mean_shift_max > 0 or l.replica_variance_ratio_max > 1]
    if not differing:
        if split:
            return [f"the {split[0].replicas} replicas of the distribution strategy hold identical moving statistics"]
        return []
    worst = max(differing, key=lambda l: (l.replica_mean_shift_max, l.replica_variance_ratio_max))
    return [
        f"the moving statistics differ between the {worst.replicas} replicas of the distribution strategy in "
        f"{len(differing)} of {len(split)} layers (aggregation NONE: in a distributed fit() each replica averages "
        f"its own share of every batch); most in {worst.path}: replica {worst.replica_most_different}'s "
        f"moving_mean is up to {worst.replica_mean_shift_max:.2g} data standard deviations from replica 0's, its "
        f"moving_variance up to {worst.replica_variance_ratio_max:.3g}x; this check used replica 0's, while "
        "evaluate() and predict() normalize each replica's share of a batch with that replica's own; "
        "recalibrate_batchnorm(model, x) writes the same statistics to every replica"
    ]


def updates_needed(momentum: float, share: float = 0.01) -> int:
    """Updates after which ``momentum ** n`` drops below ``share``."""
    if momentum <= 0:
        return 1
    return math.ceil(math.log(share) / math.log(momentum))


def update_notes(layers: list[LayerDiagnosis]) -> list[str]:
    """State how the update counts behind 'initial left' were obtained, and their limits."""
    sources = {layer.updates_source for layer in layers}
    notes = []
    if "estimated" in sources:
        notes.append(
            "'initial left' = momentum ** updates, with updates estimated from the optimizer's step counter "
            "(optimizer.iterations, every training step under gradient accumulation) times the layer's calls per "
            "step: this assumes every non-frozen layer was updated at every step since its statistics were set; a "
            "new optimizer restarts the count, a layer frozen part of the time was updated less, and nobody saw "
            "whether they started at mean 0 / variance 1 or were pretrained (the --bn-consistency audit and "
            "BNConsistencyCallback count the updates of every fit they see instead)"
        )
    if "counted" in sources:
        notes.append(
            "'initial left' = momentum ** updates, with updates counted over the fit() calls the audit saw while "
            "each layer was trainable; statistics loaded from pretrained weights are not initial values"
        )
    return notes


def _unconverged_advice(start: str, group: list[LayerDiagnosis]) -> str:
    """Only what is known: a count from mean 0 / variance 1 seen by the audit, a count from
    loaded statistics, or an estimate whose starting values nobody saw."""
    worst = max(group, key=lambda layer: layer.initial_share or 1.0)
    share = 1.0 if worst.initial_share is None else worst.initial_share
    m, n, count = worst.momentum, worst.updates, len(group)
    longer = (
        f"train longer (at momentum {m:g}, {updates_needed(m)} updates leave < 1%) "
        f"or lower the momentum (momentum=0.9 needs {updates_needed(0.9)} updates)"
    )
    if start == "initial":
        return (
            f"the moving averages have not converged: momentum {m:g} after {n} updates leaves {share:.0%} of their "
            f"initial values (mean 0, variance 1) in {count} layers; {longer}"
        )
    if start == "loaded":
        return (
            f"the moving averages still hold {share:.0%} of the pretrained (loaded) statistics they started from in "
            f"{count} layers (momentum {m:g} after {n} counted updates): those describe the data they were trained "
            "on; recalibrate them on yours, or keep these BatchNormalization layers frozen while fine-tuning "
            "(trainable = False on each)"
        )
    return (
        f"the moving averages may not have converged: momentum {m:g} after ~{n} updates (estimated from the "
        f"optimizer's steps) leaves {share:.0%} of the values they started this training with in {count} layers "
        "(mean 0 / variance 1 if the layers were built fresh, the loaded values if pretrained); if they were built "
        f"fresh, {longer}"
    )


def _gap(c: MetricComparison, value: float | None) -> str:
    return f"{c.name} {fmt(c.fit)} at fit, {fmt(c.inference)} at inference, {fmt(value)} recalibrated"


def override_advice(changes: list[StatisticsChange]) -> list[str]:
    """What the audit saw fit() do to statistics it must not update, grouped by sub-model."""
    groups: dict[tuple[str, str | None], list[StatisticsChange]] = {}
    for change in changes:
        groups.setdefault((change.reason, change.container), []).append(change)
    advice = []
    for (reason, container), group in groups.items():
        worst = max(group, key=lambda c: c.mean_shift)
        largest = f"largest moving_mean change {worst.mean_shift:.2g} standard deviations, {worst.path}"
        if reason == "training=False":
            advice.append(
                f"the moving statistics of {len(group)} BatchNormalization layers in {container!r} changed during "
                f"fit() although it was called with training=False (Keras 3.0-3.15, keras-team/keras#20285; "
                f"{largest}); set trainable = False on each BatchNormalization layer of {container!r} after "
                "unfreezing it, then recompile"
            )
        else:
            advice.append(
                f"the moving statistics of {len(group)} BatchNormalization layers with trainable=False changed during "
                f"fit() ({largest}): something other than BatchNormalization's training step writes them (a custom "
                "train_step or a callback?)"
            )
    return advice


def advise(
    cause: str | None,
    comparisons: list[MetricComparison],
    layers: list[LayerDiagnosis],
    closes_gap: bool | None,
    batch_size: int | None,
    changes: list[StatisticsChange] | None = None,
    shuffled: bool = False,
) -> list[str]:
    """The fixes that apply, most direct first (after :func:`override_advice`); ``shuffled``:
    the check's training-mode pass used a shuffled batch order (recalibrate likewise)."""
    if cause == "other":
        return [
            "training mode on the final weights shares the gap, so BatchNormalization does not explain it: "
            "fit-time numbers are running means while the weights changed during the last epoch; check that the "
            "data, batch_size and class_weight given here are the ones given to fit(), and look for layers other "
            "than BatchNormalization that behave differently in training, or a custom train_step"
        ]
    if cause != "batchnorm":
        return []
    advice = []
    failing = [c for c in comparisons if not c.inference_agrees]
    size = (f", batch_size={batch_size}" if batch_size else "") + (", shuffle=True" if shuffled else "")
    probe = "; ".join(_gap(c, c.recalibrated) for c in failing)
    if closes_gap:
        advice.append(
            f"recalibrate the moving statistics on the training data: "
            f"pytest_bncheck.recalibrate_batchnorm(model, x{size}) closes the gap here ({probe})"
        )
    else:
        advice.append(f"recalibrating the moving statistics on this data does not fully close the gap ({probe})")
    trainable = [layer for layer in layers if not layer.frozen]
    unconverged = [
        layer for layer in trainable
        if layer.at_initial_values or (layer.initial_share is not None and layer.initial_share >= UNCONVERGED_SHARE)
    ]
    for start in ("initial", "unknown", "loaded"):
        group = [layer for layer in unconverged if layer.starting_values == start]
        if group:
            advice.append(_unconverged_advice(start, group))
    nested = [layer for layer in trainable if layer.nested]
    if nested and not any(c.reason == "training=False" for c in changes or []):  # else said directly
        base = nested[0].path.split("/")[0]
        advice.append(
            f"{len(nested)} BatchNormalization layers inside the sub-model {base!r} are trainable: when fine-tuning a "
            "pretrained base, keep them frozen (set trainable = False on each BatchNormalization layer after "
            "unfreezing the base, then recompile); Keras 3.0-3.15 run them in training mode in fit() even when the "
            "base is called with training=False (keras-team/keras#20285)"
        )
    return advice
