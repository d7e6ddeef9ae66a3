"""The bn_consistency fixture on torch models, through a real pytest run (pytester subprocess)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_bn_plugin import outcomes_by_test

HERE = Path(__file__).resolve().parent

SCENARIOS = '''
import sys

import pytest
import torch_models
from torch import nn

LOSS = nn.CrossEntropyLoss()


def test_undertrained_fails(bn_consistency):
    model, x, y, fit = torch_models.undertrained_mlp()
    bn_consistency(model, (x, y), batch_size=32, loss_fn=LOSS, metrics={"accuracy": "accuracy"}, fit_metrics=fit)


def test_well_trained_passes_and_returns_the_report(bn_consistency):
    model, x, y, fit = torch_models.well_trained_mlp()
    report = bn_consistency(model, x, y, batch_size=32, loss_fn=LOSS, fit_metrics=fit)
    assert report.passed and len(report.layers) == 2


@pytest.mark.bn_consistency(atol=10.0)
def test_marker_tolerance(bn_consistency):
    model, x, y, fit = torch_models.undertrained_mlp()
    report = bn_consistency(model, (x, y), batch_size=32, loss_fn=LOSS, fit_metrics=fit)
    assert report.passed and report.tolerance.atol == 10.0 and report.tolerance.rtol == 0.0


def test_the_torch_path_imported_neither_keras_nor_tensorflow():
    assert "torch" in sys.modules
    assert "keras" not in sys.modules and "tensorflow" not in sys.modules
'''


def test_fixture_on_torch_models(pytester: pytest.Pytester):
    pytester.makepyfile(torch_models=(HERE / "torch_models.py").read_text())
    pytester.makepyfile(test_torch_scenarios=SCENARIOS)
    pytester.makeini("[pytest]\nbn_rtol = 0\n")
    result = pytester.runpytest_subprocess("-rA", "-p", "no:cacheprovider", "-p", "no:randomly")
    assert outcomes_by_test(result) == {
        "test_undertrained_fails": "FAILED",
        "test_well_trained_passes_and_returns_the_report": "PASSED",
        "test_marker_tolerance": "PASSED",
        "test_the_torch_path_imported_neither_keras_nor_tensorflow": "PASSED",
    }, result.stdout.str()
    text = result.stdout.str()
    assert "BNConsistencyError" in text and "BatchNorm consistency check FAILED (cause: batchnorm)" in text
    assert "model 'Sequential' (PyTorch): 256 samples in 8 batches, batch_size 32; 2 BatchNorm modules" in text


def test_loading_the_plugin_and_the_package_imports_no_framework(pytester: pytest.Pytester):
    pytester.makepyfile(
        test_plain="""
        import sys

        import pytest_bncheck
        from pytest_bncheck.api import backend, framework_of

        def test_idle():
            assert framework_of(object()) is None and backend(object(), {}) == "keras"
            assert backend(object(), {"loss_fn": None}) == "torch"
            assert not {"torch", "keras", "tensorflow"} & set(sys.modules)
            assert pytest_bncheck.check_bn_consistency.__module__ == "pytest_bncheck.api"
            assert not {"torch", "keras", "tensorflow"} & set(sys.modules)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_readme_example_prints_the_report_the_readme_shows(pytester: pytest.Pytester):
    readme = (HERE.parents[1] / "README.md").read_text().split("\n### PyTorch\n", 1)[1]
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    shown = readme.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    pytester.makepyfile(test_readme_example=example)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    printed = [line[1:].strip() for line in result.outlines if line.startswith("E ")]
    for line in shown[:2] + [row for row in shown if "FAIL:" in row or row.strip().startswith("1 ")]:
        assert any(line.strip() in p for p in printed), line
