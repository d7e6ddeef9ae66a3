"""Constant folding: the value an expression certainly has, so dead code is never analysed.

``if False:``, ``if DEBUG:`` with ``DEBUG = False`` at module level, ``if dropout_rate:`` with a
default of ``0.0`` that no call passes, ``if phase == "train":`` in the iteration of
``for phase in ["train", "val"]`` where ``phase`` is "val": each folds to a constant and the
walk follows only the branch that runs. Anything else is ``NOT_CONSTANT``.
"""

from __future__ import annotations

import operator
from typing import Callable

import libcst as cst

from lint.flow.values import Const


class _NotConstant:
    def __repr__(self) -> str:
        return "NOT_CONSTANT"


NOT_CONSTANT = _NotConstant()

_COMPARE = {
    cst.Equal: operator.eq, cst.NotEqual: operator.ne, cst.LessThan: operator.lt, cst.LessThanEqual: operator.le,
    cst.GreaterThan: operator.gt, cst.GreaterThanEqual: operator.ge, cst.Is: operator.is_, cst.IsNot: operator.is_not,
    cst.In: lambda a, b: a in b, cst.NotIn: lambda a, b: a not in b,
}
_ARITHMETIC = {cst.Add: operator.add, cst.Subtract: operator.sub, cst.Multiply: operator.mul,
               cst.FloorDivide: operator.floordiv, cst.Modulo: operator.mod}
_NAMED = {"True": True, "False": False, "None": None}


def literal(node: cst.CSTNode | None) -> object:
    """The value of a literal expression (numbers, strings, bools, None, tuples/lists/dicts of them)."""
    return fold(node, lambda name: NOT_CONSTANT)


def fold(node: cst.CSTNode | None, lookup: Callable[[str], object]) -> object:
    """The constant value of ``node``, or ``NOT_CONSTANT``. ``lookup(name)`` gives a name's
    constant value (or ``NOT_CONSTANT``)."""
    try:
        return _fold(node, lookup, 0)
    except Exception:  # 1 / 0, "a" < 1, huge powers: not ours to evaluate
        return NOT_CONSTANT


def truth(node: cst.CSTNode | None, lookup: Callable[[str], object]) -> bool | None:
    """True / False when the condition is certain, None otherwise."""
    value = fold(node, lookup)
    if value is NOT_CONSTANT:
        return None
    try:
        return bool(value)
    except Exception:
        return None


def _fold(node, lookup, depth: int) -> object:
    if node is None or depth > 30:
        return NOT_CONSTANT
    if isinstance(node, cst.Integer):
        return int(node.value.replace("_", ""), 0)  # ``0x1F``, ``1_000``
    if isinstance(node, cst.Float):
        return float(node.value.replace("_", ""))
    if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
        value = node.evaluated_value
        return NOT_CONSTANT if value is None else value
    if isinstance(node, cst.Name):
        if node.value in _NAMED:
            return _NAMED[node.value]
        value = lookup(node.value)
        return value.value if isinstance(value, Const) else NOT_CONSTANT
    if isinstance(node, cst.UnaryOperation):
        value = _fold(node.expression, lookup, depth + 1)
        if isinstance(node.operator, cst.Not):
            return NOT_CONSTANT if value is NOT_CONSTANT else not value
        if value is NOT_CONSTANT:
            return NOT_CONSTANT
        return -value if isinstance(node.operator, cst.Minus) else +value if isinstance(node.operator, cst.Plus) else NOT_CONSTANT
    if isinstance(node, cst.BooleanOperation):
        left = _fold(node.left, lookup, depth + 1)
        is_and = isinstance(node.operator, cst.And)
        if left is not NOT_CONSTANT and bool(left) != is_and:  # ``False and x``, ``True or x``: settled by the left
            return left
        right = _fold(node.right, lookup, depth + 1)
        if left is NOT_CONSTANT:  # ``x and False`` is falsy whatever x is, ``x or True`` truthy
            return right if right is not NOT_CONSTANT and bool(right) != is_and else NOT_CONSTANT
        return right
    if isinstance(node, cst.Comparison):
        left = _fold(node.left, lookup, depth + 1)
        for target in node.comparisons:
            right = _fold(target.comparator, lookup, depth + 1)
            op = _COMPARE.get(type(target.operator))
            if left is NOT_CONSTANT or right is NOT_CONSTANT or op is None:
                return NOT_CONSTANT
            if not op(left, right):
                return False
            left = right
        return True
    if isinstance(node, cst.BinaryOperation):
        op = _ARITHMETIC.get(type(node.operator))
        left, right = _fold(node.left, lookup, depth + 1), _fold(node.right, lookup, depth + 1)
        if op is None or left is NOT_CONSTANT or right is NOT_CONSTANT:
            return NOT_CONSTANT
        return op(left, right)
    if isinstance(node, (cst.Tuple, cst.List)):
        items = []
        for element in node.elements:
            if not isinstance(element, cst.Element):
                return NOT_CONSTANT
            value = _fold(element.value, lookup, depth + 1)
            if value is NOT_CONSTANT:
                return NOT_CONSTANT
            items.append(value)
        return tuple(items) if isinstance(node, cst.Tuple) else items
    if isinstance(node, cst.Dict):
        result = {}
        for element in node.elements:
            if not isinstance(element, cst.DictElement):
                return NOT_CONSTANT
            key = _fold(element.key, lookup, depth + 1)
            value = _fold(element.value, lookup, depth + 1)
            if key is NOT_CONSTANT:
                return NOT_CONSTANT
            result[key] = value  # a value we cannot fold stays NOT_CONSTANT inside the dict
        return result
    return NOT_CONSTANT

