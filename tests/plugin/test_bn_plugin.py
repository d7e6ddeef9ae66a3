"""The plugin under real pytest runs (pytester subprocesses): audit, marker, fixture, modes, xdist.

Each subprocess that imports TensorFlow costs seconds, so each run below combines several
scenarios and the assertions check every outcome.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples" / "keras"

SCENARIOS = '''
import pytest
import bn_models


@pytest.fixture(scope="module")
def trained_in_fixture():
    return bn_models.undertrained()


def test_undertrained_fails():
    model, x, y, history = bn_models.undertrained()
    assert history.history["acc"][-1] == 1.0


@pytest.mark.bn_consistency(audit=False)
def test_opted_out():
    bn_models.undertrained()


@pytest.mark.bn_consistency(atol=10.0)
def test_marker_tolerance_beats_command_line():
    bn_models.undertrained()


@pytest.mark.bn_consistency(mode="warn")
def test_marker_warn_mode():
    bn_models.undertrained()


def test_fit_in_fixture_fails(trained_in_fixture):
    pass


def test_well_trained_passes():
    bn_models.well_trained()


@pytest.mark.bn_consistency(atol=0.0, rtol=0.0, audit=False)
def test_fixture_call_tolerance_beats_marker(bn_consistency):
    model, x, y, history = bn_models.undertrained()
    with pytest.raises(AssertionError):
        bn_consistency(model, x, y, batch_size=32)
    report = bn_consistency(model, x, y, batch_size=32, atol=10.0)
    assert report.passed and report.tolerance.atol == 10.0 and report.tolerance.rtol == 0.0


def test_fixture_fails_with_report(bn_consistency):
    model, x, y, history = bn_models.undertrained()
    bn_consistency(model, x, y, batch_size=32)


def test_fine_tuning_override_fails():
    model, x, y = bn_models.fine_tuning()
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)


@pytest.mark.bn_consistency(mode="bogus")
def test_marker_with_bad_mode():
    pass


@pytest.mark.bn_consistency(audit="no")
def test_marker_with_bad_audit():
    pass
'''


def write_project(pytester: pytest.Pytester, ini: str = "") -> None:
    pytester.makepyfile(bn_models=(HERE / "bn_models.py").read_text())
    pytester.makepyfile(test_scenarios=SCENARIOS)
    pytester.makeini(f"[pytest]\n{ini}\n")


def outcomes_by_test(result: pytest.RunResult) -> dict[str, str]:
    """From the -rA short summary: ``PASSED test_file.py::test_name`` lines."""
    outcomes = {}
    for line in result.outlines:
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR") and "::" in rest:
            outcomes[rest.split("::")[1].split()[0]] = word
    return outcomes


def test_audit_marker_fixture_and_precedence(pytester: pytest.Pytester):
    # ini says atol 100 (everything would pass); the command line's 0.05 beats it.
    write_project(pytester, ini="bn_atol = 100")
    pytester.makepyfile(test_example_cnn=(EXAMPLES / "test_small_cnn.py").read_text())
    result = pytester.runpytest_subprocess("--bn-consistency", "--bn-atol", "0.05", "-rA", "-p", "no:cacheprovider")
    outcomes = outcomes_by_test(result)
    assert outcomes == {
        "test_undertrained_fails": "FAILED",
        "test_opted_out": "PASSED",
        "test_marker_tolerance_beats_command_line": "PASSED",
        "test_marker_warn_mode": "PASSED",
        "test_fit_in_fixture_fails": "FAILED",
        "test_well_trained_passes": "PASSED",
        "test_fixture_call_tolerance_beats_marker": "PASSED",
        "test_fixture_fails_with_report": "FAILED",
        "test_small_cnn_learns_stripes": "PASSED",
        "test_fine_tuning_override_fails": "FAILED",
        "test_marker_with_bad_mode": "ERROR",
        "test_marker_with_bad_audit": "ERROR",
    }, result.stdout.str()
    text = result.stdout.str()
    assert "consistency check FAILED (cause: keras#20285)" in text
    assert "changed during fit() although it was called with training=False" in text
    assert "@pytest.mark.bn_consistency: mode must be one of 'fail', 'warn' or None, got 'bogus'" in text
    assert "@pytest.mark.bn_consistency: audit must be True or False, got 'no' (str)" in text
    assert "--bn-consistency: model.fit at " in text and "bn_models.py" in text
    assert "BatchNormalization consistency check FAILED (cause: batchnorm)" in text
    assert "BNConsistencyError" in text  # the fixture's failure
    assert "BNConsistencyWarning" in text  # the marker's warn mode
    assert "91% (9 updates)" in text  # counted by the audit: 3 epochs of 3 steps
    assert "91% (~9 updates)" in text  # estimated from optimizer.iterations by the fixture


def test_warn_mode_under_xdist(pytester: pytest.Pytester):
    write_project(pytester, ini="bn_consistency = true\nbn_consistency_mode = warn")
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", "-k", "test_undertrained_fails or test_fixture_fails_with_report"
    )
    # Both tests' fits only warn; the fixture's explicit check still fails its test.
    result.assert_outcomes(passed=1, failed=1, warnings=2)
    text = result.stdout.str()
    assert "bn_models.py:49: BNConsistencyWarning: --bn-consistency: model.fit at" in text
    assert "cause: batchnorm" in text


def test_without_the_flag_nothing_is_patched_and_tensorflow_is_not_imported(pytester: pytest.Pytester):
    pytester.makepyfile(
        test_plain="""
        import sys

        def test_plugin_loaded_but_idle(request):
            assert request.config.pluginmanager.hasplugin("bncheck")
            assert "tensorflow" not in sys.modules and "keras" not in sys.modules
            assert not any(type(f).__name__ == "_ImportWatcher" for f in sys.meta_path)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    help_text = pytester.runpytest_subprocess("--help").stdout.str()
    for option in ("--bn-consistency", "--bn-consistency-mode", "--bn-atol", "--bn-rtol", "bn_atol", "bn_rtol"):
        assert option in help_text
    markers = pytester.runpytest_subprocess("--markers").stdout.str()
    assert "@pytest.mark.bn_consistency(atol=None, rtol=None, audit=True, mode=None)" in markers


def test_tolerance_sources_in_precedence_order(pytester: pytest.Pytester):
    from pytest_bncheck.metrics import Tolerance, resolve
    from pytest_bncheck.plugin import tolerance_sources

    pytester.makeini("[pytest]\nbn_atol = 0.3\nbn_rtol = 0.4\n")
    config = pytester.parseconfigure("--bn-rtol", "0.2")
    assert resolve(*tolerance_sources(config, None)) == Tolerance(0.3, 0.2)
    assert resolve(*tolerance_sources(config, None, {"atol": 0.01})) == Tolerance(0.01, 0.2)


@pytest.mark.parametrize("args, kwargs, message", [
    ((0.1,), {}, "@pytest.mark.bn_consistency takes keyword arguments only (atol, rtol, audit, mode), got (0.1,)"),
    ((), {"tol": 0.1}, "@pytest.mark.bn_consistency got unknown argument(s) tol; it takes atol, rtol, audit, mode"),
    ((), {"atol": "big"}, "@pytest.mark.bn_consistency: atol"),
])
def test_marker_arguments_are_checked_in_one_line(args, kwargs, message):
    from pytest_bncheck import arguments
    from pytest_bncheck.errors import BNCheckInputError

    with pytest.raises(BNCheckInputError) as raised:
        arguments.marker("@pytest.mark.bn_consistency", args, kwargs, ("fail", "warn"))
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
