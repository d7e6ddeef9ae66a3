"""CI and editor output: SARIF 2.1.0 (validated against the OASIS schema), GitHub workflow
commands, and source read from stdin, through the real command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from lint.rule import all_rules
from lint.sarif import escape_data, escape_property

from .helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-2.1.0.json").read_text(encoding="utf-8"))
NOTEBOOK = ROOT / "examples" / "transfer_learning.ipynb"

BAD = """\
import keras
base = keras.applications.ResNet50(include_top=False, weights=None)
base.trainable = False
x = base(keras.Input((224, 224, 3)))
base.trainable = True  # noqa: BN003 (fine-tuned later: BN001 matters; BN003 is not under test here)
"""
BN001_MESSAGE_START = "frozen ResNet50 base `base` is called without training=False"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(BAD)
    shutil.copy(NOTEBOOK, tmp_path / "src" / "transfer_learning.ipynb")
    return tmp_path


def validate(log: dict) -> None:
    validator = jsonschema.validators.validator_for(SCHEMA)
    validator.check_schema(SCHEMA)
    validator(SCHEMA).validate(log)


def sarif(*args: str, cwd: Path) -> tuple[dict, int]:
    result = run_cli("--format", "sarif", *args, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    log = json.loads(result.stdout)
    validate(log)
    return log, result.returncode


# -- SARIF -----------------------------------------------------------------------------------------


def test_sarif_validates_and_locates_python_and_notebook_findings(project):
    log, code = sarif("src", "--select", "BN001", cwd=project)
    assert code == 1
    assert log["version"] == "2.1.0"
    (run,) = log["runs"]
    assert run["invocations"] == [{"executionSuccessful": True, "toolExecutionNotifications": []}]
    py, nb = sorted(run["results"], key=lambda r: r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"])
    assert py["ruleId"] == "BN001" and py["level"] == "warning"
    assert py["message"]["text"].startswith(BN001_MESSAGE_START)
    assert py["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "src/train.py", "uriBaseId": "%SRCROOT%"},
        "region": {"startLine": 4, "startColumn": 5, "endLine": 4, "endColumn": 37},
    }
    where = nb["locations"][0]["physicalLocation"]
    assert where["artifactLocation"]["uri"] == "src/transfer_learning.ipynb"
    raw = (project / "src" / "transfer_learning.ipynb").read_text().splitlines()
    assert raw[where["region"]["startLine"] - 1].strip() == '"x = base_model(inputs)\\n",'
    assert nb["message"]["text"].startswith("cell 3, line 2: frozen ResNet50 base `base_model`")
    assert nb["properties"] == {"cell": 3, "cellLine": 2, "cellColumn": 5}
    assert run["tool"]["driver"]["rules"][py["ruleIndex"]]["id"] == "BN001"


def test_sarif_rule_metadata_comes_from_the_rule_docs(project):
    log, _ = sarif("src", cwd=project)
    rules = {r["id"]: r for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert list(rules) == [r.code for r in all_rules()]
    for rule in all_rules():
        meta, doc = rules[rule.code], rule.docs()
        assert meta["name"] == rule.name
        assert meta["shortDescription"]["text"] == rule.summary
        assert meta["defaultConfiguration"]["level"] == rule.severity.value
        assert " ".join(doc.sections["What it does"].split()) == " ".join(meta["fullDescription"]["text"].split())
        assert "## Why is this bad?" in meta["help"]["markdown"]
        assert "Use instead:" in meta["help"]["text"] and "```" not in meta["help"]["text"]
    assert rules["BN003"]["defaultConfiguration"]["level"] == "error"
    assert rules["BN001"]["helpUri"].startswith("https://")


def test_sarif_reports_file_errors_as_notifications(project):
    (project / "src" / "broken.py").write_text("x = 1\ndef f(:\nbase = ResNet50()\nbase.trainable = False\n")
    (project / "src" / "bad.ipynb").write_text("{not json")
    log, code = sarif("src", cwd=project)
    assert code == 2
    (invocation,) = log["runs"][0]["invocations"]
    assert invocation["executionSuccessful"] is False
    notes = {n["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]: n for n in invocation["toolExecutionNotifications"]}
    assert set(notes) == {"src/broken.py", "src/bad.ipynb"}
    assert notes["src/broken.py"]["level"] == "error"
    assert notes["src/broken.py"]["message"]["text"] == "syntax error: invalid syntax"
    assert notes["src/broken.py"]["locations"][0]["physicalLocation"]["region"] == {"startLine": 2, "startColumn": 7}
    assert notes["src/bad.ipynb"]["message"]["text"].startswith("not a valid notebook: invalid JSON")
    assert len(log["runs"][0]["results"]) > 0  # the other files were still checked


def test_sarif_uri_is_relative_with_forward_slashes_for_absolute_paths(project):
    log, _ = sarif(str(project / "src" / "train.py"), cwd=project)
    (result,) = log["runs"][0]["results"]
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "src/train.py"


def test_sarif_of_a_clean_run_validates_and_goes_to_output_file(project):
    (project / "clean.py").write_text("print(1)\n")
    result = run_cli("clean.py", "--format", "sarif", "-o", "out.sarif", cwd=project)
    assert result.returncode == 0 and result.stdout == ""
    log = json.loads((project / "out.sarif").read_text())
    validate(log)
    assert log["runs"][0]["results"] == []


def test_schema_rejects_a_broken_log():
    """The validation above can fail: a result without a message is not SARIF."""
    log = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}}, "results": [{"ruleId": "BN001"}]}]}
    with pytest.raises(jsonschema.ValidationError):
        validate(log)


# -- GitHub workflow commands -----------------------------------------------------------------------


def test_github_annotations(project):
    (project / "src" / "broken.py").write_text("def f(:\nbase = ResNet50()\nbase.trainable = False\n")
    result = run_cli("src", "--format", "github", cwd=project)
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert f"::warning file=src/train.py,line=4,col=5,endLine=4,endColumn=37,title=BN001::{BN001_MESSAGE_START}" in "\n".join(lines)
    nb_line = next(line for line in lines if "transfer_learning.ipynb" in line and "BN001" in line)
    raw = (project / "src" / "transfer_learning.ipynb").read_text().splitlines()
    prefix = "::warning file=src/transfer_learning.ipynb,line="
    assert nb_line.startswith(prefix)
    number, rest = nb_line[len(prefix):].split(",", 1)
    assert raw[int(number) - 1].strip() == '"x = base_model(inputs)\\n",'
    assert rest.startswith("title=BN001::cell 3, line 2: frozen ResNet50 base `base_model`")
    assert any(line.startswith("::error file=src/transfer_learning.ipynb,") and "title=BN003::cell 5, line 1:" in line
               for line in lines)
    assert "::error file=src/broken.py,line=1,col=7,title=bncheck::syntax error: invalid syntax" in lines
    assert lines[-1] == "Found 3 findings in 2 files (3 checked); 3 fixable with --fix; 1 file error."


def test_github_escapes_properties_and_messages(tmp_path):
    assert escape_data("50%\r\nnext") == "50%25%0D%0Anext"
    assert escape_property("a,b:c%d\n") == "a%2Cb%3Ac%25d%0A"
    (tmp_path / "odd,name:x.py").write_text(BAD)
    result = run_cli("--format", "github", "odd,name:x.py", cwd=tmp_path)
    assert result.stdout.startswith("::warning file=odd%2Cname%3Ax.py,line=4,col=5,")


# -- editors: source on stdin -------------------------------------------------------------------


def test_stdin_python_is_reported_under_the_given_name(tmp_path):
    result = run_cli("--stdin-filename", "pkg/train.py", "-", stdin=BAD, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith(f"pkg/train.py:4:5: BN001 {BN001_MESSAGE_START}")
    assert not (tmp_path / "pkg").exists()


def test_stdin_with_a_notebook_name_is_read_as_a_notebook(tmp_path):
    result = run_cli("--stdin-filename", "nb/t.ipynb", "--select", "BN001", "-", stdin=NOTEBOOK.read_text(), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("nb/t.ipynb:cell 3:2:5: BN001")


def test_stdin_diff_for_editors_and_fix_refused(tmp_path):
    result = run_cli("--stdin-filename", "t.py", "--diff", "-", stdin=BAD, cwd=tmp_path)
    assert result.returncode == 0
    assert "+x = base(keras.Input((224, 224, 3)), training=False)" in result.stdout
    refused = run_cli("--stdin-filename", "t.py", "--fix", "-", stdin=BAD, cwd=tmp_path)
    assert refused.returncode == 2 and "--fix cannot write back to stdin" in refused.stderr


def test_stdin_syntax_error_is_a_file_error(tmp_path):
    result = run_cli("--stdin-filename", "t.py", "-", stdin="def f(:\nbase = ResNet50()\nbase.trainable = False\n", cwd=tmp_path)
    assert result.returncode == 2
    assert "t.py:1:7: error: syntax error: invalid syntax" in result.stdout
