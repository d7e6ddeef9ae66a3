"""Every rule's own VALID and INVALID examples, collected as tests (Fixit style)."""

from __future__ import annotations

import textwrap

import libcst as cst
import pytest

from lint.rule import all_rules

from .helpers import check

VALID = [pytest.param(rule, code, id=f"{rule.code}-valid-{i}") for rule in all_rules() for i, code in enumerate(rule.VALID)]
INVALID = [
    pytest.param(rule, example, id=f"{rule.code}-invalid-{i}") for rule in all_rules() for i, example in enumerate(rule.INVALID)
]


def test_every_rule_has_examples_and_docs():
    for rule in all_rules():
        assert rule.VALID and rule.INVALID, rule.code
        docs = rule.docs()
        assert {"What it does", "Why is this bad?", "Example", "Use instead", "References"} <= set(docs.sections), rule.code
        assert rule.fixable == any(e.fixed for e in rule.INVALID), f"{rule.code}: fixable rules show a fix example"


@pytest.mark.parametrize(("rule", "code"), VALID)
def test_valid_example_is_quiet(rule, code):
    found, _, _ = check(code, codes=(rule.code,))
    assert found == [], f"{rule.code} flagged a look-alike"


@pytest.mark.parametrize(("rule", "example"), INVALID)
def test_invalid_example_is_flagged(rule, example):
    found, _, _ = check(example.code, codes=(rule.code,), **example.settings)
    assert rule.code in found
    if example.settings:  # flagged only with these settings: quiet with the defaults
        assert rule.code not in check(example.code, codes=(rule.code,))[0], "default settings flag it too"
    if example.fixed is not None:
        _, fixed, _ = check(example.code, codes=(rule.code,), fix=True, **example.settings)
        assert fixed == textwrap.dedent(example.fixed)
        again, fixed_twice, _ = check(fixed, codes=(rule.code,), fix=True, **example.settings)
        assert fixed_twice is None, "a second --fix must change nothing"
        assert rule.code not in again
        cst.parse_module(fixed)
