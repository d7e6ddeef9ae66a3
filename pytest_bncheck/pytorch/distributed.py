"""Pooling across the ranks of a ``torch.distributed`` process group (DistributedDataParallel).

Each rank reads only its shard, so on its own it would see other statistics and other metrics
than its neighbours.  When ``torch.distributed`` is initialized with more than one rank, the
check gathers every rank's partial results and combines them the same way on every rank, in
rank order, so every rank gets the same report and writes the same statistics:

* moments: each rank's ``(n, mean, M2)`` per layer, combined with Chan's formula
  (:mod:`pytest_bncheck.stats`) in float64, rank 0 first; the result is the population moments
  of all shards together, exactly as if one process had read the whole data;
* metric sums and sample counts: added in rank order in float64.

``all_gather`` (not ``all_reduce``) is used so that the combination order, hence every bit of
the result, is the same on every rank.  Every rank must call the check (a collective).

SyncBatchNorm normalizes with the global batch's statistics in training; on CUDA ranks torch
does that itself, on CPU ranks (gloo) it refuses, and :func:`cpu_sync_batchnorm` does it for
the check's forward passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pytest_bncheck.errors import BNCheckInputError
from pytest_bncheck.pytorch._torch import torch
from pytest_bncheck.stats import Moments, combine


def world_size() -> int:
    """Ranks in the default process group, 1 when torch.distributed is not in use."""
    dist = torch().distributed
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def _gather(vector: Any) -> list[Any]:
    """Every rank's float64 ``vector`` (same length everywhere), in rank order, on the CPU."""
    t = torch()
    dist = t.distributed
    device = t.device("cuda", t.cuda.current_device()) if dist.get_backend() == "nccl" else t.device("cpu")
    local = vector.to(device=device, dtype=t.float64).contiguous()
    parts = [t.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return [p.cpu() for p in parts]


def pool_moments(moments: list[Moments | None], channels: list[int]) -> list[Moments | None]:
    """Every rank's per-layer moments combined (rank order), the same on every rank."""
    t = torch()
    if world_size() == 1:
        return moments
    pieces = []
    for m, c in zip(moments, channels):
        if m is None:
            pieces.append(t.zeros(1 + 2 * c, dtype=t.float64))
        else:
            pieces.append(t.cat([t.tensor([m.count], dtype=t.float64), m.mean.cpu(), m.m2.cpu()]))
    gathered = _gather(t.cat(pieces) if pieces else t.zeros(0, dtype=t.float64))
    pooled: list[Moments | None] = []
    offset = 0
    for c in channels:
        total: Moments | None = None
        for part in gathered:
            chunk = part[offset : offset + 1 + 2 * c]
            piece = Moments(float(chunk[0]), chunk[1 : 1 + c], chunk[1 + c :])
            if piece.count:
                total = piece if total is None else combine(total, piece)
        pooled.append(total)
        offset += 1 + 2 * c
    return pooled


def pool_sums(values: list[float]) -> tuple[list[float], list[float]]:
    """Sums over ranks (rank order) and maxima over ranks of each value."""
    t = torch()
    if world_size() == 1:
        return list(values), list(values)
    gathered = _gather(t.tensor(values, dtype=t.float64))
    sums, maxima = [0.0] * len(values), [float("-inf")] * len(values)
    for part in gathered:
        for i, value in enumerate(part.tolist()):
            sums[i] += value
            maxima[i] = max(maxima[i], value)
    return sums, maxima


def _global_batch_forward(module: Any, original: Any):
    """SyncBatchNorm's training-mode forward for CPU tensors, which torch's own refuses.

    Normalizes with the statistics of the *global* batch (every rank's part of it): each rank's
    ``(n, mean, M2)`` gathered and combined exactly, variance ``M2 / n`` (biased, as batch
    normalization uses it).  Forward only (the check never back-propagates) and no
    running-statistic update (the check discards those anyway).
    """
    t = torch()

    def forward(x: Any) -> Any:
        if not module.training or x.device.type != "cpu":
            return original(x)
        from pytest_bncheck.pytorch.passes import input_moments

        pooled = pool_moments([input_moments(x)], [int(x.shape[1])])[0]
        mean, variance = pooled.mean.to(x.dtype), pooled.variance.to(x.dtype)
        return t.nn.functional.batch_norm(x, mean, variance, module.weight, module.bias, False, 0.0, module.eps)

    return forward


def require_lockstep(modules: list[Any], batches: Any) -> None:
    """With SyncBatchNorm across ranks, every rank must read the same number of batches (each
    training-mode forward is a collective); refuse, on every rank alike, when they would not,
    instead of hanging.  Sources without ``len`` cannot be checked in advance."""
    if not any(isinstance(m, torch().nn.SyncBatchNorm) for m in modules) or world_size() == 1:
        return
    count = batches.count()
    value = -1.0 if count is None else float(count)
    _, (high, negated_low) = pool_sums([value, -value])
    low = -negated_low
    if low >= 0 and low != high:  # low < 0: some rank cannot tell in advance
        raise BNCheckInputError(
            f"the ranks have different numbers of batches ({int(low)} to {int(high)}): SyncBatchNorm needs the same on "
            "every rank, as in training; shard the data evenly (DistributedSampler, drop_last=True)"
        )


@contextmanager
def cpu_sync_batchnorm(modules: list[Any]) -> Iterator[None]:
    """Let SyncBatchNorm modules run in training mode on CPU ranks (gloo), for the duration.

    torch's SyncBatchNorm synchronizes only CUDA-like tensors and raises on CPU ones when a
    process group is initialized; the check gives them the same global-batch normalization
    (:func:`_global_batch_forward`).  Like SyncBatchNorm itself, this is a collective per
    training-mode forward: every rank must read the same number of batches.
    """
    sync = [m for m in modules if isinstance(m, torch().nn.SyncBatchNorm)] if world_size() > 1 else []
    own = [m.__dict__.get("forward") for m in sync]  # an instance-level forward of the user's, if any
    for module in sync:
        module.forward = _global_batch_forward(module, module.forward)
    try:
        yield
    finally:
        for module, previous in zip(sync, own):
            if previous is None:
                del module.forward
            else:
                module.forward = previous
