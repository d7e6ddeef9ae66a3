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


def unfrozen_note(models, model, settings) -> tuple[str, str] | None:
    """Whether a BN001/BN002 warning is reported, and what it says first and last; None: not reported.

    With Keras 3 / tf.keras 2.x a frozen BatchNormalization layer runs in inference mode, so the
    missing ``training=False`` only matters once the base is unfrozen. A base that this file or
    another module of the project unfreezes (without keeping BatchNormalization frozen) is
    reported, naming the unfreeze when it is in another file; a base nothing unfreezes is feature
    extraction as written (issue 11 cause 8) and is reported only with the ``latent`` setting,
    marked "latent". Multi-backend Keras before 2.4 used batch statistics even while frozen.
    """
    if settings.target_keras.legacy:
        return "", ""
    where = models.unfrozen_at(model)
    if where:
        return "", f" (the base is unfrozen at {where})"
    if where == "":
        return "", ""
    return ("latent (nothing in this project unfreezes it): ", "") if settings.latent else None
