"""bncheck against semgrep and Fixit, side by side in one run on the same tree (installed keras).

    /tmp/benchvenv/bin/pip install semgrep fixit      # a separate venv: benchmark-only tools
    python benchmarks/bench_compare.py --tools /tmp/benchvenv/bin

Timed, each as a fresh process by wall clock, start-up included, all cores:
  - ``bncheck`` with all rules and
  - ``semgrep`` running one rule equivalent to BN001 (benchmarks/semgrep_bn001.yml), local rules
    file, ``--metrics=off --disable-version-check -j <cores>``: ``--runs`` runs each, in turn
    (bncheck, semgrep, bncheck, ...) so that a shared machine's load falls on both alike; medians,
    and the ratio run by run;
  - ``fixit lint`` with Fixit's default rules (one run: it is slow).
For context, in this process on one core: libcst's parse of every file vs Python's ``ast.parse``.
"""

from __future__ import annotations

import argparse
import ast
import gc
import json
import os
import re
import statistics
import time
from pathlib import Path

from _tree import bncheck, keras_tree, machine, python_files, timed, timed_interleaved

HERE = Path(__file__).resolve().parent


def parse_costs(files: list[Path]) -> tuple[float, float]:
    import libcst

    sources = [p.read_text(encoding="utf-8") for p in files]
    results = []
    for parse in (ast.parse, libcst.parse_module):
        gc.collect()
        start = time.perf_counter()
        for source in sources:
            parse(source)  # the tree is dropped at once, as in a linter that keeps one file at a time
        results.append(time.perf_counter() - start)
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", type=Path, default=Path("/tmp/benchvenv/bin"), help="folder with semgrep and fixit")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-fixit", action="store_true")
    args = parser.parse_args()
    root = keras_tree()
    files = python_files(root)
    cores = os.cpu_count() or 1
    print(f"machine: {machine()}")
    print(f"tree: {root} ({len(files)} .py files)\n")
    rows = []

    semgrep = [str(args.tools / "semgrep"), "scan", "--metrics=off", "--disable-version-check", "--quiet", "--json",
               "-j", str(cores), "--config", str(HERE / "semgrep_bn001.yml"), str(root)]
    (median, times, result), (median_s, times_s, result_s) = timed_interleaved(
        [([bncheck(), str(root), "--isolated", "--format", "json", "--exit-zero"], {}),
         (semgrep, {"env": {**os.environ, "SEMGREP_SEND_METRICS": "off"}})],
        args.runs,
    )
    summary = json.loads(result.stdout)["summary"]
    rows.append(("bncheck, all rules", median, summary["files_checked"], f"{summary['findings']} findings"))
    try:
        report = json.loads(result_s.stdout)
        scanned = len(report.get("paths", {}).get("scanned", [])) or None
        note = f"{len(report['results'])} findings, {len(report.get('errors', []))} errors"
    except json.JSONDecodeError:
        scanned, note = None, f"failed: {result_s.stderr.strip()[-300:]}"
    rows.append(("semgrep, one BN001 rule", median_s, scanned, note))
    paired = sorted(sg / bn for sg, bn in zip(times_s, times))
    print("runs, interleaved (bncheck / semgrep): " + ", ".join(f"{bn:.2f}/{sg:.2f}" for bn, sg in zip(times, times_s)))
    print(f"semgrep / bncheck, run by run: {paired[0]:.2f} to {paired[-1]:.2f}, median {statistics.median(paired):.2f}\n")

    if not args.skip_fixit:
        median_f, _, result = timed([str(args.tools / "fixit"), "lint", str(root)], 1)
        tail = (result.stdout + result.stderr).strip().splitlines()[-1:] or [""]
        clean = re.search(r"(\d+) files? clean", tail[0])
        rows.append(("fixit lint, default rules", median_f, None, tail[0].strip()[:80] if not clean else tail[0].strip()))

    print(f"{'tool':<28}{'seconds':>9}{'files':>7}  ratio to bncheck  notes")
    base = rows[0][1]
    for name, seconds, count, note in rows:
        print(f"{name:<28}{seconds:>9.2f}{count or '':>7}  {seconds / base:>14.1f}x  {note}")

    ast_s, cst_s = parse_costs(files)
    print(f"\nparse alone, one core, every file: ast.parse {ast_s:.2f} s, libcst.parse_module {cst_s:.2f} s "
          f"({cst_s / ast_s:.1f}x)")


if __name__ == "__main__":
    main()
