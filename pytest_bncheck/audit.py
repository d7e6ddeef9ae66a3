"""Auditing ``Model.fit``: the ``--bn-consistency`` hook and the update counter.

``keras.Model.fit`` is wrapped only when the audit is switched on, and only once Keras has
been imported by the code under test (:func:`when_imported` watches the import), so merely
loading the plugin never imports TensorFlow.  The wrapper hands each finished ``fit`` (the
model, its ``History`` and the arguments ``fit`` was given) to a sink, which runs the check on
the same data, batch size, class weights and steps.

It also counts moving-average updates: Keras 3 BatchNormalization updates its moving
statistics once per call per training step while it is trainable (inside ``fit`` too, even
under a sub-model called with ``training=False``, keras-team/keras#20285), so the count of a
layer is the sum of training-step deltas over the fits during which it was trainable, times
its calls per step (the check sees those).  ``momentum ** updates`` is the share of the
statistics the layer had when first seen: the initial mean 0 / variance 1, or loaded values.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import inspect
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from pytest_bncheck import _keras, backends
from pytest_bncheck.report import StatisticsChange

#: layer -> training steps it was trainable in, counted since the audit first saw it.
_COUNTS: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
#: layers first seen with statistics other than mean 0 / variance 1 (pretrained or loaded).
_LOADED: "weakref.WeakSet[Any]" = weakref.WeakSet()

_state = threading.local()


def _iterations(model: Any) -> int:
    """Training steps the optimizer has seen: ``optimizer.iterations`` counts applied updates,
    which under ``gradient_accumulation_steps=k`` is one per k steps; its raw counter counts
    every step, and BatchNormalization updates its statistics at every step."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    iterations = getattr(optimizer, "_iterations", None)
    if iterations is None:
        iterations = getattr(optimizer, "iterations", None)
    return 0 if iterations is None else int(backends.to_numpy(iterations))


def _is_initial(layer: Any) -> bool:
    np = _keras.np()
    return bool(np.all(layer.moving_mean.numpy() == 0.0) and np.all(layer.moving_variance.numpy() == 1.0))


class FitCount:
    """The optimizer step and the trainable BatchNormalization layers when a fit began, and the
    statistics of the layers that fit() must not update (see :func:`watched_layers`)."""

    def __init__(self, start: int, trainable: list[Any], watched: list[tuple[Any, str, Any, Any]] | None = None):
        self.start = start
        self.trainable = trainable
        self.watched = watched or []
        self.changes: list[StatisticsChange] = []
        self.done = False


def inference_called(model: Any) -> dict[int, str]:
    """``id(layer) -> sub-model path`` for the layers of every sub-model that a functional
    model calls with ``training=False`` (its graph records the call's arguments)."""
    found: dict[int, str] = {}

    def walk(container: Any, prefix: str) -> None:
        for sub in container._flatten_layers(include_self=False, recursive=False):
            path = f"{prefix}{sub.name}"
            nodes = getattr(sub, "_inbound_nodes", None) or []
            if any(node.arguments.kwargs.get("training", None) is False for node in nodes):
                for layer in sub._flatten_layers(include_self=True, recursive=True):
                    found.setdefault(id(layer), path)
            walk(sub, f"{path}/")

    walk(model, "")
    return found


def watched_layers(model: Any) -> list[tuple[Any, str, Any, Any]]:
    """``(ref, reason, moving_mean, moving_variance)`` for every BatchNormalization layer whose
    statistics fit() must leave alone: inside a sub-model called with ``training=False``, or
    not trainable."""
    from pytest_bncheck.layers import find_batchnorm_layers

    called = inference_called(model)
    watched = []
    for ref in find_batchnorm_layers(model):
        if not ref.layer.built:
            continue
        if id(ref.layer) in called:
            reason = f"training=False:{called[id(ref.layer)]}"
        elif ref.frozen:
            reason = "trainable=False"
        else:
            continue
        watched.append((ref, reason, ref.layer.moving_mean.numpy().copy(), ref.layer.moving_variance.numpy().copy()))
    return watched


def statistics_changes(watched: list[tuple[Any, str, Any, Any]]) -> list[StatisticsChange]:
    np = _keras.np()
    changes = []
    for ref, reason, mean, variance in watched:
        new_mean, new_variance = ref.layer.moving_mean.numpy(), ref.layer.moving_variance.numpy()
        if np.array_equal(mean, new_mean) and np.array_equal(variance, new_variance):
            continue
        scale = np.sqrt(variance.astype(np.float64) + float(ref.layer.epsilon))
        shift = float(np.max(np.abs(new_mean.astype(np.float64) - mean) / scale))
        kind, _, container = reason.partition(":")
        changes.append(StatisticsChange(ref.path, kind, container or None, shift))
    return changes


def before_fit(model: Any) -> FitCount:
    """Remember the optimizer step and which BatchNormalization layers will update.

    Inside an audited fit, the fit's own count is returned, so that a
    :class:`BNConsistencyCallback` and the audit never count the same fit twice.
    """
    current = getattr(_state, "current", None)
    if current is not None:
        return current
    from pytest_bncheck.layers import find_batchnorm_layers

    trainable = []
    for ref in find_batchnorm_layers(model):
        layer = ref.layer
        if layer not in _COUNTS and layer.built:
            _COUNTS[layer] = 0
            if not _is_initial(layer):
                _LOADED.add(layer)
        if layer.trainable:
            trainable.append(layer)
    return FitCount(_iterations(model), trainable, watched_layers(model))


def after_fit(model: Any, count: FitCount) -> None:
    """Add the steps this fit took to every layer that was trainable during it (once)."""
    if count.done:
        return
    count.done = True
    count.changes = statistics_changes(count.watched)
    steps = max(_iterations(model) - count.start, 0)
    for layer in count.trainable:
        if layer not in _COUNTS:  # built during this fit: it started from its initializers
            _COUNTS[layer] = 0
        _COUNTS[layer] += steps


def counted_updates(model: Any) -> dict[int, tuple[int, bool]]:
    """``id(layer) -> (steps, loaded)`` for the layers of ``model`` the audit counted: training
    steps while trainable, and whether the layer was first seen with statistics other than
    mean 0 / variance 1 (then ``momentum ** updates`` is the share of those loaded values)."""
    from pytest_bncheck.layers import find_batchnorm_layers

    return {
        id(r.layer): (_COUNTS[r.layer], r.layer in _LOADED) for r in find_batchnorm_layers(model) if r.layer in _COUNTS
    }


# -- the fit wrapper -----------------------------------------------------------------------

FitSink = Callable[[Any, Any, dict], None]
_sink: FitSink | None = None
_original_fit: Callable | None = None


def _fit_caller() -> tuple[str, int]:
    """``(file, line)`` of the code that called fit (the first frame outside Keras and us)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not (name.startswith(("keras", "tensorflow", "pytest_bncheck"))):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return "?", 0


def _audited_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
    original = _original_fit
    if getattr(_state, "busy", False):
        return original(self, *args, **kwargs)
    _state.busy = True
    try:
        _state.current = before = before_fit(self)
        try:
            history = original(self, *args, **kwargs)
        finally:
            _state.current = None
        after_fit(self, before)
        sink = _sink
        if sink is not None:
            arguments = inspect.signature(original).bind(self, *args, **kwargs).arguments
            arguments.pop("self", None)
            arguments.update(arguments.pop("kwargs", {}))
            arguments["caller"] = _fit_caller()
            arguments["statistics_changed"] = before.changes
            sink(self, history, arguments)
        return history
    finally:
        _state.busy = False


def patch_fit(sink: FitSink) -> None:
    """Wrap ``keras.Model.fit`` (Keras must be imported) and send finished fits to ``sink``."""
    global _sink, _original_fit
    keras = _keras.keras()
    _sink = sink
    if _original_fit is None:
        _original_fit = keras.Model.fit
        keras.Model.fit = functools.wraps(_original_fit)(_audited_fit)


def unpatch_fit() -> None:
    global _sink, _original_fit
    _sink = None
    if _original_fit is not None and "keras" in sys.modules:
        sys.modules["keras"].Model.fit = _original_fit
    _original_fit = None


# -- waiting for the user's code to import Keras -------------------------------------------


class _CallbackLoader(importlib.abc.Loader):
    """Delegates to the real loader, then calls back with the loaded module."""

    def __init__(self, loader: Any, callback: Callable[[Any], None]):
        self._loader = loader
        self._callback = callback

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._callback(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _ImportWatcher(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, callback: Callable[[Any], None]):
        self.name = name
        self.callback = callback
        self._finding = False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != self.name or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _CallbackLoader(spec.loader, self._fire)
        return spec

    def _fire(self, module: Any) -> None:
        remove_watchers()
        self.callback(module)


def when_imported(name: str, callback: Callable[[Any], None]) -> None:
    """Call ``callback(module)`` once top-level module ``name`` is imported (now, if it is)."""
    if name in sys.modules:
        callback(sys.modules[name])
        return
    sys.meta_path.insert(0, _ImportWatcher(name, callback))


def remove_watchers() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _ImportWatcher)]


# -- one audit -----------------------------------------------------------------------------


def check_arguments(fit_arguments: dict) -> dict | None:
    """The check's data arguments from fit's, or None when the data cannot be read again."""
    x = fit_arguments.get("x")
    if x is None or inspect.isgenerator(x):
        return None
    y = fit_arguments.get("y")
    sample_weight = fit_arguments.get("sample_weight")
    split = fit_arguments.get("validation_split") or 0.0
    if split and fit_arguments.get("validation_data") is None:
        # fit trained on the first (1 - split) of the arrays, as Keras slices them.
        slicing = _keras.keras_src("trainers.data_adapters.array_slicing")
        (x, y, sample_weight), _ = slicing.train_validation_split((x, y, sample_weight), validation_split=split)
    return {
        "x": x,
        "y": y,
        "sample_weight": sample_weight,
        "batch_size": fit_arguments.get("batch_size"),
        "class_weight": fit_arguments.get("class_weight"),
        "steps": fit_arguments.get("steps_per_epoch"),
        # Without steps_per_epoch, fit returned only because it read x to its end: x is finite.
        "length_known": fit_arguments.get("steps_per_epoch") is None,
        "shuffle": fit_arguments.get("shuffle", True) is not False,
    }


def audit_fit(model: Any, history: Any, fit_arguments: dict, tolerance: dict | None) -> Any:
    """Run the check on a finished fit; returns the report, or a string saying why not."""
    from pytest_bncheck.consistency import run_check
    from pytest_bncheck.errors import BNCheckInputError
    from pytest_bncheck.layers import find_batchnorm_layers

    changes = fit_arguments.pop("statistics_changed", [])
    if not find_batchnorm_layers(model):
        return "no BatchNormalization layer"
    if not getattr(history, "history", None) or not any(history.history.values()):
        return "fit ran no epoch"
    arguments = check_arguments(fit_arguments)
    if arguments is None:
        return "fit was given a one-shot generator, which cannot be read again"
    try:
        return run_check(
            model, history=history, tolerance=tolerance, update_counts=counted_updates(model),
            statistics_changed=changes, **arguments,
        )
    except BNCheckInputError as exc:
        return str(exc)
