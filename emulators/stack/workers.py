"""A worker as the product runs it, and a producer's view of its queue and results.

The worker is ``python -m emulators.functions_host`` (or another module) in its own process,
behind the network guard, its settings in its environment and its output in a log file. Every
wait here has a deadline, and when it passes the failure carries the tail of the host's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient, ContainerClient
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from emulators import _process
from emulators.stack.environment import REPO, child_environment
from shared.storage_clients import StorageEndpoints

HOST_MODULE = "emulators.functions_host"
LOG_TAIL = 3000  # characters of a host's log quoted in a failure
T = TypeVar("T")


@dataclass
class WorkerHost:
    """A worker process and the file its stdout and stderr go to."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, chars: int = LOG_TAIL) -> str:
        return f"--- {self.log_path} (last {chars} characters) ---\n{self.log()[-chars:]}"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM (running invocations finish), then SIGKILL after a grace period."""
        _process.stop(self.process)


def host_command(
    workdir: Path, *, app_dir: Path = REPO, module: str = HOST_MODULE, args: Sequence[str] = ()
) -> list[str]:
    """The local queue host (or a module taking its arguments) on ``app_dir``. ``--settings`` names a
    file that does not exist in ``workdir``: the settings come from the environment only."""
    settings = workdir / "no-local-settings.json"
    return [sys.executable, "-m", module, "--app-dir", str(app_dir), "--settings", str(settings), *args]


def start_host(command: Sequence[str], settings: Mapping[str, str], log_path: Path) -> WorkerHost:
    """Spawn ``command`` behind the network guard in ``log_path``'s directory, with ``settings`` as
    its environment (see ``child_environment``), logging at INFO unless the settings say otherwise."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = child_environment(settings)
    env["LOG_LEVEL"] = settings.get("LOG_LEVEL", "INFO")  # the tests read the INFO log; a shell's choice must not leak
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(list(command), env=env, cwd=log_path.parent, stdout=log, stderr=subprocess.STDOUT)
    return WorkerHost(process, log_path)


class WaitTimeout(AssertionError):
    """A wait passed its deadline (or its host exited first); the message says what for, with the host's log."""


async def wait_until(
    check: Callable[[], Awaitable[T | None]],
    *,
    what: str | Callable[[], str],
    host: WorkerHost | None = None,
    timeout: float = 60.0,
    interval: float = 0.3,
) -> T:
    """Call ``check`` until it returns something truthy, and return that.

    Raises WaitTimeout when ``timeout`` seconds pass, or as soon as ``host`` has exited, naming
    ``what`` was awaited (a callable is asked at the end, so it can say how far it got).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        exited = host is not None and host.process.poll() is not None
        if exited or time.monotonic() >= deadline:
            wanted = what() if callable(what) else what
            reason = "the host exited" if exited else f"gave up after {timeout:g} s"
            raise WaitTimeout(f"{reason} waiting for {wanted}" + (f"\n{host.tail()}" if host else ""))
        await asyncio.sleep(interval)


async def approximate_count(queue: QueueClient) -> int:
    """Messages on a queue, visible or not (0 once every delivery finished, or if it does not exist)."""
    try:
        return (await queue.get_queue_properties()).approximate_message_count or 0
    except ResourceNotFoundError:
        return 0


@dataclass
class Jobs:
    """A producer's and a reader's view of one worker's jobs queue and results container."""

    settings: dict[str, str]
    queues: QueueServiceClient
    blobs: BlobServiceClient

    @classmethod
    def connect(cls, settings: dict[str, str], credential: AsyncTokenCredential) -> Jobs:
        """Clients for the storage ``settings`` name: its connection string, or ``credential``'s tokens."""
        endpoints = StorageEndpoints.from_settings(env=settings)
        return cls(settings, endpoints.queue_service(credential), endpoints.blob_service(credential))

    @property
    def queue(self) -> QueueClient:
        return self.queues.get_queue_client(self.settings["JOBS_QUEUE"])

    @property
    def poison(self) -> QueueClient:
        return self.queues.get_queue_client(self.settings["JOBS_QUEUE"] + "-poison")

    @property
    def results_container(self) -> ContainerClient:
        return self.blobs.get_container_client(self.settings["RESULTS_CONTAINER"])

    async def ensure_queue(self) -> None:
        """Create the jobs queue, as the infrastructure would have."""
        with contextlib.suppress(ResourceExistsError):
            await self.queue.create_queue()

    async def send(self, *bodies: dict[str, Any] | str | bytes, concurrency: int = 1) -> list[str]:
        """Enqueue raw bodies as producers do (plain text: host.json says messageEncoding none), in
        order unless ``concurrency`` > 1; returns the message ids."""
        gate = asyncio.Semaphore(concurrency)
        queue = self.queue

        async def send_one(body: dict[str, Any] | str | bytes) -> str:
            text = json.dumps(body) if isinstance(body, dict) else body
            async with gate:
                sent = await queue.send_message(text.decode() if isinstance(text, bytes) else text)
            return str(sent.id)

        return list(await asyncio.gather(*(send_one(body) for body in bodies)))

    async def result(self, job_id: str) -> dict[str, Any] | None:
        """One job's stored result, or None while there is none."""
        try:
            data = await (await self.results_container.download_blob(f"{job_id}.json")).readall()
        except ResourceNotFoundError:
            return None
        found: dict[str, Any] = json.loads(data)
        return found

    async def results(self, concurrency: int = 24) -> dict[str, dict[str, Any]]:
        """Every stored result by job id (one list call, then downloads a few at a time)."""
        container = self.results_container
        try:
            # Results are the top-level <id>.json blobs (older releases kept their retry store under retries/ here).
            names = [blob.name async for blob in container.list_blobs() if "/" not in blob.name]
        except ResourceNotFoundError:
            return {}
        gate = asyncio.Semaphore(concurrency)

        async def get(name: str) -> dict[str, Any]:
            async with gate:
                found: dict[str, Any] = json.loads(await (await container.download_blob(name)).readall())
                return found

        documents = await asyncio.gather(*(get(name) for name in names))
        return {name.removesuffix(".json"): document for name, document in zip(names, documents, strict=True)}

    async def message_count(self) -> int:
        return await approximate_count(self.queue)

    async def poison_count(self) -> int:
        return await approximate_count(self.poison)

    async def wait_for(
        self, count: int, *, host: WorkerHost | None = None, timeout: float = 60.0, interval: float = 0.3
    ) -> dict[str, dict[str, Any]]:
        """At least ``count`` results, once stored; WaitTimeout (with ``host``'s log) at the deadline."""
        found: dict[str, dict[str, Any]] = {}

        async def enough() -> dict[str, dict[str, Any]] | None:
            nonlocal found
            found = await self.results()
            return found if len(found) >= count else None

        def progress() -> str:
            return f"{count} results in {self.settings['RESULTS_CONTAINER']} (found {len(found)})"

        return await wait_until(enough, what=progress, host=host, timeout=timeout, interval=interval)

    async def queue_drained(
        self, *, host: WorkerHost | None = None, timeout: float = 30.0, interval: float = 0.3
    ) -> bool:
        """True once the jobs queue holds no message at all (visible or not); WaitTimeout at the deadline."""

        async def empty() -> bool:
            return await self.message_count() == 0

        return await wait_until(
            empty, what=f"{self.settings['JOBS_QUEUE']} to drain", host=host, timeout=timeout, interval=interval
        )

    async def close(self) -> None:
        await self.queues.close()
        await self.blobs.close()
