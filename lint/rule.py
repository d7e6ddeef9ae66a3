"""The rule contract: one small class per rule, its documentation and its examples beside it.

A rule's docstring is its documentation, in ruff's sections ("What it does", "Why is this
bad?", "Example", "Use instead", "References"). That one text feeds ``--explain``, the
README's rule table and the SARIF rule metadata. ``VALID`` and ``INVALID`` hold code that
must stay quiet and code that must be flagged; the test suite collects them (Fixit style).
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
import re
import textwrap
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, ClassVar, Iterable, Iterator

if TYPE_CHECKING:
    import libcst as cst

    from lint.context import FileContext


class Severity(str, enum.Enum):
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Invalid:
    """An example that must be flagged: ``code`` and, optionally, what ``--fix`` makes of it."""

    code: str
    fixed: str | None = None
    #: settings the example is checked with (``{"latent": True}``), as ``[tool.bncheck]`` would give them
    settings: dict = field(default_factory=dict)


@dataclass
class Fix:
    """Node replacements applied by one transformer pass, keyed by node identity.

    A value may be a ``libcst.FlattenSentinel`` to put several statements in place of one
    (the original plus inserted guard code).
    """

    replacements: dict[int, tuple["cst.CSTNode", object]] = field(default_factory=dict)

    def replace(self, old: "cst.CSTNode", new: object) -> "Fix":
        self.replacements[id(old)] = (old, new)
        return self


@dataclass
class Violation:
    """What a rule reports; the engine adds the position and the rule's code and severity."""

    node: "cst.CSTNode"
    message: str
    fix: Fix | None = None


class Rule:
    code: ClassVar[str]
    name: ClassVar[str]
    severity: ClassVar[Severity]
    summary: ClassVar[str]
    #: groups of tokens; a file is parsed for this rule only if, for every group, one of the
    #: group's tokens occurs in its text. A token is a substring, or a compiled pattern where
    #: spacing varies (``X.trainable = False``). Tight groups are the linter's main speed lever.
    #: Groups are tried in order and most files fail the first: put the cheapest, most selective
    #: group first (one rare substring beats many tokens or a pattern).
    prefilter: ClassVar[tuple[tuple[str | re.Pattern[str], ...], ...]] = ()
    fixable: ClassVar[bool] = False
    #: the rule reads the project index (``lint.flow.project``): a file may take its model from
    #: another module of the project, so the groups naming BatchNorm models (those holding
    #: "BatchNorm" or "BatchNorm2d") are waived for a file that imports a ``framework`` model with it.
    project_wide: ClassVar[bool] = False
    framework: ClassVar[str] = ""  # "keras", "torch", or both: "keras torch"
    #: an inference rule: unit tests run BatchNorm in training mode on purpose, so test files
    #: (``tests/``, ``test_*.py``, ``*_test.py``, ``conftest.py``) are not even parsed for it
    skips_tests: ClassVar[bool] = False
    #: the rule queries the Keras model events (``FileContext.flow.keras_models``): the walk records
    #: them only for a file that some such rule checks
    queries_keras_models: ClassVar[bool] = False
    VALID: ClassVar[list[str]] = []
    INVALID: ClassVar[list[Invalid]] = []

    def check(self, ctx: "FileContext") -> Iterator[Violation]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def models_from(cls, frameworks: frozenset[str]) -> bool:
        """Its model may be one of these frameworks' models with BatchNorm that a file imports."""
        return any(f in frameworks for f in cls.framework.split())

    @classmethod
    def prefilter_groups(
        cls, extra_tokens: Iterable[str] = (), relaxed: bool = False
    ) -> tuple[tuple[str | re.Pattern[str], ...], ...]:
        """The prefilter, widened by user-configured tokens (e.g. ``extra-batchnorm-models``);
        ``relaxed``: without the groups naming BatchNorm models (a project-wide rule's model
        may be imported)."""
        groups = cls.prefilter
        if relaxed:
            groups = tuple(g for g in groups if not (_is_model_group(g) or "BatchNorm2d" in g))
        extra = tuple(extra_tokens)
        if not extra:
            return groups
        return tuple(group + extra if _is_model_group(group) else group for group in groups)

    @classmethod
    def docs(cls) -> "RuleDoc":
        return RuleDoc.parse(cls)


def assignment(attribute: str, *values: str) -> re.Pattern[str]:
    """A prefilter token for ``X.<attribute> = <value>`` written any way Python allows: any
    spacing, an annotation, chained targets, parentheses and line continuations. ``attribute``
    and ``values`` are regular expressions (``"train|eval"``)."""
    return re.compile(rf"\.[\s\\]*(?:{attribute})\b(?:\\\n|[^\n])*?=[\s\\(]*(?:{'|'.join(values)})\b")


def _is_model_group(group: tuple[str | re.Pattern[str], ...]) -> bool:
    # Groups that name BatchNormalization-bearing models are the ones user factories extend.
    return "BatchNorm" in group


_SECTION = re.compile(r"^## (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class RuleDoc:
    code: str
    name: str
    severity: Severity
    summary: str
    fixable: bool
    sections: dict[str, str]

    @classmethod
    def parse(cls, rule: type[Rule]) -> "RuleDoc":
        text = textwrap.dedent(inspect.getdoc(rule) or "")
        parts = _SECTION.split(text)
        sections = {title.strip(): body.strip() for title, body in zip(parts[1::2], parts[2::2])}
        return cls(rule.code, rule.name, rule.severity, rule.summary, rule.fixable, sections)

    def markdown(self) -> str:
        fix = "Fix: available with `--fix`." if self.fixable else "Fix: none (see Use instead)."
        head = f"# {self.code} {self.name} ({self.severity.value})\n\n{self.summary}\n\n{fix}\n"
        body = "".join(f"\n## {title}\n{text}\n" for title, text in self.sections.items())
        return head + body


@cache
def all_rules() -> tuple[type[Rule], ...]:
    """Every rule class in ``lint.rules``, ordered by code; new rule modules need no registration."""
    import lint.rules as package

    found: dict[str, type[Rule]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, Rule) and obj is not Rule and "code" in vars(obj):
                found[obj.code] = obj
    return tuple(found[code] for code in sorted(found))


def rule_by_code(code: str) -> type[Rule] | None:
    return next((r for r in all_rules() if r.code == code.upper()), None)


def select_rules(select: Iterable[str], ignore: Iterable[str]) -> list[type[Rule]]:
    """Codes or prefixes, as ruff: ``BN0`` selects BN001–BN007, ``BN1`` the PyTorch rules."""
    select = [s.upper() for s in select] or ["BN"]
    ignore = [s.upper() for s in ignore]
    return [
        r
        for r in all_rules()
        if any(r.code.startswith(s) or s == "ALL" for s in select) and not any(r.code.startswith(i) for i in ignore)
    ]


def rules_table() -> str:
    """The README's rule table, generated from the rules themselves."""
    rows = ["| Code | Name | Severity | Fix | Summary |", "| --- | --- | --- | --- | --- |"]
    for rule in all_rules():
        fix = "yes" if rule.fixable else ""
        rows.append(f"| {rule.code} | `{rule.name}` | {rule.severity.value} | {fix} | {rule.summary} |")
    return "\n".join(rows)
