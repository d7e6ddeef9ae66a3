"""The numbers compared: ``loss_fn`` and the metrics, each a batch mean, averaged over samples.

``loss_fn(output, target)`` must return a scalar (a 0-dim or one-element tensor, or a float),
the batch mean as ``nn.CrossEntropyLoss()`` returns it with its default ``reduction='mean'``;
so must every metric.  A pass's value of a metric is the sample-weighted mean of its batch
values, ``sum_b(n_b * value_b) / sum_b(n_b)``, accumulated in float64, which is what a training
loop that averages ``loss.item()`` weighted by batch size reports for its epoch.
``"accuracy"`` (or ``"acc"``) names the built-in top-1 accuracy of class scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pytest_bncheck.errors import BNCheckInputError, BNCheckTypeError
from pytest_bncheck.pytorch._torch import torch

Metric = Callable[[Any, Any], Any]


def accuracy(output: Any, target: Any) -> Any:
    """Top-1 accuracy of class scores ``(batch, classes, ...)`` against class indices or one-hot targets."""
    if output.dim() < 2 or output.shape[1] < 2:
        raise BNCheckInputError(
            f"metric 'accuracy' needs class scores of shape (batch, classes), got {tuple(output.shape)}: "
            "pass your own callable for this output"
        )
    predicted = output.argmax(dim=1)
    if target.shape == output.shape and target.is_floating_point():
        target = target.argmax(dim=1)
    return (predicted == target).to(torch().float32).mean()


_BUILT_IN = {"accuracy": accuracy, "acc": accuracy}


def resolve_metrics(loss_fn: Any, metrics: Any) -> dict[str, Metric]:
    """``name -> callable(output, target)``: ``loss`` first, then the metrics in the order given."""
    resolved: dict[str, Metric] = {}
    if loss_fn is not None:
        if not callable(loss_fn):
            raise BNCheckTypeError(f"loss_fn must be a callable(output, target), got {type(loss_fn).__name__}")
        resolved["loss"] = loss_fn
    if metrics is None:
        items: list[tuple[str, Any]] = []
    elif isinstance(metrics, dict):
        items = list(metrics.items())
    elif isinstance(metrics, (list, tuple)) and all(isinstance(m, str) for m in metrics):
        items = [(m, m) for m in metrics]
    else:
        raise BNCheckTypeError(
            f"metrics must be a dict of name -> callable(output, target) (or 'accuracy'), got {type(metrics).__name__}"
        )
    for name, metric in items:
        if name in resolved:
            raise BNCheckInputError(f"metric {name!r} is given twice (loss_fn is named 'loss'): rename it")
        if isinstance(metric, str):
            if metric not in _BUILT_IN:
                raise BNCheckInputError(
                    f"unknown metric {metric!r}: the built-in one is 'accuracy'; pass a callable for others"
                )
            metric = _BUILT_IN[metric]
        if not callable(metric):
            raise BNCheckTypeError(f"metric {name!r} must be a callable(output, target), got {type(metric).__name__}")
        resolved[str(name)] = metric
    if not resolved:
        raise BNCheckInputError("nothing to compare: pass loss_fn= (the training loss) and/or metrics=")
    return resolved


def scalar(value: Any, name: str, batch: int) -> float:
    """A metric's batch value as a float, or a one-line error for a non-scalar."""
    t = torch()
    if isinstance(value, t.Tensor):
        if value.numel() != 1:
            fix = "use reduction='mean'" if name == "loss" else "return the batch mean"
            raise BNCheckInputError(
                f"{'loss_fn' if name == 'loss' else f'metric {name!r}'} returned a tensor of shape "
                f"{tuple(value.shape)} on batch {batch}, not a scalar: {fix}"
            )
        return float(value.detach().reshape(()).to(t.float64))
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BNCheckInputError(
            f"{'loss_fn' if name == 'loss' else f'metric {name!r}'} returned {type(value).__name__} on batch {batch}, "
            "not a number"
        ) from None


class Totals:
    """Sample-weighted sums of each metric over a pass (float64)."""

    def __init__(self, names: list[str]):
        self.sums = {name: 0.0 for name in names}
        self.samples = 0

    def add(self, values: dict[str, float], size: int) -> None:
        for name, value in values.items():
            self.sums[name] += value * size
        self.samples += size

    def means(self) -> dict[str, float]:
        return {name: (s / self.samples if self.samples else math.nan) for name, s in self.sums.items()}
