"""The engine: find files, skip those no rule can match, check the rest in isolated workers.

``check_source`` is the whole check of one text (parse, rules, suppressions, fixes); it is
pure and runs in a worker. ``lint_paths`` does discovery, the text prefilter, the worker pool
and writing fixes back.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from lint.config import Settings
from lint.documents import DocumentError, load, write_atomically
from lint.frameworks.torch import is_test_file
from lint.rule import Rule, all_rules, select_rules
from lint.suppress import is_suppressed
from lint.workers import Crash, run_isolated

SOURCE_SUFFIXES = (".py", ".pyi", ".ipynb")
MAX_FIX_PASSES = 4
# libcst's parse time grows steeply with nesting depth (a 1,000-deep `a[0][0]...` takes ~1 s,
# 3,000 deep 12 s; 10,000 terms of `a + a + ...` several minutes); real code nests < 50 deep.
MAX_DEPTH = 1000
_LINE_WITH_END = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


@dataclass
class Finding:
    path: str
    line: int
    column: int  # 1-based, as editors and ruff count
    end_line: int
    end_column: int
    code: str
    severity: str
    message: str
    fixable: bool
    cell: int | None = None  # notebook code cell number (1-based, code cells only, as nbQA/ruff)
    raw_line: int | None = None  # line in the raw .ipynb file


@dataclass
class FileError:
    path: str
    message: str
    line: int | None = None
    column: int | None = None
    cell: int | None = None  # notebook code cell number, as in Finding
    raw_line: int | None = None


@dataclass
class SourceResult:
    """What a worker returns for one text."""

    violations: list[tuple[int, int, int, int, str, str, bool]] = field(default_factory=list)
    error: tuple[str, int | None, int | None] | None = None
    fixed_source: str | None = None
    fixes_applied: int = 0
    parsed: bool = False  # by libcst: some rule's prefilter matched outside docstrings


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    files_seen: int = 0
    files_parsed: int = 0
    fixes_applied: int = 0
    diffs: list[str] = field(default_factory=list)


# -- one text ------------------------------------------------------------------------------


def check_source(
    path: str,
    source: str,
    settings: Settings,
    codes: tuple[str, ...],
    fix: bool,
    prefilter: bool = False,
    project: dict | None = None,
    conditional: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> SourceResult:
    """Check one Python text with the rules named by ``codes``; with ``fix``, also fix it.
    With ``prefilter``, only those of the rules whose prefilter matches outside docstrings.
    ``project`` is the file's view of the project index (``lint.flow.project.Project.view``);
    ``conditional`` is (project roots, codes): the file's view is built here, in the worker, and
    those codes run only if it imports a model with BatchNorm of their framework."""
    tree, error = _python_parse(path, source)
    elsewhere = None
    if error is None and conditional is not None:
        roots, extra = conditional
        project = _project(roots).view(Path(path), source, tree)
        elsewhere = functools.partial(_project(roots).unfrozen_elsewhere, Path(path))
        bn = imports_bn(project)
        codes = tuple(sorted(set(codes) | {c for c in extra if _rule(c).models_from(bn)}))
    if error is None and codes and prefilter:
        codes = _codes_outside_docstrings(source, tree, settings, codes, imports_bn(project))
    if error is None and codes:  # only a tree headed for libcst needs the depth guard
        error = _too_deep(tree)
    if error is not None or not codes:
        return SourceResult(error=error)
    import libcst as cst  # only here: a file no rule can match never needs it
    try:
        return _check_parsed(path, source, settings, codes, fix, project, elsewhere)
    except cst.ParserSyntaxError as exc:  # rare text Python accepts and libcst does not (a `\` at EOF)
        message = str(exc.message).splitlines()[0] if str(exc.message) else "parse error"
        return SourceResult(error=(f"libcst cannot parse this file, which Python accepts: {message}", exc.raw_line, exc.raw_column + 1))
    except RecursionError:  # Python-level walks of a tree that ast accepted but nests very deep
        return SourceResult(error=("too deeply nested to analyse (an expression nested hundreds deep); exclude the file", None, None))


def _check_parsed(
    path: str, source: str, settings: Settings, codes: tuple[str, ...], fix: bool, project: dict | None = None,
    elsewhere=None,
) -> SourceResult:
    import libcst as cst

    rules = [r() for r in all_rules() if r.code in codes]
    lines = physical_lines(source)
    module = cst.parse_module(source)
    applied = 0
    found = _violations(path, module, settings, rules, lines, project, elsewhere)
    # Fix, then check again: a fix may uncover or settle another finding (ruff's loop).
    for _ in range(MAX_FIX_PASSES if fix else 0):
        fixes = [v.fix for _, v, _ in found if v.fix is not None]
        if not fixes:
            break
        # libcst's parse is not always lossless (it drops a whitespace-only line before an indented
        # comment at the end of a file): write back only a text that its tree reproduces exactly.
        if applied == 0 and module.code != source:
            break
        fixed_code, count = _apply(module, fixes)
        if count == 0 or fixed_code == module.code:
            break
        try:
            ast.parse(fixed_code)
            fixed_module = cst.parse_module(fixed_code)
        except (cst.ParserSyntaxError, SyntaxError):  # a fix must never break a file: keep the last good text
            break
        if fixed_module.code != fixed_code:
            break
        module = fixed_module
        applied += count
        lines = physical_lines(module.code)
        found = _violations(path, module, settings, rules, lines, project, elsewhere)
    result = SourceResult(fixes_applied=applied, fixed_source=module.code if applied else None, parsed=True)
    for rule, violation, span in found:
        start, end = span
        result.violations.append(
            (start.line, start.column + 1, end.line, end.column + 1, rule.code, violation.message, violation.fix is not None)
        )
    return result


def physical_lines(text: str, keepends: bool = False) -> list[str]:
    """Lines as Python numbers them. ``str.splitlines`` also breaks at form feeds, \\x1c-\\x1e,
    \\x85 and \\u2028/9, which Python source keeps inside a line: every later line number would
    be off (a ``# noqa`` looked up on the wrong line)."""
    lines = _LINE_WITH_END.findall(text)
    return lines if keepends else [line.rstrip("\r\n") for line in lines]


def _python_parse(path: str, source: str):
    """(tree, None) or (None, error). Python's own parser first: ten times faster than libcst,
    exact messages, and it refuses the deeply nested input that can crash libcst."""
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning for "\d" on 3.12+: the user's, not ours to print
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        return None, (f"syntax error: {exc.msg}", exc.lineno, exc.offset)
    except (RecursionError, MemoryError):
        return None, ("too deeply nested for the parser (an expression or block nested thousands deep); exclude the file", None, None)
    except ValueError as exc:  # e.g. "source code string cannot contain null bytes"
        return None, (f"cannot parse: {exc}", None, None)
    return tree, None


def _too_deep(tree: ast.Module):
    """An error for a valid tree nested deeper than libcst can take, else None."""
    deep = _node_deeper_than(tree, MAX_DEPTH)
    if deep is None:
        return None
    return (
        f"nested more than {MAX_DEPTH} levels deep (such as a {MAX_DEPTH}-term `a + a + ...`), too deep"
        " to analyse (libcst's time grows steeply with depth); exclude the file",
        getattr(deep, "lineno", None),
        getattr(deep, "col_offset", -1) + 1 or None,
    )


def _codes_outside_docstrings(
    source: str, tree: ast.Module, settings: Settings, codes: tuple[str, ...], imported_bn: frozenset[str] = frozenset()
) -> tuple[str, ...]:
    """The prefilter again, on the text without its docstrings: library code names
    BatchNormalization in its documentation far more often than in code, and a string
    statement does nothing, so no rule can need it. libcst's parse is the run's main cost."""
    data = blank_string_statements(source, tree)
    rules = {r.code: r for r in all_rules()}
    return tuple(
        code for code in codes
        if prefilter_matches(data, [encoded_prefilter(rules[code], settings, relaxed=rules[code].models_from(imported_bn))])
    )


@functools.cache  # per worker process: the summaries of the modules it has read are kept for the next file
def _project(roots: tuple[str, ...]):
    from lint.flow.project import Project

    return Project([Path(r) for r in roots[1:]], Path(roots[0]))


def _rule(code: str) -> type[Rule]:
    return next(r for r in all_rules() if r.code == code)


def imports_bn(project: dict | None) -> frozenset[str]:
    """The frameworks of the models with BatchNorm a file imports from other modules of the project."""
    return frozenset(d.framework for d in (project or {}).values() if d.has_bn and d.is_model)


def blank_string_statements(source: str, tree: ast.Module) -> bytes:
    """The UTF-8 text with every string statement (docstrings) replaced by spaces."""
    lines = source.encode("utf-8", "surrogatepass").splitlines(keepends=True)  # \n, \r\n, \r: as Python counts
    stack: list = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, (str, bytes)):
            first, last = node.lineno - 1, node.end_lineno - 1
            for i in range(first, last + 1):  # offsets are UTF-8 byte offsets, as ``lines`` are bytes
                line = lines[i]
                start = node.col_offset if i == first else 0
                end = node.end_col_offset if i == last else len(line.rstrip(b"\r\n"))
                lines[i] = line[:start] + b" " * (end - start) + line[end:]
            continue
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):  # statements only, no expressions
            stack.extend(getattr(node, name, ()))
    return b"".join(lines)


def _node_deeper_than(tree: ast.AST, limit: int) -> ast.AST | None:
    """The first node found nested more than ``limit`` deep, if any (an iterative walk)."""
    stack = [(tree, 0, tree)]
    while stack:
        node, depth, located = stack.pop()  # located: the nearest node with a line number
        if depth > limit:
            return located
        stack.extend(
            (child, depth + 1, child if hasattr(child, "lineno") else located) for child in ast.iter_child_nodes(node)
        )
    return None


def _violations(path, module, settings, rules: list[Rule], lines, project=None, elsewhere=None):
    """(rule, violation, (start, end)) for every unsuppressed violation, in source order."""
    from libcst.metadata import MetadataWrapper, PositionProvider

    from lint.context import FileContext

    ctx = FileContext(path, module, settings, project, elsewhere,
                      keras_models=any(rule.queries_keras_models for rule in rules))
    raw = [(rule, v) for rule in rules for v in rule.check(ctx)]
    if not raw:
        return []
    # Positions cost a full code-generation pass, so they are computed only when needed.
    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    found = []
    for rule, violation in raw:
        span = positions[violation.node]
        if not is_suppressed(lines, rule.code, span.start.line, span.end.line):
            found.append((rule, violation, (span.start, span.end)))
    found.sort(key=lambda item: (item[2][0].line, item[2][0].column, item[0].code))
    return found


def _apply(module, fixes) -> tuple[str, int]:
    """Apply every fix whose node is untouched by another fix in this pass (the rest wait a pass)."""
    import libcst as cst

    replacements = {}
    for fix in fixes:
        for key, value in fix.replacements.items():
            replacements.setdefault(key, value)
    applied = 0

    class _Replace(cst.CSTTransformer):
        def on_leave(self, original, updated):
            nonlocal applied
            entry = replacements.get(id(original))
            # A node whose subtree another fix changed in this pass waits for the next pass.
            if entry is None or entry[0] is not original or not updated.deep_equals(original):
                return updated
            applied += 1
            return entry[1]

    new = module.visit(_Replace())
    return new.code, applied


# -- many files ----------------------------------------------------------------------------


def discover(paths: Iterable[Path], settings: Settings, errors: list[FileError]) -> Iterator[tuple[Path, bool]]:
    """Source files below ``paths`` as (path, given explicitly), each once however often it is reached
    (``bncheck . src``, a file given twice); unreadable folders become errors."""
    seen: set[str] = set()
    for path, explicit in _discover(paths, settings, errors):
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            yield path, explicit


def _discover(paths: Iterable[Path], settings: Settings, errors: list[FileError]) -> Iterator[tuple[Path, bool]]:
    for root in paths:
        if not os.path.lexists(root):
            errors.append(FileError(str(root), "no such file or directory"))
            continue
        if root.is_symlink() and not root.exists():
            errors.append(FileError(str(root), "broken or looping symlink"))
            continue
        if root.is_file() or (root.exists() and not root.is_dir()):
            if settings.force_exclude and settings.is_excluded(root):
                continue
            yield root, True
            continue
        yield from _walk(root, settings, errors)


def _walk(folder: Path, settings: Settings, errors: list[FileError]) -> Iterator[tuple[Path, bool]]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        errors.append(FileError(str(folder), f"cannot read this folder ({exc.strerror or exc})"))
        return
    for entry in entries:
        path = Path(entry.path)
        if settings.is_excluded(path, below=folder):  # the folders above were checked on the way down
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                if not (path / "pyvenv.cfg").exists():  # a virtualenv, whatever its name
                    yield from _walk(path, settings, errors)
            elif path.suffix in SOURCE_SUFFIXES:
                if entry.is_symlink() and not path.exists():
                    errors.append(FileError(str(path), "broken or looping symlink"))
                elif entry.is_file():
                    yield path, False
        except OSError as exc:
            errors.append(FileError(str(path), f"cannot read ({exc.strerror or exc})"))


Token = bytes | re.Pattern[bytes]


def prefilter_matches(data: bytes, groups_per_rule: list[tuple[tuple[Token, ...], ...]]) -> bool:
    """Can any rule match this text? Every group of a rule needs one of its tokens present."""
    return any(all(any(_occurs(token, data) for token in group) for group in groups) for groups in groups_per_rule)


def _occurs(token: Token, data: bytes) -> bool:
    return token in data if isinstance(token, bytes) else token.search(data) is not None


def time_limit(settings: Settings, source: str) -> float:
    # libcst takes about 20 ms per ordinary file; large files get a proportional allowance.
    return settings.timeout + source.count("\n") / 1000.0


def lint_paths(
    paths: Iterable[Path],
    settings: Settings,
    *,
    fix: bool = False,
    diff: bool = False,
    jobs: int | None = None,
    stdin: tuple[Path, str] | None = None,
) -> Report:
    report = Report()
    rules = select_rules(settings.select, settings.ignore)
    paths = list(paths)
    files = [] if stdin is not None else list(discover(paths, settings, report.errors))
    # One project for the whole run; a module is read only when a checked file imports it, by the
    # worker that checks that file (the parent only decides which files may need it, by their text).
    project = (str(Path.cwd()), *map(str, paths)) if any(r.project_wide for r in rules) else None
    documents: dict[str, object] = {}
    tasks = []
    prefilters = {r.code: _split_prefilter(r, settings) for r in rules}
    for path, _explicit in files:
        report.files_seen += 1
        try:
            data = path.read_bytes()
        except OSError as exc:
            report.errors.append(FileError(str(path), f"cannot read ({exc.strerror or exc})"))
            continue
        task = _task(path, data, settings, prefilters, fix or diff, report, project, rules)
        if task is not None:
            documents[str(path)] = task[1][1]
            tasks.append((str(path), task[1][0], task[0]))
    if stdin is not None:
        report.files_seen += 1
        path, text = stdin
        # Editors read --diff for stdin too; --fix has nowhere to write (the CLI refuses it).
        task = _task(path, text.encode("utf-8", "surrogateescape"), settings, prefilters, diff, report, project, rules)
        if task is not None:
            documents[str(path)] = task[1][1]
            tasks.append((str(path), task[1][0], task[0]))
    # Longest work first (files some rule will parse with libcst, largest first; then the syntax
    # checks): a large file started last would keep one core busy while the other idles.
    tasks.sort(key=lambda task: (not (task[1][3] or task[1][7]), -len(task[1][1])))
    for key, result in run_isolated(check_source, tasks, jobs):
        report.files_parsed += isinstance(result, SourceResult) and result.parsed
        _collect(report, key, result, documents[key], fix, diff)
    report.findings.sort(key=lambda f: (f.path, f.cell or 0, f.line, f.column, f.code))
    report.errors.sort(key=lambda e: e.path)
    return report


def _task(path: Path, data: bytes, settings: Settings, prefilters, fix: bool, report: Report,
          project=None, rules: list[type[Rule]] = ()):
    """(time limit, (args, document)) for a readable file, or None; read errors are reported."""
    ignored = settings.ignored_for(path)  # once per file: it resolves the path
    try:
        document = load(path, data)
    except DocumentError as exc:
        report.errors.append(FileError(str(path), str(exc)))
        return None
    for message, cell, line, column, raw_line in getattr(document, "errors", ()):  # notebook cells left out
        report.errors.append(FileError(str(path), message, line, column, cell, raw_line))
    source = document.source.encode("utf-8", "surrogatepass")
    # Only the rules whose prefilter matches run; when none does, only Python's fast parser
    # checks the syntax. A rule's analysis can cost as much as the parse on a large file.
    codes, candidates = [], []
    tests = is_test_file(str(path))
    for code, (rule, other, models) in prefilters.items():
        if any(code.startswith(i) for i in ignored) or (tests and rule.skips_tests):
            continue
        if not prefilter_matches(source, [other]):
            continue
        if prefilter_matches(source, [models]):
            codes.append(code)
        elif project is not None:
            # A project-wide rule whose other groups match may find its model in an imported module: only
            # then are the file's imports resolved (and the imported modules read and summarized).
            candidates.append(code)
    # The view also serves the project-wide rules that matched on their own (a training helper imported).
    wide = candidates or any(prefilters[c][0].project_wide for c in codes)
    conditional = (project, tuple(candidates)) if project is not None and wide else None
    if not codes and conditional is None:
        # No selected rule can match this text: the file is not parsed at all (a syntax error in it
        # is for Python's own tooling; compiling every such file was most of a whole-tree run).
        return None
    args = (str(path), document.source, settings, tuple(codes), fix, True, None, conditional)
    return time_limit(settings, document.source), (args, document)


def _split_prefilter(rule: type[Rule], settings: Settings):
    """(rule, the groups every file needs, the groups naming BatchNorm models) for a project-wide
    rule, whose model may come from an imported module; (rule, all groups, ()) for the others."""
    if not rule.project_wide:
        return rule, encoded_prefilter(rule, settings), ()
    other = encoded_prefilter(rule, settings, relaxed=True)
    return rule, other, tuple(g for g in encoded_prefilter(rule, settings) if g not in other)


def encoded_prefilter(rule: type[Rule], settings: Settings, relaxed: bool = False) -> tuple[tuple[Token, ...], ...]:
    """The rule's prefilter for bytes: the text is searched before it is decoded. ``relaxed``
    leaves out the groups naming BatchNorm models (the model comes from an imported module)."""
    return _encoded_prefilter(rule, settings.extra_batchnorm_models, relaxed)


@functools.cache  # per process: workers reuse it for every file
def _encoded_prefilter(rule: type[Rule], extra_models: tuple[str, ...], relaxed: bool) -> tuple[tuple[Token, ...], ...]:
    extra = [name.rsplit(".", 1)[-1] for name in extra_models]
    groups = rule.prefilter_groups(extra, relaxed=relaxed)
    return tuple(tuple(_encoded(t) for t in group) for group in groups)


def _encoded(token: str | re.Pattern[str]) -> Token:
    return token.encode() if isinstance(token, str) else re.compile(token.pattern.encode(), token.flags & ~re.UNICODE)


def _collect(report: Report, key: str, result, document, fix: bool, diff: bool) -> None:
    if isinstance(result, Crash):
        report.errors.append(FileError(key, f"{result.reason} while checking this file; exclude it or report a bug"))
        return
    if result.error is not None:
        message, line, column = result.error
        location = document.locate(line) if line else None
        report.errors.append(FileError(key, message, location.line if location else None, column,
                                       location.cell if location else None, location.raw_line if location else None))
        return
    located, rendered = document, None
    if result.fixed_source is not None and document.kind == "notebook":
        # Findings left after fixing are positions in the fixed text: locate them in the fixed notebook.
        try:
            rendered = document.render(result.fixed_source)
            located = load(Path(key), rendered)
        except DocumentError as exc:
            report.errors.append(FileError(key, str(exc)))
            result.fixed_source = None
    for line, column, end_line, end_column, code, message, fixable in result.violations:
        location = located.locate(line)
        rule = next(r for r in all_rules() if r.code == code)
        report.findings.append(
            Finding(key, location.line, column, located.locate(end_line).line, end_column, code,
                    rule.severity.value, message, fixable, location.cell, location.raw_line)
        )
    if result.fixed_source is None:
        return
    if diff:
        if document.kind == "notebook":
            report.diffs.append(document.unified_diff(key, result.fixed_source))
        else:
            report.diffs.append(_unified_diff(key, document.source, result.fixed_source))
    elif fix:
        try:
            write_atomically(Path(key), rendered if rendered is not None else document.render(result.fixed_source))
        except OSError as exc:
            report.errors.append(FileError(key, f"cannot write the fix ({exc.strerror or exc}); the file is unchanged"))
            return
    report.fixes_applied += result.fixes_applied


def _unified_diff(path: str, before: str, after: str) -> str:
    import difflib

    return "".join(
        difflib.unified_diff(physical_lines(before, True), physical_lines(after, True), fromfile=path, tofile=path)
    )
