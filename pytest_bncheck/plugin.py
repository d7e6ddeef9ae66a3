"""pytest plugin: the ``bn_consistency`` fixture and the ``--bn-consistency`` fit audit.

Only registration lives here (options, ini keys, the marker, the fixture and the hooks of the
audit); the work is in plain modules.  Loading this plugin imports neither TensorFlow nor
Keras: the audit wraps ``keras.Model.fit`` once the code under test imports Keras.

Tolerances: call arguments > ``@pytest.mark.bn_consistency(atol=, rtol=)`` > ``--bn-atol`` /
``--bn-rtol`` > ini ``bn_atol`` / ``bn_rtol`` > defaults (:mod:`pytest_bncheck.metrics`).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import pytest

from pytest_bncheck import arguments, audit
from pytest_bncheck.errors import BNCheckInputError, BNConsistencyWarning
from pytest_bncheck.metrics import resolve

MARKER = "bn_consistency"
MODES = ("fail", "warn")
_failures_key = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bn-consistency", "BatchNormalization train/inference consistency (pytest-bncheck)")
    group.addoption(
        "--bn-consistency", action="store_true", default=None,
        help="audit every keras Model.fit in the session: fail a test whose training leaves the model's "
        "inference inconsistent with its fit-time metrics",
    )
    group.addoption(
        "--bn-consistency-mode", choices=MODES, default=None,
        help="fail (default): the test fails with the report; warn: report as a warning, don't fail",
    )
    group.addoption("--bn-atol", type=float, default=None, help="absolute tolerance (default 0.05)")
    group.addoption("--bn-rtol", type=float, default=None, help="relative tolerance (default 0.1)")
    parser.addini("bn_consistency", "audit every Model.fit, as --bn-consistency", type="bool", default=False)
    parser.addini("bn_consistency_mode", "fail or warn, as --bn-consistency-mode", default="fail")
    parser.addini("bn_atol", "absolute tolerance of the BatchNormalization consistency check", default="")
    parser.addini("bn_rtol", "relative tolerance of the BatchNormalization consistency check", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(atol=None, rtol=None, audit=True, mode=None): tolerances for the bn_consistency fixture and "
        "the --bn-consistency audit; audit=False opts the test out of the audit; mode='warn' or 'fail'",
    )
    mode = config.getoption("bn_consistency_mode") or config.getini("bn_consistency_mode") or "fail"
    if mode not in MODES:
        raise pytest.UsageError(f"bn_consistency_mode must be one of {', '.join(MODES)}, got {mode!r}")
    enabled = config.getoption("bn_consistency")
    if enabled is None:
        enabled = config.getini("bn_consistency")
    if enabled:
        auditor = _Auditor(config, mode)
        config.pluginmanager.register(auditor, "bn-consistency-auditor")
        audit.when_imported("keras", lambda _module: audit.patch_fit(auditor.on_fit))


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.pluginmanager.get_plugin("bn-consistency-auditor") is not None:
        audit.remove_watchers()
        audit.unpatch_fit()


def _ini_tolerance(config: pytest.Config) -> dict:
    values = {}
    for key in ("atol", "rtol"):
        raw = str(config.getini(f"bn_{key}")).strip()
        if raw:
            try:
                values[key] = float(raw)
            except ValueError:
                raise pytest.UsageError(f"ini option bn_{key} must be a number, got {raw!r}") from None
    return values


def _marker_options(node: Any) -> dict:
    marker = node.get_closest_marker(MARKER) if node is not None else None
    return dict(marker.kwargs) if marker is not None else {}


def validate_marker(node: Any) -> None:
    """One line naming the marker's bad argument (raised before the test runs)."""
    marker = node.get_closest_marker(MARKER)
    if marker is not None:
        arguments.marker(f"@pytest.mark.{MARKER}", marker.args, marker.kwargs, MODES)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    try:
        validate_marker(item)
    except BNCheckInputError as exc:
        pytest.fail(str(exc), pytrace=False)


def tolerance_sources(config: pytest.Config, node: Any, call: dict | None = None) -> list[dict]:
    """Highest precedence first: call > marker > command line > ini."""
    cli = {"atol": config.getoption("bn_atol"), "rtol": config.getoption("bn_rtol")}
    return [call or {}, _marker_options(node), cli, _ini_tolerance(config)]


@pytest.fixture
def bn_consistency(request: pytest.FixtureRequest) -> Any:
    """``bn_consistency(model, x, y=None, **kwargs)``: ``check_bn_consistency`` with the
    configured tolerances (a Keras or a torch model, its arguments); fails the test with the
    report, returns it when the check passes."""
    config, node = request.config, request.node

    def check(model: Any, x: Any, y: Any = None, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        from pytest_bncheck.api import check_bn_consistency

        call = {"atol": kwargs.pop("atol", None), "rtol": kwargs.pop("rtol", None)}
        tolerance = resolve(*tolerance_sources(config, node, call))
        return check_bn_consistency(model, x, y, atol=tolerance.atol, rtol=tolerance.rtol, **kwargs)

    return check


def _relative(path: str) -> str:
    """``path`` relative to the current directory when it lies below it (shorter reports)."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


class _Auditor:
    """Runs the check after every fit made while a test runs (setup, call or teardown)."""

    def __init__(self, config: pytest.Config, mode: str):
        self.config = config
        self.mode = mode
        self.item: pytest.Item | None = None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Any) -> Any:
        self.item = item
        item.stash[_failures_key] = []
        try:
            yield
        finally:
            self.item = None

    def on_fit(self, model: Any, history: Any, arguments: dict) -> None:
        __tracebackhide__ = True
        item = self.item
        if item is None:
            return  # a fit outside any test (collection, module level): nothing to attribute it to
        options = _marker_options(item)
        if options.get("audit", True) is False:
            return
        mode = options.get("mode") or self.mode
        tolerance = resolve(*tolerance_sources(self.config, item))
        filename, lineno = arguments.pop("caller", ("?", 0))
        result = audit.audit_fit(model, history, arguments, {"atol": tolerance.atol, "rtol": tolerance.rtol})
        if isinstance(result, str):
            return
        if result.passed:
            return
        text = f"--bn-consistency: model.fit at {_relative(filename)}:{lineno} left {model.name!r} inconsistent\n{result}"
        if mode == "warn":
            # Attributed to the fit call, so the warnings summary points at the user's code.
            warnings.warn_explicit(BNConsistencyWarning(text), BNConsistencyWarning, filename, lineno)
        else:
            item.stash[_failures_key].append(text)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Any:
        outcome = yield
        report = outcome.get_result()
        if report.when != "call" or not report.passed:
            return
        failures = item.stash.get(_failures_key, [])
        if failures:
            report.outcome = "failed"
            report.longrepr = "\n\n".join(failures)


__all__ = ["BNCheckInputError", "bn_consistency"]
