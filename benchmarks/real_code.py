"""Real-code benchmark: bncheck on whole public repositories, with hand-made labels.

The repositories (name and exact commit below) are *not* fetched by this script and their code
is never committed: bring each one's git snapshot under ``--mirror`` first (the session's
``fetch`` tool puts it at ``/work/.mirror/OWNER+NAME/repo``). The script extracts the pinned
commit into ``--workdir`` with ``git archive``, runs the given ``bncheck`` over each whole
repository as a new user would (``bncheck .`` from the repository's root, default settings,
``--format json``), and prints the findings per rule and per repository.

With a labels file (``real_code_labels.toml`` beside this script by default) it also prints:

- **precision per rule**: of the findings a reviewer labelled, the share labelled right.
  Findings are matched to labels by repository, path, rule and a hash of the reported source
  line with its whitespace normalized (so labels survive line shifts; the line number stored
  with a label is only a hint for the reader);
- **file-level recall**: of the known bugs (repository, path, the rules that should flag it),
  the share where the build reports one of those rules in that file with a finding nobody
  labelled wrong. Known bugs come from reading code the linter was not pointed at and from
  findings confirmed right (pooled); ``source`` says which.

Findings nobody has labelled yet are listed with ``--unlabelled`` (path, line, rule, snippet
hash and message) so that a reviewer can read the code and add labels.

Usage::

    python benchmarks/real_code.py --bncheck .venv/bin/bncheck
    python benchmarks/real_code.py --bncheck /work/wt/lint-core/.venv/bin/bncheck --unlabelled
    python benchmarks/real_code.py --only kuangliu/pytorch-cifar --unlabelled

The benchmark is not part of the test suite (it needs the fetched repositories); the label
matching and the arithmetic are (tests/lint/test_real_code_bench.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import tempfile
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_LABELS = HERE / "real_code_labels.toml"

# (owner/name, commit, framework: "keras" | "pytorch" | "both", kind of code)
REPOS: list[tuple[str, str, str, str]] = [
    # Keras / TensorFlow: tutorials, course material, notebooks
    ("fchollet/deep-learning-with-python-notebooks", "dea84a4e12cc3bb3cb61ce952a0168bca113d315", "keras", "book notebooks"),
    ("mrdbourke/tensorflow-deep-learning", "bd065b806249f7b1155e5b1fabd130c5cfc9d184", "keras", "course notebooks, transfer learning"),
    ("https-deeplearning-ai/tensorflow-1-public", "025abb3e6bd63c63b65d6133286e2d033c9c7da4", "keras", "course notebooks"),
    ("Hvass-Labs/TensorFlow-Tutorials", "d5f33973570fe6ef9c78c8a38c7449a932c81010", "keras", "tutorial notebooks"),
    ("tensorflow/docs", "7c3650212740204359d4ceae481abc79345541be", "keras", "official tutorials"),
    ("ageron/handson-ml3", "e3f3f9e66d58cfa1d068a498433063a1d3fba9ef", "keras", "book notebooks"),
    ("aymericdamien/TensorFlow-Examples", "6dcbe14649163814e72a22a999f20c5e247ce988", "keras", "tutorial scripts and notebooks"),
    ("aamini/introtodeeplearning", "fd8023c7804bd352fc7212ac3aa587bd90912653", "both", "course labs, GradientTape loops"),
    ("dragen1860/TensorFlow-2.x-Tutorials", "9861a308283d17693d497fdfaab20b92c0b26d08", "keras", "tutorials, GradientTape loops"),
    ("YunYang1994/TensorFlow2.0-Examples", "299fd6689f242d0f647a96b8844e86325e9fcb46", "keras", "examples, GradientTape loops"),
    ("HamzaZafar953/Data-Science-BWF-HamzaZafar", "d92cd947490b02e43dac1390af01152d6a585814", "keras", "student exercises, fine-tuning"),
    ("TH3CHARLie/deep-high-dynamic-range", "bd02a56d9913262ab059d43b9a979083df41e4ef", "keras", "research code"),
    ("Young768/test-tf", "eb8e5e9860d9f685cf5435229cf347193267725a", "keras", "small experiments, BatchNormalization in a tape"),
    # Keras: training projects, transfer learning, model zoos
    ("calmisential/TensorFlow2.0_ResNet", "6136d57c7580d24c9ee3e55ca0b820822565ce17", "keras", "model.py/train.py, GradientTape loop"),
    ("calmisential/TensorFlow2.0_Image_Classification", "8da544b83657ac915b6fc20a28ea35ce6988b864", "keras", "model zoo, GradientTape loop"),
    ("flyyufelix/cnn_finetune", "cba343987d8a1dc1dfae240afa298e11898e1a3f", "keras", "fine-tuning scripts (Keras 1/2)"),
    ("qubvel/segmentation_models", "5d24bbfb28af6134e25e2c0b79e7727f6c0491d0", "keras", "library, pretrained encoders"),
    ("divamgupta/image-segmentation-keras", "1b2ba53ae49387c2d1abbd9a2f4a9a45eea6912f", "keras", "library + training"),
    ("zhixuhao/unet", "b45af4d458437d8281cc218a07fd4380818ece4a", "keras", "research training script"),
    ("fizyr/keras-retinanet", "7ac91dfbbacce77d6d9633fc09e16cd0ee71fd5e", "keras", "detection, frozen backbone"),
    ("qqwweee/keras-yolo3", "e6598d13c703029b2686bc2eb8d5c09badf42992", "keras", "detection, freeze then unfreeze"),
    ("google-research/simclr", "383d4143fd8cf7879ae10f1046a9baeb753ff438", "keras", "research, custom loops"),
    # small projects drawn from code-search results for common shapes (not chosen by outcome)
    ("VTC-AI/datnt_TL_dogs_cats", "e9ba8867059681d8443b64042ef97d4b02541820", "keras", "student project, MobileNetV2 fine-tuning, model.py/train.py"),
    ("jinzengnju/MLinPractice", "cc5e5256dea71ed6148664aaceb82c8355074a06", "keras", "personal notes, transfer learning scripts"),
    ("IshaqJunejo/Lemon-Disease-Detector", "43671801dcdba158df3116fd67c382086aef0cfd", "keras", "small app, saved MobileNetV2 base"),
    ("CHUht/AdversarialCaptcha", "c47034f495d7eeb9ef3debec7369bcd43f9fb387", "keras", "student project, adversarial examples"),
    ("ssrianyiyi/stock-prediction", "ef17b9f5a73bb6039fcfe02f1a2ab249e816c7ad", "keras", "tiny scripts, ResNet50 from scratch"),
    ("gaoxinge/machine-learning", "eefe38651f9910b7ceb43d53a3941043795c8594", "both", "personal notes, GradientTape experiments"),
    ("Angel-dash/Deep-learning-", "3b5d4793456286c0165ee4eb03e4eda86455d029", "both", "course notebooks"),
    ("marensajdaras/fine_tuning_big_models", "75e7ec0c30f5a986ff593e0a2177d67ec0edd260", "both", "small fine-tuning scripts, Keras and PyTorch"),
    ("timothyodonga/mask-detection", "0e3031b2a8b0a8ece1d62cb658e33758b03a8a5f", "pytorch", "student project, frozen resnet, config.py/train.py split"),
    ("Langery/Machine-Learning-Demo", "017d24d363a252c352314a71a424d61a8bafe8fe", "pytorch", "personal demos"),
    # PyTorch: tutorials and course material
    ("pytorch/examples", "77f55b912142e11fcfdf5b530231fb9c52f181e8", "pytorch", "official examples"),
    ("yunjey/pytorch-tutorial", "0500d3df5a2a8080ccfccbc00aca0eacc21818db", "pytorch", "tutorial"),
    ("udacity/deep-learning-v2-pytorch", "c9404fc86181fc3f0906b368697268257f348535", "pytorch", "course notebooks, transfer learning"),
    ("mrdbourke/pytorch-deep-learning", "baa27b691617461c173ecf3439793cd8cde74e13", "pytorch", "course notebooks + modular scripts"),
    ("bentrevett/pytorch-image-classification", "33c9cfdb9097bc65b5800c1996f199f0ba520888", "pytorch", "tutorial notebooks, fine-tuning"),
    ("rasbt/deeplearning-models", "18e046926551378cd691fd871dda0f21dcd272ab", "both", "notebook collection"),
    ("daicver/PytorchNote", "70504441aa1101d0fb3f44f8d5eaf3e2bcddaece", "pytorch", "personal notes, fine-tuning"),
    ("Spandan-Madan/Pytorch_fine_tuning_Tutorial", "4699392d7287745e4bc79568421b488c50c1e4b8", "pytorch", "fine-tuning tutorial"),
    ("jcjohnson/pytorch-examples", "0003fcdc606a79951e53bf8f46f8574fa4739f23", "pytorch", "tutorial scripts"),
    ("share020/dl", "73c10db832c4100da7454d3122c29bd22dd0e690", "pytorch", "course assignments"),
    ("jerryzhaozs/lstmsunspots", "bdf81f9cbc515f5745176d0b95c4d04af8ed4dd7", "pytorch", "personal project"),
    # PyTorch: model zoos (shape smoke tests at the bottom of model files)
    ("kuangliu/pytorch-cifar", "49b7aa97b0c12fe0d4054e670403a16b6b834ddd", "pytorch", "model zoo + train script"),
    ("weiaicunzai/pytorch-cifar100", "11d8418f415b261e4ae3cb1ffe20d06ec95b98e4", "pytorch", "model zoo + train/test scripts"),
    ("akamaster/pytorch_resnet_cifar10", "d5489e8995e81e91ce6b1d69dcc98ad579b0b153", "pytorch", "model zoo + trainer"),
    ("huyvnphan/PyTorch_CIFAR10", "641cac24371b17052b9bb6e56af1c83b5e97cd7f", "pytorch", "model zoo, Lightning"),
    ("bearpaw/pytorch-classification", "24f1c456f48c78133088c4eefd182ca9e6199b03", "pytorch", "model zoo + train scripts"),
    ("chenyaofo/pytorch-cifar-models", "786c16252c0fc58ee9adac063f8337cc4a7a497a", "pytorch", "model zoo, hub"),
    # PyTorch: research training code
    ("facebookresearch/moco", "8976944da9c6b94cbd9158d7ebe50912aef807ef", "pytorch", "self-supervised + linear probe on frozen encoder"),
    ("facebookresearch/simsiam", "a7bc1772896d0dad0806c51f0bb6f3b16d290468", "pytorch", "self-supervised + linear probe"),
    ("facebookresearch/barlowtwins", "8e8d284ca0bc02f88b92328e53f9b901e86b4a3c", "pytorch", "self-supervised + frozen evaluation"),
    ("facebookresearch/dino", "7c446df5b9f45747937fb0d72314eb9f7b66930a", "pytorch", "self-supervised + linear eval"),
    ("sthalles/SimCLR", "1848fc934ad844ae630e6c452300433fe99acfd9", "pytorch", "self-supervised, notebooks"),
    ("Spijkervet/SimCLR", "2738efae85b3ca1b70b7919c5d7a7837d9d75235", "pytorch", "self-supervised + linear eval"),
    ("lucidrains/byol-pytorch", "299312613c1f44923e7869d1c82be7d536c2c42b", "pytorch", "self-supervised library"),
    ("sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning", "cc9c7e2f4017938d414178d3781fed8dbe442852", "pytorch", "encoder fine-tuning, model.py/train.py"),
    ("eriklindernoren/PyTorch-GAN", "36d3c77e5ff20ebe0aeefd322326a134a279b93e", "pytorch", "GAN implementations"),
    ("AntixK/PyTorch-VAE", "a6896b944c918dd7030e7d795a8c13e5c6345ec7", "pytorch", "VAE zoo, Lightning"),
    ("milesial/Pytorch-UNet", "21d7850f2af30a9695bbeea75f3136aa538cfc4a", "pytorch", "segmentation, model/train/predict split"),
    ("victoresque/pytorch-template", "41dc06f6f8f3f38c6ed49f01ff7d89cd5688adc4", "pytorch", "project template, trainer classes"),
    ("jacobgil/pytorch-grad-cam", "084273b3f30b54ad0c64cf8020a4337d979a66e0", "pytorch", "library + examples"),
    ("timesler/facenet-pytorch", "787da06156087cd6b616fe6608213722bddc30cd", "pytorch", "library + fine-tuning example"),
]

# Added at 10:45 on 2026-12-01 and kept out of the findings notes the linter's developers read
# while they worked, so that a build tuned on the list above can be checked on code it has not
# been shown (summary line "held-out").
HELD_OUT: list[tuple[str, str, str, str]] = [
    ("Shadabur-Rahaman/Daily-ML-Dose", "1a4f96a2b975a5d153e3f70247508e625b9884a0", "both", "daily ML exercises"),
    ("HYUNMIN-HWANG/AI_STUDY", "d87c93355c949c462f96e85e8d0e186b0ce49c76", "keras", "study notes and competition scripts"),
    ("apoorv98/deep_learning_with_python", "878f8fba2a062591a7f67f4145b0693812317ae1", "keras", "book exercises"),
    ("MorvanZhou/PyTorch-Tutorial", "dbe154a9e56635e51c6b0c2ccea8ae36cfb585a7", "pytorch", "tutorial scripts and notebooks"),
    ("MorvanZhou/Tensorflow-Tutorial", "42dc32de532d146725aeef965d87871142a542d6", "keras", "tutorial scripts"),
    ("L1aoXingyu/code-of-learn-deep-learning-with-pytorch", "ea24810dc26265e85e3eec34e1d091d21202d800", "pytorch", "book notebooks, fine-tuning"),
    ("ShusenTang/Dive-into-DL-PyTorch", "09c8bacc08599eb86236551454ba43b82cb91498", "pytorch", "book notebooks (d2l port)"),
]
REPOS += HELD_OUT
HELD_OUT_NAMES = {name for name, *_ in HELD_OUT}

FRAMEWORK_OF_RULE_PREFIX = {"BN1": "pytorch"}  # BN0xx are Keras rules, BN1xx PyTorch


def rule_framework(rule: str) -> str:
    return FRAMEWORK_OF_RULE_PREFIX.get(rule[:3], "keras")


# --------------------------------------------------------------------------------------------
# Findings and their keys


def normalized_hash(text: str) -> str:
    """A short hash of a source line with its whitespace normalized (labels survive re-indents)."""
    return hashlib.sha1(" ".join(text.split()).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Finding:
    repo: str
    path: str
    line: int
    rule: str
    snippet: str  # normalized_hash of the reported line
    message: str = ""
    cell: int | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.repo, self.path, self.rule, self.snippet)

    @property
    def where(self) -> str:
        cell = f"cell {self.cell}:" if self.cell is not None else ""
        return f"{self.path}:{cell}{self.line}"


def notebook_code_cells(path: Path) -> list[list[str]]:
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    cells = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            text = "".join(source) if isinstance(source, list) else source
            cells.append(text.splitlines())
    return cells


def source_line(root: Path, record: dict) -> str:
    """The text of the line a JSON finding points at (for a notebook: the line of its code cell)."""
    path = root / record["path"]
    index = record["line"] - 1
    try:
        if record.get("cell") is not None:
            cells = notebook_code_cells(path)
            lines = cells[record["cell"] - 1]
        else:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return lines[index] if 0 <= index < len(lines) else ""
    except (OSError, IndexError):
        return ""


def findings_from_report(repo: str, root: Path, report: dict) -> list[Finding]:
    out = []
    for record in report.get("findings", []):
        out.append(
            Finding(
                repo=repo,
                path=record["path"].removeprefix("./"),
                line=record["line"],
                rule=record["code"],
                snippet=normalized_hash(source_line(root, record)),
                message=record.get("message", ""),
                cell=record.get("cell"),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Labels, precision, recall


@dataclass
class Labels:
    verdicts: dict[tuple[str, str, str, str], dict] = field(default_factory=dict)
    bugs: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None) -> "Labels":
        if path is None or not path.exists():
            return cls()
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        labels = cls()
        for entry in data.get("finding", []):
            if entry["verdict"] not in ("right", "wrong"):
                sys.exit(f"{path}: verdict must be 'right' or 'wrong', not {entry['verdict']!r}")
            key = (entry["repo"], entry["path"], entry["rule"], entry["snippet"])
            labels.verdicts[key] = entry
        labels.bugs = list(data.get("bug", []))
        return labels

    #: label shapes whose "wrong" verdicts are counted as right (a sensitivity check: --lenient)
    lenient: frozenset[str] = frozenset()

    def verdict(self, finding: Finding) -> str | None:
        entry = self.verdicts.get(finding.key)
        if entry is None:
            return None
        return "right" if entry.get("shape") in self.lenient else entry["verdict"]


@dataclass
class Score:
    right: int = 0
    wrong: int = 0
    unlabelled: int = 0

    @property
    def precision(self) -> float | None:
        labelled = self.right + self.wrong
        return self.right / labelled if labelled else None


def precision_by_rule(findings: list[Finding], labels: Labels) -> dict[str, Score]:
    scores: dict[str, Score] = defaultdict(Score)
    for f in findings:
        v = labels.verdict(f)
        score = scores[f.rule]
        if v == "right":
            score.right += 1
        elif v == "wrong":
            score.wrong += 1
        else:
            score.unlabelled += 1
    return dict(scores)


def total(scores: list[Score]) -> Score:
    return Score(sum(s.right for s in scores), sum(s.wrong for s in scores), sum(s.unlabelled for s in scores))


def bug_paths(bug: dict) -> list[str]:
    return list(bug["paths"]) if "paths" in bug else [bug["path"]]


def bug_framework(bug: dict) -> str:
    return "pytorch" if all(rule_framework(r) == "pytorch" for r in bug["rules"]) else "keras"


def known_bugs(labels: Labels) -> list[dict]:
    """The reviewed bugs plus one per (repo, path, rule) of the findings labelled right (pooled:
    a bug that one build found is a bug the other must find too)."""
    bugs = [dict(b, source=b.get("source", "review")) for b in labels.bugs]
    seen = {(b["repo"], p, r) for b in bugs for p in bug_paths(b) for r in b["rules"]}
    for (repo, path, rule, _snippet), entry in sorted(labels.verdicts.items()):
        if entry["verdict"] == "right" and (repo, path, rule) not in seen:
            seen.add((repo, path, rule))
            bugs.append({"repo": repo, "path": path, "rules": [rule], "reason": entry["reason"], "source": "finding"})
    return bugs


def bug_found(bug: dict, findings: list[Finding], labels: Labels) -> bool:
    """A known bug counts as found when one of its files has a finding of one of its rules that
    nobody labelled wrong."""
    rules, paths = set(bug["rules"]), set(bug_paths(bug))
    return any(
        f.repo == bug["repo"] and f.path in paths and f.rule in rules and labels.verdict(f) != "wrong"
        for f in findings
    )


def recall(bugs: list[dict], findings: list[Finding], labels: Labels) -> tuple[int, int]:
    found = sum(bug_found(b, findings, labels) for b in bugs)
    return found, len(bugs)


def markdown_table(scores: dict[str, Score], bugs_by_rule: dict[str, list[dict]], findings, labels) -> str:
    """Per rule: findings, right, precision of the labelled, known bugs found; then the totals."""
    rows = ["| Rule | findings | right / labelled | precision | known bugs found |", "| --- | --- | --- | --- | --- |"]
    for rule in sorted(set(scores) | set(bugs_by_rule)):
        s = scores.get(rule, Score())
        n = s.right + s.wrong + s.unlabelled
        found, known = recall(bugs_by_rule.get(rule, []), findings, labels)
        rows.append(f"| {rule} | {n} | {s.right} / {s.right + s.wrong} | {fmt(s.precision).strip()} | "
                    + (f"{found} / {known}" if known else "–") + " |")
    t = total(list(scores.values()))
    bugs = [b for rule_bugs in bugs_by_rule.values() for b in rule_bugs]
    unique = list({id(b): b for b in bugs}.values())
    found, known = recall(unique, findings, labels)
    rows.append(f"| **all** | **{t.right + t.wrong + t.unlabelled}** | **{t.right} / {t.right + t.wrong}** | "
                f"**{fmt(t.precision).strip()}** | **{found} / {known}** |")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# Running


def git_dir(mirror: Path, repo: str) -> Path | None:
    base = mirror / repo.replace("/", "+") / "repo"
    for candidate in (base / ".git", base):
        if (candidate / "HEAD").exists():
            return candidate
    return None


def extract(mirror: Path, workdir: Path, repo: str, commit: str) -> Path | None:
    """The commit's files under ``workdir`` (once). Snapshots lack their largest blobs (4 MiB
    and more, LFS content), so ``git archive`` would refuse: blobs are read one by one with
    ``git cat-file --batch`` and the missing ones skipped (bncheck reads only .py and .ipynb)."""
    dest = workdir / f"{repo.replace('/', '+')}@{commit[:12]}"
    workdir.mkdir(parents=True, exist_ok=True)
    if (dest / ".extracted").exists():
        return dest
    gd = git_dir(mirror, repo)
    if gd is None:
        return None
    final, dest = dest, Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=workdir))
    listing = subprocess.run(
        ["git", f"--git-dir={gd}", "ls-tree", "-r", "-z", commit], capture_output=True, check=True
    ).stdout.split(b"\0")
    entries = []
    for item in listing:
        if not item:
            continue
        meta, _, path = item.partition(b"\t")
        mode, kind, sha = meta.split()
        if kind == b"blob" and mode != b"120000":  # no symlinks: they could point outside
            entries.append((sha, path.decode(errors="surrogateescape")))
    batch = subprocess.Popen(
        ["git", f"--git-dir={gd}", "cat-file", "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )

    def feed() -> None:  # in a thread: git's output pipe fills while we still write the shas
        batch.stdin.write(b"".join(sha + b"\n" for sha, _ in entries))
        batch.stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    for sha, path in entries:
        header = batch.stdout.readline().split()
        if len(header) < 3 or header[1] != b"blob":  # "<sha> missing"
            continue
        data = batch.stdout.read(int(header[2]))
        batch.stdout.read(1)  # the newline after each object
        target = (dest / path).resolve()
        if dest.resolve() not in target.parents:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    feeder.join()
    batch.wait()
    (dest / ".extracted").touch()
    try:
        dest.rename(final)
    except OSError:  # another run finished the same extraction first
        shutil.rmtree(dest)
    return final


def run_bncheck(bncheck: str, root: Path) -> dict:
    """``bncheck . --format json`` from the repository's root, default settings."""
    env = dict(os.environ)
    result = subprocess.run(
        [bncheck, ".", "--format", "json"], cwd=root, capture_output=True, text=True, env=env
    )
    try:
        return json.loads(result.stdout)
    except ValueError:
        sys.exit(f"{bncheck} on {root}: no JSON report (exit {result.returncode}): {result.stderr.strip()[:500]}")


def run_all(bncheck: str, repos, mirror: Path, workdir: Path) -> tuple[list[Finding], int, list[str]]:
    """Every repository's findings, the number of files checked, the repositories not fetched."""
    findings: list[Finding] = []
    missing = []
    files_checked = 0
    for name, commit, _fw, _kind in repos:
        root = extract(mirror, workdir, name, commit)
        if root is None:
            missing.append(name)
            continue
        report = run_bncheck(bncheck, root)
        files_checked += report.get("summary", {}).get("files_checked", 0)
        findings.extend(findings_from_report(name, root, report))
    return findings, files_checked, missing


def fmt(p: float | None) -> str:
    return "  -  " if p is None else f"{p:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bncheck", default=shutil.which("bncheck") or "bncheck", help="the bncheck executable to measure")
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror"), help="where the fetched git snapshots are")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bncheck-real-code"), help="where commits are extracted")
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--only", action="append", default=[], help="repository (owner/name); repeatable")
    parser.add_argument("--held-out", action="store_true", help="only the held-out repositories")
    parser.add_argument("--unlabelled", action="store_true", help="list findings nobody has labelled")
    parser.add_argument("--sample", type=int, default=0, help="with --unlabelled: at most N per rule, at random (seed 0)")
    parser.add_argument("--save", type=Path, help="write all findings as JSON lines to this file")
    parser.add_argument("--misses", action="store_true", help="list the known bugs the build misses")
    parser.add_argument("--lenient", action="append", default=[], metavar="SHAPE",
                        help="count findings labelled wrong with this shape as right (e.g. latent-never-unfrozen)")
    parser.add_argument("--against", metavar="BNCHECK", help="another bncheck: list the findings only one of the two reports")
    parser.add_argument("--markdown", action="store_true", help="also print the per-rule table as Markdown (README)")
    args = parser.parse_args(argv)

    args.bncheck = shutil.which(args.bncheck) or args.bncheck
    args.bncheck = str(Path(args.bncheck).resolve()) if Path(args.bncheck).exists() else args.bncheck
    labels = Labels.load(args.labels)
    labels.lenient = frozenset(args.lenient)
    if args.held_out:
        args.only = sorted(HELD_OUT_NAMES)
    repos = [r for r in REPOS if not args.only or r[0] in args.only]
    findings, files_checked, missing = run_all(args.bncheck, repos, args.mirror, args.workdir)

    version = subprocess.run([args.bncheck, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"bncheck: {args.bncheck} ({version})")
    print(f"repositories: {len(repos) - len(missing)} of {len(repos)} ({files_checked} files checked)")
    if missing:
        print(f"  not under {args.mirror} (fetch them first): {', '.join(missing)}")

    by_repo = Counter(f.repo for f in findings)
    print("\nfindings per repository:")
    for name, *_ in repos:
        if by_repo[name]:
            rules = Counter(f.rule for f in findings if f.repo == name)
            print(f"  {by_repo[name]:4d}  {name}  ({', '.join(f'{r} {n}' for r, n in sorted(rules.items()))})")

    scores = precision_by_rule(findings, labels)
    print("\nper rule: findings, labelled right / wrong / unlabelled, precision of the labelled")
    for rule in sorted(scores):
        s = scores[rule]
        print(f"  {rule}  {s.right + s.wrong + s.unlabelled:4d}   {s.right:3d} / {s.wrong:3d} / {s.unlabelled:3d}   {fmt(s.precision)}")
    held = precision_by_rule([f for f in findings if f.repo in HELD_OUT_NAMES], labels)
    for title, group in (("held-out", list(held.values())), ("all", list(scores.values())), ("pytorch", [s for r, s in scores.items() if rule_framework(r) == "pytorch"]), ("keras", [s for r, s in scores.items() if rule_framework(r) == "keras"])):
        t = total(group)
        print(f"  {title:8s} {t.right + t.wrong + t.unlabelled:4d}   {t.right:3d} / {t.wrong:3d} / {t.unlabelled:3d}   {fmt(t.precision)}")

    bugs = [b for b in known_bugs(labels) if not args.only or b["repo"] in args.only]
    if bugs:
        print("\nfile-level recall on known bugs (found / known)")
        for title, subset in (
            ("all", bugs),
            ("pytorch", [b for b in bugs if bug_framework(b) == "pytorch"]),
            ("keras", [b for b in bugs if bug_framework(b) == "keras"]),
            ("read in code", [b for b in bugs if b.get("source") == "review"]),
            ("held-out", [b for b in bugs if b["repo"] in HELD_OUT_NAMES]),
        ):
            found, known = recall(subset, findings, labels)
            print(f"  {title:12s} {found:3d} / {known:3d}   {fmt(found / known if known else None)}")
        per_rule: dict[str, list[dict]] = defaultdict(list)
        for b in bugs:
            for r in b["rules"]:
                per_rule[r].append(b)
        for rule in sorted(per_rule):
            found, known = recall(per_rule[rule], findings, labels)
            print(f"  {rule:12s} {found:3d} / {known:3d}   {fmt(found / known)}")
        if args.markdown:
            print()
            print(markdown_table(scores, per_rule, findings, labels))
        if args.misses:
            print("\nmissed:")
            for b in bugs:
                if not bug_found(b, findings, labels):
                    print(f"  {'/'.join(b['rules'])}  {b['repo']}  {' | '.join(bug_paths(b))}  ({b.get('shape', b['source'])}) {b['reason']}")

    if args.unlabelled:
        todo = [f for f in findings if labels.verdict(f) is None]
        if args.sample:
            rng = random.Random(0)
            by_rule: dict[str, list[Finding]] = defaultdict(list)
            for f in todo:
                by_rule[f.rule].append(f)
            todo = [f for rule in sorted(by_rule) for f in sorted(rng.sample(by_rule[rule], min(args.sample, len(by_rule[rule]))), key=lambda f: (f.repo, f.path, f.line))]
        print(f"\nunlabelled findings ({len(todo)}):")
        for f in todo:
            print(f"  {f.rule} {f.repo} {f.where} snippet={f.snippet}\n      {f.message[:240]}")

    if args.against:
        other_exe = shutil.which(args.against) or args.against
        other, _, _ = run_all(other_exe, repos, args.mirror, args.workdir)
        mine, theirs = {f.key for f in findings}, {f.key for f in other}
        for title, only in ((f"only {args.bncheck}", [f for f in findings if f.key not in theirs]),
                            (f"only {other_exe}", [f for f in other if f.key not in mine])):
            print(f"\n{title} ({len(only)}):")
            for f in only:
                print(f"  {f.rule} {f.repo} {f.where} [{labels.verdict(f) or 'unlabelled'}]")

    if args.save:
        with args.save.open("w") as out:
            for f in findings:
                out.write(json.dumps({**f.__dict__, "verdict": labels.verdict(f)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
