"""Keras layers and call sites in one file, for the inference-mode rules (BN004–BN007).

One walk over the file records every call with its *frame* (enclosing functions and class,
whether it runs under a ``GradientTape``), what each name and ``self.`` attribute was
assigned, which definitions build BatchNormalization, and the layer chains in which a
Dropout feeds a BatchNormalization directly (``Sequential([...])``, ``model.add(...)``
chains, functional ``x = layer(x)`` chains).

"Involves BatchNormalization" is answered in three grades: a value known to carry it (a
BatchNormalization layer, a ``keras.applications`` base that has it, a model or class of
this file that builds it, see ``lint.keras_models``), a value known not to (a Dropout
layer, a model without it, anything loaded from another file), and unknown (a parameter,
an unpacked or loop variable), where the rules fall back on whether the file builds
BatchNormalization at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterable

import libcst as cst

from lint.frameworks.keras import BN_CLASSES, BN_NAMES, DROPOUT_CLASSES, SHAPE_ONLY_CLASSES, is_bn_application, is_bn_class
from lint.keras_models import KerasModels
from lint.names import ImportMap, dotted, keras_name
from lint.nodes import children, names

#: Bernoulli dropout layers: the variance shift of Li et al. (CVPR 2019).

_TRAIN_NAME = re.compile(r"^_*train|(^|_)train(ing)?_step$")
_TRAINING_CALLS = frozenset({"GradientTape", "apply_gradients", "minimize"})
_UNKNOWN = object()  # a binding whose value cannot be read (tuple unpacking)


@dataclass(frozen=True)
class Frame:
    """Where a call stands."""

    functions: tuple[cst.FunctionDef, ...] = ()  # enclosing functions, innermost last
    owners: tuple[cst.CSTNode, ...] = ()  # enclosing functions and classes, innermost last
    cls: cst.ClassDef | None = None  # class of the innermost method
    in_tape: bool = False  # inside ``with tf.GradientTape() ...``
    class_body: bool = False


@dataclass
class Pair:
    """A Dropout directly before a BatchNormalization."""

    bn: cst.CSTNode
    dropout: cst.CSTNode
    shape: str  # "Sequential" | "add" | "functional"


@dataclass
class _Chain:
    """Per block of statements: what produced each tensor name, what was last added to each model."""

    produced: dict[str, tuple[str, cst.CSTNode]] = field(default_factory=dict)
    added: dict[str, tuple[str, cst.CSTNode]] = field(default_factory=dict)


class KerasLayers:
    def __init__(
        self, module: cst.Module, imports: ImportMap, models: KerasModels, extra_factories: Iterable[str] = ()
    ) -> None:
        self.imports = imports
        self.models = models
        self.extra_factories = tuple(extra_factories)
        self.calls: list[tuple[cst.Call, Frame]] = []
        self.methods: list[tuple[cst.FunctionDef, cst.ClassDef]] = []
        self.pairs: list[Pair] = []
        #: every assignment (target, value) and ``for`` loop, in source order, for rules' own light queries
        self.assignments: list[tuple[cst.BaseExpression, cst.BaseExpression]] = []
        self.loops: list[cst.For] = []
        #: the first Name/Attribute node seen for each last name segment (``BatchNorm1d`` -> ``nn.BatchNorm1d``)
        self.references: dict[str, cst.CSTNode] = {}
        self._aliases: dict[str, str] = {}  # ``K = tf.keras.backend``
        self._bindings: dict[int, dict[str, list[object]]] = {}  # scope (0: module) -> name -> values
        self._params: dict[int, set[str]] = {}
        self._attrs: dict[int, dict[str, list[object]]] = {}  # class -> "self.x" -> values
        self._defs: dict[str, cst.CSTNode] = {}
        self._mentions: dict[int, bool] = {}  # def -> builds BatchNormalization itself
        self._refs: dict[int, set[str]] = {}  # def -> names it refers to
        self._training_functions: set[int] = set()
        self._module_mentions_bn = False
        self._block(module.body, Frame(), _Chain())
        self._bn_defs = self._involved_defs()
        #: the file builds BatchNormalization somewhere (the fallback for values it cannot follow)
        self.involves_bn = self._module_mentions_bn or bool(self._bn_defs)
        self._sequential_pairs()

    # -- queries -------------------------------------------------------------------------

    def qualname(self, node: cst.BaseExpression) -> str | None:
        """``ImportMap.qualname`` that also follows module aliases assigned in the file (``K = tf.keras.backend``)."""
        path = dotted(node)
        if path is None:
            return None
        head, _, rest = path.partition(".")
        if head in self._aliases:
            return f"{self._aliases[head]}.{rest}" if rest else self._aliases[head]
        return self.imports.qualname(node)

    def layer_class(self, expr: cst.BaseExpression, frame: Frame) -> str | None:
        """Short Keras class name of a layer: ``layers.Dropout(0.5)``, or a name/``self.`` attribute built by one."""
        if isinstance(expr, cst.Call):
            return self._constructor_class(expr)
        ctors = self.constructors(expr, frame)
        classes = {self._constructor_class(c) for c in ctors or ()}
        return classes.pop() if len(classes) == 1 else None

    def constructors(self, expr: cst.BaseExpression, frame: Frame, depth: int = 0) -> list[cst.Call] | None:
        """The calls that built the value of ``expr`` in this file; None when it is unknown here
        (a parameter, a loop or unpacked variable, an attribute set outside the class)."""
        if isinstance(expr, cst.Call):
            return [expr]
        path = dotted(expr)
        if path is None or depth > 4:
            return []
        if path.startswith("self."):
            if frame.cls is None:
                return None
            values = self._attrs.get(id(frame.cls), {}).get(path)
            if values is None:  # e.g. ``self.model`` of a Callback, set by Keras
                return None if path.count(".") == 1 else []
            return self._resolve(values, frame, depth)
        if "." in path:
            return []  # a module's attribute or a nested attribute: decided in another file
        for fn in reversed(frame.functions):
            values = self._bindings.get(id(fn), {}).get(path)
            if values is not None:
                return self._resolve(values, frame, depth)
            if path in self._params.get(id(fn), ()):
                return None
        values = self._bindings.get(0, {}).get(path)
        if values is not None:
            return self._resolve(values, Frame(), depth)
        if path in self.imports.aliases or path in self._defs:
            return []
        return None

    def carries_bn(self, expr: cst.BaseExpression, frame: Frame) -> bool | None:
        """Does this layer or model contain BatchNormalization? None when the file cannot tell."""
        model = self.models.model_at(expr)
        if model is not None:
            return model.contains_bn()
        ctors = self.constructors(expr, frame)
        if ctors is None:
            return None
        return any(self.builds_bn(c) for c in ctors)

    def builds_bn(self, node: cst.CSTNode) -> bool:
        """Does this code construct BatchNormalization, a base with it, or a definition of this file that does?"""
        for n in names(node):
            last = n.value if isinstance(n, cst.Name) else n.attr.value
            if last in self._bn_defs and isinstance(n, cst.Name):
                return True
            if (last in BN_NAMES or self._extra(last)) and self._is_bn_constructor(self.qualname(n)):
                return True
        return False

    def class_builds_bn(self, cls: cst.ClassDef) -> bool:
        return cls.name.value in self._bn_defs

    def in_training_step(self, frame: Frame) -> bool:
        """Under a GradientTape, in ``train_step``-like functions, or in a function that applies gradients."""
        return frame.in_tape or any(
            id(fn) in self._training_functions or _TRAIN_NAME.search(fn.name.value) for fn in frame.functions
        )

    def is_model_building(self, call: cst.Call) -> bool:
        """A call that builds or loads a model (``keras.Model(...)``, ``load_model``, an application, a local class)."""
        func = call.func
        q = keras_name(self.qualname(func)) if isinstance(func, (cst.Name, cst.Attribute)) else None
        if q is not None:
            short = q.rsplit(".", 1)[-1]
            return q.startswith("keras.applications.") or short in {
                "Model", "Sequential", "Functional", "load_model", "model_from_json", "model_from_yaml", "clone_model"
            }
        return isinstance(func, cst.Name) and isinstance(self._defs.get(func.value), cst.ClassDef)

    # -- the walk --------------------------------------------------------------------------

    def _block(self, body, frame: Frame, chain: _Chain) -> None:
        for stmt in body:
            self._statement(stmt, frame, chain)

    def _statement(self, stmt, frame: Frame, chain: _Chain) -> None:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                self._small(small, frame, chain)
        elif isinstance(stmt, cst.FunctionDef):
            self._function(stmt, frame)
        elif isinstance(stmt, cst.ClassDef):
            self._define(stmt, frame)
            inner = replace(frame, owners=frame.owners + (stmt,), cls=stmt, class_body=True)
            for part in (*stmt.bases, *stmt.keywords, *stmt.decorators):
                self._expr(part, inner)  # a subclass of a class that builds BatchNormalization builds it too
            self._block(_body(stmt.body), inner, _Chain())
        elif isinstance(stmt, cst.With):
            tape = False
            for item in stmt.items:
                self._expr(item.item, frame)
                tape = tape or _is_gradient_tape(item.item)
                if item.asname is not None:
                    self._bind_target(item.asname.name, _UNKNOWN, frame)
            self._block(_body(stmt.body), replace(frame, in_tape=frame.in_tape or tape), chain)
        elif isinstance(stmt, cst.For):
            self.loops.append(stmt)
            self._expr(stmt.iter, frame)
            self._bind_target(stmt.target, _UNKNOWN, frame)
            self._block(_body(stmt.body), frame, chain)
            if stmt.orelse is not None:
                self._block(_body(stmt.orelse.body), frame, chain)
        elif isinstance(stmt, (cst.If, cst.While)):
            self._expr(stmt.test, frame)
            self._block(_body(stmt.body), frame, chain)
            if stmt.orelse is not None:
                self._statement(stmt.orelse, frame, chain)
        elif isinstance(stmt, cst.Else):
            self._block(_body(stmt.body), frame, chain)
        elif isinstance(stmt, cst.Try):
            self._block(_body(stmt.body), frame, chain)
            for handler in stmt.handlers:
                self._block(_body(handler.body), frame, chain)
            for extra in (stmt.orelse, stmt.finalbody):
                if extra is not None:
                    self._block(_body(extra.body), frame, chain)
        else:  # match and other compound statements: calls only
            self._expr(stmt, frame)

    def _function(self, fn: cst.FunctionDef, frame: Frame) -> None:
        self._define(fn, frame)
        for part in (*fn.decorators, fn.params):
            self._expr(part, frame)
        params = self._params.setdefault(id(fn), set())
        for param in all_params(fn.params):
            params.add(param.name.value)
        cls = frame.cls if frame.class_body else None
        if cls is not None:
            self.methods.append((fn, cls))
        inner = Frame(
            functions=frame.functions + (fn,), owners=frame.owners + (fn,), cls=cls or (frame.cls if frame.functions else None)
        )
        self._block(_body(fn.body), inner, _Chain())

    def _define(self, node, frame: Frame) -> None:
        self._defs.setdefault(node.name.value, node)
        self._mentions.setdefault(id(node), False)
        self._refs.setdefault(id(node), set())
        for owner in frame.owners:  # an outer definition uses what it defines
            self._refs[id(owner)].add(node.name.value)

    def _small(self, small, frame: Frame, chain: _Chain) -> None:
        if isinstance(small, (cst.Assign, cst.AnnAssign)):
            value = small.value
            if value is None:
                return
            self._expr(value, frame)
            produced = self._produced_by(value, frame, chain)
            targets = [t.target for t in small.targets] if isinstance(small, cst.Assign) else [small.target]
            for target in targets:
                self.assignments.append((target, value))
                self._bind_target(target, value, frame)
                path = dotted(target)
                if path is None:
                    continue
                if produced is not None:
                    chain.produced[path] = produced
                else:
                    chain.produced.pop(path, None)
                last = self._last_sequential_layer(value, frame)
                if last is not None:
                    chain.added[path] = last
                if isinstance(target, cst.Name) and isinstance(value, (cst.Name, cst.Attribute)):
                    q = self.qualname(value)
                    if q is not None and q != dotted(value):  # ``K = tf.keras.backend``
                        self._aliases[target.value] = q
        elif isinstance(small, cst.AugAssign):
            self._expr(small.value, frame)
        elif isinstance(small, (cst.Expr, cst.Return)):
            if small.value is not None:
                self._expr(small.value, frame)
                self._produced_by(small.value, frame, chain)
                self._added(small.value, frame, chain)
        else:
            self._expr(small, frame)

    def _bind_target(self, target, value, frame: Frame) -> None:
        if isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._bind_target(element.value, _UNKNOWN, frame)
            return
        path = dotted(target)
        if path is None:
            return
        if path.startswith("self."):
            if frame.cls is not None and path.count(".") == 1:
                self._attrs.setdefault(id(frame.cls), {}).setdefault(path, []).append(value)
        elif "." not in path and not frame.class_body:
            scope = id(frame.functions[-1]) if frame.functions else 0
            self._bindings.setdefault(scope, {}).setdefault(path, []).append(value)

    def _expr(self, node: cst.CSTNode, frame: Frame) -> None:
        """Record the calls inside an expression, and what it tells about training and BatchNormalization."""
        stack = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, cst.Call):
                self.calls.append((n, frame))
                last = _last_name(n.func)
                if last in _TRAINING_CALLS and frame.functions:
                    self._training_functions.add(id(frame.functions[-1]))
            elif isinstance(n, (cst.Name, cst.Attribute)):
                self._reference(n, frame)
                if isinstance(n, cst.Attribute):
                    stack.append(n.value)
                continue
            elif isinstance(n, (cst.FunctionDef, cst.ClassDef)):  # not expressions; defensive
                continue
            stack.extend(reversed(children(n)))

    def _reference(self, n, frame: Frame) -> None:
        last = n.value if isinstance(n, cst.Name) else n.attr.value
        self.references.setdefault(last, n)
        if isinstance(n, cst.Name):
            for owner in frame.owners:
                self._refs[id(owner)].add(last)
        if (last in BN_NAMES or self._extra(last)) and self._is_bn_constructor(self.qualname(n)):
            if frame.owners:
                for owner in frame.owners:
                    self._mentions[id(owner)] = True
            else:
                self._module_mentions_bn = True

    def _resolve(self, values: list[object], frame: Frame, depth: int) -> list[cst.Call] | None:
        found: list[cst.Call] = []
        for value in values:
            if value is _UNKNOWN:
                return None
            if isinstance(value, cst.Call):
                found.append(value)
            elif isinstance(value, (cst.Name, cst.Attribute)):
                more = self.constructors(value, frame, depth + 1)
                if more is None:
                    return None
                found.extend(more)
        return found

    def _involved_defs(self) -> set[str]:
        """Names of classes and functions of this file that build BatchNormalization, directly or through each other."""
        involved = {name for name, node in self._defs.items() if self._mentions.get(id(node))}
        changed = True
        while changed:
            changed = False
            for name, node in self._defs.items():
                if name not in involved and self._refs.get(id(node), set()) & involved:
                    involved.add(name)
                    changed = True
        return involved

    # -- layer chains ------------------------------------------------------------------------

    def _constructor_class(self, call: cst.Call) -> str | None:
        func = call.func
        if not isinstance(func, (cst.Name, cst.Attribute)):
            return None
        q = self.qualname(func)
        if q is None:
            return None
        if keras_name(q) is not None or "." not in q:  # bare names: ``from keras.layers import *``
            return q.rsplit(".", 1)[-1]
        return None

    def _produced_by(self, expr, frame: Frame, chain: _Chain) -> tuple[str, cst.CSTNode] | None:
        """For a functional ``layer(x)`` expression: (class of the layer that produced it, that call);
        a Dropout is carried across shape-only layers. Records Dropout -> BatchNormalization pairs."""
        if isinstance(expr, (cst.Name, cst.Attribute)):
            path = dotted(expr)
            return chain.produced.get(path) if path else None
        if not isinstance(expr, cst.Call):
            return None
        # ``Dropout(0.5)(x)``, ``drop(x)``, ``self.drop(x)``; a constructor such as ``layers.Dropout(0.5)``
        # itself has no layer class (its callee is a class, not a layer built in this file).
        cls = self.layer_class(expr.func, frame)
        if cls is None:
            return None
        source = next((a.value for a in expr.args if a.keyword is None), None)
        before = self._produced_by(source, frame, chain) if source is not None else None
        if cls in BN_CLASSES and before is not None and before[0] in DROPOUT_CLASSES:
            self._pair(expr, before[1], "functional")
        if cls in SHAPE_ONLY_CLASSES and before is not None:
            return before
        return cls, expr

    def _added(self, expr, frame: Frame, chain: _Chain) -> None:
        """``model.add(layer)``: the layer that was added last to the same model."""
        if not (isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) and expr.func.attr.value == "add"):
            return
        owner = dotted(expr.func.value)
        if owner is None or not expr.args:
            return
        layer = expr.args[0].value
        cls = self.layer_class(layer, frame)
        before = chain.added.get(owner)
        if cls is None:
            chain.added.pop(owner, None)
            return
        if cls in BN_CLASSES and before is not None and before[0] in DROPOUT_CLASSES:
            self._pair(layer, before[1], "add")
        if not (cls in SHAPE_ONLY_CLASSES and before is not None):
            chain.added[owner] = (cls, layer)

    def _sequential_layers(self, call: cst.Call) -> list[cst.BaseExpression] | None:
        if not isinstance(call.func, (cst.Name, cst.Attribute)):
            return None
        if keras_name(self.qualname(call.func)) is None or _last_name(call.func) != "Sequential":
            return None
        arg = next((a.value for a in call.args if a.keyword is None or a.keyword.value == "layers"), None)
        return [e.value for e in arg.elements] if isinstance(arg, (cst.List, cst.Tuple)) else None

    def _last_sequential_layer(self, value, frame: Frame):
        """``model = Sequential([..., Dropout(0.5)])``: a later ``model.add(...)`` continues the chain."""
        if not isinstance(value, cst.Call):
            return None
        elements = self._sequential_layers(value)
        if not elements:
            return None
        last: tuple[str, cst.CSTNode] | None = None
        for element in elements:
            cls = self.layer_class(element, frame)
            if cls is None:
                last = None
            elif not (cls in SHAPE_ONLY_CLASSES and last is not None):
                last = (cls, element)
        return last

    def _sequential_pairs(self) -> None:
        for call, frame in self.calls:
            elements = self._sequential_layers(call)
            if not elements:
                continue
            before: tuple[str, cst.CSTNode] | None = None
            for element in elements:
                cls = self.layer_class(element, frame)
                if cls in BN_CLASSES and before is not None and before[0] in DROPOUT_CLASSES:
                    self._pair(element, before[1], "Sequential")
                if cls is None:
                    before = None
                elif not (cls in SHAPE_ONLY_CLASSES and before is not None):
                    before = (cls, element)

    def _pair(self, bn, dropout, shape: str) -> None:
        if all(p.bn is not bn for p in self.pairs):
            self.pairs.append(Pair(bn, dropout, shape))

    # -- names -----------------------------------------------------------------------------

    def _is_bn_constructor(self, qualname: str | None) -> bool:
        if qualname is None:
            return False
        return is_bn_class(qualname) or is_bn_application(qualname) or any(
            qualname == f or qualname.endswith("." + f) or f.endswith("." + qualname) for f in self.extra_factories
        )

    def _extra(self, last: str) -> bool:
        return any(f.rsplit(".", 1)[-1] == last for f in self.extra_factories)


def training_true(call: cst.Call) -> cst.Arg | None:
    """The ``training=True`` argument of a call, if it has one."""
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == "training":
            value = arg.value
            return arg if isinstance(value, cst.Name) and value.value == "True" else None
    return None


def _is_gradient_tape(node) -> bool:
    return isinstance(node, cst.Call) and _last_name(node.func) == "GradientTape"


def _last_name(node) -> str | None:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return node.attr.value
    return None


def all_params(params: cst.Parameters):
    yield from params.posonly_params
    yield from params.params
    yield from params.kwonly_params
    for star in (params.star_arg, params.star_kwarg):
        if isinstance(star, cst.Param):
            yield star


def _body(block) -> list:
    return list(block.body) if isinstance(block, (cst.IndentedBlock, cst.SimpleStatementSuite)) else []
