"""The producer's trace context: a PRODUCER span ``send {queue}`` per job, its W3C context in the job.

The spans go to an in-memory exporter from a provider of the test's own (swapped in as the
producer's tracer), so no global OpenTelemetry state is touched. The jobs go to Azurite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueServiceClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from emulators.azurite import Azurite
from emulators.stack.environment import REPO
from emulators.stack.workers import Jobs
from shared.errors import QueueNotFoundError
from shared.producer import JobsClient as BlockingJobsClient
from shared.producer import _tracing
from shared.producer.aio import JobsClient
from tests.producer.helpers import blob_names, cli, peek_bodies

# A caller's own context, as it would arrive from upstream (W3C's example ids), with a tracestate.
UPSTREAM = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UPSTREAM_STATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """An SDK for the producer alone: what a service that configured OpenTelemetry gets."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(_tracing, "tracer", provider.get_tracer("shared.producer"))
    yield memory
    provider.shutdown()


@pytest.fixture
def settings(azurite: Azurite, names: dict[str, str]) -> dict[str, str]:
    return {**azurite.settings(), **names}


def traceparent_of(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def sends(memory: InMemorySpanExporter, queue: str) -> list[ReadableSpan]:
    return [span for span in memory.get_finished_spans() if span.name == f"send {queue}"]


async def test_each_job_gets_a_producer_span_whose_context_it_carries(
    exporter: InMemorySpanExporter, settings: dict[str, str], jobs_for: Any
) -> None:
    jobs: Jobs = await jobs_for(settings)
    queue = settings["JOBS_QUEUE"]
    upstream = TraceContextTextMapPropagator().extract({"traceparent": UPSTREAM, "tracestate": UPSTREAM_STATE})
    caller = _tracing.tracer  # the application's own spans, from the same SDK
    async with JobsClient.from_settings(settings) as client:
        with caller.start_as_current_span("handle request", context=upstream) as request:
            one = await client.submit({"prompt": "One?"})
            many = await client.submit_many([{"prompt": f"Batch {i}?"} for i in range(3)], concurrency=2)

    spans = {span.attributes["messaging.message.id"]: span for span in sends(exporter, queue) if span.attributes}
    bodies = {message.id: json.loads(message.content) for message in await jobs.queue.peek_messages(max_messages=32)}
    assert sorted(body["id"] for body in bodies.values()) == sorted([one, *many])
    assert spans.keys() == bodies.keys()  # one span per job, naming the queue message it sent
    for message_id, body in bodies.items():
        span = spans[message_id]
        assert span.kind == SpanKind.PRODUCER
        attributes = dict(span.attributes or {})
        assert isinstance(attributes.pop("server.port"), int)  # Azurite's port
        assert attributes == {
            "messaging.system": "azure.storage.queue",
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
            "messaging.destination.name": queue,
            "messaging.message.id": message_id,
            "server.address": "127.0.0.1",
        }
        # The worker continues from the send span itself, in the caller's trace, with its tracestate.
        assert body["traceparent"] == traceparent_of(span)
        assert body["tracestate"] == UPSTREAM_STATE
        assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id
        assert span.status.status_code == StatusCode.UNSET


async def test_a_traceparent_the_caller_set_is_kept(
    exporter: InMemorySpanExporter, settings: dict[str, str], jobs_for: Any
) -> None:
    jobs: Jobs = await jobs_for(settings)
    async with JobsClient.from_settings(settings) as client:
        await client.submit({"id": "mine", "prompt": "Traced upstream", "traceparent": UPSTREAM})
        await client.submit({"id": "with-state", "prompt": "x", "traceparent": UPSTREAM, "tracestate": "a=b"})
    bodies = {body["id"]: body for body in await peek_bodies(jobs)}
    assert bodies["mine"] == {"id": "mine", "prompt": "Traced upstream", "traceparent": UPSTREAM}
    assert (bodies["with-state"]["traceparent"], bodies["with-state"]["tracestate"]) == (UPSTREAM, "a=b")
    # The send still has its span, in the caller's trace, under the context the job names.
    for span in sends(exporter, settings["JOBS_QUEUE"]):
        assert span.parent is not None and span.parent.is_remote
        assert f"{span.parent.trace_id:032x}-{span.parent.span_id:016x}" in UPSTREAM


async def test_without_an_sdk_the_job_is_sent_exactly_as_validated(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, str], jobs_for: Any
) -> None:
    # What a process that configured no SDK has: the API's no-op tracer.
    monkeypatch.setattr(_tracing, "tracer", trace.NoOpTracerProvider().get_tracer("shared.producer"))
    jobs: Jobs = await jobs_for(settings)
    async with JobsClient.from_settings(settings) as client:
        await client.submit({"id": "plain", "prompt": "No tracing here", "tracestate": "orphan=1"})
    [message] = await jobs.queue.peek_messages()
    assert message.content == '{"id": "plain", "prompt": "No tracing here", "tracestate": "orphan=1"}'


def test_without_an_sdk_a_send_span_records_nothing_and_adds_nothing() -> None:
    """In a fresh process with no SDK (no provider set): the span is the API's no-op, nothing is added
    to the job. (What it costs is a benchmark question, not a test's: a few μs per job measured.)"""
    code = (
        "from opentelemetry import trace\n"
        "from shared.producer import _tracing\n"
        "job = {'id': 'x', 'prompt': 'p'}\n"
        'text = \'{"id": "x", "prompt": "p"}\'\n'
        "with _tracing.send_span('jobs', 'https://acct.queue.core.windows.net/jobs', job) as sending:\n"
        "    assert sending.stamp(job, text) is text\n"
        "    assert not trace.get_current_span().is_recording()\n"
        "    sending.sent('message-id')\n"
        "print(type(trace.get_tracer_provider()).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ProxyTracerProvider"  # no SDK was set up along the way


def test_blocking_client_sends_in_the_callers_current_span(
    exporter: InMemorySpanExporter, settings: dict[str, str], azurite: Azurite
) -> None:
    queue = settings["JOBS_QUEUE"]
    with QueueServiceClient.from_connection_string(azurite.connection_string) as queues:
        queues.create_queue(queue)
    # Built before the caller's span starts: each call still runs in the caller's context as it is then.
    with (
        BlockingJobsClient.from_connection_string(azurite.connection_string, queue=queue) as client,
        _tracing.tracer.start_as_current_span("caller") as outer,
    ):
        job_id = client.submit({"prompt": "From blocking code"})
    [span] = sends(exporter, queue)
    assert span.parent is not None and span.parent.span_id == outer.get_span_context().span_id
    assert job_id


async def test_a_claim_check_job_carries_its_context_in_the_payload(
    exporter: InMemorySpanExporter, settings: dict[str, str], jobs_for: Any
) -> None:
    jobs: Jobs = await jobs_for(settings)
    async with JobsClient.from_settings(settings) as client:
        job_id = await client.submit({"prompt": "big " * 20_000})
    [reference] = await peek_bodies(jobs)
    assert reference == {"id": job_id, "payload": {"blob": f"{job_id}.json"}}  # the reference has no room for it
    assert await blob_names(jobs, settings["PAYLOADS_CONTAINER"]) == [f"{job_id}.json"]
    blob = jobs.blobs.get_blob_client(settings["PAYLOADS_CONTAINER"], f"{job_id}.json")
    payload = await (await blob.download_blob()).readall()
    [span] = sends(exporter, settings["JOBS_QUEUE"])
    assert json.loads(payload)["traceparent"] == traceparent_of(span)


async def test_a_failed_send_is_an_error_span(exporter: InMemorySpanExporter, settings: dict[str, str]) -> None:
    async with JobsClient.from_settings(settings) as client:  # the queue was never created
        with pytest.raises(QueueNotFoundError):
            await client.submit({"prompt": "Nowhere to go"})
    [span] = sends(exporter, settings["JOBS_QUEUE"])
    assert span.status.status_code == StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "shared.errors.QueueNotFoundError"


def test_a_long_tracestate_is_cut_to_the_contracts_512_characters() -> None:
    long_entry = "big=" + "x" * 200
    entries = [f"v{i:02d}=" + "y" * 40 for i in range(20)]
    state = _tracing._fit_tracestate(",".join([entries[0], long_entry, *entries[1:]]))
    assert len(state) <= 512 and long_entry not in state  # long entries go first, then from the right
    assert state == ",".join(entries[: len(state.split(","))])
    assert _tracing._fit_tracestate("a=1,b=2") == "a=1,b=2"


async def test_cli_submit_takes_a_traceparent(settings: dict[str, str], jobs_for: Any, tmp_path: Path) -> None:
    jobs: Jobs = await jobs_for(settings)
    sent = await cli(settings, "submit", "Traced from a shell", "--id", "shell-1", "--traceparent", UPSTREAM)
    assert sent.code == 0, sent
    [body] = await peek_bodies(jobs)
    assert body == {"id": "shell-1", "prompt": "Traced from a shell", "traceparent": UPSTREAM}

    bad = await cli(settings, "submit", "x", "--traceparent", "not-a-traceparent")
    assert bad.code == 2 and "traceparent" in bad.stderr, bad
    lines = tmp_path / "jobs.jsonl"
    lines.write_text('{"prompt": "x"}\n')
    mixed = await cli(settings, "submit", "--file", str(lines), "--traceparent", UPSTREAM)
    assert mixed.code == 2 and "--file takes its jobs from the file" in mixed.stderr, mixed
