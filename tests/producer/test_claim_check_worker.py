"""The worker's side of the claim check, driven in-process with real storage and the model emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from emulators.aoai import answer_for
from shared import worker
from shared.connections import Runtime
from shared.jobs import CLAIM_CHECK_BYTES, Result
from tests.conftest import DEPLOYMENT, OpenAIEmulator
from tests.producer.helpers import blob_names, peek_bodies
from tests.worker.fakes import Message
from tests.worker_fixtures import Jobs


def reference(job_id: str, blob: str | None = None) -> Message:
    return Message(json.dumps({"id": job_id, "payload": {"blob": blob or f"{job_id}.json"}}).encode())


@pytest_asyncio.fixture
async def runtime(local_dev_settings: dict[str, str]) -> AsyncIterator[Runtime]:
    made = Runtime.from_env(local_dev_settings)
    yield made
    await made.close()


@pytest_asyncio.fixture
async def jobs(local_dev_settings: dict[str, str], jobs_for: Any) -> Jobs:
    jobs: Jobs = await jobs_for(local_dev_settings)
    return jobs


async def put_payload(jobs: Jobs, name: str, body: dict[str, Any]) -> None:
    container = jobs.blobs.get_container_client(jobs.settings["PAYLOADS_CONTAINER"])
    if not await container.exists():
        await container.create_container()
    await container.upload_blob(name, json.dumps(body).encode(), overwrite=True)


async def stored(jobs: Jobs, job_id: str) -> Result:
    return Result.model_validate((await jobs.results())[job_id])


async def test_reference_is_resolved_and_payload_deleted(runtime: Runtime, jobs: Jobs) -> None:
    await put_payload(jobs, "big-1.json", {"id": "big-1", "prompt": "From the payload", "metadata": {"k": 1}})
    result = await worker.handle(reference("big-1"), runtime)
    assert result is not None and result.status == "succeeded", result
    assert result.output == answer_for([{"role": "user", "content": "From the payload"}], DEPLOYMENT)
    assert result.metadata == {"k": 1}
    assert await blob_names(jobs, jobs.settings["PAYLOADS_CONTAINER"]) == []
    # Redelivered after success: payload gone, result there -> consumed quietly, result unchanged.
    assert await worker.handle(reference("big-1"), runtime) is None
    assert (await stored(jobs, "big-1")).status == "succeeded"


async def test_missing_payload_without_result_fails_the_job(runtime: Runtime, jobs: Jobs) -> None:
    result = await worker.handle(reference("lost-1"), runtime)
    assert result is not None and result.error is not None
    assert (result.id, result.status, result.error.code) == ("lost-1", "failed", "payload_missing")


@pytest.mark.parametrize(
    ("body", "code", "key"),
    [
        ({"id": "trav-1", "payload": {"blob": "../results/x.json"}}, "invalid_reference", "trav-1"),
        ({"id": "other-1", "payload": {"blob": "other-2.json"}}, "invalid_reference", "other-1"),
        ({"id": "cont-1", "payload": {"blob": "cont-1.json", "container": "results"}}, "invalid_reference", "cont-1"),
        ({"id": "../x", "payload": {"blob": "x.json"}}, "invalid_reference", "msg-1"),
    ],
)
async def test_references_are_validated_strictly(
    runtime: Runtime, jobs: Jobs, body: dict[str, Any], code: str, key: str
) -> None:
    result = await worker.handle(Message(json.dumps(body).encode()), runtime)
    assert result is not None and result.error is not None
    assert (result.id, result.error.code) == (key, code), result.error


async def test_payload_is_checked_like_a_message(runtime: Runtime, jobs: Jobs, aoai: OpenAIEmulator) -> None:
    await put_payload(jobs, "mis-1.json", {"id": "someone-else", "prompt": "x"})
    await put_payload(jobs, "bad-1.json", {"id": "bad-1", "prompt": "x", "parameters": {"temperature": 9}})
    mismatch = await worker.handle(reference("mis-1"), runtime)
    invalid = await worker.handle(reference("bad-1"), runtime)
    assert mismatch is not None and mismatch.error is not None and mismatch.error.code == "payload_mismatch"
    assert invalid is not None and invalid.error is not None and invalid.error.code == "invalid_parameter"
    assert "parameters.temperature" in invalid.error.message
    assert await blob_names(jobs, jobs.settings["PAYLOADS_CONTAINER"]) == []  # both released with their result
    assert aoai.stats()["requests"] == 0


async def test_throttled_large_job_waits_in_the_retry_store(
    local_dev_settings: dict[str, str], jobs: Jobs, aoai: OpenAIEmulator
) -> None:
    # A wait longer than the SDK honours makes the worker re-enqueue the job: the job and its retry
    # state go to the retry store (the worker-only container, where producers hold no role) and the message
    # is a small pointer, whatever the job's size; the claim-checked payload goes with the result. The gate's
    # hold (1 s) and its bound (1 s: the 429 is retried through the gate until then) keep the test short.
    settings = {"THROTTLE_MAX_DELAY_SECONDS": "1", "MODEL_ADMISSION_WAIT_SECONDS": "1"}
    runtime = Runtime.from_env({**local_dev_settings, **settings})
    try:
        aoai.configure(tpm=1000, retry_after_override_seconds=150)
        prompt = "p" * (CLAIM_CHECK_BYTES + 1000)
        await put_payload(jobs, "slow-1.json", {"id": "slow-1", "prompt": prompt})
        assert await worker.handle(reference("slow-1"), runtime) is None
        copies: list[Any] = []
        for _ in range(50):  # the pointer becomes visible after the (capped) delay
            if copies := await peek_bodies(jobs):
                break
            await asyncio.sleep(0.1)
        assert copies == [{"id": "slow-1", "requeued": True, "token": copies[0]["token"]}]
        worker_only = jobs.blobs.get_container_client(jobs.settings["STAGING_CONTAINER"])
        state = json.loads(await (await worker_only.download_blob("retries/slow-1.json")).readall())
        assert state["redelivery"]["attempt"] == 1 and state["job"]["prompt"] == prompt
        assert state["payload"] == {"blob": "slow-1.json"}
        assert await blob_names(jobs, jobs.settings["PAYLOADS_CONTAINER"]) == ["slow-1.json"]  # kept until the end

        aoai.configure(tpm=None, retry_after_override_seconds=None)
        result = await worker.handle(Message(json.dumps(copies[0]).encode(), id="msg-2"), runtime)
        assert result is not None and result.status == "succeeded" and result.attempts == 2
        assert await blob_names(jobs, jobs.settings["PAYLOADS_CONTAINER"]) == []
        assert await blob_names(jobs, jobs.settings["RESULTS_CONTAINER"]) == ["slow-1.json"]
    finally:
        await runtime.close()
