"""Fast walks over a libcst tree: the statement and expression children of a node, in source order.

libcst's ``node.children`` runs a visitor over every field, tokens and whitespace included;
the analyses walk each tree several times, and on the keras source tree that property alone
took more time than parsing. Reading the dataclass fields directly, without the token and
whitespace fields, is about six times faster. Field order is source order except for the few
node types listed in ``_SOURCE_ORDER`` (tests/lint/test_nodes.py checks this against libcst).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Iterator

import libcst as cst

# Fields that only ever hold tokens or whitespace.
_TOKEN_FIELDS = frozenset({
    "lpar", "rpar", "comma", "semicolon", "leading_lines", "lines_after_decorators", "header", "footer", "equal",
    "colon", "dot", "operator", "newline", "trailing_whitespace", "star", "asynchronous", "default_indent",
    "default_newline", "indent", "lbracket", "rbracket", "lbrace", "rbrace", "first_line", "first_colon",
    "second_colon", "relative",
})

# Node types whose dataclass fields are declared in another order than the source's.
_SOURCE_ORDER: dict[type, tuple[str, ...]] = {
    cst.Arg: ("keyword", "value"),
    cst.IfExp: ("body", "test", "orelse"),
    cst.FunctionDef: ("decorators", "name", "type_parameters", "params", "returns", "body"),
    cst.ClassDef: ("decorators", "name", "type_parameters", "bases", "keywords", "body"),
    cst.ExceptHandler: ("type", "name", "body"),
    cst.ExceptStarHandler: ("type", "name", "body"),
    cst.ImportFrom: ("module", "names"),
    cst.MatchCase: ("pattern", "guard", "body"),
    cst.Parameters: ("posonly_params", "params", "star_arg", "kwonly_params", "star_kwarg"),
    cst.TypeAlias: ("name", "type_parameters", "value"),
}

_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(kind: type) -> tuple[str, ...]:
    names = _SOURCE_ORDER.get(kind)
    if names is None:
        names = tuple(
            f.name for f in fields(kind) if "whitespace" not in f.name and f.name not in _TOKEN_FIELDS
        )
    _FIELDS[kind] = names
    return names


def children(node: cst.CSTNode) -> list[cst.CSTNode]:
    """The statement and expression children of ``node`` (no tokens or whitespace), in source order."""
    names = _FIELDS.get(type(node))
    if names is None:
        names = _field_names(type(node))
    found: list[cst.CSTNode] = []
    for name in names:
        value = getattr(node, name)
        if isinstance(value, cst.CSTNode):
            found.append(value)
        elif isinstance(value, (tuple, list)):
            found.extend(v for v in value if isinstance(v, cst.CSTNode))
    return found


def walk(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """``node`` and every node below it (pre-order; siblings in no particular order)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(children(n))


def names(node: cst.CSTNode) -> Iterator[cst.Name | cst.Attribute]:
    """Every name and dotted name in the subtree: ``a.b.c`` yields ``a.b.c``, ``a.b`` and ``a``,
    never the bare attribute names ``b`` and ``c`` (they name nothing on their own)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, cst.Attribute):
            yield n
            stack.append(n.value)
        elif isinstance(n, cst.Name):
            yield n
        else:
            stack.extend(children(n))
