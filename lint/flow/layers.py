"""Keras layers in the flow walk: what a layer value may be, what each layer call passes as
``training`` and where it runs, which Dropout feeds which BatchNormalization, the learning-phase
API, and ``fit()`` batch sizes.

``Flow`` (``lint.flow.walk``) inherits these methods and calls them at a few points of its walk,
so the facts come from the same flow-sensitive pass every rule queries: a layer built only under
``if dropout_rate:`` with an unoverridden ``0.0`` default never exists (constant folding), a
tensor produced by a Dropout on one branch and a Conv2D on the other *may* come from the Dropout
(``LayerOutput`` joins its producers), a helper walked at its call site from a ``GradientTape``
runs in the training step, and a class imported from another module of the project brings its
``call(..., training=True)`` default along (``lint.flow.project``).

Recorded events (``lint.flow.events``): ``LayerCall``, ``DropoutFeedsBatchNorm``,
``LearningPhaseUse``, ``KerasFit``.
"""

from __future__ import annotations

import re

import libcst as cst

from lint.flow.events import DropoutFeedsBatchNorm, KerasFit, LayerCall, LearningPhaseUse
from lint.flow.values import Const, Constructor, LayerOutput, ModuleValue, Batches
from lint.frameworks import keras as kk
from lint.names import dotted
from lint.nodes import walk

#: functions named like a training step (``train_step``, ``training_step``, ``train_one_epoch``)
_TRAIN_NAME = re.compile(r"^_*train|(^|_)train(ing)?_step$")
#: ``tf.data`` methods that keep a pipeline's batch size
_PIPELINE = frozenset({"prefetch", "cache", "repeat", "shuffle", "map", "filter", "take", "skip", "with_options"})
_MODEL_BUILDERS = frozenset({"Model", "Sequential", "Functional", "load_model", "model_from_json", "model_from_yaml",
                             "clone_model"})


class KerasLayerWalk:
    """Mixin of ``Flow``: the Keras-layer part of the walk (state set up by ``_init_layers``)."""

    def _init_layers(self) -> None:
        self.keras2_only = False  # TF1/Keras-2-only APIs used (``tf.Session``, ``K.gradients``)
        self.calls_inference_api = False  # ``.predict()``, ``.evaluate()`` somewhere on a path that runs
        self._last_added: dict[int, tuple[str, cst.CSTNode]] = {}  # Sequential -> its last layer (``add`` chains)
        self._built_model_in: set[int] = set()  # scopes (function id, 0: module) where a model was built so far
        self._tape_depth = 0  # ``with tf.GradientTape()`` blocks the walk is in
        self._unfollowable: dict[int, set[str]] = {}  # scope -> its parameters, loop and unpacked names

    # -- queries ---------------------------------------------------------------------------

    def builds_batchnorm(self) -> bool:
        """The file builds BatchNormalization somewhere (the fallback for a value the walk cannot follow)."""
        return self._scope_builds(self._module)[0] or any(
            name in self._bn_classes and self._class_framework(cls) == "keras" for name, cls in self._classes.items()
        )

    def _extra_model(self, qualname: str | None) -> bool:
        """A factory configured in ``extra-batchnorm-models`` (``mylib.zoo.build_backbone``), in any import form."""
        return bool(qualname) and any(
            qualname == f or qualname.endswith("." + f) or f.endswith("." + qualname) for f in self.extra_models
        )

    # -- values ----------------------------------------------------------------------------

    def _layer_value(self, value, node: cst.Call, qualname: str):
        """The value of a Keras constructor call: what ``_keras_model`` made of it, with the layer class
        it holds, or a plain layer (``layers.Dense(8)``: no BatchNormalization) the walk otherwise ignores."""
        last = qualname.rsplit(".", 1)[-1]
        name = kk.keras_name(qualname) or ""
        is_layer = name.startswith("keras.layers.") or (
            "." not in qualname and last in kk.BN_CLASSES | kk.DROPOUT_CLASSES | kk.SHAPE_ONLY_CLASSES
        )
        if value is None and is_layer and last[:1].isupper():
            value = self._new(ModuleValue(f"{last}(...)", False, origin=node, framework="keras"))
        if isinstance(value, ModuleValue) and is_layer:
            value.layers = frozenset({last})
        return value

    def _star_layer(self, qualname: str) -> bool:
        """A bare layer name (``from keras.layers import *``): Dropout, BatchNormalization, a shape-only layer."""
        return "." not in qualname and qualname in kk.BN_CLASSES | kk.DROPOUT_CLASSES | kk.SHAPE_ONLY_CLASSES and (
            self.imports.imports_from("keras", "tensorflow", "tf_keras")
        )

    def _layer_output(self, layer: ModuleValue, node: cst.Call, args: list):
        """``layer(x)`` of a Keras layer: the tensor it produces, with the layer that produced it
        (a Dropout is carried across shape-only layers). Records Dropout -> BatchNormalization."""
        if layer.framework != "keras" or not layer.layers:
            return None
        inputs = [v for a, v in zip(node.args, args) if a.keyword is None and not a.star]
        before = inputs[0] if inputs and isinstance(inputs[0], LayerOutput) else None
        if before is not None and layer.layers <= kk.BN_CLASSES:
            dropout = next((n for cls, n in before.producers if cls in kk.DROPOUT_CLASSES), None)
            if dropout is not None:
                self._record(DropoutFeedsBatchNorm, layer, node, dropout=dropout, shape="functional")
        if before is not None and layer.layers <= kk.SHAPE_ONLY_CLASSES:
            return before
        return LayerOutput(tuple((cls, node) for cls in sorted(layer.layers)))

    def _layer_sequence(self, model: ModuleValue, elements: list, call: cst.Call) -> None:
        """``Sequential([...])``: neighbours in the list; the last layer continues in later ``add`` calls."""
        first = call.args[0].value if call.args else None
        nodes = [e.value for e in first.elements if isinstance(e, cst.Element)] if isinstance(first, (cst.List, cst.Tuple)) else []
        if elements and model.has_bn is None and all(isinstance(v, ModuleValue) and v.has_bn is False for v in elements):
            model.has_bn = False  # every layer in the list is known, none is BatchNormalization
        before: tuple[str, cst.CSTNode] | None = None
        for value, node in zip(elements, nodes):
            before = self._next_layer(model, before, value, node, "Sequential")
        self._keep_last(model, before)

    def _layer_added(self, model: ModuleValue, value, node: cst.CSTNode) -> None:
        """``model.add(layer)``: after the layer added last to the same model."""
        self._keep_last(model, self._next_layer(model, self._last_added.get(id(model)), value, node, "add"))

    def _next_layer(self, model, before, value, node, shape: str):
        classes = value.layers if isinstance(value, ModuleValue) and value.framework == "keras" else frozenset()
        if not classes:
            return None
        if before is not None and classes <= kk.BN_CLASSES and before[0] in kk.DROPOUT_CLASSES:
            self._record(DropoutFeedsBatchNorm, model, node, dropout=before[1], shape=shape)
        if before is not None and classes <= kk.SHAPE_ONLY_CLASSES:
            return before
        return (next(iter(classes)), node) if len(classes) == 1 else None

    def _keep_last(self, model: ModuleValue, last) -> None:
        if last is None:
            self._last_added.pop(id(model), None)
        else:
            self._last_added[id(model)] = last

    # -- calls -----------------------------------------------------------------------------

    def _keras_call(self, node: cst.Call, callee, args: list, frame):
        """Every call, before the walk follows it: learning-phase API, model building, ``fit``, layer
        calls with their ``training``. Returns a value only for ``tf.data`` batching (``.batch(1)``)."""
        func = node.func
        qualname = self._qualname_of(func, callee, frame)
        scope = id(self._stack[-1]) if self._stack else 0
        if qualname:
            canonical = kk.keras_name(qualname) or ""
            last = qualname.rsplit(".", 1)[-1]
            if last in kk.KERAS2_ONLY and qualname.startswith(("tensorflow.", "keras.")):
                self.keras2_only = True
            if last in kk.LEARNING_PHASE_API and ".backend." in canonical + ".":
                self._record(LearningPhaseUse, _NO_MODULE, node, api=last, qualname=qualname,
                             after_model=scope in self._built_model_in, sets_one=_sets_one(node, args))
            if canonical.startswith("keras.applications.") or (canonical and last in _MODEL_BUILDERS):
                self._built_model_in.add(scope)
        if isinstance(func, cst.Name) and (func.value in self._classes or dotted(func) in self.project):
            if func.value in self._classes or self.project[func.value].is_model:
                self._built_model_in.add(scope)
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            if method in ("predict", "evaluate", "predict_on_batch"):
                self.calls_inference_api = True
            if isinstance(callee, Batches) and method in _PIPELINE:
                return callee
            if method == "batch" and not isinstance(callee, ModuleValue) and args:
                size = args[0]
                return Batches(size.value if isinstance(size, Const) and isinstance(size.value, int) else None)
            if method == "fit" and (isinstance(callee, ModuleValue) or callee is None):
                self._fit(node, callee, args, frame)
                return None
        training = training_arg(node, args)
        # a value the walk cannot follow matters only where the call passes ``training``
        layer = self._called_layer(func, callee, frame, unknown=training != "absent")
        if layer is None or (training == "absent" and layer.framework != "keras"):
            return None
        inputs = [v for a, v in zip(node.args, args) if a.keyword is None and not a.star]
        self._record(LayerCall, layer, node, training=training, in_step=self._in_keras_step(node),
                     in_test=self._in_unit_test(), random_input=bool(inputs) and getattr(inputs[0], "source", "") == "random",
                     default=self._training_default(layer))
        return None

    def _fit(self, node: cst.Call, model, args: list, frame) -> None:
        keywords: dict = {}
        positional = []
        for arg, value in zip(node.args, args):
            if arg.star == "**":
                spread = value.value if isinstance(value, Const) and isinstance(value.value, dict) else None
                keywords.update(spread or {})
            elif arg.keyword is not None:
                keywords[arg.keyword.value] = value
            elif not arg.star:
                positional.append(value)
        batch = keywords.get("batch_size", positional[2] if len(positional) > 2 else None)
        batch = batch.value if isinstance(batch, Const) else batch
        data = keywords.get("x", positional[0] if positional else None)
        if model is None:
            model = self._unknown_layer(node.func.value, frame)
            if model is None:
                return
        self._record(KerasFit, model, node, batch_size=batch if isinstance(batch, int) else None,
                     batched_by=data.size if isinstance(data, Batches) else None)

    def _called_layer(self, func, callee, frame, unknown: bool) -> ModuleValue | None:
        """The layer or model a call applies: a value the walk follows, or one it cannot (a parameter,
        a loop variable, ``self.model`` of a callback: ``kind == "parameter"``, BatchNormalization unknown)."""
        if isinstance(func, cst.Attribute):
            if not isinstance(callee, ModuleValue):
                return None
            sub = callee.attrs.get(func.attr.value)
            if isinstance(sub, ModuleValue):
                return sub if sub.is_module else None
            if unknown and dotted(func.value) == "self" and func.attr.value not in callee.attrs and (
                not _is_method(callee, func.attr.value)
            ):
                return self._unknown_layer(func, frame)
            return None
        if isinstance(callee, ModuleValue):
            return callee if callee.is_module else None
        if unknown and callee is None and isinstance(func, cst.Name):
            return self._unknown_layer(func, frame)
        return None

    def _unknown_layer(self, func, frame) -> ModuleValue | None:
        """A parameter or loop variable of the function being walked, or an unset ``self.`` attribute."""
        path = dotted(func)
        if path is None:
            return None
        if not path.startswith("self."):
            if "." in path or not self._unbound_here(path, frame):
                return None
        elif path.count(".") != 1:
            return None
        return ModuleValue(label=path, has_bn=None, kind="parameter", framework="keras")

    def _unbound_here(self, name: str, frame) -> bool:
        """``name`` holds nothing the walk can follow and is a parameter, a loop or an unpacked variable
        of the function being walked (or the module): its value is decided by the caller or the data.
        A name bound to an opaque call (``load_model(...)``, a hub layer) is not: it comes from elsewhere."""
        if frame.lookup(name) is not None:
            return False
        scope = self._stack[-1] if self._stack else self._module
        if id(scope) not in self._unfollowable:
            found: set[str] = set()
            if isinstance(scope, cst.FunctionDef):
                params = scope.params
                found.update(p.name.value for p in [*params.posonly_params, *params.params, *params.kwonly_params])
            for n in walk(scope.body if isinstance(scope, cst.FunctionDef) else scope):
                targets = [n.target] if isinstance(n, cst.For) else [t.target for t in n.targets] if isinstance(n, cst.Assign) else []
                for target in targets:
                    if isinstance(n, cst.For) or isinstance(target, (cst.Tuple, cst.List)):
                        found.update(x.value for x in walk(target) if isinstance(x, cst.Name))
            self._unfollowable[id(scope)] = found
        return name in self._unfollowable[id(scope)]

    def _qualname_of(self, func, callee, frame) -> str | None:
        """``K.set_learning_phase`` with ``K = tf.keras.backend`` (a module alias the walk holds), or the import's."""
        if isinstance(func, cst.Attribute) and isinstance(callee, Constructor):
            return f"{callee.qualname}.{func.attr.value}"
        if isinstance(func, cst.Name) and isinstance(frame.lookup(func.value), Constructor):
            return frame.lookup(func.value).qualname
        return self.imports.qualname(func) if isinstance(func, (cst.Name, cst.Attribute)) else None

    def _training_default(self, layer: ModuleValue) -> "tuple[str, cst.CSTNode | None] | None":
        """Where ``call(..., training=True)`` of the layer's class is defined: (its class name, the parameter)
        for a class of this file, (the class name, None) for one of another module of the project."""
        if layer.cls is not None:
            param = training_default(layer.cls)
            if param is not None and layer.cls.name.value in self._bn_classes:
                return layer.cls.name.value, param
            return None
        if layer.defined_at and isinstance(layer.origin, cst.Call):
            imported = self.project.get(dotted(layer.origin.func) or "")
            if imported is not None and imported.training_default and imported.has_bn:
                return dotted(layer.origin.func), None
        return None

    # -- where a call runs -----------------------------------------------------------------

    def _in_keras_step(self, node: cst.CSTNode) -> bool:
        """A custom training step: the walk's training context (a function or loop that applies gradients,
        ``train_step``), a ``GradientTape`` block, a function that opens one, or a ``train_step``-like name."""
        if self._context and self._context[-1][0] == "training":
            return True
        if self._tape_depth > 0:
            return True
        # (``_calls_backward`` is cached per body: the walk asked it when it entered the function)
        return any(_TRAIN_NAME.search(fn.name.value) or self._calls_backward(fn.body) for fn in self._stack)

    def _enter_tape(self, stmt: cst.With) -> int:
        """``with tf.GradientTape() as tape:``: 1 (the walk is inside a tape until the block ends), else 0."""
        tape = any(isinstance(i.item, cst.Call) and _last(i.item.func) == "GradientTape" for i in stmt.items)
        self._tape_depth += tape
        return int(tape)

    def _in_unit_test(self) -> bool:
        """Unit tests exercise training mode on purpose (``test_step`` is Keras' evaluation step, not a test)."""
        return any(fn.name.value.startswith("test_") and fn.name.value != "test_step" for fn in self._stack)


class _NoModule(ModuleValue):
    """The subject of an event about no model (a learning-phase call)."""


_NO_MODULE = _NoModule(label="", has_bn=None, is_module=False, kind="parameter", framework="keras")


def training_arg(call: cst.Call, args: list) -> str:
    """A Keras call's ``training``: "true", "false", "other" (a variable, forwarded positionally) or "absent"."""
    for arg, value in zip(call.args, args):
        if arg.keyword is not None and arg.keyword.value == "training":
            if isinstance(value, Const) and value.value in (True, False):
                return "true" if value.value else "false"
            return "other"
        if arg.star or (arg.keyword is not None and "train" in arg.keyword.value.lower()):
            return "other"  # ``model(*args, **kwargs)``, ``model(x, is_training=True)`` (its call forwards it)
    positional = [a for a in call.args if a.keyword is None]
    return "other" if len(positional) >= 2 else "absent"


def training_default(cls: cst.ClassDef) -> cst.Param | None:
    """The ``training=True`` parameter of the class's ``call`` method, if it has one."""
    if not isinstance(cls.body, cst.IndentedBlock):
        return None
    for stmt in cls.body.body:
        if isinstance(stmt, cst.FunctionDef) and stmt.name.value == "call":
            for param in [*stmt.params.params, *stmt.params.kwonly_params]:
                if param.name.value == "training" and isinstance(param.default, cst.Name) and param.default.value == "True":
                    return param
    return None


def _sets_one(node: cst.Call, args: list) -> bool:
    """``set_learning_phase(1)``, ``learning_phase_scope(True)``, or a constant that folds to 1."""
    return bool(args) and isinstance(args[0], Const) and args[0].value in (1, True) and not node.args[0].keyword


def _is_method(value: ModuleValue, name: str) -> bool:
    cls = value.cls
    return cls is not None and isinstance(cls.body, cst.IndentedBlock) and any(
        isinstance(s, cst.FunctionDef) and s.name.value == name for s in cls.body.body
    )


def _last(node) -> str | None:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return node.attr.value
    return None

