"""The real-code benchmark's own logic (benchmarks/real_code.py) on small synthetic input: label
matching that survives line shifts, the precision and recall arithmetic, and the extraction of a
pinned commit from a git snapshot. The benchmark itself needs fetched repositories and is not run
here."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "real_code.py"


@pytest.fixture(scope="module")
def rc():
    spec = importlib.util.spec_from_file_location("real_code", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["real_code"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules["real_code"]


SOURCE = "import torch\n\ndef test():\n    net = Net()\n    y = net(torch.randn(1, 3))\n"


def labels_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.toml"
    path.write_text(text)
    return path


def report(path: str, line: int, code: str, **extra) -> dict:
    return {"findings": [{"path": path, "line": line, "code": code, "message": "m", **extra}]}


def test_label_survives_line_shift_and_reindent_but_not_a_changed_line(rc, tmp_path):
    (tmp_path / "m.py").write_text(SOURCE)
    [finding] = rc.findings_from_report("o/r", tmp_path, report("./m.py", 5, "BN102"))
    assert finding.path == "m.py"
    labels = rc.Labels.load(labels_file(tmp_path, f"""
[[finding]]
repo = "o/r"
path = "m.py"
rule = "BN102"
snippet = "{finding.snippet}"
verdict = "wrong"
reason = "smoke test"
"""))
    assert labels.verdict(finding) == "wrong"

    (tmp_path / "m.py").write_text("# a new header line\n\n" + SOURCE.replace("    y = net", "        y  =  net"))
    [shifted] = rc.findings_from_report("o/r", tmp_path, report("m.py", 7, "BN102"))
    assert labels.verdict(shifted) == "wrong"

    (tmp_path / "m.py").write_text(SOURCE.replace("torch.randn(1, 3)", "images"))
    [changed] = rc.findings_from_report("o/r", tmp_path, report("m.py", 5, "BN102"))
    assert labels.verdict(changed) is None
    [other_rule] = rc.findings_from_report("o/r", tmp_path, report("m.py", 5, "BN101"))
    assert labels.verdict(other_rule) is None


def test_notebook_findings_are_keyed_by_the_line_of_their_code_cell(rc, tmp_path):
    nb = {"nbformat": 4, "cells": [
        {"cell_type": "markdown", "source": ["text"]},
        {"cell_type": "code", "source": ["a = 1\n"]},
        {"cell_type": "code", "source": ["b = 2\n", "y = net(x)\n"]},
    ]}
    (tmp_path / "n.ipynb").write_text(json.dumps(nb))
    [f] = rc.findings_from_report("o/r", tmp_path, report("n.ipynb", 2, "BN102", cell=2))
    assert f.snippet == rc.normalized_hash("y = net(x)")
    assert f.where == "n.ipynb:cell 2:2"


def finding(rc, path, rule, snippet):
    return rc.Finding(repo="o/r", path=path, line=1, rule=rule, snippet=snippet)


LABELS = """
[[finding]]
repo = "o/r"
path = "a.py"
rule = "BN101"
snippet = "s1"
verdict = "right"
reason = "frozen backbone trained in train mode"

[[finding]]
repo = "o/r"
path = "b.py"
rule = "BN101"
snippet = "s2"
verdict = "right"
reason = "same shape"

[[finding]]
repo = "o/r"
path = "c.py"
rule = "BN102"
snippet = "s3"
verdict = "wrong"
shape = "smoke-test"
reason = "smoke test"

[[bug]]
repo = "o/r"
path = "c.py"
rules = ["BN102"]
reason = "eval missing in the real evaluation function"

[[bug]]
repo = "o/r"
paths = ["models.py", "train.py"]
rules = ["BN101"]
reason = "frozen in one file, trained in the other"
"""


def test_precision_per_rule_counts_only_labelled_findings(rc, tmp_path):
    labels = rc.Labels.load(labels_file(tmp_path, LABELS))
    findings = [
        finding(rc, "a.py", "BN101", "s1"),
        finding(rc, "b.py", "BN101", "s2"),
        finding(rc, "c.py", "BN102", "s3"),
        finding(rc, "d.py", "BN102", "unlabelled"),
    ]
    scores = rc.precision_by_rule(findings, labels)
    assert (scores["BN101"].right, scores["BN101"].wrong, scores["BN101"].unlabelled) == (2, 0, 0)
    assert scores["BN101"].precision == 1.0
    assert (scores["BN102"].right, scores["BN102"].wrong, scores["BN102"].unlabelled) == (0, 1, 1)
    assert scores["BN102"].precision == 0.0
    overall = rc.total(list(scores.values()))
    assert overall.precision == pytest.approx(2 / 3)
    assert rc.Score().precision is None

    labels.lenient = frozenset({"smoke-test"})  # the sensitivity check counts that shape as right
    assert rc.precision_by_rule(findings, labels)["BN102"].precision == 1.0


def test_recall_pools_right_findings_and_ignores_wrong_ones(rc, tmp_path):
    labels = rc.Labels.load(labels_file(tmp_path, LABELS))
    bugs = rc.known_bugs(labels)
    # two reviewed bugs, plus one per file of the right findings (a.py, b.py)
    assert sorted((b["source"], tuple(rc.bug_paths(b))) for b in bugs) == [
        ("finding", ("a.py",)), ("finding", ("b.py",)), ("review", ("c.py",)), ("review", ("models.py", "train.py")),
    ]
    assert all(rc.bug_framework(b) == "pytorch" for b in bugs)

    # the only BN102 finding in c.py is labelled wrong: it does not find c.py's real bug
    findings = [finding(rc, "a.py", "BN101", "s1"), finding(rc, "c.py", "BN102", "s3")]
    assert rc.recall(bugs, findings, labels) == (1, 4)
    # an unlabelled finding of the right rule in either of a bug's files counts
    findings += [finding(rc, "train.py", "BN101", "new"), finding(rc, "c.py", "BN102", "new")]
    assert rc.recall(bugs, findings, labels) == (3, 4)
    # a finding of another rule in the file does not
    assert not rc.bug_found(bugs[0] | {"rules": ["BN003"]}, findings, labels)


def test_a_verdict_other_than_right_or_wrong_is_refused(rc, tmp_path):
    bad = LABELS.replace('verdict = "wrong"', 'verdict = "maybe"')
    with pytest.raises(SystemExit, match="verdict must be"):
        rc.Labels.load(labels_file(tmp_path, bad))


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_extract_reads_every_blob_of_the_commit_even_when_git_output_fills_the_pipe(rc, tmp_path):
    work = tmp_path / "src"
    (work / "pkg").mkdir(parents=True)
    # enough files that git's output and our list of object names both exceed a pipe's buffer
    for i in range(2500):
        (work / "pkg" / f"m{i}.py").write_text(f"x = {i}\n" * 20)
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "c"], check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    mirror = tmp_path / "mirror"
    (mirror / "o+r").mkdir(parents=True)
    (work / ".git").rename(mirror / "o+r" / "repo")  # a bare-like git dir, as fetch leaves some

    root = rc.extract(mirror, tmp_path / "out", "o/r", commit)
    assert root == tmp_path / "out" / f"o+r@{commit[:12]}"
    assert len(list((root / "pkg").iterdir())) == 2500
    assert (root / "pkg" / "m7.py").read_text() == "x = 7\n" * 20
    assert rc.extract(mirror, tmp_path / "out", "o/r", commit) == root  # once
    assert rc.extract(mirror, tmp_path / "out", "o/missing", commit) is None
