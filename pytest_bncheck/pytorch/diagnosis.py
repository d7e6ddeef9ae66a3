"""Per-module diagnosis (running statistics vs the data) and the fixes that apply, for torch.

The data's statistics are the pooled moments of each module's inputs in the BN-only training
view (BatchNorm in training mode, dropout off as at inference; :mod:`.passes`); the variance
compared with ``running_var`` is the unbiased ``M2 / (n - 1)``, the way PyTorch stores it.  The
gap measures are those of :class:`~pytest_bncheck.report.LayerDiagnosis`
(:func:`pytest_bncheck.stats.statistics_gap`).

PyTorch's running statistics start at mean 0 / variance 1 and move by
``running = (1 - momentum) * running + momentum * batch`` on every training-mode forward, so
after ``num_batches_tracked`` of them the initial values keep the weight
``(1 - momentum) ** num_batches_tracked``; with ``momentum=None`` the running statistics are the
cumulative average of every batch seen, and the initial values are gone after the first.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

from pytest_bncheck.pytorch._torch import torch
from pytest_bncheck.pytorch.modules import BatchNormModule
from pytest_bncheck.pytorch.report import NO_RUNNING_STATS, RECALIBRATED, TorchLayerDiagnosis, TorchMetricComparison
from pytest_bncheck.report import fmt
from pytest_bncheck.stats import Moments, statistics_gap

#: Share of the initial values above which running statistics count as unconverged.
UNCONVERGED_SHARE = 0.05

#: module -> num_batches_tracked that recalibrate_batchnorm wrote: its statistics hold no
#: initial values any more, whatever (1 - momentum) ** num_batches_tracked says.
RECALIBRATED_AT: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()


def unbiased_variance(moments: Moments):
    """``M2 / (n - 1)``: the population variance the way ``running_var`` stores it."""
    return moments.m2 / max(moments.count - 1.0, 1.0)


def initial_share(momentum: float | None, batches: int) -> float:
    if momentum is None:
        return 1.0 if batches == 0 else 0.0
    return (1.0 - momentum) ** batches


def batches_needed(momentum: float, share: float = 0.01) -> int:
    """Training batches after which ``(1 - momentum) ** n`` drops below ``share``."""
    if momentum >= 1.0:
        return 1
    return math.ceil(math.log(share) / math.log(1.0 - momentum)) if momentum > 0 else 0


def diagnose(ref: BatchNormModule, moments: Moments) -> TorchLayerDiagnosis:
    """Compare ``ref``'s running statistics with the pooled ``moments`` of its inputs."""
    t = torch()
    module = ref.module
    tracked = module.num_batches_tracked
    batches = None if tracked is None else int(tracked)
    common = dict(
        path=ref.label, frozen=not ref.trains, nested=False, momentum=module.momentum, epsilon=float(module.eps),
        channels=int(module.num_features), updates=batches, track_running_stats=ref.tracks,
        affine=bool(module.affine), kind=type(module).__name__,
        params_frozen_in_train_mode=ref.updates and ref.params_frozen,
    )
    if not ref.tracks:
        return TorchLayerDiagnosis(
            **common, updates_source=NO_RUNNING_STATS, initial_share=None, at_initial_values=False,
            mean_shift_max=0.0, variance_ratio_min=1.0, variance_ratio_max=1.0, output_error=0.0,
        )
    running_mean = module.running_mean.detach().to("cpu", t.float64)
    running_var = module.running_var.detach().to("cpu", t.float64)
    shift, ratio_min, ratio_max, error = statistics_gap(
        running_mean, running_var, moments.mean.cpu(), unbiased_variance(moments).cpu(), float(module.eps)
    )
    recalibrated = module in RECALIBRATED_AT and batches is not None and batches >= RECALIBRATED_AT[module]
    if not ref.trains:
        source, share = "frozen", None
    elif recalibrated:
        source, share = RECALIBRATED, 0.0
    else:
        source, share = "counted", initial_share(module.momentum, batches or 0)
    return TorchLayerDiagnosis(
        **common,
        updates_source=source,
        initial_share=share,
        at_initial_values=bool((running_mean == 0).all() and (running_var == 1).all()),
        mean_shift_max=shift, variance_ratio_min=ratio_min, variance_ratio_max=ratio_max, output_error=error,
    )


def decide_cause(comparisons: list[TorchMetricComparison], has_batchnorm: bool) -> str | None:
    """None when inference agrees everywhere; "batchnorm" when BN-only train mode agrees with
    the reference on every failing metric (BN-only and inference differ only in the statistics
    BatchNorm normalizes with), else "other"."""
    failing = [c for c in comparisons if not c.inference_agrees]
    if not failing:
        return None
    if has_batchnorm and all(c.bn_only_agrees for c in failing):
        return "batchnorm"
    return "other"


def notes_for(layers: list[TorchLayerDiagnosis]) -> list[str]:
    notes = []
    updating = [layer for layer in layers if layer.updates_source == "counted"]
    if updating:
        notes.append(
            "'initial left' = (1 - momentum) ** num_batches_tracked (0 after one batch for momentum=None, a "
            "cumulative average): num_batches_tracked counts every training-mode forward since the statistics were "
            "reset, and a loaded checkpoint carries its own count and statistics, which are not initial values"
        )
    untracked = [layer.path for layer in layers if not layer.track_running_stats]
    if untracked:
        notes.append(
            f"{_count(untracked, 'module')} with track_running_stats=False ({', '.join(untracked[:3])}): they normalize "
            "with the batch's statistics at inference too, so they never disagree with training, but their outputs "
            "depend on what else is in the batch"
        )
    stale = [layer for layer in layers if layer.frozen and layer.track_running_stats and layer.output_error >= 0.5]
    if stale:
        notes.append(
            f"{_count(stale, 'module')} in eval() during training with running statistics far from this data (largest "
            f"output error {stale[0].output_error:.2f}, {stale[0].path}): consistent while they stay in eval(), "
            "since training normalizes with them too"
        )
    return notes


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _gap(c: TorchMetricComparison, reference: str) -> str:
    return f"{c.name} {fmt(c.fit)} {reference}, {fmt(c.inference)} at inference, {fmt(c.recalibrated)} recalibrated"


def advise(
    cause: str | None,
    comparisons: list[TorchMetricComparison],
    layers: list[TorchLayerDiagnosis],
    closes_gap: bool | None,
    reference: str = "fit",
) -> list[str]:
    """The fixes that apply, most direct first; ``reference`` is "fit" or "bn_only"."""
    if cause == "other":
        return [
            "BN-only train mode (batch statistics, every other module in eval()) shares the gap, so BatchNorm does not "
            "explain it: check that fit_metrics are the last epoch's, averaged over samples, and that the data and "
            "batch size given here are the training ones, and look for modules other than BatchNorm that behave "
            "differently in training"
        ]
    if cause != "batchnorm":
        return []
    failing = [c for c in comparisons if not c.inference_agrees]
    probe = "; ".join(_gap(c, "at fit" if reference == "fit" else "in BN-only train mode") for c in failing)
    if closes_gap:
        advice = [
            "recalibrate the running statistics on the training data: pytest_bncheck.recalibrate_batchnorm(model, "
            f"data) closes the gap here ({probe})"
        ]
    else:
        advice = [f"recalibrating the running statistics on this data does not fully close the gap ({probe})"]
    unconverged = [
        layer for layer in layers
        if not layer.frozen and layer.track_running_stats and layer.momentum is not None
        and (layer.at_initial_values or (layer.initial_share or 0.0) >= UNCONVERGED_SHARE)
    ]
    if unconverged:
        worst = max(unconverged, key=lambda layer: layer.initial_share or 1.0)
        share = 1.0 if worst.at_initial_values else worst.initial_share
        advice.append(
            f"the running statistics have not converged: momentum {worst.momentum:g} after {worst.updates} batches "
            f"leaves {share:.0%} of their initial values (mean 0, variance 1) in {_count(unconverged, 'module')}; train "
            f"longer (at momentum {worst.momentum:g}, {batches_needed(worst.momentum)} batches leave < 1%)"
            + (f", raise the momentum (PyTorch's momentum is the weight of the new batch: the default 0.1 needs "
               f"{batches_needed(0.1)})" if worst.momentum < 0.1 else "")
            + ", or recalibrate after training"
        )
    frozen = [layer for layer in layers if layer.params_frozen_in_train_mode]
    if frozen:
        advice.append(
            f"{_count(frozen, 'BatchNorm module')} with frozen parameters (requires_grad=False) run in training mode, "
            f"so their running statistics still change on every training forward ({frozen[0].path}, ...): "
            "requires_grad does not stop that; put the frozen part in eval() after each model.train() (e.g. "
            "backbone.eval()), or replace them with torchvision.ops.FrozenBatchNorm2d"
        )
    return advice
