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

Metric state lives in our own variables: the model's metric variables are mapped to them
through the scope, so ``fit``'s metric state is left alone too.  The model's variables are
only read, which is what makes the check leave the model bit-identical.  Layer inputs are
observed by wrapping each BatchNormalization layer's ``call`` for the duration of a pass
(the wrapper only records while the training-mode step is being traced); it is removed
afterwards.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pytest_bncheck import _keras
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
        self.records: list[list[tuple[Any, Any, Any]]] = [[] for _ in range(count)]

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
        self.metric_variables = list(model.metrics_variables)
        self._reset_values = self._metric_reset_values(model)
        self.train_metrics = [tf.Variable(v, trainable=False) for v in self._reset_values]
        self.infer_metrics = [tf.Variable(v, trainable=False) for v in self._reset_values]
        self.moments = [MomentAccumulator(int(r.layer.moving_mean.shape[0])) for r in refs]
        self.stored_mean = [tf.Variable(tf.identity(r.layer.moving_mean.value), trainable=False) for r in refs]
        self.stored_variance = [tf.Variable(tf.identity(r.layer.moving_variance.value), trainable=False) for r in refs]
        self.capture = _Capture(len(refs))
        self._unpack = keras.utils.unpack_x_y_sample_weight
        self.train_step = tf.function(self._train_step, reduce_retracing=True)
        self.infer_step = tf.function(self._infer_step, reduce_retracing=True)
        self.moments_step = tf.function(self._moments_step, reduce_retracing=True)

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
        mapping = [(v, a.read_value()) for v, a in zip(self.metric_variables, accumulators)]
        with keras.StatelessScope(state_mapping=mapping):
            logs = self._model().get_metrics_result()
        results = {}
        for name, value in logs.items():
            array = np.asarray(value)
            if array.size == 1:
                results[name] = float(array.reshape(()))
        return results

    # -- compiled steps -----------------------------------------------------------------
    def _forward_observed(self, model: Any, x: Any) -> Any:
        """Training-mode forward pass that records each layer's input moments."""
        self.capture.active = True
        try:
            return model(x, training=True)
        finally:
            self.capture.active = False

    def _fold_moments(self) -> None:
        for accumulator, records in zip(self.moments, self.capture.records):
            for count, mean, m2 in records:
                accumulator.update(count, mean, m2)
        self.capture.clear()

    def _train_step(self, data: Any) -> None:
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

    def _moments_step(self, data: Any) -> None:
        keras = _keras.keras()
        x, _, _ = self._unpack(data)
        self.capture.clear()
        with keras.StatelessScope():
            self._forward_observed(self._model(), x)
        self._fold_moments()

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

    def training_and_inference(self, batches: Any) -> tuple[PassResult, PassResult]:
        """One read of the data: training-mode metrics and moments, inference metrics."""
        self._reset(self.train_metrics)
        self._reset(self.infer_metrics)
        for accumulator in self.moments:
            accumulator.reset()
        self._use_statistics(None)
        count = samples = 0
        with _observing_inputs(self.refs, self.capture):
            for data in batches:
                self.train_step(data)
                self.infer_step(data)
                count += 1
                samples += _batch_size(data)
        moments = [a.result() for a in self.moments]
        train = PassResult(self.metric_results(self.train_metrics), count, samples, moments)
        infer = PassResult(self.metric_results(self.infer_metrics), count, samples)
        return train, infer

    def moments_only(self, batches: Any) -> PassResult:
        """One read of the data in training mode: the moments (for recalibration)."""
        for accumulator in self.moments:
            accumulator.reset()
        count = samples = 0
        with _observing_inputs(self.refs, self.capture):
            for data in batches:
                self.moments_step(data)
                count += 1
                samples += _batch_size(data)
        return PassResult({}, count, samples, [a.result() for a in self.moments])

    def inference(self, batches: Any, statistics: list[tuple[Any, Any]] | None) -> PassResult:
        """Inference metrics with the given (mean, variance) per layer (None: keep stored)."""
        self._reset(self.infer_metrics)
        self._use_statistics(statistics)
        count = samples = 0
        for data in batches:
            self.infer_step(data)
            count += 1
            samples += _batch_size(data)
        return PassResult(self.metric_results(self.infer_metrics), count, samples)


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
