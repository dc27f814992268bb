"""The report: a table for people, JSON for scripts, and the exit code."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from shared.doctor.model import Check, Status

SYMBOLS: dict[Status, str] = {"ok": "✓", "fail": "✗", "warn": "!", "skip": "-"}
ASCII: dict[Status, str] = {"ok": "OK", "fail": "XX", "warn": "!!", "skip": "--"}


def _symbols(out: TextIO) -> dict[Status, str]:
    """The marks this stream can encode (a Windows console or a C locale cannot print ✓)."""
    try:
        "".join(SYMBOLS.values()).encode(getattr(out, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return ASCII
    return SYMBOLS


def render_table(checks: Sequence[Check], out: TextIO) -> None:
    symbols = _symbols(out)
    width = max(len(c.title) for c in checks) + 2
    for check in checks:
        lines = check.detail.splitlines() or [""]
        out.write(f"{symbols[check.status]} {check.title:<{width}}{lines[0]}\n")
        pad = " " * (len(symbols[check.status]) + 1 + width)
        for line in lines[1:]:
            out.write(f"{pad}{line}\n")
        if check.fix and check.status in ("fail", "warn"):
            out.write(f"{pad}fix: {check.fix}\n")
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("ok", "fail", "warn", "skip")}
    out.write(f"\n{counts['fail']} failed, {counts['warn']} warning(s), {counts['ok']} ok, {counts['skip']} skipped\n")


def render_json(checks: Sequence[Check], out: TextIO) -> None:
    json.dump([c.as_json() for c in checks], out, indent=2, ensure_ascii=False)
    out.write("\n")


def exit_code(checks: Sequence[Check]) -> int:
    return 1 if any(c.status == "fail" for c in checks) else 0
