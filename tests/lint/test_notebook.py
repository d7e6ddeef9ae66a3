"""Jupyter notebooks: cells, IPython syntax, positions and write-back, through the real command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lint.documents import DocumentError
from lint.notebook import NotebookDocument

from .helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "transfer_learning.ipynb"


def code(source: str, outputs=(), count=None) -> dict:
    return {"cell_type": "code", "execution_count": count, "metadata": {}, "outputs": list(outputs),
            "source": source.splitlines(True)}


def markdown(source: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": source.splitlines(True)}


def notebook(*cells: dict, indent=1, ensure_ascii=False, metadata=None) -> str:
    """Text as nbformat writes it (sorted keys, 1-space indent, trailing newline)."""
    nb = {"cells": list(cells), "metadata": metadata if metadata is not None else {"language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb, sort_keys=True, indent=indent, ensure_ascii=ensure_ascii) + "\n"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def raw_line(path: Path, number: int) -> str:
    return path.read_text(encoding="utf-8").splitlines()[number - 1]


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return Path(shutil.copy(EXAMPLE, tmp_path / "transfer_learning.ipynb"))


# -- the bundled example: flagged at the right cell and line, fixed in place -------------------


def test_example_notebook_is_flagged_at_code_cell_and_line(example):
    result = run_cli("transfer_learning.ipynb", "--target-keras", "3.15", cwd=example.parent)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    # Code cells are counted (markdown cells are not): cell 3 is the notebook's fifth cell.
    assert lines[0].startswith("transfer_learning.ipynb:cell 3:2:5: BN001 frozen ResNet50 base `base_model`")
    assert lines[1].startswith("transfer_learning.ipynb:cell 5:1:1: BN003 unfreezing ResNet50 base `base_model`")
    assert "Found 2 findings in 1 file" in result.stdout


def test_json_carries_cell_line_and_raw_line(example):
    result = run_cli("transfer_learning.ipynb", "--format", "json", "--select", "BN001", cwd=example.parent)
    (finding,) = json.loads(result.stdout)["findings"]
    assert (finding["cell"], finding["line"], finding["column"]) == (3, 2, 5)
    assert raw_line(example, finding["raw_line"]).strip() == '"x = base_model(inputs)\\n",'
    code_cells = [c for c in json.loads(example.read_text())["cells"] if c["cell_type"] == "code"]
    assert code_cells[finding["cell"] - 1]["source"][finding["line"] - 1] == "x = base_model(inputs)\n"


def test_fix_changes_only_the_flagged_cells_sources_byte_for_byte(example):
    before = example.read_text(encoding="utf-8")
    result = run_cli("transfer_learning.ipynb", "--fix", cwd=example.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fixed 2" in result.stdout
    expected = before.replace(
        '    "x = base_model(inputs)\\n",\n', '    "x = base_model(inputs, training=False)\\n",\n'
    ).replace(
        '    "base_model.trainable = True\\n",\n',
        '    "base_model.trainable = True\\n",\n'
        '    "for layer in base_model.layers:\\n",\n'
        '    "    if isinstance(layer, layers.BatchNormalization):\\n",\n'
        '    "        layer.trainable = False\\n",\n',
    )
    assert expected != before
    assert example.read_text(encoding="utf-8") == expected
    # The same bytes nbformat itself would write for the fixed notebook.
    nb = json.loads(expected)
    assert json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n" == expected
    again = run_cli("transfer_learning.ipynb", "--fix", cwd=example.parent)
    assert again.returncode == 0 and "fixed" not in again.stdout
    assert example.read_text(encoding="utf-8") == expected


def test_diff_shows_cell_sources_and_writes_nothing(example):
    before = example.read_bytes()
    result = run_cli("transfer_learning.ipynb", "--diff", "--select", "BN001", cwd=example.parent)
    assert result.returncode == 0, result.stderr
    assert "--- transfer_learning.ipynb:cell 3\n+++ transfer_learning.ipynb:cell 3\n" in result.stdout
    assert "-x = base_model(inputs)\n+x = base_model(inputs, training=False)\n" in result.stdout
    assert "bncheck" not in result.stdout.split("Would fix")[0]  # no markers or placeholders leak
    assert example.read_bytes() == before


def test_fix_keeps_another_writers_json_style(tmp_path):
    """Two-space indent, ASCII escapes, compact one-line arrays, no final newline: all kept."""
    cells = [
        markdown("Caf\u00e9 \u2615"),
        {**code("import keras\nbase = keras.applications.ResNet50()\nbase.trainable = False\n"
                "base.trainable = True  # noqa: BN003 (fine-tuned: BN001 matters)\n"),
         "outputs": [{"data": {"image/png": "iVBORw0KGgo=\n", "text/plain": ["<Figure>"]}, "metadata": {},
                      "output_type": "display_data"}]},
        code("y = base(x)  # \u00e9"),
    ]
    text = json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 2}, indent=2, ensure_ascii=True)
    text = text.replace('[\n        "y = base(x)  # \\u00e9"\n      ]', '["y = base(x)  # \\u00e9"]')
    path = write(tmp_path, "styled.ipynb", text)
    result = run_cli("styled.ipynb", "--fix", "--select", "BN001", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert path.read_text() == text.replace('["y = base(x)  # \\u00e9"]', '["y = base(x, training=False)  # \\u00e9"]')


# -- IPython syntax ------------------------------------------------------------------------------

MAGICS = """\
%matplotlib inline
%load_ext autoreload
!pip install -q keras
files = !ls
listing = %sx ls \\
    -la
keras.Model?
??keras.Model
pip install tensorflow
for name in files:
    !echo $name
template = '''
%d items
'''
x = base(inputs)
"""


def test_magics_do_not_break_parsing_and_survive_a_fix(tmp_path):
    nb = write(tmp_path, "magics.ipynb", notebook(
        code("%%time\nimport keras\nbase = keras.applications.ResNet50()\n"),
        code("base.trainable = False\ninputs = keras.Input((224, 224, 3))"),
        code(MAGICS),
        code("%%bash\nfor f in *.csv; do wc -l $f; done"),
        code("base.trainable = True  # noqa: BN003 (fine-tuned: BN001 matters)"),
    ))
    result = run_cli("magics.ipynb", "--select", "BN001", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[0].startswith("magics.ipynb:cell 3:15:5: BN001")
    assert "error" not in result.stdout

    assert run_cli("magics.ipynb", "--fix", "--select", "BN001", cwd=tmp_path).returncode == 0
    cells = json.loads(nb.read_text())["cells"]
    assert "".join(cells[2]["source"]) == MAGICS.replace("x = base(inputs)", "x = base(inputs, training=False)")
    assert "".join(cells[0]["source"]) == "%%time\nimport keras\nbase = keras.applications.ResNet50()\n"
    assert "".join(cells[3]["source"]) == "%%bash\nfor f in *.csv; do wc -l $f; done"


@pytest.mark.parametrize(
    "line",
    ["%matplotlib inline", "!pip install x", "x = !ls", "display?", "keras.Model??", "?display", "%time f()",
     "out = %sx echo hi", "pip install keras", "%cd ..", "!!ls", ";func a b", "/func a"],
)
def test_ipython_lines_are_masked_keeping_line_numbers(line):
    doc = NotebookDocument.from_bytes(Path("m.ipynb"), notebook(code(f"a = 1\n{line}\nb = 2\n")).encode())
    assert doc.errors == []
    checked = doc.source.splitlines()
    assert checked[1] == "a = 1" and checked[3] == "b = 2"  # line 1 is the cell marker
    assert line.strip() not in doc.source
    assert doc.render(doc.source.replace("b = 2", "b = 3")).decode().count(json.dumps(line + "\n")) == 1


@pytest.mark.parametrize(
    "source",
    ["s = '''\n%d items\n'''\n", "f(a\n  , b)\n", "time = 5\n", "x = a % b\n", "print(a != b)\n", "ls = 1\nls -la\n"],
)
def test_python_that_looks_like_ipython_is_left_alone(source):
    doc = NotebookDocument.from_bytes(Path("p.ipynb"), notebook(code(source + "!ls\n")).encode())
    assert doc.errors == []
    assert doc.source.split("\n", 1)[1].startswith(source)


def test_cell_magic_running_another_language_is_not_checked():
    doc = NotebookDocument.from_bytes(Path("b.ipynb"), notebook(code("%%bash\nif [ -f x ]; then echo; fi")).encode())
    assert doc.errors == [] and doc.source == ""


def test_notebook_of_another_language_is_not_checked(tmp_path):
    write(tmp_path, "r.ipynb", notebook(code("library(ggplot2)\nx <- c(1, 2)"),
                                        metadata={"kernelspec": {"language": "R", "name": "ir"}}))
    result = run_cli("r.ipynb", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert "No findings in 1 file checked" in result.stdout


# -- cells and suppression ------------------------------------------------------------------------

BASE = "import keras\nbase = keras.applications.ResNet50()\nbase.trainable = False\ninputs = keras.Input((224, 224, 3))\n"
FINE_TUNE = "base.trainable = True  # noqa: BN003 (fine-tuned: BN001 matters)\n"


@pytest.mark.parametrize("comment", ["# noqa: BN001", "# noqa", "# bncheck: ignore[BN001]"])
def test_suppression_comments_work_inside_cells(tmp_path, comment):
    write(tmp_path, "s.ipynb", notebook(code(BASE), markdown("head"), code(f"x = base(inputs)  {comment}\ny = base(x)"),
                                          code(FINE_TUNE)))
    result = run_cli("s.ipynb", "--select", "BN001", cwd=tmp_path)
    lines = [line for line in result.stdout.splitlines() if "BN001" in line]
    assert lines and all(line.startswith("s.ipynb:cell 2:2:5: BN001") for line in lines), result.stdout


def test_cell_with_syntax_error_is_reported_and_the_other_cells_are_checked(tmp_path):
    write(tmp_path, "broken.ipynb", notebook(code(BASE), code("z = 1\ndef f(:\n    pass"), code("x = base(inputs)"),
                                            code(FINE_TUNE)))
    result = run_cli("broken.ipynb", "--select", "BN001", cwd=tmp_path)
    assert result.returncode == 2
    assert "broken.ipynb:cell 3:1:5: BN001" in result.stdout
    assert "broken.ipynb:cell 2:2:7: error: syntax error: invalid syntax; this cell is not checked, the other cells are" in result.stdout
    errors = json.loads(run_cli("broken.ipynb", "--format", "json", cwd=tmp_path).stdout)["errors"]
    (error,) = errors
    assert (error["cell"], error["line"], error["column"]) == (2, 2, 7)
    assert raw_line(tmp_path / "broken.ipynb", error["raw_line"]).strip() == '"def f(:\\n",'
    assert "Traceback" not in result.stdout + result.stderr


# -- notebooks that are not (usable) notebooks ----------------------------------------------------


def test_invalid_json_is_a_one_line_error_and_other_files_are_checked(tmp_path):
    write(tmp_path, "bad.ipynb", '{"cells": [\n  {"cell_type": "code",\n')
    write(tmp_path, "train.py", BASE + "x = base(inputs)\n" + FINE_TUNE)
    result = run_cli(".", cwd=tmp_path)
    assert result.returncode == 2
    assert "bad.ipynb: error: not a valid notebook: invalid JSON at line 3 column 1" in result.stdout
    assert "train.py:5:5: BN001" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"nbformat": 3, "worksheets": []}', "not an nbformat 4 notebook (nbformat: 3)"),
        ("[1, 2]", "not an nbformat 4 notebook (nbformat: not a JSON object)"),
        ('{"nbformat": 4, "cells": {}}', 'not a valid notebook: "cells" is not a list'),
        (b"\xff\xfe{}", "notebook is not valid UTF-8 (byte 0xff)"),
    ],
)
def test_unusable_notebooks_raise_one_line_document_errors(text, message):
    with pytest.raises(DocumentError) as info:
        NotebookDocument.from_bytes(Path("x.ipynb"), text if isinstance(text, bytes) else text.encode())
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_notebook_without_code_cells_has_no_findings(tmp_path):
    write(tmp_path, "notes.ipynb", notebook(markdown("# Notes\nbase.trainable = False"),
                                            {"cell_type": "raw", "metadata": {}, "source": ["x = base(inputs)"]}))
    result = run_cli("notes.ipynb", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert result.stdout == "No findings in 1 file checked.\n"


def test_render_without_changes_is_the_original_bytes():
    data = EXAMPLE.read_bytes()
    doc = NotebookDocument.from_bytes(EXAMPLE, data)
    assert doc.render(doc.source) == data
    with pytest.raises(DocumentError):  # a fix that lost a cell boundary never writes a wrong notebook
        doc.render(doc.source.replace("# %% bncheck code cell 3\n", ""))


def test_fix_at_the_end_of_a_cell_given_as_one_string(tmp_path):
    """nbformat also allows a cell's source as one string; a cell's last line has no newline."""
    cells = [code(BASE + "x = base(inputs, training=False)\n"), code("base.trainable = True")]
    cells[1]["source"] = "base.trainable = True"
    path = write(tmp_path, "s.ipynb", notebook(*cells))
    result = run_cli("s.ipynb", "--fix", "--select", "BN003", "--target-keras", "3.15", cwd=tmp_path)
    assert "fixed 1" in result.stdout, result.stdout + result.stderr
    fixed = json.loads(path.read_text())["cells"]
    assert fixed[1]["source"] == (
        "base.trainable = True\nfor layer in base.layers:\n"
        "    if isinstance(layer, keras.layers.BatchNormalization):\n        layer.trainable = False"
    )
    assert fixed[0] == cells[0]
    assert path.read_text() == notebook({**cells[0]}, {**cells[1], "source": fixed[1]["source"]})
