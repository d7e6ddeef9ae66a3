"""Running the linter in-process on a snippet, and as an installed command."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import textwrap
from dataclasses import replace
from pathlib import Path

from lint.config import KerasTarget, Settings
from lint.engine import blank_string_statements, check_source, encoded_prefilter, prefilter_matches
from lint.rule import all_rules

#: Rule examples are written for the Keras that all messages default to.
KERAS_3_15 = KerasTarget.parse("3.15.1", "tests")
ALL_CODES = tuple(r.code for r in all_rules())


def check(code: str, codes=ALL_CODES, target: KerasTarget = KERAS_3_15, fix: bool = False, **settings):
    """(codes found, fixed source or None) for a snippet, without worker processes."""
    config = replace(Settings(), target_keras=target, **settings)
    source = textwrap.dedent(code)
    result = check_source("snippet.py", source, config, tuple(codes), fix)
    assert result.error is None, result.error
    found = [v[4] for v in result.violations]
    # Every snippet a rule flags doubles as a test that its text prefilter lets the file through,
    # docstrings left out as the engine leaves them out.
    text = blank_string_statements(source, ast.parse(source))
    for rule in all_rules():
        if rule.code in found:
            assert prefilter_matches(text, [encoded_prefilter(rule, config)]), f"{rule.code}'s prefilter skips this"
    return found, result.fixed_source, result


def bncheck_exe() -> str:
    """The console script as installed next to this interpreter."""
    exe = Path(sysconfig.get_path("scripts")) / ("bncheck.exe" if os.name == "nt" else "bncheck")
    return str(exe) if exe.exists() else "bncheck"


def run_cli(*args: str, cwd: Path | None = None, stdin: str | None = None, env: dict | None = None):
    return subprocess.run(
        [bncheck_exe(), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def python() -> str:
    return sys.executable
