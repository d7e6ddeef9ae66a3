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
"""

from __future__ import annotations

from typing import Any

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
