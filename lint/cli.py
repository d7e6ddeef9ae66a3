"""``bncheck``: the command line (flags follow ruff's where they mean the same thing)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lint import __version__
from lint.config import ConfigError, Settings, apply, find_config, load_settings

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + error
        self.exit(EXIT_ERROR, f"bncheck: error: {message} (see bncheck --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="bncheck",
        description="Find the code patterns that make BatchNormalization disagree between fit() and predict().",
    )
    p.add_argument("paths", nargs="*", type=Path, help="files or folders to check (default: .); - reads stdin")
    p.add_argument("--version", action="version", version=f"bncheck {__version__}")
    p.add_argument("--format", choices=sorted(_formats()), default="text", help="output format (default: text)")
    p.add_argument("--output-file", "-o", type=Path, help="write the report to this file instead of stdout")
    p.add_argument("--statistics", action="store_true", help="show the number of findings per rule")
    p.add_argument("--config", type=Path, help="a pyproject.toml to read [tool.bncheck] from (default: the nearest)")
    p.add_argument("--isolated", action="store_true", help="ignore all configuration files")
    p.add_argument("--select", help="comma-separated codes or prefixes to check (e.g. BN001,BN1)")
    p.add_argument("--extend-select", help="codes or prefixes to add to the selection")
    p.add_argument("--ignore", help="comma-separated codes or prefixes to skip")
    p.add_argument("--exclude", help="comma-separated patterns to exclude (replaces the defaults)")
    p.add_argument("--extend-exclude", help="comma-separated patterns to exclude on top of the defaults")
    p.add_argument("--force-exclude", action=argparse.BooleanOptionalAction, default=None,
                   help="apply excludes to files given explicitly too (for pre-commit)")
    p.add_argument("--target-keras", help="Keras version the messages are for (default: the installed keras)")
    p.add_argument("--extra-batchnorm-models", help="comma-separated factories that return models with BatchNormalization")
    p.add_argument("--latent", action=argparse.BooleanOptionalAction, default=None,
                   help="BN001/BN002 also for frozen bases nothing in the project unfreezes (feature extraction)")
    p.add_argument("--fix", action="store_true", help="apply the safe fixes in place")
    p.add_argument("--diff", action="store_true", help="print the fixes as a unified diff and write nothing")
    p.add_argument("--exit-zero", action="store_true", help="exit with 0 even when there are findings")
    p.add_argument("--stdin-filename", type=Path, help="the path to report for source read from stdin")
    p.add_argument("--jobs", "-j", type=int, help="worker processes (default: one per core)")
    p.add_argument("--timeout", type=float, help="seconds allowed per file before it is reported as an error")
    p.add_argument("--list-rules", action="store_true", help="list the rules and exit")
    p.add_argument("--explain", metavar="CODE", help="explain a rule and exit")
    return p


def _formats() -> dict:
    from lint.output import FORMATTERS

    return FORMATTERS


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.list_rules:
            return _print(_list_rules())
        if args.explain:
            return _explain(args.explain)
        settings = _settings(args)
    except ConfigError as exc:
        print(f"bncheck: error: {exc}", file=sys.stderr)
        return EXIT_ERROR

    from lint.engine import lint_paths

    stdin = None
    paths = args.paths or [Path(".")]
    if args.stdin_filename is not None or paths == [Path("-")]:
        if args.fix:
            print("bncheck: error: --fix cannot write back to stdin; use --diff", file=sys.stderr)
            return EXIT_ERROR
        stdin = (args.stdin_filename or Path("-"), sys.stdin.read())
    report = lint_paths(paths, settings, fix=args.fix, diff=args.diff, jobs=args.jobs, stdin=stdin)
    output = _formats()[args.format](report, statistics=args.statistics)
    if args.output_file is not None:
        try:
            args.output_file.write_text(output, encoding="utf-8")
        except OSError as exc:
            print(f"bncheck: error: cannot write {args.output_file} ({exc.strerror or exc})", file=sys.stderr)
            return EXIT_ERROR
    else:
        sys.stdout.write(output)
    if report.errors:
        return EXIT_ERROR
    if report.findings and not args.exit_zero and not args.diff:
        return EXIT_FINDINGS
    return EXIT_CLEAN


def _settings(args) -> Settings:
    if args.isolated:
        settings = Settings()
    else:
        if args.config is not None and not args.config.is_file():
            raise ConfigError(f"{args.config}: no such config file")
        settings = load_settings(args.config or find_config(Path.cwd()))
    flags: dict = {}
    for key in ("select", "extend-select", "ignore", "exclude", "extend-exclude", "target-keras", "extra-batchnorm-models"):
        value = getattr(args, key.replace("-", "_"))
        if value is not None:
            flags[key] = value
    if args.force_exclude is not None:
        flags["force-exclude"] = args.force_exclude
    if args.timeout is not None:
        flags["timeout"] = args.timeout
    if args.latent is not None:
        flags["latent"] = args.latent
    return apply(settings, flags, "command line")


def _print(text: str) -> int:
    sys.stdout.write(text)
    return EXIT_CLEAN


def _list_rules() -> str:
    from lint.rule import all_rules

    rows = [f"{r.code}  {r.severity.value:<7}  {'fix' if r.fixable else '   '}  {r.name}: {r.summary}" for r in all_rules()]
    return "\n".join(rows) + "\n"


def _explain(code: str) -> int:
    from lint.rule import all_rules, rule_by_code

    rule = rule_by_code(code)
    if rule is None:
        known = ", ".join(r.code for r in all_rules())
        print(f"bncheck: error: unknown rule {code!r} (known: {known})", file=sys.stderr)
        return EXIT_ERROR
    return _print(rule.docs().markdown())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
