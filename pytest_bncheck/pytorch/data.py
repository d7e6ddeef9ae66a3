"""The batches a check reads: a DataLoader, any re-iterable of batches, or tensors.

The check reads the data twice (the recalibration probe needs the pooled statistics of the
first read), so one-shot iterators and generators are refused.  Accepted:

* a ``torch.utils.data.DataLoader``, or any re-iterable (a list of batches...) whose items are
  ``(inputs, targets)`` pairs (``targets`` may be left out when there is no ``loss_fn`` and no
  metric, as for recalibration);
* a map-style ``torch.utils.data.Dataset`` with ``batch_size`` (batched in order);
* tensors: a tuple ``(x, y)`` or ``x`` (with ``y=``) and ``batch_size``, sliced in order, the last
  batch smaller, as a ``DataLoader(shuffle=False, drop_last=False)`` would cut them.

``inputs`` is passed to the model as ``model(inputs)`` for a tensor, ``model(*inputs)`` for a
tuple or list and ``model(**inputs)`` for a dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pytest_bncheck.errors import BNCheckInputError, BNCheckTypeError
from pytest_bncheck.pytorch._torch import torch


@dataclass
class Batch:
    index: int
    inputs: Any
    targets: Any  # None when the data has no targets
    size: int


class Batches:
    """Re-iterable :class:`Batch` es moved to ``device``, checked for NaN/inf on the way."""

    def __init__(self, source: Iterable, device: Any, need_targets: bool):
        self.source = source
        self.device = device
        self.need_targets = need_targets

    def count(self) -> int | None:
        """How many batches a read yields, when the source knows (``len``), else None."""
        try:
            return len(self.source)  # type: ignore[arg-type]
        except TypeError:
            return None

    def __iter__(self) -> Iterator[Batch]:
        for index, item in enumerate(self.source):
            inputs, targets = _split(item, index, self.need_targets)
            inputs = _to(inputs, self.device)
            targets = _to(targets, self.device)
            _check_finite(inputs, index)
            yield Batch(index, inputs, targets, _leading(inputs, index))


def _split(item: Any, index: int, need_targets: bool) -> tuple[Any, Any]:
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    if need_targets:
        kind = f"a {type(item).__name__}" + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
        raise BNCheckInputError(
            f"batch {index} is {kind}, not an (inputs, targets) pair, which loss_fn/metrics need: "
            "make the data yield (inputs, targets)"
        )
    return item, None


def _to(value: Any, device: Any) -> Any:
    t = torch()
    if isinstance(value, t.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def _tensors(value: Any) -> list[Any]:
    t = torch()
    if isinstance(value, t.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _tensors(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _tensors(v)]
    return []


def _check_finite(inputs: Any, index: int) -> None:
    t = torch()
    for tensor in _tensors(inputs):
        if tensor.is_floating_point() and not bool(t.isfinite(tensor).all()):
            raise BNCheckInputError(
                f"batch {index} of the data has NaN or inf in its inputs: clean the data (the check reports "
                "nothing reliable on non-finite inputs)"
            )


def _leading(inputs: Any, index: int) -> int:
    for tensor in _tensors(inputs):
        if tensor.dim() > 0:
            return int(tensor.shape[0])
    raise BNCheckInputError(f"batch {index} has no tensor with a batch dimension in its inputs: yield tensors")


class _Slices:
    """``(x[i:i+b], y[i:i+b])`` in order: re-iterable, no copy."""

    def __init__(self, x: Any, y: Any, batch_size: int):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return -(-int(self.x.shape[0]) // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        for start in range(0, int(self.x.shape[0]), self.batch_size):
            stop = start + self.batch_size
            yield (self.x[start:stop], None if self.y is None else self.y[start:stop])


def _batch_size(batch_size: Any, what: str) -> int:
    if batch_size is None:
        raise BNCheckInputError(
            f"{what} needs batch_size=: pass the batch size used in training (batch statistics depend on it)"
        )
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise BNCheckInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def make_batches(data: Any, y: Any, batch_size: Any, device: Any, need_targets: bool) -> Batches:
    """Validate ``data`` (and ``y``) and return re-iterable batches on ``device``."""
    t = torch()
    if data is None:
        raise BNCheckInputError("no data: pass the training data (a DataLoader, or tensors with batch_size)")
    # Only a *tuple* of two tensors is (x, y): a list of two tensors is two batches.
    pair = isinstance(data, tuple) and len(data) == 2 and all(isinstance(v, t.Tensor) for v in data)
    if isinstance(data, t.Tensor) or pair:
        x, y = (data[0], data[1]) if pair else (data, y)
        size = _batch_size(batch_size, "tensor data")
        if x.dim() == 0 or int(x.shape[0]) == 0:
            raise BNCheckInputError("x is empty (0 samples): pass the data the model was trained on")
        if y is not None and (not isinstance(y, t.Tensor) or y.dim() == 0 or y.shape[0] != x.shape[0]):
            shape = tuple(y.shape) if isinstance(y, t.Tensor) else type(y).__name__
            raise BNCheckInputError(
                f"y ({shape}) does not have one target per sample of x {tuple(x.shape)}: pass matching tensors"
            )
        if y is None and need_targets:
            raise BNCheckInputError("tensor x without y: pass (x, y) or y= (loss_fn and metrics need the targets)")
        return Batches(_Slices(x, y, size), device, need_targets)
    if y is not None:
        raise BNCheckInputError("y= is only for tensor x: a DataLoader or an iterable yields (inputs, targets) itself")
    if isinstance(data, t.utils.data.DataLoader):
        return Batches(data, device, need_targets)
    if isinstance(data, t.utils.data.Dataset) and hasattr(data, "__len__"):
        loader = t.utils.data.DataLoader(data, batch_size=_batch_size(batch_size, "a Dataset"), shuffle=False)
        return Batches(loader, device, need_targets)
    if isinstance(data, Iterator):
        raise BNCheckTypeError(
            f"data is a one-shot {type(data).__name__}: the check reads the data twice; pass a DataLoader or a list "
            "of batches"
        )
    if not isinstance(data, Iterable):
        raise BNCheckTypeError(
            f"data must be a DataLoader, an iterable of (inputs, targets) batches or tensors, got {type(data).__name__}"
        )
    return Batches(data, device, need_targets)
