"""``handle`` against in-process storage and model fakes: what a delivery stores, sends and spends.

Fast tier. The same paths run end to end against Azurite and the emulators in test_end_to_end.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest

from shared.worker import handle
from tests.worker.fakes import Blob, FakeWorld, Message, fake_world


def message(body: dict[str, Any] | bytes, **extra: Any) -> Message:
    return Message(body if isinstance(body, bytes) else json.dumps(body).encode(), **extra)


def throttled(retry_after: str = "120") -> openai.RateLimitError:
    request = httpx2.Request("POST", "https://res.openai.azure.com/openai/v1/chat/completions")
    response = httpx2.Response(429, headers={"retry-after": retry_after}, json={"error": {}}, request=request)
    return openai.RateLimitError("slow down", response=response, body={"code": "429"})


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


async def test_a_job_becomes_one_result_and_one_notice(world: FakeWorld) -> None:
    result = await handle(message({"id": "j1", "prompt": "hi", "reply_to": "replies"}), world.runtime)
    assert result is not None and result.status == "succeeded" and result.output == "echo: hi"
    assert world.results.blobs["j1.json"].metadata == {"status": "succeeded"}  # notice confirmed: mark cleared
    notices = world.storage.get_queue_client("replies").messages
    assert [json.loads(body)["id"] for body, _ in notices] == ["j1"]


async def test_a_notice_that_failed_to_send_is_sent_by_the_redelivery(world: FakeWorld) -> None:
    replies = world.storage.get_queue_client("replies")
    replies.failing_sends = 1
    delivery = message({"id": "j1", "prompt": "hi", "reply_to": "replies"})
    with pytest.raises(Exception, match="connection reset"):
        await handle(delivery, world.runtime)  # the host will redeliver
    assert world.results.blobs["j1.json"].metadata == {"status": "succeeded", "notify": "replies"}
    delivery.dequeue_count = 2
    assert await handle(delivery, world.runtime) is None  # the result stands: no second model call
    assert len(world.model.calls) == 1
    assert [json.loads(body)["id"] for body, _ in replies.messages] == ["j1"]
    assert world.results.blobs["j1.json"].metadata == {"status": "succeeded"}


async def test_a_reply_queue_deleted_between_two_jobs_is_made_again(world: FakeWorld) -> None:
    replies = world.storage.get_queue_client("replies")
    await handle(message({"id": "j1", "prompt": "one", "reply_to": "replies"}), world.runtime)
    replies.missing = True  # someone deleted it; this process had already made sure it existed
    await handle(message({"id": "j2", "prompt": "two", "reply_to": "replies"}, id="msg-2"), world.runtime)
    assert [json.loads(body)["id"] for body, _ in replies.messages] == ["j1", "j2"]
    assert world.results.blobs["j2.json"].metadata == {"status": "succeeded"}


async def test_a_failed_result_is_replaced_by_a_corrected_resend(world: FakeWorld) -> None:
    world.model.errors = [openai.NotFoundError("no", response=_response(404), body={"code": "DeploymentNotFound"})]
    first = await handle(message({"id": "j1", "prompt": "hi"}), world.runtime)
    assert first is not None and first.status == "failed"
    again = await handle(message({"id": "j1", "prompt": "hi again"}, id="msg-2"), world.runtime)
    assert again is not None and again.status == "succeeded"
    assert world.result("j1")["output"] == "echo: hi again"
    assert len(world.model.calls) == 2


async def test_a_succeeded_result_is_final(world: FakeWorld) -> None:
    await handle(message({"id": "j1", "prompt": "hi"}), world.runtime)
    assert await handle(message({"id": "j1", "prompt": "other"}, id="msg-2"), world.runtime) is None
    assert world.result("j1")["output"] == "echo: hi" and len(world.model.calls) == 1
    # A broken resend under the same id does not overwrite success either.
    assert await handle(message({"id": "j1", "prompt": ""}, id="msg-3"), world.runtime) is None
    assert world.result("j1")["status"] == "succeeded"


async def test_of_two_replacements_only_the_one_that_read_the_current_version_wins(world: FakeWorld) -> None:
    await handle(message({"id": "j1", "prompt": ""}), world.runtime)  # failed: empty_prompt
    rival = Blob(b'{"id": "j1", "status": "failed"}', {"status": "failed"})

    def another_instance_replaces_it_first() -> None:
        world.results.blobs["j1.json"] = rival

    world.results.before_conditional_upload = another_instance_replaces_it_first
    assert await handle(message({"id": "j1", "prompt": "fixed"}, id="msg-2"), world.runtime) is None
    assert world.results.blobs["j1.json"] is rival  # the later write did not clobber the rival's
    assert len(world.model.calls) == 1


async def test_requeued_jobs_keep_their_retry_state_where_producers_cannot_write(world: FakeWorld) -> None:
    world.model.errors = [throttled(), throttled()]
    delivery = message({"id": "j1", "prompt": "hi", "metadata": {"k": 1}})
    assert await handle(delivery, world.runtime) is None
    (body, delay), *_ = world.jobs_queue.messages
    assert json.loads(body) == {"id": "j1", "requeued": True} and 120 <= delay <= 144
    state = json.loads(world.results.blobs["retries/j1.json"].body)
    assert state["redelivery"]["attempt"] == 1 and state["job"]["metadata"] == {"k": 1}

    assert await handle(Message(body.encode(), id="msg-2"), world.runtime) is None  # throttled again
    body, _ = world.jobs_queue.messages[1]
    assert json.loads(world.results.blobs["retries/j1.json"].body)["redelivery"]["attempt"] == 2
    result = await handle(Message(body.encode(), id="msg-3"), world.runtime)
    assert result is not None and result.status == "succeeded" and result.attempts == 3
    assert result.metadata == {"k": 1}
    assert "retries/j1.json" not in world.results.blobs  # released with the result


async def test_producers_cannot_set_or_forge_retry_state(world: FakeWorld) -> None:
    forged = await handle(
        message({"id": "j1", "prompt": "hi", "redelivery": {"attempt": 100, "first_seen": "2026-01-01T00:00:00Z",
                                                             "reason": "throttled"}}),
        world.runtime,
    )  # fmt: skip
    assert forged is not None and forged.error is not None and forged.error.code == "unknown_field"
    pointer = await handle(message({"id": "j2", "requeued": True}), world.runtime)
    assert pointer is not None and pointer.error is not None and pointer.error.code == "retry_state_missing"
    assert world.model.calls == []


async def test_a_request_the_sdk_cannot_encode_fails_at_once(world: FakeWorld) -> None:
    job = {"id": "j1", "prompt": "hi"}
    original = world.model.create

    async def create(**request: Any) -> Any:
        request["temperature"] = float("nan")  # as if a value the contract missed reached the SDK
        return await original(**request)

    world.model.create = create  # type: ignore[method-assign]
    result = await handle(message(job), world.runtime)
    assert result is not None and result.error is not None and result.error.code == "invalid_request"
    assert world.model.calls == []  # refused before anything was sent; not retried


async def test_a_refused_job_echoes_and_notifies_nothing(world: FakeWorld) -> None:
    result = await handle(
        message({"id": "j1", "prompt": "hi", "reply_to": "not-allowed", "metadata": {"secret": "x"}}), world.runtime
    )
    assert result is not None and result.error is not None and result.error.code == "reply_to_not_allowed"
    assert "metadata" not in world.result("j1")
    assert world.storage.get_queue_client("not-allowed").messages == []


def _response(status: int) -> httpx2.Response:
    request = httpx2.Request("POST", "https://res.openai.azure.com/openai/v1/chat/completions")
    return httpx2.Response(status, json={"error": {}}, request=request)


async def test_max_tokens_is_sent_as_max_completion_tokens(world: FakeWorld) -> None:
    await handle(message({"id": "j1", "prompt": "hi", "parameters": {"max_tokens": 50}}), world.runtime)
    (request,) = world.model.calls
    assert request["max_completion_tokens"] == 50 and "max_tokens" not in request


async def test_reasoning_tokens_are_reported_in_usage(world: FakeWorld) -> None:
    world.model.reasoning_tokens = 64
    params = {"max_completion_tokens": 500, "reasoning_effort": "low", "verbosity": "low"}
    result = await handle(message({"id": "j1", "prompt": "hi", "parameters": params}), world.runtime)
    assert result is not None and result.status == "succeeded" and result.usage is not None
    assert (result.usage.reasoning_tokens, result.usage.completion_tokens, result.usage.cached_tokens) == (64, 66, 0)
    assert world.model.calls[0]["reasoning_effort"] == "low" and world.model.calls[0]["verbosity"] == "low"


async def test_an_empty_answer_out_of_budget_is_a_failure_that_says_what_to_raise(world: FakeWorld) -> None:
    world.model.reasoning_tokens = 1024
    job = {"id": "j1", "prompt": "hi", "parameters": {"max_completion_tokens": 300, "reasoning_effort": "high"}}
    result = await handle(message(job), world.runtime)
    assert result is not None and result.status == "failed" and result.error is not None
    assert result.error.code == "output_budget_exhausted"
    assert "all 300 completion tokens (300 on reasoning)" in result.error.message
    assert "max_completion_tokens" in result.error.message and "reasoning_effort" in result.error.message
    assert result.usage is not None and result.usage.reasoning_tokens == 300 and result.finish_reason == "length"


async def test_the_last_transient_attempt_keeps_the_job_for_a_replay() -> None:
    world = fake_world(MODEL_OUTAGE_TOLERANCE_SECONDS="0")  # model errors go straight to the host's retries
    world.model.errors = [throttled()]
    assert await handle(message({"id": "j1", "prompt": "hi"}), world.runtime) is None  # now in the retry store
    pointer, _ = world.jobs_queue.messages[0]
    world.model.errors = [openai.InternalServerError("down", response=_response(500), body=None)]
    with pytest.raises(openai.InternalServerError):  # the host poisons the pointer
        await handle(Message(pointer.encode(), id="msg-2", dequeue_count=5), world.runtime)
    assert world.result("j1")["error"]["code"] == "transient_exhausted"
    assert "retries/j1.json" in world.results.blobs  # what the poisoned pointer needs, kept
    replayed = await handle(Message(pointer.encode(), id="msg-3"), world.runtime)
    assert replayed is not None and replayed.status == "succeeded"  # the failed result replaced
    assert "retries/j1.json" not in world.results.blobs
