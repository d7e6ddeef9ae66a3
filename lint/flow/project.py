"""The project index: every file is read as part of one project, and imports between its
modules resolve.

``from model import Encoder``, ``from .models import build``, ``from common import *``,
``import models.encoder as enc``: each resolves to a module of the project (the importing
file's folder, its package roots, the working directory), ``__init__`` re-exports and star
imports followed. Imported modules are read from disk even when they were not given on the
command line (pre-commit passes only the changed files), and only when a file that a rule
will check imports them.

Each module gets a *summary* computed once with Python's own parser (ten times faster than
libcst): its top-level classes and functions, whether they build a Keras or PyTorch model,
whether it has BatchNormalization (or Dropout), and where they are defined. A file's
``view`` maps the names it imports to those summaries; it is small and picklable, so the
engine hands each worker the view of its file, never the whole project.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from lint.frameworks import keras as kk
from lint.frameworks import torch as pt
from lint.frameworks.keras import keras_name

_MAX_DEPTH = 6  # re-export chains followed this far
_MAX_SCANNED = 20_000  # Python files looked at for unfreezes of a module's models (a huge tree: the first ones)
_MAX_BYTES = 2_000_000
_SKIP_DIRS = frozenset({"venv", "__pycache__", "node_modules", "site-packages", "build", "dist"})


@dataclass(frozen=True)
class Definition:
    """A class or function of another module of the project, as the files importing it see it.

    ``is_model``: a class that is an ``nn.Module``/Keras ``Model``/``Layer``, or a function
    that returns a model it builds. ``has_bn``: True where its code builds BatchNormalization,
    False where it builds a model without it, None where it cannot tell.
    """

    name: str
    kind: str  # "class" | "function"
    framework: str  # "torch" | "keras" | ""
    is_model: bool
    has_bn: bool | None
    has_dropout: bool
    where: str  # "models/encoder.py:12"
    #: a function's parameters, and those it trains: puts in ``.train()`` mode and calls in a step that
    #: runs ``.backward()`` (itself or through functions of its module) — ``engine.train(model, ...)``
    params: tuple[str, ...] = ()
    trains: tuple[str, ...] = ()
    #: a module-level model ("variable"): where a module of the project froze its parameters (PyTorch) or set
    #: it untrainable (Keras); a Keras builder function or class: where its body sets ``trainable = False``
    frozen_at: str = ""
    #: a PyTorch class: the sub-modules it freezes (``PartFreeze``)
    part_freezes: tuple[PartFreeze, ...] = ()
    #: a Keras class whose ``call(self, x, training=True)`` defaults to training mode
    training_default: bool = False


@dataclass(frozen=True)
class PartFreeze:
    """A sub-module ``self.<attr>`` that its class freezes: ``requires_grad = False`` on its parameters
    when the class is built (``method`` "__init__", directly or through its own methods) or when
    ``method`` is called; or (``how`` "no_grad") a pretrained part its ``forward`` runs under
    ``torch.no_grad()``. Either way its parameters get no gradient while its BatchNorm layers, in
    train mode, still update their running statistics."""

    attr: str
    has_bn: bool | None
    where: str  # "models.py:46": the freeze
    method: str = "__init__"
    how: str = "requires_grad"


@dataclass
class _Summary:
    path: Path
    imports: dict[str, str] = field(default_factory=dict)  # local name -> qualified name (relative as ".x.y")
    definitions: dict[str, Definition] = field(default_factory=dict)
    stars: list[str] = field(default_factory=list)  # modules star-imported


class Project:
    """Resolves imports between the files of one run and summarizes what they define."""

    def __init__(self, roots: list[Path], cwd: Path | None = None) -> None:
        # absolute, not resolved: a symlink loop among the paths is the engine's error to report
        cwd = _absolute(cwd or Path.cwd())
        self._roots = [cwd] + [_absolute(r) if r.is_dir() else _absolute(r).parent for r in roots]
        self._display_base = cwd
        self._summaries: dict[Path, _Summary | None] = {}
        self._resolving: set[tuple[Path, str]] = set()
        self._files: dict[tuple[str, int, Path], Path | None] = {}
        self._folders: dict[Path, list[Path]] = {}
        self._bindings: dict[Path, tuple[frozenset[str], frozenset[str]] | None] = {}
        self._unfreezing: list[tuple[Path, ast.Module]] | None = None

    # -- a file's view -------------------------------------------------------------------------

    def view(self, path: Path, source: str, tree: ast.Module | None = None) -> dict[str, Definition]:
        """The project definitions a file imports, by the dotted name the file uses for them
        (``Encoder``, ``models.Encoder``, ``enc.build``); star imports add bare names.

        Never raises: an unreadable or unparsable module is one the file does not see."""
        try:
            return self._view(_absolute(path), tree if tree is not None else ast.parse(source))
        except (SyntaxError, ValueError, RecursionError, MemoryError, OSError, RuntimeError):
            return {}

    def _view(self, path: Path, tree: ast.Module) -> dict[str, Definition]:
        found: dict[str, Definition] = {}
        continued = self.continued(path, tree)
        if continued is not None:  # a script run after another one, using its names without importing them
            summary = self._summary(continued)
            if summary is not None:
                for name in _free_names(tree):
                    if name in summary.definitions:
                        found[name] = summary.definitions[name]
        for node in _imports(tree):
            if isinstance(node, ast.ImportFrom):
                module = self._module_file(node.module or "", node.level, path)
                if module is None:
                    continue
                for alias in node.names:
                    if alias.name == "*":
                        summary = self._summary(module)
                        for name in self._public(summary):
                            definition = self._lookup(module, name, 0)
                            if definition is not None:
                                found.setdefault(name, definition)
                        continue
                    definition = self._lookup(module, alias.name, 0)
                    local = alias.asname or alias.name
                    if definition is not None:
                        found[local] = definition
                        continue
                    submodule = self._module_file(f"{node.module}.{alias.name}" if node.module else alias.name, node.level, path)
                    if submodule is not None:  # ``from . import models``: names reached as ``models.X``
                        found.update(self._module_names(submodule, local))
            else:
                for alias in node.names:
                    module = self._module_file(alias.name, 0, path)
                    if module is not None:
                        found.update(self._module_names(module, alias.asname or alias.name))
        return found

    # -- scripts that continue another one, and unfreezes in other modules -----------------------

    def continued(self, path: Path, tree: ast.Module) -> Path | None:
        """The script of the same folder that this one continues: it uses names it neither defines
        nor imports (``base_model``, ``model``), and exactly one sibling defines them all at module level
        (or reads them without defining them too: globals of the notebook both came from; when several do, the one whose name this file's name contains: ``fine_tune_xception.py``
        continues ``xception.py``). Notebooks split into scripts, course tasks run one after another."""
        free = _free_names(tree)
        if not free:
            return None
        folder = path.parent
        candidates = []
        for sibling in self._siblings(folder):
            if sibling == path:
                continue
            bound = self._module_bindings(sibling)
            if bound is not None and free <= bound[0] | bound[1] and free & bound[0]:
                candidates.append(sibling)
        if len(candidates) > 1:
            candidates = [c for c in candidates if c.stem.lower() in path.stem.lower()]
        return candidates[0] if len(candidates) == 1 else None

    def _siblings(self, folder: Path) -> list[Path]:
        if folder not in self._folders:
            try:
                self._folders[folder] = sorted(p for p in folder.iterdir() if p.suffix == ".py" and p.is_file())
            except OSError:
                self._folders[folder] = []
        return self._folders[folder]

    def _module_bindings(self, module: Path) -> tuple[frozenset[str], frozenset[str]] | None:
        """Every name a module binds at module level (assignments, loops, imports, definitions), and
        the names it reads without binding them."""
        if module not in self._bindings:
            try:
                tree = ast.parse(module.read_bytes())
            except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
                self._bindings[module] = None
            else:
                self._bindings[module] = (frozenset(_module_level_bindings(tree)), _free_names(tree))
        return self._bindings[module]

    def unfrozen_elsewhere(self, path: Path) -> dict[str, str]:
        """Names of the module at ``path`` (module-level models, builder functions) that another module
        of the project sets trainable again without keeping BatchNormalization frozen, with where
        (``{"base_model": "fine_tune.py:5"}``): a script that imports them, or one that continues this one.

        The other modules are the Python files under the working directory and the run's folders (virtualenvs,
        hidden and build folders left out) that assign ``trainable = True``; they are read once per process,
        only when a rule asks (a base frozen and never unfrozen in its own file). In pre-commit mode that
        finds a fine-tuning script that did not change."""
        path = _absolute(path)
        found: dict[str, str] = {}
        for other, tree in self._unfreezers():
            if other == path:
                continue
            names = {}
            if self.continued(other, tree) == path:
                names.update({n: n for n in _free_names(tree)})
            names.update(self._names_from(other, tree, path))
            if not names:
                continue
            for local, line in kk.unfreezes(tree):
                if local in names:
                    found.setdefault(names[local], f"{self._display(other)}:{line}")
        return found

    def _names_from(self, importer: Path, tree: ast.Module, module: Path) -> dict[str, str]:
        """The names ``importer`` takes from ``module``: its local name -> the name in ``module``."""
        names = {}
        for node in _imports(tree):
            if isinstance(node, ast.ImportFrom):
                if self._module_file(node.module or "", node.level, importer) != module:
                    continue
                for alias in node.names:
                    if alias.name != "*":
                        names[alias.asname or alias.name] = alias.name
        return names

    def _unfreezers(self) -> list[tuple[Path, ast.Module]]:
        if self._unfreezing is None:
            self._unfreezing = []
            seen = 0
            roots = list(dict.fromkeys(self._roots))  # the working directory (the project root) and the run's folders
            roots = [r for r in roots if not any(o != r and r.is_relative_to(o) for o in roots)]
            for root in roots:
                for folder, dirs, files in os.walk(root):
                    dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS
                               and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg"))]
                    for name in files:
                        if not name.endswith(".py"):
                            continue
                        seen += 1
                        if seen > _MAX_SCANNED:
                            return self._unfreezing
                        file = Path(folder) / name
                        try:
                            data = file.read_bytes()
                        except OSError:
                            continue
                        if len(data) > _MAX_BYTES or not kk.UNFREEZE_TEXT.search(data):
                            continue
                        try:
                            self._unfreezing.append((_absolute(file), ast.parse(data)))
                        except (SyntaxError, ValueError, RecursionError, MemoryError):
                            continue
        return self._unfreezing

    def _module_names(self, module: Path, prefix: str) -> dict[str, Definition]:
        summary = self._summary(module)
        if summary is None:
            return {}
        return {f"{prefix}.{name}": d for name, d in summary.definitions.items()}

    # -- resolution ------------------------------------------------------------------------------

    def _module_file(self, name: str, level: int, importer: Path) -> Path | None:
        key = (name, level, importer.parent)  # the files of one folder import the same modules
        if key not in self._files:
            self._files[key] = self._find_module_file(name, level, importer)
        return self._files[key]

    def _find_module_file(self, name: str, level: int, importer: Path) -> Path | None:
        parts = [p for p in name.split(".") if p]
        if level:
            base = importer.parent
            for _ in range(level - 1):
                base = base.parent
            bases = [base]
        else:
            if not parts:
                return None
            bases = [importer.parent, *self._package_roots(importer), *self._roots]
        for base in dict.fromkeys(bases):
            target = base.joinpath(*parts)
            for candidate in (target.with_suffix(".py") if parts else None, target / "__init__.py"):
                if candidate is not None and candidate.is_file() and "site-packages" not in candidate.parts:
                    return candidate
        for base in dict.fromkeys(bases):  # a namespace package (a folder without __init__.py)
            target = base.joinpath(*parts)
            if parts and target.is_dir() and "site-packages" not in target.parts:
                return target
        return None

    @staticmethod
    def _package_roots(importer: Path) -> list[Path]:
        """The folder above the top package holding ``importer`` (``src/pkg/a/b.py`` -> ``src``)."""
        folder, found = importer.parent, []
        while (folder / "__init__.py").is_file() and folder.parent != folder:
            folder = folder.parent
            found.append(folder)
        return found

    def _lookup(self, module: Path, name: str, depth: int) -> Definition | None:
        """A name as module ``module`` defines or re-exports it."""
        summary = self._summary(module)
        if summary is None or depth > _MAX_DEPTH or (module, name) in self._resolving:
            return None
        if name in summary.definitions:
            return summary.definitions[name]
        self._resolving.add((module, name))
        try:
            qualified = summary.imports.get(name)
            if qualified is not None:
                source, _, original = qualified.rpartition(".")
                level = len(source) - len(source.lstrip("."))
                target = self._module_file(source.lstrip("."), level, module)
                if target is not None:
                    return self._lookup(target, original, depth + 1)
            for star in summary.stars:
                level = len(star) - len(star.lstrip("."))
                target = self._module_file(star.lstrip("."), level, module)
                if target is not None:
                    found = self._lookup(target, name, depth + 1)
                    if found is not None:
                        return found
        finally:
            self._resolving.discard((module, name))
        return None

    def _public(self, summary: _Summary | None, depth: int = 0) -> list[str]:
        """The names ``from module import *`` binds (star imports of star imports included)."""
        if summary is None or depth > _MAX_DEPTH:
            return []
        names = [n for n in summary.definitions if not n.startswith("_")]
        names += [n for n in summary.imports if not n.startswith("_")]
        for star in summary.stars:
            level = len(star) - len(star.lstrip("."))
            target = self._module_file(star.lstrip("."), level, summary.path)
            if target is not None and target != summary.path:
                names += self._public(self._summary(target), depth + 1)
        return names

    # -- summaries -------------------------------------------------------------------------------

    def _summary(self, module: Path) -> _Summary | None:
        if module in self._summaries:
            return self._summaries[module]
        self._summaries[module] = None  # a cycle of imports sees "not summarized yet"
        if module.is_dir():  # a namespace package defines nothing itself
            self._summaries[module] = _Summary(module)
            return self._summaries[module]
        try:
            tree = ast.parse(module.read_bytes())
        except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        summary = _Summary(module)
        for node in _imports(tree, top_level=True):
            if isinstance(node, ast.ImportFrom):
                source = "." * node.level + (node.module or "")
                for alias in node.names:
                    if alias.name == "*":
                        summary.stars.append(source)
                    else:
                        summary.imports[alias.asname or alias.name] = f"{source}.{alias.name}" if source else alias.name
            else:
                for alias in node.names:
                    summary.imports[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        self._summaries[module] = summary
        _Summarizer(self, summary, self._display(module)).run(tree)
        return summary

    def _display(self, module: Path) -> str:
        try:
            return os.path.relpath(module, self._display_base)
        except ValueError:
            return str(module)

    def imported_definition(self, summary: _Summary, name: str) -> Definition | None:
        """A name that ``summary``'s module imports from another project module."""
        qualified = summary.imports.get(name)
        if qualified is None:
            for star in summary.stars:
                level = len(star) - len(star.lstrip("."))
                target = self._module_file(star.lstrip("."), level, summary.path)
                found = self._lookup(target, name, 1) if target is not None else None
                if found is not None:
                    return found
            return None
        source, _, original = qualified.rpartition(".")
        if not source:
            return None
        level = len(source) - len(source.lstrip("."))
        target = self._module_file(source.lstrip("."), level, summary.path)
        return self._lookup(target, original, 1) if target is not None else None


class _Summarizer:
    """What the top-level classes and functions of one module build (one pass over each)."""

    def __init__(self, project: Project, summary: _Summary, display: str) -> None:
        self.project = project
        self.summary = summary
        self.display = display

    def qualname(self, node: ast.AST) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        head = self.summary.imports.get(node.id, node.id)
        return ".".join([head, *reversed(parts)])

    def run(self, tree: ast.Module) -> None:
        defs = [n for n in _top_level(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        local = {d.name: d for d in defs}
        # To a fixed point: a class may build another class of the module, a function train
        # its parameter through another function.
        trains: dict[str, set[str]] = {}
        for _ in range(3):
            for node in defs:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    trains[node.name] = _trained_params(node, local, trains)
                definition = self._define(node, local)
                if node.name in trains:
                    params = tuple(a.arg for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs])
                    definition = replace(definition, params=params, trains=tuple(sorted(trains[node.name])))
                self.summary.definitions[node.name] = definition
        for node in defs:
            definition = self.summary.definitions[node.name]
            if definition.framework == "keras" and definition.is_model and not definition.frozen_at:
                line = kk.freeze_line(node)
                if line:  # a builder that freezes (part of) what it builds
                    self.summary.definitions[node.name] = replace(definition, frozen_at=f"{self.display}:{line}")
        self.variables(tree, local)

    def _define(self, node, local) -> Definition:
        framework, is_model = "", False
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                framework = framework or self._framework_of_base(base)
            is_model = bool(framework)
        bn, dropout, mentions = self._mentions(node, local, node.name)
        if not framework:
            framework = "torch" if "torch" in mentions else "keras" if "keras" in mentions else ""
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            is_model = bool(framework) and self._returns_a_model(node, local)
            kind = "function"
        else:
            kind = "class"
        has_bn: bool | None = True if bn else (False if is_model and kind == "class" else None)
        freezes = self._part_freezes(node, local) if kind == "class" and framework == "torch" and bn else ()
        return Definition(node.name, kind, framework, is_model, has_bn, dropout, f"{self.display}:{node.lineno}",
                          part_freezes=freezes, training_default=kind == "class" and _defaults_to_training(node))

    def _part_freezes(self, cls: ast.ClassDef, local) -> tuple[PartFreeze, ...]:
        """What a PyTorch class freezes of its own sub-modules (``PartFreeze``): read from ``__init__``
        (which attribute holds BatchNorm, which is pretrained), its methods and ``forward``."""
        methods = {n.name: n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        init = methods.get("__init__")
        if init is None:
            return ()
        bn_attrs, pretrained_attrs = self._attribute_facts(init, local)
        found: list[PartFreeze] = []
        for name, method in methods.items():
            for attr, line in _self_freezes(method):
                found.append(PartFreeze(attr, bn_attrs.get(attr), f"{self.display}:{line}", name))
        # ``self.fine_tune()`` in ``__init__``: what that method freezes is frozen once the class is built
        called = {n.func.attr for n in ast.walk(init) if isinstance(n, ast.Call) and _is_self_attr(n.func)}
        found += [replace(f, method="__init__") for f in found if f.method in called]
        forward = methods.get("forward")
        for attr, line in _no_grad_calls(forward) if forward is not None else ():
            if pretrained_attrs.get(attr) and bn_attrs.get(attr):
                found.append(PartFreeze(attr, True, f"{self.display}:{line}", "__init__", "no_grad"))
        return tuple(dict.fromkeys(found))

    def _attribute_facts(self, init, local) -> tuple[dict[str, bool], dict[str, bool]]:
        """(attribute -> holds BatchNorm, attribute -> pretrained) for ``self.X = ...`` in ``__init__``,
        following its local names in order (``net = resnet50(weights=...); self.body = nn.Sequential(*list(net.children())[:-1])``)."""
        bn_names: dict[str, bool] = {}
        pretrained_names: dict[str, bool] = {}
        bn_attrs: dict[str, bool] = {}
        pretrained_attrs: dict[str, bool] = {}
        assigns = sorted((n for n in ast.walk(init) if isinstance(n, ast.Assign)), key=lambda n: (n.lineno, n.col_offset))
        for node in assigns:
            used = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
            bn = self._mentions(node.value, local, "")[0] or any(bn_names.get(u) for u in used)
            pretrained = pt.loads_weights_ast(node.value) or any(pretrained_names.get(u) for u in used)
            for target in node.targets:
                if isinstance(target, ast.Name):
                    bn_names[target.id], pretrained_names[target.id] = bn, pretrained
                elif _is_self_attr(target):
                    bn_attrs[target.attr], pretrained_attrs[target.attr] = bn, pretrained
        return bn_attrs, pretrained_attrs

    def variables(self, tree: ast.Module, local) -> None:
        """Module-level models (``model_conv = models.resnet18(weights=...)``) and the module-level
        freezes of models it defines or imports (``for p in model_conv.parameters(): p.requires_grad = False``)."""
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                if name in self.summary.definitions or not self._constructs(node.value, local):
                    continue
                bn, dropout, mentions = self._mentions(node.value, local, name)
                framework = "torch" if "torch" in mentions else "keras" if "keras" in mentions else ""
                if framework:
                    self.summary.definitions[name] = Definition(
                        name, "variable", framework, True, True if bn else None, dropout, f"{self.display}:{node.lineno}")
        for node in tree.body:
            name = _frozen_name(node) or kk.frozen_name(node)
            if name is None:
                continue
            definition = self.summary.definitions.get(name) or self.project.imported_definition(self.summary, name)
            if definition is not None and definition.kind == "variable" and not definition.frozen_at:
                self.summary.definitions[name] = replace(definition, frozen_at=f"{self.display}:{node.lineno}")

    def _mentions(self, node, local, own_name: str) -> tuple[bool, bool, set[str]]:
        """(builds BatchNorm, builds Dropout, the frameworks it names) for a definition or expression."""
        bn, dropout, mentions = False, False, set()
        for n in ast.walk(node):
            if not isinstance(n, (ast.Name, ast.Attribute)):
                continue
            q = self.qualname(n)
            if q is None:
                continue
            last = q.rsplit(".", 1)[-1]
            if pt.is_torch_bn_class(q) or pt.is_torchvision_bn_model(q):
                bn, mentions = True, mentions | {"torch"}
            elif kk.is_bn_application(q) or (keras_name(q) and last in kk.BN_CLASSES) or (last in kk.BN_CLASSES and "." not in q):
                bn, mentions = True, mentions | {"keras"}
            elif keras_name(q) and last in kk.DROPOUT_CLASSES:
                dropout, mentions = True, mentions | {"keras"}
            elif q.startswith(("torch.", "torchvision.")):
                mentions.add("torch")
            elif keras_name(q):
                mentions.add("keras")
            elif isinstance(n, ast.Name) and n.id in local and n.id != own_name:
                other = self.summary.definitions.get(n.id)
                # a model of the module, or a helper building BatchNormalization layers for it (``conv_bn(x)``)
                if other is not None and (other.is_model or (other.has_bn and other.framework == "keras")):
                    bn = bn or bool(other.has_bn)
                    mentions.add(other.framework)
            elif isinstance(n, ast.Name) and n.id in self.summary.imports or (
                isinstance(n, ast.Name) and self.summary.stars and n.id not in local
            ):
                other = self.project.imported_definition(self.summary, n.id)
                if other is not None and other.is_model:
                    bn = bn or bool(other.has_bn)
                    mentions.add(other.framework)
        return bn, dropout, mentions

    def _framework_of_base(self, base: ast.AST) -> str:
        q = self.qualname(base) or ""
        last = q.rsplit(".", 1)[-1]
        if q.startswith(("torch.nn", "torchvision.models")) or (last == "Module" and "." not in q):
            return "torch"
        if keras_name(q) and last in ("Model", "Layer", "Sequential", "Functional"):
            return "keras"
        if isinstance(base, ast.Name):
            other = self.summary.definitions.get(base.id) or self.project.imported_definition(self.summary, base.id)
            if other is not None and other.kind == "class" and other.is_model:
                return other.framework
        return ""

    def _returns_a_model(self, fn, local) -> bool:
        """``return resnet50()``, ``return Net(...)``, ``model = Sequential(...); return model``."""
        built: set[str] = set()
        for n in ast.walk(fn):
            if isinstance(n, ast.Assign) and self._constructs(n.value, local):
                built.update(t.id for t in n.targets if isinstance(t, ast.Name))
            if isinstance(n, ast.Return) and n.value is not None:
                if self._constructs(n.value, local) or (isinstance(n.value, ast.Name) and n.value.id in built):
                    return True
        return False

    def _constructs(self, value, local) -> bool:
        if not isinstance(value, ast.Call):
            return False
        q = self.qualname(value.func) or ""
        if q.startswith(("torch.", "torchvision.", "timm.")) or keras_name(q):
            return True
        head = q.split(".")[0]
        return head in local or head in self.summary.imports


def _defaults_to_training(cls: ast.ClassDef) -> bool:
    """``def call(self, x, training=True)`` in the class body."""
    for fn in cls.body:
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name == "call":
            args = fn.args
            positional = [*args.posonlyargs, *args.args]
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            return any(a.arg == "training" and isinstance(d, ast.Constant) and d.value is True for a, d in pairs)
    return False


def _frozen_name(node) -> str | None:
    """``X.requires_grad_(False)`` or ``for p in X.parameters(): p.requires_grad = False`` at module level: X."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        call = node.value
        if isinstance(call.func, ast.Attribute) and call.func.attr == "requires_grad_" and call.args and (
            isinstance(call.args[0], ast.Constant) and call.args[0].value is False
        ):
            return _root_name(call.func.value)
    if isinstance(node, ast.For) and isinstance(node.iter, ast.Call) and isinstance(node.iter.func, ast.Attribute):
        if node.iter.func.attr in ("parameters", "named_parameters") and any(
            isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Attribute) and n.targets[0].attr == "requires_grad"
            and isinstance(n.value, ast.Constant) and n.value.value is False
            for n in ast.walk(node)
        ):
            return _root_name(node.iter.func.value)
    return None


def _is_self_attr(node) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"


def _false(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _self_freezes(fn) -> list[tuple[str, int]]:
    """``for p in self.X.parameters(): p.requires_grad = False`` and ``self.X.requires_grad_(False)``
    in a method: (X, line)."""
    found = []
    for n in ast.walk(fn):
        if isinstance(n, ast.For) and isinstance(n.iter, ast.Call) and isinstance(n.iter.func, ast.Attribute):
            owner = n.iter.func.value
            if n.iter.func.attr in ("parameters", "named_parameters") and _is_self_attr(owner) and any(
                (isinstance(m, ast.Assign) and isinstance(m.targets[0], ast.Attribute) and m.targets[0].attr == "requires_grad"
                 and _false(m.value))
                or (isinstance(m, ast.Call) and isinstance(m.func, ast.Attribute) and m.func.attr == "requires_grad_"
                    and m.args and _false(m.args[0]))
                for m in ast.walk(n)
            ):
                found.append((owner.attr, n.lineno))
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "requires_grad_" and (
            _is_self_attr(n.func.value) and n.args and _false(n.args[0])
        ):
            found.append((n.func.value.attr, n.lineno))
    return found


def _no_grad_calls(fn) -> list[tuple[str, int]]:
    """``with torch.no_grad(): ... self.X(...)`` in ``forward``: (X, line)."""
    found = []
    for n in ast.walk(fn):
        if isinstance(n, ast.With) and any(
            isinstance(i.context_expr, ast.Call) and isinstance(i.context_expr.func, (ast.Attribute, ast.Name))
            and (getattr(i.context_expr.func, "attr", None) or getattr(i.context_expr.func, "id", None)) in ("no_grad", "inference_mode")
            for i in n.items
        ):
            for m in (m for stmt in n.body for m in ast.walk(stmt)):
                if isinstance(m, ast.Call) and _is_self_attr(m.func):
                    found.append((m.func.attr, m.lineno))
    return found


def _root_name(node) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _trained_params(fn, local: dict, known: dict[str, set[str]]) -> set[str]:
    """The parameters a function trains: ``P.train()`` and ``P(...)`` in a body that calls
    ``.backward()``, or passed on to a function of the module that trains them."""
    params = {a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]}
    moded, called, backward, found = set(), set(), False, set()
    for n in ast.walk(fn):
        if not isinstance(n, ast.Call):
            continue
        func = n.func
        if isinstance(func, ast.Attribute) and func.attr == "backward":
            backward = True
        elif isinstance(func, ast.Attribute) and func.attr == "train" and isinstance(func.value, ast.Name):
            if not (n.args and isinstance(n.args[0], ast.Constant) and n.args[0].value is False):
                moded.add(func.value.id)
        elif isinstance(func, ast.Name) and func.id in params:
            called.add(func.id)
        if isinstance(func, ast.Name) and func.id in local and known.get(func.id):
            callee = local[func.id]
            names = [a.arg for a in [*callee.args.posonlyargs, *callee.args.args]]
            bound = dict(zip(names, n.args))
            bound.update({k.arg: k.value for k in n.keywords if k.arg})
            for name in known[func.id]:
                value = bound.get(name)
                if isinstance(value, ast.Name) and value.id in params:
                    found.add(value.id)
    if backward:
        found |= moded & called & params
    return found


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _top_level(tree: ast.Module):
    stack = list(reversed(tree.body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            inner = list(node.body) + list(getattr(node, "orelse", [])) + [s for h in getattr(node, "handlers", []) for s in h.body]
            stack.extend(reversed(inner))


def _imports(tree: ast.Module, top_level: bool = False):
    """Import statements: at module level (and under if/try), or in any block (statements only,
    never into expressions: a tenth of the cost of ``ast.walk``)."""
    if top_level:
        yield from (n for n in _top_level(tree) if isinstance(n, (ast.Import, ast.ImportFrom)))
        return
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            stack.extend(getattr(node, name, ()))


def _module_level_bindings(tree: ast.Module) -> set[str]:
    """Names bound outside any function or class body (those bodies' own names excluded)."""
    bound: set[str] = set()
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name.split(".")[0]) for a in node.names if a.name != "*")
        stack.extend(ast.iter_child_nodes(node))
    return bound


def _free_names(tree: ast.Module) -> frozenset[str]:
    """Names the module reads but binds nowhere (not assigned, imported, defined, a parameter or a
    builtin): what a script that continues another one takes from it. Empty for a star import."""
    loaded, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return frozenset()
                bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
    return frozenset(loaded - bound - _BUILTINS)


_BUILTINS = frozenset(dir(__import__("builtins"))) | {"__file__", "__name__", "get_ipython", "display"}
