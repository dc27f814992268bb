"""The OTLP/HTTP receiver (emulators/otlp.py): the SDK's own exporters export to it, and it lists what came."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from emulators import otlp
from emulators._server import ServerThread
from emulators.otlp import SpanRecord
from emulators.stack.environment import REPO, child_environment
from emulators.stack.services import OtlpReceiver, start_otlp_receiver

UPSTREAM_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def server() -> Iterator[OtlpReceiver]:
    with start_otlp_receiver() as receiver:
        yield receiver


@pytest.fixture
def receiver(server: OtlpReceiver) -> OtlpReceiver:
    server.reset()
    return server


def tracer_provider(endpoint: str, service: str, **exporter: Any) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", **exporter)))
    return provider


def get(url: str) -> Any:
    return requests.get(url, timeout=10).json()


def post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    answer = requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=10)
    return answer.status_code, answer.content


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_spans_exported_by_the_sdk_are_listed(receiver: OtlpReceiver, compression: Compression) -> None:
    provider = tracer_provider(receiver.endpoint, "producer-test", compression=compression)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("send jobs", kind=SpanKind.PRODUCER) as send:
        send.set_attribute("messaging.operation.name", "send")
        send.set_attribute("messaging.batch.message_count", 1)
        with tracer.start_as_current_span("PUT", kind=SpanKind.CLIENT) as put:
            put.set_attribute("az.namespace", "Microsoft.Storage")
            put.set_status(Status(StatusCode.ERROR, "refused"))
    provider.shutdown()

    trace_id = f"{send.get_span_context().trace_id:032x}"
    [sent, stored] = sorted(receiver.spans(trace_id=trace_id), key=lambda span: span.name, reverse=True)
    assert (sent.name, sent.kind, sent.service, sent.scope, sent.parent_span_id) == (
        "send jobs",
        "PRODUCER",
        "producer-test",
        "test",
        None,
    )
    assert sent.span_id == f"{send.get_span_context().span_id:016x}"
    assert sent.attributes == {"messaging.operation.name": "send", "messaging.batch.message_count": 1}
    assert sent.end_ns >= sent.start_ns > 0
    assert (stored.kind, stored.parent_span_id, stored.status, stored.status_message) == (
        "CLIENT",
        sent.span_id,
        "ERROR",
        "refused",
    )
    assert receiver.summary(trace_id) == "send jobs (+1 storage)"
    assert receiver.stats()["requests"] == {"traces": 2}


def test_metrics_exported_by_the_sdk_are_listed(receiver: OtlpReceiver) -> None:
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{receiver.endpoint}/v1/metrics"), export_interval_millis=3_600_000
    )
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "worker-test"}))
    meter = provider.get_meter("test")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    tokens.record(120, {"gen_ai.token.type": "input"})
    tokens.record(30, {"gen_ai.token.type": "output"})
    meter.create_counter("jobs.processed").add(2, {"status": "succeeded"})
    provider.shutdown()  # exports what was recorded

    [usage] = receiver.metrics("gen_ai.client.token.usage")
    assert (usage.type, usage.unit, usage.service) == ("histogram", "{token}", "worker-test")
    by_type = {point["attributes"]["gen_ai.token.type"]: point for point in usage.points}
    assert (by_type["input"]["count"], by_type["input"]["sum"]) == (1, 120)
    assert sum(by_type["output"]["bucket_counts"]) == 1
    [counter] = receiver.metrics("jobs.processed")
    assert (counter.type, counter.points[0]["value"], counter.points[0]["attributes"]) == (
        "sum",
        2,
        {"status": "succeeded"},
    )
    assert get(f"{receiver.endpoint}/_emulator/stats")["metric_names"] == [
        "gen_ai.client.token.usage",
        "jobs.processed",
    ]


def test_otlp_json_and_the_control_api(receiver: OtlpReceiver) -> None:
    trace_id = "5b8efff798038103d269b633813fc60c"
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-client"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "manual"},
                        "spans": [
                            {
                                "traceId": trace_id,  # OTLP/JSON ids are hex, not base64
                                "spanId": "eee19b7ec3c1b174",
                                "parentSpanId": "eee19b7ec3c1b173",
                                "name": "process jobs",
                                "kind": 5,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000500000000",
                                "attributes": [
                                    {"key": "messaging.operation.name", "value": {"stringValue": "process"}},
                                    {"key": "tags", "value": {"arrayValue": {"values": [{"intValue": "7"}]}}},
                                ],
                                "links": [
                                    {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7"}
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    status, answer = post(f"{receiver.endpoint}/v1/traces", json.dumps(body).encode(), "application/json")
    assert (status, json.loads(answer)) == (200, {})
    [span] = get(f"{receiver.endpoint}/_emulator/spans?trace_id={trace_id}")["spans"]
    assert (span["name"], span["kind"], span["service"], span["parent_span_id"]) == (
        "process jobs",
        "CONSUMER",
        "json-client",
        "eee19b7ec3c1b173",
    )
    assert span["attributes"] == {"messaging.operation.name": "process", "tags": [7]}
    assert span["links"] == [{"trace_id": UPSTREAM_TRACE, "span_id": "00f067aa0ba902b7"}]
    # Its parent never arrived (the producer exported elsewhere): the span still heads its trace's line.
    assert get(f"{receiver.endpoint}/_emulator/traces")["traces"] == [
        {"trace_id": trace_id, "spans": 1, "services": ["json-client"], "summary": "process jobs"}
    ]
    assert get(f"{receiver.endpoint}/_emulator/spans?name=nothing")["spans"] == []

    assert post(f"{receiver.endpoint}/_emulator/reset", b"", "application/json")[0] == 200
    assert get(f"{receiver.endpoint}/_emulator/spans")["spans"] == []


def test_malformed_exports_are_refused(receiver: OtlpReceiver) -> None:
    status, _ = post(f"{receiver.endpoint}/v1/traces", b"\xff not protobuf", "application/x-protobuf")
    assert status == 400
    status, answer = post(f"{receiver.endpoint}/v1/metrics", b"{not json", "application/json")
    assert status == 400 and json.loads(answer)["code"] == 3  # a google.rpc.Status, INVALID_ARGUMENT
    assert post(f"{receiver.endpoint}/v1/logs", b"x", "text/plain")[0] == 415
    assert receiver.stats()["rejected"] == 3


def test_logs_are_accepted(receiver: OtlpReceiver) -> None:
    """An SDK with an OTLP log exporter must not see errors: logs are kept too."""
    body = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1",
                                "severityText": "INFO",
                                "body": {"stringValue": "job done"},
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                            }
                        ]
                    }
                ]
            }
        ]
    }
    assert post(f"{receiver.endpoint}/v1/logs", json.dumps(body).encode(), "application/json")[0] == 200
    [log] = get(f"{receiver.endpoint}/_emulator/logs?trace_id=5b8efff798038103d269b633813fc60c")["logs"]
    assert (log["body"], log["severity"], log["span_id"]) == ("job done", "INFO", "eee19b7ec3c1b174")


def test_it_listens_on_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback only"), ServerThread(lambda: otlp.start(host="192.0.2.1"), "otlp"):
        pass


def span(span_id: str, name: str, parent: str | None = None, start: int = 0, **attributes: Any) -> SpanRecord:
    kind, scope = attributes.pop("kind", "INTERNAL"), attributes.pop("scope", "keyless_openai_worker")
    return SpanRecord(
        trace_id="t" * 32, span_id=span_id, parent_span_id=parent, name=name, kind=kind, start_ns=start,
        end_ns=start + 1, attributes=attributes, status="UNSET", status_message="", service="s", scope=scope,
        resource={},
    )  # fmt: skip


def test_summary_of_a_queue_trace() -> None:
    core, plugin = "azure-core", "azure.core.tracing.ext.opentelemetry_span"  # azure-core's tracing, either way
    chat = {"gen_ai.operation.name": "chat", "kind": "CLIENT"}
    spans = [
        span("c", "chat gpt-5.4-mini", "b", 3, **chat),
        span("a", "send jobs", None, 1, kind="PRODUCER", **{"messaging.operation.name": "send"}),
        span("b", "process jobs", "a", 2, kind="CONSUMER", **{"messaging.operation.name": "process"}),
        span("d", "POST", "c", 4, kind="CLIENT", scope="opentelemetry.instrumentation.httpx"),
        span("i", "ManagedIdentityCredential.get_token", "c", 4, scope=plugin),
        span("e", "ContainerClient.upload_blob", "b", 5, scope=core),
        span("f", "PUT", "e", 6, kind="CLIENT", scope=core),  # its HTTP call: storage too, by its parent
        span("g", "QueueClient.send_message", "b", 7, scope=plugin),
    ]
    assert otlp.summarize(spans) == "send jobs > process jobs > chat gpt-5.4-mini (+1 http, +1 identity, +3 storage)"
    fan_out = [*spans, span("h", "chat gpt-4.1-mini", "b", 8, **chat), span("s", "store result", "b", 9)]
    assert otlp.summarize(fan_out).startswith(
        "send jobs > process jobs > [chat gpt-5.4-mini, chat gpt-4.1-mini, store result] ("
    )
    # The producer exported elsewhere: the worker's part stands alone.
    worker_only = [span for span in spans if span.name != "send jobs"]
    assert otlp.summarize(worker_only) == "process jobs > chat gpt-5.4-mini (+1 http, +1 identity, +3 storage)"
    assert otlp.summarize([]) == "(no spans)"


def test_standalone_receiver() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "emulators.otlp", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert "--port" in help_text.stdout and "4318" in help_text.stdout
    process = subprocess.Popen(
        [sys.executable, "-m", "emulators.otlp", "--port", "0"],
        cwd=REPO,
        env=child_environment({}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:"), first
        endpoint = first.strip().split("=", 1)[1]
        provider = tracer_provider(endpoint, "standalone-test")
        with provider.get_tracer("test").start_as_current_span("hello"):
            pass
        provider.shutdown()
        [listed] = get(f"{endpoint}/_emulator/spans")["spans"]
        assert (listed["name"], listed["service"]) == ("hello", "standalone-test")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        if process.stdout:
            process.stdout.close()
        if process.stderr:
            process.stderr.close()
