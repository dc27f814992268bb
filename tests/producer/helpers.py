"""Shared bits of the producer tests: run the CLI as a separate process, count queue messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from tests.conftest import REPO
from tests.worker_fixtures import GUARDED, Jobs


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def cli(settings: dict[str, str], *args: str, timeout: float = 120, cwd: Path | None = None) -> Run:
    """``python -m shared ...`` in its own process with ``settings`` as its environment, behind the
    network guard (emulators/guarded first on PYTHONPATH, as the local host runs)."""
    env = {**os.environ, **settings, "PYTHONPATH": f"{GUARDED}{os.pathsep}{REPO}"}
    done = subprocess.run(
        [sys.executable, "-m", "shared", *args],
        env=env,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    run = Run(done.returncode, done.stdout, done.stderr)
    # Whatever happened, no token (a JWT starts with "eyJ") reaches the terminal.
    assert "eyJ" not in run.stdout + run.stderr, run
    return run


async def message_count(jobs: Jobs) -> int:
    try:
        return (await jobs.queue.get_queue_properties()).approximate_message_count or 0
    except ResourceNotFoundError:
        return 0


async def peek_bodies(jobs: Jobs, limit: int = 32) -> list[Any]:
    return [json.loads(m.content) for m in await jobs.queue.peek_messages(max_messages=limit)]


async def blob_names(jobs: Jobs, container: str) -> list[str]:
    client = jobs.blobs.get_container_client(container)
    try:
        return [blob.name async for blob in client.list_blobs()]
    except ResourceNotFoundError:
        return []
