"""check_bn_consistency on real torch models: verdicts, causes, the five numbers, per-module diagnosis."""

from __future__ import annotations

import pytest
import torch
import torch_models
from torch import nn

from pytest_bncheck import BNConsistencyError, BNConsistencyReport, check_bn_consistency, recalibrate_batchnorm

LOSS = nn.CrossEntropyLoss()


def check(model, x, y, fit=None, **kwargs):
    kwargs.setdefault("raise_on_failure", False)
    return check_bn_consistency(
        model, (x, y), batch_size=32, loss_fn=LOSS, metrics={"accuracy": "accuracy"}, fit_metrics=fit, **kwargs
    )


@pytest.fixture(scope="module")
def undertrained():
    return torch_models.undertrained_mlp()


def test_classic_failure_is_caught_with_cause_batchnorm_and_fixed_by_recalibration(undertrained):
    model, x, y, fit = undertrained
    with pytest.raises(BNConsistencyError) as raised:
        check(model, x, y, fit, raise_on_failure=True)
    report = raised.value.report
    assert isinstance(report, BNConsistencyReport) and report.cause == "batchnorm"
    assert fit["accuracy"] == 1.0 and report.train_mode_metrics["accuracy"] == 1.0
    assert report.inference_metrics["accuracy"] < 0.95 and report.inference_metrics["loss"] > 3 * fit["loss"]
    assert report.recalibration_closes_gap is True and report.recalibrated_metrics["accuracy"] == 1.0
    text = str(report)
    assert text.splitlines()[0] == "BatchNorm consistency check FAILED (cause: batchnorm)"
    assert "recalibrate_batchnorm(model, data) closes the gap" in text
    assert "momentum 0.01 after 24 batches leaves 79%" in text  # 3 epochs x 8 batches; 0.99 ** 24

    copy = torch_models.mlp(momentum=0.01)
    copy.load_state_dict(model.state_dict())
    recalibrate_batchnorm(copy, (x, y), batch_size=32)
    after = check(copy, x, y, fit)
    assert after.passed and after.inference_metrics["accuracy"] == 1.0
    assert all(layer.output_error < 1e-3 for layer in after.layers)
    assert after.inference_metrics == pytest.approx(report.recalibrated_metrics, rel=1e-5)


def test_inference_numbers_are_what_eval_gives(undertrained):
    model, x, y, fit = undertrained
    report = check(model, x, y, fit)
    model.eval()
    with torch.no_grad():
        batches = [(model(x[i : i + 32]), y[i : i + 32]) for i in range(0, len(x), 32)]
    model.train()
    loss = sum(LOSS(o, t).item() * len(t) for o, t in batches) / len(x)
    accuracy = sum((o.argmax(1) == t).sum().item() for o, t in batches) / len(x)
    assert report.inference_metrics == pytest.approx({"loss": loss, "accuracy": accuracy}, rel=1e-6)


def test_healthy_model_passes():
    model, x, y, fit = torch_models.well_trained_mlp()
    report = check(model, x, y, {**fit, "lr": 0.01}, raise_on_failure=True)
    assert report.passed and report.cause is None and not report.advice
    assert "fit_metrics not computed here, left out: lr" in report.notes
    assert report.recalibrated_metrics is None and "the recalibration probe was not run" in str(report)
    assert all(layer.output_error < 0.2 for layer in report.layers)


def test_without_fit_metrics_inference_is_compared_with_bn_only_train_mode(undertrained):
    model, x, y, _ = undertrained
    report = check(model, x, y)
    assert report.reference == "bn_only" and report.cause == "batchnorm"
    assert all(c.fit == c.bn_only for c in report.comparisons)
    assert "no fit_metrics given" in str(report)


def test_bn_only_train_mode_turns_dropout_off_and_keeps_the_cause_batchnorm():
    model, x, y, fit = torch_models.undertrained_mlp(momentum=0.001, dropout=0.3)
    report = check(model, x, y, fit)
    assert report.bn_only_metrics is not None and report.bn_only_metrics != report.train_mode_metrics
    assert report.bn_only_metrics["loss"] < report.train_mode_metrics["loss"]  # dropout off
    assert report.cause == "batchnorm"
    assert "BN-only train mode is train mode" not in str(report)


class ShiftedAtInference(nn.Module):
    """A bug that is not BatchNorm's: the module acts differently in eval()."""

    def forward(self, x):
        return x if self.training else -x


def test_a_gap_batchnorm_does_not_explain_is_cause_other():
    x, y = torch_models.blobs()
    model = nn.Sequential(torch_models.mlp(momentum=0.1)[:-1], ShiftedAtInference(), nn.Linear(16, 3))
    fit = torch_models.train(model, x, y, epochs=20)
    report = check(model, x, y, fit)
    assert report.bn_only_metrics["loss"] > 2 * report.train_mode_metrics["loss"]  # the shift is on in BN-only
    assert report.cause == "other" and "does not explain it" in str(report)


def test_small_cnn_classic_failure_and_fix():
    x, y = torch_models.images()
    model = torch_models.SmallCNN()
    fit = torch_models.train(model, x, y, epochs=2)
    report = check(model, x, y, fit)
    assert report.cause == "batchnorm" and report.recalibration_closes_gap
    assert [layer.path for layer in report.layers] and {layer.path for layer in report.layers} == {"features.1", "features.4"}
    summary = recalibrate_batchnorm(model, x, batch_size=32)
    assert len(summary.recalibrated) == 2 and "recalibrated 2 BatchNorm modules of 'SmallCNN'" in str(summary)
    assert check(model, x, y, fit).passed


def test_torchvision_style_resnet18():
    x, y = torch_models.images(samples=96, size=32)
    x = x.expand(-1, 3, -1, -1).contiguous()
    model = torch_models.resnet18(num_classes=2)
    fit = torch_models.train(model, x, y, epochs=1)
    report = check(model, x, y, fit)
    assert len(report.layers) == 20 and report.cause == "batchnorm"
    assert "layer1.0.bn1" in {layer.path for layer in report.layers}
    assert report.recalibration_closes_gap


def test_per_module_diagnosis_facts():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 8), nn.BatchNorm1d(8, momentum=None), nn.ReLU(),
        nn.Linear(8, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.ReLU(),
        nn.Linear(8, 8), nn.BatchNorm1d(8, affine=False), nn.ReLU(),
        nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(),
        nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 3),
    )
    x, y = torch_models.blobs()
    for p in model[10].parameters():
        p.requires_grad_(False)
    fit = torch_models.train(model, x, y, epochs=1)
    model.train()
    model[13].eval()  # the loop keeps this one in eval: it normalizes with its running statistics in training
    report = check(model, x, y, fit)
    layers = {layer.path: layer for layer in report.layers}
    assert layers["1"].momentum is None and layers["1"].initial_share == 0.0 and layers["1"].updates == 8
    assert not layers["4"].track_running_stats and layers["4"].output_error == 0.0 and layers["4"].updates is None
    assert not layers["7"].affine and layers["7"].updates == 8
    assert layers["10"].params_frozen_in_train_mode and not layers["13"].params_frozen_in_train_mode
    assert layers["13"].frozen and not layers["10"].frozen
    assert layers["10"].initial_share == pytest.approx(0.9**8)
    text = str(report)
    assert "None (cumulative)" in text and "batch stats always" in text and "train, params frozen" in text
    assert "affine=False" in text and "track_running_stats=False" in text
    assert "the model's own training flags" in text
    model.eval()  # checked in eval mode: the training view is model.train()
    report = check(model, x, y, fit)
    assert not {layer.path: layer for layer in report.layers}["13"].frozen
    assert "model.train() (the model was in eval mode when checked)" in str(report)


def test_frozen_backbone_in_train_mode_is_reported_with_the_bn101_fix():
    model, _, _, _ = torch_models.well_trained_mlp()  # "pretrained": statistics converged on its data
    for p in model[:3].parameters():
        p.requires_grad_(False)  # frozen backbone, but the loop calls model.train(): its BatchNorm still updates
    x, y = torch_models.blobs(offset=-5.0, seed=1)  # fine-tuning data from elsewhere
    fit = torch_models.train(model, x, y, epochs=1)
    report = check(model, x, y, fit)
    assert report.cause == "batchnorm"
    assert [layer.path for layer in report.layers if layer.params_frozen_in_train_mode] == ["1"]
    assert any("requires_grad does not stop that" in advice for advice in report.advice)


def test_wrappers_are_unwrapped_for_inspection(undertrained):
    model, x, y, fit = undertrained
    plain = check(model, x, y, fit)
    for wrapped in (nn.DataParallel(model), torch.compile(model)):
        report = check(wrapped, x, y, fit)
        assert [layer.path for layer in report.layers] == [layer.path for layer in plain.layers]
        assert report.inference_metrics == plain.inference_metrics and report.model_name == "Sequential"


def test_data_forms_agree(undertrained):
    model, x, y, fit = undertrained
    dataset = torch.utils.data.TensorDataset(x, y)
    reports = [
        check_bn_consistency(model, data, yy, batch_size=bs, loss_fn=LOSS, fit_metrics={"loss": fit["loss"]},
                             raise_on_failure=False)
        for data, yy, bs in (
            ((x, y), None, 32),
            (x, y, 32),
            (torch.utils.data.DataLoader(dataset, batch_size=32), None, None),
            (dataset, None, 32),
            ([(x[i : i + 32], y[i : i + 32]) for i in range(0, len(x), 32)], None, None),
        )
    ]
    assert all(r.inference_metrics == reports[0].inference_metrics for r in reports)
    assert all(r.batches == 8 and r.samples == 256 and r.batch_size == 32 for r in reports)


def test_model_without_batchnorm_passes_with_a_note():
    x, y = torch_models.blobs()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    fit = torch_models.train(model, x, y, epochs=1)
    report = check(model, x, y, fit, raise_on_failure=True)
    assert report.passed and report.layers == [] and "has no BatchNorm module" in report.notes[0]
    assert recalibrate_batchnorm(model, (x, y), batch_size=32).recalibrated == []
