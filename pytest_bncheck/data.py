"""Turning what ``Model.evaluate`` accepts into batches the check can read twice.

Keras's own data adapters do the work (arrays, dicts/lists of arrays, ``tf.data.Dataset``,
``keras.utils.PyDataset``), so batches are cut exactly as ``evaluate`` would cut them.  The
check reads the data twice (the recalibration probe needs the pooled statistics of the first
pass), so one-shot Python generators are refused, and infinite data needs ``steps``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from pytest_bncheck import _keras
from pytest_bncheck.errors import BNCheckInputError, BNCheckTypeError


class Batches:
    """Re-iterable batches of ``(x, y, sample_weight)`` as a ``tf.data.Dataset`` yields them."""

    def __init__(self, adapter: Any, steps: int | None):
        self.adapter = adapter
        self.steps = steps
        dataset = adapter.get_tf_dataset()
        self.dataset = dataset.take(steps) if steps is not None else dataset

    def __iter__(self) -> Iterator[Any]:
        self.adapter.on_epoch_begin()
        try:
            yield from self.dataset
        finally:
            self.adapter.on_epoch_end()


def _first_dimension(structure: Any) -> int | None:
    tree = _keras.keras().tree
    for leaf in tree.flatten(structure):
        shape = getattr(leaf, "shape", None)
        if shape is not None and len(shape) > 0:
            return int(shape[0]) if shape[0] is not None else None
    return None


def make_batches(
    x: Any,
    y: Any = None,
    *,
    sample_weight: Any = None,
    batch_size: int | None = None,
    steps: int | None = None,
    class_weight: dict | None = None,
) -> Batches:
    """Validate ``x``/``y`` as ``evaluate`` would and return re-iterable batches."""
    tf = _keras.tf()
    keras = _keras.keras()
    if x is None:
        raise BNCheckInputError("no data: pass the training data as x (and y), as given to fit()")
    if inspect.isgenerator(x) or (isinstance(x, Iterator) and not isinstance(x, tf.data.Dataset)):
        raise BNCheckTypeError(
            f"x is a one-shot {type(x).__name__}: the check reads the data twice; "
            "pass arrays, a tf.data.Dataset or a keras.utils.PyDataset instead"
        )
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise BNCheckInputError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(x, tf.data.Dataset):
        if int(x.cardinality()) == tf.data.INFINITE_CARDINALITY and steps is None:
            raise BNCheckInputError(
                "x is an infinite tf.data.Dataset: pass steps= (the steps_per_epoch given to fit)"
            )
    elif isinstance(x, keras.utils.PyDataset):
        if x.num_batches is None and steps is None:
            raise BNCheckInputError(
                "x is an infinite PyDataset (num_batches is None): pass steps= (the steps_per_epoch given to fit)"
            )
        if x.num_batches == 0:
            raise BNCheckInputError("x is an empty PyDataset: pass the data the model was trained on")
    else:
        size = _first_dimension(x)
        if size == 0:
            raise BNCheckInputError("x is empty (0 samples): pass the data the model was trained on")
    get_adapter = _keras.keras_src("trainers.data_adapters").get_data_adapter
    try:
        adapter = get_adapter(
            x, y, sample_weight=sample_weight, batch_size=batch_size, steps_per_epoch=steps,
            shuffle=False, class_weight=class_weight,
        )
    except (ValueError, TypeError, NotImplementedError) as exc:
        message = " ".join(str(exc).split())
        raise BNCheckInputError(
            f"x/y are not accepted as Model.evaluate would accept them: {message}"
        ) from None
    if adapter.num_batches == 0:
        raise BNCheckInputError("the data has no batches: pass the data the model was trained on")
    return Batches(adapter, steps)
