"""The flow-sensitive walk over one file: which values are models with BatchNorm, and what the
program does to them, in order.

One walk follows module values (PyTorch: torchvision and ``torch.hub`` constructors, ``nn.*``
layers and containers, ``nn.Module`` subclasses and their ``self.`` attributes; Keras: layers,
``Sequential`` and ``add``, functional ``Model``, ``Model`` subclasses, applications, KerasHub
presets; and models defined in other modules of the project, from ``lint.flow.project``), the
*modes* each may be in (``lint.flow.values.Mode``: PyTorch builds modules in training mode;
``.train()``/``.eval()`` change it for the module and everything inside it), tensors (real
batches or made up with ``torch.randn``), loaders and constants, and records events
(``lint.flow.events``): parameters frozen, ``requires_grad`` set as a plain attribute, mode
methods overwritten, mode changes, forward calls with their context (training step, inference)
and data, an ``.eval()`` left in place for the next epoch, loaders feeding a training step.

How it flows: branches are walked from the same state and joined (modes united, constants kept
only where both agree); a condition that folds to a constant (``lint.flow.constants``) walks only
the branch that runs; a loop over a literal list is walked once per element with the element as
a constant; any other loop's body is walked, then walked again from the state it ends in (the
modes' fixed point: an ``.eval()`` at the end of an epoch meets the next epoch's training). The
innermost loop that calls ``.backward()`` or applies gradients is the training step.

Calls: helper functions and methods of the file are walked *at their call sites* with the
caller's values (inlined, to a depth and a budget); functions of other modules act through their
summaries (``engine.train(model)`` trains its parameter). A function never called in the file is
walked once with unknown parameters. Anything whose origin lies outside the project
(``torch.load``, an unknown attribute) has an unknown mode and unknown BatchNorm: the rules stay
silent on it. Framework knowledge comes from ``lint.frameworks``.
"""

from __future__ import annotations

import itertools
from functools import cached_property

import libcst as cst

from lint.flow.constants import NOT_CONSTANT, fold, literal, truth
from lint.flow.events import (
    AttributeFreeze,
    Event,
    EvalCarriedOver,
    Forward,
    Freeze,
    LoaderFeeds,
    ModeOverwrite,
    ModeSet,
)
from lint.flow.keras_models import KerasModels, KerasModelWalk
from lint.flow.layers import KerasLayerWalk
from lint.flow.layers import training_arg as _training_arg
from lint.flow.values import (
    EVAL,
    TRAIN,
    UNKNOWN_MODE,
    Const,
    Constructor,
    Function,
    LayerOutput,
    Loader,
    Many,
    Mode,
    ModuleValue,
    Tensor,
    join_layers,
    join_states,
)
from lint.frameworks import keras as kk
from lint.frameworks import torch as pt
from lint.names import ImportMap, dotted
from lint.nodes import children, names, walk

_MAX_INLINE = 4  # helpers within helpers followed this deep
_INLINE_BUDGET = 500  # helper walks per file: call sites fan out, the walk must not
EITHER = "train|eval"
_LITERAL_NAMES = {"True": True, "False": False, "None": None}
_TENSOR_TO_PYTHON = frozenset({"item", "size", "tolist", "numpy", "dim", "numel", "sum", "mean", "max", "min"})
_ASSIGNMENTS = frozenset({cst.Assign, cst.AnnAssign, cst.AugAssign})
_UNROLL = 8  # ``for phase in ["train", "val"]``: lists of constants this long are walked element by element


# -- the walk ---------------------------------------------------------------------------------


_IDENTS = itertools.count(1)


class _Frame:
    def __init__(self, parent: "_Frame | None", self_obj: ModuleValue | None = None) -> None:
        self.parent = parent
        self.vars: dict[str, object] = {}
        self.self_obj = self_obj
        self.returns: list[object] = []
        # the Keras-model part (``lint.flow.keras_models``): model values by dotted path, returned, called
        self.kvars: dict[str, object] = {}
        self.kreturns: list[object] = []
        self.kcalled: list[object] = []
        self.ksaw_bn = False
        self.ident = next(_IDENTS)

    def lookup(self, name: str):
        frame: _Frame | None = self
        while frame is not None:
            if name in frame.vars:
                return frame.vars[name]
            frame = frame.parent
        return None


class Flow(KerasLayerWalk, KerasModelWalk):
    """The module values and events of one file. Build once per file; rules query it."""

    def __init__(self, module: cst.Module, imports: ImportMap, path: str = "", project: dict | None = None,
                 extra_models: tuple[str, ...] = (), unfrozen_elsewhere=None, keras_models: bool = True) -> None:
        self.imports = imports
        #: names of this module that other modules of the project unfreeze (``Project.unfrozen_elsewhere``)
        self.unfrozen_elsewhere = unfrozen_elsewhere
        self.extra_models = tuple(extra_models)  # ``extra-batchnorm-models``: factories the user says build BatchNorm
        self.project = project or {}  # dotted name -> lint.flow.project.Definition of another module
        self.events: list[Event] = []
        self.loaders: list[Loader] = []
        self.uses_frozen_bn = False  # FrozenBatchNorm2d anywhere: BatchNorm may be frozen by replacement
        self._pytest_file = pt.is_test_file(path)
        self._seq = 0
        self._values: dict[int, ModuleValue] = {}
        self._objects: dict[int, ModuleValue] = {}
        self._state: dict[object, Mode] = {}
        self._context: list[tuple[str, str]] = []  # innermost last: ("training"|"inference", reason)
        self._stack: list[cst.FunctionDef] = []
        self._via: list[cst.CSTNode] = []
        self._walked: set[int] = set()
        self._budget = _INLINE_BUDGET
        self._guard_depth = 0  # inside ``if isinstance(m, nn.BatchNorm2d)``-like tests
        self._mute = 0  # second pass over a loop body: collect, do not record
        self._muted: list[Event] = []
        self._backward: dict[int, bool] = {}
        self._functions: dict[str, cst.FunctionDef] = {}
        self._classes: dict[str, cst.ClassDef] = {}
        self._module = module
        self._imported: dict[str, ModuleValue | None] = {}  # module-level models of other modules, by name
        self._imported_classes: dict[int, object] = {}  # id(instance) -> the Definition of its class in another module
        self._conditions: list[tuple[cst.BaseExpression, bool]] = []  # the ``if`` tests around the walk, innermost last
        self._scopes: dict[int, tuple[bool, bool]] = {}
        self._loop_steps: list[bool] = []  # per enclosing loop: it calls ``.backward()`` outside its inner loops
        self._class_defs: dict[str, list[cst.ClassDef]] = {}  # every definition of a name, in order (notebooks redefine)
        self._function_defs: dict[str, list[cst.FunctionDef]] = {}
        self._nested: list[cst.FunctionDef] = []  # functions defined inside functions, as the walk meets them
        self._init_layers()
        self._collect(module)
        self._init_models(keras_models)
        self._module_classes = self._find_module_classes()
        self._bn_classes = self._find_bn_classes()
        # By definition, not by name: a notebook's second ``class Net`` may add the BatchNorm its first lacked.
        self._bn_class_ids = {id(c) for name, defs in self._class_defs.items() if name in self._module_classes
                              for c in defs if self._builds_bn(c, self._bn_classes)}
        top = _Frame(None)
        self._top = top
        self._block(module.body, top, bn_guard=False)
        # functions nobody calls first: a helper they call is then walked at its call site (in the
        # caller's training step), not alone with unknown parameters
        functions = (f for defs in self._function_defs.values() for f in defs)
        for fn in sorted(functions, key=lambda f: f.name.value in self._called_names):
            if id(fn) not in self._walked:
                self._run_function(fn, None, {}, top, None)
        for cls in (c for defs in self._class_defs.values() for c in defs):
            self._walk_class_alone(cls, top)
        # nested functions (a block builder's ``def apply(x):`` closure) nobody called where the walk could
        # follow: once, with unknown parameters and free variables; ones they define join the list
        for fn in self._nested:
            if id(fn) not in self._walked and self._budget > 0:
                self._budget -= 1
                self._run_function(fn, None, {}, top, None)

    # -- queries ---------------------------------------------------------------------------

    def of(self, kind: type[Event]) -> list:
        """Events of one kind, once per source node (a helper walked at two call sites reports once)."""
        seen: set[int] = set()
        found = []
        for e in self.events:
            if type(e) is kind and id(e.node) not in seen:
                seen.add(id(e.node))
                found.append(e)
        return found

    def all_of(self, kind: type[Event]) -> list:
        """Every event of one kind, one per walk (the same node may come up from several call sites)."""
        return [e for e in self.events if type(e) is kind]

    @cached_property
    def keras_models(self) -> KerasModels:
        """The Keras-model facts (BN001-BN003): queries over the model events of this walk."""
        return KerasModels(self, self.unfrozen_elsewhere)

    def module_at(self, node: cst.CSTNode) -> ModuleValue | None:
        """The module a name or attribute denoted where it stands (``model`` in ``model.train()``)."""
        return self._values.get(id(node))

    def mode_in(self, module: ModuleValue, state: dict) -> Mode:
        """A module's modes in a recorded state (``Forward.state``): its own, else its nearest container's."""
        return _mode(module, state)

    def bn_kept_in_eval(self, module: ModuleValue, state: dict) -> bool:
        """Its BatchNorm modules are in eval mode in that state (``.eval()`` on it, on them, or frozen stats)."""
        if _mode(module, state).must(EVAL):
            return True
        return any(("bn", id(a)) in state for a in module.ancestors())

    def exclusive(self, a: Event, b: Event) -> bool:
        """The two events sit under conditions that cannot both hold: ``if args.weights == "freeze":``
        around one, ``if args.weights == "finetune":`` (or the ``else`` of the same test) around the other."""
        return any(_excludes(x, y) for x in a.conditions for y in b.conditions)

    def setter_event(self, node: cst.CSTNode | None) -> "ModeSet | None":
        return next((e for e in self.events if isinstance(e, ModeSet) and e.node is node), None)

    def is_frozen(self, module: ModuleValue) -> bool:
        return any(e.module is module for e in self.all_of(Freeze))

    # -- definitions -------------------------------------------------------------------------

    def _collect(self, module: cst.Module) -> None:
        for stmt in module.body:
            self._collect_def(stmt)
        self._called_names: set[str] = set()  # ``helper(...)``: functions called somewhere in the file
        self._sets_trainable = False  # ``X.trainable = ...`` somewhere (``lint.flow.keras_models``)
        for node in walk(module):
            if isinstance(node, cst.Call) and isinstance(node.func, cst.Name):
                self._called_names.add(node.func.value)
            elif type(node) in _ASSIGNMENTS and not self._sets_trainable:
                targets = [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
                self._sets_trainable = any(isinstance(t, cst.Attribute) and t.attr.value == "trainable" for t in targets)
            elif isinstance(node, cst.Name) and node.value == "FrozenBatchNorm2d" or (
                isinstance(node, cst.SimpleString) and "FrozenBatchNorm" in node.value
            ):
                self.uses_frozen_bn = True

    def _collect_def(self, stmt: cst.CSTNode) -> None:
        if isinstance(stmt, cst.FunctionDef):
            self._functions.setdefault(stmt.name.value, stmt)
            self._function_defs.setdefault(stmt.name.value, []).append(stmt)
        elif isinstance(stmt, cst.ClassDef):
            self._classes.setdefault(stmt.name.value, stmt)
            self._class_defs.setdefault(stmt.name.value, []).append(stmt)
        elif isinstance(stmt, (cst.If, cst.Try)):
            for inner in _body(stmt.body):
                self._collect_def(inner)

    def _find_module_classes(self) -> set[str]:
        found: set[str] = set()
        changed = True
        while changed:
            changed = False
            for name, cls in self._classes.items():
                if name in found:
                    continue
                for base in cls.bases:
                    q = self.imports.qualname(base.value) or ""
                    last = q.rsplit(".", 1)[-1]
                    imported = self.project.get(dotted(base.value) or "")
                    if imported is not None and imported.framework == "torch" and imported.is_model:
                        found.add(name)
                        changed = True
                        break
                    if q.startswith(("torch.nn", "torchvision.models")) or last == "Module" or last in found or (
                        kk.is_model_base(q)
                    ):
                        found.add(name)
                        changed = True
                        break
        return found

    def _find_bn_classes(self) -> set[str]:
        found: set[str] = set()
        changed = True
        while changed:
            changed = False
            for name, cls in self._classes.items():
                if name not in found and name in self._module_classes and self._builds_bn(cls, found):
                    found.add(name)
                    changed = True
        return found

    def _builds_bn(self, node: cst.CSTNode, local: set[str], dropout: bool = False) -> bool:
        """Whether a class (or expression) builds BatchNorm (with ``dropout``, or Dropout), by the names in it."""
        for n in names(node):
            q = self.imports.qualname(n)
            if pt.is_torch_bn_class(q) or pt.is_torchvision_bn_model(q) or (isinstance(n, cst.Name) and n.value in local):
                return True
            if kk.builds_bn(q) or (dropout and kk.is_dropout(q)) or self._extra_model(q):
                return True
            imported = self.project.get(dotted(n) or "")
            if imported is not None and imported.is_model and (imported.has_bn or (dropout and imported.has_dropout)):
                return True
        return False

    def _class_framework(self, cls: cst.ClassDef) -> str:
        for base in cls.bases:
            q = self.imports.qualname(base.value) or ""
            imported = self.project.get(dotted(base.value) or "")
            if kk.is_model_base(q) or (imported is not None and imported.framework == "keras"):
                return "keras"
            if isinstance(base.value, cst.Name) and base.value.value in self._classes and base.value.value != cls.name.value:
                return self._class_framework(self._classes[base.value.value])
        return "torch"

    # -- recording ---------------------------------------------------------------------------

    def _record(self, kind: type[Event], module: ModuleValue, node: cst.CSTNode, **extra) -> Event:
        self._seq += 1
        event = kind(module=module, node=node, seq=self._seq, conditions=tuple(self._conditions), **extra)
        (self._muted if self._mute else self.events).append(event)
        return event

    def _new(self, obj: ModuleValue) -> ModuleValue:
        self._objects[id(obj)] = obj
        return obj

    def _set_mode(self, obj: ModuleValue, mode: str, node: cst.CSTNode) -> None:
        """``mode`` is "train", "eval", "train|eval" (an argument we cannot fold) or "bn-eval"."""
        if mode == "bn-eval":
            self._state[("bn", id(obj))] = Mode.of(EVAL, node)
        else:
            for key in list(self._state):
                target = self._objects.get(key[1] if isinstance(key, tuple) else key)
                if target is not None and target is not obj and target.within(obj):
                    del self._state[key]
            self._state.pop(("bn", id(obj)), None)
            self._state[id(obj)] = (
                Mode.of(TRAIN, node).join(Mode.of(EVAL, node)) if mode == EITHER else Mode.of(mode, node)
            )
        self._record(ModeSet, obj, node, mode=mode, chain=tuple(self._via))

    # -- statements --------------------------------------------------------------------------

    def _block(self, body, frame: _Frame, bn_guard: bool) -> None:
        for stmt in body:
            self._statement(stmt, frame, bn_guard)

    def _statement(self, stmt: cst.CSTNode, frame: _Frame, bn_guard: bool) -> None:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                self._small(small, frame, bn_guard)
                self._ksmall(small, stmt, frame)
        elif isinstance(stmt, cst.BaseSmallStatement):  # the body of ``for l in m.layers: l.trainable = False``
            self._ksmall(stmt, stmt, frame)
        elif isinstance(stmt, cst.If):
            self._eval(stmt.test, frame)
            kguards = self._kif_enter(stmt, frame)
            try:
                self._if(stmt, frame, bn_guard)
            finally:
                self._kguards = kguards
        elif isinstance(stmt, (cst.For, cst.While)):
            saved = self._kloop_enter(stmt, frame)
            try:
                self._loop(stmt, frame, bn_guard)
            finally:
                self._kloop, self._kguards = saved
        elif isinstance(stmt, cst.With):
            pushed = 0
            for item in stmt.items:
                reason = self._inference_context(item.item, frame)
                if reason:
                    # ``with torch.no_grad():`` inside a training step computes features for that step
                    # (a frozen front end): its forwards are part of training, not inference
                    training = self._context and self._context[-1][0] == "training" and (
                        not self._loop_steps or self._loop_steps[-1])
                    self._context.append(("training", reason) if training else ("inference", reason))
                    pushed += 1
                else:
                    self._eval(item.item, frame)
                self._kwith_item(item.item, frame)
            taped = self._enter_tape(stmt)
            self._block(_body(stmt.body), frame, bn_guard)
            self._tape_depth -= taped
            del self._context[len(self._context) - pushed :]
        elif isinstance(stmt, cst.Try):
            self._block(_body(stmt.body), frame, bn_guard)
            saved = dict(self._state)
            for handler in stmt.handlers:
                self._block(_body(handler.body), frame, bn_guard)
            self._state = saved
            for extra in (stmt.orelse, stmt.finalbody):
                if extra is not None:
                    self._block(_body(extra.body), frame, bn_guard)
        elif isinstance(stmt, cst.FunctionDef):
            if frame is not self._top:
                frame.vars[stmt.name.value] = Function(stmt)
                self._nested.append(stmt)
            else:  # from here on the name means this definition (a later notebook cell redefines it)
                self._functions[stmt.name.value] = stmt
        elif isinstance(stmt, cst.ClassDef) and frame is self._top:
            self._classes[stmt.name.value] = stmt

    def _if(self, stmt: cst.If, frame: _Frame, bn_guard: bool) -> None:
        certain = self._truth(stmt.test, frame)
        if certain is not None:  # ``if False:``, ``if phase == "train":`` in the "val" iteration: one branch runs
            if certain:
                self._block(_body(stmt.body), frame, bn_guard)
            else:
                self._orelse(stmt, frame, bn_guard)
            return
        guard = bool(pt.BN_TEST.search(_code(stmt.test)))
        before, vars_before = dict(self._state), dict(frame.vars)
        kbefore = self._ksnapshot(frame)
        self._guard_depth += guard
        self._conditions.append((stmt.test, True))
        self._block(_body(stmt.body), frame, bn_guard or guard)
        self._conditions.pop()
        self._guard_depth -= guard
        after_if, vars_after_if = self._state, dict(frame.vars)
        kafter = self._ksnapshot(frame)
        if guard:  # ``if isinstance(m, nn.BatchNorm2d): m.eval()`` acts on the BatchNorm modules only
            return
        self._state = before
        frame.vars = dict(vars_before)
        self._krestore(frame, kbefore)
        self._conditions.append((stmt.test, False))
        self._orelse(stmt, frame, bn_guard)
        self._conditions.pop()
        self._state = join_states(after_if, self._state)
        frame.vars = _join_vars(vars_after_if, frame.vars)
        self._kjoin(frame, kafter)

    def _orelse(self, stmt: cst.If, frame: _Frame, bn_guard: bool) -> None:
        if stmt.orelse is None:
            return
        if isinstance(stmt.orelse, cst.If):
            self._statement(stmt.orelse, frame, bn_guard)
        else:
            self._block(_body(stmt.orelse.body), frame, bn_guard)

    def _truth(self, test, frame: _Frame) -> bool | None:
        return truth(test, lambda name: frame.lookup(name))

    def _small(self, small, frame: _Frame, bn_guard: bool) -> None:
        if isinstance(small, (cst.Assign, cst.AnnAssign)):
            if small.value is None:
                return
            targets = [t.target for t in small.targets] if isinstance(small, cst.Assign) else [small.target]
            value = self._eval(small.value, frame)
            if value is None and isinstance(small.value, (cst.Name, cst.Attribute)):
                value = self._constructor_alias(small.value)
            for target in targets:
                self._assign(target, small, value, frame, bn_guard)
        elif isinstance(small, cst.AugAssign):
            self._eval(small.value, frame)
            if isinstance(small.target, cst.Name) and isinstance(frame.lookup(small.target.value), Const):
                frame.vars[small.target.value] = None  # ``step += 1``: no longer the constant it was
        elif isinstance(small, cst.Expr):
            self._eval(small.value, frame)
        elif isinstance(small, cst.Return):
            if small.value is not None:
                frame.returns.append(self._eval(small.value, frame))
        else:  # assert, raise, del, ...: calls inside them still run
            self._visit(small, frame)

    def _assign(self, target, stmt, value, frame: _Frame, bn_guard: bool) -> None:
        if isinstance(target, cst.Attribute):
            owner = self._eval(target.value, frame, record=False)
            attr = target.attr.value
            literal = _bool(stmt.value)
            if attr == "requires_grad" and literal == "False":
                if isinstance(owner, Many) and owner.what == "params" and not self._guard_depth:
                    self._record(Freeze, owner.owner, stmt, name=owner.name)
                elif isinstance(owner, Many) and owner.what == "modules":
                    self._record(AttributeFreeze, owner.owner, stmt, target=target)
                elif isinstance(owner, ModuleValue) and owner.is_module:
                    self._record(AttributeFreeze, owner, stmt, target=target)
                return
            if attr == "trainable" and literal == "False" and isinstance(owner, ModuleValue) and owner.framework == "keras":
                owner.frozen = True
                return
            if attr in ("train", "eval") and literal is not None:
                module = owner.owner if isinstance(owner, Many) and owner.what == "modules" else owner
                if isinstance(module, ModuleValue) and module.is_module:
                    self._record(ModeOverwrite, module, stmt, attr=attr)
                return
            if attr in ("track_running_stats", "momentum") and isinstance(owner, Many) and owner.what == "modules":
                if attr == "momentum" and _code(stmt.value) not in ("0", "0.0", "0."):
                    return
                self._set_mode(owner.owner, "bn-eval", stmt)
                return
            if isinstance(owner, ModuleValue):
                if isinstance(value, ModuleValue):
                    owner.attrs[attr] = value
                    # a value built right here (``self.backbone = resnet50().features``) now lives in ``owner``
                    fresh = value.parent is None or dotted(stmt.value) is None
                    if fresh and value is not owner and not owner.within(value):
                        value.parent, value.attr = owner, attr
                else:
                    owner.attrs.pop(attr, None)
                return
        if isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name):
            if isinstance(frame.lookup(target.value.value), Const):  # ``kwargs["batch_size"] = 64``
                frame.vars[target.value.value] = None
        self._bind(target, value, frame)

    def _bind(self, target, value, frame: _Frame) -> None:
        if isinstance(target, cst.Name):
            frame.vars[target.value] = value
            if isinstance(value, Loader) and value.name is None:
                value.name = target.value
        elif isinstance(target, (cst.Tuple, cst.List)):
            # ``model, transforms = create_model()``: a tuple of values unpacks element by element
            parts = value if isinstance(value, tuple) and len(value) == len(target.elements) else None
            for i, element in enumerate(target.elements):
                self._bind(element.value, parts[i] if parts is not None else None, frame)

    def _loop(self, stmt, frame: _Frame, bn_guard: bool) -> None:
        # A name the body assigns holds another value from the second iteration on: not a constant
        # in the loop (the fixed point of constant propagation, reached in one widening step).
        for name in _assigned_names(stmt.body):
            if isinstance(frame.lookup(name), Const):
                frame.vars[name] = None
        elements = None
        if isinstance(stmt, cst.For):
            items = self._eval(stmt.iter, frame)
            elements = self._constant_elements(stmt.iter, frame)
            if elements is None:
                self._bind_loop_var(stmt.target, items, frame)
        else:
            self._eval(stmt.test, frame)
            if self._truth(stmt.test, frame) is False:  # ``while False:`` never runs
                return
        if elements is not None:
            # ``for phase in ["train", "val"]``: each iteration walked with its own constant, so
            # ``if phase == "train": model.train() else: model.eval()`` is one branch per iteration.
            for element in elements:
                self._bind(stmt.target, Const(element), frame)
                self._iteration(stmt, frame, bn_guard)
            self._bind(stmt.target, None, frame)
        else:  # one iteration, then the next one from the state the first ends in (the fixed point for modes)
            first = self._iteration(stmt, frame, bn_guard)
            evals = {id(e.node): e for e in first if isinstance(e, ModeSet) and e.mode == EVAL}
            if evals and any(isinstance(e, Forward) and e.context == "training" for e in first):
                self._next_iteration(stmt, frame, bn_guard, evals)
        if getattr(stmt, "orelse", None) is not None:
            self._block(_body(stmt.orelse.body), frame, bn_guard)

    def _iteration(self, stmt, frame: _Frame, bn_guard: bool) -> list:
        """Walk the loop body once, as a training step if it calls ``.backward()`` on a path that runs."""
        trains = self._calls_backward(stmt.body, frame)
        # An epoch loop whose ``.backward()`` sits only in an inner loop is not itself a step: a no_grad
        # block beside the inner loop evaluates (``with torch.set_grad_enabled(False): acc = accuracy(model)``).
        self._loop_steps.append(trains and _backward_outside_loops(stmt.body))
        # The innermost loop decides: the evaluation pass inside an epoch loop (no ``.backward()`` in it)
        # is not a training step because the epoch loop trains elsewhere in its body.
        inner = ("training", "") if trains else ("other", "") if self._context and self._context[-1][0] == "training" else None
        if not trains and isinstance(stmt, cst.For) and pt.EVALUATION_LOADER.search(_code(stmt.iter)):
            # ``for x, y in test_loader:`` that never calls backward(): an evaluation pass, even without no_grad
            inner = ("inference", f"an evaluation loop over `{_code(stmt.iter)}` (no .backward())")
        if inner:
            self._context.append(inner)
        start = len(self.events)
        self._block(_body(stmt.body), frame, bn_guard)
        if inner:
            self._context.pop()
        self._loop_steps.pop()
        return self.events[start:] if not self._mute else []

    def _constant_elements(self, node, frame: _Frame) -> list | None:
        value = fold(node, lambda name: frame.lookup(name))
        if isinstance(value, (list, tuple)) and 0 < len(value) <= _UNROLL:
            return list(value)
        return None

    def _next_iteration(self, stmt, frame: _Frame, bn_guard: bool, evals: dict[int, ModeSet]) -> None:
        """Walk a training loop's body again from the state its first iteration ends in: a training
        forward under an ``.eval()`` of this body means the next epoch trains in eval mode."""
        saved_state, saved_seq = dict(self._state), self._seq
        self._mute += 1
        start = len(self._muted)
        try:
            self._iteration(stmt, frame, bn_guard)
        finally:
            self._mute -= 1
            second = self._muted[start:]
            del self._muted[start:]
            self._state, self._seq = saved_state, saved_seq
        again: set[int] = set()  # the mode changes this second pass has made by now
        for e in second:
            if isinstance(e, ModeSet):
                again.add(id(e.node))
                continue
            eval_node = e.mode_node(EVAL) if isinstance(e, Forward) else None
            if id(eval_node) in again:  # the eval() of this iteration (an evaluation after it), not the last one's
                continue
            if isinstance(e, Forward) and e.context == "training" and id(eval_node) in evals:
                # reported where the loop body puts the model in eval mode: the ``.eval()`` itself or the
                # helper call that does it (``validate(model)``)
                inside = {id(n) for n in walk(stmt.body)}
                chain = evals[id(eval_node)].chain
                where = next((c for c in chain if id(c) in inside), eval_node)
                if not any(isinstance(x, EvalCarriedOver) and x.node is where for x in self.events):
                    self._record(EvalCarriedOver, e.module, where, forward=e.node, loop=stmt, eval_call=eval_node)

    def _bind_loop_var(self, target, items, frame: _Frame) -> None:
        if isinstance(items, Loader):  # ``for x, y in loader``, ``for i, (x, y) in enumerate(loader)``: batches of it
            items.iterated = True
            batch = Tensor("data", items)
            for n in walk(target):
                if isinstance(n, cst.Name):
                    frame.vars[n.value] = batch
            return
        if isinstance(items, Many):
            # ``for p in m.parameters()``, ``for name, p in m.named_parameters()``, ``for i, m in enumerate(...)``
            if isinstance(target, (cst.Tuple, cst.List)) and target.elements:
                self._bind(target, None, frame)
                self._bind(target.elements[-1].value, items, frame)
            else:
                self._bind(target, items, frame)
        else:
            self._bind(target, None, frame)

    # -- expressions -------------------------------------------------------------------------

    def _eval(self, node, frame: _Frame, record: bool = True):
        """The value an expression denotes (a module, its parameters or sub-modules), recording its events."""
        if isinstance(node, cst.Name):
            if node.value in _LITERAL_NAMES:
                return Const(_LITERAL_NAMES[node.value])
            value = frame.lookup(node.value)
            if value is None and node.value in self.project:
                value = self._imported_variable(node, node.value)
            if isinstance(value, ModuleValue):
                self._values.setdefault(id(node), value)
            return value
        if isinstance(node, cst.Attribute):
            owner = self._eval(node.value, frame, record)
            value = self._attribute(owner, node.attr.value) if isinstance(owner, ModuleValue) else None
            if owner is None and self.project:
                name = dotted(node)
                value = self._imported_variable(node, name) if name in self.project else None
            if isinstance(value, ModuleValue):
                self._values.setdefault(id(node), value)
            return value
        if isinstance(node, cst.Call):
            return self._call(node, frame, record)
        if isinstance(node, cst.Subscript):
            owner = self._eval(node.value, frame, record)
            if record:
                for element in node.slice:
                    self._visit(element, frame)
            if isinstance(owner, Many):
                return owner
            if isinstance(owner, ModuleValue) and owner.is_module:  # ``model.layer4[0]``, ``features[:10]``
                return self._part(owner, "[]")
            return None
        if isinstance(node, (cst.Await, cst.Lambda)):
            return None
        if isinstance(node, cst.IfExp) and record:
            return self._if_expression(node, frame)
        if isinstance(node, cst.Tuple) and record and all(isinstance(e, cst.Element) for e in node.elements):
            values = tuple(self._eval(e.value, frame) for e in node.elements)
            if any(isinstance(v, ModuleValue) for v in values):
                return values  # ``return model, transforms``
            value = fold(node, lambda name: frame.lookup(name))
            return None if value is NOT_CONSTANT else Const(value)
        if record:
            self._visit(node, frame)
        if isinstance(node, (cst.Integer, cst.Float, cst.SimpleString, cst.UnaryOperation, cst.Dict, cst.List,
                             cst.Tuple, cst.Comparison, cst.BooleanOperation, cst.BinaryOperation)):
            value = fold(node, lambda name: frame.lookup(name))
            return None if value is NOT_CONSTANT else Const(value)
        return None

    def _if_expression(self, node: cst.IfExp, frame: _Frame):
        """``net.train() if is_train else net.eval()``: each side on its own path, joined after."""
        self._eval(node.test, frame)
        certain = self._truth(node.test, frame)
        if certain is not None:
            return self._eval(node.body if certain else node.orelse, frame)
        before = dict(self._state)
        body = self._eval(node.body, frame)
        after_body, self._state = self._state, before
        orelse = self._eval(node.orelse, frame)
        self._state = join_states(after_body, self._state)
        return body if body is orelse else None

    def _visit(self, node: cst.CSTNode, frame: _Frame) -> None:
        for child in children(node):
            if isinstance(child, cst.BaseExpression):
                self._eval(child, frame)
            else:
                self._visit(child, frame)

    def _attribute(self, owner: ModuleValue, attr: str):
        if attr in owner.attrs:
            return owner.attrs[attr]
        if attr == "module" and owner.is_module:  # DataParallel/DDP's wrapped module: same object here
            return owner
        if attr in pt.TENSOR_ATTRS or not owner.is_module or attr.startswith("__") or owner.framework != "torch":
            return None
        return self._part(owner, attr)

    def _part(self, owner: ModuleValue, attr: str) -> ModuleValue:
        """A sub-module by attribute: a torchvision model's ``layer4``/``features`` carries BatchNorm, its head does not."""
        key = f"<{attr}>"
        if key not in owner.attrs:
            if owner.kind == "constructed" and owner.has_bn and owner.cls is None:
                has_bn, is_module = attr not in pt.HEAD_ATTRS, True
            else:
                has_bn, is_module = None, False
            owner.attrs[key] = self._new(ModuleValue(label=f"{owner.label}.{attr}", has_bn=has_bn, is_module=is_module,
                                                     kind="part", parent=owner, attr=attr))
        return owner.attrs[key]

    def _call(self, node: cst.Call, frame: _Frame, record: bool):
        func = node.func
        if isinstance(func, cst.Name):
            callee = frame.lookup(func.value)
            if isinstance(callee, ModuleValue):
                self._values.setdefault(id(func), callee)
        else:
            callee = self._eval(func.value if isinstance(func, cst.Attribute) else func, frame, record)
        args = [self._eval(a.value, frame, record) for a in node.args]  # once: they may build modules
        if record:
            batches = self._keras_call(node, callee, args, frame)  # lint.flow.layers
            if batches is not None:
                return batches
        if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and isinstance(callee, Const):
            frame.vars[func.value.value] = None  # ``kwargs.update(...)``: a method may change the constant

        if isinstance(func, cst.Attribute):
            method = func.attr.value
            if isinstance(callee, ModuleValue):
                sub = callee.attrs.get(method)
                if sub is None and callee.is_module and callee.cls is None and method not in pt.MODULE_METHODS and (
                    callee.framework == "torch"
                ):
                    sub = self._attribute(callee, method)  # ``model.features(x)`` of a torchvision model
                if isinstance(sub, ModuleValue):
                    self._values.setdefault(id(func), sub)
                    if sub.is_module and record:
                        self._forward(sub, node, args)
                        return self._layer_output(sub, node, args)
                    return None
                if callee.is_module and method in ("parameters", "named_parameters"):
                    return Many(callee, "params", _code(func.value))
                if callee.is_module and method in ("modules", "named_modules", "children", "named_children"):
                    return Many(callee, "modules", _code(func.value))
                if not record:
                    return callee if callee.is_module and method in pt.SELF_RETURNING else None
                result = self._method(callee, method, node, args)
                if result is not _NOTHING:
                    return result
            elif isinstance(callee, Many):
                return self._many_method(callee, method, node) if record else None
            elif isinstance(callee, Tensor) and method not in _TENSOR_TO_PYTHON:
                return callee  # ``images.to(device)``, ``x.float().cuda()``: the same batch
            elif callee is None and method in ("modules", "named_modules") and self.imports.imports_from("torch"):
                # ``m.modules()`` of a value whose origin is elsewhere: still a module's sub-modules
                return Many(self._new(ModuleValue(label=_code(func.value), has_bn=None, kind="parameter")), "modules")
        elif isinstance(callee, ModuleValue):
            if callee.is_module and record:
                self._forward(callee, node, args)
                return self._layer_output(callee, node, args)
            return None
        elif isinstance(callee, Function):
            return self._inline(callee.node, callee.cls, None, node, args) if record else None
        elif isinstance(callee, Constructor):  # ``Base = inception_v3.InceptionV3; base = Base(...)``
            return self._constructor(node, callee.qualname, args, frame)
        elif isinstance(func, cst.Name) and callee is None:
            name = func.value
            if name in ("list", "tuple", "enumerate", "reversed", "iter", "sorted", "filter", "tqdm", "zip"):
                return next((a for a in args if isinstance(a, (Many, Loader))), None)
            if name == "dict" and all(a.keyword is not None for a in node.args):
                return Const({a.keyword.value: v.value if isinstance(v, Const) else NOT_CONSTANT
                              for a, v in zip(node.args, args)})
            if name in self._classes and record:
                return self._instantiate(self._classes[name], node, args)
            if name in self._functions and name not in self.imports.aliases:
                return self._inline(self._functions[name], None, None, node, args) if record else None
        if isinstance(func, cst.Attribute) and func.attr.value in ("tqdm", "enumerate"):
            loader = next((a for a in args if isinstance(a, Loader)), None)
            if loader is not None:
                return loader
        imported = self.project.get(dotted(func) or "") if callee is None or isinstance(func, cst.Attribute) else None
        if imported is not None and imported.trains and record:
            self._trained_elsewhere(node, args, imported)
        if imported is not None and imported.framework and imported.is_model:
            # defined in another module of the project: what its summary says it builds
            value = self._new(ModuleValue(label=f"{dotted(func)}()", has_bn=imported.has_bn, origin=node,
                                          kind="constructed" if imported.kind == "function" else "instance",
                                          framework=imported.framework, has_dropout=imported.has_dropout,
                                          defined_at=imported.where))
            if imported.part_freezes:
                self._imported_classes[id(value)] = imported
                if record:
                    self._part_freezes(value, imported, "__init__", node)
            return value
        qualname = self.imports.qualname(func) if isinstance(func, (cst.Name, cst.Attribute)) else None
        return self._constructor(node, qualname, args, frame)

    def _constructor(self, node: cst.Call, qualname: str | None, args: list, frame: _Frame):
        if not qualname:
            return None
        last = qualname.rsplit(".", 1)[-1]
        if self._extra_model(qualname):
            return self._new(ModuleValue(f"{last}()", True, origin=node,
                                         framework="torch" if self.imports.imports_from("torch") else "keras"))
        if pt.is_random_tensor(qualname):
            return Tensor("random")
        if pt.is_data_loader(qualname):
            return self._loader(node, args, frame)
        if kk.keras_name(qualname) or qualname.startswith(("keras_hub.", "keras_nlp.")) or self._star_layer(qualname):
            return self._layer_value(self._keras_model(node, qualname, args, frame), node, qualname)
        if last in pt.WRAPPERS and args:  # nn.DataParallel(model), torch.compile(model): the same module here
            return args[0] if isinstance(args[0], ModuleValue) else None
        if pt.is_torchvision_bn_model(qualname):
            has_bn = not any(
                a.keyword is not None and a.keyword.value == "norm_layer" and "Frozen" in _code(a.value) for a in node.args
            )
            return self._new(ModuleValue(label=f"{last}()", has_bn=has_bn, origin=node, pretrained=pt.loads_weights(node)))
        if qualname.startswith("torchvision.models.") and last[:1].islower() and last not in ("get_weight", "get_model"):
            return self._new(ModuleValue(label=f"{last}()", has_bn=False, origin=node))
        if qualname in ("torch.hub.load", "timm.create_model", "torchvision.models.get_model"):
            names = [a.value for a in node.args if isinstance(a.value, cst.SimpleString)]
            if qualname == "torch.hub.load":
                names = names[1:2]
            has_bn = True if any(pt.HUB_BN_NAME.search(_code(n)) for n in names) else None
            return self._new(ModuleValue(label=f"{last}()", has_bn=has_bn, origin=node))
        if qualname.startswith("torch.nn.") and last[:1].isupper() and last not in pt.NOT_MODULES and "." not in qualname[9:]:
            has_bn = pt.is_torch_bn_class(qualname)
            container = self._new(ModuleValue(label=f"nn.{last}(...)", has_bn=has_bn, origin=node))
            if last in ("Sequential", "ModuleList", "ModuleDict"):
                container.has_bn = self._container_bn(node, args)
                # ``nn.Sequential(*list(resnet50(weights=...).children())[:-1])``: the pretrained layers
                container.pretrained = any(
                    (v.owner if isinstance(v, Many) else v).pretrained for v in args if isinstance(v, (Many, ModuleValue)))
                for i, value in enumerate(args):  # ``nn.Sequential(encoder, head)``: encoder now lives inside
                    if isinstance(value, ModuleValue) and value.parent is None and value.is_module:
                        value.parent, value.attr = container, str(i)
                        container.attrs[str(i)] = value
            return container
        return None

    def _constructor_alias(self, node) -> Constructor | None:
        """``Base = inception_v3.InceptionV3``, ``BatchNormalization = tf.keras.layers.BatchNormalization``."""
        q = self.imports.qualname(node)
        if q and "." in q and (kk.keras_name(q) or pt.is_torchvision_bn_model(q) or pt.is_torch_bn_class(q)):
            return Constructor(q)
        return None

    def _keras_model(self, node: cst.Call, qualname: str, args: list, frame: _Frame):
        """A Keras layer or model: BatchNormalization, Dropout, an application, a ``Sequential`` of
        them, a functional ``Model`` built where BatchNormalization is, a KerasHub preset."""
        last = qualname.rsplit(".", 1)[-1]
        label = f"{last}(...)"
        if kk.builds_bn(qualname):
            weights = next((a.value for a in node.args if a.keyword is not None and a.keyword.value == "weights"), None)
            pretrained = not (isinstance(weights, cst.Name) and weights.value == "None")
            return self._new(ModuleValue(label, True, origin=node, framework="keras", pretrained=pretrained))
        if kk.is_dropout(qualname):
            return self._new(ModuleValue(label, False, origin=node, framework="keras", has_dropout=True))
        if last == "from_preset":
            preset = next((fold(a.value, frame.lookup) for a in node.args), NOT_CONSTANT)
            has_bn = True if isinstance(preset, str) and kk.is_keras_hub_bn_preset(preset) else None
            return self._new(ModuleValue(label, has_bn, origin=node, framework="keras"))
        if last == "Sequential":
            elements = self._elements(node, frame)
            inside = [v for v in elements if isinstance(v, ModuleValue)]
            model = self._new(ModuleValue(label, any(v.contains_bn() for v in inside) or None, origin=node,
                                          framework="keras", has_dropout=any(v.has_dropout for v in inside)))
            self._layer_sequence(model, elements, node)
            return model
        if last in ("Model", "Functional"):
            # the graph's layers were built in the enclosing function (or the module): BatchNorm if they are
            scope = self._stack[-1] if self._stack else self._module
            has_bn, has_dropout = self._scope_builds(scope)
            return self._new(ModuleValue(label, True if has_bn else None, origin=node, framework="keras",
                                         has_dropout=has_dropout))
        return None

    def _scope_builds(self, scope: cst.CSTNode) -> tuple[bool, bool]:
        """(BatchNormalization, Dropout) built in a function or the module: once per scope."""
        key = id(scope)
        if key not in self._scopes:
            self._scopes[key] = (self._builds_bn(scope, set()), self._builds_bn(scope, set(), dropout=True))
        return self._scopes[key]

    def _elements(self, node: cst.Call, frame: _Frame) -> list:
        """The values in a ``Sequential([...])``'s list (``None`` for what the walk cannot tell)."""
        first = node.args[0].value if node.args else None
        if not isinstance(first, (cst.List, cst.Tuple)):
            return []
        return [self._eval(e.value, frame, record=False) for e in first.elements if isinstance(e, cst.Element)]

    def _container_bn(self, node: cst.Call, args: list) -> bool | None:
        """``nn.Sequential(nn.Conv2d(..), nn.BatchNorm2d(..))``, ``nn.Sequential(*list(resnet.children())[:-1])``."""
        unknown = False
        for value in args:
            value = value.owner if isinstance(value, Many) else value
            if isinstance(value, ModuleValue):
                bn = value.contains_bn()
                if bn:
                    return True
                unknown = unknown or bn is None
        for arg in node.args:
            for n in walk(arg.value):
                if isinstance(n, cst.Call) and isinstance(n.func, (cst.Name, cst.Attribute)) and (
                    pt.is_torch_bn_class(self.imports.qualname(n.func)) or dotted(n.func) in self._bn_classes
                ):
                    return True
        return None if unknown else False

    def _instantiate(self, cls: cst.ClassDef, node: cst.Call, args: list) -> ModuleValue:
        obj = self._class_value(cls, f"{cls.name.value}()", "instance", node)
        init = _method(cls, "__init__")
        if init is not None:
            self._inline(init, cls, obj, node, args)
            self._no_grad_parts(cls, obj)
        return obj

    def _no_grad_parts(self, cls: cst.ClassDef, obj: ModuleValue) -> None:
        """``with torch.no_grad(): feats = self.cnn(x)`` in ``forward``, ``self.cnn`` pretrained: a part frozen
        in effect (no gradients reach it), whose BatchNorm layers still update wherever the model trains."""
        forward = _method(cls, "forward")
        if forward is None or obj.framework != "torch":
            return
        for stmt in walk(forward.body):
            if not (isinstance(stmt, cst.With) and any(self._inference_context(i.item) in _NO_GRAD for i in stmt.items)):
                continue
            for call in walk(stmt.body):
                if isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute) and _code(call.func.value) == "self":
                    part = obj.attrs.get(call.func.attr.value)
                    if isinstance(part, ModuleValue) and part.pretrained and part.contains_bn():
                        self._record(Freeze, part, call, name=_code(call.func), how="no_grad")

    def _class_value(self, cls: cst.ClassDef, label: str, kind: str, origin) -> ModuleValue:
        """An instance of a class of this file: a module with BatchNorm if its code builds some."""
        name = cls.name.value
        is_module = name in self._module_classes
        framework = self._class_framework(cls) if is_module else "torch"
        return self._new(ModuleValue(label=label, has_bn=(id(cls) in self._bn_class_ids) if is_module else None,
                                     is_module=is_module, kind=kind, origin=origin, cls=cls, framework=framework,
                                     has_dropout=framework == "keras" and self._builds_bn(cls, set(), dropout=True)))

    def _method(self, owner: ModuleValue, method: str, node: cst.Call, args: list):
        """A method call on a module value; ``_NOTHING`` when it is none of the ones followed here."""
        defined = _method(owner.cls, method) if owner.cls is not None else None
        if id(owner) in self._imported_classes and method != "__init__":  # ``encoder.fine_tune(False)``
            self._part_freezes(owner, self._imported_classes[id(owner)], method, node)
        if defined is not None and method != "forward":
            if method == "train" and self._overrides_with_super(defined):
                # ``super().train(mode)`` in an override: the base class's mode change, then the override's own
                self._set_mode(owner, _train_mode(node, args), node)
            return self._inline(defined, owner.cls, owner, node, args)
        if not owner.is_module:
            return _NOTHING
        if owner.framework == "keras":  # Keras models have no modes to set; ``add`` grows a Sequential
            if method == "add" and args and isinstance(args[0], ModuleValue):
                owner.has_bn = owner.has_bn or args[0].contains_bn()
                owner.has_dropout = owner.has_dropout or args[0].has_dropout
            if method == "add" and args:
                self._layer_added(owner, args[0], node.args[0].value)
            return _NOTHING
        if method == "train":
            self._set_mode(owner, _train_mode(node, args), node)
            return owner
        if method == "eval":
            self._set_mode(owner, "eval", node)
            return owner
        if method == "requires_grad_":
            if node.args and _bool(node.args[0].value) == "False":
                self._record(Freeze, owner, node, name=_code(node.func.value))
            return owner
        if method == "forward":
            self._forward(owner, node, args)
            return None
        if method == "apply" and args:
            fn = args[0].node if isinstance(args[0], Function) else self._functions.get(_code(node.args[0].value))
            if fn is not None and fn.params.params:  # ``model.apply(set_bn_eval)``: run on every sub-module
                self._inline(fn, None, None, node, [Many(owner, "modules", _code(node.func.value))])
            return owner
        if method in pt.SELF_RETURNING:
            return owner
        return _NOTHING

    def _many_method(self, many: Many, method: str, node: cst.Call):
        if many.what == "params" and method == "requires_grad_" and node.args and _bool(node.args[0].value) == "False":
            if not self._guard_depth:
                self._record(Freeze, many.owner, node, name=many.name)
        elif many.what == "modules":
            if method in ("parameters", "named_parameters"):
                return Many(many.owner, "params", many.name)
            if method == "requires_grad_" and node.args and _bool(node.args[0].value) == "False":
                self._record(Freeze, many.owner, node, name=many.name)
            elif method == "eval" or (method == "train" and _train_mode(node, []) == EVAL):
                self._set_mode(many.owner, "bn-eval" if self._guard_depth else "eval", node)
        return None

    # -- forward calls and helpers -----------------------------------------------------------

    def _forward(self, module: ModuleValue, node: cst.Call, args: list) -> None:
        context, reason = self._context[-1] if self._context else ("other", "")
        mode = _mode(module, self._state)
        inputs = [a for a, arg in zip(args, node.args) if arg.keyword is None and not arg.star]
        data = inputs[0].source if inputs and isinstance(inputs[0], Tensor) else ""
        self._record(Forward, module, node, context=context, reason=reason, mode=mode, data=data,
                     training=_training_arg(node, args), via=self._via[0] if self._via else None,
                     function=self._stack[-1] if self._stack else None, state=dict(self._state))
        if context == "training" and inputs and isinstance(inputs[0], Tensor) and inputs[0].loader is not None:
            inputs[0].loader.feeds.append((module, node, mode))
            self._record(LoaderFeeds, module, node, loader=inputs[0].loader, mode=mode)

    def _imported_variable(self, node: cst.CSTNode, name: str) -> ModuleValue | None:
        """A model built at module level in another module of the project (``from config import model``),
        one value per name; frozen there, its freeze is recorded at its first use here (the evidence)."""
        if name in self._imported:
            return self._imported[name]
        summary = self.project[name]
        value = None
        if summary.kind == "variable" and summary.framework == "torch":
            value = self._new(ModuleValue(label=name, has_bn=summary.has_bn, kind="constructed", defined_at=summary.where))
            if summary.frozen_at:
                self._record(Freeze, value, node, name=name, elsewhere=summary.frozen_at)
        self._imported[name] = value
        return value

    def _part_freezes(self, value: ModuleValue, definition, method: str, node: cst.Call) -> None:
        """What an imported class freezes of its sub-modules when built or when ``method`` is called
        (``lint.flow.project.PartFreeze``): a freeze of that part, recorded at this call, found there."""
        for freeze in definition.part_freezes:
            if freeze.method != method:
                continue
            part = self._part(value, freeze.attr)
            part.has_bn, part.is_module = freeze.has_bn, True
            self._record(Freeze, part, node, name=f"{definition.name}.{freeze.attr}", elsewhere=freeze.where,
                         how=freeze.how)

    def _trained_elsewhere(self, node: cst.Call, args: list, summary) -> None:
        """``engine.train(model=model, ...)`` of another module that puts a parameter in ``.train()`` mode and
        runs a training step on it: the same mode change and training forward, at this call."""
        bound = {}
        positional = [v for a, v in zip(node.args, args) if a.keyword is None and not a.star]
        bound.update(zip(summary.params, positional))
        bound.update({a.keyword.value: v for a, v in zip(node.args, args) if a.keyword is not None})
        for name in summary.trains:
            module = bound.get(name)
            if isinstance(module, ModuleValue) and module.is_module and module.framework == "torch":
                self._set_mode(module, TRAIN, node)
                self._context.append(("training", f"{summary.name}() in {summary.where}"))
                try:
                    self._forward(module, node, [])
                finally:
                    self._context.pop()

    def _loader(self, node: cst.Call, args: list, frame: _Frame) -> Loader:
        """A ``DataLoader``: its keywords, ``**kwargs`` dicts spread in, batch size and ``drop_last`` folded."""
        keywords: dict = {}
        positional = []
        for arg, value in zip(node.args, args):
            if arg.star == "**":
                spread = value.value if isinstance(value, Const) and isinstance(value.value, dict) else None
                if spread is None:
                    keywords["**"] = NOT_CONSTANT  # some keywords we cannot see
                else:
                    keywords.update(spread)
            elif arg.keyword is not None:
                keywords[arg.keyword.value] = value.value if isinstance(value, Const) else NOT_CONSTANT
            elif not arg.star:
                positional.append(value)
        if "batch_size" not in keywords and len(positional) > 1:
            keywords["batch_size"] = positional[1].value if isinstance(positional[1], Const) else NOT_CONSTANT
        batch = keywords.get("batch_size", 1 if "**" not in keywords else NOT_CONSTANT)
        loader = Loader(node, None, batch_size=batch if isinstance(batch, int) else None,
                        drop_last=keywords.get("drop_last"), keywords=keywords)
        self.loaders.append(loader)
        return loader

    def _inline(self, fn: cst.FunctionDef, cls, self_obj, call: cst.Call, args: list):
        """Walk a function of this file at a call site, its parameters bound to the caller's values."""
        if fn in self._stack or len(self._stack) >= _MAX_INLINE or self._budget <= 0:
            return None
        self._budget -= 1
        params = list(fn.params.params)
        values: dict[str, object] = {}
        if self_obj is not None and params:
            values[params[0].name.value] = self_obj
            params = params[1:]
        positional = [(a, v) for a, v in zip(call.args, args) if a.keyword is None and not a.star]
        for param, (_, value) in zip(params, positional):
            values[param.name.value] = value
        for arg, value in zip(call.args, args):
            if arg.keyword is not None:
                values[arg.keyword.value] = value
        saved_guard, self._guard_depth = self._guard_depth, 0
        try:
            return self._run_function(fn, self_obj, values, self._top, call)
        finally:
            self._guard_depth = saved_guard

    def _run_function(self, fn: cst.FunctionDef, self_obj, values, parent: _Frame, call: cst.Call | None):
        self._walked.add(id(fn))
        inner = _Frame(parent, self_obj)
        # at a call site, a parameter the call does not pass holds its default (``dropout_rate=0.0``)
        defaults = call is not None and not any(a.star for a in call.args)
        for param in [*fn.params.params, *fn.params.kwonly_params, *fn.params.posonly_params]:
            name = param.name.value
            value = values.get(name)
            if defaults and name not in values and param.default is not None:
                default = literal(param.default)
                value = None if default is NOT_CONSTANT else Const(default)
            if value is None and param.annotation is not None and self._annotated_module(param.annotation.annotation):
                value = self._new(ModuleValue(label=name, has_bn=None, kind="parameter"))
            inner.vars[name] = value
        pushed = 0
        reason = self._inference_function(fn)
        if reason:
            self._context.append(("inference", reason))
            pushed += 1
        elif self._calls_backward(fn.body) or fn.name.value in kk.TRAIN_STEP_METHODS:
            self._context.append(("training", ""))
            pushed += 1
        self._stack.append(fn)
        if call is not None:
            self._via.append(call)
        ksaved = self._kfunction_enter()
        try:
            self._block(_body(fn.body), inner, False)
        finally:
            self._kfunction_exit(ksaved, fn, inner, call)
            self._stack.pop()
            if call is not None:
                self._via.pop()
            del self._context[len(self._context) - pushed :]
        return next((r for r in inner.returns if isinstance(r, (ModuleValue, tuple, Function))), None)

    def _walk_class_alone(self, cls: cst.ClassDef, top: _Frame) -> None:
        """Methods nobody calls in this file, walked on an instance of unknown mode (``__init__`` first,
        for the attributes)."""
        methods = [m for m in cls.body.body if isinstance(m, cst.FunctionDef)]
        if all(id(m) in self._walked for m in methods):
            return
        obj = self._class_value(cls, "self", "parameter", None)
        methods.sort(key=lambda m: m.name.value != "__init__")
        for method in methods:
            if id(method) in self._walked and method.name.value != "__init__":
                continue
            saved = self._state
            self._state = {}
            first = method.params.params[0].name.value if method.params.params else None
            self._run_function(method, obj, {first: obj} if first else {}, top, None)
            self._state = saved

    # -- contexts ----------------------------------------------------------------------------

    def _inference_context(self, item, frame: "_Frame | None" = None) -> str | None:
        """``torch.no_grad()``, ``torch.inference_mode()``, ``torch.set_grad_enabled(False)``."""
        if not isinstance(item, cst.Call):
            return None
        q = self.imports.qualname(item.func) if isinstance(item.func, (cst.Name, cst.Attribute)) else None
        if not q or not (q.startswith("torch.") or "." not in q):
            return None
        last = q.rsplit(".", 1)[-1]
        if last in ("no_grad", "inference_mode") and not (item.args and _bool(item.args[0].value) == "False"):
            return f"torch.{last}()"
        if last == "set_grad_enabled" and item.args and (
            _bool(item.args[0].value) == "False"
            or (frame is not None and self._truth(item.args[0].value, frame) is False)
        ):
            return "torch.set_grad_enabled(False)"
        return None

    def _inference_function(self, fn: cst.FunctionDef) -> str | None:
        for decorator in fn.decorators:
            d = decorator.decorator
            reason = self._inference_context(d if isinstance(d, cst.Call) else cst.Call(func=d))
            if reason:
                return f"@{reason}"
        name = fn.name.value
        if name.startswith("test_") and self._pytest_file:
            return None
        if pt.INFERENCE_FN.search(name):
            return f"{name}()"
        return None

    def _calls_backward(self, body, frame: "_Frame | None" = None) -> bool:
        """A training step: ``.backward()`` somewhere in ``body``, on a path that can run (branches whose
        condition folds to False are left out: ``if phase == "train": loss.backward()`` in the "val" pass)."""
        key = id(body)
        if key not in self._backward:
            self._backward[key] = any(_is_backward(n) for n in walk(body))
        if not self._backward[key] or frame is None:
            return self._backward[key]
        stack = [body]
        while stack:
            n = stack.pop()
            if _is_backward(n):
                return True
            if isinstance(n, cst.If):
                certain = self._truth(n.test, frame)
                if certain is True:
                    stack.append(n.body)
                    continue
                if certain is False:
                    if n.orelse is not None:
                        stack.append(n.orelse)
                    continue
            stack.extend(children(n))
        return False

    def _annotated_module(self, annotation) -> bool:
        q = self.imports.qualname(annotation) if isinstance(annotation, (cst.Name, cst.Attribute)) else None
        return bool(q) and (q in ("torch.nn.Module", "torch.nn.modules.module.Module") or q in self._module_classes)

    def _overrides_with_super(self, fn: cst.FunctionDef) -> bool:
        return any(
            isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute) and n.func.attr.value == "train"
            and isinstance(n.func.value, cst.Call) and dotted(n.func.value.func) == "super"
            for n in walk(fn.body)
        )


_NOTHING = object()


# -- small helpers ------------------------------------------------------------------------------


_NO_GRAD = ("torch.no_grad()", "torch.inference_mode()")


def _mode(module: ModuleValue, state: dict) -> Mode:
    for a in module.ancestors():
        if id(a) in state:
            return state[id(a)]
    root = list(module.ancestors())[-1]
    if root.kind in ("constructed", "instance") and root.is_module:
        return Mode.of(TRAIN, root.origin)  # PyTorch builds every module in training mode
    return UNKNOWN_MODE


def _join_vars(a: dict, b: dict) -> dict:
    """Names after two branches: a constant both agree on stays; a constant on one side only is
    not a constant any more; other values keep the later binding (the walk's order)."""
    joined = dict(a)
    for name in a.keys() | b.keys():
        left, right = a.get(name), b.get(name)
        if isinstance(left, Const) or isinstance(right, Const):
            joined[name] = left if left == right else None
        elif isinstance(left, LayerOutput) and isinstance(right, LayerOutput):
            joined[name] = left.join(right)  # the tensor may come from either path's layers
        elif isinstance(left, ModuleValue) and isinstance(right, ModuleValue) and left is not right and (
            left.layers and right.layers
        ):
            joined[name] = join_layers(left, right)
        elif name in b:
            joined[name] = right
    return joined


def _excludes(x: tuple, y: tuple) -> bool:
    (test_x, holds_x), (test_y, holds_y) = x, y
    if test_x is test_y or _code(test_x) == _code(test_y):
        return holds_x != holds_y
    if holds_x and holds_y:  # ``v == "a"`` and ``v == "b"``
        ex, ey = _equality(test_x), _equality(test_y)
        return ex is not None and ey is not None and ex[0] == ey[0] and ex[1] != ey[1]
    return False


def _equality(test) -> tuple[str, object] | None:
    """``args.weights == "freeze"`` -> ("args.weights", "freeze")."""
    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1 and isinstance(test.comparisons[0].operator, cst.Equal):
        value = fold(test.comparisons[0].comparator, lambda name: NOT_CONSTANT)
        if value is not NOT_CONSTANT:
            return _code(test.left), value
    return None


def _assigned_names(body) -> set[str]:
    found = set()
    for n in walk(body):
        targets = ()
        if isinstance(n, cst.Assign):
            targets = [t.target for t in n.targets]
        elif isinstance(n, (cst.AugAssign, cst.AnnAssign, cst.For)):
            targets = [n.target]
        for target in targets:
            found.update(x.value for x in walk(target) if isinstance(x, cst.Name))
    return found


def _backward_outside_loops(body) -> bool:
    stack = [body]
    while stack:
        n = stack.pop()
        if _is_backward(n):
            return True
        if not isinstance(n, (cst.For, cst.While)):
            stack.extend(children(n))
    return False


def _is_backward(node) -> bool:
    """A training step's call: ``loss.backward()`` (PyTorch), ``optimizer.apply_gradients(...)`` (Keras)."""
    return isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and (
        node.func.attr.value == "backward" or kk.applies_gradients(node.func.attr.value)
    )


def _train_mode(call: cst.Call, args: list) -> str:
    """``m.train()``/``m.train(True)`` -> train, ``m.train(False)``/``m.train(mode=False)`` -> eval,
    ``m.train(is_training)`` -> either ("train|eval")."""
    if not call.args:
        return TRAIN
    value = args[0] if args else None
    if _bool(call.args[0].value) == "False" or (isinstance(value, Const) and not value.value):
        return EVAL
    if _bool(call.args[0].value) == "True" or isinstance(value, Const):
        return TRAIN
    return EITHER


def _bool(node) -> str | None:
    return node.value if isinstance(node, cst.Name) and node.value in ("True", "False") else None


def _method(cls: cst.ClassDef | None, name: str) -> cst.FunctionDef | None:
    if cls is None or not isinstance(cls.body, cst.IndentedBlock):
        return None
    return next((s for s in cls.body.body if isinstance(s, cst.FunctionDef) and s.name.value == name), None)


def _body(block) -> list:
    return list(block.body) if isinstance(block, (cst.IndentedBlock, cst.SimpleStatementSuite)) else []


_EMPTY = cst.Module(body=[])


def _code(node: cst.CSTNode) -> str:
    return _EMPTY.code_for_node(node)
