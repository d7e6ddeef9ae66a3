"""Jupyter notebooks (``.ipynb``, nbformat 4) as the linter reads and writes them.

The checked text is every code cell, in order, joined into one module so that a base built in
one cell and frozen or called in a later one is followed as in a linear run. Each cell is
preceded by a marker comment; the markers split a fixed text back into cells.

IPython syntax (``%matplotlib inline``, ``%%time``, ``!pip install x``, ``x = !ls``,
``display?``, automagic ``pip install x``) is masked line for line with a placeholder
statement, so line numbers stay those of the cell and a fix restores the original lines.
Cells are numbered as nbQA and ruff do: code cells only, from 1 (the ``In [N]`` of a fresh
"Run All"). A code cell that is not valid Python even after masking is reported as a per-file
error at its cell and line and left out; the other cells are still checked. Cells whose cell
magic runs another language (``%%bash``, ``%%html``, ``%%writefile`` ...) and notebooks whose
kernel is not Python are not checked.

``render`` writes back only the ``source`` arrays of changed cells, spliced into the original
text in the file's own JSON style; outputs, metadata and formatting stay byte for byte.
"""

from __future__ import annotations

import ast
import bisect
import codecs
import difflib
import json
import re
import warnings
from dataclasses import dataclass, field
from json.decoder import scanstring
from pathlib import Path

from lint.documents import DocumentError, Location

# The %%magics whose body is Python (IPython runs it as Python); any other cell magic hands the
# body to another language or tool, so such a cell is not checked.
PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug", "python", "python3", "pypy"})
# Line magics that IPython's automagic runs without the % (``pip install x`` in Colab).
AUTOMAGICS = frozenset({
    "pip", "conda", "mamba", "cd", "env", "load_ext", "reload_ext", "unload_ext", "matplotlib",
    "run", "time", "timeit", "tensorboard", "autoreload", "config", "store", "who", "whos", "reset",
    "pinfo", "pinfo2", "psearch", "pdef", "pdoc", "psource", "pycat", "rm", "mkdir", "cp", "mv", "ls",
    "cat", "less", "man", "bookmark", "alias", "unalias", "history", "precision", "xmode", "sx", "system",
})
_AUTOMAGIC = re.compile(r"([A-Za-z_]\w*)[ \t]+[^\s=(\[.,:;+\-*/%<>!&|^~@'\"]")
_HELP = re.compile(r"(?:\?{1,2}[\w.*\[\]]+|[\w.*\[\]()'\"]+\?{1,2})")
_ASSIGNED_MAGIC = re.compile(r"[\w.\[\]'\", ]+?\s*=\s*[!%]")
_PLACEHOLDER = "pass  # bncheck-ipython-{}"
_PLACEHOLDER_LINE = re.compile(r"^([ \t]*)pass  # bncheck-ipython-(\d+)(\r\n|\r|\n)?$")
MARKER = "# %% bncheck code cell {}"
_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def split_lines(text: str) -> list[str]:
    """Lines with their endings, split where Python's tokenizer splits them."""
    return _LINES.findall(text)


@dataclass
class _Node:
    """A JSON value with its span in the file's text (a dict/list of nodes, or a scalar)."""

    value: object
    start: int
    end: int


@dataclass
class Cell:
    index: int  # position in the notebook's "cells" array (0-based)
    number: int  # code cell number as reported (1-based, code cells only)
    text: str  # the cell's source, joined
    node: _Node  # the "source" value in the file
    raw_lines: list[int]  # for each line of ``text``: the line of the .ipynb file it sits on
    checked: str | None = None  # the masked text that is checked; None when not checked
    masks: dict[int, str] = field(default_factory=dict)  # placeholder number -> original lines
    first_line: int = 0  # line of the checked source where the cell's first line is


class NotebookDocument:
    """An ``.ipynb`` file: the checked text is its code cells (see the module docstring)."""

    kind = "notebook"

    def __init__(self, path: Path, raw: str, bom: bytes, cells: list[Cell], errors: list) -> None:
        self.path = path
        self._raw = raw
        self._bom = bom
        self.cells = cells
        #: cells that could not be checked: (message, cell number, line, column, raw line)
        self.errors = errors
        self._checked = [c for c in cells if c.checked is not None]
        parts = []
        line = 1
        for cell in self._checked:
            parts.append(MARKER.format(cell.number) + "\n")
            cell.first_line = line + 1
            parts.append(cell.checked)
            line += 1 + len(split_lines(cell.checked))
        self.source = "".join(parts)
        self._starts = [c.first_line for c in self._checked]

    # -- reading ---------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, path: Path, data: bytes) -> "NotebookDocument":
        bom = codecs.BOM_UTF8 if data.startswith(codecs.BOM_UTF8) else b""
        try:
            raw = data[len(bom):].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DocumentError(f"notebook is not valid UTF-8 (byte 0x{data[len(bom) + exc.start]:02x}); save it as UTF-8") from None
        try:
            notebook = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"not a valid notebook: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None
        except RecursionError:
            raise DocumentError("not a valid notebook: JSON nested too deeply") from None
        if not isinstance(notebook, dict) or "cells" not in notebook or notebook.get("nbformat") != 4:
            version = notebook.get("nbformat", "missing") if isinstance(notebook, dict) else "not a JSON object"
            raise DocumentError(
                f"not an nbformat 4 notebook (nbformat: {version}); open and save it in a current Jupyter to upgrade it"
            )
        if not isinstance(notebook["cells"], list):
            raise DocumentError('not a valid notebook: "cells" is not a list')
        try:
            tree, _ = _parse_json(raw, 0)
        except RecursionError:
            raise DocumentError("not a valid notebook: JSON nested too deeply") from None
        cells, errors = _read_cells(raw, notebook, tree)
        return cls(path, raw, bom, cells, errors)

    def locate(self, line: int) -> Location:
        if not self._checked:
            return Location(line)
        i = max(0, bisect.bisect_right(self._starts, line) - 1)
        cell = self._checked[i]
        within = max(1, line - cell.first_line + 1)
        raw = cell.raw_lines[min(within, len(cell.raw_lines)) - 1] if cell.raw_lines else None
        return Location(within, cell.number, raw)

    # -- writing ---------------------------------------------------------------------------

    def fixed_cells(self, fixed_source: str) -> dict[int, str]:
        """New source text per changed cell (by position in ``self.cells``), magics restored."""
        texts: list[list[str]] = []
        expected = iter(self._checked)
        want = next(expected, None)
        for line in split_lines(fixed_source):
            if want is not None and line.rstrip("\r\n") == MARKER.format(want.number):
                texts.append([])
                want = next(expected, None)
            elif texts:
                texts[-1].append(line)
            elif line.strip():
                raise DocumentError("a fix moved code out of the notebook's cells; the notebook is unchanged")
        if want is not None or len(texts) != len(self._checked):
            raise DocumentError("a fix removed a cell boundary; the notebook is unchanged")
        changed = {}
        for cell, lines in zip(self._checked, texts):
            fixed = "".join(lines)
            if fixed == cell.checked:
                continue
            restored = _unmask(lines, cell.masks)
            if not cell.text.endswith(("\n", "\r")) and restored.endswith("\n"):
                restored = restored[:-1]
            changed[self.cells.index(cell)] = restored
        return changed

    def render(self, fixed_source: str) -> bytes:
        changed = self.fixed_cells(fixed_source)
        out, at = [], 0
        for position in sorted(changed, key=lambda p: self.cells[p].node.start):
            node = self.cells[position].node
            out.append(self._raw[at:node.start])
            out.append(self._source_json(node, changed[position]))
            at = node.end
        out.append(self._raw[at:])
        return self._bom + "".join(out).encode("utf-8")

    def _source_json(self, node: _Node, text: str) -> str:
        """``text`` as a cell ``source`` value written as this file writes one."""
        ascii_only = self._raw.isascii() and "\\u" in self._raw
        dump = lambda s: json.dumps(s, ensure_ascii=ascii_only)  # noqa: E731
        if not isinstance(node.value, list):
            return dump(text)
        lines = split_lines(text)
        if not lines:
            return "[]"
        old = self._raw[node.start:node.end]
        if "\n" not in old:  # a compact array
            gap = ", " if ", " in old or len(node.value) < 2 else ","
            return "[" + gap.join(dump(line) for line in lines) + "]"
        line_start = self._raw.rfind("\n", 0, node.start) + 1
        key_indent = re.match(r"[ \t]*", self._raw[line_start:]).group()
        first = node.value[0].start if node.value else None
        if first is not None:
            item_indent = self._raw[self._raw.rfind("\n", 0, first) + 1:first]
        else:
            item_indent = key_indent + self._indent_unit()
        close_indent = self._raw[self._raw.rfind("\n", 0, node.end - 1) + 1:node.end - 1]
        if close_indent.strip():
            close_indent = key_indent
        newline = "\r\n" if "\r\n" in old else "\n"
        body = ("," + newline + item_indent).join(dump(line) for line in lines)
        return "[" + newline + item_indent + body + newline + close_indent + "]"

    def _indent_unit(self) -> str:
        match = re.search(r"\n([ \t]+)\S", self._raw)
        return match.group(1) if match else " "

    def unified_diff(self, path: str, fixed_source: str) -> str:
        """The fixes as a diff of each changed cell's source, named ``path:cell N``."""
        parts = []
        for position, text in sorted(self.fixed_cells(fixed_source).items()):
            cell = self.cells[position]
            name = f"{path}:cell {cell.number}"
            parts.append("".join(difflib.unified_diff(
                split_lines(_ended(cell.text)), split_lines(_ended(text)), fromfile=name, tofile=name)))
        return "".join(parts)


def _ended(text: str) -> str:
    return text if not text or text.endswith(("\n", "\r")) else text + "\n"


def _read_cells(raw: str, notebook: dict, tree: _Node) -> tuple[list[Cell], list]:
    python = _is_python(notebook.get("metadata"))
    newlines = [m.start() for m in re.finditer("\n", raw)]
    cells: list[Cell] = []
    errors: list = []
    number = 0
    for index, node in enumerate(tree.value["cells"].value):
        if not isinstance(node.value, dict) or _scalar(node.value.get("cell_type")) != "code":
            continue
        number += 1
        source = node.value.get("source")
        if source is None:
            continue
        elements = source.value if isinstance(source.value, list) else [source]
        if not all(isinstance(e.value, str) for e in elements):
            raise DocumentError(f"not a valid notebook: cell {number} has a source that is not text")
        text = "".join(e.value for e in elements)
        cell = Cell(index, number, text, source, _raw_lines(newlines, text, elements))
        cells.append(cell)
        if python and text.strip():
            error = _mask(cell)
            if error is not None:
                message, line, column = error
                raw = cell.raw_lines[line - 1] if line and line <= len(cell.raw_lines) else None
                errors.append((message, number, line, column, raw))
    return cells, errors


def _raw_lines(newlines: list[int], text: str, elements: list[_Node]) -> list[int]:
    starts, offset = [], 0
    for element in elements:
        starts.append(offset)
        offset += len(element.value)
    result, offset = [], 0
    for line in split_lines(text):
        element = elements[bisect.bisect_right(starts, offset) - 1]
        result.append(bisect.bisect_left(newlines, element.start) + 1)
        offset += len(line)
    return result


# -- IPython syntax ----------------------------------------------------------------------------


def _mask(cell: Cell) -> tuple[str, int | None, int | None] | None:
    """Set ``cell.checked`` (and ``cell.masks``); a cell that is not Python gives an error."""
    text = _ended(cell.text)
    lines = split_lines(text)
    first = next(i for i, line in enumerate(lines) if line.strip())
    head = lines[first].lstrip()
    masked: dict[int, int] = {}  # line index -> number of lines masked from it
    if head.startswith("%%"):
        name = head[2:].split(None, 1)[0] if head[2:].strip() else ""
        if name not in PYTHON_CELL_MAGICS:
            return None  # another language: not checked, not an error
        masked[first] = 1
    elif _parses(text):
        cell.checked = text
        return None
    masked.update(_magic_lines(lines, skip=set(masked)))
    checked = list(lines)
    for k, (i, count) in enumerate(sorted(masked.items())):
        indent = re.match(r"[ \t]*", lines[i]).group()
        ending = re.search(r"(\r\n|\r|\n)?$", lines[i]).group()
        cell.masks[k] = "".join(lines[i:i + count])
        checked[i] = indent + _PLACEHOLDER.format(k) + (ending or "\n")
        for j in range(i + 1, i + count):
            checked[j] = re.search(r"(\r\n|\r|\n)?$", lines[j]).group() or "\n"
    try:
        _ast_parse("".join(checked))
    except SyntaxError as exc:
        cell.masks.clear()
        return (f"syntax error: {exc.msg}; this cell is not checked, the other cells are", exc.lineno, exc.offset)
    except (RecursionError, MemoryError, ValueError) as exc:
        cell.masks.clear()
        return (f"cannot parse ({type(exc).__name__}); this cell is not checked, the other cells are", None, None)
    cell.checked = "".join(checked)
    return None


def _parses(text: str) -> bool:
    try:
        _ast_parse(text)
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return False
    return True


def _ast_parse(text: str) -> None:
    with warnings.catch_warnings():  # e.g. SyntaxWarning for "\d" on 3.12: not ours to print
        warnings.simplefilter("ignore")
        ast.parse(text)


def _magic_lines(lines: list[str], skip: set[int]) -> dict[int, int]:
    """Lines that start an IPython command, with how many lines it spans (``\\`` continuations).

    Only lines that start a statement count: a ``%`` line inside a string or brackets is Python.
    """
    found: dict[int, int] = {}
    depth, quote, continued = 0, None, False
    i = 0
    while i < len(lines):
        line = lines[i]
        if i in skip:
            i += 1
            continue
        stripped = line.strip()
        if depth == 0 and quote is None and not continued and _is_magic(stripped):
            count = 1
            while lines[i + count - 1].rstrip("\r\n").endswith("\\") and i + count < len(lines):
                count += 1
            found[i] = count
            i += count
            continue
        depth, quote, continued = _scan(line, depth, quote)
        i += 1
    return found


def _is_magic(stripped: str) -> bool:
    if not stripped or stripped.startswith("#"):
        return False
    if stripped[0] in "%!?/,;":
        return True
    if _HELP.fullmatch(stripped) or _ASSIGNED_MAGIC.match(stripped):
        return True
    match = _AUTOMAGIC.match(stripped)
    return bool(match and match.group(1) in AUTOMAGICS and not _parses(stripped))


def _scan(line: str, depth: int, quote: str | None) -> tuple[int, str | None, bool]:
    """Bracket depth and open string after ``line``, and whether it ends with a ``\\``."""
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if quote is not None:
            if ch == "\\":
                i += 2
                continue
            if line.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
            if ch in "\r\n" and len(quote) == 1:  # an unterminated one-line string ends here
                quote = None
            i += 1
            continue
        if ch == "#":
            break
        if ch in "\"'":
            quote = ch * 3 if line.startswith(ch * 3, i) else ch
            i += len(quote)
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        i += 1
    body = line.rstrip("\r\n")
    continued = quote is None and body.endswith("\\") and "#" not in body
    return depth, quote, continued


def _unmask(lines: list[str], masks: dict[int, str]) -> str:
    out: list[str] = []
    drop = 0
    for line in lines:
        if drop and not line.strip():
            drop -= 1
            continue
        drop = 0
        match = _PLACEHOLDER_LINE.match(line)
        if match and int(match.group(2)) in masks:
            original = masks[int(match.group(2))]
            first = split_lines(original)
            old_indent = re.match(r"[ \t]*", first[0]).group()
            out.append(match.group(1) + original[len(old_indent):])
            drop = len(first) - 1
        else:
            out.append(line)
    return "".join(out)


def _is_python(metadata) -> bool:
    if not isinstance(metadata, dict):
        return True
    for key, name in (("language_info", "name"), ("kernelspec", "language")):
        value = metadata.get(key)
        if isinstance(value, dict) and isinstance(value.get(name), str):
            return value[name].lower() in ("python", "python3", "ipython", "ipython3")
    return True


# -- JSON with positions -------------------------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")
_SCALAR = re.compile(r"[^,\]}\s]+")


def _parse_json(text: str, i: int) -> tuple[_Node, int]:
    """A JSON value at ``text[i:]`` as nodes with spans; the text is known to be valid JSON."""
    i = _WS.match(text, i).end()
    ch = text[i]
    if ch == '"':
        value, end = scanstring(text, i + 1)
        return _Node(value, i, end), end
    if ch == "{":
        members: dict[str, _Node] = {}
        j = _WS.match(text, i + 1).end()
        if text[j] == "}":
            return _Node(members, i, j + 1), j + 1
        while True:
            key, j = scanstring(text, _WS.match(text, j).end() + 1)
            j = _WS.match(text, j).end() + 1  # past ':'
            members[key], j = _parse_json(text, j)
            j = _WS.match(text, j).end()
            if text[j] == "}":
                return _Node(members, i, j + 1), j + 1
            j += 1  # past ','
    if ch == "[":
        items: list[_Node] = []
        j = _WS.match(text, i + 1).end()
        if text[j] == "]":
            return _Node(items, i, j + 1), j + 1
        while True:
            item, j = _parse_json(text, j)
            items.append(item)
            j = _WS.match(text, j).end()
            if text[j] == "]":
                return _Node(items, i, j + 1), j + 1
            j += 1
    end = _SCALAR.match(text, i).end()  # a number, true, false or null: only strings are read
    return _Node(None, i, end), end


def _scalar(node: _Node | None):
    return node.value if node is not None and not isinstance(node.value, (dict, list)) else None
