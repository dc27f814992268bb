"""What the infra tests report beside pass/fail: tests/infra/conftest.py prints it at the end of a run."""

from __future__ import annotations

# Section title -> lines (filled by the tests that ran; a section appears only when its test ran).
SUMMARY: dict[str, list[str]] = {}
