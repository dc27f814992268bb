"""``handle`` against in-process storage and model fakes: what a delivery stores, sends and spends.

Fast tier. The same paths run end to end against Azurite and the emulators in test_end_to_end.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import httpx2
import openai
import pytest

from shared.store import LOST_POINTER_SECONDS
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
    # The result says which message wrote it; the notice is confirmed, so its mark is cleared.
    assert world.results.blobs["j1.json"].metadata == {"status": "succeeded", "message": "msg-1"}
    notices = world.storage.get_queue_client("replies").messages
    assert [json.loads(body)["id"] for body, _ in notices] == ["j1"]


async def test_a_notice_that_failed_to_send_is_sent_by_the_redelivery(world: FakeWorld) -> None:
    replies = world.storage.get_queue_client("replies")
    replies.failing_sends = 1
    delivery = message({"id": "j1", "prompt": "hi", "reply_to": "replies"})
    with pytest.raises(Exception, match="connection reset"):
        await handle(delivery, world.runtime)  # the host will redeliver
    assert world.results.blobs["j1.json"].metadata == {"status": "succeeded", "message": "msg-1", "notify": "replies"}
    delivery.dequeue_count = 2
    assert await handle(delivery, world.runtime) is None  # the result stands: no second model call
    assert len(world.model.calls) == 1
    assert [json.loads(body)["id"] for body, _ in replies.messages] == ["j1"]
    assert world.results.blobs["j1.json"].metadata == {"status": "succeeded", "message": "msg-1"}


async def test_a_reply_queue_deleted_between_two_jobs_is_made_again(world: FakeWorld) -> None:
    replies = world.storage.get_queue_client("replies")
    await handle(message({"id": "j1", "prompt": "one", "reply_to": "replies"}), world.runtime)
    replies.missing = True  # someone deleted it; this process had already made sure it existed
    await handle(message({"id": "j2", "prompt": "two", "reply_to": "replies"}, id="msg-2"), world.runtime)
    assert [json.loads(body)["id"] for body, _ in replies.messages] == ["j1", "j2"]
    assert world.results.blobs["j2.json"].metadata == {"status": "succeeded", "message": "msg-2"}


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


async def test_requeued_jobs_keep_their_retry_state_where_producers_have_no_role(world: FakeWorld) -> None:
    world.model.errors = [throttled(), throttled()]
    delivery = message({"id": "j1", "prompt": "hi", "metadata": {"k": 1}})
    assert await handle(delivery, world.runtime) is None
    (body, delay), *_ = world.jobs_queue.messages
    pointer = json.loads(body)
    assert pointer == {"id": "j1", "requeued": True, "token": pointer["token"]} and 120 <= delay <= 144
    assert not any(name.startswith("retries/") for name in world.results.blobs)  # not where producers read
    state = json.loads(world.worker_only.blobs["retries/j1.json"].body)
    assert state["redelivery"]["attempt"] == 1 and state["job"]["metadata"] == {"k": 1}
    assert state["token"] == pointer["token"]

    assert await handle(Message(body.encode(), id="msg-2"), world.runtime) is None  # throttled again
    body, _ = world.jobs_queue.messages[1]
    assert json.loads(body)["token"] != pointer["token"]  # a new token each time it goes back
    assert json.loads(world.worker_only.blobs["retries/j1.json"].body)["redelivery"]["attempt"] == 2
    result = await handle(Message(body.encode(), id="msg-3"), world.runtime)
    assert result is not None and result.status == "succeeded" and result.attempts == 3
    assert result.metadata == {"k": 1}
    assert "retries/j1.json" not in world.worker_only.blobs  # released with the result


async def test_producers_cannot_set_or_forge_retry_state(world: FakeWorld) -> None:
    forged = await handle(
        message({"id": "j1", "prompt": "hi", "redelivery": {"attempt": 100, "first_seen": "2026-01-01T00:00:00Z",
                                                             "reason": "throttled"}}),
        world.runtime,
    )  # fmt: skip
    assert forged is not None and forged.error is not None and forged.error.code == "unknown_field"
    # A pointer nobody was given runs nothing and writes nothing: no result, no retry state touched.
    assert await handle(message({"id": "j2", "requeued": True}), world.runtime) is None
    assert await handle(message({"id": "j2", "requeued": True, "token": "0" * 32}), world.runtime) is None
    assert world.model.calls == [] and "j2.json" not in world.results.blobs


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
    assert "retries/j1.json" in world.worker_only.blobs  # what the poisoned pointer needs, kept
    replayed = await handle(Message(pointer.encode(), id="msg-3"), world.runtime)
    assert replayed is not None and replayed.status == "succeeded"  # the failed result replaced
    assert "retries/j1.json" not in world.worker_only.blobs


# --- Issue 21: the retry store as a trust boundary, notices on every path --------------------------------


async def waiting_pointer(world: FakeWorld, job: dict[str, Any]) -> str:
    """Throttle ``job`` once so that it waits in the retry store; the pointer the worker re-enqueued."""
    world.model.errors = [throttled()]
    assert await handle(message(job, id=f"first-{job['id']}"), world.runtime) is None
    body, _ = world.jobs_queue.messages[-1]
    return body


async def test_a_forged_pointer_spends_no_budget_and_runs_nothing_early(world: FakeWorld) -> None:
    pointer = await waiting_pointer(world, {"id": "rs-c", "prompt": "hi"})
    before = world.worker_only.blobs["retries/rs-c.json"]
    for i in range(8):  # the producer-side forgery of the report: the id and requeued, without the token
        assert await handle(message({"id": "rs-c", "requeued": True}, id=f"forged-{i}"), world.runtime) is None
    assert world.worker_only.blobs["retries/rs-c.json"] is before  # state, attempts and timing untouched
    assert "rs-c.json" not in world.results.blobs and len(world.model.calls) == 1
    result = await handle(Message(pointer.encode(), id="due"), world.runtime)  # the real pointer, when due
    assert result is not None and result.status == "succeeded" and result.attempts == 2


async def test_a_stale_pointer_never_overwrites_the_result(world: FakeWorld) -> None:
    pointer = await waiting_pointer(world, {"id": "j1", "prompt": "hi"})
    world.model.errors = [openai.BadRequestError("no", response=_response(400), body={"code": "content_filter"})]
    failed = await handle(Message(pointer.encode(), id="due"), world.runtime)
    assert failed is not None and failed.error is not None and failed.error.code == "content_filter"
    assert "retries/j1.json" not in world.worker_only.blobs
    again = await handle(Message(pointer.encode(), id="a-copy"), world.runtime)  # its state is gone: stale
    assert again is None and world.result("j1")["error"]["code"] == "content_filter"
    assert len(world.model.calls) == 2


async def test_the_same_id_sent_while_it_waits_is_a_duplicate_and_the_first_runs(world: FakeWorld) -> None:
    pointer = await waiting_pointer(world, {"id": "rs-b", "prompt": "rs-b first"})
    state = world.worker_only.blobs["retries/rs-b.json"]
    assert await handle(message({"id": "rs-b", "prompt": "rs-b second"}, id="second"), world.runtime) is None
    assert world.worker_only.blobs["retries/rs-b.json"] is state and len(world.model.calls) == 1
    result = await handle(Message(pointer.encode(), id="due"), world.runtime)
    assert result is not None and result.output == "echo: rs-b first"


async def test_a_claim_check_job_gets_its_notice_when_the_first_send_fails(world: FakeWorld) -> None:
    world.payloads.blobs["big.json"] = Blob(
        json.dumps({"id": "big", "prompt": "large", "reply_to": "replies"}).encode(), {}
    )
    replies = world.storage.get_queue_client("replies")
    replies.failing_sends = 1
    reference = message({"id": "big", "payload": {"blob": "big.json"}})
    with pytest.raises(Exception, match="connection reset"):
        await handle(reference, world.runtime)
    assert "big.json" in world.payloads.blobs  # kept until the notice went
    reference.dequeue_count = 2
    assert await handle(reference, world.runtime) is None
    assert [json.loads(body)["id"] for body, _ in replies.messages] == ["big"]
    assert world.results.blobs["big.json"].metadata.get("notify") is None
    assert "big.json" not in world.payloads.blobs and len(world.model.calls) == 1


async def test_a_requeued_job_that_failed_keeps_its_result_and_gets_its_notice(world: FakeWorld) -> None:
    pointer = await waiting_pointer(world, {"id": "j1", "prompt": "hi", "reply_to": "replies"})
    world.model.errors = [openai.BadRequestError("no", response=_response(400), body={"code": "content_filter"})]
    replies = world.storage.get_queue_client("replies")
    replies.failing_sends = 1
    due = Message(pointer.encode(), id="due")
    with pytest.raises(Exception, match="connection reset"):
        await handle(due, world.runtime)
    due.dequeue_count = 2
    assert await handle(due, world.runtime) is None  # the redelivery: the notice, not a second run
    assert world.result("j1")["error"]["code"] == "content_filter" and len(world.model.calls) == 2
    assert [json.loads(body)["status"] for body, _ in replies.messages] == ["failed"]
    assert "retries/j1.json" not in world.worker_only.blobs


async def test_a_refused_redelivery_after_the_payload_went_keeps_the_result(world: FakeWorld) -> None:
    world.payloads.blobs["big.json"] = Blob(json.dumps({"id": "big", "prompt": "large"}).encode(), {})
    reference = message({"id": "big", "payload": {"blob": "big.json"}})
    assert await handle(reference, world.runtime) is not None  # succeeded, payload released
    reference.dequeue_count = 2  # the host redelivers it (the delete of the message was lost)
    assert await handle(reference, world.runtime) is None  # payload_missing, but the result stands
    assert world.result("big")["status"] == "succeeded"


async def test_a_slow_notice_does_not_stamp_its_mark_on_a_newer_result(world: FakeWorld) -> None:
    world.model.errors = [openai.NotFoundError("no", response=_response(404), body={"code": "DeploymentNotFound"})]
    replies = world.storage.get_queue_client("replies")
    original = replies.send_message

    async def replaced_meanwhile(body: str, visibility_timeout: int = 0) -> None:
        replies.send_message = original  # type: ignore[method-assign]
        world.runtime.in_flight.clear()  # as if the corrected job reached another instance
        assert await handle(message({"id": "j1", "prompt": "fixed"}, id="msg-2"), world.runtime) is not None
        await original(body, visibility_timeout)

    replies.send_message = replaced_meanwhile  # type: ignore[method-assign]
    await handle(message({"id": "j1", "prompt": "hi", "reply_to": "replies"}), world.runtime)
    assert world.results.blobs["j1.json"].metadata == {"status": "succeeded", "message": "msg-2"}
    assert world.result("j1")["status"] == "succeeded"


# --- Found by the state machine (tests/worker/test_delivery_state_machine.py) -----------------------------


async def test_a_job_whose_pointer_was_not_sent_runs_when_its_message_comes_back(world: FakeWorld) -> None:
    world.model.errors = [throttled()]
    world.jobs_queue.failing_sends = 1  # the retry state is stored, its pointer is not sent
    delivery = message({"id": "j1", "prompt": "hi", "reply_to": "replies"})
    with pytest.raises(Exception, match="connection reset"):
        await handle(delivery, world.runtime)
    assert world.jobs_queue.messages == [] and "retries/j1.json" in world.worker_only.blobs
    delivery.dequeue_count = 2  # the host redelivers the message: it continues the job
    result = await handle(delivery, world.runtime)
    assert result is not None and result.status == "succeeded" and result.attempts == 3
    assert "retries/j1.json" not in world.worker_only.blobs and len(world.model.calls) == 2
    assert [json.loads(body)["id"] for body, _ in world.storage.get_queue_client("replies").messages] == ["j1"]


async def test_a_duplicate_of_a_job_whose_pointer_was_not_sent_sends_it(world: FakeWorld) -> None:
    world.model.errors = [throttled()]
    world.jobs_queue.failing_sends = 1
    delivery = message({"id": "j1", "prompt": "hi", "reply_to": "replies"})
    with pytest.raises(Exception, match="connection reset"):
        await handle(delivery, world.runtime)
    state = json.loads(world.worker_only.blobs["retries/j1.json"].body)
    assert await handle(message({"id": "j1", "prompt": "other"}, id="other"), world.runtime) is None  # a duplicate
    [(pointer, delay)] = world.jobs_queue.messages  # ... which sends the pointer the state never had, as planned
    assert json.loads(pointer) == {"id": "j1", "requeued": True, "token": state["token"]} and 100 <= delay <= 145
    assert world.worker_only.blobs["retries/j1.json"].metadata["pointer"] == world.jobs_queue.ids[0]
    assert json.loads(world.worker_only.blobs["retries/j1.json"].body) == state  # the job as first stored
    delivery.dequeue_count = 2  # the pointer is out: the message's redelivery is a duplicate now, not a second run
    assert await handle(delivery, world.runtime) is None and len(world.model.calls) == 1
    assert len(world.jobs_queue.messages) == 1  # and sends no second pointer
    result = await handle(Message(pointer.encode(), id=world.jobs_queue.ids[0]), world.runtime)
    assert result is not None and result.status == "succeeded" and result.output == "echo: hi"
    assert "retries/j1.json" not in world.worker_only.blobs and len(world.model.calls) == 2
    assert [json.loads(body)["id"] for body, _ in world.storage.get_queue_client("replies").messages] == ["j1"]


async def test_a_pointer_whose_next_pointer_was_not_sent_runs_when_it_comes_back(world: FakeWorld) -> None:
    pointer = await waiting_pointer(world, {"id": "j1", "prompt": "hi"})
    world.model.errors = [throttled()]
    world.jobs_queue.failing_sends = 1  # the state moves on to a new token that no message carries
    due = Message(pointer.encode(), id="due")
    with pytest.raises(Exception, match="connection reset"):
        await handle(due, world.runtime)
    due.dequeue_count = 2  # the host redelivers it: it continues the job
    result = await handle(due, world.runtime)
    assert result is not None and result.status == "succeeded" and len(world.model.calls) == 3
    assert "retries/j1.json" not in world.worker_only.blobs


async def test_a_stale_copy_of_a_pointer_whose_next_one_was_not_sent_sends_that_one(world: FakeWorld) -> None:
    pointer = await waiting_pointer(world, {"id": "j1", "prompt": "hi"})
    world.model.errors = [throttled()]
    world.jobs_queue.failing_sends = 1
    due = Message(pointer.encode(), id="due")
    with pytest.raises(Exception, match="connection reset"):
        await handle(due, world.runtime)
    token = json.loads(world.worker_only.blobs["retries/j1.json"].body)["token"]
    assert await handle(Message(pointer.encode(), id="a-copy"), world.runtime) is None  # stale: runs nothing
    assert len(world.model.calls) == 2 and json.loads(world.jobs_queue.messages[-1][0])["token"] == token
    due.dequeue_count = 2
    assert await handle(due, world.runtime) is None  # the new pointer is out: this one is stale now
    result = await handle(Message(world.jobs_queue.messages[-1][0].encode(), id="next"), world.runtime)
    assert result is not None and result.status == "succeeded" and len(world.model.calls) == 3


async def test_a_retry_state_stored_without_an_answer_is_continued(world: FakeWorld) -> None:
    world.model.errors = [throttled()]
    world.worker_only.fail_next("upload", applied=True)  # stored, but the answer is lost: nothing is enqueued
    delivery = message({"id": "j1", "prompt": "hi"})
    with pytest.raises(Exception, match="connection reset"):
        await handle(delivery, world.runtime)
    delivery.dequeue_count = 2
    result = await handle(delivery, world.runtime)
    assert result is not None and result.status == "succeeded"
    assert "retries/j1.json" not in world.worker_only.blobs


async def test_a_claim_check_job_continued_after_its_payload_went_still_runs(world: FakeWorld) -> None:
    world.payloads.blobs["big.json"] = Blob(json.dumps({"id": "big", "prompt": "large"}).encode(), {})
    world.model.errors = [throttled()]
    world.jobs_queue.failing_sends = 1
    reference = message({"id": "big", "payload": {"blob": "big.json"}})
    with pytest.raises(Exception, match="connection reset"):
        await handle(reference, world.runtime)
    del world.payloads.blobs["big.json"]  # the one name of the id's payload: released by an earlier message of it
    reference.dequeue_count = 2
    result = await handle(reference, world.runtime)  # the stored job runs (it was failed payload_missing)
    assert result is not None and result.status == "succeeded" and result.output == "echo: large"
    assert "retries/big.json" not in world.worker_only.blobs


async def test_a_continued_job_answered_before_its_notice_went_leaves_no_retry_state(world: FakeWorld) -> None:
    world.model.errors = [throttled()]
    world.jobs_queue.failing_sends = 1
    replies = world.storage.get_queue_client("replies")
    replies.failing_sends = 1
    delivery = message({"id": "j1", "prompt": "hi", "reply_to": "replies"})
    for count in (1, 2):  # the pointer's send fails, then the notice's
        delivery.dequeue_count = count
        with pytest.raises(Exception, match="connection reset"):
            await handle(delivery, world.runtime)
    delivery.dequeue_count = 3
    assert await handle(delivery, world.runtime) is None  # settled: the notice, and the state this message stored
    assert [json.loads(body)["id"] for body, _ in replies.messages] == ["j1"]
    assert "retries/j1.json" not in world.worker_only.blobs and len(world.model.calls) == 2


async def test_any_message_of_an_answered_job_removes_a_retry_state_left_behind(world: FakeWorld) -> None:
    pointer = await waiting_pointer(world, {"id": "j1", "prompt": "hi"})
    world.worker_only.fail_next("delete")  # released best effort: left behind
    assert await handle(Message(pointer.encode(), id="due"), world.runtime) is not None
    assert "retries/j1.json" in world.worker_only.blobs  # the id would look waiting for ever
    assert await handle(message({"id": "j1", "prompt": "again"}, id="again"), world.runtime) is None
    assert "retries/j1.json" not in world.worker_only.blobs and len(world.model.calls) == 2


async def test_attempts_count_every_re_enqueue_whatever_its_cause(world: FakeWorld) -> None:
    outage = openai.InternalServerError("down", response=_response(500), body=None)
    world.model.errors = [throttled(), outage, throttled()]
    result = await handle(message({"id": "j1", "prompt": "hi"}), world.runtime)
    while result is None:
        body, _ = world.jobs_queue.messages[-1]
        result = await handle(Message(body.encode(), id=f"due-{len(world.model.calls)}"), world.runtime)
    assert result.status == "succeeded" and result.attempts == len(world.model.calls) == 4  # was 2: per cause


async def test_a_job_whose_pointer_never_went_out_runs_when_its_poisoned_message_is_replayed(
    world: FakeWorld,
) -> None:
    world.model.errors = [throttled()] * 5
    world.jobs_queue.failing_sends = 5  # each delivery stores the state, none sends the pointer
    body = json.dumps({"id": "j1", "prompt": "hi", "reply_to": "replies"}).encode()
    for count in range(1, 6):
        with pytest.raises(Exception, match="connection reset"):
            await handle(Message(body, dequeue_count=count), world.runtime)  # then the host poisons it
    # python -m shared replay: a new message, a duplicate of the waiting job, which sends the pointer it never had.
    assert await handle(Message(body, id="replayed"), world.runtime) is None
    [(pointer, _)] = world.jobs_queue.messages
    result = await handle(Message(pointer.encode(), id=world.jobs_queue.ids[0]), world.runtime)
    assert result is not None and result.status == "succeeded" and result.attempts == 6
    assert len(world.model.calls) == 6 and "retries/j1.json" not in world.worker_only.blobs
    assert [json.loads(body)["id"] for body, _ in world.storage.get_queue_client("replies").messages] == ["j1"]


async def test_a_replayed_pointer_whose_job_never_had_its_next_pointer_sends_it(world: FakeWorld) -> None:
    pointer = await waiting_pointer(world, {"id": "j1", "prompt": "hi"})
    world.model.errors = [throttled()] * 5
    world.jobs_queue.failing_sends = 5
    for count in range(1, 6):  # the pointer's deliveries move the state on, none sends the next pointer
        with pytest.raises(Exception, match="connection reset"):
            await handle(Message(pointer.encode(), id="due", dequeue_count=count), world.runtime)
    assert await handle(Message(pointer.encode(), id="replayed"), world.runtime) is None  # its token is stale
    result = await handle(Message(world.jobs_queue.messages[-1][0].encode(), id="next"), world.runtime)
    assert result is not None and result.status == "succeeded" and len(world.model.calls) == 7


async def test_a_forged_pointer_cannot_run_or_hasten_a_job_whose_pointer_was_lost(world: FakeWorld) -> None:
    world.model.errors = [throttled()]
    world.jobs_queue.failing_sends = 1
    with pytest.raises(Exception, match="connection reset"):
        await handle(message({"id": "j1", "prompt": "hi"}), world.runtime)
    state = world.worker_only.blobs["retries/j1.json"]
    for token in (None, "0" * 32):
        forged = {"id": "j1", "requeued": True, **({"token": token} if token else {})}
        assert await handle(message(forged, id=f"forged-{token}"), world.runtime) is None
    # All it did: the worker's own pointer went out, due when the worker planned, once; the job is as stored.
    [(pointer, delay)] = world.jobs_queue.messages
    assert json.loads(pointer)["token"] == json.loads(state.body)["token"] and delay >= 100
    assert world.worker_only.blobs["retries/j1.json"].body == state.body and len(world.model.calls) == 1


async def test_a_job_whose_pointer_is_long_overdue_gets_it_sent_again_by_a_duplicate(world: FakeWorld) -> None:
    pointer = await waiting_pointer(world, {"id": "j1", "prompt": "hi"})  # the pointer goes to poison, say, and is
    state = json.loads(world.worker_only.blobs["retries/j1.json"].body)  # dropped there, never replayed
    due = datetime.fromisoformat(state["due"])
    for late, resent in ((LOST_POINTER_SECONDS - 60, 0), (LOST_POINTER_SECONDS + 60, 1)):
        moment = due + timedelta(seconds=late)
        with (
            mock.patch("shared.worker.now", return_value=moment),
            mock.patch("shared.delivery.now", return_value=moment),
        ):
            assert await handle(message({"id": "j1", "prompt": "again"}, id=f"dup-{late}"), world.runtime) is None
        assert len(world.jobs_queue.messages) == 1 + resent  # on time, or just late: it is coming
    assert world.jobs_queue.messages[-1][0] == pointer and world.jobs_queue.messages[-1][1] == 0  # the same one, now
    result = await handle(Message(pointer.encode(), id=world.jobs_queue.ids[-1]), world.runtime)
    assert result is not None and result.status == "succeeded" and result.output == "echo: hi"


async def test_a_pointer_whose_record_fails_still_runs_its_job(world: FakeWorld) -> None:
    world.model.errors = [throttled()]
    world.worker_only.fail_next("set_metadata")  # the pointer is out, the state does not say so
    assert await handle(message({"id": "j1", "prompt": "hi"}), world.runtime) is None
    assert "pointer" not in world.worker_only.blobs["retries/j1.json"].metadata
    [(pointer, _)] = world.jobs_queue.messages
    result = await handle(Message(pointer.encode(), id=world.jobs_queue.ids[0]), world.runtime)
    assert result is not None and result.status == "succeeded" and len(world.model.calls) == 2


async def test_a_replayed_message_sends_the_notice_its_poisoned_deliveries_could_not(world: FakeWorld) -> None:
    replies = world.storage.get_queue_client("replies")
    replies.failing_sends = 5
    reference = message({"id": "big", "payload": {"blob": "big.json"}})
    world.payloads.blobs["big.json"] = Blob(
        json.dumps({"id": "big", "prompt": "large", "reply_to": "replies"}).encode(), {}
    )
    for count in range(1, 6):
        reference.dequeue_count = count
        with pytest.raises(Exception, match="connection reset"):
            await handle(reference, world.runtime)
    # Poisoned with its result succeeded and its notice pending (shared/operations/'s replay skips such a job
    # today: it never sends the notice, and the payload is left to the lifecycle rule). Replayed, it is settled:
    assert world.results.blobs["big.json"].metadata.get("notify") == "replies"
    assert await handle(Message(reference.body, id="replayed"), world.runtime) is None
    assert [json.loads(body)["id"] for body, _ in replies.messages] == ["big"]
    assert "notify" not in world.results.blobs["big.json"].metadata and "big.json" not in world.payloads.blobs
    assert len(world.model.calls) == 1
