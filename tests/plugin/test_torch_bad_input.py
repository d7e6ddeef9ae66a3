"""Bad input to the torch backend: one line naming the problem and the fix, never a torch traceback."""

from __future__ import annotations

import pytest
import torch
import torch_models
from torch import nn

from pytest_bncheck import BNCheckInputError, check_bn_consistency, recalibrate_batchnorm

LOSS = nn.CrossEntropyLoss()


@pytest.fixture(scope="module")
def trained():
    return torch_models.undertrained_mlp(epochs=1)


def raised(call, *args, **kwargs) -> BNCheckInputError:
    with pytest.raises(BNCheckInputError) as info:
        call(*args, **kwargs)
    error = info.value
    message = str(error)
    assert "\n" not in message and len(message) < 320, message
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    return error


def test_not_a_module():
    error = raised(check_bn_consistency, object(), (torch.zeros(4, 16), torch.zeros(4)), batch_size=2, loss_fn=LOSS)
    assert isinstance(error, TypeError) and str(error).startswith("model must be a torch.nn.Module, got builtins.object")
    error = raised(recalibrate_batchnorm, "model", torch.zeros(2, 2), batch_size=1, device="cpu")
    assert isinstance(error, TypeError) and "torch.nn.Module" in str(error)


@pytest.mark.parametrize("data", ["empty list", "empty tensors", "empty loader"])
def test_data_that_yields_nothing(trained, data):
    model, x, y, _ = trained
    value = {
        "empty list": [],
        "empty tensors": (x[:0], y[:0]),
        "empty loader": torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:0], y[:0]), batch_size=4),
    }[data]
    error = raised(check_bn_consistency, model, value, batch_size=32, loss_fn=LOSS)
    assert "pass the data the model was trained on" in str(error)


def test_batches_that_are_not_pairs(trained):
    model, x, _, _ = trained
    error = raised(check_bn_consistency, model, [x[:32], x[32:64]], loss_fn=LOSS)
    assert str(error).startswith("batch 0 is a Tensor, not an (inputs, targets) pair")
    triples = [(x[:32], x[:32], x[:32])]
    assert "a tuple of length 3" in str(raised(check_bn_consistency, model, triples, loss_fn=LOSS))


def test_loss_that_is_not_a_scalar(trained):
    model, x, y, _ = trained
    error = raised(check_bn_consistency, model, (x, y), batch_size=32, loss_fn=nn.CrossEntropyLoss(reduction="none"))
    assert str(error) == "loss_fn returned a tensor of shape (32,) on batch 0, not a scalar: use reduction='mean'"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_in_the_data(trained, bad):
    model, x, y, _ = trained
    x = x.clone()
    x[70, 3] = bad
    error = raised(check_bn_consistency, model, (x, y), batch_size=32, loss_fn=LOSS)
    assert str(error).startswith("batch 2 of the data has NaN or inf in its inputs")


def test_shape_mismatch_is_the_modules_own_error_in_one_line_with_the_batch(trained):
    model, x, y, _ = trained
    error = raised(check_bn_consistency, model, (x[:, :10], y), batch_size=32, loss_fn=LOSS)
    assert str(error).startswith("the model raised on batch 0 (train mode): RuntimeError: mat1 and mat2 shapes cannot be multiplied")
    assert str(error).endswith("pass data the model accepts")


def test_one_shot_iterator_and_missing_batch_size(trained):
    model, x, y, _ = trained
    generator = ((x[i : i + 32], y[i : i + 32]) for i in range(0, 64, 32))
    error = raised(check_bn_consistency, model, generator, loss_fn=LOSS)
    assert isinstance(error, TypeError) and "one-shot generator: the check reads the data twice" in str(error)
    assert "tensor data needs batch_size=" in str(raised(check_bn_consistency, model, (x, y), loss_fn=LOSS))
    assert "batch_size must be a positive integer" in str(raised(check_bn_consistency, model, (x, y), batch_size=0, loss_fn=LOSS))


def test_metrics_and_fit_metrics_that_do_not_fit(trained):
    model, x, y, _ = trained
    data = {"data": (x, y), "batch_size": 32}
    assert "nothing to compare: pass loss_fn=" in str(raised(check_bn_consistency, model, **data))
    assert "unknown metric 'f1'" in str(raised(check_bn_consistency, model, **data, metrics={"f1": "f1"}))
    error = raised(check_bn_consistency, model, **data, loss_fn=LOSS, fit_metrics={"acc": 1.0})
    assert str(error).startswith("none of fit_metrics (acc) is computed here (loss): pass loss_fn=/metrics=")
    error = raised(check_bn_consistency, model, **data, loss_fn=LOSS, fit_metrics={"loss": float("nan")})
    assert "training diverged" in str(error)
    assert "atol must be a non-negative number" in str(raised(check_bn_consistency, model, **data, loss_fn=LOSS, atol=-1))


def test_lazy_module_never_run():
    model = nn.Sequential(nn.LazyLinear(4), nn.LazyBatchNorm1d())
    error = raised(check_bn_consistency, model, (torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)), batch_size=2, loss_fn=LOSS)
    assert "lazy modules that were never run (0, 1)" in str(error)
