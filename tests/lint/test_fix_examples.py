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
    """Lines outside the ``(first, last)`` line spans are untouched and in their order: ``after`` is
    ``before`` with each span replaced by something (its fix, plus guard lines inserted next to it).

    Checked by finding the unreported runs of lines in ``after``, in order and anchored at both
    ends, not with difflib, whose heuristic alignment misreads a file that repeats a block."""
    old, new = python_lines(before), python_lines(after)
    reported = {n for first, last in spans for n in range(first, last + 1)}
    segments: list[list[str] | None] = []  # unreported runs of `before`; None where a span was
    for number, line in enumerate(old, 1):
        if number in reported:
            if not segments or segments[-1] is not None:
                segments.append(None)
        elif segments and segments[-1] is not None:
            segments[-1].append(line)
        else:
            segments.append([line])
    diff = "\n".join(difflib.unified_diff(old, new, lineterm="", n=1))
    pos, anchored = 0, True  # anchored: the next run must start right at `pos`
    for index, run in enumerate(segments):
        if run is None:
            anchored = False
            continue
        if index == len(segments) - 1:  # the last run ends the file
            start = len(new) - len(run)
            found = start >= pos and (not anchored or start == pos) and new[start:] == run
        elif anchored:
            start = pos
            found = new[start : start + len(run)] == run
        else:  # the earliest place leaves the most room for the runs after it
            start = next((i for i in range(pos, len(new) - len(run) + 1) if new[i : i + len(run)] == run), -1)
            found = start >= 0
        assert found, f"{where}: unreported lines changed (the run starting with {run[0]!r}):\n{diff}"
        pos, anchored = start + len(run), True


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


BLOCK = "a = 1\nm.requires_grad = False\nb = 2\n"


@pytest.mark.parametrize(
    "after, spans",
    [
        (BLOCK.replace("requires_grad = False", "requires_grad_(False)"), [(2, 2)]),
        # A block repeated and fixed twice: difflib aligned this as lines inserted at the top.
        (BLOCK.replace("requires_grad = False", "requires_grad_(False)") * 2, [(2, 2), (5, 5)]),
        ("a = 1\nfor l in m.layers:\n    l.trainable = False\nm.trainable = True\nb = 2\n", [(2, 2)]),  # inserted before
        ("a = 1\nm.requires_grad = False\nguard()\nb = 2\n", [(2, 2)]),  # inserted after
    ],
)
def test_only_reported_lines_changed_accepts(after, spans):
    before = BLOCK * 2 if len(spans) == 2 else BLOCK
    assert_only_reported_lines_changed(before, after, spans)


@pytest.mark.parametrize(
    "after, spans",
    [
        ("a = 10\nm.requires_grad_(False)\nb = 2\n", [(2, 2)]),  # an unreported line changed
        ("a = 1\nm.requires_grad_(False)\nb = 2\nextra()\n", [(2, 2)]),  # inserted away from the span
        ("extra()\na = 1\nm.requires_grad_(False)\nb = 2\n", [(2, 2)]),  # inserted at the top
        ("a = 1\nm.requires_grad_(False)\n", [(2, 2)]),  # an unreported line deleted
        ("b = 2\nm.requires_grad_(False)\na = 1\n", [(2, 2)]),  # unreported lines reordered
        (BLOCK * 2, []),  # nothing reported, yet lines added
    ],
)
def test_only_reported_lines_changed_rejects(after, spans):
    with pytest.raises(AssertionError, match="unreported lines changed"):
        assert_only_reported_lines_changed(BLOCK, after, spans)
