"""The Responses API's GenAI telemetry against the local Azure: the real openai SDK on the Azure OpenAI
emulator (a Responses-only deployment), keyless Azurite and the managed-identity endpoint, in process with
in-memory OpenTelemetry, and once through the local host exporting OTLP/HTTP to a receiver in this test. A
response's span and a background job's last check carry what the stored result says; the job's checks stay in
its trace; nothing it was asked or answered is exported."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import ReadableSpan

from emulators.stack.services import OpenAIEmulator, OtlpReceiver, start_otlp_receiver
from emulators.stack.workers import Jobs, WorkerHost, wait_until
from shared import worker
from shared.connections import Runtime
from shared.jobs import Result
from shared.producer.aio import JobsClient
from tests.worker.otel import PRODUCER_TRACE, TRACEPARENT, Captured, attributes, captured, global_tracing, hex_trace
from tests.worker.test_responses_e2e import CODER, emulate, pool
from tests.worker.test_telemetry_e2e import receive

MARKER = "zq-e2e-responses-marker-9d4"


@pytest_asyncio.fixture
async def traced() -> AsyncIterator[Captured]:
    with captured() as otel, global_tracing(otel.tracer_provider):
        yield otel


def answered(result: Result) -> dict[str, Any]:
    """The span attributes that say what the stored result says."""
    assert result.usage is not None
    return {
        "gen_ai.response.id": result.response_id,
        "gen_ai.response.model": result.model,
        "gen_ai.response.finish_reasons": [result.finish_reason],
        "gen_ai.usage.input_tokens": result.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": result.usage.completion_tokens,
        "gen_ai.usage.reasoning.output_tokens": result.usage.reasoning_tokens,
        "gen_ai.usage.cache_read.input_tokens": result.usage.cached_tokens,
        "openai.response.service_tier": result.service_tier,
    }


def subset(span: ReadableSpan, keys: dict[str, Any]) -> dict[str, Any]:
    found = attributes(span)
    return {key: found.get(key) for key in keys}


async def test_a_response_and_a_background_job_record_their_answers(
    keyless_settings: dict[str, str], jobs_for: Any, aoai: OpenAIEmulator, traced: Captured
) -> None:
    emulate(aoai)
    aoai.configure(background_queued_seconds=0.2, background_seconds=1)
    settings = {**pool(keyless_settings, {"deployment": CODER, "api": "responses"}), "BACKGROUND_POLL_SECONDS": "1"}
    jobs: Jobs = await jobs_for(settings)
    runtime = Runtime.from_env(settings)
    try:
        await jobs.send({"id": "now", "prompt": f"Answer {MARKER}.", "traceparent": TRACEPARENT})
        now = await worker.handle(await receive(jobs), runtime)
        await jobs.send({"id": "later", "prompt": f"Think about {MARKER}.", "background": True})
        assert await worker.handle(await receive(jobs), runtime) is None  # started; the invocation lets go
        later = None
        for _ in range(10):  # each pointer becomes visible after its poll interval
            later = await worker.handle(await receive(jobs, visible_within=15), runtime)
            if later is not None:
                break
    finally:
        await runtime.close()

    assert now is not None and now.status == "succeeded" and now.api == "responses" and now.usage is not None
    create_now, create_later = traced.named("chat ")
    assert hex_trace(create_now) == PRODUCER_TRACE
    expected_now = {**answered(now), "openai.api.type": "responses", "gen_ai.request.model": CODER}
    assert None not in expected_now.values(), expected_now  # the emulator reports every figure, as Azure does
    assert subset(create_now, expected_now) == expected_now

    assert later is not None and later.status == "succeeded" and later.usage is not None
    created = attributes(create_later)
    assert created["gen_ai.response.id"] == later.response_id and "gen_ai.usage.input_tokens" not in created
    checks = traced.named("retrieve ")
    assert checks and {attributes(span)["gen_ai.response.id"] for span in checks} == {later.response_id}
    expected_later = answered(later)
    assert None not in expected_later.values(), expected_later
    assert subset(checks[-1], expected_later) == expected_later  # the check that found it done
    assert {hex_trace(span) for span in checks} == {hex_trace(create_later)}  # the job's one trace

    traced.collect()
    sums = {p.attributes["gen_ai.token.type"]: (p.count, p.sum) for p in traced.points("gen_ai.client.token.usage")}
    assert sums == {
        "input": (2, now.usage.prompt_tokens + later.usage.prompt_tokens),
        "output": (2, now.usage.completion_tokens + later.usage.completion_tokens),
    }
    exported = traced.everything()
    assert MARKER not in exported
    assert (now.output or "?") not in exported and (later.output or "?") not in exported


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with start_otlp_receiver() as running:
        yield running


@pytest.mark.slow(seconds=12)
async def test_a_background_job_through_the_host_over_otlp(
    keyless_settings: dict[str, str], jobs_for: Any, aoai: OpenAIEmulator, start_host: Any, receiver: OtlpReceiver
) -> None:
    emulate(aoai)
    aoai.configure(background_queued_seconds=0.2, background_seconds=1)
    settings = {
        **pool(keyless_settings, {"deployment": CODER, "api": "responses", "background": True}),
        "BACKGROUND_POLL_SECONDS": "1",
    }
    await jobs_for(settings)  # the queue, as infra creates it
    host: WorkerHost = start_host({**settings, **receiver.env(schedule_delay_ms=100, metric_interval_ms=300)})
    async with JobsClient.from_settings(settings) as client:
        job_id = await client.submit({"prompt": f"Think over OTLP {MARKER}."})
        result = (await client.wait([job_id], timeout=60))[job_id]
    assert result.status == "succeeded" and result.trace_id is not None and result.usage is not None

    async def complete() -> list[Any] | None:
        spans = receiver.spans(trace_id=result.trace_id)
        done = [s for s in spans if s.name == f"retrieve {CODER}" and "gen_ai.usage.input_tokens" in s.attributes]
        return spans if done and receiver.metrics("gen_ai.client.token.usage") else None

    spans = await wait_until(complete, what="the job's last check and token metrics at the receiver", host=host)
    [create] = [span for span in spans if span.name == f"chat {CODER}"]
    checks = [span for span in spans if span.name == f"retrieve {CODER}"]
    assert create.kind == "CLIENT" and create.attributes["gen_ai.response.id"] == result.response_id
    assert {check.kind for check in checks} == {"CLIENT"}
    expected = answered(result)
    assert {key: checks[-1].attributes.get(key) for key in expected} == expected
    # One process span per delivery (the job, then each pointer), all in the producer's trace.
    assert len([span for span in spans if span.name.startswith("process ")]) == len(checks) + 1
    everything = json.dumps([span.to_json() for span in receiver.spans()], default=str)
    assert MARKER not in everything and (result.output or "?") not in everything
    assert "Traceback" not in host.log()
