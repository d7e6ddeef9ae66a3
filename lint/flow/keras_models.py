"""Keras models in the flow walk: what the program does to Keras model values (BN001-BN003).

``Flow`` (``lint.flow.walk``) inherits these methods and calls them from its own statement,
branch, loop and function handling, so the model events come from the same flow-sensitive pass
every rule queries: its frames (a model bound in a helper is the helper's), its joins where paths
meet (a name bound to different models on the two sides of an ``if``/``else`` or ``A if c else B``
denotes ``Either`` of them, and what follows applies to each: may, not must), its constant folding
(a branch that cannot run records nothing), and its helpers walked at their call sites (a helper
that builds and returns a model gives the call that model).

Recorded events (``lint.flow.events``): a model frozen (all of it, or a slice or index of its
layers: ``ModelFreeze``), unfrozen (and whether BatchNormalization stays frozen: ``ModelUnfreeze``),
its BatchNormalization re-frozen (``Refreeze``), called with which ``training`` (``ModelCall``),
placed in a ``Sequential`` (``Placement``), its graph reused through ``.output`` (``GraphReuse``).
Values (``lint.flow.values``): ``KerasModel``, ``LayerOf``, ``Either``, ``Builder``. A value is
followed through assignments and aliases (by value: a name rebound to a new model is a new value),
``self.`` attributes shared by a class's methods, ``model.layers[i]`` and ``model.get_layer("name")``,
and models derived from it (``Model(base.input, head(base.output))`` holds the base's layers). Across
files, through the project index (``lint.flow.project``): models and builders with BatchNormalization
that another module of the project defines (imported, or left by a script this one continues),
frozen there or not, and the unfreezes other modules apply to this module's models. Anything else
whose origin lies outside the project (a loaded model, a hub layer) is not a model here: the rules
prefer silence to a guess.

Only a file that sets ``trainable`` somewhere, or imports a model another module freezes, can
have a frozen model: elsewhere this part of the walk does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from lint.flow.events import (
    GraphReuse,
    ModelCall,
    ModelEvent,
    ModelFreeze,
    ModelUnfreeze,
    Placement,
    Refreeze,
)
from lint.flow.values import Builder, Either, KerasModel, LayerOf, _normal, either, options_of
from lint.frameworks.keras import BN_NAME_TEXT, BN_NAMES, GRAPH_ATTRS, RECURSIVE_LAYER_ITERS, is_bn_application, is_bn_class
from lint.names import dotted, keras_name
from lint.nodes import children, names, walk


def _is_keras(qualname: str | None, *names: str) -> bool:
    name = keras_name(qualname)
    return bool(name) and name.rsplit(".", 1)[-1] in names



@dataclass
class _Loop:
    model: KerasModel
    var: str
    node: cst.For
    recursive: bool
    sliced: bool = False  # over a slice of the layers (``base.layers[:100]``)
    bn_skipped: bool = False  # an ``if <is BN>: continue`` came earlier in the body


class KerasModelWalk:
    """Mixin of ``Flow``: the Keras-model part of the walk."""

    def _init_models(self, wanted: bool = True) -> None:
        self.model_events: list[ModelEvent] = []
        self._kseq = 0
        self._kimported: dict[str, object] = {}
        self._kenvs: dict[int, dict] = {}
        self._kresults: dict[int, tuple] = {}
        self._ksummaries: dict[int, object] = {}
        self._kvalues: dict[int, object] = {}
        self._kloop: _Loop | None = None
        self._kguards: tuple = ()
        self._kcalls = None
        # Only a file that sets ``trainable`` (``Flow._collect`` notes it) or imports a model frozen
        # elsewhere can have a frozen model: elsewhere this part of the walk does nothing.
        # And only where a rule asks (``Rule.queries_keras_models``).
        self._kon = wanted and (self._sets_trainable or any(getattr(d, "frozen_at", None) for d in self.project.values()))
        self._kbn_classes = {n.name.value for n in walk(self._module)
                             if isinstance(n, cst.ClassDef) and self._kmentions_bn(n)} if self._kon else set()

    # -- environment -----------------------------------------------------------------------

    def _kenv(self, frame):
        f = frame
        if f.self_obj is None:
            return None
        key = id(f.self_obj.cls) if f.self_obj.cls is not None else id(f.self_obj)
        return self._kenvs.setdefault(key, {})

    def _klookup(self, path: str, frame):
        if path.startswith("self."):
            env = self._kenv(frame)
            if env is not None:
                return env.get(path)
        f = frame
        while f is not None:
            if path in f.kvars:
                return f.kvars[path]
            f = f.parent
        return None

    def _kbind(self, path: str, value, frame) -> None:
        env = self._kenv(frame) if path.startswith("self.") else None
        env = env if env is not None else frame.kvars
        if value is None:
            env.pop(path, None)
        else:
            env[path] = value

    def _ksnapshot(self, frame):
        if not self._kon:
            return None
        env = self._kenv(frame)
        return dict(frame.kvars), (dict(env) if env is not None else None)

    def _krestore(self, frame, saved) -> None:
        if saved is None:
            return
        frame.kvars = dict(saved[0])
        env = self._kenv(frame)
        if env is not None and saved[1] is not None:
            env.clear()
            env.update(saved[1])

    def _kjoin(self, frame, other) -> None:
        if other is None:
            return
        env = self._kenv(frame)
        for mine, theirs in ((frame.kvars, other[0]), (env, other[1])):
            if mine is None or theirs is None:
                continue
            for key in mine.keys() | theirs.keys():
                value = either(mine.get(key), theirs.get(key))
                if value is None:
                    mine.pop(key, None)
                else:
                    mine[key] = value

    def _krecord(self, kind, model: KerasModel, node, frame, **extra):
        self._kseq += 1
        event = kind(model=model, node=node, scope=frame.ident, seq=self._kseq, **extra)
        if not self._mute:
            self.model_events.append(event)
        return event

    # -- statements (hooks) ----------------------------------------------------------------

    def _kif_enter(self, stmt: cst.If, frame):
        """Before an ``if``'s body: its test evaluated, whether it tests for BatchNormalization."""
        if not self._kon:
            return self._kguards
        self._keval(stmt.test, frame)
        bn_test = self._kmentions_bn_check(stmt.test)
        if self._kloop is not None and bn_test and _only_continue(stmt.body):
            self._kloop.bn_skipped = True
        saved = self._kguards
        self._kguards = saved + (bn_test,)
        return saved

    def _ksmall(self, small, line, frame) -> None:
        if not self._kon:
            return
        if isinstance(small, (cst.Assign, cst.AnnAssign, cst.AugAssign)):
            value = small.value
            targets = [t.target for t in small.targets] if isinstance(small, cst.Assign) else [small.target]
            if value is None:
                return
            result = self._keval(value, frame)
            for target in targets:
                self._kassign(target, value, result, line, frame)
        elif isinstance(small, cst.Expr):
            self._keval(small.value, frame)
        elif isinstance(small, cst.Return) and small.value is not None:
            frame.kreturns.append(self._keval(small.value, frame))

    def _kassign(self, target, value, result, line, frame) -> None:
        if isinstance(target, cst.Attribute) and target.attr.value == "trainable":
            self._ktrainable(target.value, value, line, frame)
            return
        path = dotted(target)
        if path is not None:
            self._kbind(path, result, frame)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                p = dotted(element.value)
                if p is not None:
                    self._kbind(p, None, frame)

    def _ktrainable(self, owner, value, line, frame) -> None:
        loop = self._kloop
        literal = value.value if isinstance(value, cst.Name) and value.value in ("True", "False") else None
        if literal is None and isinstance(value, cst.Name):
            literal = self._kunoverridden_default(value.value)
        bn_aware = any(self._kguards) or (loop is not None and loop.bn_skipped) or self._kmentions_bn_check(value)
        in_loop = loop is not None and dotted(owner) == loop.var
        parts = (None,) if in_loop else options_of(self._keval(owner, frame, record=False))
        for part in parts:
            target = loop.model if in_loop else part.model if isinstance(part, LayerOf) else part
            if isinstance(target, KerasModel):
                self._kset_trainable(target, part, literal, bn_aware, in_loop, line, frame, loop)

    def _kset_trainable(self, target, part, literal, bn_aware, in_loop, line, frame, loop) -> None:
        partial = (in_loop and loop.sliced) or isinstance(part, LayerOf)
        if literal == "False":
            if in_loop and bn_aware:
                self._krecord(Refreeze, target, line, frame, recursive=loop.recursive)
            else:
                self._krecord(ModelFreeze, target, line, frame, partial=partial)
        elif literal == "True" or (literal is None and bn_aware):
            if in_loop and literal is None:
                self._krecord(Refreeze, target, line, frame, recursive=loop.recursive)
            self._krecord(ModelUnfreeze, target, line, frame, guarded=bn_aware, partial=in_loop and loop.sliced,
                          layer_of=isinstance(part, LayerOf), loop=loop.node if in_loop else None,
                          loop_var=loop.var if in_loop else None)

    def _kloop_enter(self, stmt, frame):
        """Before a loop: a loop over a model's layers sets the loop context; returns what to restore."""
        saved = (self._kloop, self._kguards)
        if not self._kon:
            return saved
        if isinstance(stmt, cst.For):
            layers = self._klayers_iter(stmt.iter, frame)
            var = _loop_var(stmt.target)
            if layers is not None and var is not None:
                model, recursive = layers
                self._kloop = _Loop(model=model, var=var, node=stmt, recursive=recursive, sliced=_sliced(stmt.iter))
                self._kguards = ()
            else:
                self._keval(stmt.iter, frame)
        else:
            self._keval(stmt.test, frame)
        return saved

    def _kfunction_enter(self):
        saved = (self._kloop, self._kguards)
        self._kloop, self._kguards = None, ()
        return saved

    def _kfunction_exit(self, saved, fn, frame, call) -> None:
        self._kloop, self._kguards = saved
        if not self._kon:
            return
        result = next((r for r in frame.kreturns if isinstance(r, KerasModel)), None)
        if result is None and frame.ksaw_bn and frame.kreturns:
            result = KerasModel(label=f"{fn.name.value}()", has_bn=True)
        if call is not None:
            self._kresults[id(call)] = (result, frame.ksaw_bn)
        self._ksummaries.setdefault(id(fn), (result, frame.ksaw_bn))

    def _klayers_iter(self, node, frame):
        if isinstance(node, cst.Call):
            if dotted(node.func) in ("enumerate", "reversed", "list") and node.args:
                return self._klayers_iter(node.args[0].value, frame)
            if isinstance(node.func, cst.Attribute) and node.func.attr.value in RECURSIVE_LAYER_ITERS:
                model = self._kmodel_of(node.func.value, frame)
                return (model, True) if model else None
            return None
        if isinstance(node, cst.Subscript):
            node = node.value
        if isinstance(node, cst.Attribute) and node.attr.value in ("layers", "submodules"):
            model = self._kmodel_of(node.value, frame)
            return (model, node.attr.value == "submodules") if model else None
        return None

    # -- expressions -----------------------------------------------------------------------

    def _kwith_item(self, item, frame) -> None:
        if self._kon:
            self._keval(item, frame)

    def _kmodel_of(self, node, frame):
        value = self._keval(node, frame, record=False)
        return value if isinstance(value, KerasModel) else None

    def _keval(self, node, frame, record: bool = True):
        if isinstance(node, (cst.Name, cst.Attribute)):
            path = dotted(node)
            if path is not None:
                found = self._klookup(path, frame)
                if found is None and path in self.project:
                    found = self._kimported_model(path, node, frame)
                if found is not None:
                    self._kvalues[id(node)] = found
                    return found
            if isinstance(node, cst.Attribute):
                owner = self._keval(node.value, frame, record)
                for option in options_of(owner):
                    if isinstance(option, (KerasModel, LayerOf)) and node.attr.value in GRAPH_ATTRS and record:
                        model = option.model if isinstance(option, LayerOf) else option
                        self._krecord(GraphReuse, model, node, frame, attr=node.attr.value)
                        frame.kcalled.append(model)
            return None
        if isinstance(node, cst.Call):
            return self._kcall(node, frame, record)
        if isinstance(node, cst.IfExp):
            self._keval(node.test, frame, record)
            return either(self._keval(node.body, frame, record), self._keval(node.orelse, frame, record))
        if isinstance(node, cst.Subscript):
            owner = node.value
            if isinstance(owner, cst.Attribute) and owner.attr.value == "layers":
                found = None
                for model in options_of(self._keval(owner.value, frame, record)):
                    if isinstance(model, KerasModel):
                        found = either(found, _layer(model, _int_index(node)))
                return found
            self._keval(owner, frame, record)
            return None
        if record:
            self._kvisit(node, frame)
        return None

    def _kvisit(self, node, frame) -> None:
        for child in children(node):
            if isinstance(child, cst.BaseExpression):
                self._keval(child, frame)
            else:
                self._kvisit(child, frame)

    def _kcall(self, node: cst.Call, frame, record: bool):
        func = node.func
        qualname = self.imports.qualname(func) if isinstance(func, (cst.Name, cst.Attribute)) else None
        callee = self._keval(func, frame, record)
        args = list(node.args)

        if isinstance(callee, Builder):
            if record:
                for arg in args:
                    self._keval(arg.value, frame, record)
            d = callee.definition
            built = KerasModel(label=f"{callee.name}()", has_bn=True, defined_at=d.where,
                          layer_name=_string_arg(args, "name", positional=False))
            if d.frozen_at:
                self._krecord_elsewhere(built, node, d.frozen_at)
            return built

        if isinstance(callee, KerasModel) or isinstance(callee, Either):
            if record:
                for arg in args:
                    self._keval(arg.value, frame, record)
                for option in options_of(callee):
                    if isinstance(option, KerasModel):
                        self._krecord(ModelCall, option, node, frame, training=_training_arg(args))
                        frame.kcalled.append(option)
            return None

        if isinstance(func, cst.Attribute) and func.attr.value in ("add", "get_layer"):
            owner = self._keval(func.value, frame, record=False)
            if isinstance(owner, KerasModel):
                if func.attr.value == "get_layer":
                    name = _string_arg(args, "name")
                    return (owner.named(name) if name else None) or LayerOf(owner)
                if record and args:
                    added = self._keval(args[0].value, frame, record)
                    placed = [o for o in options_of(added) if isinstance(o, KerasModel) and owner not in set(o.lineage())]
                    for option in placed:
                        owner.children.append(option)
                        self._krecord(Placement, option, args[0].value, frame)
                    if not placed and self._kis_bn_layer_call(args[0].value):
                        owner.has_bn = True
                    if owner.elements is not None:
                        owner.elements.append(added if isinstance(added, KerasModel) else None)
                return None

        if record:
            for arg in args:
                self._keval(arg.value, frame, record)

        if is_bn_application(qualname):
            short = qualname.rsplit(".", 1)[-1]
            return KerasModel(label=short, has_bn=True, layer_name=_string_arg(args, "name", positional=False),
                         default_name=_normal(short))
        if is_bn_class(qualname):
            frame.ksaw_bn = True
            return None
        if _is_keras(qualname, "Sequential"):
            return self._ksequential(args, frame)
        if _is_keras(qualname, "Model", "Functional"):
            called = list(dict.fromkeys(frame.kcalled))
            return KerasModel(label="Model", has_bn=frame.ksaw_bn, children=called,
                         layer_name=_string_arg(args, "name", positional=False))
        if qualname and self._extra_model(qualname):
            return KerasModel(label=f"{qualname.rsplit('.', 1)[-1]}()", has_bn=True,
                         layer_name=_string_arg(args, "name", positional=False))
        if isinstance(func, cst.Name):
            if func.value in self._kbn_classes:
                return KerasModel(label=f"{func.value}()", has_bn=True)
            result = self._kresults.get(id(node))
            if result is not None:
                if result[1]:
                    frame.ksaw_bn = True
                return result[0]
        return None

    def _kimported_model(self, name: str, node, frame):
        if name in self._kimported:
            return self._kimported[name]
        d = self.project[name]
        value = None
        if getattr(d, "framework", "") == "keras" and d.is_model and d.has_bn:
            if d.kind == "variable":
                value = KerasModel(label=name, has_bn=True, defined_at=d.where)
                if d.frozen_at:
                    self._krecord_elsewhere(value, node, d.frozen_at)
            else:
                value = Builder(name, d)
        self._kimported[name] = value
        return value

    def _krecord_elsewhere(self, model, node, where: str) -> None:
        self._kseq += 1
        if not self._mute:
            self.model_events.append(ModelFreeze(model=model, node=node, scope=0, seq=self._kseq, elsewhere=where))

    def _kunoverridden_default(self, name: str) -> str | None:
        fn = self._stack[-1] if self._stack else None
        if fn is None:
            return None
        params = list(fn.params.params)
        for index, param in enumerate(params + list(fn.params.kwonly_params)):
            default = param.default
            if param.name.value != name or not (isinstance(default, cst.Name) and default.value in ("True", "False")):
                continue
            for call in self._kcalls_of(fn.name.value):
                positional = [a for a in call.args if a.keyword is None]
                if any(a.star for a in call.args) or (index < len(params) and len(positional) > index):
                    return None
                if any(a.keyword is not None and a.keyword.value == name for a in call.args):
                    return None
            return default.value
        return None

    def _kcalls_of(self, function: str) -> list:
        if self._kcalls is None:
            self._kcalls = {}
            for n in walk(self._module):
                if isinstance(n, cst.Call) and isinstance(n.func, (cst.Name, cst.Attribute)):
                    last = n.func.value if isinstance(n.func, cst.Name) else n.func.attr.value
                    self._kcalls.setdefault(last, []).append(n)
        return self._kcalls.get(function, [])

    def _ksequential(self, args, frame) -> KerasModel:
        model = KerasModel(label="Sequential", has_bn=False, elements=[], layer_name=_string_arg(args, "name", positional=False))
        layers = args[0].value if args and args[0].keyword is None else None
        if isinstance(layers, (cst.List, cst.Tuple)):
            for element in layers.elements:
                if isinstance(element.value, cst.Call) and _is_keras(self.imports.qualname(element.value.func),
                                                                     "Input", "InputLayer"):
                    continue
                value = self._keval(element.value, frame, record=False)
                placed = [o for o in options_of(value) if isinstance(o, KerasModel)]
                for option in placed:
                    model.children.append(option)
                    self._krecord(Placement, option, element.value, frame)
                if not placed and self._kis_bn_layer_call(element.value):
                    model.has_bn = True
                model.elements.append(value if isinstance(value, KerasModel) else None)
        elif layers is not None:
            model.elements = None
        return model

    def _kis_bn_layer_call(self, node) -> bool:
        return isinstance(node, cst.Call) and is_bn_class(self.imports.qualname(node.func))

    def _kmentions_bn(self, node) -> bool:
        for n in names(node):
            last = self.imports.aliases.get(n.value, n.value) if isinstance(n, cst.Name) else n.attr.value
            if last.rsplit(".", 1)[-1] in BN_NAMES:
                q = self.imports.qualname(n)
                if is_bn_class(q) or is_bn_application(q):
                    return True
        return False

    def _kmentions_bn_check(self, node) -> bool:
        if self._kmentions_bn(node):
            return True
        return any(isinstance(n, cst.SimpleString) and BN_NAME_TEXT.search(n.value) for n in walk(node))


def _layer(model: KerasModel, index):
    elements = model.elements
    if index is not None and elements and -len(elements) <= index < len(elements):
        return elements[index] or LayerOf(model)
    return LayerOf(model)


class KerasModels:
    """The Keras-model facts of one file, as queries over the events ``Flow`` recorded (BN001-BN003 ask
    these through ``FileContext.flow.keras_models``)."""

    def __init__(self, flow, unfrozen_elsewhere=None) -> None:
        self.flow = flow
        self.events = flow.model_events
        self._unfrozen_elsewhere = unfrozen_elsewhere

    def of(self, kind):
        return [e for e in self.events if type(e) is kind]

    def model_at(self, node):
        value = self.flow._kvalues.get(id(node))
        return value if isinstance(value, KerasModel) else None

    def is_frozen(self, model) -> bool:
        return any(e.model is model and not e.partial for e in self.of(ModelFreeze))

    def is_unfrozen(self, model) -> bool:
        return any(model in set(e.model.lineage()) for e in self.of(ModelUnfreeze))

    def unfrozen_at(self, model):
        unfreezes = [e for e in self.of(ModelUnfreeze) if model in set(e.model.lineage())]
        if any(not e.guarded and not self.refrozen_after(e) for e in unfreezes):
            return ""
        if unfreezes or self._unfrozen_elsewhere is None:
            return None
        for name, where in self._unfrozen_elsewhere().items():
            value = self.flow._top.kvars.get(name)
            fn = self.flow._functions.get(name)
            if fn is not None:
                value = self.flow._ksummaries.get(id(fn), (None,))[0]
            if isinstance(value, KerasModel) and model in set(value.lineage()):
                return where
        return None

    def frozen_before(self, event) -> bool:
        unfrozen = set(event.model.lineage())
        for f in self.of(ModelFreeze) + self.of(Refreeze):
            if event.partial and isinstance(f, ModelFreeze) and f.partial:
                continue
            related = f.model in unfrozen or event.model in set(f.model.lineage())
            if related and (f.scope != event.scope or f.seq < event.seq):
                return True
        return False

    def only_called_with_training_false(self, model) -> bool:
        uses = [e for e in self.events if e.model is model and isinstance(e, (ModelCall, Placement, GraphReuse))]
        return bool(uses) and all(isinstance(e, ModelCall) and e.training == "false" for e in uses)

    def refrozen_after(self, event) -> bool:
        for r in self.of(Refreeze):
            if r.seq <= event.seq:
                continue
            covered = r.model is event.model or (r.recursive and event.model in set(r.model.lineage()))
            if covered and (r.scope != event.scope or r.seq > event.seq):
                return True
        return False


# -- small helpers -------------------------------------------------------------------------


def _sliced(node) -> bool:
    """``m.layers[:100]`` (also inside ``enumerate(...)``): a slice of the layers, not all of them."""
    while isinstance(node, cst.Call) and node.args:
        node = node.args[0].value
    return isinstance(node, cst.Subscript) and any(isinstance(e.slice, cst.Slice) for e in node.slice)








def _only_continue(block) -> bool:
    statements = list(block.body) if isinstance(block, (cst.IndentedBlock, cst.SimpleStatementSuite)) else []
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
