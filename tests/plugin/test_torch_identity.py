"""The model is bit-identical after every call, error paths included, and the RNG state is restored."""

from __future__ import annotations

import pytest
import torch
import torch_models
from torch import nn

from pytest_bncheck import BNCheckInputError, BNConsistencyError, check_bn_consistency, recalibrate_batchnorm

LOSS = nn.CrossEntropyLoss()


def snapshot(model: nn.Module) -> dict:
    """Every parameter and buffer (value, dtype, requires_grad, .grad) and every module's training flag."""
    state = {}
    for name, p in model.named_parameters():
        grad = None if p.grad is None else p.grad.clone()
        state[f"param {name}"] = (p.detach().clone(), p.requires_grad, grad)
    for name, b in model.named_buffers():
        state[f"buffer {name}"] = (b.clone(), b.dtype)
    for name, m in model.named_modules():
        state[f"training {name}"] = m.training
    return state


def assert_identical(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()

    def same(a, b):
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        if isinstance(a, tuple):
            return all(same(x, y) for x, y in zip(a, b, strict=True))
        return a == b

    changed = [key for key in before if not same(before[key], after[key])]
    assert not changed, f"the call changed {changed}"


@pytest.fixture
def trained_with_grads():
    """Dropout (draws random numbers), a frozen part, a module in eval, and .grad left by the last step."""
    x, y = torch_models.blobs()
    model = torch_models.mlp(momentum=None, dropout=0.3)
    for p in model[0].parameters():
        p.requires_grad_(False)
    fit = torch_models.train(model, x, y, epochs=2)
    model.train()
    model[4].eval()  # a Linear the loop left in eval: its flag must survive too
    assert any(p.grad is not None for p in model.parameters())
    return model, x, y, fit


CALLS = {
    "check": lambda m, x, y, fit: check_bn_consistency(
        m, (x, y), batch_size=32, loss_fn=LOSS, metrics={"accuracy": "accuracy"}, fit_metrics=fit, raise_on_failure=False
    ),
    "check raising": lambda m, x, y, fit: check_bn_consistency(
        m, (x, y), batch_size=32, loss_fn=LOSS, fit_metrics={"loss": -1.0}
    ),
    "recalibrate, bad data": lambda m, x, y, fit: recalibrate_batchnorm(m, (x[:, :5], y), batch_size=32),
    "check, loss not scalar": lambda m, x, y, fit: check_bn_consistency(
        m, (x, y), batch_size=32, loss_fn=nn.CrossEntropyLoss(reduction="none")
    ),
    "check, NaN in batch 3": lambda m, x, y, fit: check_bn_consistency(
        m, (torch.cat([x[:100], torch.full((1, 16), float("nan")), x[101:]]), y), batch_size=32, loss_fn=LOSS
    ),
}


@pytest.mark.parametrize("call", CALLS)
def test_every_call_leaves_the_model_and_the_rng_bit_identical(trained_with_grads, call):
    model, x, y, fit = trained_with_grads
    torch.manual_seed(123)
    before = snapshot(model)
    rng = torch.get_rng_state()
    try:
        CALLS[call](model, x, y, fit)
    except (BNCheckInputError, BNConsistencyError):
        assert call != "check"
    assert_identical(before, snapshot(model))
    assert torch.equal(rng, torch.get_rng_state())


def test_recalibration_writes_only_the_running_statistics(trained_with_grads):
    model, x, y, _ = trained_with_grads
    before = snapshot(model)
    recalibrate_batchnorm(model, (x, y), batch_size=32)
    after = snapshot(model)
    written = {key for key in before if "running_" in key or "num_batches_tracked" in key}
    assert written == {f"buffer {i}.{b}" for i in (1, 5) for b in ("running_mean", "running_var", "num_batches_tracked")}
    assert_identical({k: v for k, v in before.items() if k not in written}, {k: v for k, v in after.items() if k not in written})
    assert all(not torch.equal(before[k][0], after[k][0]) for k in written)


def test_training_continues_as_if_nothing_happened():
    def run(check: bool):
        x, y = torch_models.blobs()
        model = torch_models.mlp(dropout=0.3)
        torch_models.train(model, x, y, epochs=1)
        if check:
            CALLS["check"](model, x, y, None)
        shuffled = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for xb, yb in shuffled:  # dropout and the shuffling draw from the global RNG
            optimizer.zero_grad()
            LOSS(model(xb), yb).backward()
            optimizer.step()
        return snapshot(model)

    assert_identical(run(False), run(True))
