"""The report of a torch model: the shared report types, with PyTorch's extra facts.

:class:`TorchBNConsistencyReport` *is* a :class:`~pytest_bncheck.report.BNConsistencyReport`
(same fields, same verdict, ``BNConsistencyError`` carries it), with a fourth number per metric
(BN-only train mode) and per-layer facts only PyTorch has: ``momentum=None`` (cumulative
average), ``num_batches_tracked``, ``track_running_stats=False``, ``affine``, and parameters
frozen while the module is in training mode.  PyTorch's ``momentum`` is the weight of the *new*
batch (``running = (1 - momentum) * running + momentum * batch``), Keras's the weight of the old
value; ``initial_share`` is ``(1 - momentum) ** num_batches_tracked`` here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_bncheck.report import (
    SHOWN_LAYERS,
    BNConsistencyReport,
    LayerDiagnosis,
    MetricComparison,
    _table,
    _verdict,
    fmt,
)

#: updates_source of a module without running statistics (track_running_stats=False).
NO_RUNNING_STATS = "no running statistics"
#: updates_source of a module whose statistics recalibrate_batchnorm wrote (no initial values left).
RECALIBRATED = "recalibrated"


@dataclass(frozen=True)
class TorchMetricComparison(MetricComparison):
    bn_only: float | None = None  # BatchNorm in training mode, every other module in eval()
    bn_only_agrees: bool | None = None


@dataclass(frozen=True)
class TorchLayerDiagnosis(LayerDiagnosis):
    """``momentum`` is None for a cumulative average; ``updates`` is ``num_batches_tracked``;
    ``frozen`` means in ``eval()`` while the model trains (normalizes with its running
    statistics in training too); the variance compared is the data's unbiased variance, the way
    ``running_var`` stores it."""

    track_running_stats: bool = True
    affine: bool = True
    params_frozen_in_train_mode: bool = False  # requires_grad=False yet updating (the BN101 situation)
    kind: str = "BatchNorm2d"


@dataclass
class TorchBNConsistencyReport(BNConsistencyReport):
    bn_only_metrics: dict[str, float] | None = None
    reference: str = "fit"  # "fit" (fit_metrics given) or "bn_only" (compared with BN-only train mode)
    training_view: str = ""

    def __str__(self) -> str:
        return "\n".join(render(self))


def _momentum(layer: TorchLayerDiagnosis) -> str:
    return "None (cumulative)" if layer.momentum is None else f"{layer.momentum:g}"


def _initial_left(layer: TorchLayerDiagnosis) -> str:
    if layer.updates_source == NO_RUNNING_STATS:
        return "-"
    if layer.at_initial_values:
        return "100% (never updated)"
    if layer.initial_share is None:
        return "?"
    return f"{layer.initial_share:.0%}" + (" (recalibrated)" if layer.updates_source == RECALIBRATED else "")


def _mode(layer: TorchLayerDiagnosis) -> str:
    if not layer.track_running_stats:
        return "batch stats always"
    if layer.frozen:
        return "eval"
    return "train, params frozen" if layer.params_frozen_in_train_mode else "train"


def _layer_rows(layers: list[TorchLayerDiagnosis]) -> list[list[str]]:
    rows = []
    for rank, layer in enumerate(layers, 1):
        tracked = layer.updates_source != NO_RUNNING_STATS
        rows.append([
            str(rank),
            f"{layer.output_error:.2f}" if tracked else "-",
            f"{layer.mean_shift_max:.2f}" if tracked else "-",
            f"{layer.variance_ratio_min:.2g}..{layer.variance_ratio_max:.2g}" if tracked else "-",
            _mode(layer),
            _momentum(layer),
            "-" if layer.updates is None else str(layer.updates),
            _initial_left(layer),
            f"{layer.path} ({layer.kind}{'' if layer.affine else ', affine=False'})",
        ])
    return rows


def render(report: TorchBNConsistencyReport) -> list[str]:
    verdict = "passed" if report.passed else f"FAILED (cause: {report.cause})"
    in_eval = sum(layer.frozen for layer in report.layers)
    untracked = sum(not layer.track_running_stats for layer in report.layers)
    batch = f", batch_size {report.batch_size}" if report.batch_size else ""
    counts = f"{len(report.layers)} BatchNorm {'module' if len(report.layers) == 1 else 'modules'}"
    extra = [f"{in_eval} in eval() while training"] if in_eval else []
    extra += [f"{untracked} without running statistics"] if untracked else []
    if extra:
        counts += f" ({', '.join(extra)})"
    reference = "fit" if report.reference == "fit" else "BN-only train mode"
    lines = [
        f"BatchNorm consistency check {verdict}",
        f"model {report.model_name!r} (PyTorch): {report.samples} samples in {report.batches} "
        f"{'batch' if report.batches == 1 else 'batches'}{batch}; {counts}",
        f"train mode = {report.training_view}",
        f"inference is compared with {reference}: agree when |value - reference| <= {report.tolerance.atol:g} + "
        f"{report.tolerance.rtol:g} * |reference|; better always agrees for loss and known metrics",
        "",
    ]
    first = "fit (last epoch)" if report.reference == "fit" else "fit"
    headers = ["metric", first, "train mode", "BN-only train", "inference", "recalibrated", ""]
    rows = [
        [
            c.name,
            fmt(c.fit) if report.reference == "fit" else "-",
            fmt(c.train_mode),
            fmt(getattr(c, "bn_only", None)),
            fmt(c.inference),
            fmt(c.recalibrated),
            _verdict(c),
        ]
        for c in report.comparisons
    ]
    lines += _table(headers, rows, right=(1, 2, 3, 4, 5))
    if report.layers:
        shown = report.layers[:SHOWN_LAYERS]
        lines += [
            "",
            "BatchNorm modules, most off first (output error: RMS difference of the output normalized with the "
            "running statistics vs the data's, in output standard deviations; mean shift in data standard "
            "deviations; var ratio = running_var / data variance; initial left = share of the initial mean 0 / "
            "variance 1 still in the running statistics):",
            *_table(
                ["#", "output error", "mean shift", "var ratio", "in training", "momentum", "batches tracked",
                 "initial left", "module"],
                _layer_rows(shown),
                right=(0, 1, 2, 3, 6),
            ),
        ]
        if len(report.layers) > len(shown):
            lines.append(f"  ... and {len(report.layers) - len(shown)} more (report.layers has them all)")
    for title, items in (("Notes", report.notes), ("Fix", report.advice)):
        if items:
            lines += ["", f"{title}:", *[f"  - {item}" for item in items]]
    return lines
