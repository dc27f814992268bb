"""PACING_SHARED_BUDGET through the worker, in-process with the real storage and openai SDKs against Azurite and
the Azure OpenAI emulator: the gates book from the ledger in the worker-only container, and with that container
missing they fall back to their own share, once logged, every job still answered."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from shared import worker
from shared.budget import PREFIX, parse
from shared.connections import Runtime
from tests.conftest import OpenAIEmulator
from tests.worker.fakes import Message
from tests.worker_fixtures import Jobs

pytestmark = pytest.mark.e2e

JOBS = 6


@pytest_asyncio.fixture
async def runtime(local_dev_settings: dict[str, str], aoai: OpenAIEmulator) -> AsyncIterator[Runtime]:
    aoai.configure(tpm=1_000_000)  # a limit in the headers: the gates have something to book
    made = Runtime.from_env({**local_dev_settings, "PACING_SHARED_BUDGET": "true"})
    yield made
    await made.close()


async def run_jobs(runtime: Runtime, prefix: str) -> list[str]:
    messages = [
        Message(json.dumps({"id": f"{prefix}-{i}", "prompt": f"question {i}"}).encode(), id=f"m-{prefix}-{i}")
        for i in range(JOBS)
    ]
    results = await asyncio.gather(*(worker.handle(m, runtime) for m in messages))
    return [r.status if r is not None else "none" for r in results]


async def test_the_gates_book_from_the_ledger_in_the_worker_only_container(
    jobs: Jobs, runtime: Runtime, aoai: OpenAIEmulator
) -> None:
    staging = jobs.blobs.get_container_client(jobs.settings["STAGING_CONTAINER"])
    await staging.create_container()
    assert await run_jobs(runtime, "booked") == ["succeeded"] * JOBS
    names = [b.name async for b in staging.list_blobs(name_starts_with=PREFIX)]
    assert len(names) == 1  # one ledger for the one deployment
    ledger = parse(await (await staging.download_blob(names[0])).readall(), 0.0)
    assert len(ledger) == 1  # this process, one instance
    booked = [gate.shared for gate in runtime.pacer.gates.values() if gate.shared is not None]
    assert booked and booked[0].ops >= 2 and booked[0].live()
    assert aoai.stats()["by_status"].get("429", 0) == 0


async def test_without_the_container_every_job_is_answered_on_the_instances_own_share(
    jobs: Jobs, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.budget"):
        assert await run_jobs(runtime, "alone") == ["succeeded"] * JOBS
    warnings = [r for r in caplog.records if r.name == "shared.budget"]
    assert len(warnings) == 1  # once, not per job
    assert "container does not exist" in warnings[0].getMessage()
    shared = [gate.shared for gate in runtime.pacer.gates.values() if gate.shared is not None]
    assert shared and not shared[0].live()
