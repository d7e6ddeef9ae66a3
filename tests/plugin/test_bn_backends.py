"""The Keras runtime tests on Keras's JAX and torch backends (TensorFlow: the rest of this
suite).  Keras fixes its backend at import, so each backend runs in its own pytest
subprocess with KERAS_BACKEND set.

Which tests: the check, recalibration, safety (bit-identical model, validate-before-write),
bad input, the callback (#20285 detection) and the audit's own tests, less LEFT_OUT, plus
backend_cases.py (PyDataset, torch DataLoader, no TensorFlow import); --bn-consistency runs
the bundled examples (seed ResNet50 and the healthy CNN) per backend below.  Left to the
TensorFlow run only: MirroredStrategy (tf.distribute is TensorFlow's), the statistics tests
(NumPy and hypothesis), the ResNet50 seed test (the examples run covers the seed) and the
pytester plugin tests (backend-independent option and marker handling).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SUBSET = [
    "test_bn_check.py", "test_bn_safety.py", "test_bn_bad_input.py", "test_bn_callback.py", "test_bn_audit.py",
    "backend_cases.py",
]
#: Left out on JAX and torch to keep within the suite's time budget: tests of backend-independent
#: logic (report text, metric directions, batch-order choice) and the slowest variations.
LEFT_OUT = (
    "not report_text and not metric_directions and not multi_input_multi_output and not class_weight "
    "and not batchnorm_and_dropout_model_with_better and not gap_shared_by_training and not called_twice "
    "and not batch_composition and not importing_the_package"
)
BACKENDS = ["jax", "torch"]


def run(argv: list[str], backend: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, KERAS_BACKEND=backend)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *argv],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
    )


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    pytest.importorskip(request.param)
    return request.param


def test_runtime_tests_pass_on_the_backend(backend):
    result = run(["-W", "ignore::DeprecationWarning", "-k", LEFT_OUT, *SUBSET], backend, HERE)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


def test_examples_fail_the_seed_with_cause_batchnorm_and_pass_the_healthy_model(backend):
    result = run(["--bn-consistency", "examples/keras", "-W", "ignore::DeprecationWarning"], backend, ROOT)
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BatchNormalization consistency check FAILED (cause: batchnorm)" in result.stdout
    assert "FAILED examples/keras/test_seed_resnet50.py::" in result.stdout
    assert "1 failed, 1 passed" in result.stdout
