"""The worker's traces and metrics, against in-process fakes with in-memory OpenTelemetry: one trace
per job across the queue hop (the producer's span is the parent, the host's context a link), the
GenAI span and metrics, a re-enqueued job staying in its trace, no prompt or answer anywhere, and
``configure()`` (each mode in a fresh interpreter, since it decides once per process)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from shared import telemetry
from shared.jobs import RequeuedRef
from shared.settings import AZURE_MONITOR_SETTING, OTLP_ENDPOINT
from shared.worker import handle, sample_queues
from tests.conftest import REPO
from tests.worker.fakes import FakeWorld, Message, fake_world
from tests.worker.otel import (
    PRODUCER_SPAN,
    PRODUCER_TRACE,
    TRACEPARENT,
    Captured,
    attributes,
    captured,
    hex_span,
    hex_trace,
    parent_of,
)
from tests.worker.test_delivery_policy import throttled

PROMPT_MARKER = "zq-prompt-marker-5b1"


def message(body: dict[str, Any], **extra: Any) -> Message:
    return Message(json.dumps(body).encode(), **extra)


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


@pytest.fixture
def otel() -> Iterator[Captured]:
    with captured() as found:
        yield found


async def test_the_job_span_continues_the_producers_trace(world: FakeWorld, otel: Captured) -> None:
    job = {"id": "j1", "prompt": "hi", "traceparent": TRACEPARENT, "tracestate": "vendor=1"}
    result = await handle(message(job, id="msg-9"), world.runtime)
    assert result is not None and result.status == "succeeded"

    [process] = otel.named("process ")
    assert process.name == "process jobs" and process.kind == SpanKind.CONSUMER
    assert hex_trace(process) == PRODUCER_TRACE and parent_of(process) == PRODUCER_SPAN
    assert process.parent is not None and process.parent.is_remote
    assert process.context.trace_state.to_header() == "vendor=1"
    assert attributes(process) == {
        "messaging.system": "azure.storage.queue",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": "jobs",
        "messaging.message.id": "msg-9",
        "job.id": "j1",
        "job.attempt": 1,
        "job.status": "succeeded",
    }
    assert process.links == ()  # nothing around the invocation to link to
    assert result.trace_id == PRODUCER_TRACE and world.result("j1")["trace_id"] == PRODUCER_TRACE

    [chat] = otel.named("chat ")
    assert chat.name == "chat gpt-test" and chat.kind == SpanKind.CLIENT
    assert hex_trace(chat) == PRODUCER_TRACE and parent_of(chat) == hex_span(process)
    assert attributes(chat) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "azure.ai.openai",
        "gen_ai.request.model": "gpt-test",
        "server.address": "res.openai.azure.com",
        "openai.api.type": "chat_completions",
        "gen_ai.response.model": "gpt-test",
        "gen_ai.response.id": "chatcmpl-fake",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 2,
        "gen_ai.usage.reasoning.output_tokens": 0,
        "gen_ai.usage.cache_read.input_tokens": 0,
    }
    [store] = otel.named("store result")
    assert parent_of(store) == hex_span(process)


async def test_the_hosts_context_becomes_a_link(world: FakeWorld, otel: Captured) -> None:
    host = otel.tracer_provider.get_tracer("host")
    with host.start_as_current_span("invocation") as invocation:
        await handle(message({"id": "j1", "prompt": "hi", "traceparent": TRACEPARENT}), world.runtime)
    [process] = otel.named("process ")
    assert parent_of(process) == PRODUCER_SPAN  # the producer's span is the parent ...
    assert [link.context.span_id for link in process.links] == [invocation.get_span_context().span_id]  # ... + link


async def test_a_job_without_trace_context_runs_in_the_hosts(world: FakeWorld, otel: Captured) -> None:
    host = otel.tracer_provider.get_tracer("host")
    with host.start_as_current_span("invocation") as invocation:
        result = await handle(message({"id": "j1", "prompt": "hi"}), world.runtime)
    [process] = otel.named("process ")
    assert process.parent is not None and process.parent.span_id == invocation.get_span_context().span_id
    assert process.links == ()
    assert result is not None and result.trace_id == hex_trace(process)


async def test_a_throttled_job_keeps_its_trace_when_it_runs_again(world: FakeWorld, otel: Captured) -> None:
    world.model.errors = [throttled("150")]  # longer than the SDK waits: the worker re-enqueues
    first = message({"id": "j1", "prompt": "hi", "traceparent": TRACEPARENT})
    assert await handle(first, world.runtime) is None
    [(pointer, delay)] = world.jobs_queue.messages
    assert delay >= 1 and json.loads(pointer)["requeued"] is True
    [process_1] = otel.named("process ")
    stored = json.loads(world.worker_only.blobs[RequeuedRef(id="j1", requeued=True).blob].body)
    # The stored copy carries the first delivery's span, so the next one continues from it.
    assert stored["job"]["traceparent"] == f"00-{PRODUCER_TRACE}-{hex_span(process_1)}-01"
    [chat_1] = otel.named("chat ")
    assert chat_1.status.status_code == StatusCode.ERROR
    assert attributes(chat_1)["error.type"] == "RateLimitError"

    result = await handle(Message(pointer.encode(), id="msg-2"), world.runtime)
    assert result is not None and result.status == "succeeded" and result.attempts == 2
    process_2 = next(span for span in otel.named("process ") if span is not process_1 and span.name == process_1.name)
    assert hex_trace(process_2) == PRODUCER_TRACE and parent_of(process_2) == hex_span(process_1)
    assert result.trace_id == PRODUCER_TRACE
    assert attributes(process_2)["job.attempt"] == 2
    requeued = otel.points("worker.jobs.requeued")
    assert [(dict(p.attributes), p.value) for p in requeued] == [({"reason": "throttled"}, 1)]
    waits = {p.attributes["job.requeued"]: p.count for p in otel.points("worker.jobs.queue_wait")}
    assert waits == {False: 1, True: 1}


async def test_metrics_add_up_to_the_results(world: FakeWorld, otel: Captured) -> None:
    world.model.reasoning_tokens = 5
    results = []
    for i in range(4):
        prompt = "word " * (i + 1)
        results.append(await handle(message({"id": f"j{i}", "prompt": prompt}, id=f"m{i}"), world.runtime))
    results.append(await handle(message({"id": "bad", "prompt": ""}, id="m-bad"), world.runtime))
    tight = {"id": "tight", "prompt": "x", "parameters": {"max_completion_tokens": 1}}  # all spent on reasoning
    results.append(await handle(message(tight, id="m-t"), world.runtime))

    usage = [r.usage for r in results if r is not None and r.usage is not None]
    tokens = {p.attributes["gen_ai.token.type"]: p for p in otel.points("gen_ai.client.token.usage")}
    assert tokens["input"].sum == sum(u.prompt_tokens for u in usage)
    assert tokens["output"].sum == sum(u.completion_tokens for u in usage)
    assert tokens["input"].count == tokens["output"].count == len(usage) == 5
    assert list(tokens["input"].explicit_bounds) == list(telemetry.TOKEN_BUCKETS)
    assert dict(tokens["input"].attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "azure.ai.openai",
        "gen_ai.request.model": "gpt-test",
        "gen_ai.response.model": "gpt-test",
        "server.address": "res.openai.azure.com",
        "gen_ai.token.type": "input",
    }
    [duration] = otel.points("gen_ai.client.operation.duration")
    assert duration.count == 5 and list(duration.explicit_bounds) == list(telemetry.DURATION_BUCKETS)

    finished = {tuple(sorted(p.attributes.items())): p.value for p in otel.points("worker.jobs.finished")}
    assert finished == {
        (("status", "succeeded"),): 4,
        (("error.code", "empty_prompt"), ("status", "failed")): 1,
        (("error.code", "output_budget_exhausted"), ("status", "failed")): 1,
    }
    for point in otel.points("worker.jobs.finished") + otel.points("gen_ai.client.token.usage"):
        assert not any("j0" in str(value) or "bad" in str(value) for value in point.attributes.values())


async def test_a_failed_result_marks_the_job_span(world: FakeWorld, otel: Captured) -> None:
    await handle(message({"id": "bad", "prompt": "x", "deployment": "other"}), world.runtime)
    [process] = otel.named("process ")
    assert process.status.status_code == StatusCode.ERROR
    assert attributes(process)["error.type"] == "deployment_not_allowed"
    assert attributes(process)["job.status"] == "failed"
    assert otel.named("chat ") == []


async def test_an_error_the_host_retries_is_noted_without_its_message(world: FakeWorld, otel: Captured) -> None:
    world.model.errors = [ConnectionResetError(f"peer reset while sending {PROMPT_MARKER}")]
    with pytest.raises(ConnectionResetError):
        await handle(message({"id": "j1", "prompt": "hi"}), world.runtime)
    [process] = otel.named("process ")
    assert process.status.status_code == StatusCode.ERROR
    assert attributes(process)["error.type"] == "ConnectionResetError"
    assert process.events == ()  # no exception event: its message could quote the job
    [duration] = otel.points("gen_ai.client.operation.duration")
    assert dict(duration.attributes)["error.type"] == "ConnectionResetError"
    assert PROMPT_MARKER not in otel.everything()


async def test_no_prompt_or_answer_reaches_spans_metrics_or_logs(
    world: FakeWorld, otel: Captured, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {
        "id": "j1",
        "system": f"system {PROMPT_MARKER}",
        "messages": [{"role": "user", "content": f"question {PROMPT_MARKER}"}],
        "metadata": {"note": "kept"},
        "traceparent": TRACEPARENT,
    }
    result = await handle(message(body), world.runtime)
    assert result is not None and result.output is not None and PROMPT_MARKER in result.output  # the echo
    exported = otel.everything()
    assert "chat gpt-test" in exported and "gen_ai.client.token.usage" in exported
    assert PROMPT_MARKER not in exported
    assert not [r for r in caplog.records if PROMPT_MARKER in r.getMessage()]


async def test_content_is_captured_only_when_asked(world: FakeWorld) -> None:
    with captured(capture_content=True) as otel:
        await handle(message({"id": "j1", "system": "be brief", "prompt": PROMPT_MARKER}), world.runtime)
    [chat] = otel.named("chat ")
    assert json.loads(attributes(chat)["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": PROMPT_MARKER}]},
    ]
    assert json.loads(attributes(chat)["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": f"echo: {PROMPT_MARKER}"}], "finish_reason": "stop"}
    ]
    assert [span.name for span in otel.spans() if PROMPT_MARKER in span.to_json()] == ["chat gpt-test"]


async def test_queue_samples_are_exported_once(world: FakeWorld, otel: Captured) -> None:
    otel.recorder.queue_sampled("jobs", 7, 12.5)
    otel.recorder.queue_sampled("jobs-poison", 0, 0.0)
    otel.collect()
    depths = {p.attributes["messaging.destination.name"]: p.value for p in otel.points("worker.queue.depth")}
    ages = {p.attributes["messaging.destination.name"]: p.value for p in otel.points("worker.queue.oldest_message.age")}
    assert depths == {"jobs": 7, "jobs-poison": 0} and ages == {"jobs": 12.5, "jobs-poison": 0.0}
    otel.collect()  # no new sample: nothing, rather than the old value again
    assert otel.points("worker.queue.depth") == []


async def test_with_telemetry_off_nothing_is_recorded(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (AZURE_MONITOR_SETTING, OTLP_ENDPOINT):
        monkeypatch.delenv(name, raising=False)
    assert telemetry.current() is telemetry.OFF
    result = await handle(message({"id": "j1", "prompt": "hi", "traceparent": TRACEPARENT}), world.runtime)
    assert result is not None and result.trace_id is None
    await sample_queues(world.runtime)  # returns before any storage call


def run_python(code: str, **env: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (configure() decides once per process); it prints one JSON line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


CONFIGURE = """
    import json, sys
    from shared import telemetry
    chosen = telemetry.configure()
    again = telemetry.configure()
    report = {"mode": chosen.mode, "same": chosen is again, "imported": "opentelemetry.trace" in sys.modules}
    from opentelemetry import metrics, trace
    from azure.core.settings import settings
    report["tracer_provider"] = type(trace.get_tracer_provider()).__name__
    report["meter_provider"] = type(metrics.get_meter_provider()).__name__
    report["azure_tracing"] = str(settings.tracing_implementation())
    provider = trace.get_tracer_provider()
    report["service"] = getattr(provider, "resource", None) and provider.resource.attributes.get("service.name")
    print(json.dumps(report))
"""


def test_nothing_configured_sets_up_nothing() -> None:
    report = run_python(CONFIGURE)
    assert report == {
        "mode": "off",
        "same": True,
        "imported": False,  # not even the API is imported
        "tracer_provider": "ProxyTracerProvider",  # the API's no-op
        "meter_provider": "_ProxyMeterProvider",
        "azure_tracing": "None",
        "service": None,
    }


def test_in_azure_the_functions_worker_configures_and_the_app_does_not() -> None:
    report = run_python(CONFIGURE, PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY="true")
    assert report["mode"] == "azure_monitor" and report["same"]
    # Here no Functions worker ran configure_azure_monitor, so the providers are still the API's own:
    # the app added none (doing so next to the worker's would export everything twice).
    assert report["tracer_provider"] == "ProxyTracerProvider" and report["meter_provider"] == "_ProxyMeterProvider"
    assert report["azure_tracing"] == "None"


def test_an_otlp_endpoint_sets_up_the_sdk_once() -> None:
    report = run_python(CONFIGURE, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert report == {
        "mode": "otlp",
        "same": True,
        "imported": True,
        "tracer_provider": "TracerProvider",
        "meter_provider": "MeterProvider",
        "azure_tracing": "<class 'azure.core.tracing.ext.opentelemetry_span.OpenTelemetrySpan'>",
        "service": "keyless-openai-worker",
    }
    named = run_python(
        CONFIGURE, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://127.0.0.1:9/v1/traces", OTEL_SERVICE_NAME="jobs-eu"
    )
    assert named["service"] == "jobs-eu" and named["meter_provider"] == "_ProxyMeterProvider"  # traces only


def test_providers_installed_before_the_app_are_used_not_replaced() -> None:
    report = run_python(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        mine = TracerProvider()
        trace.set_tracer_provider(mine)
        from shared import telemetry
        chosen = telemetry.configure()
        print(json.dumps({"mode": chosen.mode, "kept": trace.get_tracer_provider() is mine}))
        """,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )
    assert report == {"mode": "preconfigured", "kept": True}


def test_a_failure_to_set_up_leaves_telemetry_off() -> None:
    report = run_python(
        """
        import json
        from shared import telemetry
        def broken(*args):
            raise RuntimeError("no exporter today")
        telemetry._set_up_sdk = broken
        print(json.dumps({"mode": telemetry.configure().mode}))
        """,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )
    assert report == {"mode": "off"}


def test_importing_the_app_imports_no_opentelemetry() -> None:
    report = run_python(
        """
        import json, sys
        import function_app
        print(json.dumps({"otel": sorted(m for m in sys.modules if m.startswith("opentelemetry"))}))
        """,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )
    assert report == {"otel": []}  # indexing stays cheap: telemetry is set up at first use
