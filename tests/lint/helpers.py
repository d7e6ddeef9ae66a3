"""Running the linter in-process on a snippet, and as an installed command."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
from dataclasses import replace
from pathlib import Path

from lint.config import KerasTarget, Settings
from lint.engine import check_source
from lint.rule import all_rules

#: Rule examples are written for the Keras that all messages default to.
KERAS_3_15 = KerasTarget.parse("3.15.1", "tests")
ALL_CODES = tuple(r.code for r in all_rules())


def check(code: str, codes=ALL_CODES, target: KerasTarget = KERAS_3_15, fix: bool = False, **settings):
    """(codes found, fixed source or None) for a snippet, without worker processes."""
    config = replace(Settings(), target_keras=target, **settings)
    result = check_source("snippet.py", textwrap.dedent(code), config, tuple(codes), fix)
    assert result.error is None, result.error
    return [v[4] for v in result.violations], result.fixed_source, result


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
