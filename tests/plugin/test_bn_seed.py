"""The seed report: ResNet50 on three images, fit() says 1.0, evaluate() says 0.33."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pytest_bncheck import BNConsistencyError, check_bn_consistency, recalibrate_batchnorm

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "keras" / "test_seed_resnet50.py"


def load_example():
    spec = importlib.util.spec_from_file_location("seed_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_seed_resnet50_fails_with_cause_batchnorm_and_recalibration_fixes_it():
    model, images, labels, history = load_example().train_seed_model()
    assert history.history["acc"][-1] == 1.0
    with pytest.raises(BNConsistencyError) as raised:
        check_bn_consistency(model, images, labels)
    report = raised.value.report
    assert report.cause == "batchnorm"
    assert report.inference_metrics["acc"] < 0.5 and report.train_mode_metrics["acc"] == 1.0
    assert len(report.layers) == 53 and report.recalibration_closes_gap
    assert all(layer.initial_share == pytest.approx(0.99**5) for layer in report.layers)
    summary = recalibrate_batchnorm(model, images)
    assert len(summary.recalibrated) == 53
    after = check_bn_consistency(model, images, labels)
    assert after.passed and after.inference_metrics["acc"] == 1.0
