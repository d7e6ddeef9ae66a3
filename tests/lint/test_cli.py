"""The installed ``bncheck`` command, run as a user runs it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from .helpers import run_cli

BAD = """\
import keras
base = keras.applications.ResNet50(include_top=False, weights=None)
base.trainable = False
x = base(keras.Input((224, 224, 3)))
base.trainable = True  # noqa: BN003 (fine-tuned later: BN001 matters; BN003 is not under test here)
"""
CLEAN = "import keras\nprint(keras.__version__)\n"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path, "src/train.py", BAD)
    write(tmp_path, "src/clean.py", CLEAN)
    return tmp_path


def test_findings_exit_1_with_ruff_style_lines(project):
    result = run_cli("src", "--target-keras", "3.15", cwd=project)
    assert result.returncode == 1, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("src/train.py:4:5: BN001 frozen ResNet50 base `base` "
                            "is called without training=False")
    assert "Found 1 finding in 1 file (2 checked)" in result.stdout


def test_no_findings_exit_0(project):
    result = run_cli("src/clean.py", cwd=project)
    assert result.returncode == 0
    assert "No findings" in result.stdout


def test_default_path_is_the_current_folder(project):
    assert run_cli(cwd=project).returncode == 1


def test_a_file_reached_twice_is_checked_once(project):
    result = run_cli("src", ".", "src/train.py", cwd=project)
    assert result.stdout.count("src/train.py:4:5: BN001") == 1, result.stdout


def test_exit_zero(project):
    result = run_cli("src", "--exit-zero", cwd=project)
    assert result.returncode == 0
    assert "BN001" in result.stdout


def test_errors_win_over_findings_and_other_files_are_still_checked(project):
    write(project, "src/broken.py", "def f(:\nbase = ResNet50()\nbase.trainable = False\n")
    result = run_cli("src", cwd=project)
    assert result.returncode == 2
    assert "src/broken.py:1:7: error: syntax error: invalid syntax" in result.stdout
    assert "src/train.py:4:5: BN001" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_json_schema(project):
    result = run_cli("src", "--format", "json", cwd=project)
    payload = json.loads(result.stdout)
    assert payload["schema_version"] == 1
    assert payload["tool"]["name"] == "bncheck"
    (finding,) = payload["findings"]
    assert finding == {
        "path": "src/train.py",
        "line": 4,
        "column": 5,
        "end_line": 4,
        "end_column": 37,
        "code": "BN001",
        "severity": "warning",
        "message": finding["message"],
        "fixable": True,
    }
    assert payload["errors"] == []
    assert payload["summary"]["by_code"] == {"BN001": 1}
    assert payload["summary"]["files_checked"] == 2
    assert payload["summary"]["files_parsed"] == 1  # the prefilter skipped clean.py


def test_statistics_and_output_file(project):
    result = run_cli("src", "--statistics", "--output-file", "report.txt", cwd=project)
    assert result.returncode == 1
    assert result.stdout == ""
    report = (project / "report.txt").read_text()
    assert "    1  BN001  frozen-batchnorm-base-call  [*]" in report


def test_select_and_ignore_by_code_and_prefix(project):
    write(project, "src/unfreeze.py", BAD + "base.trainable = True\n")
    codes = lambda *args: sorted(
        {f["code"] for f in json.loads(run_cli("src", "--format", "json", *args, cwd=project).stdout)["findings"]}
    )
    assert codes() == ["BN001", "BN003"]
    assert codes("--select", "BN003") == ["BN003"]
    assert codes("--ignore", "BN00") == []
    assert codes("--select", "BN0", "--ignore", "BN001") == ["BN003"]


def test_pyproject_config_and_flags_override_it(project):
    write(
        project,
        "pyproject.toml",
        """
        [tool.bncheck]
        ignore = ["BN001"]
        per-file-ignores = { "src/legacy/*" = ["BN003"] }
        exclude = ["generated"]
        """,
    )
    write(project, "src/legacy/old.py", BAD + "base.trainable = True\n")
    write(project, "src/generated/g.py", BAD)
    result = run_cli("--format", "json", cwd=project)
    assert json.loads(result.stdout)["findings"] == []
    result = run_cli("--format", "json", "--ignore", "BN002", cwd=project)  # flag replaces config's ignore
    paths = sorted((f["path"], f["code"]) for f in json.loads(result.stdout)["findings"])
    assert paths == [("src/legacy/old.py", "BN001"), ("src/train.py", "BN001")]


def test_force_exclude_applies_to_explicit_files(project):
    write(project, "pyproject.toml", '[tool.bncheck]\nexclude = ["src/train.py"]\n')
    assert run_cli("src/train.py", cwd=project).returncode == 1  # explicit files are checked...
    assert run_cli("src/train.py", "--force-exclude", cwd=project).returncode == 0  # ...unless forced
    write(project, "pyproject.toml", '[tool.bncheck]\nexclude = ["src/train.py"]\nforce-exclude = true\n')
    assert run_cli("src/train.py", cwd=project).returncode == 0


def test_target_keras_and_extra_models_from_config(project):
    write(project, "src/ft.py", """
        import keras
        from zoo import backbone
        base = backbone()
        base.trainable = False
        x = base(inputs, training=False)
        base.trainable = True
        """)
    write(project, "pyproject.toml", '[tool.bncheck]\nextra-batchnorm-models = ["zoo.backbone"]\ntarget-keras = "3.15"\n')
    assert "src/ft.py:7:1: BN003" in run_cli("src/ft.py", cwd=project).stdout
    write(project, "pyproject.toml", '[tool.bncheck]\nextra-batchnorm-models = ["zoo.backbone"]\ntarget-keras = "2.15"\n')
    assert run_cli("src/ft.py", cwd=project).returncode == 0


def test_latent_warnings_from_the_flag_and_the_config(project):
    # feature extraction only: the frozen base is never unfrozen, so BN001 waits for --latent
    write(project, "src/extract.py", BAD.replace("base.trainable = True  # noqa", "# base.trainable = True  # noqa"))
    assert run_cli("src/extract.py", cwd=project).returncode == 0
    flagged = run_cli("src/extract.py", "--latent", cwd=project)
    assert flagged.returncode == 1
    assert "src/extract.py:4:5: BN001 latent (nothing in this project unfreezes it): frozen ResNet50" in flagged.stdout
    write(project, "pyproject.toml", "[tool.bncheck]\nlatent = true\n")
    assert run_cli("src/extract.py", cwd=project).returncode == 1
    assert run_cli("src/extract.py", "--no-latent", cwd=project).returncode == 0


def test_explicit_config_path(project, tmp_path):
    config = write(tmp_path, "elsewhere/pyproject.toml", '[tool.bncheck]\nselect = ["BN003"]\n')
    assert run_cli("src", "--config", str(config), cwd=project).returncode == 0


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ("[tool.bncheck]\nselct = ['BN001']\n", "unknown setting 'selct'"),
        ("[tool.bncheck]\nselect = ['E501']\n", "'E501' is not a rule code"),
        ("[tool.bncheck]\ntarget-keras = 'latest'\n", "target-keras: 'latest' is not a version"),
        ("[tool.bncheck]\nlatent = 'yes'\n", "latent must be true or false"),
        ("[tool.bncheck\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_clear_line(project, config, needle):
    write(project, "pyproject.toml", config)
    result = run_cli("src", cwd=project)
    assert result.returncode == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_usage_errors_are_one_line(project):
    result = run_cli("--frobnicate", cwd=project)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["bncheck: error: unrecognized arguments: --frobnicate (see bncheck --help)"]
    assert run_cli("--config", "missing.toml", cwd=project).returncode == 2
    missing = run_cli("nope.py", cwd=project)
    assert missing.returncode == 2 and "nope.py: error: no such file or directory" in missing.stdout


@pytest.mark.parametrize(
    "comment",
    ["# noqa", "# noqa: BN001", "# NOQA:BN001,BN003", "# bncheck: ignore[BN001]", "# bncheck: ignore"],
)
def test_suppression_comments(project, comment):
    write(project, "src/train.py", BAD.replace("x = base(keras.Input((224, 224, 3)))", f"x = base(keras.Input((224, 224, 3)))  {comment}"))
    assert run_cli("src/train.py", cwd=project).returncode == 0


def test_suppressing_another_code_does_not_hide_the_finding(project):
    write(project, "src/train.py", BAD.replace("3)))", "3)))  # noqa: BN002"))
    assert run_cli("src/train.py", cwd=project).returncode == 1


def test_default_excludes_skip_git_build_and_virtualenvs(tmp_path):
    for folder in (".git", "build", "node_modules", "myenv"):
        write(tmp_path, f"{folder}/bad.py", BAD)
    (tmp_path / "myenv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    result = run_cli("--format", "json", cwd=tmp_path)
    assert json.loads(result.stdout)["summary"]["files_checked"] == 0


def test_list_rules_and_explain():
    listing = run_cli("--list-rules").stdout
    assert "BN001" in listing and "BN003" in listing
    explained = run_cli("--explain", "bn003")
    assert explained.returncode == 0
    for section in ("## What it does", "## Why is this bad?", "## Example", "## Use instead", "## References"):
        assert section in explained.stdout
    unknown = run_cli("--explain", "BN999")
    assert unknown.returncode == 2 and "unknown rule 'BN999'" in unknown.stderr


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("bncheck ")


def test_fix_writes_and_diff_does_not(project):
    path = project / "src/train.py"
    diff = run_cli("src/train.py", "--diff", cwd=project)
    assert "+x = base(keras.Input((224, 224, 3)), training=False)" in diff.stdout
    assert "--- src/train.py" in diff.stdout
    assert path.read_text() == BAD
    fixed = run_cli("src/train.py", "--fix", cwd=project)
    assert fixed.returncode == 0, fixed.stdout
    assert path.read_text() == BAD.replace("3)))", "3)), training=False)")
    assert run_cli("src/train.py", "--fix", cwd=project).returncode == 0
    assert path.read_text() == BAD.replace("3)))", "3)), training=False)")


def test_stdin(project):
    result = run_cli("--stdin-filename", "nb/cell.py", "-", stdin=BAD, cwd=project)
    assert result.returncode == 1
    assert result.stdout.startswith("nb/cell.py:4:5: BN001")
