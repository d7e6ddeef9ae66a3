"""Report formats. Each formatter turns a ``Report`` into the text written to stdout or a file.

The JSON schema (``schema_version`` 1) is stable: fields are only ever added.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Callable

from lint import __version__
from lint.engine import FileError, Finding, Report
from lint.rule import all_rules
from lint.sarif import as_github, as_sarif


def _where(finding: Finding) -> str:
    cell = f"cell {finding.cell}:" if finding.cell is not None else ""
    return f"{finding.path}:{cell}{finding.line}:{finding.column}"


def _error_where(error: FileError) -> str:
    cell = [f"cell {error.cell}"] if error.cell is not None else []
    parts = [error.path] + cell + [str(p) for p in (error.line, error.column) if p is not None]
    return ":".join(parts)


def text(report: Report, statistics: bool = False) -> str:
    lines = [f"{_where(f)}: {f.code} {f.message}" for f in report.findings]
    lines += [f"{_error_where(e)}: error: {e.message}" for e in report.errors]
    lines += report.diffs
    if statistics:
        lines.append(statistics_table(report))
    lines.append(summary_line(report))
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


def _files(n: int) -> str:
    return f"{n} file{'s' if n != 1 else ''}"


def summary_line(report: Report) -> str:
    n, files = len(report.findings), report.files_seen
    found = f"{n} finding{'s' if n != 1 else ''}" if n else "no findings"
    if report.diffs:
        parts = [f"Would fix {report.fixes_applied} (--diff writes nothing); {found} would remain"]
    else:
        flagged = len({f.path for f in report.findings})
        parts = [f"Found {found} in {_files(flagged)} ({files} checked)" if n else f"No findings in {_files(files)} checked"]
        if report.fixes_applied:
            parts.append(f"fixed {report.fixes_applied}")
        fixable = sum(f.fixable for f in report.findings)
        if fixable:
            parts.append(f"{fixable} fixable with --fix")
    if report.errors:
        parts.append(f"{len(report.errors)} file error{'s' if len(report.errors) != 1 else ''}")
    return "; ".join(parts) + "."


def statistics_table(report: Report) -> str:
    counts = Counter(f.code for f in report.findings)
    names = {r.code: r.name for r in all_rules()}
    fixable = Counter(f.code for f in report.findings if f.fixable)
    rows = [
        f"{counts[code]:>5}  {code}  {names.get(code, '')}{'  [*]' if fixable[code] else ''}"
        for code in sorted(counts)
    ]
    return "\n".join(rows) if rows else "    0  (no findings)"


def as_json(report: Report, statistics: bool = False) -> str:
    payload = {
        "schema_version": 1,
        "tool": {"name": "bncheck", "version": __version__},
        "findings": [_finding_json(f) for f in report.findings],
        "errors": [_error_json(e) for e in report.errors],
        "summary": {
            "files_checked": report.files_seen,
            "files_parsed": report.files_parsed,
            "findings": len(report.findings),
            "errors": len(report.errors),
            "fixes_applied": report.fixes_applied,
            "by_code": dict(sorted(Counter(f.code for f in report.findings).items())),
        },
    }
    return json.dumps(payload, indent=2) + "\n"


def _finding_json(f: Finding) -> dict:
    item = {
        "path": f.path,
        "line": f.line,
        "column": f.column,
        "end_line": f.end_line,
        "end_column": f.end_column,
        "code": f.code,
        "severity": f.severity,
        "message": f.message,
        "fixable": f.fixable,
    }
    if f.cell is not None:  # notebooks: line is within the code cell; raw_line is in the .ipynb file
        item["cell"] = f.cell
        item["raw_line"] = f.raw_line
    return item


def _error_json(e: FileError) -> dict:
    item = {"path": e.path, "message": e.message, "line": e.line, "column": e.column}
    if e.cell is not None:
        item["cell"] = e.cell
        item["raw_line"] = e.raw_line
    return item


FORMATTERS: dict[str, Callable[..., str]] = {"text": text, "json": as_json, "sarif": as_sarif, "github": as_github}
