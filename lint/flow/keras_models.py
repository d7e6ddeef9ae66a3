"""Keras model values of one file and what the program does to them (the core's Keras part).

One ordered walk over the file records *events* on model values: frozen (all of it, or a slice
or index of its layers), unfrozen (and whether BatchNormalization stays frozen), re-frozen,
called (with which ``training``), placed in a ``Sequential``, graph reused through ``.output``.
BN001-BN003 are queries over these events.

A value is followed through assignments and aliases (by value: a name rebound to a new model is a
new value; where the two paths of an ``if``/``else`` or ``A if c else B`` meet with different models
bound to one name, it is ``Either`` of them and what follows applies to each: may, not must), ``self.`` attributes shared by a class's methods, helper functions of the same file
that build and return it, ``model.layers[i]`` and ``model.get_layer("name")``, and models derived
from it (``Model(base.input, head(base.output))`` holds the base's layers). Across files, through
the project index (``lint.flow.project``): models and builders with BatchNormalization that another
module of the project defines (imported, or left by a script this one continues), frozen there or
not, and the unfreezes other modules apply to this module's models. Anything else whose origin lies
outside the project (a loaded model, a hub layer) is not a model here: the rules prefer silence to a
guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import libcst as cst

from lint.frameworks.keras import BN_NAME_TEXT, BN_NAMES, GRAPH_ATTRS, RECURSIVE_LAYER_ITERS, is_bn_application, is_bn_class
from lint.names import ImportMap, dotted, keras_name
from lint.nodes import children, names, walk



def _is_keras(qualname: str | None, *names: str) -> bool:
    name = keras_name(qualname)
    return bool(name) and name.rsplit(".", 1)[-1] in names


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(eq=False)
class Model:
    """A model value. ``children`` are the models placed or called inside it."""

    label: str
    has_bn: bool
    layer_name: str | None = None
    #: where a model built by another module of the project comes from ("models.py:12"), for messages
    defined_at: str | None = None
    default_name: str | None = None
    children: list["Model"] = field(default_factory=list)
    #: ``Sequential`` layers in order (None for a plain layer); None when the order is unknown
    elements: list["Model | None"] | None = None

    def contains_bn(self) -> bool:
        return self.has_bn or any(c.contains_bn() for c in self.children)

    def lineage(self) -> Iterator["Model"]:
        yield self
        for child in self.children:
            yield from child.lineage()

    def named(self, name: str) -> "Model | None":
        for child in self.children:
            if child.layer_name == name or (
                child.layer_name is None and child.default_name and _normal(name).startswith(child.default_name)
            ):
                return child
        return None


@dataclass(eq=False)
class LayerOf:
    """A layer (or an unknown slice of layers) inside a model's graph."""

    model: Model


@dataclass(frozen=True, eq=False)
class Either:
    """Where two paths meet with different models bound to one name (``if pretrained: base = A()
    else: base = B()``): the name may denote any of them, and what is done to it may be done to each."""

    options: tuple


def either(a, b):
    """The join of two values bound to one name on two paths."""
    if a is b or b is None:
        return a
    if a is None:
        return b
    options = []
    for value in (a, b):
        for option in value.options if isinstance(value, Either) else (value,):
            if not any(option is o for o in options):
                options.append(option)
    return options[0] if len(options) == 1 else Either(tuple(options))


def options_of(value) -> tuple:
    return value.options if isinstance(value, Either) else (value,)


@dataclass(eq=False)
class Builder:
    """A function or class of another module of the project that builds a Keras model with
    BatchNormalization (``from yolo3.model import yolo_body``): each call is a new model."""

    name: str
    definition: object  # lint.flow.project.Definition


@dataclass
class Event:
    model: Model
    node: cst.CSTNode
    scope: int
    seq: int


@dataclass
class Freeze(Event):
    #: only some of its layers: ``for layer in base.layers[:100]``, ``base.layers[i]`` (not a frozen base)
    partial: bool = False
    #: frozen in another module of the project, there ("xception_model.py:40"); ``node`` is its first use here
    elsewhere: str = ""


@dataclass
class Unfreeze(Event):
    guarded: bool = False  # BatchNormalization kept frozen by the same statement/loop
    partial: bool = False  # a slice of its layers (``for layer in base.layers[100:]``)
    layer_of: bool = False  # set on a layer reached through it (``model.layers[2].trainable = True``)
    loop: cst.For | None = None
    loop_var: str | None = None


@dataclass
class Refreeze(Event):
    recursive: bool = False  # iterates nested layers too


@dataclass
class Call(Event):
    training: str = "absent"  # "absent" | "true" | "false" | "other"


@dataclass
class Placement(Event):
    pass


@dataclass
class GraphReuse(Event):
    attr: str = "output"


class _Scope:
    def __init__(self, ident: int, parent: "_Scope | None", self_env: dict | None) -> None:
        self.ident = ident
        self.parent = parent
        self.vars: dict[str, object] = {}
        self.self_env = self_env
        self.called: list[Model] = []
        self.saw_bn_layer = False
        self.returns: list[object] = []

    def lookup(self, path: str):
        if path.startswith("self.") and self.self_env is not None:
            return self.self_env.get(path)
        scope: _Scope | None = self
        while scope is not None:
            if path in scope.vars:
                return scope.vars[path]
            scope = scope.parent
        return None

    def snapshot(self) -> tuple[dict, dict | None]:
        return dict(self.vars), (dict(self.self_env) if self.self_env is not None else None)

    def restore(self, saved: tuple[dict, dict | None]) -> None:
        self.vars.clear()
        self.vars.update(saved[0])
        if self.self_env is not None and saved[1] is not None:
            self.self_env.clear()
            self.self_env.update(saved[1])

    def join(self, other: tuple[dict, dict | None]) -> None:
        """The other path meets this one: a name bound to different values on the two may denote
        either (a name bound on one path only keeps that binding: it may be bound)."""
        for mine, theirs in ((self.vars, other[0]), (self.self_env, other[1])):
            if mine is None or theirs is None:
                continue
            for key in mine.keys() | theirs.keys():
                mine[key] = either(mine.get(key), theirs.get(key))

    def bind(self, path: str, value: object) -> None:
        env = self.self_env if path.startswith("self.") and self.self_env is not None else self.vars
        if value is None:
            env.pop(path, None)
        else:
            env[path] = value


@dataclass
class _Loop:
    model: Model
    var: str
    node: cst.For
    recursive: bool
    sliced: bool = False  # over a slice of the layers (``base.layers[:100]``)
    bn_skipped: bool = False  # an ``if <is BN>: continue`` came earlier in the body


class KerasModels:
    """The events of one file. Build once per file; rules query it."""

    def __init__(
        self,
        module: cst.Module,
        imports: ImportMap,
        extra_factories: Iterable[str] = (),
        project: dict | None = None,
        unfrozen_elsewhere: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.imports = imports
        #: the definitions this file imports from other modules of the project (``lint.flow.project``)
        self.project = project or {}
        self._unfrozen_elsewhere = unfrozen_elsewhere
        self._module = module
        self._imported: dict[str, object] = {}
        self._stack: list[cst.FunctionDef] = []  # the functions being walked, innermost last
        self._calls: dict[str, list[cst.Call]] | None = None
        self.extra_factories = tuple(extra_factories)
        self.events: list[Event] = []
        self._seq = 0
        self._scopes = 0
        self._functions: dict[str, cst.FunctionDef] = {}
        self._bn_classes: set[str] = set()
        self._walked: set[int] = set()
        self._summaries: dict[int, object] = {}
        self._bn_functions: set[int] = set()
        self._values: dict[int, object] = {}  # id(Name/Attribute node) -> the model it denoted
        self._collect_definitions(module)
        self.module_scope = self._new_scope(None, None)
        self._block(module.body, self.module_scope, None)
        for fn in self._functions.values():
            self._function_summary(fn)
        for cls in _classes(module):
            self._walk_class(cls)

    # -- queries -------------------------------------------------------------------------

    def of(self, kind: type[Event]) -> list:
        return [e for e in self.events if type(e) is kind]

    def model_at(self, node: cst.CSTNode) -> Model | None:
        """The model a name or attribute denoted where it stands (e.g. ``model`` in ``model.fit(...)``)."""
        value = self._values.get(id(node))
        return value if isinstance(value, Model) else None

    def is_frozen(self, model: Model) -> bool:
        """The model itself (all of its layers) was frozen: a slice of layers frozen is fine-tuning of the rest."""
        return any(e.model is model and not e.partial for e in self.of(Freeze))

    def is_unfrozen(self, model: Model) -> bool:
        """Something in this file sets the model, a model that contains it, or layers of one, trainable again."""
        return any(model in set(e.model.lineage()) for e in self.of(Unfreeze))

    def unfrozen_at(self, model: Model) -> str | None:
        """Where the model (a model around it, or layers of one) is unfrozen without keeping its
        BatchNormalization frozen: "" in this file, "train.py:40" in another module of the project
        (``lint.flow.project.Project.unfrozen_elsewhere``), None nowhere.

        An unfreeze guarded by ``isinstance(layer, BatchNormalization)`` or followed by a re-freeze
        loop leaves BatchNormalization in inference mode: it does not make the base's mode matter."""
        unfreezes = [e for e in self.of(Unfreeze) if model in set(e.model.lineage())]
        if any(not e.guarded and not self.refrozen_after(e) for e in unfreezes):
            return ""
        if unfreezes or self._unfrozen_elsewhere is None:
            return None
        for name, where in self._unfrozen_elsewhere().items():
            value = self.module_scope.vars.get(name)
            fn = self._functions.get(name)
            if fn is not None:
                value = self._summaries.get(id(fn))
            if isinstance(value, Model) and model in set(value.lineage()):
                return where
        return None

    def frozen_before(self, event: Unfreeze) -> bool:
        """The unfrozen model (a model around it, or a part of it) was frozen first in this file
        (a re-freeze loop counts: the unfreeze undoes it).

        Setting ``trainable = True`` on a model that nothing froze changes nothing: its
        BatchNormalization layers were training from the start (ordinary full training), so
        there is no frozen-then-fine-tuned switch to warn about.  Order is known within one
        scope; a freeze in another function gets the benefit of the doubt.
        """
        unfrozen = set(event.model.lineage())
        for f in self.of(Freeze) + self.of(Refreeze):
            if event.partial and isinstance(f, Freeze) and f.partial:
                continue  # ``layers[:20]`` frozen, ``layers[20:]`` trainable: nothing frozen is unfrozen
            related = f.model in unfrozen or event.model in set(f.model.lineage())
            if related and (f.scope != event.scope or f.seq < event.seq):
                return True
        return False

    def only_called_with_training_false(self, model: Model) -> bool:
        uses = [e for e in self.events if e.model is model and isinstance(e, (Call, Placement, GraphReuse))]
        return bool(uses) and all(isinstance(e, Call) and e.training == "false" for e in uses)

    def refrozen_after(self, event: Unfreeze) -> bool:
        """A later loop in the same scope puts BatchNormalization layers back to trainable=False."""
        for r in self.of(Refreeze):
            if r.seq <= event.seq:
                continue
            covered = r.model is event.model or (r.recursive and event.model in set(r.model.lineage()))
            # Order is known within one scope; a re-freeze in another function gets the benefit of the doubt.
            if covered and (r.scope != event.scope or r.seq > event.seq):
                return True
        return False

    # -- definitions -----------------------------------------------------------------------

    def _collect_definitions(self, module: cst.Module) -> None:
        for node, in_class in _walk_statements(module.body):
            if isinstance(node, cst.FunctionDef) and not in_class:
                self._functions.setdefault(node.name.value, node)
            elif isinstance(node, cst.ClassDef) and self._mentions_bn(node):
                self._bn_classes.add(node.name.value)

    def _mentions_bn(self, node: cst.CSTNode) -> bool:
        """Does this code construct BatchNormalization or a BatchNormalization application?"""
        for n in names(node):
            # Resolve only names that can end in a BatchNormalization class or application.
            last = self.imports.aliases.get(n.value, n.value) if isinstance(n, cst.Name) else n.attr.value
            if last.rsplit(".", 1)[-1] in BN_NAMES:
                q = self.imports.qualname(n)
                if is_bn_class(q) or is_bn_application(q):
                    return True
        return False

    def _function_summary(self, fn: cst.FunctionDef):
        """Walk a function once (on first call or at the end) and return what it returns."""
        key = id(fn)
        if key in self._walked:
            return self._summaries.get(key)
        self._walked.add(key)
        scope = self._new_scope(self.module_scope, None)
        self._stack.append(fn)
        try:
            self._block(_body(fn.body), scope, None)
        finally:
            self._stack.pop()
        result = next((r for r in scope.returns if isinstance(r, Model)), None)
        if result is None and scope.saw_bn_layer and scope.returns:
            result = Model(label=f"{fn.name.value}()", has_bn=True)
        self._summaries[key] = result
        if scope.saw_bn_layer:
            self._bn_functions.add(key)
        return result

    def _walk_class(self, cls: cst.ClassDef) -> None:
        self_env: dict[str, object] = {}
        methods = [s for s in cls.body.body if isinstance(s, cst.FunctionDef)]
        methods.sort(key=lambda m: m.name.value != "__init__")  # attributes are set up first
        for method in methods:
            key = id(method)
            if key in self._walked:
                continue
            self._walked.add(key)
            scope = self._new_scope(self.module_scope, self_env)
            self._block(_body(method.body), scope, None)

    def _new_scope(self, parent: _Scope | None, self_env: dict | None) -> _Scope:
        self._scopes += 1
        return _Scope(self._scopes, parent, self_env)

    def _record(self, kind: type[Event], model: Model, node: cst.CSTNode, scope: _Scope, **extra) -> Event:
        self._seq += 1
        event = kind(model=model, node=node, scope=scope.ident, seq=self._seq, **extra)
        self.events.append(event)
        return event

    # -- statements ------------------------------------------------------------------------

    def _block(self, body: Iterable[cst.CSTNode], scope: _Scope, loop: _Loop | None, guards: tuple = ()) -> None:
        for stmt in body:
            self._statement(stmt, scope, loop, guards)

    def _statement(self, stmt: cst.CSTNode, scope: _Scope, loop: _Loop | None, guards: tuple) -> None:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                self._small(small, stmt, scope, loop, guards)
        elif isinstance(stmt, cst.BaseSmallStatement):  # the body of ``for i in range(n): x.trainable = False``
            self._small(stmt, stmt, scope, loop, guards)
        elif isinstance(stmt, cst.For):
            self._for(stmt, scope, loop, guards)
        elif isinstance(stmt, cst.If):
            self._eval(stmt.test, scope)
            bn_test = self._mentions_bn_check(stmt.test)
            if loop is not None and bn_test and _only_continue(stmt.body):
                loop.bn_skipped = True
            before = scope.snapshot()
            self._block(_body(stmt.body), scope, loop, guards + ((bn_test),))
            after_body = scope.snapshot()
            scope.restore(before)
            if stmt.orelse is not None:
                self._statement(stmt.orelse, scope, loop, guards + ((bn_test),))
            scope.join(after_body)
        elif isinstance(stmt, cst.Else):
            self._block(_body(stmt.body), scope, loop, guards)
        elif isinstance(stmt, (cst.While, cst.With)):
            if isinstance(stmt, cst.With):
                for item in stmt.items:
                    self._eval(item.item, scope)
            else:
                self._eval(stmt.test, scope)
            self._block(_body(stmt.body), scope, loop, guards)
        elif isinstance(stmt, cst.Try):
            self._block(_body(stmt.body), scope, loop, guards)
            for handler in stmt.handlers:
                self._block(_body(handler.body), scope, loop, guards)
            for extra in (stmt.orelse, stmt.finalbody):
                if extra is not None:
                    self._block(_body(extra.body), scope, loop, guards)
        elif isinstance(stmt, cst.FunctionDef):
            if stmt.name.value not in self._functions or self._functions[stmt.name.value] is not stmt:
                self._function_summary(stmt)  # nested or redefined: walk it where it stands
        # ClassDef bodies are walked once all module-level bindings exist.

    def _small(self, small, line, scope: _Scope, loop: _Loop | None, guards: tuple) -> None:
        if isinstance(small, (cst.Assign, cst.AnnAssign, cst.AugAssign)):
            value = small.value
            targets = (
                [t.target for t in small.targets] if isinstance(small, cst.Assign) else [small.target]
            )
            if value is None:
                return
            result = self._eval(value, scope)
            for target in targets:
                self._assign(target, value, result, line, scope, loop, guards)
        elif isinstance(small, cst.Expr):
            self._eval(small.value, scope)
        elif isinstance(small, cst.Return) and small.value is not None:
            scope.returns.append(self._eval(small.value, scope))

    def _assign(self, target, value, result, line, scope: _Scope, loop: _Loop | None, guards: tuple) -> None:
        if isinstance(target, cst.Attribute) and target.attr.value == "trainable":
            self._trainable(target.value, value, line, scope, loop, guards)
            return
        path = dotted(target)
        if path is not None:
            scope.bind(path, result)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                p = dotted(element.value)
                if p is not None:
                    scope.bind(p, None)

    def _trainable(self, owner, value, line, scope: _Scope, loop: _Loop | None, guards: tuple) -> None:
        """``X.trainable = ...``: a freeze, an unfreeze, or a BatchNormalization re-freeze."""
        literal = value.value if isinstance(value, cst.Name) and value.value in ("True", "False") else None
        if literal is None and isinstance(value, cst.Name):
            literal = self._unoverridden_default(value.value)  # ``base.trainable = trainable`` (default False)
        bn_aware = any(guards) or (loop is not None and loop.bn_skipped) or self._mentions_bn_check(value)
        in_loop = loop is not None and dotted(owner) == loop.var
        parts = (None,) if in_loop else options_of(self._eval(owner, scope, record=False))
        for part in parts:  # each model the name may denote on the paths that meet here
            target = loop.model if in_loop else part.model if isinstance(part, LayerOf) else part
            if isinstance(target, Model):
                self._set_trainable(target, part, literal, bn_aware, in_loop, line, scope, loop)

    def _set_trainable(self, target: Model, part, literal, bn_aware: bool, in_loop: bool, line, scope: _Scope,
                       loop: _Loop | None) -> None:
        partial = (in_loop and loop.sliced) or isinstance(part, LayerOf)
        if literal == "False":
            if in_loop and bn_aware:
                self._record(Refreeze, target, line, scope, recursive=loop.recursive)
            else:
                self._record(Freeze, target, line, scope, partial=partial)
        elif literal == "True" or (literal is None and bn_aware):
            if in_loop and literal is None:  # trainable = not isinstance(layer, BatchNormalization)
                self._record(Refreeze, target, line, scope, recursive=loop.recursive)
            self._record(
                Unfreeze,
                target,
                line,
                scope,
                guarded=bn_aware,
                partial=in_loop and loop.sliced,
                layer_of=isinstance(part, LayerOf),
                loop=loop.node if in_loop else None,
                loop_var=loop.var if in_loop else None,
            )

    def _for(self, stmt: cst.For, scope: _Scope, loop: _Loop | None, guards: tuple) -> None:
        layers = self._layers_iter(stmt.iter, scope)
        var = _loop_var(stmt.target)
        if layers is not None and var is not None:
            model, recursive = layers
            inner = _Loop(model=model, var=var, node=stmt, recursive=recursive, sliced=_sliced(stmt.iter))
            self._block(_body(stmt.body), scope, inner, ())
        else:
            self._eval(stmt.iter, scope)
            self._block(_body(stmt.body), scope, loop, guards)
        if stmt.orelse is not None:
            self._block(_body(stmt.orelse.body), scope, loop, guards)

    def _layers_iter(self, node, scope: _Scope) -> tuple[Model, bool] | None:
        """``m.layers``, ``m.layers[a:b]``, ``enumerate(m.layers)``, ``m.submodules``, ``m._flatten_layers()``."""
        if isinstance(node, cst.Call):
            if dotted(node.func) in ("enumerate", "reversed", "list") and node.args:
                return self._layers_iter(node.args[0].value, scope)
            if isinstance(node.func, cst.Attribute) and node.func.attr.value in RECURSIVE_LAYER_ITERS:
                model = self._model_of(node.func.value, scope)
                return (model, True) if model else None
            return None
        if isinstance(node, cst.Subscript):
            node = node.value
        if isinstance(node, cst.Attribute) and node.attr.value in ("layers", "submodules"):
            model = self._model_of(node.value, scope)
            return (model, node.attr.value == "submodules") if model else None
        return None

    # -- expressions -----------------------------------------------------------------------

    def _model_of(self, node, scope: _Scope) -> Model | None:
        value = self._eval(node, scope, record=False)
        return value if isinstance(value, Model) else None

    def _eval(self, node, scope: _Scope, record: bool = True):
        """The model (or layer of a model) an expression denotes, recording the events inside it."""
        if isinstance(node, (cst.Name, cst.Attribute)):
            path = dotted(node)
            if path is not None:
                found = scope.lookup(path)
                if found is None and path in self.project:
                    found = self._imported_model(path, node)
                if found is not None:
                    self._values[id(node)] = found
                    return found
            if isinstance(node, cst.Attribute):
                owner = self._eval(node.value, scope, record)
                for option in options_of(owner):
                    if isinstance(option, (Model, LayerOf)) and node.attr.value in GRAPH_ATTRS and record:
                        model = option.model if isinstance(option, LayerOf) else option
                        self._record(GraphReuse, model, node, scope, attr=node.attr.value)
                        # A model built on this graph (``Model(base.input, head(base.output))``) holds its layers.
                        scope.called.append(model)
            return None
        if isinstance(node, cst.Call):
            return self._call(node, scope, record)
        if isinstance(node, cst.IfExp):  # ``A() if small else B()``: either
            self._eval(node.test, scope, record)
            return either(self._eval(node.body, scope, record), self._eval(node.orelse, scope, record))
        if isinstance(node, cst.Subscript):
            owner = node.value
            if isinstance(owner, cst.Attribute) and owner.attr.value == "layers":
                found = None
                for model in options_of(self._eval(owner.value, scope, record)):
                    if isinstance(model, Model):
                        found = either(found, self._layer(model, _int_index(node)))
                return found
            self._eval(owner, scope, record)
            return None
        if record:
            self._visit_children(node, scope)
        return None

    @staticmethod
    def _layer(model: Model, index: int | None):
        """``model.layers[index]``: the element of a ``Sequential`` where known, else a layer of the model."""
        elements = model.elements
        if index is not None and elements and -len(elements) <= index < len(elements):
            return elements[index] or LayerOf(model)
        return LayerOf(model)

    def _visit_children(self, node: cst.CSTNode, scope: _Scope) -> None:
        for child in children(node):
            if isinstance(child, cst.BaseExpression):
                self._eval(child, scope)
            else:
                self._visit_children(child, scope)

    def _call(self, node: cst.Call, scope: _Scope, record: bool):
        func = node.func
        qualname = self.imports.qualname(func) if isinstance(func, (cst.Name, cst.Attribute)) else None
        callee = self._eval(func, scope, record)
        args = list(node.args)

        if isinstance(callee, Builder):
            if record:
                for arg in args:
                    self._eval(arg.value, scope, record)
            d = callee.definition
            built = Model(label=f"{callee.name}()", has_bn=True, defined_at=d.where,
                          layer_name=_string_arg(args, "name", positional=False))
            if d.frozen_at:
                self._record_elsewhere(built, node, d.frozen_at)
            return built

        if isinstance(callee, (Model, Either)):
            if record:
                for arg in args:
                    self._eval(arg.value, scope, record)
                for option in options_of(callee):
                    if isinstance(option, Model):
                        self._record(Call, option, node, scope, training=_training_arg(args))
                        scope.called.append(option)
            return None

        if isinstance(func, cst.Attribute) and func.attr.value in ("add", "get_layer"):
            owner = self._eval(func.value, scope, record=False)
            if isinstance(owner, Model):
                if func.attr.value == "get_layer":
                    name = _string_arg(args, "name")
                    return (owner.named(name) if name else None) or LayerOf(owner)
                if record and args:
                    added = self._eval(args[0].value, scope, record)
                    placed = [o for o in options_of(added) if isinstance(o, Model) and owner not in set(o.lineage())]
                    for option in placed:
                        owner.children.append(option)
                        self._record(Placement, option, args[0].value, scope)
                    if not placed and self._is_bn_layer_call(args[0].value):
                        owner.has_bn = True
                    if owner.elements is not None:
                        owner.elements.append(added if isinstance(added, Model) else None)
                return None

        if record:
            for arg in args:
                self._eval(arg.value, scope, record)

        if is_bn_application(qualname):
            short = qualname.rsplit(".", 1)[-1]
            return Model(label=short, has_bn=True, layer_name=_string_arg(args, "name", positional=False),
                         default_name=_normal(short))
        if is_bn_class(qualname):
            scope.saw_bn_layer = True
            return None
        if _is_keras(qualname, "Sequential"):
            return self._sequential(args, scope, node)
        if _is_keras(qualname, "Model", "Functional"):
            called = list(dict.fromkeys(scope.called))
            return Model(label="Model", has_bn=scope.saw_bn_layer, children=called,
                         layer_name=_string_arg(args, "name", positional=False))
        if qualname and self._is_extra_factory(qualname):
            return Model(label=f"{qualname.rsplit('.', 1)[-1]}()", has_bn=True,
                         layer_name=_string_arg(args, "name", positional=False))
        if isinstance(func, cst.Name):
            if func.value in self._bn_classes:
                return Model(label=f"{func.value}()", has_bn=True)
            fn = self._functions.get(func.value)
            if fn is not None:
                result = self._function_summary(fn)
                if id(fn) in self._bn_functions:
                    scope.saw_bn_layer = True
                return result
        return None

    def _imported_model(self, name: str, node: cst.CSTNode):
        """A Keras model (or builder of one) with BatchNormalization that another module of the project
        defines, by the name this file uses for it: one value per name. A module-level model frozen
        there gets its freeze recorded at its first use here (the evidence names the other file)."""
        if name in self._imported:
            return self._imported[name]
        d = self.project[name]
        value = None
        if getattr(d, "framework", "") == "keras" and d.is_model and d.has_bn:
            if d.kind == "variable":
                value = Model(label=name, has_bn=True, defined_at=d.where)
                if d.frozen_at:
                    self._record_elsewhere(value, node, d.frozen_at)
            else:
                value = Builder(name, d)
        self._imported[name] = value
        return value

    def _record_elsewhere(self, model: Model, node: cst.CSTNode, where: str) -> None:
        # Scope 0 is no scope of this file: another module froze it before anything here runs.
        self._seq += 1
        self.events.append(Freeze(model=model, node=node, scope=0, seq=self._seq, elsewhere=where))

    def _unoverridden_default(self, name: str) -> str | None:
        """"True"/"False": ``name`` is a parameter of the function being walked whose default is that
        literal and that no call in this file passes (``def build(trainable=False): base.trainable = trainable``)."""
        fn = self._stack[-1] if self._stack else None
        if fn is None:
            return None
        params = list(fn.params.params)
        for index, param in enumerate(params + list(fn.params.kwonly_params)):
            default = param.default
            if param.name.value != name or not (isinstance(default, cst.Name) and default.value in ("True", "False")):
                continue
            for call in self._calls_of(fn.name.value):
                positional = [a for a in call.args if a.keyword is None]
                if any(a.star for a in call.args) or (index < len(params) and len(positional) > index):
                    return None
                if any(a.keyword is not None and a.keyword.value == name for a in call.args):
                    return None
            return default.value
        return None

    def _calls_of(self, function: str) -> list[cst.Call]:
        if self._calls is None:
            self._calls = {}
            for n in walk(self._module):
                if isinstance(n, cst.Call) and isinstance(n.func, (cst.Name, cst.Attribute)):
                    last = n.func.value if isinstance(n.func, cst.Name) else n.func.attr.value
                    self._calls.setdefault(last, []).append(n)
        return self._calls.get(function, [])

    def _sequential(self, args, scope: _Scope, node) -> Model:
        model = Model(label="Sequential", has_bn=False, elements=[],
                      layer_name=_string_arg(args, "name", positional=False))
        layers = args[0].value if args and args[0].keyword is None else None
        if isinstance(layers, (cst.List, cst.Tuple)):
            for element in layers.elements:
                if isinstance(element.value, cst.Call) and _is_keras(
                    self.imports.qualname(element.value.func), "Input", "InputLayer"
                ):
                    continue  # ``model.layers`` does not list the input layer
                value = self._eval(element.value, scope, record=False)
                placed = [o for o in options_of(value) if isinstance(o, Model)]
                for option in placed:
                    model.children.append(option)
                    self._record(Placement, option, element.value, scope)
                if not placed and self._is_bn_layer_call(element.value):
                    model.has_bn = True
                model.elements.append(value if isinstance(value, Model) else None)
        elif layers is not None:
            model.elements = None  # layers built elsewhere: order unknown
        return model

    def _is_bn_layer_call(self, node) -> bool:
        return isinstance(node, cst.Call) and is_bn_class(self.imports.qualname(node.func))

    def _is_extra_factory(self, qualname: str) -> bool:
        return any(qualname == f or qualname.endswith("." + f) or f.endswith("." + qualname)
                   for f in self.extra_factories)

    def _mentions_bn_check(self, node) -> bool:
        """A test such as ``isinstance(layer, BatchNormalization)`` or ``"bn" in layer.name``."""
        if self._mentions_bn(node):
            return True
        for n in walk(node):
            if isinstance(n, cst.SimpleString) and BN_NAME_TEXT.search(n.value):
                return True
        return False


# -- small helpers -------------------------------------------------------------------------


def _sliced(node) -> bool:
    """``m.layers[:100]`` (also inside ``enumerate(...)``): a slice of the layers, not all of them."""
    while isinstance(node, cst.Call) and node.args:
        node = node.args[0].value
    return isinstance(node, cst.Subscript) and any(isinstance(e.slice, cst.Slice) for e in node.slice)


def _walk_statements(body, in_class: bool = False) -> Iterator[tuple[cst.CSTNode, bool]]:
    """Every compound and simple statement, with whether it sits directly in a class body."""
    for stmt in body:
        yield stmt, in_class
        inner = getattr(stmt, "body", None)
        if isinstance(inner, cst.IndentedBlock):
            yield from _walk_statements(inner.body, isinstance(stmt, cst.ClassDef))
        for name in ("orelse", "finalbody"):
            extra = getattr(stmt, name, None)
            if extra is not None and hasattr(extra, "body"):
                yield from _walk_statements([extra])
        for handler in getattr(stmt, "handlers", ()):
            yield from _walk_statements([handler])


def _classes(module: cst.Module) -> list[cst.ClassDef]:
    return [n for n, _ in _walk_statements(module.body) if isinstance(n, cst.ClassDef)]


def _body(block) -> list:
    return list(block.body) if isinstance(block, (cst.IndentedBlock, cst.SimpleStatementSuite)) else []


def _only_continue(block) -> bool:
    statements = _body(block)
    return len(statements) == 1 and isinstance(statements[0], cst.SimpleStatementLine) and all(
        isinstance(s, cst.Continue) for s in statements[0].body
    )


def _loop_var(target) -> str | None:
    if isinstance(target, cst.Name):
        return target.value
    if isinstance(target, cst.Tuple) and target.elements:
        last = target.elements[-1].value  # ``for i, layer in enumerate(...)``
        return last.value if isinstance(last, cst.Name) else None
    return None


def _int_index(node: cst.Subscript) -> int | None:
    if len(node.slice) != 1 or not isinstance(node.slice[0].slice, cst.Index):
        return None
    value = node.slice[0].slice.value
    sign = 1
    if isinstance(value, cst.UnaryOperation) and isinstance(value.operator, cst.Minus):
        sign, value = -1, value.expression
    if not isinstance(value, cst.Integer):
        return None
    try:
        return sign * int(value.value, 0)
    except ValueError:
        return None


def _training_arg(args) -> str:
    for arg in args:
        if arg.keyword is not None and arg.keyword.value == "training":
            value = arg.value
            if isinstance(value, cst.Name) and value.value in ("True", "False"):
                return value.value.lower()
            return "other"
    return "absent"


def _string_arg(args, keyword: str, positional: bool = True) -> str | None:
    for i, arg in enumerate(args):
        if (arg.keyword is not None and arg.keyword.value == keyword) or (
            positional and i == 0 and arg.keyword is None
        ):
            if isinstance(arg.value, cst.SimpleString):
                return arg.value.evaluated_value if isinstance(arg.value.evaluated_value, str) else None
    return None
