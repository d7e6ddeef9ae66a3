"""Finding the BatchNormalization layers of a model, nested models included."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_bncheck import _keras


@dataclass(frozen=True)
class BatchNormRef:
    """One BatchNormalization layer and where it sits: ``path`` is ``outer/inner/layer``."""

    layer: Any
    path: str
    nested: bool  # inside a sub-model (a fine-tuned base, typically)

    @property
    def frozen(self) -> bool:
        # Keras 3 propagates `trainable` down to sublayers, and BatchNormalization runs in
        # inference mode when not trainable, also inside fit(): a frozen layer never updates.
        return not self.layer.trainable


def find_batchnorm_layers(model: Any) -> list[BatchNormRef]:
    """Every BatchNormalization layer of ``model``, depth first, each once (shared layers)."""
    keras = _keras.keras()
    found: list[BatchNormRef] = []
    seen: set[int] = set()

    def walk(layer: Any, prefix: str, depth: int) -> None:
        for sub in layer._flatten_layers(include_self=False, recursive=False):
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            path = f"{prefix}{sub.name}"
            if isinstance(sub, keras.layers.BatchNormalization):
                found.append(BatchNormRef(sub, path, nested=depth > 0))
            else:
                walk(sub, f"{path}/", depth + 1 if isinstance(sub, keras.Model) else depth)

    walk(model, "", 0)
    return found
