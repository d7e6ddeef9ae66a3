"""What a rule sees of one file: its tree, its imports and the shared analyses, each built once."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Callable

import libcst as cst

from lint.names import ImportMap

if TYPE_CHECKING:
    from lint.config import Settings
    from lint.flow.walk import Flow


class FileContext:
    def __init__(
        self,
        path: str,
        module: cst.Module,
        settings: "Settings",
        project: dict | None = None,
        unfrozen_elsewhere: "Callable[[], dict[str, str]] | None" = None,
        keras_models: bool = True,
    ) -> None:
        self.path = path
        self.module = module
        self.settings = settings
        #: the definitions this file imports from other modules of the project (``lint.flow.project``)
        self.project = project or {}
        #: names of this module that other modules of the project unfreeze, asked only when needed
        #: (``lint.flow.project.Project.unfrozen_elsewhere``)
        self.unfrozen_elsewhere = unfrozen_elsewhere
        #: some rule checking this file queries the Keras model events (``Rule.queries_keras_models``)
        self.keras_models = keras_models

    @property
    def target(self):
        return self.settings.target_keras

    @cached_property
    def imports(self) -> ImportMap:
        return ImportMap(self.module)

    @cached_property
    def assignments(self) -> list[tuple[cst.BaseExpression, cst.BaseExpression]]:
        """Every assignment of the file (target, value), in source order: for a rule's light query
        (``batch = next(iter(ds))``). One cheap pass, only when a rule asks."""
        from lint.nodes import walk

        found = []
        for node in walk(self.module):
            if isinstance(node, cst.Assign):
                found.extend((t.target, node.value) for t in node.targets)
            elif isinstance(node, cst.AnnAssign) and node.value is not None:
                found.append((node.target, node.value))
        return found

    @cached_property
    def flow(self) -> "Flow":
        from lint.flow.walk import Flow

        return Flow(self.module, self.imports, self.path, self.project, self.settings.extra_batchnorm_models,
                    self.unfrozen_elsewhere, self.keras_models)

    @property
    def is_test_file(self) -> bool:
        """Unit tests run BatchNorm in training mode on purpose: the inference rules leave them alone."""
        from lint.frameworks.torch import is_test_file

        return is_test_file(self.path)

    def code(self, node: cst.CSTNode) -> str:
        """The source text of a node, for messages."""
        return self.module.code_for_node(node).strip()
