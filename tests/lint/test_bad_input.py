"""Files that cannot be checked: each is one clear error line for its path, exit code 2, no
traceback, and every other file is still checked (its finding is still reported).

Failures that cannot be produced honestly on CI (an unreadable folder when running as root, a
parser crash, a parser that hangs) are injected into the real ``bncheck`` process through a
``sitecustomize`` module on its PYTHONPATH; the workers are forked from it and inherit the patch.
"""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from lint.config import Settings
from lint.documents import write_atomically
from lint.engine import check_source

from .helpers import ALL_CODES, run_cli

BAD = """\
import keras
base = keras.applications.ResNet50(include_top=False, weights=None)
base.trainable = False
x = base(keras.Input((224, 224, 3)))
base.trainable = True  # noqa: BN003 (fine-tuned later: BN001 matters; BN003 is not under test here)
"""
BAD_FINDING = "bad.py:4:5: BN001 "
FIXED_LINE = "x = base(keras.Input((224, 224, 3)), training=False)"
# Prepended to pathological files so that the prefilter lets them through to libcst.
LIBCST_BAIT = BAD.replace("x = base", "y = base")


def project(tmp_path: Path, files: dict[str, str | bytes] | None = None) -> Path:
    """A folder with bad.py (one BN001 finding) and ``files``."""
    (tmp_path / "bad.py").write_text(BAD)
    for name, content in (files or {}).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return tmp_path


def with_sitecustomize(tmp_path: Path, code: str) -> dict:
    """Environment that makes the bncheck process import ``code`` at start-up."""
    site = tmp_path.parent / f"{tmp_path.name}-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(code))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def assert_one_error(result, path: str, *fragments: str, others_checked: bool = True) -> str:
    """Exit 2, exactly one error line for ``path`` (carrying ``fragments``), no traceback, and
    (``others_checked``) the finding in bad.py still reported."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    mine = [line for line in lines if line.startswith(f"{path}:")]
    assert len(mine) == 1, result.stdout
    assert ": error: " in mine[0]
    for fragment in fragments:
        assert fragment in mine[0]
    if others_checked:
        assert sum(line.startswith(BAD_FINDING) for line in lines) == 1, result.stdout
    return mine[0]


# -- files Python cannot read as source -----------------------------------------------------


def test_syntax_error_names_line_and_column(tmp_path):
    root = project(tmp_path, {"broken.py": "import keras\n\ndef f(x:\n    return x\nbase = ResNet50()\nbase.trainable = False\n"})
    result = run_cli(".", cwd=root)
    line = assert_one_error(result, "broken.py", "syntax error")
    assert line.startswith("broken.py:3:6: error: syntax error: ")


def test_a_file_no_rule_can_match_is_not_parsed(tmp_path):
    """bncheck is not a syntax checker: a file without the tokens any rule needs is skipped by
    its text, so its syntax error is not ours to report; a relevant broken file still is."""
    root = project(tmp_path, {"notes.py": "def f(x:\n    return x\n",
                              "train.py": "def f(x:\nbase = ResNet50()\nbase.trainable = False\n"})
    result = run_cli(".", cwd=root)
    assert "notes.py" not in result.stdout
    assert_one_error(result, "train.py", "syntax error")


def test_invalid_utf8_names_the_line(tmp_path):
    root = project(tmp_path, {"latin1.py": "x = 1\nname = 'caf\xe9'\n".encode("latin-1")})
    result = run_cli(".", cwd=root)
    assert_one_error(result, "latin1.py", "line 2", "not valid UTF-8", "0xe9")


def test_binary_file(tmp_path):
    root = project(tmp_path, {"blob.py": b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256))})
    result = run_cli(".", cwd=root)
    assert_one_error(result, "blob.py", "binary file")


def test_empty_files_are_valid_python(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_bytes(b"")
    (tmp_path / "empty.py").write_bytes(b"")
    result = run_cli(".", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, ""), result.stdout
    assert result.stdout == "No findings in 2 files checked.\n"
    # ... and every rule accepts an empty module (the prefilter would never send one there).
    checked = check_source("empty.py", "", Settings(), ALL_CODES, True)
    assert (checked.error, checked.violations, checked.fixed_source) == (None, [], None)


def test_nonexistent_path(tmp_path):
    project(tmp_path)
    result = run_cli("bad.py", "missing.py", cwd=tmp_path)
    assert_one_error(result, "missing.py", "no such file or directory")


# -- folders and links ------------------------------------------------------------------------


def test_unreadable_folder(tmp_path):
    # As root, chmod 000 does not stop reading; make the scan itself fail as it does for a user.
    root = project(tmp_path, {"locked/hidden.py": BAD, "open/ok.py": BAD.replace("x = base", "z = base")})
    env = with_sitecustomize(tmp_path, """
        import os
        _scandir = os.scandir
        def scandir(path="."):
            if os.path.basename(os.fspath(path)) == "locked":
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return _scandir(path)
        os.scandir = scandir
    """)
    result = run_cli(".", cwd=root, env=env)
    assert_one_error(result, "locked", "cannot read this folder", "Permission denied")
    assert "open/ok.py:4:5: BN001" in result.stdout
    assert "hidden.py" not in result.stdout


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_loops(tmp_path):
    root = project(tmp_path)
    os.symlink("loop_b.py", root / "loop_a.py")
    os.symlink("loop_a.py", root / "loop_b.py")
    (root / "sub").mkdir()
    os.symlink("..", root / "sub" / "up")  # a folder loop: links to folders are not followed
    result = run_cli(".", cwd=root)
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    assert errors == ["loop_a.py: error: broken or looping symlink", "loop_b.py: error: broken or looping symlink"]
    assert sum(line.startswith(BAD_FINDING) for line in result.stdout.splitlines()) == 1
    # Named on the command line, as pre-commit passes files.
    assert_one_error(run_cli("bad.py", "loop_a.py", cwd=root), "loop_a.py", "looping symlink")


# -- sizes and shapes libcst cannot take ----------------------------------------------------


def test_fifty_thousand_line_file_is_checked(tmp_path):
    body = "".join(f"v{i} = {i}\n" for i in range(49_996))
    text = BAD.replace("x = base", body + "x = base")
    assert text.count("\n") == 50_001
    (tmp_path / "huge.py").write_text(text)
    result = run_cli("huge.py", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("huge.py:50000:5: BN001 ")


DEEP = {
    # the tokenizer refuses these (libcst segfaults on them)
    "parens.py": ("x = " + "(" * 10_000 + "1" + ")" * 10_000 + "\n", "too many nested parentheses"),
    "lists.py": ("x = " + "[" * 5_000 + "]" * 5_000 + "\n", "too many nested parentheses"),
    # valid Python that libcst takes minutes to parse: refused by the depth guard
    "chain.py": ("x = " + " + ".join(["a"] * 10_000) + "\n", "levels deep"),
    "calls.py": ("x = f" + "()" * 3_000 + "\n", "levels deep"),
}


@pytest.mark.parametrize("name", sorted(DEEP))
def test_deeply_nested_expression_is_a_clean_error(tmp_path, name):
    text, message = DEEP[name]
    root = project(tmp_path, {name: LIBCST_BAIT + text})
    result = run_cli(".", cwd=root)
    line = assert_one_error(result, name, message)
    assert line.startswith(f"{name}:6:"), "the error points into the nested expression"


# -- a worker that dies or hangs --------------------------------------------------------------

PARSER_TRAPS = """
    import os, signal, time
    import libcst
    _parse = libcst.parse_module
    def parse_module(source, *args, **kwargs):
        text = source if isinstance(source, str) else source.decode()
        if "CRASH_HERE" in text:
            os.kill(os.getpid(), signal.SIGSEGV)
        if "STALL_HERE" in text:
            time.sleep(120)
        return _parse(source, *args, **kwargs)
    libcst.parse_module = parse_module
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGSEGV") or os.name == "nt", reason="POSIX signals")
def test_parser_crash_is_one_error_and_the_run_goes_on(tmp_path):
    root = project(tmp_path, {
        "crash.py": LIBCST_BAIT + "# CRASH_HERE\n",
        "later.py": BAD.replace("x = base", "w = base"),
    })
    result = run_cli(".", "--jobs", "1", cwd=root, env=with_sitecustomize(tmp_path, PARSER_TRAPS))
    assert_one_error(result, "crash.py", "crashed (signal 11)", "exclude it or report a bug")
    assert "later.py:4:5: BN001" in result.stdout  # checked by the replacement worker


def test_parser_overrunning_the_time_limit_is_one_error(tmp_path):
    root = project(tmp_path, {
        "slow.py": LIBCST_BAIT + "# STALL_HERE\n",
        "later.py": BAD.replace("x = base", "w = base"),
    })
    result = run_cli(".", "--timeout", "1", "--jobs", "1", cwd=root, env=with_sitecustomize(tmp_path, PARSER_TRAPS))
    assert_one_error(result, "slow.py", "gave up after 1 s")
    assert "later.py:4:5: BN001" in result.stdout


# -- --fix never leaves a half-written file ---------------------------------------------------


def test_fix_that_cannot_be_written_leaves_the_file_untouched(tmp_path):
    root = project(tmp_path)
    env = with_sitecustomize(tmp_path, """
        import os
        def replace(src, dst, **kwargs):
            raise PermissionError(13, "Permission denied", os.fspath(dst))
        os.replace = replace
    """)
    result = run_cli(".", "--fix", cwd=root, env=env)
    assert_one_error(result, "bad.py", "cannot write the fix", "the file is unchanged", others_checked=False)
    assert (root / "bad.py").read_text() == BAD
    assert sorted(p.name for p in root.iterdir()) == ["bad.py"], "no temporary file is left behind"


def test_write_atomically_keeps_permissions(tmp_path):
    path = tmp_path / "train.py"
    path.write_text(BAD)
    path.chmod(0o640)
    write_atomically(path, b"fixed\n")
    assert path.read_bytes() == b"fixed\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["train.py"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_write_atomically_follows_symlinks(tmp_path):
    real = tmp_path / "real" / "train.py"
    real.parent.mkdir()
    real.write_text(BAD)
    real.chmod(0o755)
    link = tmp_path / "train.py"
    link.symlink_to(real)
    write_atomically(link, b"fixed\n")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == b"fixed\n"
    assert stat.S_IMODE(real.stat().st_mode) == 0o755
    assert sorted(p.name for p in real.parent.iterdir()) == ["train.py"]


def test_write_atomically_failure_leaves_the_original(tmp_path, monkeypatch):
    path = tmp_path / "train.py"
    path.write_text(BAD)

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_atomically(path, b"half")
    assert path.read_text() == BAD
    assert [p.name for p in tmp_path.iterdir()] == ["train.py"], "the temporary file is removed"


def test_fix_through_the_cli_follows_a_symlink(tmp_path):
    real = tmp_path / "src" / "train.py"
    real.parent.mkdir()
    real.write_text(BAD)
    (tmp_path / "bad.py").symlink_to(real)
    result = run_cli("bad.py", "--fix", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "bad.py").is_symlink()
    assert real.read_text().splitlines()[-2] == FIXED_LINE


def test_file_python_accepts_but_libcst_rejects(tmp_path):
    # Found by the fuzz tests: a line continuation before a CRLF at the end of the file.
    root = project(tmp_path, {"tail.py": b"import keras  # learning_phase\n\t\\\r\n"})
    result = run_cli(".", cwd=root)
    assert_one_error(result, "tail.py", "libcst cannot parse this file, which Python accepts")
