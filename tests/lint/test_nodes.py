"""``lint.nodes.children`` must see what libcst's ``node.children`` sees, minus tokens and
whitespace, in the same order: the analyses number events in walk order."""

from __future__ import annotations

from pathlib import Path

import libcst as cst
import pytest

from lint.nodes import children, names, walk

ROOT = Path(__file__).resolve().parents[2]

# Every statement and expression form, including those whose fields are not in source order.
SYNTAX = '''
from __future__ import annotations
import a.b as c, d
from ..pkg import (x as y, z)
from . import w
@decorator(arg=1)
class K(Base, metaclass=Meta, **extra):
    """doc"""
    attr: int = 1
    @property
    async def m[T](self, a, /, b: int = 2, *args, c, d=3, **kw) -> T:
        async with ctx() as (e, f), other:
            async for g in h:
                await g
        return [i async for i in j if i]
def gen(*, k):
    global G
    x = yield k
    y = yield from x
    nonlocal_ = lambda p, q=1, *r, **s: p if q else r
    return {a: b for a, b in c.items()}, {e for e in f}, (g for g in h)
try:
    pass
except (ValueError, TypeError) as exc:
    raise RuntimeError("x") from exc
else:
    del a[1:2:3], b[::], c[:, 1]
finally:
    assert x, "message"
try:
    pass
except* OSError as group:
    pass
while not a and b or c:
    break
for t in range(10):
    continue
if a < b <= c is not d in e:
    v = -a + b * c @ d ** e // f % g << h >> i & j | k ^ ~l
elif (n := 5):
    v += 1
else:
    print(f"{a!r:>{width}} {b=}", *args, key=value, **kw)
with open(p) as fh: data = fh.read(); more = 1
match command:
    case [Point(x=0, y=0), *rest] if rest:
        pass
    case {"key": value, **others} | None as alias:
        pass
    case _:
        pass
type Alias[T] = list[T]
a, *b = c = d
e: list[int]
x = ...
'''


def _files() -> list[Path]:
    return sorted(p for folder in ("lint", "examples", "pytest_bncheck", "tests") for p in (ROOT / folder).rglob("*.py"))


def _check(module: cst.Module) -> int:
    checked = 0
    for node in walk(module):
        ours = children(node)
        theirs = node.children
        ids = {id(c) for c in ours}
        assert [id(c) for c in theirs if id(c) in ids] == [id(c) for c in ours], type(node).__name__
        assert len(ids) == len(ours)
        # What we leave out is only ever a token or whitespace.
        for left_out in (c for c in theirs if id(c) not in ids):
            assert not isinstance(left_out, (cst.BaseExpression, cst.BaseStatement, cst.BaseSmallStatement)), (
                type(node).__name__,
                type(left_out).__name__,
            )
        checked += 1
    return checked


def test_children_match_libcst_on_every_syntax_form():
    assert _check(cst.parse_module(SYNTAX)) > 300


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_children_match_libcst_on_the_project_sources(path):
    assert _check(cst.parse_module(path.read_text(encoding="utf-8"))) > 0


def test_names_yields_dotted_names_and_their_owners_not_bare_attributes():
    tree = cst.parse_module("x = layers.BatchNormalization(momentum=m.value)(inputs)\n")
    found = sorted(cst.Module([]).code_for_node(n) for n in names(tree))
    assert found == ["inputs", "layers", "layers.BatchNormalization", "m", "m.value", "momentum", "x"]
