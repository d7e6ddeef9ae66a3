"""Suppression comments: ``# noqa``, ``# noqa: BN001,BN002`` and ``# bncheck: ignore[BN001]``."""

from __future__ import annotations

import re

_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*))?", re.IGNORECASE)
_IGNORE = re.compile(r"#\s*bncheck:\s*ignore(?:\[(?P<codes>[^\]]*)\])?", re.IGNORECASE)


def suppressed_codes(line: str) -> set[str] | None:
    """Codes suppressed on a physical line; an empty set means all codes; None means none."""
    if "#" not in line:
        return None
    found: set[str] | None = None
    for pattern in (_NOQA, _IGNORE):
        for match in pattern.finditer(line):
            codes = match.group("codes")
            if not codes or not codes.strip():
                return set()
            found = (found or set()) | {c.strip().upper() for c in codes.split(",") if c.strip()}
    return found


def is_suppressed(lines: list[str], code: str, first_line: int, last_line: int) -> bool:
    """Suppressed on the first or the last line of the reported node (1-based)."""
    for number in {first_line, last_line}:
        if 1 <= number <= len(lines):
            codes = suppressed_codes(lines[number - 1])
            if codes is not None and (not codes or code in codes):
                return True
    return False
