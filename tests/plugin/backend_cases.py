"""Cases for Keras's JAX and torch backends, run by test_bn_backends.py in a subprocess with
KERAS_BACKEND set (Keras fixes its backend at import: one backend per process).  Not collected
in the TensorFlow run: its file name does not start with ``test_``."""

from __future__ import annotations

import subprocess
import sys

import bn_models
import numpy as np
import pytest

import keras
from pytest_bncheck import check_bn_consistency, recalibrate_batchnorm
from test_bn_check import assert_identical, snapshot

BACKEND = keras.config.backend()


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size=32):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[part], self.y[part]


def test_keras_runs_on_the_backend_under_test():
    assert BACKEND in ("jax", "torch")


NO_TENSORFLOW = """
import sys

class Blocker:  # TensorFlow is installed (the test extra), but must not be needed: refuse it, note tries
    tried = []
    def find_spec(self, name, path=None, target=None):
        # importlib.util.find_spec (torch asks whether TensorFlow is there) gets the real answer;
        # an import is refused and noted.
        if name.split(".")[0] == "tensorflow" and sys._getframe(2).f_code.co_name != "find_spec":
            self.tried.append(name)
            raise ImportError("blocked: " + name)

sys.meta_path.insert(0, Blocker())
import bn_models
from pytest_bncheck import check_bn_consistency, recalibrate_batchnorm

model, x, y, _ = bn_models.undertrained()  # keras.utils.set_random_seed tries TensorFlow itself
Blocker.tried.clear()
report = check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False)
assert report.cause == "batchnorm", report.cause
recalibrate_batchnorm(model, x, batch_size=32)
assert "tensorflow" not in sys.modules and not Blocker.tried, Blocker.tried
"""


def test_a_check_and_a_recalibration_do_not_import_tensorflow():
    result = subprocess.run([sys.executable, "-c", NO_TENSORFLOW], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_pydataset_gives_the_same_numbers_as_arrays():
    model, x, y, _ = bn_models.undertrained()
    arrays = check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False, shuffle=False)
    dataset = check_bn_consistency(model, Batches(x, y), raise_on_failure=False, shuffle=False)
    assert dataset.cause == arrays.cause == "batchnorm"
    for name, value in arrays.inference_metrics.items():
        assert dataset.inference_metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="a torch DataLoader is fit()'s data on the torch backend")
def test_torch_dataloader_is_accepted_as_fit_accepts_it():
    import torch

    model, x, y, _ = bn_models.undertrained()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)), batch_size=32)
    before = snapshot(model)
    report = check_bn_consistency(model, loader, raise_on_failure=False)
    assert_identical(model, before)
    arrays = check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False, shuffle=False)
    assert report.cause == "batchnorm" and report.batches == 3
    assert report.inference_metrics["acc"] == pytest.approx(arrays.inference_metrics["acc"])


def test_recalibration_closes_the_gap_and_a_failed_one_writes_nothing():
    model, x, y, _ = bn_models.undertrained()
    bad = x.copy()
    bad[40, 3] = np.nan
    before = snapshot(model)
    with pytest.raises(Exception, match="NaN or inf"):
        recalibrate_batchnorm(model, bad, batch_size=32)
    assert_identical(model, before)
    recalibrate_batchnorm(model, x, batch_size=32)
    assert model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["acc"] == 1.0
