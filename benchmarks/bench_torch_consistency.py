"""Cost of the PyTorch check and recalibration relative to one training epoch, their peak memory,
and the exactness of the recalibration against torch.optim.swa_utils.update_bn.

Run:  python benchmarks/bench_torch_consistency.py [--samples 2048] [--batch-size 64] [--repeats 3]

A small CNN (four Conv2d + BatchNorm2d + ReLU blocks, global average pooling, a linear head) on
random 32x32x3 images (no downloads), torch's default threads (one per core) unless
``--threads``.  Everything is measured in one process, after one warm-up round, as the median of
``--repeats`` rounds in which the phases take turns:

* one training epoch: forward, cross-entropy, backward, SGD step, per batch;
* one ``eval()`` pass under ``torch.no_grad()`` with the loss;
* the whole check (``check_bn_consistency`` with loss and accuracy, no ``fit_metrics``) on the
  trained model, which passes: one read, two forward passes per batch (no Dropout: BN-only
  train mode is train mode); and on the same weights with reset running statistics, which
  fails and so also runs the recalibration probe (a second read, one forward pass per batch);
* ``recalibrate_batchnorm``: one forward pass per batch;
* ``update_bn``, for comparison.

Peak memory is the resident set size sampled every 2 ms from /proc above the RSS just before
the phase; "one batch of activations" is the size of every module's output for one batch.

Exactness: on data whose batches have different means (batch i brightened by 0.05 * i), the
running_var of the first BatchNorm (whose inputs are conv1's outputs, computable exactly in
float64 over the whole data) after our recalibration and after update_bn, as the largest
relative error against the exact unbiased population variance.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from _memory import PeakRSS
from pytest_bncheck import check_bn_consistency, recalibrate_batchnorm


def cnn() -> nn.Module:
    torch.manual_seed(0)
    blocks, channels = [], 3
    for width, stride in ((32, 1), (64, 2), (64, 1), (128, 2)):
        blocks += [nn.Conv2d(channels, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


def batches_of(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def timed(phases: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each phase; the phases take turns (one warm-up round first), so that a
    change in the machine's load over the run affects them alike."""
    times: dict[str, list[float]] = {name: [] for name in phases}
    for round_ in range(repeats + 1):
        for name, function in phases.items():
            start = time.perf_counter()
            function()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def activation_mb(model: nn.Module, batch) -> float:
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.numel() * o.element_size()))
             for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model.eval()
        model(batch)
    for hook in hooks:
        hook.remove()
    return sum(sizes) / 2**20


def exactness(x, size: int) -> tuple[float, float]:
    """Largest relative error of the first BatchNorm's running_var: ours, update_bn's."""
    shifted = torch.cat([b + 0.05 * i for i, (b, _) in enumerate(batches_of(x, x, size))])
    model = cnn()
    with torch.no_grad():
        inputs = model[0](shifted).double()
    exact = inputs.transpose(0, 1).reshape(inputs.shape[1], -1).var(dim=1)
    errors = []
    for recalibrate in (lambda m, b: recalibrate_batchnorm(m, b), lambda m, b: update_bn(b, m)):
        copy = cnn()
        recalibrate(copy, [b for b, _ in batches_of(shifted, shifted, size)])
        errors.append(float(((copy[1].running_var.double() - exact).abs() / exact).max()))
    return errors[0], errors[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(0)
    x = 0.5 + 0.25 * torch.randn(args.samples, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (args.samples,), generator=generator)
    batches = batches_of(x, y, args.batch_size)
    model = cnn()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def epoch():
        model.train()
        for xb, yb in batches:
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()

    def evaluate():
        model.eval()
        with torch.no_grad():
            return sum(loss_fn(model(xb), yb).item() * len(yb) for xb, yb in batches) / len(x)

    def check(on=model):
        on.train()
        return check_bn_consistency(on, batches, loss_fn=loss_fn, metrics={"accuracy": "accuracy"},
                                    raise_on_failure=False)

    # Trained weights with running statistics reset to mean 0 / variance 1: the check fails, so it
    # also runs the recalibration probe (a second read of the data).
    for _ in range(3):
        epoch()
    failing = copy.deepcopy(model)
    for module in failing.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()

    def recalibrate():
        model.train()
        return recalibrate_batchnorm(model, batches)

    def swa_update_bn():
        update_bn([b for b, _ in batches], model)

    seconds = timed(
        {"epoch": epoch, "eval": evaluate, "check": check, "check_failing": lambda: check(failing),
         "recalibrate": recalibrate, "update_bn": swa_update_bn},
        args.repeats,
    )
    epoch_s, eval_s, check_s, failing_s, recal_s, update_bn_s = seconds.values()
    assert check().passed and not check(failing).passed
    with PeakRSS() as eval_memory:
        evaluate()
    with PeakRSS() as check_memory:
        check(failing)
    with PeakRSS() as recal_memory:
        recalibrate()
    ours, theirs = exactness(x, args.batch_size)

    print(f"model: small CNN, 4 Conv2d + BatchNorm2d blocks; data: {args.samples} x 3x32x32, batch_size "
          f"{args.batch_size} ({len(batches)} batches); torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"training epoch:             {epoch_s:7.3f} s")
    print(f"eval() pass:                {eval_s:7.3f} s")
    print(f"check, passing model:       {check_s:7.3f} s  = {check_s / epoch_s:.2f} x epoch, {check_s / eval_s:.2f} x eval pass")
    print(f"check, failing (with probe): {failing_s:6.3f} s  = {failing_s / epoch_s:.2f} x epoch, {failing_s / eval_s:.2f} x eval pass")
    print(f"recalibrate_batchnorm:      {recal_s:7.3f} s  = {recal_s / epoch_s:.2f} x epoch")
    print(f"swa_utils.update_bn:        {update_bn_s:7.3f} s  = {update_bn_s / epoch_s:.2f} x epoch")
    print(f"one batch of activations:   {activation_mb(model, batches[0][0]):7.1f} MiB")
    print(f"peak RSS added: eval() pass {eval_memory.added_mb:.1f} MiB, check (failing, with probe) {check_memory.added_mb:.1f} MiB, "
          f"recalibration {recal_memory.added_mb:.1f} MiB")
    print(f"running_var of the first BatchNorm, batches with different means, largest relative error vs exact: "
          f"recalibrate_batchnorm {ours:.1e}, update_bn {theirs:.1e}")


if __name__ == "__main__":
    main()
