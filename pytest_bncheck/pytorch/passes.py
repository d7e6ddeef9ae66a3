"""The forward passes of the check, none of which writes into the model.

Four views of the same weights, each one forward pass per batch under ``torch.no_grad()``:

* **train**: the training view (:func:`~.modules.training_view`): batch statistics, dropout on,
  as in the training loop.  BatchNorm running-statistic updates go to copies of the buffers
  (``torch.func.functional_call``), so nothing is updated;
* **BN-only train**: BatchNorm modules as in the training view, every other module in
  ``eval()`` (Dropout off): this and inference differ *only* in the statistics BatchNorm
  normalizes with, which is what makes the cause attribution sound.  When no module but
  BatchNorm acts differently in training (:func:`~.modules.has_other_training_behaviour`), it
  equals the train view and is not run again;
* **inference**: ``model.eval()``, the running statistics, as ``evaluate``/``predict`` see it;
* **recalibrated** (second read): ``eval()`` with the running statistics replaced, through
  ``functional_call``, by the pooled population statistics of the first read.

During the BN-only view a forward pre-hook on every BatchNorm module folds the per-channel
moments of its input into float64 :class:`~pytest_bncheck.stats.Moments` (Chan's exact
combination); only these vectors are kept, never a batch of activations.  The BN-only view, not
the train view, because inference runs with dropout off: its BatchNorm inputs are those of the
BN-only view, whose variance dropout would inflate ("variance shift", Li et al., CVPR 2019), and
the result does not depend on dropout's random masks (every rank of a distributed job and a
single process on the whole data get the same statistics).  Without dropout-like modules the two
views are one.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pytest_bncheck.errors import BNCheckInputError
from pytest_bncheck.pytorch._torch import torch
from pytest_bncheck.pytorch.data import Batch
from pytest_bncheck.pytorch.metrics import Metric, Totals, scalar
from pytest_bncheck.pytorch.modules import BatchNormModule
from pytest_bncheck.pytorch.state import set_modes
from pytest_bncheck.stats import Moments, combine

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def input_moments(x: Any) -> Moments:
    """``(n, mean, M2)`` per channel (dim 1) of one batch, as float64.

    Two passes in x's precision (at least float32): the mean, then the mean squared deviation
    from it, which is accurate where ``E[x**2] - E[x]**2`` cancels; on CPU it is also about 5x
    faster than ``torch.var_mean`` over these dimensions."""
    t = torch()
    values = x.detach()
    if values.dtype not in (t.float32, t.float64):
        values = values.to(t.float32)
    dims = [0, *range(2, values.dim())]
    mean = values.mean(dim=dims, keepdim=True)
    variance = (values - mean).square_().mean(dim=dims)
    count = values.numel() // values.shape[1]
    return Moments(float(count), mean.reshape(-1).to(t.float64), variance.to(t.float64) * count)


class MomentCapture:
    """Per-layer pooled moments of the BatchNorm inputs, recorded while ``active``."""

    def __init__(self, refs: list[BatchNormModule]):
        self.refs = refs
        self.active = False
        self.moments: list[Moments | None] = [None] * len(refs)

    def reset(self) -> None:
        self.moments = [None] * len(self.refs)

    def _hook(self, index: int):
        def record(module: Any, args: tuple) -> None:
            if self.active and args:
                batch = input_moments(args[0])
                seen = self.moments[index]
                self.moments[index] = batch if seen is None else combine(seen, batch)

        return record

    @contextmanager
    def installed(self):
        handles = [ref.module.register_forward_pre_hook(self._hook(i)) for i, ref in enumerate(self.refs)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


@dataclass
class CheckPass:
    """The first read: sample-weighted metric sums of three views, the BN-only view's moments."""

    train: dict[str, float]
    bn_only: dict[str, float]
    inference: dict[str, float]
    moments: list[Moments | None]
    batches: int
    samples: int
    largest_batch: int = 0


def _call(model: Any, inputs: Any, buffers: dict | None) -> Any:
    t = torch()
    if isinstance(inputs, dict):
        args, kwargs = (), inputs
    elif isinstance(inputs, (tuple, list)):
        args, kwargs = tuple(inputs), {}
    else:
        args, kwargs = (inputs,), {}
    if buffers:
        return t.func.functional_call(model, buffers, args, kwargs, strict=False)
    return model(*args, **kwargs)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


class Runner:
    """Runs the views of one model over batches; see the module docstring."""

    def __init__(self, model: Any, refs: list[BatchNormModule], view: dict[Any, bool],
                 metrics: dict[str, Metric], separate_bn_only: bool):
        self.model = model
        self.refs = refs
        self.metrics = metrics
        batchnorm = {id(r.module) for r in refs}
        self.train_flags = view
        self.bn_only_flags = {m: (flag if id(m) in batchnorm else False) for m, flag in view.items()}
        self.eval_flags = {m: False for m in view}
        self.separate_bn_only = separate_bn_only
        self.capture = MomentCapture(refs)

    def _scratch_buffers(self) -> dict[str, Any]:
        """Copies of the buffers that a training-mode forward would update."""
        scratch = {}
        for ref in self.refs:
            if ref.updates:
                for name in BUFFERS:
                    buffer = getattr(ref.module, name, None)
                    if buffer is not None:
                        scratch[ref.key(name)] = buffer.clone()
        return scratch

    def forward(self, batch: Batch, flags: dict[Any, bool], buffers: dict | None, view: str) -> Any:
        set_modes(flags)
        try:
            return _call(self.model, batch.inputs, buffers)
        except BNCheckInputError:
            raise
        except Exception as exc:  # the model's own error, reduced to one line
            raise BNCheckInputError(
                f"the model raised on batch {batch.index} ({view}): {_one_line(exc)}; pass data the model accepts"
            ) from None

    def _train_forward(self, batch: Batch, flags: dict[Any, bool], view: str) -> Any:
        """A training-mode forward: running-statistic updates go to scratch copies."""
        return self.forward(batch, flags, self._scratch_buffers(), view)

    def _observed_bn_only_forward(self, batch: Batch) -> Any:
        """The BN-only view's forward, folding each BatchNorm input's moments in."""
        self.capture.active = True
        try:
            view = "BN-only train mode" if self.separate_bn_only else "train mode"
            return self._train_forward(batch, self.bn_only_flags, view)
        finally:
            self.capture.active = False

    def measure(self, batch: Batch, output: Any) -> dict[str, float]:
        values = {}
        for name, metric in self.metrics.items():
            try:
                value = metric(output, batch.targets)
            except BNCheckInputError:
                raise
            except Exception as exc:
                who = "loss_fn" if name == "loss" else f"metric {name!r}"
                raise BNCheckInputError(
                    f"{who} raised on batch {batch.index}: {_one_line(exc)}; check that it takes (output, target)"
                ) from None
            values[name] = scalar(value, name, batch.index)
        return values

    def check_pass(self, batches: Any) -> CheckPass:
        names = list(self.metrics)
        train, bn_only, infer = Totals(names), Totals(names), Totals(names)
        self.capture.reset()
        count = largest = 0
        with self.capture.installed():
            for batch in batches:
                if self.separate_bn_only:
                    output = self._train_forward(batch, self.train_flags, "train mode")
                    train.add(self.measure(batch, output), batch.size)
                values = self.measure(batch, self._observed_bn_only_forward(batch))
                bn_only.add(values, batch.size)
                if not self.separate_bn_only:
                    train.add(values, batch.size)
                infer.add(self.measure(batch, self.forward(batch, self.eval_flags, None, "inference")), batch.size)
                count += 1
                largest = max(largest, batch.size)
        return CheckPass(train.sums, bn_only.sums, infer.sums, self.capture.moments, count, train.samples, largest)

    def moments_pass(self, batches: Any) -> tuple[list[Moments | None], int, int]:
        """Only the BN-only view's moments (for recalibration): one forward per batch, no metric."""
        self.capture.reset()
        count = samples = 0
        with self.capture.installed():
            for batch in batches:
                self._observed_bn_only_forward(batch)
                count += 1
                samples += batch.size
        return self.capture.moments, count, samples

    def inference_pass(self, batches: Any, buffers: dict[str, Any]) -> tuple[dict[str, float], int]:
        """Sample-weighted metric sums in ``eval()`` with ``buffers`` in place of the model's."""
        totals = Totals(list(self.metrics))
        for batch in batches:
            output = self.forward(batch, self.eval_flags, buffers, "inference, recalibrated")
            totals.add(self.measure(batch, output), batch.size)
        return totals.sums, totals.samples
