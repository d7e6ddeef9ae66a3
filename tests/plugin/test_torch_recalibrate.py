"""recalibrate_batchnorm on torch models: exact population statistics, where update_bn is not."""

from __future__ import annotations

import pytest
import torch
import torch_models
from torch import nn
from torch.optim.swa_utils import update_bn

from pytest_bncheck import BNCheckInputError, recalibrate_batchnorm


def shifted_batches(batches: int = 6, size: int = 32, features: int = 4, seed: int = 0):
    """Batches whose means differ (batch i is centred on 2 * i): the between-batch spread is most
    of the population variance, which an average of per-batch variances drops."""
    generator = torch.Generator().manual_seed(seed)
    return [(2.0 * i + torch.randn(size, features, generator=generator), torch.zeros(size, dtype=torch.long))
            for i in range(batches)]


def test_statistics_are_the_exact_population_statistics_where_update_bn_is_not():
    data = shifted_batches()
    everything = torch.cat([x for x, _ in data]).double()
    exact_mean, exact_var = everything.mean(0), everything.var(0, unbiased=True)

    ours = nn.Sequential(nn.BatchNorm1d(4))
    summary = recalibrate_batchnorm(ours, data)
    bn = ours[0]
    torch.testing.assert_close(bn.running_mean.double(), exact_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), exact_var, rtol=1e-6, atol=1e-6)
    assert int(bn.num_batches_tracked) == 6 and summary.batches == 6 and summary.samples == 192

    theirs = nn.Sequential(nn.BatchNorm1d(4))
    update_bn([x for x, _ in data], theirs)
    torch.testing.assert_close(theirs[0].running_mean.double(), exact_mean, rtol=1e-6, atol=1e-6)  # means average fine
    assert (theirs[0].running_var.double() < 0.5 * exact_var).all()  # variances do not: the spread of means is lost


def test_deeper_layers_get_the_population_statistics_of_their_training_mode_inputs():
    data = shifted_batches(features=8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        inputs = torch.cat([model[0](x) for x, _ in data]).double()
    recalibrate_batchnorm(model, data)
    torch.testing.assert_close(model[1].running_mean.double(), inputs.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model[1].running_var.double(), inputs.var(0), rtol=1e-5, atol=1e-5)


def test_images_pool_over_batch_and_spatial_positions():
    x, _ = torch_models.images(samples=64)
    model = nn.Sequential(nn.BatchNorm2d(1))
    recalibrate_batchnorm(model, x, batch_size=16)
    values = x.double().transpose(0, 1).reshape(1, -1)
    torch.testing.assert_close(model[0].running_mean.double(), values.mean(1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model[0].running_var.double(), values.var(1), rtol=1e-6, atol=1e-6)


def test_modules_without_running_statistics_or_in_eval_during_training_are_left_alone():
    data = shifted_batches()
    model = nn.Sequential(nn.BatchNorm1d(4, track_running_stats=False), nn.BatchNorm1d(4), nn.BatchNorm1d(4))
    model.train()
    model[2].eval()
    stored = model[2].running_mean.clone(), model[2].running_var.clone(), model[2].num_batches_tracked.clone()
    summary = recalibrate_batchnorm(model, data)
    assert [r.path for r in summary.recalibrated] == ["1"]
    assert summary.skipped_no_running_stats == ["0"] and summary.skipped_frozen == ["2"]
    assert model[0].running_mean is None
    assert all(torch.equal(a, b) for a, b in zip(stored, (model[2].running_mean, model[2].running_var, model[2].num_batches_tracked)))
    assert "track_running_stats=False" in str(summary) and "in eval() during training" in str(summary)


def test_nothing_is_written_unless_every_statistic_is_finite():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4), nn.BatchNorm1d(4))
    with torch.no_grad():
        model[2].weight.fill_(3e38)  # the second BatchNorm's inputs overflow to inf
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(BNCheckInputError, match=r"^the inputs of 3 have non-finite statistics .* nothing was written"):
        recalibrate_batchnorm(model, shifted_batches())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # not even the first BatchNorm


def test_diagnosis_after_recalibration_says_no_initial_values_are_left():
    from pytest_bncheck import check_bn_consistency

    model, x, y, fit = torch_models.undertrained_mlp()
    recalibrate_batchnorm(model, (x, y), batch_size=32)
    report = check_bn_consistency(model, (x, y), batch_size=32, loss_fn=nn.CrossEntropyLoss(), fit_metrics={"loss": fit["loss"]})
    assert all(layer.initial_share == 0.0 and layer.updates_source == "recalibrated" for layer in report.layers)
    assert "0% (recalibrated)" in str(report)
