"""Shared bits of the producer tests: run the CLI (in this process, or as its own), read queues and containers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from emulators.stack.environment import REPO, child_environment, patched_environ
from emulators.stack.workers import Jobs
from shared.__main__ import main


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def __post_init__(self) -> None:
        # Whatever happened, no token (a JWT starts with "eyJ") reaches the terminal.
        assert "eyJ" not in self.stdout + self.stderr, self


async def cli(settings: dict[str, str], *args: str) -> Run:
    """``python -m shared ...`` in this process, with ``settings`` in the environment and its output captured.

    ``main`` runs its own event loop, so it runs in a worker thread while the test's loop waits.
    """
    out, err = io.StringIO(), io.StringIO()
    with patched_environ(settings), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = await asyncio.to_thread(main, list(args))
    return Run(code, out.getvalue(), err.getvalue())


def cli_process(settings: dict[str, str], *args: str, timeout: float = 120) -> Run:
    """``python -m shared ...`` as its own process (behind the network guard), for what only a process
    shows: its exit status and the settings it loads into its own environment."""
    done = subprocess.run(
        [sys.executable, "-m", "shared", *args],
        env=child_environment(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


async def message_count(jobs: Jobs) -> int:
    """Messages on the jobs queue (the spelling the producer tests use for ``Jobs.message_count``)."""
    return await jobs.message_count()


async def peek_bodies(jobs: Jobs, limit: int = 32) -> list[Any]:
    return [json.loads(m.content) for m in await jobs.queue.peek_messages(max_messages=limit)]


async def blob_names(jobs: Jobs, container: str) -> list[str]:
    client = jobs.blobs.get_container_client(container)
    try:
        return [blob.name async for blob in client.list_blobs()]
    except ResourceNotFoundError:
        return []
