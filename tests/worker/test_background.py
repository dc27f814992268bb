"""Background jobs' failure paths against in-process storage and a fake Responses API (``handle`` as the host
calls it): the state write failing or losing a race, the pointer's send failing, a retrieve throttled or
answering 404, the bound, running twice, a pointer arriving late or forged. End to end (the real SDK, the
emulator, Azurite, a host restart) in test_responses_e2e.py."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest

from shared.jobs import RetryState
from shared.worker import handle
from tests.worker.fakes import FakeResponses, FakeWorld, Message, fake_world, responses_of, responses_world


@pytest.fixture
def world() -> FakeWorld:
    return responses_world()


def job_message(**extra: Any) -> Message:
    return Message(json.dumps({"id": "j1", "prompt": "think hard", "background": True}).encode(), **extra)


def pointer(world: FakeWorld, n: int = -1, **extra: Any) -> Message:
    body, _ = world.jobs_queue.messages[n]
    return Message(body.encode(), **{"id": f"ptr-{n}", **extra})


def state(world: FakeWorld) -> RetryState:
    return RetryState.model_validate_json(world.worker_only.blobs["retries/j1.json"].body)


def not_found() -> openai.NotFoundError:
    request = httpx2.Request("GET", "https://res.openai.azure.com/openai/v1/responses/resp_1")
    response = httpx2.Response(404, json={"error": {"code": "NotFound"}}, request=request)
    return openai.NotFoundError("gone", response=response, body={"code": "NotFound"})


def throttled() -> openai.RateLimitError:
    request = httpx2.Request("GET", "https://res.openai.azure.com/openai/v1/responses/resp_1")
    response = httpx2.Response(429, headers={"retry-after": "7"}, json={"error": {"code": "429"}}, request=request)
    return openai.RateLimitError("slow down", response=response, body={"code": "429"})


async def test_a_background_job_waits_behind_a_pointer_and_is_stored_once_when_done(world: FakeWorld) -> None:
    assert await handle(job_message(), world.runtime) is None  # started; the invocation lets go
    fake = responses_of(world)
    assert fake.created == [{"model": "gpt-5-pro", "input": "think hard", "store": True, "background": True}]
    assert state(world).background is not None and state(world).background.response_id == "resp_1"  # type: ignore[union-attr]
    assert world.worker_only.blobs["retries/j1.json"].metadata["waiting"] == "background"
    ((body, delay),) = world.jobs_queue.messages
    assert json.loads(body)["requeued"] is True and delay == 5  # BACKGROUND_POLL_SECONDS
    assert await handle(pointer(world), world.runtime) is None  # still queued: checked again, later
    assert [d for _, d in world.jobs_queue.messages] == [5, 10]
    assert await handle(job_message(id="msg-again"), world.runtime) is None  # the same id again: a duplicate
    assert await handle(pointer(world, 0), world.runtime) is None  # the stale pointer: its token was replaced
    fake.status["resp_1"] = "completed"
    result = await handle(pointer(world), world.runtime)
    assert result is not None and (result.status, result.output, result.response_id) == (
        "succeeded",
        "deep thought",
        "resp_1",
    )
    assert len(fake.created) == 1 and "retries/j1.json" not in world.worker_only.blobs


async def test_a_redelivery_after_the_state_was_stored_starts_no_second_response(world: FakeWorld) -> None:
    world.jobs_queue.failing_sends = 1  # the pointer's send fails after the state is written
    with pytest.raises(Exception, match="connection reset"):
        await handle(job_message(), world.runtime)
    assert await handle(job_message(dequeue_count=2), world.runtime) is None  # the host's redelivery
    assert len(responses_of(world).created) == 1 and len(world.jobs_queue.messages) == 1  # it continued waiting


async def test_a_state_write_that_fails_cancels_the_response_nobody_records(world: FakeWorld) -> None:
    world.worker_only.fail_next("upload")
    with pytest.raises(Exception, match="connection reset"):
        await handle(job_message(), world.runtime)
    assert responses_of(world).cancelled == ["resp_1"] and not world.jobs_queue.messages


async def test_a_retrieve_throttled_requeues_and_keeps_the_response(world: FakeWorld) -> None:
    await handle(job_message(), world.runtime)
    responses_of(world).errors = [throttled()]
    assert await handle(pointer(world), world.runtime) is None
    waiting = state(world)
    assert waiting.background is not None and waiting.background.response_id == "resp_1"
    assert waiting.redelivery is not None and waiting.redelivery.reason == "throttled"
    responses_of(world).status["resp_1"] = "completed"
    result = await handle(pointer(world), world.runtime)
    assert result is not None and result.status == "succeeded" and len(responses_of(world).created) == 1


async def test_a_response_the_service_lost_fails_the_job(world: FakeWorld) -> None:
    await handle(job_message(), world.runtime)
    responses_of(world).errors = [not_found()]
    result = await handle(pointer(world), world.runtime)
    assert result is not None and result.error is not None and result.error.code == "background_lost"


async def test_past_its_bound_a_response_is_cancelled_and_the_job_fails() -> None:
    world = fake_world(AZURE_OPENAI_DEPLOYMENT="gpt-5-pro", AZURE_OPENAI_API="responses", BACKGROUND_MAX_SECONDS="1")
    world.model.responses = fake = FakeResponses()  # type: ignore[attr-defined]
    await handle(job_message(), world.runtime)
    ((_, delay),) = world.jobs_queue.messages
    assert delay == 1  # never past the bound
    blob = world.worker_only.blobs["retries/j1.json"]
    aged = json.loads(blob.body)
    aged["background"]["started_at"] = "2000-01-01T00:00:00Z"  # as if it had thought for ever
    blob.body = json.dumps(aged).encode()
    result = await handle(pointer(world), world.runtime)
    assert result is not None and result.error is not None and result.error.code == "background_timeout"
    assert fake.cancelled == ["resp_1"] and result.response_id == "resp_1"


async def test_a_response_cancelled_elsewhere_is_a_failed_result_that_says_so(world: FakeWorld) -> None:
    await handle(job_message(), world.runtime)
    responses_of(world).status["resp_1"] = "cancelled"  # cancelled elsewhere (the portal, another tool)
    result = await handle(pointer(world), world.runtime)
    assert result is not None and result.error is not None and result.error.code == "response_cancelled"
