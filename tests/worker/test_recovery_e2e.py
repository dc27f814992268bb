"""Waking the jobs that wait out an outage (shared/recovery.py) through the real storage and openai SDKs against
Azurite and the Azure OpenAI emulator: in process (the pointer's recorded pop receipt, the metadata listing, a
second waker's 404), and through the local queue host running function_app.py, where a deployment's return
is noticed by the instance's few-token probe and every waiting job finishes within seconds of the outage's end instead
of at the end of its backoff. The lost-pointer path of issue 21 (a replayed message sending the pointer its
job never had) goes through the real services here too."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from azure.core.exceptions import ServiceRequestError

from emulators.stack.services import DEPLOYMENT, OpenAIEmulator
from emulators.stack.workers import Jobs, wait_until
from shared import recovery, worker
from shared.connections import Runtime
from shared.routing import OPEN_MAX
from tests.worker.e2e import message, worker_only

pytestmark = pytest.mark.e2e
SPREAD = 3  # RECOVERY_SPREAD_SECONDS in these tests


@pytest_asyncio.fixture
async def runtime(local_dev_settings: dict[str, str]) -> AsyncIterator[Runtime]:
    settings = {**local_dev_settings, "MODEL_ADMISSION_WAIT_SECONDS": "0", "RECOVERY_SPREAD_SECONDS": str(SPREAD)}
    made = Runtime.from_env(settings)
    made.router.on_opened = made.router.on_recovered = lambda *_: None  # each test wakes when it says
    yield made
    await made.close()


async def waiting_metadata(jobs: Jobs) -> dict[str, dict[str, str]]:
    """Every retry state's blob metadata, by job id."""
    blobs = worker_only(jobs).list_blobs(name_starts_with="retries/", include=["metadata"])
    return {b.name.removeprefix("retries/").removesuffix(".json"): dict(b.metadata or {}) async for b in blobs}


async def receive_pointer(jobs: Jobs, within: float) -> str | None:
    """The body of the first message visible on the jobs queue within ``within`` seconds (then deleted)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async for sent in jobs.queue.receive_messages(visibility_timeout=30):
            await jobs.queue.delete_message(sent)
            return str(sent.content)
        await asyncio.sleep(0.1)
    return None


async def test_a_job_waiting_out_an_outage_is_made_visible_with_its_recorded_pop_receipt(
    jobs: Jobs, runtime: Runtime, aoai: OpenAIEmulator
) -> None:
    aoai.fail_deployment(DEPLOYMENT, 600)
    try:
        assert await worker.handle(message({"id": "sleeper", "prompt": "hi"}, "first"), runtime) is None
    finally:
        aoai.restore_deployment(DEPLOYMENT)
    metadata = (await waiting_metadata(jobs))["sleeper"]
    assert metadata["reason"] == "outage" and metadata["pointer"] and metadata["receipt"] and metadata["due"]
    assert (datetime.fromisoformat(metadata["due"]) - datetime.now(UTC)).total_seconds() >= 4  # its backoff
    [entry] = runtime.settings.entries_for(None)
    assert await recovery.wake(runtime, entry) == 1
    pointer = await receive_pointer(jobs, within=2)  # visible now, not at its due time
    assert pointer is not None and json.loads(pointer)["id"] == "sleeper"
    # Another instance waking the same job: its pop receipt is no longer the message's (Azure's 404), harmless.
    assert await recovery.wake(runtime, entry) == 0
    result = await worker.handle(message(json.loads(pointer), metadata["pointer"]), runtime)
    assert result is not None and result.status == "succeeded" and result.attempts == 2
    assert await waiting_metadata(jobs) == {}


async def test_a_replayed_message_whose_job_never_had_its_pointer_sends_it(
    jobs: Jobs, runtime: Runtime, aoai: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_client = type(runtime.queues.get_queue_client(runtime.settings.jobs_queue))
    real_send = queue_client.send_message
    failing = {"left": 5}

    async def send(self: Any, content: Any, **options: Any) -> Any:
        if self.queue_name == runtime.settings.jobs_queue and failing["left"]:
            failing["left"] -= 1
            raise ServiceRequestError("connection reset")  # as a dropped connection: the pointer never went out
        return await real_send(self, content, **options)

    monkeypatch.setattr(queue_client, "send_message", send)
    aoai.fail_deployment(DEPLOYMENT, 600)
    body = {"id": "stranded", "prompt": "hi"}
    try:
        for count in range(1, 6):  # every delivery stores the state, none sends its pointer: then poisoned
            with pytest.raises(ServiceRequestError):
                await worker.handle(message(body, "poisoned", dequeue_count=count), runtime)
    finally:
        aoai.restore_deployment(DEPLOYMENT)
    assert "pointer" not in (await waiting_metadata(jobs))["stranded"]
    assert await worker.handle(message(body, "replayed"), runtime) is None  # python -m shared replay's copy
    metadata = (await waiting_metadata(jobs))["stranded"]
    assert metadata["pointer"]  # the pointer the state never had, now out, due when the state says ...
    assert await receive_pointer(jobs, within=1) is None
    [entry] = runtime.settings.entries_for(None)
    runtime.router.route(entry).circuit.succeeded()  # a probe finds the model back ...
    assert await recovery.wake(runtime, entry) == 1  # ... and the job, its pointer recorded, is woken like any other
    pointer = await receive_pointer(jobs, within=2)
    assert pointer is not None
    result = await worker.handle(message(json.loads(pointer), metadata["pointer"]), runtime)
    assert result is not None and result.status == "succeeded" and result.attempts == 6


@pytest.mark.timeout(240)
@pytest.mark.slow(seconds=90)
async def test_jobs_waiting_out_an_outage_finish_within_seconds_of_its_end_not_at_their_backoff(
    local_dev_settings: dict[str, str], jobs: Jobs, start_host: Any, aoai: OpenAIEmulator
) -> None:
    settings = {**local_dev_settings, "RECOVERY_SPREAD_SECONDS": str(SPREAD)}
    aoai.fail_deployment(DEPLOYMENT, 3600)  # until the worker's first call, then 45 s from it (below)
    bodies = [{"id": f"sleep-{i}", "prompt": f"Question {i}?"} for i in range(8)]
    await jobs.send(*bodies)
    host = start_host(settings)

    async def first_failure() -> Any:
        return next(iter(aoai.requests(DEPLOYMENT)), None)

    hit = await wait_until(first_failure, what="the worker's first call", host=host)
    ends = hit.began + 45  # long enough for the backoffs to grow past 20 s (5, 10, 20, 40 s)
    aoai.update_deployment(DEPLOYMENT, outage={"mode": "503", "until": ends})
    await asyncio.sleep(max(0.0, ends - time.time()))
    waiting = await waiting_metadata(jobs)
    latest = max(datetime.fromisoformat(m["due"]).timestamp() for m in waiting.values())
    assert latest - ends > 25, waiting  # left alone, the last of them would come this long after the end
    results = await jobs.wait_for(len(bodies), host=host, timeout=120)  # no new job comes to probe it
    assert all(r["status"] == "succeeded" for r in results.values()), [r.get("error") for r in results.values()]
    last = max(datetime.fromisoformat(r["timings"]["finished_at"]).timestamp() for r in results.values())
    # Noticed by the instance's probe within OPEN_MAX, then every waiting job woken over SPREAD seconds.
    assert last - ends <= OPEN_MAX + SPREAD + 5, (last - ends, latest - ends)
    assert await jobs.poison_count() == 0
    assert "woken" in host.log()
