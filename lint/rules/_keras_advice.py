"""Message parts shared by the Keras transfer-learning rules (BN001–BN003), by target version."""

from __future__ import annotations

from lint.config import KerasTarget

ISSUE_20285 = "https://github.com/keras-team/keras/issues/20285"


def when_it_bites(target: KerasTarget) -> str:
    """When a frozen base called in training mode goes wrong, for this Keras version."""
    if target.legacy:
        return (
            f"in {target.label} frozen BatchNormalization layers still normalize with batch statistics "
            "during fit(), so fit() and predict() disagree now"
        )
    return (
        "harmless while it stays frozen, but once it is unfrozen for fine-tuning its BatchNormalization "
        "layers train and fit() and predict() disagree"
    )


def keep_frozen_too(target: KerasTarget) -> str:
    """The extra step that Keras 3.0–3.15 need on top of ``training=False``."""
    if target.training_false_protects:
        return ""
    return (
        f"; when unfreezing, also set trainable = False on each BatchNormalization layer "
        f"({target.label} ignores training=False in fit(), keras#20285)"
    )
