"""What a rule sees of one file: its tree, its imports and the shared analyses, each built once."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Callable

import libcst as cst

from lint.names import ImportMap

if TYPE_CHECKING:
    from lint.config import Settings
    from lint.keras_layers import KerasLayers
    from lint.flow.keras_models import KerasModels
    from lint.flow.walk import Flow


class FileContext:
    def __init__(
        self,
        path: str,
        module: cst.Module,
        settings: "Settings",
        project: dict | None = None,
        unfrozen_elsewhere: "Callable[[], dict[str, str]] | None" = None,
    ) -> None:
        self.path = path
        self.module = module
        self.settings = settings
        #: the definitions this file imports from other modules of the project (``lint.flow.project``)
        self.project = project or {}
        #: names of this module that other modules of the project unfreeze, asked only when needed
        #: (``lint.flow.project.Project.unfrozen_elsewhere``)
        self.unfrozen_elsewhere = unfrozen_elsewhere

    @property
    def target(self):
        return self.settings.target_keras

    @cached_property
    def imports(self) -> ImportMap:
        return ImportMap(self.module)

    @cached_property
    def keras_models(self) -> "KerasModels":
        from lint.flow.keras_models import KerasModels

        return KerasModels(self.module, self.imports, self.settings.extra_batchnorm_models, self.project,
                           self.unfrozen_elsewhere)

    @cached_property
    def keras_layers(self) -> "KerasLayers":
        from lint.keras_layers import KerasLayers

        return KerasLayers(self.module, self.imports, self.keras_models, self.settings.extra_batchnorm_models)

    @cached_property
    def flow(self) -> "Flow":
        from lint.flow.walk import Flow

        return Flow(self.module, self.imports, self.path, self.project)

    @property
    def is_test_file(self) -> bool:
        """Unit tests run BatchNorm in training mode on purpose: the inference rules leave them alone."""
        from lint.frameworks.torch import is_test_file

        return is_test_file(self.path)

    def code(self, node: cst.CSTNode) -> str:
        """The source text of a node, for messages."""
        return self.module.code_for_node(node).strip()
