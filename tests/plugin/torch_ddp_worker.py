"""One rank of the two-process gloo test (tests/plugin/test_torch_ddp.py), started by
``torch.multiprocessing.spawn``.  Each rank wraps the same trained weights in
DistributedDataParallel, reads only its shard of the batches (even batches on rank 0, odd on
rank 1), runs the check and the recalibration, and saves what it got for the parent to compare.
"""

from __future__ import annotations

import os
import traceback

import torch
import torch.distributed as dist
from torch import nn

from pytest_bncheck import BNCheckInputError, check_bn_consistency, recalibrate_batchnorm

LOSS = nn.CrossEntropyLoss()


def shard(x, y, batch_size: int, rank: int, world: int):
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return batches[rank::world]


def outcome(report, model) -> dict:
    return {
        "numbers": {
            "train": report.train_mode_metrics, "bn_only": report.bn_only_metrics,
            "inference": report.inference_metrics, "recalibrated": report.recalibrated_metrics,
        },
        "cause": report.cause,
        "samples": report.samples,
        "batches": report.batches,
        "layers": {layer.path: (layer.output_error, layer.mean_shift_max, layer.variance_ratio_max) for layer in report.layers},
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def run(rank: int, world: int, port: int, folder: str, mode: str) -> None:
    """``mode``: "ddp" (DistributedDataParallel), "sync" (SyncBatchNorm), "sync-uneven" (SyncBatchNorm
    with one batch fewer on rank 1: the check must refuse on both ranks instead of hanging)."""
    sync = mode.startswith("sync")
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        setup = torch.load(os.path.join(folder, "setup.pt"), weights_only=False)  # our own file
        model = setup["model"]
        model.train()
        if sync:
            # DistributedDataParallel refuses SyncBatchNorm on CPU modules (it is for GPUs), so on
            # these gloo ranks the SyncBatchNorm model runs in the process group unwrapped.
            model = wrapped = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            wrapped = nn.parallel.DistributedDataParallel(model)
        data = shard(setup["x"], setup["y"], setup["batch_size"], rank, world)
        if mode == "sync-uneven":
            data = data[:-1] if rank == 1 else data
            try:
                check_bn_consistency(wrapped, data, loss_fn=LOSS)
            except BNCheckInputError as error:
                torch.save({"error": str(error)}, os.path.join(folder, f"rank{rank}.pt"))
            dist.barrier()
            os._exit(0)
        report = check_bn_consistency(
            wrapped, data, loss_fn=LOSS, metrics={"accuracy": "accuracy"}, fit_metrics=setup["fit"],
            raise_on_failure=False,
        )
        result = outcome(report, model)  # the state as the check left it
        summary = recalibrate_batchnorm(wrapped, data)
        result["recalibrated_state"] = {k: v.clone() for k, v in model.state_dict().items()}
        result["summary_batches"] = summary.batches
        result["text"] = str(report)
        torch.save(result, os.path.join(folder, f"rank{rank}.pt"))
        dist.barrier()
    except BaseException:
        with open(os.path.join(folder, f"rank{rank}.err"), "w") as err:
            err.write(traceback.format_exc())
        os._exit(1)
    # torch 2.13's gloo sometimes aborts a process at destroy_process_group()/exit (about
    # 1 run in 10): after the final barrier, leave without tearing down.
    os._exit(0)
