"""What the check found: per-metric comparisons, per-layer diagnoses, the readable report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pytest_bncheck.metrics import Tolerance

SHOWN_LAYERS = 10


@dataclass(frozen=True)
class MetricComparison:
    """One metric's three numbers (and the recalibration probe's) against the tolerance."""

    name: str
    direction: str | None  # "lower", "higher" or None (compared both ways)
    fit: float  # history, last epoch: running mean in training mode while weights moved
    train_mode: float  # final weights, batch statistics, no moving-average updates
    inference: float  # final weights, moving statistics (what evaluate/predict see)
    recalibrated: float | None  # inference after recalibrating a copy of the statistics
    allowed: float  # atol + rtol * |fit|
    inference_agrees: bool
    train_mode_agrees: bool
    recalibrated_agrees: bool | None
    # BatchNormalization alone in training mode (batch statistics), Dropout and every other
    # layer in inference mode: run when inference disagrees with fit and the model has such
    # layers, to tell their share of the gap from BatchNormalization's.
    bn_only: float | None = None
    explained_by_training_layers: bool = False  # inference matches bn_only: the gap is Dropout's


@dataclass(frozen=True)
class LayerDiagnosis:
    """One BatchNormalization layer's stored statistics against its inputs on the data.

    With the data's per-channel mean ``mu`` and variance ``var`` (pooled over all batches,
    inputs computed in training mode as in ``fit``) and the stored ``moving_mean`` ``m`` and
    ``moving_variance`` ``v``:

    * ``mean_shift = (m - mu) / sqrt(var + eps)``: how far the stored mean is, in data
      standard deviations (``mean_shift_max`` is the largest ``|.|`` over channels);
    * ``variance_ratio = (v + eps) / (var + eps)``;
    * ``output_error = sqrt(mean_c((s - 1)**2 + (mean_shift * s)**2))`` with
      ``s = 1 / sqrt(variance_ratio)``: the RMS difference between the layer's output
      normalized with its moving statistics and with the data's, in units of the output's
      standard deviation (0 = identical; 1 = as large as the signal).
    """

    path: str
    frozen: bool
    nested: bool
    momentum: float
    epsilon: float
    channels: int
    updates: int | None  # moving-average updates the layer went through (see updates_source)
    updates_source: str  # "counted", "estimated" (optimizer.iterations) or "frozen"
    initial_share: float | None  # momentum ** updates: weight of the initial 0/1 values
    at_initial_values: bool  # moving_mean all 0 and moving_variance all 1
    mean_shift_max: float
    variance_ratio_min: float
    variance_ratio_max: float
    output_error: float
    # Under tf.distribute.MirroredStrategy each replica keeps its own moving statistics
    # (aggregation NONE); the check reads replica 0's.  For the replica that differs most from
    # replica 0: its index, its largest moving_mean difference in data standard deviations,
    # and its largest moving_variance ratio to replica 0's (>= 1, either way round).
    # What momentum ** updates is the share of: "initial" (mean 0, variance 1: seen by the
    # audit, or still there), "loaded" (the audit first saw other values: pretrained) or
    # "unknown" (the count is an estimate and nobody saw the starting values).
    starting_values: str = "unknown"
    replicas: int = 1
    replica_most_different: int | None = None
    replica_mean_shift_max: float = 0.0
    replica_variance_ratio_max: float = 1.0


@dataclass(frozen=True)
class StatisticsChange:
    """A BatchNormalization layer whose moving statistics fit() changed although it must not.

    ``reason`` is ``"training=False"`` (inside ``container``, a sub-model the model calls with
    ``training=False``: keras-team/keras#20285) or ``"trainable=False"``; ``mean_shift`` is the
    largest change of ``moving_mean``, in standard deviations of the statistics before fit.
    """

    path: str
    reason: str
    container: str | None
    mean_shift: float


@dataclass
class BNConsistencyReport:
    """The check's verdict.  ``str(report)`` is what a failing test shows."""

    passed: bool
    cause: str | None  # "batchnorm", "other" or None when passed
    fit_metrics: dict[str, float]
    inference_metrics: dict[str, float]
    train_mode_metrics: dict[str, float]
    layers: list[LayerDiagnosis]  # ranked: largest output_error first
    recalibrated_metrics: dict[str, float] | None = None
    comparisons: list[MetricComparison] = field(default_factory=list)
    tolerance: Tolerance = field(default_factory=Tolerance)
    model_name: str = ""
    samples: int = 0
    batches: int = 0
    batch_size: int | None = None
    recalibration_closes_gap: bool | None = None
    notes: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    statistics_changed: list[StatisticsChange] = field(default_factory=list)  # seen by the audit/callback

    @property
    def failing_metrics(self) -> list[str]:
        return [c.name for c in self.comparisons if not c.inference_agrees]

    def __str__(self) -> str:
        return "\n".join(_render(self))


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3g}"
    return f"{value:.4f}"


def _verdict(c: MetricComparison) -> str:
    if c.explained_by_training_layers:
        return "ok: Dropout/training-only layers, not BatchNormalization (see notes)"
    if c.inference_agrees:
        better = c.direction is not None and (
            (c.direction == "lower" and c.inference < c.fit) or (c.direction == "higher" and c.inference > c.fit)
        )
        return "ok (inference better)" if better and abs(c.inference - c.fit) > c.allowed else "ok"
    gap = abs(c.inference - c.fit)
    return f"FAIL: inference off by {fmt(gap)} (allowed {fmt(c.allowed)})"


def _metric_table(report: BNConsistencyReport) -> list[str]:
    bn_only = any(c.bn_only is not None for c in report.comparisons)
    headers = ["metric", "fit (last epoch)", "train mode", *(["BN-only train"] if bn_only else []), "inference",
               "recalibrated", ""]
    rows = [
        [c.name, fmt(c.fit), fmt(c.train_mode), *([fmt(c.bn_only)] if bn_only else []), fmt(c.inference),
         fmt(c.recalibrated), _verdict(c)]
        for c in report.comparisons
    ]
    return _table(headers, rows, right=tuple(range(1, len(headers) - 1)))


def _layer_row(rank: int, layer: LayerDiagnosis) -> list[str]:
    if layer.updates_source == "frozen":
        left = "frozen"
    elif layer.initial_share is None:
        left = "?"
    else:
        how = "" if layer.updates_source == "counted" else "~"
        of = " of loaded" if layer.starting_values == "loaded" else ""
        left = f"{layer.initial_share:.0%}{of} ({how}{layer.updates} updates)"
    if layer.at_initial_values:
        left = "100% (never updated)"
    return [
        str(rank),
        f"{layer.output_error:.2f}",
        f"{layer.mean_shift_max:.2f}",
        f"{layer.variance_ratio_min:.2g}..{layer.variance_ratio_max:.2g}",
        "yes" if layer.frozen else "no",
        f"{layer.momentum:g}",
        left,
        layer.path,
    ]


def _layer_table(report: BNConsistencyReport) -> list[str]:
    headers = ["#", "output error", "mean shift", "var ratio", "frozen", "momentum", "initial left", "layer"]
    shown = report.layers[:SHOWN_LAYERS]
    lines = _table(headers, [_layer_row(i + 1, layer) for i, layer in enumerate(shown)], right=(0, 1, 2, 3))
    if len(report.layers) > len(shown):
        lines.append(f"  ... and {len(report.layers) - len(shown)} more (report.layers has them all)")
    return lines


def _table(headers: list[str], rows: list[list[str]], right: tuple[int, ...]) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  " + "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    return [line(headers), *[line(r) for r in rows]]


def _render(report: BNConsistencyReport) -> list[str]:
    verdict = "passed" if report.passed else f"FAILED (cause: {report.cause})"
    frozen = sum(layer.frozen for layer in report.layers)
    batch = f", batch_size {report.batch_size}" if report.batch_size else ""
    lines = [
        f"BatchNormalization consistency check {verdict}",
        f"model {report.model_name!r}: {report.samples} samples in {report.batches} {_plural(report.batches, 'batch', 'batches')}{batch}; "
        f"{len(report.layers)} BatchNormalization layers ({frozen} frozen)",
        f"agree when |value - fit| <= {report.tolerance.atol:g} + {report.tolerance.rtol:g} * |fit|; "
        "better than fit always agrees for loss and known metrics",
        "",
        *_metric_table(report),
    ]
    if report.layers:
        lines += [
            "",
            "BatchNormalization layers, most off first (output error: RMS difference of the output normalized "
            "with the moving statistics vs the data's, in output standard deviations; mean shift in data "
            "standard deviations; var ratio = moving_variance / data variance):",
            *_layer_table(report),
        ]
    for title, items in (("Notes", report.notes), ("Fix", report.advice)):
        if items:
            lines += ["", f"{title}:"]
            lines += [f"  - {item}" for item in items]
    return lines


class BNConsistencyError(AssertionError):
    """Raised when the check fails; ``.report`` holds the :class:`BNConsistencyReport`."""

    def __init__(self, report: BNConsistencyReport):
        super().__init__(str(report))
        self.report = report
