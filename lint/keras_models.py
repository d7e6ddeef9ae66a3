"""Moved to ``lint.flow.keras_models``; this name stays only for ``lint.keras_layers``'s import."""

from lint.flow.keras_models import KerasModels  # noqa: F401
