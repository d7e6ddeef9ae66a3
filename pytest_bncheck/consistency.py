"""``check_bn_consistency``: do a model's inference numbers on its training data match fit's?

Three numbers per metric (``loss`` and every compiled metric, keyed as in ``history.history``):

1. **fit**: the last epoch of ``history``, a running mean in training mode while the
   weights moved;
2. **train mode**: the final weights in training mode (batch statistics, dropout on), without
   updating anything;
3. **inference**: the final weights in inference mode (moving statistics), as ``evaluate``.

The check fails when inference disagrees with fit (better is fine for metrics of known
direction; see :mod:`pytest_bncheck.metrics`).  The cause is ``"batchnorm"`` when training
mode agrees with fit on every failing metric (the only thing that changed between 2 and 3 is
the statistics BatchNormalization normalizes with) and ``"other"`` when training mode shares
the gap.  A fourth number, inference after recalibrating a *copy* of the moving statistics
(the exact population statistics of each layer's inputs, see :mod:`pytest_bncheck.stats`),
says whether :func:`~pytest_bncheck.recalibrate.recalibrate_batchnorm` would close the gap.

How the cause is decided when inference fails: with Dropout or other training-only layers, a
BN-only training pass (batch statistics, everything else in inference) separates Dropout's
share of the gap from BatchNormalization's; when training mode in data order does not
reproduce fit, seeded shuffled batch orders are tried (fit shuffles arrays), and the report
says which order it used.  The audit and the callback add what they saw fit() do to statistics
it must not touch (keras#20285).

Cost: two reads of the data, three forward passes per batch (training mode with the moments,
inference, inference recalibrated), compiled per backend (``tf.function``, ``jax.jit``; eager on
torch); no backward pass.  The BN-only pass and the shuffled orders run only on the failing path.
"""

from __future__ import annotations

from typing import Any

from pytest_bncheck import _keras, arguments, backends
from pytest_bncheck.data import data_kind, make_batches
from pytest_bncheck.diagnosis import advise, diagnose_layer, override_advice, replica_notes, update_notes
from pytest_bncheck.errors import BNCheckInputError, BNCheckTypeError
from pytest_bncheck.layers import BatchNormRef, find_batchnorm_layers
from pytest_bncheck.metrics import agrees, direction, direction_of, refuse_diverged, resolve
from pytest_bncheck.passes import passes_for
from pytest_bncheck.recalibrate import SHUFFLE_SEED
from pytest_bncheck.report import BNConsistencyError, BNConsistencyReport, MetricComparison, StatisticsChange, fmt

DEFAULT_BATCH_SIZE = 32  # Keras's default for arrays when fit() is given no batch_size


def check_bn_consistency(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    history: Any = None,
    batch_size: int | None = None,
    steps: int | None = None,
    sample_weight: Any = None,
    class_weight: dict | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    raise_on_failure: bool = True,
    shuffle: bool = True,
) -> BNConsistencyReport:
    """Check that ``model``'s inference-mode metrics on ``x``/``y`` match its fit-time ones.

    Give ``batch_size``, ``steps``, ``class_weight`` and ``shuffle`` as they were given to
    ``fit`` (training mode statistics depend on the batch size and on which samples share a
    batch; ``History`` records neither).  ``history`` is
    the ``History`` returned by ``fit`` (default: the model's last one).  Raises
    :class:`BNConsistencyError` (an ``AssertionError`` carrying ``.report``) when the check
    fails and ``raise_on_failure`` is true; bad input raises
    :class:`~pytest_bncheck.errors.BNCheckInputError`.  The model is left bit-identical.
    """
    __tracebackhide__ = True
    arguments.flag("raise_on_failure", raise_on_failure)
    arguments.flag("shuffle", shuffle)
    report = run_check(
        model, x, y, history=history, batch_size=batch_size, steps=steps, sample_weight=sample_weight,
        class_weight=class_weight, tolerance={"atol": atol, "rtol": rtol}, shuffle=shuffle,
    )
    if raise_on_failure and not report.passed:
        raise BNConsistencyError(report)
    return report


def validate_model(model: Any, *, compiled: bool = True) -> None:
    keras = _keras.keras()
    backends.current()  # refuses a backend the check does not run on
    if not isinstance(model, keras.Model):
        raise BNCheckTypeError(
            f"model must be a Keras 3 keras.Model, got {type(model).__module__}.{type(model).__qualname__}; "
            "pass the model you trained with fit()"
        )
    if not model.built:
        raise BNCheckInputError(f"model {model.name!r} is not built: train it with fit() before checking it")
    if compiled and not (model.compiled and getattr(model, "_compile_loss", None) is not None):
        raise BNCheckInputError(
            f"model {model.name!r} is not compiled with a loss: call model.compile(loss=..., metrics=...) as "
            "for fit() before checking it"
        )


def fit_time_metrics(model: Any, history: Any) -> dict[str, float]:
    """The last epoch's training metrics of ``history`` (``val_*`` left out)."""
    history = history if history is not None else getattr(model, "history", None)
    logs = getattr(history, "history", None)
    if not isinstance(logs, dict) or not any(logs.values()):
        raise BNCheckInputError(
            f"no fit history for model {model.name!r}: call fit() first, or pass history= (the History "
            "returned by fit)"
        )
    metrics = {}
    for name, values in logs.items():
        if name.startswith("val_") or not values:
            continue
        try:
            metrics[name] = float(values[-1])
        except (TypeError, ValueError):
            continue
    refuse_diverged(metrics, " in the last epoch")
    return metrics


def compare(
    fit: dict[str, float],
    train: dict[str, float],
    inference: dict[str, float],
    recalibrated: dict[str, float] | None,
    tolerance: Any,
    directions: dict[str, str | None] | None = None,
    bn_only: dict[str, float] | None = None,
) -> list[MetricComparison]:
    """One comparison per fit-time metric; ``directions`` come from the metric objects (names
    not in it fall back to name patterns)."""
    comparisons = []
    directions = directions or {}
    for name, value in fit.items():
        if name not in inference or name not in train:
            continue
        way = directions.get(name, direction(name))
        recal = recalibrated.get(name) if recalibrated is not None else None
        alone = bn_only.get(name) if bn_only is not None else None
        inference_agrees = agrees(inference[name], value, name, tolerance, way)
        train_agrees = agrees(train[name], value, name, tolerance, way)
        comparisons.append(
            MetricComparison(
                name=name,
                direction=way,
                fit=value,
                train_mode=train[name],
                inference=inference[name],
                recalibrated=recal,
                allowed=tolerance.allowed(value),
                inference_agrees=inference_agrees,
                train_mode_agrees=train_agrees,
                recalibrated_agrees=None if recal is None else agrees(recal, value, name, tolerance, way),
                bn_only=alone,
                # Inference is as good as BatchNormalization with batch statistics alone, and training
                # mode reproduces fit: what differs is Dropout (and other training-only layers).
                explained_by_training_layers=bool(
                    not inference_agrees and train_agrees and alone is not None
                    and agrees(inference[name], alone, name, tolerance, way)
                ),
            )
        )
    return comparisons


def decide_cause(comparisons: list[MetricComparison], has_batchnorm: bool) -> str | None:
    """None when inference agrees everywhere (or differs only where Dropout explains it, see
    :func:`compare`); otherwise "batchnorm" if training mode agrees with fit on every failing
    metric (the gap opens only when moving statistics replace batch statistics), else "other"."""
    failing = [c for c in comparisons if not c.inference_agrees and not c.explained_by_training_layers]
    if not failing:
        return None
    if has_batchnorm and all(c.train_mode_agrees for c in failing):
        return "batchnorm"
    return "other"


_TRAINING_ONLY = (
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout", "GaussianNoise",
    "AlphaDropout", "ActivityRegularization",
)


def has_training_only_layers(model: Any) -> bool:
    """Whether a layer other than BatchNormalization behaves differently in training: Keras's
    dropout and noise layers, layers with a non-zero ``dropout``/``recurrent_dropout`` (RNNs,
    attention), random augmentation layers, and custom layers that take ``training``.  (Many
    built-in layers such as Dense take ``training`` without using it.)"""
    keras = _keras.keras()
    known = tuple(c for c in (getattr(keras.layers, n, None) for n in _TRAINING_ONLY) if isinstance(c, type))
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, (keras.layers.BatchNormalization, keras.Model)):
            continue
        module = type(layer).__module__
        rates = [getattr(layer, name, 0) for name in ("dropout", "recurrent_dropout", "rate")]
        if isinstance(layer, known) or any(isinstance(r, (int, float)) and r > 0 for r in rates):
            return True
        if getattr(layer, "_call_has_training_arg", False) and (
            not module.startswith("keras.") or "preprocessing" in module
        ):
            return True
    return False


def metric_directions(passes: Any) -> dict[str, str | None]:
    metrics_module = _keras.keras().metrics
    return {name: direction_of(metric, metrics_module) for name, metric in passes.metric_objects().items()}


def _update_count(
    model: Any, ref: BatchNormRef, counted: dict[int, tuple[int, bool]] | None, calls: int
) -> tuple[int | None, str, str]:
    """``(updates, source, starting values)``: training steps (counted by the audit, else
    estimated from the optimizer's step counter) times the layer's calls per step."""
    from pytest_bncheck.audit import _iterations

    if counted is not None and id(ref.layer) in counted:
        steps, loaded = counted[id(ref.layer)]
        return steps * calls, "counted", "loaded" if loaded else "initial"
    if getattr(model, "optimizer", None) is None:
        return None, "estimated", "unknown"
    return _iterations(model) * calls, "estimated", "unknown"


#: Seeds of the shuffled batch orders tried when training mode in data order misses fit; the
#: first is recalibrate_batchnorm(shuffle=True)'s.
SHUFFLE_SEEDS = (SHUFFLE_SEED, SHUFFLE_SEED + 1)


def _batch_order(passes, batches, train, comparisons, shuffled, fit, tol, directions):
    """Training-mode statistics depend on which samples share a batch, and fit() shuffles
    arrays every epoch: when training mode in data order does not reproduce fit on a metric
    where inference fails, run it on seeded shuffles too and keep the order closest to fit."""
    missed = [c.name for c in comparisons if not c.inference_agrees and not c.train_mode_agrees]
    if not missed:
        return batches, train, "data order", []

    def reproduced(result):
        return sum(agrees(result.metrics[n], fit[n], n, tol, directions.get(n, direction(n))) for n in missed)

    tried = [("data order", batches, train)]
    for seed in SHUFFLE_SEEDS:
        candidate = shuffled(seed)
        tried.append((f"shuffled (seed {seed})", candidate, passes.training_and_inference(candidate)[0]))
    best = max(tried, key=lambda t: reproduced(t[2]))  # the first of equals: data order wins ties
    shown = "; ".join(
        f"{label}: " + ", ".join(f"{n} {fmt(result.metrics[n])}" for n in missed) for label, _, result in tried
    )
    note = (
        f"training mode in data order did not reproduce fit on {', '.join(missed)} (fit: "
        + ", ".join(f"{fmt(fit[n])}" for n in missed)
        + f"); batch statistics depend on which samples share a batch and fit() shuffles arrays, so the check "
        f"also ran training mode on {len(SHUFFLE_SEEDS)} shuffled orders ({shown}) and uses {best[0]}, the "
        "closest to fit (pass shuffle=False if fit was given shuffle=False)"
    )
    return best[1], best[2], best[0], [note]


def run_check(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    history: Any = None,
    batch_size: int | None = None,
    steps: int | None = None,
    sample_weight: Any = None,
    class_weight: dict | None = None,
    tolerance: dict | None = None,
    update_counts: dict[int, tuple[int, bool]] | None = None,
    length_known: bool = False,
    statistics_changed: list[StatisticsChange] | None = None,
    shuffle: bool = True,
) -> BNConsistencyReport:
    """The check without raising; ``update_counts`` maps ``id(layer)`` to updates counted by the
    audit; ``length_known``: fit was seen reading ``x`` to its end (see :func:`make_batches`);
    ``statistics_changed``: layers whose statistics the fit changed although it must not (the
    audit and the callback see that; it fails the check even when the metrics agree)."""
    validate_model(model)
    tol = resolve(tolerance)
    fit = fit_time_metrics(model, history)
    refs = find_batchnorm_layers(model)
    batches = make_batches(
        x, y, sample_weight=sample_weight, batch_size=batch_size, steps=steps, class_weight=class_weight,
        length_known=length_known,
    )
    passes = passes_for(model, refs)
    train, infer = passes.training_and_inference(batches)
    if train.batches == 0:
        raise BNCheckInputError("the data yielded no batches: pass the data the model was trained on")
    common = [name for name in fit if name in infer.metrics]
    if not common:
        raise BNCheckInputError(
            f"none of fit's metrics ({', '.join(fit)}) is among the compiled metrics "
            f"({', '.join(infer.metrics)}): pass the History of the fit() of this model, compiled as it is now"
        )
    effective_batch = batch_size or (DEFAULT_BATCH_SIZE if _is_array_data(x) else None)
    notes: list[str] = []
    directions = metric_directions(passes)
    order = "data order"
    if shuffle and batches.arrays and refs:
        batches, train, order, order_note = _batch_order(
            passes, batches, train, compare(fit, train.metrics, infer.metrics, None, tol, directions),
            lambda seed: make_batches(
                x, y, sample_weight=sample_weight, batch_size=batch_size, steps=steps, class_weight=class_weight,
                order_seed=seed,
            ),
            fit, tol, directions,
        )
        notes += order_note
    recalibrated = None
    if refs:
        statistics = [
            (None, None) if ref.frozen else (m.mean, m.variance) for ref, m in zip(refs, train.moments)
        ]
        recalibrated = passes.inference(batches, statistics).metrics
    comparisons = compare(fit, train.metrics, infer.metrics, recalibrated, tol, directions)
    bn_only = None
    if refs and any(not c.inference_agrees for c in comparisons) and has_training_only_layers(model):
        bn_only = passes.bn_only(batches).metrics
        comparisons = compare(fit, train.metrics, infer.metrics, recalibrated, tol, directions, bn_only)
    cause = decide_cause(comparisons, bool(refs))
    layers = []
    for index, (ref, moments) in enumerate(zip(refs, train.moments)):
        updates, source, start = _update_count(model, ref, update_counts, passes.capture.calls[index])
        layers.append(diagnose_layer(ref, moments, updates, source, start))
    layers.sort(key=lambda layer: layer.output_error, reverse=True)
    passed = cause is None
    if not refs:
        notes.append(
            "the model has no BatchNormalization layer: nothing for this check to find"
            + ("" if passed else f" (inference differs from fit on {', '.join(c.name for c in comparisons if not c.inference_agrees)}, for another reason)")
        )
        passed, cause = True, None
    changed = list(statistics_changed or [])
    if changed:
        passed = False
        cause = cause or ("keras#20285" if any(c.reason == "training=False" for c in changed) else "frozen-updated")
    failing = [c for c in comparisons if not c.inference_agrees]
    closes = None
    if failing and recalibrated is not None:
        closes = all(c.recalibrated_agrees for c in failing)
    notes += update_notes(layers) + replica_notes(layers)
    explained = [c for c in comparisons if c.explained_by_training_layers]
    if explained:
        notes.append(
            "inference differs from fit on " + ", ".join(
                f"{c.name} ({fmt(c.fit)} at fit, {fmt(c.inference)} at inference)" for c in explained
            ) + ", but BatchNormalization alone in training mode (batch statistics, Dropout and other training-only "
            "layers in inference mode) gives " + ", ".join(f"{fmt(c.bn_only)}" for c in explained)
            + ", as inference does: Dropout or another training-only layer makes the difference, not BatchNormalization"
        )
    frozen_off = [layer for layer in layers if layer.frozen and layer.output_error >= 0.5]
    if frozen_off:
        notes.append(
            f"{len(frozen_off)} frozen layers' stored statistics differ from this data (largest output error "
            f"{frozen_off[0].output_error:.2f}, {frozen_off[0].path}): consistent while they stay frozen, since "
            "fit() normalizes with them too"
        )
    return BNConsistencyReport(
        passed=passed,
        cause=cause,
        fit_metrics=fit,
        inference_metrics=infer.metrics,
        train_mode_metrics=train.metrics,
        layers=layers,
        recalibrated_metrics=recalibrated,
        comparisons=comparisons,
        tolerance=tol,
        model_name=model.name,
        samples=train.samples,
        batches=train.batches,
        batch_size=effective_batch,
        recalibration_closes_gap=closes,
        notes=notes,
        advice=override_advice(changed) + advise(
            cause, comparisons, layers, closes, effective_batch, changed, shuffled=order != "data order"
        ),
        statistics_changed=changed,
    )


def _is_array_data(x: Any) -> bool:
    return data_kind(x) == "arrays"
