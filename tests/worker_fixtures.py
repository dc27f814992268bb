"""Fixtures for end-to-end worker tests: settings, a storage client, and a local-host factory.

The worker runs as the real thing does: ``python -m emulators.functions_host`` in its own
process (behind the same network guard), reading its settings from the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.identity.aio import DefaultAzureCredential
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from emulators import _process
from emulators.azurite import Azurite
from shared.connections import StorageEndpoints
from tests.conftest import DEPLOYMENT, REPO, SECOND_DEPLOYMENT, AzureCli, IdentityEndpoint, OpenAIEmulator

GUARDED = REPO / "emulators" / "guarded"


@dataclass
class WorkerHost:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        _process.stop(self.process)


@dataclass
class Jobs:
    """A producer's and a reader's view of one test's queue and results container."""

    settings: dict[str, str]
    queues: QueueServiceClient
    blobs: BlobServiceClient

    @property
    def queue(self) -> Any:
        return self.queues.get_queue_client(self.settings["JOBS_QUEUE"])

    @property
    def poison(self) -> Any:
        return self.queues.get_queue_client(self.settings["JOBS_QUEUE"] + "-poison")

    async def send(self, *bodies: dict[str, Any] | str | bytes) -> list[str]:
        """Enqueue raw bodies as producers do (plain text; host.json says messageEncoding none)."""
        ids = []
        for body in bodies:
            text = json.dumps(body) if isinstance(body, dict) else body
            sent = await self.queue.send_message(text.decode() if isinstance(text, bytes) else text)
            ids.append(sent.id)
        return ids

    async def results(self) -> dict[str, dict[str, Any]]:
        container = self.blobs.get_container_client(self.settings["RESULTS_CONTAINER"])
        found: dict[str, dict[str, Any]] = {}
        try:
            async for blob in container.list_blobs():
                data = await (await container.download_blob(blob.name)).readall()
                found[blob.name.removesuffix(".json")] = json.loads(data)
        except ResourceNotFoundError:
            pass
        return found

    async def wait_for(self, count: int, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = await self.results()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.3)

    async def queue_drained(self, timeout: float = 30.0) -> bool:
        """True once the jobs queue holds no message at all (visible or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (await self.queue.get_queue_properties()).approximate_message_count == 0:
                return True
            await asyncio.sleep(0.3)
        return False

    async def poison_count(self) -> int:
        try:
            return (await self.poison.get_queue_properties()).approximate_message_count or 0
        except ResourceNotFoundError:
            return 0


def base_settings(aoai: OpenAIEmulator, names: dict[str, str]) -> dict[str, str]:
    return {
        "AZURE_OPENAI_ENDPOINT": aoai.endpoint,
        "AZURE_OPENAI_DEPLOYMENT": DEPLOYMENT,
        "AZURE_OPENAI_ALLOWED_DEPLOYMENTS": f"{DEPLOYMENT},{SECOND_DEPLOYMENT}",
        "AZURE_OPENAI_TIMEOUT_SECONDS": "10",
        "AZURE_OPENAI_MAX_RETRIES": "2",
        **names,
    }


@pytest.fixture
def keyless_settings(
    aoai: OpenAIEmulator, names: dict[str, str], azurite_keyless: Azurite, managed_identity: IdentityEndpoint
) -> dict[str, str]:
    """A Function App in Azure: identity-based storage and managed identity."""
    return {**base_settings(aoai, names), **azurite_keyless.settings(), **managed_identity.env}


@pytest.fixture
def local_dev_settings(
    aoai: OpenAIEmulator, names: dict[str, str], azurite: Azurite, azure_cli: AzureCli
) -> dict[str, str]:
    """A laptop: Azurite connection string and the developer's `az login`."""
    return {
        **base_settings(aoai, names),
        **azurite.settings(),
        "AZURE_TOKEN_CREDENTIALS": "dev",
        "AZURE_CONFIG_DIR": str(azure_cli.config_dir),
        "PATH": os.environ["PATH"],
        "AZ_STANDIN_PYTHON": sys.executable,
    }


@pytest_asyncio.fixture
async def jobs_for() -> AsyncIterator[Callable[[dict[str, str]], Awaitable[Jobs]]]:
    """Build a storage client for a settings dict (key or token, as the settings say), with its
    jobs queue created as infra would have."""
    made: list[Jobs] = []
    credentials: list[DefaultAzureCredential] = []

    async def make(settings: dict[str, str]) -> Jobs:
        endpoints = StorageEndpoints.from_settings(env=settings)
        credential = DefaultAzureCredential()
        credentials.append(credential)
        jobs = Jobs(settings, endpoints.queue_service(credential), endpoints.blob_service(credential))
        made.append(jobs)
        with contextlib.suppress(ResourceExistsError):
            await jobs.queue.create_queue()
        return jobs

    yield make
    for jobs in made:
        await jobs.queues.close()
        await jobs.blobs.close()
    for credential in credentials:
        await credential.close()


@pytest.fixture
def start_host(tmp_path: Path) -> Iterator[Callable[..., WorkerHost]]:
    """Start the local queue host on the repo's function_app.py with the given settings."""
    hosts: list[WorkerHost] = []

    def start(settings: dict[str, str], *, receive_visibility: float = 600.0, app_dir: Path = REPO) -> WorkerHost:
        env = {**os.environ, **settings, "PYTHONPATH": f"{GUARDED}{os.pathsep}{REPO}", "LOG_LEVEL": "INFO"}
        log_path = tmp_path / f"host-{len(hosts)}.log"
        with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
            [
                sys.executable, "-m", "emulators.functions_host", "--app-dir", str(app_dir),
                "--settings", str(tmp_path / "no-local-settings.json"),
                "--receive-visibility", str(receive_visibility),
            ],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        host = WorkerHost(process, log_path)
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.stop()
