"""``recalibrate_batchnorm`` for a torch model: exact population statistics, written in place.

One read of the data in the BN-only training view (BatchNorm as in training, Dropout and the
like in ``eval()`` as at inference; :mod:`.passes`; nothing is updated during it) gives every
BatchNorm module's input moments at once, since in training mode no module's output depends on
its running statistics.  Per module, pooled exactly over all batches (and all ranks
under ``torch.distributed``) in float64 (Chan's combination, :mod:`pytest_bncheck.stats`):

* ``running_mean = mean`` of the inputs per channel;
* ``running_var = M2 / (n - 1)``, the unbiased population variance, which is how PyTorch stores
  it (``F.batch_norm`` feeds the unbiased batch variance into the running average);
* ``num_batches_tracked = batches`` read (the largest count of any rank), as if the running
  statistics had been accumulated from these batches: a cumulative average (``momentum=None``)
  continued later gives them that weight.

``torch.optim.swa_utils.update_bn`` instead averages the per-batch (unbiased) variances, which
drops the spread of the batch means: it underestimates the variance whenever batches differ
(and it runs with dropout on, whose masks make its result random).

Left alone: modules with ``track_running_stats=False`` (no running statistics), modules in
``eval()`` in the training view (training normalized with their stored statistics, so the
layers after them were trained on that), modules the forward never called.  Nothing is written
unless every module's statistics were computed and are finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_bncheck.errors import BNCheckInputError
from pytest_bncheck.pytorch._torch import torch
from pytest_bncheck.pytorch.data import make_batches
from pytest_bncheck.pytorch.diagnosis import RECALIBRATED_AT, diagnose, unbiased_variance
from pytest_bncheck.pytorch.distributed import cpu_sync_batchnorm, pool_moments, pool_sums, require_lockstep
from pytest_bncheck.pytorch.modules import find_batchnorm, model_device, training_view, validate_model
from pytest_bncheck.pytorch.passes import Runner
from pytest_bncheck.pytorch.state import preserved
from pytest_bncheck.recalibrate import LayerRecalibration, RecalibrationSummary


@dataclass
class TorchRecalibrationSummary(RecalibrationSummary):
    """``skipped_frozen`` lists the modules in eval() while training."""

    skipped_no_running_stats: list[str] = field(default_factory=list)
    skipped_not_called: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = super().__str__().replace("BatchNormalization layers", "BatchNorm modules")
        text = text.replace("frozen layers alone", "modules in eval() during training alone")
        for label, paths in (("track_running_stats=False", self.skipped_no_running_stats),
                             ("never called by the forward pass", self.skipped_not_called)):
            if paths:
                text += f"\n  left alone ({label}): {', '.join(paths[:5])}{' ...' if len(paths) > 5 else ''}"
        return text


def recalibrate_batchnorm(
    model: Any, data: Any, y: Any = None, *, batch_size: int | None = None, device: Any = None
) -> TorchRecalibrationSummary:
    """Recompute every updating BatchNorm module's running statistics on ``data``, in place.

    ``data`` as for :func:`~pytest_bncheck.pytorch.check.check_bn_consistency` (targets, if
    any, are ignored); give the training batch size: deeper modules' inputs depend on it,
    through the batch statistics of the modules before them.  Under ``torch.distributed`` every
    rank must call it, and every rank writes the same statistics.
    """
    t = torch()
    inner = validate_model(model)
    target = model_device(inner, device)
    view, _ = training_view(inner)
    refs = find_batchnorm(inner, view)
    summary = TorchRecalibrationSummary(type(inner).__name__, 0, 0)
    if not refs:
        return summary
    batches = make_batches(data, y, batch_size, target, need_targets=False)
    runner = Runner(inner, refs, view, {}, separate_bn_only=False)
    require_lockstep([ref.module for ref in refs], batches)
    with preserved(inner, target), cpu_sync_batchnorm([ref.module for ref in refs]):
        moments, count, samples = runner.moments_pass(batches)
        moments = pool_moments(moments, [int(r.module.num_features) for r in refs])
        (count, samples), (most, _) = pool_sums([count, samples])
    if count == 0:
        raise BNCheckInputError("the data yielded no batches: pass the data the model was trained on")
    summary.samples, summary.batches = int(samples), int(count)
    writes = []
    for ref, m in zip(refs, moments):
        if not ref.tracks:
            summary.skipped_no_running_stats.append(ref.label)
        elif not ref.trains:
            summary.skipped_frozen.append(ref.label)
        elif m is None:
            summary.skipped_not_called.append(ref.label)
        else:
            mean, variance = m.mean, unbiased_variance(m)
            if not (bool(t.isfinite(mean).all()) and bool(t.isfinite(variance).all())):
                raise BNCheckInputError(
                    f"the inputs of {ref.label} have non-finite statistics on this data (overflow or NaN in the model): "
                    "nothing was written; fix the model or the data"
                )
            writes.append((ref, diagnose(ref, m), mean, variance))
    for ref, before, mean, variance in writes:
        module = ref.module
        with t.no_grad():
            module.running_mean.copy_(mean.to(module.running_mean.device, module.running_mean.dtype))
            module.running_var.copy_(variance.to(module.running_var.device, module.running_var.dtype))
            if module.num_batches_tracked is not None:
                module.num_batches_tracked.fill_(int(most))
                RECALIBRATED_AT[module] = int(most)
        summary.recalibrated.append(
            LayerRecalibration(ref.label, before.output_error, before.mean_shift_max,
                               before.variance_ratio_min, before.variance_ratio_max)
        )
    return summary
