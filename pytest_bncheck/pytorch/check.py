"""``check_bn_consistency`` for a ``torch.nn.Module``: do its ``eval()`` numbers match training?

Five numbers per metric (``loss`` from ``loss_fn`` and every metric), see :mod:`.passes`:

1. **fit**: ``fit_metrics``, what the training loop reported for its last epoch (optional);
2. **train mode**: the final weights in the training view (batch statistics, dropout on),
   nothing updated;
3. **BN-only train mode**: BatchNorm as in training, every other module in ``eval()``;
4. **inference**: ``eval()``, the running statistics;
5. **recalibrated**: inference with the running statistics replaced by the exact population
   statistics of each module's inputs (a copy: the model is not written).

The check fails when inference disagrees with fit (better is fine for metrics of known
direction, :mod:`pytest_bncheck.metrics`); without ``fit_metrics`` inference is compared with
BN-only train mode, which differs from it only in the statistics BatchNorm normalizes with.
The cause is ``"batchnorm"`` when BN-only train mode agrees with the reference on every failing
metric, ``"other"`` when it shares the gap.  Under ``torch.distributed`` every rank must call
the check; moments and metrics are pooled over all ranks (:mod:`.distributed`).

Cost, under ``no_grad``: one read of the data with three forward passes per batch (two when no
module besides BatchNorm acts differently in training); when inference disagrees, a second read
with one forward pass per batch for the recalibration probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_bncheck.errors import BNCheckInputError, BNCheckTypeError
from pytest_bncheck.metrics import agrees, direction, refuse_diverged, resolve
from pytest_bncheck.pytorch.data import make_batches
from pytest_bncheck.pytorch.diagnosis import advise, decide_cause, diagnose, notes_for, unbiased_variance
from pytest_bncheck.pytorch.distributed import (
    cpu_sync_batchnorm,
    pool_moments,
    pool_sums,
    require_lockstep,
    world_size,
)
from pytest_bncheck.pytorch.metrics import resolve_metrics
from pytest_bncheck.pytorch.modules import (
    BatchNormModule,
    find_batchnorm,
    has_other_training_behaviour,
    model_device,
    training_view,
    validate_model,
)
from pytest_bncheck.pytorch.passes import Runner
from pytest_bncheck.pytorch.report import TorchBNConsistencyReport, TorchMetricComparison
from pytest_bncheck.pytorch.state import preserved
from pytest_bncheck.report import BNConsistencyError
from pytest_bncheck.stats import Moments


def check_bn_consistency(
    model: Any,
    data: Any,
    y: Any = None,
    *,
    loss_fn: Any = None,
    metrics: Any = None,
    fit_metrics: dict[str, float] | None = None,
    batch_size: int | None = None,
    device: Any = None,
    atol: float | None = None,
    rtol: float | None = None,
    raise_on_failure: bool = True,
) -> TorchBNConsistencyReport:
    """Check that ``model``'s ``eval()`` metrics on ``data`` match training's.

    ``data`` is a DataLoader (or any re-iterable) of ``(inputs, targets)`` batches, or tensors
    ``(x, y)`` / ``x`` with ``y=``, cut into ``batch_size`` batches (give the training batch
    size: batch statistics depend on it).  ``loss_fn(output, target)`` and the ``metrics``
    (``name -> callable(output, target)``, or ``"accuracy"``) return batch means.
    ``fit_metrics`` is what training reported for its last epoch.  Raises
    :class:`~pytest_bncheck.report.BNConsistencyError` when the check fails and
    ``raise_on_failure``; bad input raises :class:`~pytest_bncheck.errors.BNCheckInputError`.
    The model is left bit-identical (parameters, buffers, ``requires_grad``, ``.grad``,
    ``training`` flags) and the global RNG state is restored.
    """
    __tracebackhide__ = True
    report = _run(model, data, y, loss_fn, metrics, fit_metrics, batch_size, device, {"atol": atol, "rtol": rtol})
    if raise_on_failure and not report.passed:
        raise BNConsistencyError(report)
    return report


def validate_fit_metrics(fit_metrics: Any, names: list[str]) -> dict[str, float]:
    """The fit-time numbers of the metrics computed here (others, such as a learning rate, are
    left out; the report lists them)."""
    if fit_metrics is None:
        return {}
    if not isinstance(fit_metrics, dict):
        raise BNCheckTypeError(f"fit_metrics must be a dict of name -> number, got {type(fit_metrics).__name__}")
    if not fit_metrics:
        raise BNCheckInputError("fit_metrics is empty: pass the last epoch's numbers, or leave it out")
    common = [name for name in fit_metrics if name in names]
    if not common:
        raise BNCheckInputError(
            f"none of fit_metrics ({', '.join(map(str, fit_metrics))}) is computed here ({', '.join(names)}): pass "
            "loss_fn=/metrics= under the same names"
        )
    fit = {}
    for name in common:
        try:
            fit[name] = float(fit_metrics[name])
        except (TypeError, ValueError):
            kind = type(fit_metrics[name]).__name__
            raise BNCheckTypeError(f"fit_metrics[{name!r}] must be a number, got {kind}") from None
    refuse_diverged(fit)
    return fit


def recalibrated_buffers(refs: list[BatchNormModule], moments: list[Moments | None]) -> dict[str, Any]:
    """``functional_call`` buffers: the pooled statistics of every module that updates in training."""
    buffers = {}
    for ref, m in zip(refs, moments):
        if ref.updates and m is not None and m.count > 0:
            stored = ref.module.running_mean
            buffers[ref.key("running_mean")] = m.mean.to(stored.device, stored.dtype)
            buffers[ref.key("running_var")] = unbiased_variance(m).to(stored.device, stored.dtype)
    return buffers


def _pool_counts(
    sums: dict[str, list[float]], counts: list[float]
) -> tuple[dict[str, list[float]], list[float], list[float]]:
    """Metric sums and counts added over the ranks (one gather), maxima of the counts too."""
    names = list(sums)
    flat = [v for name in names for v in sums[name]] + counts
    total, maxima = pool_sums(flat)
    width = len(next(iter(sums.values()))) if sums else 0
    pooled = {name: total[i * width : (i + 1) * width] for i, name in enumerate(names)}
    return pooled, total[len(names) * width :], maxima[len(names) * width :]


def compare(fit: dict[str, float], numbers: dict[str, dict[str, float]], tolerance: Any) -> list[TorchMetricComparison]:
    comparisons = []
    for name in numbers["inference"]:
        if fit and name not in fit:
            continue
        reference = fit[name] if fit else numbers["bn_only"][name]
        recal = numbers["recalibrated"].get(name) if numbers.get("recalibrated") else None

        def ok(value: float | None) -> bool | None:
            return None if value is None else agrees(value, reference, name, tolerance)

        comparisons.append(
            TorchMetricComparison(
                name=name, direction=direction(name), fit=reference, train_mode=numbers["train"][name],
                inference=numbers["inference"][name], recalibrated=recal, allowed=tolerance.allowed(reference),
                inference_agrees=ok(numbers["inference"][name]), train_mode_agrees=ok(numbers["train"][name]),
                recalibrated_agrees=ok(recal), bn_only=numbers["bn_only"][name],
                bn_only_agrees=ok(numbers["bn_only"][name]),
            )
        )
    return comparisons


@dataclass
class _Measured:
    """The numbers of every view, pooled over ranks, and the BN-only view's moments."""

    numbers: dict[str, dict[str, float] | None]
    comparisons: list[TorchMetricComparison]
    moments: list[Moments | None]
    batches: int
    samples: int
    largest_batch: int
    probe_skipped: bool  # inference agreed, so the recalibration probe was not run


def _measure(runner: Runner, batches: Any, refs: list[BatchNormModule], fit: dict[str, float], tol: Any) -> _Measured:
    """The first read (three views), and the recalibration probe when inference disagrees."""
    names = list(runner.metrics)
    first = runner.check_pass(batches)
    sums = {name: [first.train[name], first.bn_only[name], first.inference[name]] for name in names}
    sums, counts, maxima = _pool_counts(sums, [first.batches, first.samples, first.largest_batch])
    moments = pool_moments(first.moments, [int(r.module.num_features) for r in refs])
    if counts[0] == 0:
        raise BNCheckInputError("the data yielded no batches: pass the data the model was trained on")
    numbers: dict[str, dict[str, float] | None] = {
        view: {n: sums[n][i] / counts[1] for n in names} for i, view in enumerate(("train", "bn_only", "inference"))
    }
    numbers["recalibrated"] = None
    comparisons = compare(fit, numbers, tol)
    buffers = recalibrated_buffers(refs, moments)
    # The probe answers "would recalibrating fix it?": asked only when something disagrees (the
    # same decision on every rank, since the numbers are pooled).
    agree = all(c.inference_agrees for c in comparisons)
    if buffers and not agree:
        probe, probe_count = runner.inference_pass(batches, buffers)
        pooled, probe_samples, _ = _pool_counts({n: [v] for n, v in probe.items()}, [probe_count])
        numbers["recalibrated"] = {n: v[0] / probe_samples[0] for n, v in pooled.items()}
        comparisons = compare(fit, numbers, tol)
    return _Measured(numbers, comparisons, moments, int(counts[0]), int(counts[1]), int(maxima[2]),
                     bool(buffers) and agree)


def _notes(fit_metrics: Any, fit: dict[str, float], measured: _Measured, separate: bool,
           refs: list[BatchNormModule]) -> list[str]:
    notes = []
    ignored = [str(name) for name in (fit_metrics or {}) if name not in fit]
    if ignored:
        notes.append(f"fit_metrics not computed here, left out: {', '.join(ignored)}")
    if not fit:
        notes.append(
            "no fit_metrics given: inference is compared with BN-only train mode (the same weights normalizing with "
            "batch statistics); pass fit_metrics= (the last epoch's numbers) to compare with training as reported"
        )
    if measured.probe_skipped:
        notes.append("inference agrees: the recalibration probe was not run ('recalibrated' is '-')")
    if not separate:
        notes.append(
            "no module besides BatchNorm behaves differently in training here: BN-only train mode is train mode"
        )
    if world_size() > 1:
        notes.append(f"pooled over {world_size()} ranks of torch.distributed: every rank gets this report")
    unreached = [ref.label for ref, m in zip(refs, measured.moments) if m is None]
    if unreached:
        notes.append(
            f"{len(unreached)} BatchNorm modules were not called by the forward pass ({', '.join(unreached[:3])}): "
            "not diagnosed"
        )
    return notes


def _run(model: Any, data: Any, y: Any, loss_fn: Any, metrics: Any, fit_metrics: Any, batch_size: Any,
         device: Any, tolerance: dict) -> TorchBNConsistencyReport:
    """The check without raising on failure (see :func:`check_bn_consistency`)."""
    inner = validate_model(model)
    tol = resolve(tolerance)
    functions = resolve_metrics(loss_fn, metrics)
    fit = validate_fit_metrics(fit_metrics, list(functions))
    target = model_device(inner, device)
    view, view_text = training_view(inner)
    refs = find_batchnorm(inner, view)
    batches = make_batches(data, y, batch_size, target, need_targets=True)
    separate = has_other_training_behaviour(inner, refs)
    runner = Runner(inner, refs, view, functions, separate)
    require_lockstep([ref.module for ref in refs], batches)
    with preserved(inner, target), cpu_sync_batchnorm([ref.module for ref in refs]):
        measured = _measure(runner, batches, refs, fit, tol)
    comparisons, numbers = measured.comparisons, measured.numbers
    cause = decide_cause(comparisons, bool(refs))
    reached = [(ref, m) for ref, m in zip(refs, measured.moments) if m is not None]
    layers = sorted((diagnose(ref, m) for ref, m in reached), key=lambda d: d.output_error, reverse=True)
    notes = _notes(fit_metrics, fit, measured, separate, refs)
    failing = [c for c in comparisons if not c.inference_agrees]
    passed = cause is None
    if not refs:
        differs = ", ".join(c.name for c in failing)
        why = f" (inference differs from the reference on {differs}, for another reason)" if failing else ""
        notes.insert(0, "the model has no BatchNorm module: nothing for this check to find" + why)
        passed, cause = True, None
    closes = all(c.recalibrated_agrees for c in failing) if failing and numbers["recalibrated"] is not None else None
    reference = "fit" if fit else "bn_only"
    return TorchBNConsistencyReport(
        passed=passed, cause=cause, fit_metrics=fit, inference_metrics=numbers["inference"],
        train_mode_metrics=numbers["train"], layers=layers, recalibrated_metrics=numbers["recalibrated"],
        comparisons=comparisons, tolerance=tol, model_name=type(inner).__name__, samples=measured.samples,
        batches=measured.batches, batch_size=batch_size or measured.largest_batch, recalibration_closes_gap=closes,
        notes=notes + notes_for(layers), advice=advise(cause, comparisons, layers, closes, reference),
        bn_only_metrics=numbers["bn_only"], reference=reference, training_view=view_text,
    )
