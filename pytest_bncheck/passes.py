"""Compiled, fused passes over the data that never change the model.

Two ``tf.function`` steps do all the work, each with a single forward pass:

* the **training-mode step** runs ``model(x, training=True)`` (batch statistics, dropout on,
  as in ``fit``) inside a ``keras.StatelessScope`` that catches every variable assignment
  (moving-average updates, seed-generator advances) and throws it away; it updates the
  compiled loss and metrics, and folds each BatchNormalization layer's input moments into
  float64 accumulators (see :mod:`pytest_bncheck.stats`);
* the **inference step** runs ``model(x, training=False)`` with every layer's
  ``moving_mean``/``moving_variance`` read through the scope's state mapping from our own
  copies, so the same compiled step measures the stored statistics and, in a second pass,
  recalibrated ones, without ever assigning to the model.

A third step, run only when the check needs it, is the **BN-only step**: ``model(x,
training=False)`` with BatchNormalization alone forced into training mode (batch statistics),
Dropout and every other layer in inference mode, to tell their shares of a gap apart.  Every
step also returns whether the batch's inputs, targets and sample weights were finite, so NaN
data is refused (naming the batch) before anything could be written.

Metric state lives in our own variables: the model's metric variables are mapped to them
through the scope, so ``fit``'s metric state is left alone too; a recompiled or reloaded
model's not-yet-built compiled loss and metrics are replaced, while the check runs, by copies
built outside the model (:class:`CompiledObjects`).  The model's variables are
only read, which is what makes the check leave the model bit-identical.  Layer inputs are
observed by wrapping each BatchNormalization layer's ``call`` for the duration of a pass
(the wrapper only records while the training-mode step is being traced); it is removed
afterwards.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from pytest_bncheck import _keras
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
    """The compiled steps and their state for one model (cached while the model lives)."""

    def __init__(self, model: Any, refs: list[BatchNormRef]):
        tf = _keras.tf()
        keras = _keras.keras()
        self._model = weakref.ref(model)
        self.refs = refs
        self.compiled = CompiledObjects(model)
        self.moments = [MomentAccumulator(int(r.layer.moving_mean.shape[0])) for r in refs]
        self.stored_mean = [tf.Variable(tf.identity(r.layer.moving_mean.value), trainable=False) for r in refs]
        self.stored_variance = [tf.Variable(tf.identity(r.layer.moving_variance.value), trainable=False) for r in refs]
        self.capture = _Capture(len(refs))
        self._unpack = keras.utils.unpack_x_y_sample_weight
        self.metric_variables: list[Any] = []
        self._ready = False
        self.train_step = tf.function(self._train_step, reduce_retracing=True)
        self.bn_only_step = tf.function(self._bn_only_step, reduce_retracing=True)
        self.infer_step = tf.function(self._infer_step, reduce_retracing=True)
        self.moments_step = tf.function(self._moments_step, reduce_retracing=True)

    def _prepare(self, data: Any) -> None:
        """Build what the steps need outside the model, once, from the first batch."""
        if self._ready:
            return
        tf = _keras.tf()
        model = self._model()
        self.compiled.build(model, *self._unpack(data))
        with self.compiled.in_place(model):
            self.metric_variables = list(model.metrics_variables)
            self._reset_values = self._metric_reset_values(model)
        self.train_metrics = [tf.Variable(v, trainable=False) for v in self._reset_values]
        self.bn_only_metrics = [tf.Variable(v, trainable=False) for v in self._reset_values]
        self.infer_metrics = [tf.Variable(v, trainable=False) for v in self._reset_values]
        self._ready = True

    # -- metric state --------------------------------------------------------------------
    def _metric_reset_values(self, model: Any) -> list[Any]:
        keras = _keras.keras()
        tf = _keras.tf()
        with keras.StatelessScope() as scope:
            for metric in model.metrics:
                metric.reset_state()
        values = []
        for variable in self.metric_variables:
            value = scope.get_current_value(variable)
            values.append(tf.identity(value if value is not None else tf.zeros_like(variable.value)))
        return values

    def _metric_mapping(self, accumulators: list[Any]) -> list[tuple[Any, Any]]:
        return [(v, a.read_value()) for v, a in zip(self.metric_variables, accumulators)]

    def _update_metrics(self, model: Any, x: Any, y: Any, y_pred: Any, sample_weight: Any, training: bool) -> None:
        """The compiled loss and metrics, as ``test_step`` updates them."""
        tf = _keras.tf()
        tree = _keras.keras().tree
        loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        # compute_loss divides by the replicas of a tf.distribute strategy; test_step undoes it.
        loss = _keras.keras_src("losses.loss").unscale_loss_for_distribution(loss)
        batch = tf.shape(next(i for i in tree.flatten(x) if i is not None))[0]
        model._loss_tracker.update_state(loss, sample_weight=batch)
        model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    @staticmethod
    def _store(scope: Any, variables: list[Any], accumulators: list[Any]) -> None:
        for variable, accumulator in zip(variables, accumulators):
            accumulator.assign(scope.get_current_value(variable))

    def metric_results(self, accumulators: list[Any]) -> dict[str, float]:
        keras = _keras.keras()
        np = _keras.np()
        model = self._model()
        mapping = [(v, a.read_value()) for v, a in zip(self.metric_variables, accumulators)]
        with self.compiled.in_place(model), keras.StatelessScope(state_mapping=mapping):
            logs = model.get_metrics_result()
        results = {}
        for name, value in logs.items():
            array = np.asarray(value)
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
    def _forward_observed(self, model: Any, x: Any) -> Any:
        """Training-mode forward pass that records each layer's input moments."""
        self.capture.active = True
        try:
            return model(x, training=True)
        finally:
            self.capture.active = False

    def _fold_moments(self) -> None:
        for index, (accumulator, records) in enumerate(zip(self.moments, self.capture.records)):
            self.capture.calls[index] = max(len(records), 1)
            for count, mean, m2 in records:
                accumulator.update(count, mean, m2)
        self.capture.clear()

    def _train_step(self, data: Any) -> Any:
        keras = _keras.keras()
        model = self._model()
        x, y, sample_weight = self._unpack(data)
        self.capture.clear()
        mapping = self._metric_mapping(self.train_metrics)
        # Every assignment in the scope (moving averages, dropout seeds, metric state) is caught;
        # only the metric state is read back, into our own accumulators.
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            y_pred = self._forward_observed(model, x)
            self._update_metrics(model, x, y, y_pred, sample_weight, training=True)
        self._store(scope, self.metric_variables, self.train_metrics)
        self._fold_moments()
        return finite_flags(x, y, sample_weight)

    def _bn_only_step(self, data: Any) -> None:
        """Batch statistics in BatchNormalization, every other layer (Dropout...) in inference."""
        keras = _keras.keras()
        model = self._model()
        x, y, sample_weight = self._unpack(data)
        mapping = self._metric_mapping(self.bn_only_metrics)
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            self.capture.force_training = True
            try:
                y_pred = model(x, training=False)
            finally:
                self.capture.force_training = False
            self._update_metrics(model, x, y, y_pred, sample_weight, training=False)
        self._store(scope, self.metric_variables, self.bn_only_metrics)

    def _moments_step(self, data: Any) -> Any:
        keras = _keras.keras()
        x, y, sample_weight = self._unpack(data)
        self.capture.clear()
        with keras.StatelessScope():
            self._forward_observed(self._model(), x)
        self._fold_moments()
        return finite_flags(x, None, None)

    def _infer_step(self, data: Any) -> None:
        keras = _keras.keras()
        model = self._model()
        x, y, sample_weight = self._unpack(data)
        mapping = self._metric_mapping(self.infer_metrics)
        for ref, mean, variance in zip(self.refs, self.stored_mean, self.stored_variance):
            mapping.append((ref.layer.moving_mean, mean.read_value()))
            mapping.append((ref.layer.moving_variance, variance.read_value()))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            y_pred = model(x, training=False)
            self._update_metrics(model, x, y, y_pred, sample_weight, training=False)
        self._store(scope, self.metric_variables, self.infer_metrics)

    # -- passes ---------------------------------------------------------------------------
    def _reset(self, accumulators: list[Any]) -> None:
        for accumulator, value in zip(accumulators, self._reset_values):
            accumulator.assign(value)

    def _use_statistics(self, statistics: list[tuple[Any, Any]] | None) -> None:
        """Point the inference step at the stored statistics, or at the given ones."""
        for i, ref in enumerate(self.refs):
            mean, variance = statistics[i] if statistics is not None else (None, None)
            self.stored_mean[i].assign(ref.layer.moving_mean.value if mean is None else mean)
            self.stored_variance[i].assign(ref.layer.moving_variance.value if variance is None else variance)

    def _run(self, batches: Any, steps: list[Any], observe: bool = False) -> tuple[int, int, list[Any]]:
        """Run ``steps`` on every batch; returns batches, samples and the finiteness flags."""
        model = self._model()
        count = samples = 0
        flags = []
        with _observing_inputs(self.refs, self.capture) if observe else nullcontext():
            for data in batches:
                self._prepare(data)
                with self.compiled.in_place(model):
                    for step in steps:
                        flag = guarded(step, data, model)
                        if flag is not None:
                            flags.append(flag)
                count += 1
                samples += _batch_size(data)
        return count, samples, flags

    def training_and_inference(self, batches: Any) -> tuple[PassResult, PassResult]:
        """One read of the data: training-mode metrics and moments, inference metrics."""
        for accumulator in self.moments:
            accumulator.reset()
        self._reset_all()
        self._use_statistics(None)
        count, samples, flags = self._run(batches, [self.train_step, self.infer_step], observe=True)
        check_finite(flags, batches)
        moments = [a.result() for a in self.moments]
        train = PassResult(self.metric_results(self.train_metrics), count, samples, moments)
        infer = PassResult(self.metric_results(self.infer_metrics), count, samples)
        return train, infer

    def bn_only(self, batches: Any) -> PassResult:
        """BatchNormalization in training mode, every other layer in inference mode."""
        self._reset(self.bn_only_metrics)
        count, samples, _ = self._run(batches, [self.bn_only_step], observe=True)
        return PassResult(self.metric_results(self.bn_only_metrics), count, samples)

    def moments_only(self, batches: Any) -> PassResult:
        """One read of the data in training mode: the moments (for recalibration)."""
        for accumulator in self.moments:
            accumulator.reset()
        count, samples, flags = self._run(batches, [self.moments_step], observe=True)
        check_finite(flags, batches)
        return PassResult({}, count, samples, [a.result() for a in self.moments])

    def inference(self, batches: Any, statistics: list[tuple[Any, Any]] | None) -> PassResult:
        """Inference metrics with the given (mean, variance) per layer (None: keep stored)."""
        self._reset(self.infer_metrics)
        self._use_statistics(statistics)
        count, samples, _ = self._run(batches, [self.infer_step])
        return PassResult(self.metric_results(self.infer_metrics), count, samples)

    def _reset_all(self) -> None:
        if self._ready:
            for accumulators in (self.train_metrics, self.infer_metrics, self.bn_only_metrics):
                self._reset(accumulators)
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
    tf = _keras.tf()
    tree = _keras.keras().tree
    flags = []
    for part in (x, y, sample_weight):
        ok = tf.constant(True)
        for leaf in tree.flatten(part) if part is not None else []:
            if isinstance(leaf, tf.Tensor) and leaf.dtype.is_floating:
                ok = tf.logical_and(ok, tf.reduce_all(tf.math.is_finite(leaf)))
        flags.append(ok)
    return tf.stack(flags)


def check_finite(flags: list[Any], batches: Any) -> None:
    """Raise, naming the argument and the first batch, when any batch had NaN or inf."""
    if not flags:
        return
    np = _keras.np()
    table = np.stack([flag.numpy() for flag in flags])
    bad = np.argwhere(~table)
    if bad.size:
        batch, part = (int(i) for i in bad[0])
        raise BNCheckInputError(
            f"{batches.describe(part, batch)} has NaN or inf values: the check needs finite data and wrote "
            "nothing into the model; clean the data (or drop those samples) and pass it again"
        )


def guarded(step: Any, data: Any, model: Any) -> Any:
    """Call a compiled step; a mismatch between the data and the model becomes one line."""
    tf = _keras.tf()
    try:
        return step(data)
    except BNCheckInputError:
        raise
    except (ValueError, TypeError, tf.errors.OpError) as exc:
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
