"""The worker's telemetry against the local Azure: the real openai SDK on the Azure OpenAI emulator,
keyless Azurite and the managed-identity endpoint. In process with in-memory OpenTelemetry (storage
and identity calls traced by azure-core), and once as the product runs outside Azure: the local host
exporting OTLP/HTTP to a collector in this test."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from emulators.stack.services import OpenAIEmulator, OtlpReceiver, start_otlp_receiver
from emulators.stack.workers import Jobs, WorkerHost, wait_until
from shared import worker
from shared.connections import Runtime
from shared.jobs import Result
from shared.producer import _tracing
from shared.producer.aio import JobsClient
from tests.worker.fakes import Message
from tests.worker.otel import (
    PRODUCER_SPAN,
    PRODUCER_TRACE,
    TRACEPARENT,
    Captured,
    attributes,
    captured,
    global_tracing,
    hex_span,
    hex_trace,
    parent_of,
)

MARKER = "zq-e2e-marker-77c"


async def receive(jobs: Jobs, *, visible_within: float = 10.0) -> Message:
    """The next message on the jobs queue, as the host would hand it to the function."""

    async def one() -> Any:
        async for page in jobs.queue.receive_messages(messages_per_page=1, visibility_timeout=60).by_page():
            async for found in page:
                return found
        return None

    stored = await wait_until(one, what="a message on the jobs queue", timeout=visible_within, interval=0.1)
    return Message(
        stored.content.encode(), id=stored.id, dequeue_count=stored.dequeue_count, insertion_time=stored.inserted_on
    )


def descendants(spans: list[ReadableSpan], root: ReadableSpan) -> list[ReadableSpan]:
    found, frontier = [], {hex_span(root)}
    while frontier:
        children = [span for span in spans if parent_of(span) in frontier and span not in found]
        found += children
        frontier = {hex_span(span) for span in children}
    return found


@pytest_asyncio.fixture
async def jobs(keyless_settings: dict[str, str], jobs_for: Any) -> Jobs:
    made: Jobs = await jobs_for(keyless_settings)
    return made


@pytest_asyncio.fixture
async def traced() -> AsyncIterator[Captured]:
    with captured() as otel, global_tracing(otel.tracer_provider):
        yield otel


async def test_one_trace_from_the_producer_through_model_and_storage(
    keyless_settings: dict[str, str], jobs: Jobs, aoai: OpenAIEmulator, traced: Captured
) -> None:
    runtime = Runtime.from_env(keyless_settings)
    try:
        await jobs.send({"id": "t1", "prompt": f"Question {MARKER}?", "traceparent": TRACEPARENT})
        result = await worker.handle(await receive(jobs), runtime)
    finally:
        await runtime.close()
    assert result is not None and result.status == "succeeded" and result.usage is not None
    assert result.trace_id == PRODUCER_TRACE
    assert (await jobs.result("t1") or {})["trace_id"] == PRODUCER_TRACE

    spans = traced.spans()
    [process] = traced.named("process ")
    assert hex_trace(process) == PRODUCER_TRACE and parent_of(process) == PRODUCER_SPAN
    [chat] = traced.named("chat ")
    assert parent_of(chat) == hex_span(process)
    chat_attributes = attributes(chat)
    assert chat_attributes["gen_ai.request.model"] == result.deployment
    assert chat_attributes["gen_ai.response.model"] == result.model
    assert chat_attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert chat_attributes["gen_ai.usage.output_tokens"] == result.usage.completion_tokens
    assert chat_attributes["gen_ai.usage.reasoning.output_tokens"] == result.usage.reasoning_tokens
    assert chat_attributes["gen_ai.response.finish_reasons"] == [result.finish_reason]
    assert chat_attributes["server.address"] == "127.0.0.1" and "server.port" in chat_attributes

    # Storage calls (azure-core's tracing) are in the job's trace: the stored-result check, the write
    # under "store result", each with its HTTP request, and the identity's token request for storage.
    under_job = descendants(spans, process)
    names = [span.name for span in under_job]
    assert "ContainerClient.download_blob" in names and names.count("GET") >= 2, names
    [store] = traced.named("store result")
    assert {"BlobClient.upload_blob", "PUT"} <= {span.name for span in descendants(spans, store)}
    assert {hex_trace(span) for span in under_job} == {PRODUCER_TRACE}

    exported = traced.everything()
    assert MARKER not in exported and (result.output or "?") not in exported


async def test_a_throttled_job_runs_again_in_the_same_trace(
    keyless_settings: dict[str, str], jobs: Jobs, aoai: OpenAIEmulator, traced: Captured
) -> None:
    # Pacing off: this is about the trace across a re-enqueue, not about waiting in the gate first.
    runtime = Runtime.from_env(
        {**keyless_settings, "THROTTLE_MAX_DELAY_SECONDS": "1", "MODEL_ADMISSION_WAIT_SECONDS": "0"}
    )
    try:
        # Any request is over this limit, and the wait asked for is longer than the SDK honours.
        aoai.configure(tpm=1000, retry_after_override_seconds=150)
        await jobs.send({"id": "t2", "prompt": "Slow?", "traceparent": TRACEPARENT})
        assert await worker.handle(await receive(jobs), runtime) is None  # re-enqueued
        aoai.configure(tpm=None, retry_after_override_seconds=None)
        result = await worker.handle(await receive(jobs), runtime)  # visible after ~1 s
    finally:
        await runtime.close()
    assert result is not None and result.status == "succeeded" and result.attempts == 2
    first, second = sorted(traced.named("process "), key=lambda span: span.start_time or 0)
    assert hex_trace(first) == hex_trace(second) == PRODUCER_TRACE == result.trace_id
    assert parent_of(first) == PRODUCER_SPAN and parent_of(second) == hex_span(first)
    throttled = traced.points("worker.model.throttled")
    assert [(dict(p.attributes), p.value) for p in throttled] == [({"gen_ai.request.model": result.deployment}, 1)]
    assert aoai.stats()["by_status"].get("429") == 1


async def test_every_429_is_counted_even_those_the_sdk_retried(
    keyless_settings: dict[str, str], jobs: Jobs, aoai: OpenAIEmulator, traced: Captured
) -> None:
    # Pacing off: a paced instance would know from the first answer that the window is full, and wait.
    runtime = Runtime.from_env({**keyless_settings, "MODEL_ADMISSION_WAIT_SECONDS": "0"})
    try:
        aoai.configure(rpm=1, rate_window_seconds=1.0)  # the second call waits out a short 429 in the SDK
        results: list[Result | None] = []
        for i in range(2):
            await jobs.send({"id": f"r{i}", "prompt": "Hi?"})
            results.append(await worker.handle(await receive(jobs), runtime))
    finally:
        await runtime.close()
    assert [r.status if r else None for r in results] == ["succeeded", "succeeded"]
    assert aoai.stats()["by_status"].get("429") == 1
    [point] = traced.points("worker.model.throttled")
    assert point.value == 1
    assert traced.points("worker.jobs.requeued") == []


async def test_the_sampler_records_queue_depth_and_head_age(
    keyless_settings: dict[str, str], jobs: Jobs, aoai: OpenAIEmulator, traced: Captured, monkeypatch: Any
) -> None:
    for name in ("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    await jobs.send(*({"id": f"q{i}", "prompt": "later"} for i in range(3)))
    await asyncio.sleep(1.1)
    runtime = Runtime.from_env(keyless_settings)
    try:
        await worker.sample_queues(runtime)
    finally:
        await runtime.close()
    traced.collect()
    depth = {p.attributes["messaging.destination.name"]: p.value for p in traced.points("worker.queue.depth")}
    age = {
        p.attributes["messaging.destination.name"]: p.value for p in traced.points("worker.queue.oldest_message.age")
    }
    queue = keyless_settings["JOBS_QUEUE"]
    assert depth == {queue: 3, f"{queue}-poison": 0}  # the poison queue does not exist yet
    assert 1.0 <= age[queue] < 60 and age[f"{queue}-poison"] == 0.0


# --- The product as it runs outside Azure: producer and local host exporting OTLP/HTTP --------------------


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with start_otlp_receiver() as running:
        yield running


@pytest.mark.slow(seconds=12)
async def test_one_trace_from_the_python_producer_through_the_host_over_otlp(
    keyless_settings: dict[str, str],
    jobs: Jobs,
    aoai: OpenAIEmulator,
    start_host: Any,
    receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The producer service: its own SDK, exporting to the same receiver as the worker.
    producer = TracerProvider(resource=Resource.create({"service.name": "test-producer"}))
    producer.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")))
    monkeypatch.setattr(_tracing, "tracer", producer.get_tracer("shared.producer"))
    settings = {**keyless_settings, **receiver.env(schedule_delay_ms=100, metric_interval_ms=300)}
    settings["OTEL_SERVICE_NAME"] = "jobs-worker-test"
    host: WorkerHost = start_host(settings)
    async with JobsClient.from_settings(keyless_settings) as client:
        job_id = await client.submit({"prompt": f"Over OTLP {MARKER}?"})
        result = (await client.wait([job_id], timeout=60))[job_id]
    producer.shutdown()
    assert result.status == "succeeded" and result.trace_id is not None
    queue, deployment = keyless_settings["JOBS_QUEUE"], result.deployment

    async def complete() -> bool:
        names = {span.name for span in receiver.spans(trace_id=result.trace_id)}
        return {f"send {queue}", f"process {queue}", f"chat {deployment}"} <= names and bool(
            receiver.metrics("gen_ai.client.token.usage")
        )

    await wait_until(complete, what="the job's trace and metrics at the receiver", host=host, timeout=30)
    spans = {span.name: span for span in receiver.spans(trace_id=result.trace_id)}
    send, process, chat = spans[f"send {queue}"], spans[f"process {queue}"], spans[f"chat {deployment}"]
    assert (send.kind, send.service) == ("PRODUCER", "test-producer")
    assert (process.kind, process.service, process.parent_span_id) == ("CONSUMER", "jobs-worker-test", send.span_id)
    assert (chat.kind, chat.parent_span_id) == ("CLIENT", process.span_id)
    assert chat.attributes["gen_ai.provider.name"] == "azure.ai.openai"
    assert result.usage is not None and chat.attributes["gen_ai.usage.output_tokens"] == result.usage.completion_tokens
    assert "BlobClient.upload_blob" in spans  # azure-core's storage spans, in the same trace
    assert receiver.summary(result.trace_id).startswith(f"send {queue} > process {queue} > [chat {deployment}")
    assert {"worker.jobs.finished", "gen_ai.client.operation.duration"} <= {m.name for m in receiver.metrics()}
    everything = json.dumps([span.to_json() for span in receiver.spans()], default=str)
    assert MARKER not in everything and (result.output or "?") not in everything
    assert "Traceback" not in host.log()
