"""``bncheck --fix`` on every file under examples/ (found at run time, so new examples are covered):
the result parses, a second ``--fix`` changes nothing, and only reported lines change (plus the
guard lines a fix inserts right next to a reported statement).

The whole examples tree is copied once and run through the installed command three times:
findings, ``--fix``, ``--fix`` again; each example is then one test.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
import shutil
from pathlib import Path

import pytest

from .helpers import run_cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(
    p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*") if p.suffix in (".py", ".ipynb") and p.is_file()
)


def python_lines(text: str) -> list[str]:
    """Lines as Python numbers them (``str.splitlines`` also splits at form feeds and the like)."""
    return re.split(r"\r\n|\r|\n", text)


def assert_only_reported_lines_changed(before: str, after: str, spans: list[tuple[int, int]], where: str = "") -> None:
    """Lines outside the ``(first, last)`` line spans are untouched: a changed or deleted line lies
    in a span, and inserted lines sit right after a span's last line or before its first."""
    old, new = python_lines(before), python_lines(after)
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        changed = range(i1 + 1, i2 + 1)  # 1-based lines of `before` that were replaced or deleted
        outside = [n for n in changed if not any(first <= n <= last for first, last in spans)]
        assert not outside, f"{where}: unreported lines {outside} changed:\n" + "\n".join(
            difflib.unified_diff(old, new, lineterm="", n=1)
        )
        if tag == "insert":  # new lines between before's lines i1 and i1 + 1
            assert any(first - 1 <= i1 <= last for first, last in spans), f"{where}: lines inserted after line {i1}, away from any finding:\n" + "\n".join(
                difflib.unified_diff(old, new, lineterm="", n=1)
            )


def code_cells(notebook_text: str) -> list[str]:
    cells = json.loads(notebook_text)["cells"]
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells if c["cell_type"] == "code"]


def without_code_sources(notebook_text: str) -> dict:
    notebook = json.loads(notebook_text)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["source"] = None
    return notebook


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(before texts, findings per file, after-fix texts, first fix report, second fix report, after-second texts)."""
    root = tmp_path_factory.mktemp("examples")
    shutil.copytree(EXAMPLES, root / "examples")
    texts = lambda: {name: (root / "examples" / name).read_text(encoding="utf-8") for name in FILES}  # noqa: E731
    before = texts()
    args = ("examples", "--isolated", "--format", "json")
    found = json.loads(run_cli(*args, cwd=root).stdout)
    first = json.loads(run_cli(*args, "--fix", cwd=root).stdout)
    fixed = texts()
    second = json.loads(run_cli(*args, "--fix", cwd=root).stdout)
    return before, found, fixed, first, second, texts()


def findings_for(report: dict, name: str) -> list[dict]:
    return [f for f in report["findings"] if f["path"] == f"examples/{name}"]


def test_the_examples_exercise_the_fixes(runs):
    _, found, _, first, _, _ = runs
    assert found["errors"] == [] and first["errors"] == []
    assert any(f["fixable"] for f in found["findings"])
    assert first["summary"]["fixes_applied"] >= sum(f["fixable"] for f in found["findings"]) > 0


@pytest.mark.parametrize("name", FILES)
def test_fix_parses_is_idempotent_and_touches_only_reported_lines(runs, name):
    before, found, fixed, first, second, after_second = runs
    assert second["summary"]["fixes_applied"] == 0, "a second --fix must change nothing"
    assert after_second[name] == fixed[name]
    assert not any(f["fixable"] for f in findings_for(first, name)), "every fixable finding is fixed"
    findings = findings_for(found, name)
    if name.endswith(".ipynb"):
        assert without_code_sources(fixed[name]) == without_code_sources(before[name]), "only code cell sources change"
        old_cells, new_cells = code_cells(before[name]), code_cells(fixed[name])
        assert len(old_cells) == len(new_cells)
        for number, (old, new) in enumerate(zip(old_cells, new_cells), start=1):
            spans = [(f["line"], f["end_line"]) for f in findings if f.get("cell") == number]
            assert_only_reported_lines_changed(old, new, spans, f"{name} cell {number}")
        return
    ast.parse(fixed[name])
    spans = [(f["line"], f["end_line"]) for f in findings]
    assert_only_reported_lines_changed(before[name], fixed[name], spans, name)
    if not any(f["fixable"] for f in findings):
        assert fixed[name] == before[name], "a file without fixable findings is left as it is"
