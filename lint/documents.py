"""Files as the linter reads and writes them: the Python text to check, where its lines come
from, and how a fixed text goes back to disk without ever leaving a half-written file."""

from __future__ import annotations

import codecs
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


class DocumentError(Exception):
    """A file that cannot be read as source; the message is the one-line report."""


@dataclass(frozen=True)
class Location:
    """Where a line of the checked text sits in the file the user sees."""

    line: int  # line in the file (for a notebook: line within the cell)
    cell: int | None = None  # notebook code cell number (1-based, code cells only), None for .py files
    raw_line: int | None = None  # line of the raw file (a notebook's JSON), for SARIF/annotations


class PythonDocument:
    """A ``.py`` file: the checked text is the file."""

    kind = "python"

    def __init__(self, path: Path, text: str, newline_bom: bytes = b"") -> None:
        self.path = path
        self.source = text
        self._bom = newline_bom

    @classmethod
    def from_bytes(cls, path: Path, data: bytes) -> "PythonDocument":
        return cls(path, decode_source(data), codecs.BOM_UTF8 if data.startswith(codecs.BOM_UTF8) else b"")

    def locate(self, line: int) -> Location:
        return Location(line)

    def render(self, fixed_source: str) -> bytes:
        return self._bom + fixed_source.encode("utf-8")


def decode_source(data: bytes) -> str:
    if b"\x00" in data:
        raise DocumentError("binary file (it contains NUL bytes), not Python source; exclude it")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DocumentError(
            f"line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


def load(path: Path, data: bytes):
    """The document for a file's bytes, chosen by its suffix."""
    if path.suffix == ".ipynb":
        from lint.notebook import NotebookDocument

        return NotebookDocument.from_bytes(path, data)
    return PythonDocument.from_bytes(path, data)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace a file's contents in one step: a temporary file in the same folder, then rename.

    Symlinks are followed to the real file (the link stays a link) and the file's permission
    bits are kept, so a reader never sees a half-written file and a crash leaves the old one.
    """
    real = Path(os.path.realpath(path))
    mode = real.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".bncheck-tmp", dir=real.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
