"""Shared by the benchmark scripts: the keras source tree, the bncheck command, timing."""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path


def keras_tree() -> Path:
    """site-packages/keras of the interpreter running this script (found without importing keras)."""
    spec = importlib.util.find_spec("keras")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("keras is not installed for this interpreter; run with the project's venv python")
    return Path(next(iter(spec.submodule_search_locations)))


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if p.is_file())


def bncheck() -> str:
    exe = Path(sysconfig.get_path("scripts")) / "bncheck"
    return str(exe) if exe.exists() else "bncheck"


def timed(command: list[str], runs: int, **kwargs) -> tuple[float, list[float], subprocess.CompletedProcess]:
    """Median wall seconds of ``runs`` runs (each a fresh process), all times, the last result."""
    times = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def timed_interleaved(commands: list[tuple[list[str], dict]], runs: int):
    """Like ``timed`` for several commands, run in turn (A, B, A, B, ...) so that the load of a
    shared machine falls on all of them alike. Returns, per command: median, times, last result."""
    times: list[list[float]] = [[] for _ in commands]
    results: list = [None] * len(commands)
    for _ in range(runs):
        for i, (command, kwargs) in enumerate(commands):
            start = time.perf_counter()
            results[i] = subprocess.run(command, capture_output=True, text=True, **kwargs)
            times[i].append(time.perf_counter() - start)
    return [(statistics.median(t), t, r) for t, r in zip(times, results)]


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {sys.platform}"
