"""Leaving the model bit-identical: the check changes nothing it does not put back.

The passes never write into the model: training-mode forwards run through
``torch.func.functional_call`` with *copies* of the BatchNorm buffers, so the running-statistic
update (and ``num_batches_tracked += 1``) lands in the copies; everything runs under
``torch.no_grad()``, so no ``.grad`` is touched and ``requires_grad`` is never set.  What the
passes do change, and :func:`preserved` restores on every exit path (errors included):

* the ``training`` flag of every module (the views switch them);
* the global RNG state (dropout draws from it, and so does a shuffling DataLoader's sampler):
  ``torch.random.fork_rng`` saves the CPU generator and the generator of the model's
  accelerator, so a training run continued after the check draws the same numbers as one
  continued without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pytest_bncheck.pytorch._torch import torch


def set_modes(flags: dict[Any, bool]) -> None:
    """Set each module's own ``training`` flag (not recursively, unlike ``Module.train``)."""
    for module, flag in flags.items():
        module.training = flag


@contextmanager
def preserved(model: Any, device: Any) -> Iterator[None]:
    """Restore every module's training flag and the RNG state when the block exits."""
    t = torch()
    flags = {m: m.training for m in model.modules()}
    devices = [] if device.type == "cpu" else [device]
    with t.random.fork_rng(devices=devices, device_type=device.type), t.no_grad():
        try:
            yield
        finally:
            set_modes(flags)
