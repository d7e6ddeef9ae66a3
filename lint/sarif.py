"""Report formats for CI: SARIF 2.1.0 (GitHub code scanning and other SARIF viewers) and
GitHub Actions workflow commands (annotations on the pull request's diff).

Both place a notebook finding on the line of the raw ``.ipynb`` file where its source line
sits (that is the file a code-scanning viewer shows) and name the cell and the line within it
in the message.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path, PurePath
from urllib.parse import quote

from lint.engine import FileError, Finding, Report
from lint.rule import RuleDoc, all_rules

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SRCROOT = "%SRCROOT%"
_URL = re.compile(r"https?://\S+")


def report_path(path: str) -> str:
    """The path relative to the current folder where possible, with forward slashes."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.relative_to(Path.cwd())
        except ValueError:
            return p.as_posix()
    return PurePath(os.path.normpath(p)).as_posix()


def _message(finding: Finding) -> str:
    if finding.cell is None:
        return finding.message
    return f"cell {finding.cell}, line {finding.line}: {finding.message}"


# -- SARIF ---------------------------------------------------------------------------------


def as_sarif(report: Report, statistics: bool = False) -> str:
    import json

    from lint import __version__  # here, not at the top: under pytest, ``lint`` may be tests/lint

    rules = list(all_rules())
    index = {rule.code: i for i, rule in enumerate(rules)}
    run = {
        "tool": {
            "driver": {
                "name": "bncheck",
                "version": __version__,
                "semanticVersion": __version__,
                "rules": [_rule(rule.docs()) for rule in rules],
                "notifications": [
                    {
                        "id": "file-error",
                        "name": "file-error",
                        "shortDescription": {"text": "A file that could not be read or parsed; it was not checked"},
                        "defaultConfiguration": {"level": "error"},
                    }
                ],
            }
        },
        "invocations": [
            {
                # False when some file could not be checked (bncheck exits with 2).
                "executionSuccessful": not report.errors,
                "toolExecutionNotifications": [_notification(e) for e in report.errors],
            }
        ],
        "originalUriBaseIds": {SRCROOT: {"uri": Path.cwd().as_uri().rstrip("/") + "/"}},
        "columnKind": "unicodeCodePoints",
        "results": [_result(f, index[f.code]) for f in report.findings if f.code in index],
    }
    if statistics:
        run["properties"] = {"by_code": dict(sorted(Counter(f.code for f in report.findings).items()))}
    log = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
    return json.dumps(log, indent=2) + "\n"


def _rule(doc: RuleDoc) -> dict:
    sections = doc.sections
    what = _plain(sections.get("What it does", doc.summary))
    why = _plain(sections.get("Why is this bad?", ""))
    instead = _plain(sections.get("Use instead", ""))
    help_text = "\n\n".join(part for part in (why, f"Use instead:\n\n{instead}" if instead else "") if part)
    markdown = "\n\n".join(
        f"## {title}\n\n{sections[title]}"
        for title in ("What it does", "Why is this bad?", "Example", "Use instead", "References")
        if sections.get(title)
    )
    rule = {
        "id": doc.code,
        "name": doc.name,
        "shortDescription": {"text": doc.summary},
        "fullDescription": {"text": what},
        "help": {"text": help_text or what, "markdown": markdown or what},
        "defaultConfiguration": {"level": doc.severity.value},
        "properties": {"tags": ["correctness", "batchnormalization"], "fixable": doc.fixable},
    }
    references = _URL.findall(sections.get("References", ""))
    if references:
        rule["helpUri"] = references[0].rstrip(").,")
    return rule


def _plain(markdown: str) -> str:
    """Markdown as plain text: wrapped lines of a paragraph joined, code blocks kept as they are."""
    parts = re.split(r"(```[^\n]*\n.*?```)", markdown, flags=re.S)
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # a fenced code block: drop the fences, keep the lines
            out.append("\n".join(part.splitlines()[1:-1]))
        else:
            out.extend(" ".join(p.split()) for p in re.split(r"\n\s*\n", part) if p.strip())
    return "\n\n".join(out)


def _artifact(path: str) -> dict:
    relative = report_path(path)
    if PurePath(relative).is_absolute():
        return {"uri": Path(relative).as_uri()}
    return {"uri": quote(relative, safe="/"), "uriBaseId": SRCROOT}


def _result(finding: Finding, rule_index: int) -> dict:
    if finding.cell is not None:
        # Notebook: the line of the .ipynb file; columns of the cell's text do not apply there.
        region = {"startLine": finding.raw_line or 1}
    else:
        region = {
            "startLine": finding.line,
            "startColumn": finding.column,
            "endLine": max(finding.end_line, finding.line),
            "endColumn": finding.end_column,
        }
    result = {
        "ruleId": finding.code,
        "ruleIndex": rule_index,
        "level": finding.severity,
        "message": {"text": _message(finding)},
        "locations": [{"physicalLocation": {"artifactLocation": _artifact(finding.path), "region": region}}],
    }
    if finding.cell is not None:
        result["properties"] = {"cell": finding.cell, "cellLine": finding.line, "cellColumn": finding.column}
    return result


def _notification(error: FileError) -> dict:
    location: dict = {"artifactLocation": _artifact(error.path)}
    line = error.raw_line if error.cell is not None else error.line
    if line:
        location["region"] = {"startLine": line}
        if error.column and error.cell is None:
            location["region"]["startColumn"] = error.column
    text = error.message if error.cell is None else f"cell {error.cell}, line {error.line}: {error.message}"
    return {
        "level": "error",
        "message": {"text": text},
        "locations": [{"physicalLocation": location}],
        "descriptor": {"id": "file-error", "index": 0},
    }


# -- GitHub Actions workflow commands --------------------------------------------------------


def escape_data(text: str) -> str:
    """A workflow command's message, escaped as the Actions runner unescapes it."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: also ``:`` and ``,``, which separate properties."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _command(level: str, properties: dict, message: str) -> str:
    props = ",".join(f"{key}={escape_property(str(value))}" for key, value in properties.items() if value is not None)
    return f"::{level} {props}::{escape_data(message)}"


def as_github(report: Report, statistics: bool = False) -> str:
    from lint.output import statistics_table, summary_line

    lines = []
    for f in report.findings:
        props: dict = {"file": report_path(f.path)}
        if f.cell is not None:
            props["line"] = f.raw_line
        else:
            props.update(line=f.line, col=f.column, endLine=f.end_line, endColumn=f.end_column)
        props["title"] = f.code
        lines.append(_command("error" if f.severity == "error" else "warning", props, _message(f)))
    for e in report.errors:
        props = {"file": report_path(e.path)}
        if e.cell is not None:
            props["line"] = e.raw_line
            message = f"cell {e.cell}, line {e.line}: {e.message}"
        else:
            props.update(line=e.line, col=e.column)
            message = e.message
        props["title"] = "bncheck"
        lines.append(_command("error", props, message))
    lines += report.diffs
    if statistics:
        lines.append(statistics_table(report))
    lines.append(summary_line(report))
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"
