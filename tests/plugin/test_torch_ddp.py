"""DistributedDataParallel for real: two gloo processes on the CPU, each with half the batches,
get the same report and write the same statistics as one process on the whole data."""

from __future__ import annotations

import copy
import socket
import time

import pytest
import torch
import torch_ddp_worker
import torch_models
from torch import nn

from pytest_bncheck import check_bn_consistency, recalibrate_batchnorm

WORLD = 2
TIMEOUT = 120  # seconds; a run takes about 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(tmp_path, model, x, y, fit, batch_size: int, mode: str) -> list[dict]:
    torch.save({"model": model, "x": x, "y": y, "fit": fit, "batch_size": batch_size}, tmp_path / "setup.pt")
    try:
        ranks = torch.multiprocessing.spawn(
            torch_ddp_worker.run, args=(WORLD, free_port(), str(tmp_path), mode), nprocs=WORLD, join=False
        )
        deadline = time.monotonic() + TIMEOUT
        while not ranks.join(timeout=1):
            if time.monotonic() > deadline:  # a collective hung: don't hang the suite with it
                for process in ranks.processes:
                    process.kill()
                pytest.fail(f"the ranks did not finish within {TIMEOUT} s")
    except torch.multiprocessing.ProcessExitedException:
        errors = "\n".join(p.read_text() for p in sorted(tmp_path.glob("rank*.err")))
        pytest.fail(f"a rank failed:\n{errors}")
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD)]


def single_process(model, x, y, fit, batch_size: int) -> dict:
    model = copy.deepcopy(model)
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    report = check_bn_consistency(
        model, batches, loss_fn=torch_ddp_worker.LOSS, metrics={"accuracy": "accuracy"}, fit_metrics=fit,
        raise_on_failure=False,
    )
    result = torch_ddp_worker.outcome(report, model)
    recalibrate_batchnorm(model, batches)
    result["recalibrated_state"] = {k: v.clone() for k, v in model.state_dict().items()}
    return result


def assert_same_as_single_process(ranks: list[dict], single: dict, batches_per_rank: int, rel: float = 1e-6) -> None:
    """``rel``: the ranks combine the float64 moments in another order than one process does, and
    the float32 statistics made from them may differ in the last bit."""
    first, second = ranks
    # Every rank got the same report and wrote the same statistics, bit for bit.
    assert first["numbers"] == second["numbers"] and first["layers"] == second["layers"]
    assert all(torch.equal(first["recalibrated_state"][k], second["recalibrated_state"][k]) for k in first["state"])
    # ... and they are the single process's on the whole data (up to the order of float64 sums).
    for view, numbers in single["numbers"].items():
        if view != "train":  # train mode draws dropout masks, which differ from process to process
            assert first["numbers"][view] == pytest.approx(numbers, rel=rel), view
    assert first["cause"] == single["cause"] == "batchnorm"
    assert first["samples"] == single["samples"] and first["layers"].keys() == single["layers"].keys()
    for path, values in single["layers"].items():
        assert first["layers"][path] == pytest.approx(values, rel=rel)
    for key, value in single["recalibrated_state"].items():
        if key.endswith("num_batches_tracked"):
            assert int(first["recalibrated_state"][key]) == batches_per_rank  # each rank's training steps
        else:
            torch.testing.assert_close(first["recalibrated_state"][key], value, rtol=1e-6, atol=1e-7)
    assert "pooled over 2 ranks of torch.distributed" in first["text"]
    # The check itself left the model as it was; only the recalibration wrote.
    assert [k for k, v in single["state"].items() if not torch.equal(first["state"][k], v)] == []


@pytest.fixture(scope="module")
def trained():
    return torch_models.undertrained_mlp(dropout=0.2, momentum=0.001)


def test_ddp_ranks_pool_to_the_single_process_result(tmp_path, trained):
    model, x, y, fit = trained
    ranks = run_ranks(tmp_path, model, x, y, fit, batch_size=32, mode="ddp")
    assert_same_as_single_process(ranks, single_process(model, x, y, fit, batch_size=32), batches_per_rank=4)


def test_sync_batchnorm_normalizes_with_the_global_batch(tmp_path, trained):
    # SyncBatchNorm over 2 ranks x 32 samples is BatchNorm over the 64 samples of both halves.
    model, x, y, fit = trained
    ranks = run_ranks(tmp_path, model, x, y, fit, batch_size=32, mode="sync")
    single = single_process(model, x, y, fit, batch_size=64)  # batch j = rank 0's batch j + rank 1's batch j
    # float32 normalization with pooled vs one-pass statistics: equal to float32 rounding, not to the bit.
    assert_same_as_single_process(ranks, single, batches_per_rank=4, rel=1e-5)
    assert all(torch.equal(ranks[0]["state"][k], v) for k, v in single["state"].items())


def test_sync_batchnorm_with_uneven_shards_is_refused_on_every_rank(tmp_path, trained):
    model, x, y, fit = trained
    ranks = run_ranks(tmp_path, model, x, y, fit, batch_size=32, mode="sync-uneven")
    assert [r["error"] for r in ranks] == [
        "the ranks have different numbers of batches (3 to 4): SyncBatchNorm needs the same on every rank, as in "
        "training; shard the data evenly (DistributedSampler, drop_last=True)"
    ] * 2
