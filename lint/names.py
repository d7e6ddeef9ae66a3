"""Qualified names from one file's imports: our own light pass instead of libcst's providers.

libcst's ``QualifiedNameProvider`` builds full scope analysis and took about 100 s for 200
files of the keras tree; the rules only need "which module does this dotted name come
from", which one walk over the import statements answers.
"""

from __future__ import annotations

import libcst as cst

from lint.frameworks.keras import keras_name  # noqa: F401  (re-exported: rules spell it lint.names.keras_name)


class ImportMap:
    """Local name -> fully qualified name, from every ``import`` in the file (any scope)."""

    def __init__(self, module: cst.Module) -> None:
        self.aliases: dict[str, str] = {}
        for node in _imports(module):
            self._add(node)

    def _add(self, node: cst.Import | cst.ImportFrom) -> None:
        if isinstance(node, cst.Import):
            for alias in node.names:
                full = dotted(alias.name)
                if full is None:
                    continue
                if alias.asname is not None:
                    self.aliases[_asname(alias)] = full
                else:  # ``import a.b.c`` binds ``a``
                    top = full.split(".")[0]
                    self.aliases[top] = top
            return
        if isinstance(node.names, cst.ImportStar):
            return
        base = "." * len(node.relative) + (dotted(node.module) or "")
        for alias in node.names:
            name = dotted(alias.name)
            if name is None:
                continue
            local = _asname(alias) if alias.asname is not None else name
            self.aliases[local] = f"{base}.{name}" if base and not base.endswith(".") else base + name

    def qualname(self, node: cst.BaseExpression) -> str | None:
        """``tf.keras.applications.ResNet50`` -> ``tensorflow.keras.applications.ResNet50``.

        Names that no import binds resolve to themselves, so a local ``BatchNormalization``
        class or a bare builtin still has a name to compare.
        """
        path = dotted(node)
        if path is None:
            return None
        head, _, rest = path.partition(".")
        full = self.aliases.get(head, head)
        return f"{full}.{rest}" if rest else full

    def imports_from(self, *roots: str) -> bool:
        return any(v == r or v.startswith(r + ".") for v in self.aliases.values() for r in roots)


def dotted(node: cst.CSTNode | None) -> str | None:
    """``a.b.c`` for a chain of Name/Attribute nodes, else None."""
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if not isinstance(node, cst.Name):
        return None
    parts.append(node.value)
    return ".".join(reversed(parts))


def _asname(alias: cst.ImportAlias) -> str:
    assert alias.asname is not None
    name = alias.asname.name
    return name.value if isinstance(name, cst.Name) else ""


def _imports(module: cst.Module):
    """Import statements anywhere in the file, without a full visitor (cheap)."""
    stack: list[cst.CSTNode] = [module]
    while stack:
        node = stack.pop()
        if isinstance(node, (cst.Import, cst.ImportFrom)):
            yield node
        elif isinstance(node, (cst.Module, cst.IndentedBlock, cst.SimpleStatementLine)):
            stack.extend(node.body)
        elif isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.If, cst.Else, cst.With, cst.For, cst.While)):
            stack.append(node.body)
            orelse = getattr(node, "orelse", None)
            if orelse is not None:
                stack.append(orelse)
        elif isinstance(node, cst.Try):
            stack.append(node.body)
            stack.extend(h.body for h in node.handlers)
            for extra in (node.orelse, node.finalbody):
                if extra is not None:
                    stack.append(extra.body)
        elif isinstance(node, cst.SimpleStatementSuite):
            stack.extend(node.body)
