"""How fast is ``bncheck``? Run with the project's interpreter (keras must be installed there):

    python benchmarks/bench_lint.py                 # the whole installed keras source tree
    python benchmarks/bench_lint.py --against 54fbeb8   # ... and as the linter was at issue 2
    python benchmarks/bench_lint.py --precommit     # a pre-commit run on 10 ordinary files

Each run is a fresh process (``python -m lint`` from its checkout for the whole tree, the
installed ``bncheck`` for pre-commit), timed by wall clock from start to exit, interpreter
start-up included; the median of ``--runs`` runs is shown. The whole-tree run also times
BN001-BN003 alone, in turn with all rules, to show what the later rules cost.
The share of files the rules' text prefilters let through to libcst comes from the JSON report
(``summary.files_parsed`` / ``summary.files_checked``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _tree import bncheck, keras_tree, machine, python_files, timed, timed_interleaved

HERE = Path(__file__).resolve().parent


def whole_tree(runs: int, jobs: int | None, against: str | None) -> None:
    """All rules; BN001-BN003 alone (what the later rules cost); with ``against``, the same tree
    checked by the linter as it was at that git revision. All run in turn, as ``python -m lint``
    from their own checkout, so that every one pays the same start-up."""
    root = keras_tree()
    args = [sys.executable, "-m", "lint", str(root), "--isolated", "--format", "json", "--exit-zero"]
    if jobs:
        args += ["--jobs", str(jobs)]
    commands = [(args + ["--select", "BN"], {"cwd": HERE.parent}), (args + ["--select", "BN001,BN002,BN003"], {"cwd": HERE.parent})]
    with tempfile.TemporaryDirectory() as tmp:
        if against:
            checkout = Path(tmp) / "checkout"
            subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", "-f", str(checkout), against],
                           check=True, capture_output=True)
            commands.append((args, {"cwd": checkout}))
        try:
            timings = timed_interleaved(commands, runs)
        finally:
            if against:
                subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(checkout)], capture_output=True)
    (median, times, result), (first, _, _) = timings[:2]
    summary = json.loads(result.stdout)["summary"]
    files, parsed = summary["files_checked"], summary["files_parsed"]
    print(f"machine: {machine()}")
    print(f"tree: {root} ({files} files)")
    print(f"runs: {', '.join(f'{t:.2f}' for t in times)} s")
    print(f"bncheck, all rules: {median:.2f} s median, {files / median:.0f} files/s")
    print(f"bncheck, BN001-BN003 only: {first:.2f} s median; all rules cost {100 * (median / first - 1):+.0f}%")
    if against:
        then = timings[2][0]
        print(f"the linter at {against}: {then:.2f} s median; all rules now take {100 * (median / then - 1):+.0f}%")
    print(f"parsed by libcst after the prefilters: {parsed} of {files} files ({100 * parsed / files:.1f}%)")
    print(f"findings: {summary['findings']}, file errors: {summary['errors']}")


def precommit(runs: int) -> None:
    """10 ordinary files: the 10 closest to the tree's median size, as pre-commit passes them."""
    files = python_files(keras_tree())
    sizes = {p: p.stat().st_size for p in files}
    middle = statistics.median(sizes.values())
    chosen = sorted(sorted(files, key=lambda p: (abs(sizes[p] - middle), str(p)))[:10])
    command = [bncheck(), "--isolated", "--force-exclude", *map(str, chosen)]
    median, times, result = timed(command, runs)
    print(f"machine: {machine()}")
    print(f"files: 10 of {len(files)} keras files closest to the median size ({middle / 1024:.1f} KiB), "
          f"{sum(sizes[p] for p in chosen) / 1024:.0f} KiB in all")
    print(f"runs: {', '.join(f'{t:.2f}' for t in times)} s")
    print(f"pre-commit-like run (10 files, start-up included): {median:.2f} s median, exit {result.returncode}")
    version, _, _ = timed([bncheck(), "--version"], runs)
    print(f"for reference, `bncheck --version` (start-up alone): {version:.2f} s median")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precommit", action="store_true", help="time a pre-commit run on 10 ordinary files")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, help="passed to bncheck --jobs (default: one per core)")
    parser.add_argument("--against", metavar="REV", help="also time the linter as it was at this git revision")
    args = parser.parse_args()
    if args.precommit:
        precommit(args.runs)
    else:
        whole_tree(args.runs, args.jobs, args.against)


if __name__ == "__main__":
    main()
