"""Compiled, fused passes over the data that never change the model.

Each step is one forward pass, compiled per backend (``tf.function``, ``jax.jit``; eager on
torch, see :mod:`pytest_bncheck.backends`):

* the **training-mode step** runs ``model(x, training=True)`` (batch statistics, dropout on,
  as in ``fit``) inside a ``keras.StatelessScope`` that catches every variable assignment
  (moving-average updates, seed-generator advances) and throws it away; it updates the
  compiled loss and metrics and returns each BatchNormalization layer's input moments,
  pooled in float64 afterwards (see :mod:`pytest_bncheck.stats`);
* the **inference step** runs ``model(x, training=False)`` with every layer's
  ``moving_mean``/``moving_variance`` read through the scope's state mapping from values we
  pass in, so the same compiled step measures the stored statistics and, in a second pass,
  recalibrated ones, without ever assigning to the model.

A third step, run only when the check needs it, is the **BN-only step**: ``model(x,
training=False)`` with BatchNormalization alone forced into training mode (batch statistics),
Dropout and every other layer in inference mode, to tell their shares of a gap apart.  Every
training-mode step also returns whether the batch's inputs, targets and sample weights were
finite, so NaN data is refused (naming the batch) before anything could be written.

Metric state is passed in and returned as values: the model's metric variables are mapped to
them through the scope, so ``fit``'s metric state is left alone too; a recompiled or reloaded
model's not-yet-built compiled loss and metrics are replaced, while the check runs, by copies
built outside the model (:class:`CompiledObjects`).  The model's variables are only read,
which is what makes the check leave the model bit-identical.  Layer inputs are
observed by wrapping each BatchNormalization layer's ``call`` for the duration of a pass
(the wrapper only records while a training-mode step is being traced or run); it is removed
afterwards.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from pytest_bncheck import _keras, backends
from pytest_bncheck.data import describe_mismatch
from pytest_bncheck.errors import BNCheckInputError
from pytest_bncheck.layers import BatchNormRef
from pytest_bncheck.stats import MomentAccumulator, Moments, batch_moments


@dataclass
class PassResult:
    metrics: dict[str, float]
    batches: int = 0
    samples: int = 0
    moments: list[Moments] = field(default_factory=list)


class _Capture:
    """Per-layer moments recorded while the training-mode step is traced."""

    def __init__(self, count: int):
        self.active = False
        self.force_training = False  # the BN-only pass: batch statistics, every other layer in inference
        self.records: list[list[tuple[Any, Any, Any]]] = [[] for _ in range(count)]
        self.calls: list[int] = [1] * count  # calls of each layer per forward pass, seen at trace time

    def clear(self) -> None:
        for records in self.records:
            records.clear()


_MISSING = object()


@contextmanager
def _observing_inputs(refs: list[BatchNormRef], capture: _Capture):
    """Wrap each layer's ``call`` so the training-mode trace records its input moments."""
    saved = []
    for index, ref in enumerate(refs):
        layer = ref.layer
        saved.append(layer.__dict__.get("call", _MISSING))
        original = layer.call

        def call(inputs, *args, _index=index, _original=original, _axis=layer.axis, **kwargs):
            if capture.active:
                capture.records[_index].append(batch_moments(inputs, _axis))
            if capture.force_training:
                kwargs["training"] = True
            return _original(inputs, *args, **kwargs)

        object.__setattr__(layer, "call", call)  # bypass Keras attribute tracking
    try:
        yield
    finally:
        for ref, previous in zip(refs, saved):
            if previous is _MISSING:
                object.__delattr__(ref.layer, "call")
            else:
                object.__setattr__(ref.layer, "call", previous)


class Passes:
    """The compiled steps and their state for one model (cached while the model lives).

    Every step is a function of values only: ``step(model_values, metric_values,
    statistics, data) -> (metric_values, moments, finite flags)``.  Metric state, the
    statistics the inference step normalizes with and (on JAX) every model variable go in
    through a ``keras.StatelessScope`` state mapping, and the new metric state comes out; the
    per-layer moments recorded while the step was traced come out as outputs too.  So one
    implementation compiles with ``tf.function`` and ``jax.jit`` alike (and runs eagerly on
    torch), see :mod:`pytest_bncheck.backends`.
    """

    def __init__(self, model: Any, refs: list[BatchNormRef]):
        keras = _keras.keras()
        self.backend = backends.current()
        self._model = weakref.ref(model)
        self.refs = refs
        self.compiled = CompiledObjects(model)
        self.moments = [MomentAccumulator(int(r.layer.moving_mean.shape[0])) for r in refs]
        self.capture = _Capture(len(refs))
        self._unpack = keras.utils.unpack_x_y_sample_weight
        self.metric_variables: list[Any] = []
        self.model_variables: list[Any] = []
        self._ready = False
        self._steps = {
            kind: self.backend.compile(getattr(self, f"_{kind}_step"))
            for kind in ("train", "bn_only", "infer", "moments")
        }
        self._metrics: dict[str, list[Any]] = {}
        self._statistics: list[Any] = []

    def _prepare(self, data: Any) -> None:
        """Build what the steps need outside the model, once, from the first batch."""
        if self._ready:
            return
        model = self._model()
        self.compiled.build(model, *self._unpack(data))
        with self.compiled.in_place(model):
            self.metric_variables = list(model.metrics_variables)
            self._reset_values = self._metric_reset_values(model)
        if self.backend.explicit_variables:
            metric_ids = {id(v) for v in self.metric_variables}
            self.model_variables = [v for v in model.variables if id(v) not in metric_ids]
        self._reset_all()
        self._ready = True

    # -- metric state --------------------------------------------------------------------
    def _metric_reset_values(self, model: Any) -> list[Any]:
        keras = _keras.keras()
        with keras.StatelessScope() as scope:
            for metric in model.metrics:
                metric.reset_state()
        values = []
        for variable in self.metric_variables:
            value = scope.get_current_value(variable)
            values.append(keras.ops.copy(value if value is not None else keras.ops.zeros_like(variable.value)))
        return values

    def _update_metrics(self, model: Any, x: Any, y: Any, y_pred: Any, sample_weight: Any, training: bool) -> None:
        """The compiled loss and metrics, as ``test_step`` updates them."""
        keras = _keras.keras()
        loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        # compute_loss divides by the replicas of a tf.distribute strategy; test_step undoes it.
        loss = _keras.keras_src("losses.loss").unscale_loss_for_distribution(loss)
        batch = keras.ops.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0]
        model._loss_tracker.update_state(loss, sample_weight=batch)
        model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def metric_results(self, values: list[Any]) -> dict[str, float]:
        keras = _keras.keras()
        np = _keras.np()
        model = self._model()
        mapping = list(zip(self.metric_variables, values))
        with self.compiled.in_place(model), keras.StatelessScope(state_mapping=mapping):
            logs = model.get_metrics_result()
        results = {}
        for name, value in logs.items():
            array = np.asarray(backends.to_numpy(value))
            if array.size == 1:
                results[name] = float(array.reshape(()))
        return results

    def metric_objects(self) -> dict[str, Any]:
        """The compiled metric objects by their result name (for their direction)."""
        model = self._model()
        with self.compiled.in_place(model):
            found = {}
            for metric in model.metrics:
                for leaf in getattr(metric, "metrics", None) or [metric]:
                    found.setdefault(leaf.name, leaf)
        return found

    # -- compiled steps -----------------------------------------------------------------
    def _scope(self, model_values: list[Any], metric_values: list[Any], statistics: list[Any]) -> Any:
        """A scope that reads every mapped variable from the given values and catches every write
        (moving averages, dropout seeds, metric state)."""
        mapping = list(zip(self.model_variables, model_values))
        for ref, (mean, variance) in zip(self.refs, statistics):
            mapping += [(ref.layer.moving_mean, mean), (ref.layer.moving_variance, variance)]
        mapping += list(zip(self.metric_variables, metric_values))
        return _keras.keras().StatelessScope(state_mapping=mapping, collect_losses=True)

    def _forward(self, model: Any, x: Any, observe: bool, training: bool, bn_training: bool = False) -> Any:
        """A forward pass; ``observe`` records each layer's input moments, ``bn_training`` runs
        BatchNormalization alone in training mode."""
        self.capture.active, self.capture.force_training = observe, bn_training
        try:
            return model(x, training=training)
        finally:
            self.capture.active = self.capture.force_training = False

    def _step(self, model_values, metric_values, statistics, data, *, training, observe, bn_training=False):
        model = self._model()
        x, y, sample_weight = self._unpack(data)
        self.capture.clear()
        with self._scope(model_values, metric_values, statistics) as scope:
            y_pred = self._forward(model, x, observe, training, bn_training)
            if metric_values:
                self._update_metrics(model, x, y, y_pred, sample_weight, training=training)
        records = [list(r) for r in self.capture.records]
        self.capture.clear()
        new_metrics = [scope.get_current_value(v) for v in self.metric_variables] if metric_values else []
        return new_metrics, records, finite_flags(x, y, sample_weight) if observe else None

    def _train_step(self, model_values, metric_values, statistics, data):
        return self._step(model_values, metric_values, statistics, data, training=True, observe=True)

    def _bn_only_step(self, model_values, metric_values, statistics, data):
        """Batch statistics in BatchNormalization, every other layer (Dropout...) in inference."""
        return self._step(model_values, metric_values, statistics, data, training=False, observe=False, bn_training=True)

    def _moments_step(self, model_values, metric_values, statistics, data):
        return self._step(model_values, [], statistics, data, training=True, observe=True)

    def _infer_step(self, model_values, metric_values, statistics, data):
        return self._step(model_values, metric_values, statistics, data, training=False, observe=False)

    # -- passes ---------------------------------------------------------------------------
    def _use_statistics(self, statistics: list[tuple[Any, Any]] | None) -> None:
        """Point the inference step at the stored statistics, or at the given ones."""
        ops = _keras.keras().ops
        np = _keras.np()
        chosen = []
        for i, ref in enumerate(self.refs):
            mean, variance = statistics[i] if statistics is not None else (None, None)
            chosen.append(tuple(
                ops.copy(variable.value) if value is None else ops.convert_to_tensor(np.asarray(value), variable.dtype)
                for variable, value in ((ref.layer.moving_mean, mean), (ref.layer.moving_variance, variance))
            ))
        self._statistics = chosen

    def _run(self, batches: Any, kinds: list[str], observe: bool = False) -> tuple[int, int, list[Any]]:
        """Run the steps ``kinds`` on every batch; returns batches, samples and the finiteness flags."""
        model = self._model()
        count = samples = 0
        flags = []
        model_values = None
        observing = _observing_inputs(self.refs, self.capture) if observe else nullcontext()
        with self.backend.rng_preserved(), observing:
            for data in batches:
                self._prepare(data)
                if model_values is None:
                    model_values = [v.value for v in self.model_variables]
                with self.compiled.in_place(model):
                    for kind in kinds:
                        statistics = self._statistics if kind == "infer" else []
                        metrics = self._metrics.get(kind, [])
                        step = self._steps[kind]
                        metrics, records, flag = guarded(
                            lambda d: step(model_values, metrics, statistics, d), data, model
                        )
                        if kind in self._metrics:
                            self._metrics[kind] = metrics
                        self._fold_moments(records)
                        if flag is not None:
                            flags.append(flag)
                count += 1
                samples += _batch_size(data)
        return count, samples, flags

    def _fold_moments(self, records: list[list[Any]]) -> None:
        for index, (accumulator, recorded) in enumerate(zip(self.moments, records)):
            if recorded:
                self.capture.calls[index] = len(recorded)
            for count, mean, m2 in recorded:
                accumulator.update(count, mean, m2)

    def _reset_all(self) -> None:
        self._metrics = {kind: list(self._reset_values) for kind in ("train", "infer", "bn_only")}

    def _begin(self, kinds: tuple[str, ...]) -> None:
        if self._ready:
            for kind in kinds:
                self._metrics[kind] = list(self._reset_values)

    def training_and_inference(self, batches: Any) -> tuple[PassResult, PassResult]:
        """One read of the data: training-mode metrics and moments, inference metrics."""
        for accumulator in self.moments:
            accumulator.reset()
        self._begin(("train", "infer"))
        self._use_statistics(None)
        count, samples, flags = self._run(batches, ["train", "infer"], observe=True)
        check_finite(flags, batches)
        moments = [a.result() for a in self.moments]
        train = PassResult(self.metric_results(self._metrics["train"]), count, samples, moments)
        infer = PassResult(self.metric_results(self._metrics["infer"]), count, samples)
        return train, infer

    def bn_only(self, batches: Any) -> PassResult:
        """BatchNormalization in training mode, every other layer in inference mode."""
        self._begin(("bn_only",))
        count, samples, _ = self._run(batches, ["bn_only"], observe=True)
        return PassResult(self.metric_results(self._metrics["bn_only"]), count, samples)

    def moments_only(self, batches: Any) -> PassResult:
        """One read of the data in training mode: the moments (for recalibration)."""
        for accumulator in self.moments:
            accumulator.reset()
        count, samples, flags = self._run(batches, ["moments"], observe=True)
        check_finite(flags, batches)
        return PassResult({}, count, samples, [a.result() for a in self.moments])

    def inference(self, batches: Any, statistics: list[tuple[Any, Any]] | None) -> PassResult:
        """Inference metrics with the given (mean, variance) per layer (None: keep stored)."""
        self._begin(("infer",))
        self._use_statistics(statistics)
        count, samples, _ = self._run(batches, ["infer"])
        return PassResult(self.metric_results(self._metrics["infer"]), count, samples)


class CompiledObjects:
    """The model's compiled loss and metrics, or copies of them built outside the model.

    A recompiled or reloaded model has compiled loss and metrics that are not built yet
    (Keras builds them on the first ``fit``/``evaluate`` batch); building them would add
    variables to the model.  The copies are built here from the same configuration, and put
    in the model's place only while the check traces its steps and reads their results.
    """

    def __init__(self, model: Any):
        self.loss = getattr(model, "_compile_loss", None)
        self.metrics = getattr(model, "_compile_metrics", None)
        self.copied = False

    def build(self, model: Any, x: Any, y: Any, sample_weight: Any) -> None:
        unbuilt_loss = self.loss is not None and not self.loss.built
        unbuilt_metrics = self.metrics is not None and not self.metrics.built
        if self.copied or not (unbuilt_loss or unbuilt_metrics):
            return
        keras = _keras.keras()
        utils = _keras.keras_src("trainers.compile_utils")
        with keras.StatelessScope():
            y_pred = guarded(lambda data: model(data, training=False), x, model)
        if unbuilt_loss:
            loss = self.loss
            self.loss = utils.CompileLoss(
                loss._user_loss, loss._user_loss_weights, reduction=loss.reduction, output_names=loss.output_names
            )
            self.loss.build(y, y_pred)
        if unbuilt_metrics:
            metrics = self.metrics
            self.metrics = utils.CompileMetrics(
                metrics._user_metrics, metrics._user_weighted_metrics, output_names=metrics.output_names
            )
            self.metrics.build(y, y_pred)
        self.copied = True

    @contextmanager
    def in_place(self, model: Any):
        if not self.copied:
            yield
            return
        saved = (model.__dict__.get("_compile_loss"), model.__dict__.get("_compile_metrics"))
        object.__setattr__(model, "_compile_loss", self.loss)  # bypass Keras attribute tracking
        object.__setattr__(model, "_compile_metrics", self.metrics)
        try:
            yield
        finally:
            object.__setattr__(model, "_compile_loss", saved[0])
            object.__setattr__(model, "_compile_metrics", saved[1])


def finite_flags(x: Any, y: Any, sample_weight: Any) -> Any:
    """In-graph: whether every floating-point value of x, y and sample_weight is finite."""
    keras = _keras.keras()
    ops = keras.ops
    flags = []
    for part in (x, y, sample_weight):
        ok = ops.convert_to_tensor(True)
        for leaf in keras.tree.flatten(part) if part is not None else []:
            try:
                floating = "float" in keras.backend.standardize_dtype(leaf.dtype)
            except (AttributeError, ValueError, TypeError):  # strings, objects: not numbers to check
                floating = False
            if floating:
                ok = ops.logical_and(ok, ops.all(ops.isfinite(leaf)))
        flags.append(ok)
    return ops.stack(flags)


def check_finite(flags: list[Any], batches: Any) -> None:
    """Raise, naming the argument and the first batch, when any batch had NaN or inf."""
    if not flags:
        return
    np = _keras.np()
    convert = backends.to_numpy
    table = np.stack([np.asarray(convert(flag)) for flag in flags])
    bad = np.argwhere(~table)
    if bad.size:
        batch, part = (int(i) for i in bad[0])
        raise BNCheckInputError(
            f"{batches.describe(part, batch)} has NaN or inf values: the check needs finite data and wrote "
            "nothing into the model; clean the data (or drop those samples) and pass it again"
        )


def guarded(step: Any, data: Any, model: Any) -> Any:
    """Call a compiled step; a mismatch between the data and the model becomes one line."""
    try:
        return step(data)
    except BNCheckInputError:
        raise
    except backends.current().data_errors as exc:
        message = describe_mismatch(model, data, exc)
        if message is None:
            raise  # not a mismatch between the data and the model: shown as it is
        raise BNCheckInputError(message) from None



def _batch_size(data: Any) -> int:
    tree = _keras.keras().tree
    first = next(i for i in tree.flatten(data) if i is not None)
    return int(first.shape[0])


_CACHE: "weakref.WeakKeyDictionary[Any, tuple[Any, Passes]]" = weakref.WeakKeyDictionary()


def _token(model: Any, refs: list[BatchNormRef]) -> tuple:
    """What the traced steps depend on: compiled loss/metrics objects and frozen flags."""
    return (
        id(getattr(model, "_compile_loss", None)),
        id(getattr(model, "_compile_metrics", None)),
        id(getattr(model, "_loss_tracker", None)),
        tuple(id(v) for v in model.metrics_variables),
        tuple((id(r.layer), r.layer.trainable) for r in refs),
    )


def passes_for(model: Any, refs: list[BatchNormRef]) -> Passes:
    """The cached compiled passes of ``model``, rebuilt when it was recompiled or (un)frozen."""
    token = _token(model, refs)
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == token:
        return cached[1]
    passes = Passes(model, refs)
    _CACHE[model] = (token, passes)
    return passes
