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


def latent_note(models, model, target: KerasTarget) -> str:
    """Say plainly when a BN001/BN002 warning is only latent in the file as written.

    With Keras 3 / tf.keras 2.x a frozen BatchNormalization layer runs in inference mode, so
    the warning is about a future fine-tuning; when nothing in the file unfreezes the base
    (feature extraction only, issue 11 cause 8) the message says so, so the reader can tell
    it from a base that this file does unfreeze. Unfreezes in other modules are not seen.
    """
    if target.legacy or models.is_unfrozen(model):
        return ""
    return "latent (nothing in this file unfreezes it): "
