"""The README's promises: the Quick start that CI runs, and the rule table generated from the rules."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from lint.rule import rules_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def quick_start() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```(?:bash|sh)\n(.*?)```", section, re.S)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_quick_start_is_exactly_two_commands_and_ci_runs_the_second_verbatim():
    commands = quick_start()
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines()


def first_command_steps() -> list[str]:
    """The Quick start's first command, split at ``&&`` and ``;``."""
    return [step.strip() for step in re.split(r"&&|;", quick_start()[0])]


def installed_requirements(target: str) -> list[Requirement]:
    """What ``pip install <target>`` installs from this project: its dependencies and those of
    the extras named in ``.[extra,...]``, self-references (``pytest-bncheck[x]``) followed."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = re.fullmatch(r"\.(?:\[(.*)\])?", target).group(1) or ""
    pending, seen, found = [e.strip() for e in extras.split(",") if e.strip()], set(), []
    found += [Requirement(r) for r in project["dependencies"]]
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in project["optional-dependencies"][extra]:
            requirement = Requirement(line)
            if requirement.name == project["name"]:
                pending += sorted(requirement.extras)
            else:
                found.append(requirement)
    return found


def run_step(step: str) -> subprocess.CompletedProcess:
    """Run a ``.venv/bin/...`` step of the Quick start with this test's own environment's bin."""
    bin_dir = Path(sys.executable).parent
    argv = shlex.split(step)
    assert argv[0].startswith(".venv/bin/"), step
    argv[0] = str(bin_dir / argv[0].removeprefix(".venv/bin/"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)


def test_quick_start_first_command_installs_pytest_and_runs_the_linter():
    venv, install, lint, plugin = first_command_steps()
    assert venv == "python3 -m venv .venv"
    (target,) = [word for word in shlex.split(install)[4:] if not word.startswith("-")]
    assert shlex.split(install)[:4] == [".venv/bin/python", "-m", "pip", "install"]
    unconditional = {r.name for r in installed_requirements(target) if r.marker is None}
    assert {"pytest", "libcst", "numpy"} <= unconditional  # the plugin's run needs pytest
    assert any(r.name.startswith("tensorflow") for r in installed_requirements(target))
    result = run_step(lint)
    assert result.returncode == 1, result.stdout + result.stderr  # the examples' findings, by design
    assert re.search(r"^Found \d+ findings in \d+ files \(\d+ checked\)", result.stdout, re.M), result.stdout
    assert plugin.split()[-1] == "examples/keras" and "--bn-consistency" in plugin


@pytest.mark.slow
def test_quick_start_first_command_fails_the_seed_and_passes_the_healthy_example():
    result = run_step(first_command_steps()[3])
    text = result.stdout
    assert result.returncode == 1, text + result.stderr
    assert "1 failed, 1 passed" in text
    assert "FAILED examples/keras/test_seed_resnet50.py::test_resnet50_overfits_three_images" in text
    assert "left 'resnet50' inconsistent" in text and "FAILED (cause: batchnorm)" in text


def test_rule_table_is_generated_from_the_rules():
    table = README.split("<!-- rules-table:start -->\n", 1)[1].split("\n<!-- rules-table:end -->", 1)[0]
    assert table == rules_table(), "regenerate with: python -c 'from lint.rule import rules_table; print(rules_table())'"
