"""``python -m shared submit|result|wait|watch|status|replay``: enqueue jobs, read results and operate
the queues from a shell, keyless.

Settings are the worker's own app settings, read from the environment or from a
``local.settings.json`` given with ``--settings`` (its ``Values``; variables already set win, as
with Core Tools). Sign-in is ``DefaultAzureCredential``: ``az login`` on a laptop, the managed
identity in Azure. Messages go to stderr in one line each; stdout carries only results and ids.

``jobs`` has the producer's commands (submit, result, wait, watch), ``operate`` the operator's
(status, replay, over ``shared.operations``); ``_run`` how each runs and the exit codes.
"""

from __future__ import annotations

import argparse

from shared.cli import jobs, operate


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add submit, result, wait, watch, status and replay to ``python -m shared``."""
    jobs.register(subparsers)
    operate.register(subparsers)
