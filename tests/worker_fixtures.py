"""Fixtures for end-to-end worker tests, over emulators/stack: settings, storage clients, a host factory.

The worker runs as the real thing does: ``python -m emulators.functions_host`` in its own
process (behind the same network guard), reading its settings from the environment.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from azure.identity.aio import DefaultAzureCredential

from emulators.azurite import Azurite
from emulators.stack import services, workers
from emulators.stack.environment import REPO
from emulators.stack.services import AzureCli, IdentityEndpoint, OpenAIEmulator
from emulators.stack.workers import Jobs, WorkerHost

# Tests in tests/producer import these from here.
__all__ = ["Jobs", "WorkerHost", "jobs_for", "keyless_settings", "local_dev_settings", "start_host"]


@pytest.fixture
def keyless_settings(
    aoai: OpenAIEmulator, names: dict[str, str], azurite_keyless: Azurite, managed_identity: IdentityEndpoint
) -> dict[str, str]:
    """A Function App in Azure: identity-based storage and managed identity."""
    return services.managed_identity_settings(aoai, names, azurite_keyless, managed_identity)


@pytest.fixture
def local_dev_settings(
    aoai: OpenAIEmulator, names: dict[str, str], azurite: Azurite, azure_cli: AzureCli
) -> dict[str, str]:
    """A laptop: Azurite connection string and the developer's `az login`."""
    return services.azure_cli_settings(aoai, names, azurite, azure_cli)


@pytest_asyncio.fixture
async def jobs_for() -> AsyncIterator[Callable[[dict[str, str]], Awaitable[Jobs]]]:
    """Build a storage client for a settings dict (key or token, as the settings say), with its
    jobs queue created as infra would have."""
    made: list[tuple[Jobs, DefaultAzureCredential]] = []

    async def make(settings: dict[str, str]) -> Jobs:
        credential = DefaultAzureCredential()
        jobs = Jobs.connect(settings, credential)
        made.append((jobs, credential))
        await jobs.ensure_queue()
        return jobs

    yield make
    for jobs, credential in made:
        await jobs.close()
        await credential.close()


@pytest.fixture
def start_host(tmp_path: Path) -> Iterator[Callable[..., WorkerHost]]:
    """Start the local queue host on the repo's function_app.py (or ``app_dir``) with the given settings."""
    hosts: list[WorkerHost] = []

    def start(settings: dict[str, str], *, receive_visibility: float = 600.0, app_dir: Path = REPO) -> WorkerHost:
        args = ("--receive-visibility", str(receive_visibility))
        command = workers.host_command(tmp_path, app_dir=app_dir, args=args)
        host = workers.start_host(command, settings, tmp_path / f"host-{len(hosts)}.log")
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.stop()


def app_that_gives_up_fast(tmp_path: Path) -> Path:
    """The repo's function_app.py beside a host.json that poisons after 2 attempts with no visibility
    delay, so a last-attempt path runs in seconds (the app dir for ``start_host(..., app_dir=)``)."""
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(REPO / "function_app.py", app)
    host_json = json.loads((REPO / "host.json").read_text())
    host_json["extensions"]["queues"].update(maxDequeueCount=2, visibilityTimeout="00:00:00")
    (app / "host.json").write_text(json.dumps(host_json))
    return app
