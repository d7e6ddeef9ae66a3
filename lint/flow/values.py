"""Abstract values of the flow analysis: what a name may denote at one point of the program.

A value stands for every run of the program at once, so each fact is a *set of
possibilities*, never a guess: ``has_bn`` is True / False / None (yes, no, maybe), a mode is
the set of modes a module may be in (``{"train"}`` must train, ``{"train", "eval"}`` may train
or not, ``"unknown"`` among them when part of the story happens outside the code we read).
Where two paths meet, sets are joined (union): nothing collapses to "unknown" on a join.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

import libcst as cst

TRAIN, EVAL, UNKNOWN = "train", "eval", "unknown"


@dataclass(frozen=True)
class Mode:
    """The modes a module may be in at one point, and for each the node that set it there."""

    setters: tuple[tuple[str, "cst.CSTNode | None"], ...]

    @classmethod
    def of(cls, mode: str, node: "cst.CSTNode | None") -> "Mode":
        return cls(((mode, node),))

    @property
    def modes(self) -> frozenset[str]:
        return frozenset(m for m, _ in self.setters)

    def may(self, mode: str) -> bool:
        return mode in self.modes

    def must(self, mode: str) -> bool:
        return self.modes == {mode}

    def setter(self, mode: str) -> "cst.CSTNode | None":
        return next((n for m, n in self.setters if m == mode), None)

    def join(self, other: "Mode") -> "Mode":
        if other is self:
            return self
        seen = {m for m, _ in self.setters}
        return Mode(self.setters + tuple((m, n) for m, n in other.setters if m not in seen))

    def label(self) -> str:
        """``train``, ``eval``, ``train or eval``: for messages and tests."""
        return " or ".join(sorted(self.modes))


UNKNOWN_MODE = Mode.of(UNKNOWN, None)


def join_states(a: dict, b: dict) -> dict:
    """Two paths meet: each module's modes are the union of both; a module one path never set
    keeps what it had before the branch, which is "unknown" here (its container decides)."""
    joined = {}
    for key in a.keys() | b.keys():
        left, right = a.get(key), b.get(key)
        if left is not None and right is not None:
            joined[key] = left.join(right)
        elif isinstance(key, tuple):  # ("bn", id): BatchNorm kept in eval on one path only: not kept
            continue
        else:
            joined[key] = (left or right).join(UNKNOWN_MODE)
    return joined


@dataclass(frozen=True)
class Const:
    """A Python constant the program certainly holds here (a literal, a module constant, an
    unoverridden default, the current element of a loop over a literal list)."""

    value: object


@dataclass(frozen=True)
class Tensor:
    """A tensor and where its values come from: "random" (``torch.randn``, ``np.random.rand``:
    made up to look at shapes) or "data" (read from a loader or dataset)."""

    source: str
    loader: "Loader | None" = None


@dataclass(eq=False)
class Loader:
    """A ``DataLoader``: its call, batch size and ``drop_last`` where known, and the modules it feeds."""

    call: cst.Call
    name: str | None
    batch_size: object = None  # an int, or None where unknown
    drop_last: object = None  # True/False, or None where unknown or absent
    keywords: dict = field(default_factory=dict)  # keyword -> expression, ``**kwargs`` dicts spread in
    feeds: list = field(default_factory=list)  # (module, forward node, modes) of training forwards
    iterated: bool = False  # a loop of the file reads its batches

    def feeds_batchnorm_in_training(self) -> bool | None:
        """True: a training forward of a module with BatchNorm, which may be in train mode, reads its
        batches; False: the file reads its batches and none goes there; None: it never reads them."""
        if any(module.contains_bn() and mode.may("train") for module, _, mode in self.feeds):
            return True
        return False if self.iterated else None


@dataclass(eq=False)
class ModuleValue:
    """A model, layer or module value (or an object holding modules, such as a trainer).

    ``has_bn`` is True/False where the code shows it and None where it does not;
    ``is_module`` says the value is known to be a module (not a tensor, not a plain
    object). ``attrs`` are its sub-modules by attribute (``model.backbone``). ``defined_at``
    names the file and line of a definition read from another module of the project.
    """

    label: str
    has_bn: bool | None
    is_module: bool = True
    kind: str = "constructed"  # constructed | instance | part | parameter | loop
    origin: cst.CSTNode | None = None
    parent: "ModuleValue | None" = None
    attr: str | None = None
    cls: cst.ClassDef | None = None
    attrs: dict[str, "ModuleValue"] = field(default_factory=dict)
    framework: str = "torch"
    defined_at: str | None = None
    has_dropout: bool = False
    pretrained: bool | None = None
    frozen: bool = False  # Keras: ``trainable = False`` set on it somewhere in the file
    #: Keras: the layer classes it may be (``{"Dropout"}``; two after ``Dropout(r) if r else BatchNormalization()``)
    layers: frozenset = frozenset()

    def contains_bn(self) -> bool | None:
        if self.has_bn:
            return True
        if any(child.contains_bn() for child in self.attrs.values() if child.parent is self):
            return True
        return self.has_bn

    def ancestors(self) -> Iterator["ModuleValue"]:
        node: ModuleValue | None = self
        seen = set()
        while node is not None and id(node) not in seen:
            seen.add(id(node))
            yield node
            node = node.parent

    def within(self, other: "ModuleValue") -> bool:
        return any(a is other for a in self.ancestors())

    def provenance(self, what: str = "BatchNorm") -> str:
        """Where a model from another module of the project was defined, for messages (the evidence
        chain of a cross-file finding), else ""."""
        for a in self.ancestors():
            if a.defined_at:
                return f" (`{a.label}` is defined in {a.defined_at}, with {what})"
        return ""


@dataclass(eq=False)
class Many:
    """``X.parameters()`` ("params") or ``X.modules()``/``X.children()`` ("modules") of a module."""

    owner: ModuleValue
    what: str
    name: str = ""  # the owner as written (``model.backbone``)


@dataclass(frozen=True)
class Constructor:
    """A class or factory bound to a local name: ``Base = inception_v3.InceptionV3``."""

    qualname: str


@dataclass(eq=False)
class Function:
    """A function of the file being read, walked at its call sites with the caller's values."""

    node: cst.FunctionDef
    cls: cst.ClassDef | None = None


@dataclass(frozen=True)
class LayerOutput:
    """A Keras tensor made by applying layers (``x = layers.Dropout(0.3)(x)``): the layer classes that
    may have produced it, each with its call. Paths that meet unite them: a Dropout applied under
    ``if rate:`` may have produced the tensor after the ``if``."""

    producers: tuple[tuple[str, cst.CSTNode], ...]

    def join(self, other: "LayerOutput") -> "LayerOutput":
        seen = {id(n) for _, n in self.producers}
        return LayerOutput(self.producers + tuple(p for p in other.producers if id(p[1]) not in seen))


@dataclass(frozen=True)
class Batches:
    """A ``tf.data`` pipeline after ``.batch(size)`` (``size`` None where it does not fold to an int)."""

    size: int | None


def join_layers(a: ModuleValue, b: ModuleValue) -> ModuleValue:
    """Two Keras layers meet (``norm = BatchNormalization()`` on one path, ``LayerNormalization()`` on
    the other): a value that may be either, with BatchNormalization only where both agree."""
    has_bn = a.has_bn if a.has_bn == b.has_bn else None
    return ModuleValue(f"{a.label} or {b.label}", has_bn, origin=a.origin, framework="keras",
                       has_dropout=a.has_dropout or b.has_dropout, layers=a.layers | b.layers)


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(eq=False)
class KerasModel:
    """A Keras model value (BN001-BN003). ``children`` are the models placed or called inside it."""

    label: str
    has_bn: bool
    layer_name: str | None = None
    #: where a model built by another module of the project comes from ("models.py:12"), for messages
    defined_at: str | None = None
    default_name: str | None = None
    children: list["KerasModel"] = field(default_factory=list)
    #: ``Sequential`` layers in order (None for a plain layer); None when the order is unknown
    elements: list["KerasModel | None"] | None = None

    def contains_bn(self) -> bool:
        return self.has_bn or any(c.contains_bn() for c in self.children)

    def lineage(self) -> Iterator["KerasModel"]:
        yield self
        for child in self.children:
            yield from child.lineage()

    def named(self, name: str) -> "KerasModel | None":
        for child in self.children:
            if child.layer_name == name or (
                child.layer_name is None and child.default_name and _normal(name).startswith(child.default_name)
            ):
                return child
        return None


@dataclass(eq=False)
class LayerOf:
    """A layer (or an unknown slice of layers) inside a Keras model's graph."""

    model: KerasModel


@dataclass(frozen=True, eq=False)
class Either:
    """Where two paths meet with different Keras models bound to one name (``if pretrained: base = A()
    else: base = B()``): the name may denote any of them, and what is done to it may be done to each."""

    options: tuple


def either(a, b):
    """The join of two Keras model values bound to one name on two paths."""
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
