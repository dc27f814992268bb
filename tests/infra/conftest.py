"""Prints what the infra checks validated against (tests/infra/summary.py) at the end of a run."""

from __future__ import annotations

import pytest

from tests.infra.summary import SUMMARY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for title, lines in SUMMARY.items():
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)
