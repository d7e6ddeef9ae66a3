"""Cost of check_bn_consistency relative to one warm training epoch, and its peak memory.

Run:  python benchmarks/bench_consistency.py [--backend tensorflow|jax|torch] [--samples 2048]
      [--batch-size 32] [--repeats 3]

``--backend`` sets KERAS_BACKEND before Keras is imported (Keras fixes its backend then): one
backend per run, so the ratios of one run compare the check with fit on the same backend.

On a CNN with six BatchNormalization layers (random 32x32x3 images; no downloads) it
measures, after warming every compiled function up (tracing excluded):

* one training epoch: ``model.fit(epochs=1)``;
* one ``model.evaluate`` over the same data;
* the whole check: three forward passes per batch (training mode with the per-layer
  moments, inference, inference with recalibrated statistics) over two reads of the data;
* the check's first call, which includes tracing its compiled steps (reported separately);

and the peak resident memory (RSS, sampled every 2 ms from /proc) each phase adds over the
process's RSS just before it.  The ratio check / epoch is the number the README quotes.
"""

from __future__ import annotations

import os

# Our own process: quiet TensorFlow's start-up noise before it is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import sys  # noqa: E402

# Keras reads KERAS_BACKEND at import: take --backend from the command line before importing it.
if "--backend" in sys.argv[:-1]:
    os.environ["KERAS_BACKEND"] = sys.argv[sys.argv.index("--backend") + 1]

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import keras  # noqa: E402
from _memory import PeakRSS  # noqa: E402
from pytest_bncheck import check_bn_consistency  # noqa: E402


def cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    layers = [keras.Input((32, 32, 3))]
    for filters, stride in ((32, 1), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)):
        layers += [
            keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
        ]
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, activation="softmax")]
    model = keras.Sequential(layers, name="bench_cnn")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["acc"])
    return model


def timed(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"), default=None,
                        help="Keras backend (default: KERAS_BACKEND, else tensorflow)")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 0.25, (args.samples, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.samples)
    model = cnn()
    bs = args.batch_size

    model.fit(x, y, batch_size=bs, epochs=1, verbose=0)  # traces the train step
    model.evaluate(x, y, batch_size=bs, verbose=0)  # traces the test step

    def check():
        return check_bn_consistency(model, x, y, batch_size=bs, raise_on_failure=False)

    with PeakRSS() as cold_memory:
        start = time.perf_counter()
        check()
        cold = time.perf_counter() - start

    epoch = timed(lambda: model.fit(x, y, batch_size=bs, epochs=1, verbose=0), args.repeats)
    evaluate = timed(lambda: model.evaluate(x, y, batch_size=bs, verbose=0), args.repeats)
    warm = timed(check, args.repeats)
    with PeakRSS() as evaluate_memory:
        model.evaluate(x, y, batch_size=bs, verbose=0)
    with PeakRSS() as check_memory:
        check()

    steps = -(-args.samples // bs)
    print(f"backend: {keras.config.backend()}; model: {model.name}, {len(model.layers)} layers, 6 BatchNormalization; "
          f"data: {args.samples} x 32x32x3, batch_size {bs} ({steps} steps); {os.cpu_count()} CPU cores")
    print(f"warm training epoch (fit, epochs=1):  {epoch:7.3f} s")
    print(f"warm evaluate:                        {evaluate:7.3f} s")
    print(f"check, warm (tracing excluded):       {warm:7.3f} s   = {warm / epoch:.2f} x epoch, "
          f"{warm / evaluate:.2f} x evaluate")
    print(f"check, first call (with tracing):     {cold:7.3f} s   = {cold / epoch:.2f} x epoch")
    print(f"peak RSS added: evaluate {evaluate_memory.added_mb:6.1f} MiB, check (warm) {check_memory.added_mb:6.1f} MiB, "
          f"check (first call, with tracing) {cold_memory.added_mb:6.1f} MiB")


if __name__ == "__main__":
    main()
