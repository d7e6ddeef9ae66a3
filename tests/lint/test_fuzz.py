"""Property-based fuzzing: whatever the input, every file ends as findings, a clean result or one
clean per-file error; nothing escapes, nothing is lost, and ``--fix`` output parses, is stable and
touches only reported lines.

- generated programs (hypothesmith, valid Python from the grammar) and programs composed from the
  rules' own VALID/INVALID snippets in varied shapes, checked in-process with every rule and fix;
- random byte mutations of the examples and snippets, run through the real file pipeline
  (``lint_paths``: discovery, decoding, prefilters, worker processes, atomic write-back);
- the inputs that crash or stall libcst itself (deep nesting), mixed into a run that survives them.

Example counts are bounded so that the whole module stays within about a minute on 2 cores.
"""

from __future__ import annotations

import ast
import json
import tempfile
import textwrap
from dataclasses import replace
from pathlib import Path

import hypothesmith
import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

from lint.config import Settings
from lint.engine import check_source, lint_paths
from lint.rule import all_rules

from .helpers import ALL_CODES, KERAS_3_15
from .test_fix_examples import EXAMPLES, assert_only_reported_lines_changed

def fuzz(max_examples: int):
    # No shrinking: it can take minutes on these inputs; the failing input is printed as found.
    return settings(max_examples=max_examples, deadline=None, database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
SETTINGS = replace(Settings(), target_keras=KERAS_3_15)
pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning")  # hypothesmith compiles its programs

SNIPPETS = [textwrap.dedent(code) for rule in all_rules() for code in rule.VALID] + [
    textwrap.dedent(example.code) for rule in all_rules() for example in rule.INVALID
]
SEEDS = [(p.suffix, p.read_bytes()) for p in sorted(EXAMPLES.rglob("*")) if p.suffix in (".py", ".ipynb")] + [
    (".py", s.encode()) for s in SNIPPETS
]

# Shapes that crash libcst (segfault) or make it take minutes; see test_bad_input.py.
DEEP = [
    "(" * 10_000 + "1" + ")" * 10_000,
    "[" * 5_000 + "]" * 5_000,
    " + ".join(["a"] * 10_000),
    "f" + "()" * 3_000,
    "a" + "[0]" * 2_000,
    "not " * 2_000 + "a",
]


def check_fix_properties(source: str, path: str = "fuzz.py") -> None:
    """Run every rule with and without fixes on ``source``; assert the engine's contract."""
    plain = check_source(path, source, SETTINGS, ALL_CODES, False)
    result = check_source(path, source, SETTINGS, ALL_CODES, True)
    if plain.error is not None:
        message, _, _ = plain.error
        assert "\n" not in message and result.error == plain.error
        return
    assert result.error is None
    if result.fixed_source is None:
        assert result.fixes_applied == 0
        assert [v[:5] for v in result.violations] == [v[:5] for v in plain.violations]
        return
    ast.parse(result.fixed_source)  # a fix never breaks a file
    again = check_source(path, result.fixed_source, SETTINGS, ALL_CODES, True)
    assert again.error is None and again.fixed_source is None, "a second --fix must change nothing"
    assert [v[:5] for v in again.violations] == [v[:5] for v in result.violations]
    spans = [(v[0], v[2]) for v in plain.violations]
    assert_only_reported_lines_changed(source, result.fixed_source, spans, path)


# -- generated programs, in-process ----------------------------------------------------------


@fuzz(500)
@given(hypothesmith.from_grammar())
@example("\n\t\\\r\n")  # found by this test: Python accepts it, libcst raised (now a per-file error)
def test_generated_programs(source):
    check_fix_properties(source)


def _indent(code: str, header: str) -> str:
    return header + "\n" + textwrap.indent(code, "    ") + ("" if code.endswith("\n") else "\n")


SHAPES = [
    lambda code: code,
    lambda code: _indent(code, "def build(inputs=None):"),
    lambda code: _indent(code, "if __name__ == '__main__':"),
    lambda code: _indent(code, "class Experiment:"),
    lambda code: _indent(code, "with strategy.scope():"),
    lambda code: _indent(code, "for epoch in range(3):"),
    lambda code: _indent(code, "try:") + "except Exception:\n    pass\n",
    lambda code: code.replace("\n", "  # noqa: BN001\n", 1),
    lambda code: code.replace("\n", "\n\n# a comment\n\n"),
    lambda code: code.replace("\n", "\r\n"),
    lambda code: code.replace("    ", "\t"),
    lambda code: code.rstrip("\n"),
]


# Python shapes around the snippets (drawing hypothesmith programs here made generation 20x slower).
FILLERS = [
    "from __future__ import annotations\n",
    "x = 1; y = 2\n",
    "if (n := len(data)) > 1:\n    pass\n",
    "@decorator\nasync def step(model, x):\n    async with lock:\n        return await model(x, training=True)\n",
    "match command:\n    case [base, *rest] if rest:\n        base.trainable = False\n    case _:\n        pass\n",
    "total = (a +\n         b)  # noqa\n",
    "value = \\\n    f'{model!r:>10}'\n",
    "class Head(keras.Model):\n    def call(self, inputs, training=None):\n        return self.dense(inputs)\n",
    "del base\n",
    "base = None\n",
    "lambda base: base(x)\n",
    "for layer in model.layers:\n    layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)\n",
    "try:\n    import tensorflow as tf\nexcept ImportError:\n    tf = None\n",
    "\n\x0c\n",
    "# bncheck: ignore[BN003]\n",
    '"""\nbase.trainable = False\nx = base(x)\n"""\n',
]


@st.composite
def composed_programs(draw):
    """Rule snippets (many of them flagged and fixable) in varied places, with generated code."""
    pieces = []
    for _ in range(draw(st.integers(1, 3))):
        snippet = draw(st.sampled_from(SNIPPETS))
        pieces.append(draw(st.sampled_from(SHAPES))(snippet))
    for _ in range(draw(st.integers(0, 3))):
        pieces.insert(draw(st.integers(0, len(pieces))), draw(st.sampled_from(FILLERS)))
    program = "".join(p if p.endswith(("\n", "\r")) else p + "\n" for p in pieces)
    try:
        ast.parse(program)
    except (SyntaxError, ValueError):
        assume(False)  # e.g. a __future__ import after other code, or mixed tabs and spaces
    return program


# Found by this test: a block repeated and fixed twice, which the difflib-based line check misread.
_REPEATED = (
    '"""\nbase.trainable = False\nx = base(x)\n"""\n\nfrom torch import nn\nclass Student(nn.Module):\n'
    "    def __init__(self, teacher: nn.Module):\n        super().__init__()\n        self.teacher = teacher\n"
    "        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))\n        self.encoder.requires_grad = False\n"
)


@fuzz(1000)
@given(composed_programs())
@example(_REPEATED * 2 + '"""\nbase.trainable = False\nx = base(x)\n"""\n')
def test_composed_snippet_programs(source):
    check_fix_properties(source)


def test_deep_nesting_is_refused_before_libcst():
    """The guard answers with an error in-process: libcst never sees these (it would crash or stall)."""
    for expression in DEEP:
        result = check_source("deep.py", f"import keras\nx = {expression}\n", SETTINGS, ALL_CODES, True)
        assert result.error is not None and result.violations == [] and result.fixed_source is None
        message, line, _ = result.error
        assert line in (2, None) and "\n" not in message


# -- byte mutations through the real file pipeline ---------------------------------------------

TOKENS = [
    b"(", b")", b"[", b":", b",", b"\n", b"\r", b"\r\n", b"    ", b"\t", b"\\", b"'", b'"""', b"#", b"\x00", b"\xff",
    b"\xef\xbb\xbf", b"\xe2\x82\xac", b"lambda:", b"async ", b"await ", b"yield", b"if x:\n", b"else:\n",
    b"training=True", b"training=False", b".trainable = False\n", b".trainable = True\n", b"# noqa\n",
    b"%matplotlib inline\n", b"!pip install keras\n", b'{"cells": [', b"}",
]


# Weighted so that about half of the files stay valid Python and reach the rules and fixes.
MUTATIONS = ["flip", "delete", "insert", "deep"] + ["token"] * 3 + ["line"] * 4


@st.composite
def mutation(draw):
    suffix, data = draw(st.sampled_from(SEEDS))
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):  # 0: the seed as it is, in a new neighbourhood of files
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(MUTATIONS))
        if kind == "flip" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "token":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif kind == "line":  # duplicate or drop a whole line
            lines = bytes(data).splitlines(keepends=True) or [b""]
            i = draw(st.integers(0, len(lines) - 1))
            if draw(st.booleans()):
                lines.insert(i, lines[i])
            else:
                del lines[i]
            data = bytearray(b"".join(lines))
        elif kind == "deep":
            start = data.rfind(b"\n", 0, at) + 1
            data[start:start] = b"x = " + draw(st.sampled_from(DEEP)).encode() + b"\n"
    return suffix, bytes(data)


def _lines_of(report, path: Path):
    return [(f.line, f.end_line) for f in report.findings if f.path == str(path)]


@fuzz(60)
@given(st.lists(mutation(), min_size=25, max_size=25))
def test_mutated_files_through_the_pipeline(files):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        paths = []
        for i, (suffix, data) in enumerate(files):
            path = root / f"m{i:02}{suffix}"
            path.write_bytes(data)
            paths.append(path)
        config = replace(SETTINGS, root=root)

        found = lint_paths([root], config)
        assert found.files_seen == len(paths), "every file is accounted for"
        for error in found.errors:
            assert Path(error.path) in paths
            assert "\n" not in error.message and "Traceback" not in error.message
            assert "internal error" not in error.message, f"a rule crashed on {error.path}: {error.message}"
        errors_per_file = {p: [e for e in found.errors if e.path == str(p)] for p in paths}
        for path, errors in errors_per_file.items():
            if path.suffix == ".py":
                assert len(errors) <= 1, errors

        fixed = lint_paths([root], config, fix=True)
        assert fixed.files_seen == len(paths)
        after = {p: p.read_bytes() for p in paths}
        for path, (_, data) in zip(paths, files):
            if after[path] == data:
                continue
            if path.suffix == ".ipynb":
                json.loads(after[path])  # still a notebook
            else:
                assert not errors_per_file[path], "a file with an error is never written"
                text = after[path].decode("utf-8")
                ast.parse(text)
                before = data.decode("utf-8")
                assert_only_reported_lines_changed(before.removeprefix("\ufeff"), text.removeprefix("\ufeff"),
                                                   _lines_of(found, path), path.name)

        again = lint_paths([root], config, fix=True)
        assert again.fixes_applied == 0, "a second --fix must change nothing"
        assert {p: p.read_bytes() for p in paths} == after


def test_a_run_survives_every_libcst_killer_among_ordinary_files(tmp_path):
    """The deep inputs, side by side with the examples: each is one error, the examples' findings all arrive."""
    for i, expression in enumerate(DEEP):
        # Frozen-base code first, so that the prefilters send the file towards libcst.
        bait = "import keras\nbase = keras.applications.ResNet50()\nbase.trainable = False\n"
        (tmp_path / f"deep{i}.py").write_text(f"{bait}x = {expression}\n")
    examples = [p for p in sorted(EXAMPLES.glob("*.py"))]
    for path in examples:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    config = replace(SETTINGS, root=tmp_path)
    report = lint_paths([tmp_path], config)
    assert sorted(Path(e.path).name for e in report.errors) == [f"deep{i}.py" for i in range(len(DEEP))]
    assert all(e.line == 4 for e in report.errors)  # the deep expression's line, after the bait
    alone = lint_paths([tmp_path / p.name for p in examples], config)
    assert alone.errors == []
    assert [(Path(f.path).name, f.line, f.code) for f in report.findings] == [
        (Path(f.path).name, f.line, f.code) for f in alone.findings
    ]
    assert report.findings, "the examples have findings"
