"""The GenAI telemetry of the Responses API, against in-process fakes with in-memory OpenTelemetry: a
response's span carries the answer's attributes as a chat completion's does, a background job's checks are
``retrieve`` spans in the job's trace that carry them once the response has ended (its tokens counted once),
a response cancelled at the bound gets a ``cancel`` span, and no prompt or answer appears anywhere."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from shared.worker import handle
from tests.worker.fakes import FakeResponses, FakeWorld, Message, fake_world, responses_of, responses_world
from tests.worker.otel import TRACEPARENT, Captured, attributes, captured, hex_span, hex_trace, parent_of
from tests.worker.test_background import not_found, pointer

MARKER = "zq-responses-marker-3c2"
COMMON = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "azure.ai.openai",
    "gen_ai.request.model": "gpt-5-pro",
    "server.address": "res.openai.azure.com",
    "openai.api.type": "responses",
}
# What the fake's ended response says (tests/worker/fakes.py), as span attributes.
ANSWERED = {
    "gen_ai.response.model": "gpt-5-pro",
    "gen_ai.usage.input_tokens": 11,
    "gen_ai.usage.output_tokens": 9,
    "gen_ai.usage.reasoning.output_tokens": 7,
    "gen_ai.usage.cache_read.input_tokens": 4,
    "openai.response.service_tier": "default",
}


@pytest.fixture
def world() -> FakeWorld:
    return responses_world()


@pytest.fixture
def otel() -> Iterator[Captured]:
    with captured() as found:
        yield found


def message(**job: Any) -> Message:
    return Message(json.dumps({"id": "j1", "prompt": f"think about {MARKER}", **job}).encode())


def tokens(otel: Captured) -> dict[str, tuple[int, int]]:
    """Token type -> (calls counted, tokens summed) of ``gen_ai.client.token.usage``."""
    otel.collect()
    return {p.attributes["gen_ai.token.type"]: (p.count, p.sum) for p in otel.points("gen_ai.client.token.usage")}


async def test_a_response_records_the_answer_as_a_chat_completion_does(world: FakeWorld, otel: Captured) -> None:
    result = await handle(message(traceparent=TRACEPARENT), world.runtime)
    assert result is not None and result.status == "succeeded" and result.usage is not None

    [process] = otel.named("process ")
    [chat] = otel.named("chat ")
    assert chat.name == "chat gpt-5-pro" and chat.kind == SpanKind.CLIENT and parent_of(chat) == hex_span(process)
    assert attributes(chat) == {
        **COMMON,
        **ANSWERED,
        "gen_ai.response.id": "resp_1",
        "gen_ai.response.finish_reasons": ["stop"],
    }
    # The same figures as the stored result: one shape for both APIs.
    assert (result.response_id, result.finish_reason, result.service_tier) == ("resp_1", "stop", "default")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, 9)
    assert (result.usage.reasoning_tokens, result.usage.cached_tokens) == (7, 4)
    assert tokens(otel) == {"input": (1, 11), "output": (1, 9)}
    [duration] = otel.points("gen_ai.client.operation.duration")
    metric_attributes = {k: v for k, v in COMMON.items() if k != "openai.api.type"}  # as chat's: no api type
    assert duration.count == 1 and dict(duration.attributes) == {
        **metric_attributes,
        "gen_ai.response.model": "gpt-5-pro",
    }


async def test_the_tier_asked_for_and_the_tier_that_served_are_both_on_the_span(
    world: FakeWorld, otel: Captured
) -> None:
    result = await handle(message(service_tier="priority"), world.runtime)
    assert result is not None and result.status == "succeeded"
    assert responses_of(world).created[0]["service_tier"] == "priority"
    [chat] = otel.named("chat ")
    found = attributes(chat)
    # The fake serves every response on the default tier: the span tells asked from served apart.
    assert (found["openai.request.service_tier"], found["openai.response.service_tier"]) == ("priority", "default")


async def test_a_background_job_is_traced_from_its_create_through_each_check(
    world: FakeWorld, otel: Captured, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert await handle(message(background=True, traceparent=TRACEPARENT), world.runtime) is None
    [create] = otel.named("chat ")
    # Azure answered at once with the response queued: its id and model, nothing it has not produced yet.
    assert attributes(create) == {**COMMON, "gen_ai.response.id": "resp_1", "gen_ai.response.model": "gpt-5-pro"}
    assert tokens(otel) == {}

    assert await handle(pointer(world), world.runtime) is None  # still queued
    [running] = otel.named("retrieve ")
    assert running.kind == SpanKind.CLIENT and running.name == "retrieve gpt-5-pro"
    assert attributes(running) == {**COMMON, "gen_ai.response.id": "resp_1", "gen_ai.response.model": "gpt-5-pro"}
    assert tokens(otel) == {}

    responses_of(world).status["resp_1"] = "completed"
    result = await handle(pointer(world), world.runtime)
    assert result is not None and result.status == "succeeded" and result.response_id == "resp_1"
    _, done = otel.named("retrieve ")
    assert attributes(done) == {
        **COMMON,
        **ANSWERED,
        "gen_ai.response.id": "resp_1",
        "gen_ai.response.finish_reasons": ["stop"],
    }
    assert tokens(otel) == {"input": (1, 11), "output": (1, 9)}  # counted once, when the response ended
    # The create's duration only: a check's milliseconds are not the model's time.
    [duration] = otel.points("gen_ai.client.operation.duration")
    assert duration.count == 1

    # One trace: each check runs under the process span of the pointer that brought it.
    processes = otel.named("process ")
    assert len(processes) == 3 and {hex_trace(span) for span in otel.spans()} == {hex_trace(create)}
    assert parent_of(running) == hex_span(processes[1]) and parent_of(done) == hex_span(processes[2])
    exported = otel.everything()
    assert MARKER not in exported and "deep thought" not in exported
    assert not [r for r in caplog.records if MARKER in r.getMessage() or "deep thought" in r.getMessage()]


async def test_a_response_past_its_bound_is_cancelled_under_a_cancel_span(otel: Captured) -> None:
    world = fake_world(AZURE_OPENAI_DEPLOYMENT="gpt-5-pro", AZURE_OPENAI_API="responses", BACKGROUND_MAX_SECONDS="1")
    world.model.responses = fake = FakeResponses()  # type: ignore[attr-defined]
    await handle(message(background=True), world.runtime)
    blob = world.worker_only.blobs["retries/j1.json"]
    aged = json.loads(blob.body)
    aged["background"]["started_at"] = "2000-01-01T00:00:00Z"  # as if it had thought for ever
    blob.body = json.dumps(aged).encode()
    result = await handle(pointer(world), world.runtime)
    assert result is not None and result.error is not None and result.error.code == "background_timeout"
    assert fake.cancelled == ["resp_1"]
    [retrieve] = otel.named("retrieve ")
    [cancel] = otel.named("cancel ")
    assert cancel.name == "cancel gpt-5-pro" and parent_of(cancel) == parent_of(retrieve)
    # A cancelled response bills what it used: its usage is on the span and counted.
    assert attributes(cancel) == {**COMMON, **ANSWERED, "gen_ai.response.id": "resp_1"}
    assert tokens(otel) == {"input": (1, 11), "output": (1, 9)}
    [process, _] = otel.named("process ")[::-1]
    assert attributes(process)["error.type"] == "background_timeout"


async def test_a_check_that_fails_is_noted_by_class_on_its_span(world: FakeWorld, otel: Captured) -> None:
    await handle(message(background=True), world.runtime)
    responses_of(world).errors = [not_found()]
    result = await handle(pointer(world), world.runtime)
    assert result is not None and result.error is not None and result.error.code == "background_lost"
    [retrieve] = otel.named("retrieve ")
    assert retrieve.status.status_code == StatusCode.ERROR
    assert attributes(retrieve) == {**COMMON, "gen_ai.response.id": "resp_1", "error.type": "NotFoundError"}
    assert retrieve.events == () and tokens(otel) == {}


async def test_content_is_captured_only_when_asked_with_the_reasoning_summary_as_its_part(world: FakeWorld) -> None:
    with captured(capture_content=True) as otel:
        result = await handle(message(system="be brief", reasoning_summary="concise"), world.runtime)
    assert result is not None and result.output == "deep thought" and result.reasoning_summary == "thought briefly"
    [chat] = otel.named("chat ")
    found = attributes(chat)
    assert json.loads(found["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": f"think about {MARKER}"}]},
    ]
    assert json.loads(found["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "reasoning", "content": "thought briefly"}, {"type": "text", "content": "deep thought"}],
            "finish_reason": "stop",
        }
    ]
    assert [span.name for span in otel.spans() if MARKER in span.to_json()] == ["chat gpt-5-pro"]
