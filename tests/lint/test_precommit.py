"""The pre-commit hook, for real: ``pre-commit try-repo`` against this checkout, in a
throw-away git repository, fails on a bad file and passes once it is fixed.

try-repo only sees committed and tracked files of the repository it is given, so the test
first snapshots this checkout's working tree (tracked and untracked files, minus what
.gitignore ignores) into a temporary git repository: the hook is tested as the tree is now.
pre-commit then builds the hook's virtualenv by pip-installing that snapshot (about 8 s).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PRE_COMMIT = Path(sys.executable).with_name("pre-commit")
GIT = shutil.which("git")
BAD = """\
import keras

base = keras.applications.ResNet50(include_top=False, weights=None)
base.trainable = False
x = base(keras.Input((224, 224, 3)))
base.trainable = True  # noqa: BN003 (fine-tuned later: BN001 matters; BN003 is not under test here)
"""

pytestmark = pytest.mark.skipif(
    GIT is None or not PRE_COMMIT.exists() or not (ROOT / ".git").exists(),
    reason="needs git, pre-commit and a git checkout",
)


def git(*args: str, cwd: Path) -> str:
    config = ["-c", "user.name=bncheck tests", "-c", "user.email=tests@example.invalid", "-c", "commit.gpgsign=false"]
    return subprocess.run([GIT, *config, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """This working tree as a committed git repository."""
    snapshot = tmp_path_factory.mktemp("bncheck-checkout")
    files = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, snapshot / name)
    git("init", "-q", cwd=snapshot)
    git("add", "-A", cwd=snapshot)
    git("commit", "-q", "-m", "snapshot", cwd=snapshot)
    return snapshot


def try_repo(checkout: Path, project: Path, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "PRE_COMMIT_COLOR": "never"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [str(PRE_COMMIT), "try-repo", str(checkout), "bncheck", "--all-files"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )


def test_hook_definition():
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "bncheck" and hook["entry"] == "bncheck" and hook["language"] == "python"
    assert hook["types_or"] == ["python", "jupyter"]
    assert "--force-exclude" in hook["args"]
    assert hook.get("pass_filenames", True) is True


def test_pre_commit_try_repo_fails_on_the_finding_then_passes_when_fixed(checkout, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(BAD)
    # Excluded in config: pre-commit passes it explicitly, --force-exclude keeps it out.
    (project / "vendored").mkdir()
    (project / "vendored" / "copy.py").write_text(BAD)
    (project / "pyproject.toml").write_text(textwrap.dedent("""\
        [tool.bncheck]
        extend-exclude = ["vendored"]
        target-keras = "3.15"
    """))
    (project / "README.md").write_text("not Python: the hook is not run on it\n")
    git("init", "-q", cwd=project)
    git("add", "-A", cwd=project)
    home = tmp_path / "pre-commit-home"

    failed = try_repo(checkout, project, home)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "bncheck" in failed.stdout and "Failed" in failed.stdout
    assert "train.py:5:5: BN001 frozen ResNet50 base `base` is called without training=False" in failed.stdout
    assert "vendored" not in failed.stdout
    assert "Found 1 finding in 1 file" in failed.stdout

    (project / "train.py").write_text(BAD.replace("(224, 224, 3)))", "(224, 224, 3)), training=False)"))
    git("add", "-A", cwd=project)
    passed = try_repo(checkout, project, home)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Passed" in passed.stdout
