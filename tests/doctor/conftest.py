"""Run ``python -m shared doctor`` in-process against the local Azure, capturing what it prints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.identity.aio import DefaultAzureCredential

from emulators.azurite import Azurite
from shared.__main__ import main
from shared.storage_clients import StorageEndpoints
from tests.conftest import DEPLOYMENT, AzureCli, IdentityEndpoint, OpenAIEmulator


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def checks(self) -> dict[str, dict[str, Any]]:
        """``--json`` output keyed by check id."""
        return {c["check"]: c for c in json.loads(self.out)}

    def status(self) -> dict[str, str]:
        return {name: c["status"] for name, c in self.checks.items()}

    def reasons(self) -> dict[str, str]:
        """``check id -> reason`` of the checks whose reason is not plain ``ok``."""
        return {name: c["reason"] for name, c in self.checks.items() if c["reason"] != "ok"}

    def __getitem__(self, check: str) -> dict[str, Any]:
        return self.checks[check]


Doctor = Callable[..., Outcome]


@pytest.fixture
def doctor(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Doctor:
    """``doctor(env, *argv)``: set ``env`` in the environment, run the command, return code + output.

    Runs in an empty directory (no stray local.settings.json) and, unless a test says otherwise,
    as "not a container" (this machine may well be one)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DOCTOR_ASSUME_CONTAINER", "0")
    capsys.readouterr()

    def run(env: dict[str, str], *argv: str) -> Outcome:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = main(["doctor", *argv])
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


def openai_settings(aoai: OpenAIEmulator, names: dict[str, str]) -> dict[str, str]:
    """What the worker needs besides storage: the emulator's endpoint and the test's names."""
    return {
        "AZURE_OPENAI_ENDPOINT": aoai.endpoint,
        "AZURE_OPENAI_DEPLOYMENT": DEPLOYMENT,
        "AZURE_OPENAI_TIMEOUT_SECONDS": "10",
        **names,
    }


def prepare_storage(settings: dict[str, str]) -> None:
    """Create the jobs queue and results container, as the infrastructure (or `make run`) does.

    Uses the current environment's identity for identity-based settings (Azurite checks the
    token's claims, not roles)."""

    async def create() -> None:
        endpoints = StorageEndpoints.from_settings(env=settings)
        credential = DefaultAzureCredential()
        async with (
            credential,
            endpoints.queue_service(credential) as queues,
            endpoints.blob_service(credential) as blobs,
        ):
            with contextlib.suppress(ResourceExistsError):
                await queues.get_queue_client(settings["JOBS_QUEUE"]).create_queue()
            with contextlib.suppress(ResourceExistsError):
                await blobs.get_container_client(settings["RESULTS_CONTAINER"]).create_container()

    saved = dict(os.environ)
    os.environ.update(settings)
    try:
        asyncio.run(create())
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def mi_settings(
    aoai: OpenAIEmulator, names: dict[str, str], azurite_keyless: Azurite, managed_identity: IdentityEndpoint
) -> dict[str, str]:
    """A Function App in Azure: managed identity and identity-based (keyless) storage."""
    settings = {**openai_settings(aoai, names), **azurite_keyless.settings()}
    prepare_storage(settings)
    return settings


@pytest.fixture
def dev_settings(aoai: OpenAIEmulator, names: dict[str, str], azurite: Azurite, azure_cli: AzureCli) -> dict[str, str]:
    """A laptop: `az login` and the Azurite connection string."""
    settings = {**openai_settings(aoai, names), **azurite.settings()}
    prepare_storage(settings)
    return settings
