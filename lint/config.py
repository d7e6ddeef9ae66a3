"""Settings: ``[tool.bncheck]`` in pyproject.toml, then command-line flags on top (as ruff)."""

from __future__ import annotations

import fnmatch
import functools
import re
import tomllib
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

#: The newest Keras release at the time of writing; the default when none is installed.
LATEST_KERAS = "3.15.1"
#: The first Keras release expected to carry the keras-team/keras#20285 fix (on master, unreleased).
FIXED_20285 = (3, 16)

DEFAULT_EXCLUDE = (
    ".git", ".hg", ".svn", ".bzr", ".venv", "venv", ".tox", ".nox", "__pycache__", "build", "dist",
    "node_modules", ".eggs", "*.egg-info", ".mypy_cache", ".pytest_cache", ".ruff_cache",
    ".ipynb_checkpoints", "__pypackages__",
)

_KEYS = {
    "select", "ignore", "extend-select", "per-file-ignores", "exclude", "extend-exclude",
    "force-exclude", "extra-batchnorm-models", "target-keras", "timeout", "latent",
}


class ConfigError(Exception):
    """A bad setting; the CLI prints it on one line and exits with 2."""


@dataclass(frozen=True)
class KerasTarget:
    """The Keras version the messages are written for."""

    version: tuple[int, ...]
    source: str  # where the version came from, for --show-settings and messages

    @classmethod
    def parse(cls, text: str, source: str) -> "KerasTarget":
        if not re.fullmatch(r"\d+(\.\d+){0,2}", text.strip()):
            raise ConfigError(f"target-keras: {text!r} is not a version like '3.15' or '2.15.0'")
        return cls(tuple(int(p) for p in text.strip().split(".")), source)

    @classmethod
    def installed(cls) -> "KerasTarget":
        """The installed ``keras`` distribution's version, read from its metadata without importing it."""
        try:
            text = metadata.version("keras")
        except metadata.PackageNotFoundError:
            return cls.parse(LATEST_KERAS, "latest release (keras is not installed)")
        match = re.match(r"\d+(\.\d+){0,2}", text)
        return cls.parse(match.group(0) if match else LATEST_KERAS, f"installed keras {text}")

    @property
    def label(self) -> str:
        return "Keras " + ".".join(map(str, self.version[:2]))

    @property
    def legacy(self) -> bool:
        """Multi-backend Keras before 2.4: frozen BatchNormalization still used batch statistics in fit()."""
        return self.version < (2, 4)

    @property
    def training_false_protects(self) -> bool:
        """Does ``base(x, training=False)`` alone keep BatchNormalization in inference mode in fit()?

        Yes in Keras 2 / tf.keras and in releases with the #20285 fix; Keras 3.0–3.15 override it.
        """
        return self.version < (3,) or self.version >= FIXED_20285


@dataclass(frozen=True)
class Settings:
    select: tuple[str, ...] = ("BN",)
    ignore: tuple[str, ...] = ()
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    force_exclude: bool = False
    extra_batchnorm_models: tuple[str, ...] = ()
    target_keras: KerasTarget = field(default_factory=KerasTarget.installed)
    timeout: float = 20.0  # seconds per file, on top of a size allowance (see engine)
    #: BN001/BN002 also for a frozen base nothing in the project unfreezes (a warning for a future fine-tuning)
    latent: bool = False
    root: Path = field(default_factory=Path.cwd)  # per-file-ignores and excludes are relative to it

    def ignored_for(self, path: Path) -> tuple[str, ...]:
        if not self.per_file_ignores:  # resolving the path costs a few syscalls per file
            return ()
        rel = _relative(path, self.root)
        return tuple(
            code
            for pattern, codes in self.per_file_ignores
            if fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(path.name, pattern)
            for code in codes
        )

    def is_excluded(self, path: Path, below: Path | None = None) -> bool:
        """Excluded by a name pattern on a component below ``below``, or by a path pattern."""
        names = path.relative_to(below).parts if below and path.is_relative_to(below) else path.parts
        name_patterns, path_patterns = _exclude_matchers(self.exclude)
        if name_patterns is not None and any(name_patterns.match(name) for name in names):
            return True
        if path_patterns is not None:  # resolved only for path patterns: a few syscalls per file
            rel = _relative(path, self.root)
            return path_patterns.match(rel) is not None
        return False


@functools.cache
def _exclude_matchers(patterns: tuple[str, ...]) -> tuple[re.Pattern | None, re.Pattern | None]:
    """One regular expression for the name patterns and one for the path patterns (a path
    pattern also excludes everything below the folder it names)."""
    names = [fnmatch.translate(p) for p in patterns if "/" not in p]
    paths = [fnmatch.translate(q) for p in patterns if "/" in p for q in (p.rstrip("/"), p.rstrip("/") + "/*")]
    return (
        re.compile("|".join(f"(?:{n})" for n in names)) if names else None,
        re.compile("|".join(f"(?:{n})" for n in paths)) if paths else None,
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return path.as_posix()


def find_config(start: Path) -> Path | None:
    """The nearest pyproject.toml with a ``[tool.bncheck]`` table, from ``start`` upwards."""
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                if "bncheck" in _read_toml(candidate).get("tool", {}):
                    return candidate
            except ConfigError:
                return candidate  # report its error rather than silently skipping it
    return None


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_settings(config: Path | None) -> Settings:
    """Settings from a pyproject.toml's ``[tool.bncheck]`` (or defaults when ``config`` is None)."""
    if config is None:
        return Settings()
    data = _read_toml(config)
    table = data.get("tool", {}).get("bncheck", {}) if config.name == "pyproject.toml" else data
    if not isinstance(table, dict):
        raise ConfigError(f"{config}: [tool.bncheck] must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{config}: unknown setting {unknown[0]!r} in [tool.bncheck] (known: {', '.join(sorted(_KEYS))})")
    settings = Settings(root=config.parent.resolve())
    return apply(settings, table, str(config))


def apply(settings: Settings, values: dict, origin: str) -> Settings:
    """Overlay ``values`` (config keys, kebab-case) on ``settings``; flags use the same path."""
    changes: dict = {}
    if "select" in values:
        changes["select"] = _codes(values["select"], "select", origin)
    if "extend-select" in values:
        changes["select"] = changes.get("select", settings.select) + _codes(values["extend-select"], "extend-select", origin)
    if "ignore" in values:
        changes["ignore"] = _codes(values["ignore"], "ignore", origin)
    if "per-file-ignores" in values:
        table = values["per-file-ignores"]
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: per-file-ignores must be a table of glob = [codes]")
        changes["per_file_ignores"] = tuple((k, _codes(v, f"per-file-ignores.{k}", origin)) for k, v in table.items())
    if "exclude" in values:
        changes["exclude"] = _strings(values["exclude"], "exclude", origin)
    if "extend-exclude" in values:
        changes["exclude"] = changes.get("exclude", settings.exclude) + _strings(values["extend-exclude"], "extend-exclude", origin)
    if "force-exclude" in values:
        if not isinstance(values["force-exclude"], bool):
            raise ConfigError(f"{origin}: force-exclude must be true or false")
        changes["force_exclude"] = values["force-exclude"]
    if "extra-batchnorm-models" in values:
        changes["extra_batchnorm_models"] = _strings(values["extra-batchnorm-models"], "extra-batchnorm-models", origin)
    if "target-keras" in values:
        changes["target_keras"] = KerasTarget.parse(str(values["target-keras"]), origin)
    if "latent" in values:
        if not isinstance(values["latent"], bool):
            raise ConfigError(f"{origin}: latent must be true or false")
        changes["latent"] = values["latent"]
    if "timeout" in values:
        timeout = values["timeout"]
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"{origin}: timeout must be a positive number of seconds")
        changes["timeout"] = float(timeout)
    return replace(settings, **changes)


def _strings(value, key: str, origin: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{origin}: {key} must be a list of strings")
    return tuple(v.strip() for v in value)


def _codes(value, key: str, origin: str) -> tuple[str, ...]:
    codes = tuple(c.upper() for c in _strings(value, key, origin))
    bad = [c for c in codes if not re.fullmatch(r"ALL|BN\d{0,3}", c)]
    if bad:
        raise ConfigError(f"{origin}: {key}: {bad[0]!r} is not a rule code or prefix such as BN001 or BN1")
    return codes
