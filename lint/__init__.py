"""bncheck: a static linter for BatchNormalization train/inference pitfalls (built on libcst)."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("pytest-bncheck")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
