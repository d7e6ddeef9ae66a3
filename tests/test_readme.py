"""The README's promises: the Quick start that CI runs, and the rule table generated from the rules."""

from __future__ import annotations

import re
from pathlib import Path

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


def test_rule_table_is_generated_from_the_rules():
    table = README.split("<!-- rules-table:start -->\n", 1)[1].split("\n<!-- rules-table:end -->", 1)[0]
    assert table == rules_table(), "regenerate with: python -c 'from lint.rule import rules_table; print(rules_table())'"
