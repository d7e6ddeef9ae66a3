"""The text prefilters: which files reach libcst at all (the linter's main speed lever).

Soundness (a prefilter never skips a file its rule flags) is checked on every flagged snippet
of the suite by ``helpers.check``; these tests cover the mechanics.
"""

from __future__ import annotations

import ast
import json

from lint.engine import blank_string_statements

from .helpers import run_cli

FROZEN = """\
import keras
base = keras.applications.ResNet50(weights=None)
base.trainable = False
x = base(inputs)
base.trainable = True  # noqa: BN003 (fine-tuned later: BN001 matters; BN003 is not under test here)
"""

DOCUMENTED = '''\
"""Helpers. Remember: a ResNet50 base with `base.trainable = False` must be called with
training=False, because of its BatchNormalization layers."""
import keras


def build(x):
    """Dropout( ... BatchNormalization( in a docstring, and learning_phase."""
    return keras.layers.Dense(3)(x)
'''


def _summary(tmp_path, *files: tuple[str, str]) -> dict:
    for name, text in files:
        (tmp_path / name).write_text(text, encoding="utf-8")
    result = run_cli(".", "--isolated", "--format", "json", "--exit-zero", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_only_files_some_rule_can_match_are_parsed_by_libcst(tmp_path):
    payload = _summary(tmp_path, ("frozen.py", FROZEN), ("plain.py", "import os\nprint(os.getcwd())\n"))
    assert payload["summary"]["files_checked"] == 2
    assert payload["summary"]["files_parsed"] == 1
    assert [f["code"] for f in payload["findings"]] == ["BN001"]


def test_tokens_in_docstrings_do_not_count(tmp_path):
    payload = _summary(tmp_path, ("documented.py", DOCUMENTED))
    assert payload["summary"] == {**payload["summary"], "files_checked": 1, "files_parsed": 0, "findings": 0}


def test_the_same_tokens_in_code_do_count(tmp_path):
    # The docstring text moved into code: now BN001's tokens are real, and so is the finding.
    payload = _summary(tmp_path, ("documented.py", DOCUMENTED + FROZEN.replace("import keras\n", "")))
    assert payload["summary"]["files_parsed"] == 1
    assert [f["code"] for f in payload["findings"]] == ["BN001"]


def test_blanking_keeps_every_other_byte_in_place():
    source = (
        'x = 1; "BatchNorm é"; y = "BatchNorm kept: an expression, not a statement"\r\n'
        "def f():\r\n"
        '    """Multi-line\r\n'
        '    docstring: trainable = False"""\r\n'
        "    match y:\r\n"
        "        case 1:\r\n"
        "            'in a case'\r\n"
        "    try:\r\n"
        "        pass\r\n"
        "    except ValueError:\r\n"
        "        b'in a handler'\r\n"
        "    else:\r\n"
        "        f'an f-string statement {y} is kept'\r\n"
    )
    blanked = blank_string_statements(source, ast.parse(source))
    original = source.encode()
    assert len(blanked) == len(original)
    assert blanked.splitlines(keepends=True)[0] == (
        b'x = 1; ' + b" " * len('"BatchNorm \xe9"'.encode()) + b'; y = "BatchNorm kept: an expression, not a statement"\r\n'
    )
    for gone in (b"docstring", b"Multi-line", b"in a case", b"in a handler", "é".encode()):
        assert gone not in blanked
    assert b"f'an f-string statement {y} is kept'" in blanked
    # Only string statements changed: every other byte is the same.
    assert [a for a, b in zip(original, blanked) if a != b and b != ord(" ")] == []
