"""Traces and metrics of the worker: opt-in, keyless, set up at most once per process.

Three ways a process can run, decided once by ``configure()`` when the worker makes its
``Runtime`` (never when ``function_app`` is imported: indexing stays cheap and cannot fail here):

- **Azure** (``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true``): Microsoft's Python worker calls
  ``configure_azure_monitor`` itself, keyless through ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``
  (ClientId=<identity>;Authorization=AAD), and instruments the Azure SDK. The app configures
  **nothing** (doing both exports everything twice) and uses the global OpenTelemetry API.
- **Anywhere else with an OTLP endpoint** (``OTEL_EXPORTER_OTLP_ENDPOINT``, or the per-signal
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``_METRICS_ENDPOINT``): the app sets up the SDK once,
  OTLP over HTTP (batched spans; metrics every ``OTEL_METRIC_EXPORT_INTERVAL`` ms, default 60 s),
  ``service.name`` from ``OTEL_SERVICE_NAME``, and turns on azure-core's OpenTelemetry tracing so
  storage and identity calls are spans. The SDK's other standard ``OTEL_*`` variables apply
  (headers, sampler, ``OTEL_SDK_DISABLED``).
- **Nothing configured**: no SDK, no exporter, not even an ``opentelemetry`` import; every call
  below is a no-op (``Telemetry`` itself).

A provider someone else already installed (an ``opentelemetry-instrument`` wrapper, a test) is
used as it is, never replaced. Tests install their own providers with ``install()``.

What is recorded (names in the README, "Telemetry"): per job a CONSUMER span ``process <queue>``
whose parent is the producer's span when the job carries ``traceparent`` (a queue message has no
headers, so the context travels in the body), linked to whatever context the host set; under it a
GenAI CLIENT span ``chat <deployment>``, the result write and, when azure-core tracing is on, each
storage call. Prompts and answers never appear in telemetry unless
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``; exception messages never do (only
their type). Metrics carry no job ids.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.settings import AZURE_MONITOR_SETTING, TelemetrySettings

if TYPE_CHECKING:  # the API is imported only when telemetry is on
    from openai.types.chat import ChatCompletion
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from shared.jobs import Result

logger = logging.getLogger(__name__)

SCOPE = "keyless_openai_worker"  # instrumentation scope of the app's own spans and metrics
MESSAGING_SYSTEM = "azure.storage.queue"  # the conventions register no value for Storage Queues
PROVIDER_NAME = "azure.ai.openai"  # gen_ai.provider.name for Azure OpenAI


# GenAI metrics conventions (semantic-conventions v1.41.0, gen-ai-metrics.md): explicit bucket boundaries.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
# Enqueued -> started: from a busy moment's fraction of a second to a throttled job's capped wait and beyond.
QUEUE_WAIT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def _error_type(exc: BaseException) -> str:
    """Low-cardinality ``error.type``: the exception's class name, never its message (which may quote input)."""
    return type(exc).__qualname__


class JobSpan:
    """The span of one job's delivery, as the worker sees it (this one: telemetry off)."""

    trace_id: str | None = None  # hex, when the span is recorded

    def carrier(self) -> dict[str, str | None]:
        """``traceparent``/``tracestate`` of this span, for a copy of the job stored to run again ({} if off)."""
        return {}

    def outcome(self, result: Result) -> None:
        """Note the job's result on the span."""


class ChatCall:
    """One model call being traced (this one: telemetry off)."""

    def response(self, completion: ChatCompletion) -> None:
        """Note the model's answer: model, finish reasons, token usage (and content only when opted in)."""


_NO_SPAN = JobSpan()
_NO_CALL = ChatCall()


class Telemetry:
    """What the worker calls. This base class records nothing: it is what runs when telemetry is off."""

    mode = "off"
    enabled = False
    capture_content = False

    def process(
        self,
        *,
        queue: str,
        message_id: str | None,
        job_id: str,
        attempt: int,
        started: datetime,
        traceparent: str | None = None,
        tracestate: str | None = None,
        queue_seconds: float | None = None,
        requeued: bool = False,
    ) -> AbstractContextManager[JobSpan]:
        """The CONSUMER span ``process <queue>`` of one delivery (current while the job runs)."""
        return contextlib.nullcontext(_NO_SPAN)

    def chat(
        self, *, deployment: str, endpoint: str, parameters: Mapping[str, Any], messages: Sequence[Mapping[str, str]]
    ) -> AbstractContextManager[ChatCall]:
        """The GenAI CLIENT span ``chat <deployment>`` and the model-call metrics."""
        return contextlib.nullcontext(_NO_CALL)

    def step(self, name: str) -> AbstractContextManager[None]:
        """An INTERNAL span for one step of a job (e.g. ``store result``)."""
        return contextlib.nullcontext()

    def finished(self, result: Result) -> None:
        """Count a job that ended with a stored result, by status and error code."""

    def requeued(self, reason: str) -> None:
        """Count a job put back on the queue, by reason."""

    def throttled(self, deployment: str) -> None:
        """Count one 429 response from Azure OpenAI (each one, the SDK's own retries included)."""

    def queue_sampled(self, queue: str, depth: int, oldest_age_seconds: float) -> None:
        """Record one sample of a queue's depth and the age of its head message."""


OFF = Telemetry()


class OpenTelemetry(Telemetry):
    """Telemetry through an OpenTelemetry tracer and meter (global ones, or a test's)."""

    enabled = True

    def __init__(self, tracer: Tracer, meter: Meter, *, mode: str, capture_content: bool = False) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.mode = mode
        self.capture_content = capture_content
        self.tracer = tracer
        self._propagator = TraceContextTextMapPropagator()
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._finished = meter.create_counter(
            "worker.jobs.finished", unit="{job}", description="Jobs that ended with a stored result."
        )
        self._requeued = meter.create_counter(
            "worker.jobs.requeued", unit="{job}", description="Jobs put back on the queue to run later."
        )
        self._throttled = meter.create_counter(
            "worker.model.throttled", unit="{response}", description="429 responses from Azure OpenAI."
        )
        self._queue_wait = meter.create_histogram(
            "worker.jobs.queue_wait",
            unit="s",
            description="Time from a message's insertion in the queue to the start of its processing.",
            explicit_bucket_boundaries_advisory=QUEUE_WAIT_BUCKETS,
        )
        # Queue samples, each exported once: a value that is not re-sampled (the timer ran on another
        # instance, or stopped) is not reported again as if it were current.
        self._samples_lock = threading.Lock()
        self._depths: dict[str, int] = {}
        self._ages: dict[str, float] = {}
        meter.create_observable_gauge(
            "worker.queue.depth",
            callbacks=[self._observe_depths],
            unit="{message}",
            description="Approximate number of messages in the queue (invisible ones included), sampled.",
        )
        meter.create_observable_gauge(
            "worker.queue.oldest_message.age",
            callbacks=[self._observe_ages],
            unit="s",
            description="Age of the message at the head of the queue (0 when none is visible), sampled.",
        )

    # --- spans --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def process(
        self,
        *,
        queue: str,
        message_id: str | None,
        job_id: str,
        attempt: int,
        started: datetime,
        traceparent: str | None = None,
        tracestate: str | None = None,
        queue_seconds: float | None = None,
        requeued: bool = False,
    ) -> Iterator[JobSpan]:
        from opentelemetry import trace

        parent, links = None, None
        if traceparent:
            carrier = {"traceparent": traceparent, **({"tracestate": tracestate} if tracestate else {})}
            extracted = self._propagator.extract(carrier)
            if trace.get_current_span(extracted).get_span_context().is_valid:
                # One message: the producer's span is the parent (the conventions allow it for a single
                # message); whatever context the host set for the invocation is kept as a link.
                parent = extracted
                ambient = trace.get_current_span().get_span_context()
                links = [trace.Link(ambient)] if ambient.is_valid else None
        attributes: dict[str, Any] = {
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": queue,
            "job.id": job_id,
            "job.attempt": attempt,
        }
        if message_id:
            attributes["messaging.message.id"] = message_id
        if queue_seconds is not None:
            self._queue_wait.record(
                max(queue_seconds, 0.0), {"messaging.destination.name": queue, "job.requeued": requeued}
            )
        with _started(
            self.tracer,
            f"process {queue}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            start_time=_ns(started),
        ) as span:
            yield _JobSpan(span, self._propagator)

    @contextlib.contextmanager
    def chat(
        self, *, deployment: str, endpoint: str, parameters: Mapping[str, Any], messages: Sequence[Mapping[str, str]]
    ) -> Iterator[ChatCall]:
        from opentelemetry import trace

        server = urlsplit(endpoint)
        common: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER_NAME,
            "gen_ai.request.model": deployment,
            "server.address": server.hostname or "",
        }
        if server.port:
            common["server.port"] = server.port
        attributes = {**common, **_request_attributes(parameters)}
        if self.capture_content:
            attributes["gen_ai.input.messages"] = json.dumps(
                [{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in messages]
            )
        began = time.perf_counter()
        with _started(self.tracer, f"chat {deployment}", kind=trace.SpanKind.CLIENT, attributes=attributes) as span:
            call = _ChatCall(self, span, common)
            try:
                yield call
            except Exception as exc:
                self._duration.record(time.perf_counter() - began, {**common, "error.type": _error_type(exc)})
                raise
            self._duration.record(time.perf_counter() - began, {**common, **call.response_attributes})

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        with _started(self.tracer, name):
            yield

    # --- metrics ------------------------------------------------------------------------------------

    def record_tokens(self, common: Mapping[str, Any], input_tokens: int, output_tokens: int) -> None:
        self._tokens.record(input_tokens, {**common, "gen_ai.token.type": "input"})
        self._tokens.record(output_tokens, {**common, "gen_ai.token.type": "output"})

    def finished(self, result: Result) -> None:
        attributes: dict[str, str] = {"status": result.status}
        if result.error is not None:
            attributes["error.code"] = result.error.code
        self._finished.add(1, attributes)

    def requeued(self, reason: str) -> None:
        self._requeued.add(1, {"reason": reason})

    def throttled(self, deployment: str) -> None:
        self._throttled.add(1, {"gen_ai.request.model": deployment})

    def queue_sampled(self, queue: str, depth: int, oldest_age_seconds: float) -> None:
        with self._samples_lock:
            self._depths[queue] = depth
            self._ages[queue] = oldest_age_seconds

    def _observe_depths(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._observe(self._depths)

    def _observe_ages(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._observe(self._ages)

    def _observe(self, samples: dict[str, Any]) -> list[Observation]:
        from opentelemetry.metrics import Observation

        with self._samples_lock:
            taken = list(samples.items())
            samples.clear()
        return [Observation(value, {"messaging.destination.name": queue}) for queue, value in taken]


class _JobSpan(JobSpan):
    def __init__(self, span: Span, propagator: Any) -> None:
        from opentelemetry.trace import format_trace_id

        self._span = span
        self._propagator = propagator
        context = span.get_span_context()
        self.trace_id = format_trace_id(context.trace_id) if span.is_recording() and context.is_valid else None

    def carrier(self) -> dict[str, str | None]:
        if self.trace_id is None:
            return {}
        from opentelemetry import trace

        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(self._span))
        return {"traceparent": carrier["traceparent"], "tracestate": carrier.get("tracestate")}

    def outcome(self, result: Result) -> None:
        self._span.set_attribute("job.status", result.status)
        if result.error is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_attribute("error.type", result.error.code)
            self._span.set_status(Status(StatusCode.ERROR, result.error.code))


class _ChatCall(ChatCall):
    def __init__(self, telemetry: OpenTelemetry, span: Span, common: dict[str, Any]) -> None:
        self._telemetry = telemetry
        self._span = span
        self._common = common
        self.response_attributes: dict[str, Any] = {}

    def response(self, completion: ChatCompletion) -> None:
        self.response_attributes = {"gen_ai.response.model": completion.model}
        attributes: dict[str, Any] = {
            "gen_ai.response.model": completion.model,
            "gen_ai.response.id": completion.id,
            "gen_ai.response.finish_reasons": [choice.finish_reason or "" for choice in completion.choices],
        }
        usage = completion.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
            details = usage.completion_tokens_details
            if details is not None and details.reasoning_tokens is not None:
                attributes["gen_ai.usage.reasoning.output_tokens"] = details.reasoning_tokens
            cached = usage.prompt_tokens_details
            if cached is not None and cached.cached_tokens is not None:
                attributes["gen_ai.usage.cache_read.input_tokens"] = cached.cached_tokens
            metric_attributes = {**self._common, **self.response_attributes}
            self._telemetry.record_tokens(metric_attributes, usage.prompt_tokens, usage.completion_tokens)
        if self._telemetry.capture_content:
            attributes["gen_ai.output.messages"] = json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": choice.message.content or ""}],
                        "finish_reason": choice.finish_reason,
                    }
                    for choice in completion.choices
                ]
            )
        self._span.set_attributes(attributes)


@contextlib.contextmanager
def _started(tracer: Tracer, name: str, **options: Any) -> Iterator[Span]:
    """A current span that, on an exception, gets ``error.type`` (the class name) and an error status,
    but not the exception itself: its message may quote the job's text."""
    with tracer.start_as_current_span(name, record_exception=False, set_status_on_exception=False, **options) as span:
        try:
            yield span
        except BaseException as exc:
            from opentelemetry.trace import Status, StatusCode

            if span.is_recording():
                span.set_attribute("error.type", _error_type(exc))
                span.set_status(Status(StatusCode.ERROR, _error_type(exc)))
            raise


# Job parameters -> GenAI request attributes (stop sequences are left out: they are the sender's text).
_REQUEST_ATTRIBUTES = {
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "seed": "gen_ai.request.seed",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
}


def _request_attributes(parameters: Mapping[str, Any]) -> dict[str, Any]:
    attributes = {name: parameters[key] for key, name in _REQUEST_ATTRIBUTES.items() if key in parameters}
    response_format = parameters.get("response_format")
    if isinstance(response_format, Mapping):
        attributes["gen_ai.output.type"] = "text" if response_format.get("type") == "text" else "json"
    return attributes


# --- set-up ------------------------------------------------------------------------------------------

_lock = threading.Lock()
_configured: Telemetry | None = None
_installed: Telemetry | None = None


def current() -> Telemetry:
    """The telemetry the worker records to: a test's ``install()``, else ``configure()``'s, else off."""
    return _installed or _configured or OFF


def configure(settings: TelemetrySettings | None = None) -> Telemetry:
    """Decide once per process how telemetry runs (see the module docstring) and set it up if the app
    must; later calls return the first decision. Never raises: a failure leaves telemetry off."""
    global _configured
    with _lock:
        if _configured is None:
            try:
                _configured = _configure(settings or TelemetrySettings.from_env())
            except Exception as exc:  # telemetry must never stop the worker
                logger.warning("telemetry is off: setting it up failed: %s: %s", type(exc).__name__, exc)
                _configured = OFF
        return _configured


def _configure(settings: TelemetrySettings) -> Telemetry:
    capture = settings.capture_content
    if settings.azure_monitor:
        # Microsoft's worker has configured (or will configure) Azure Monitor: configuring here too
        # would export everything twice. The app records through the global API it set.
        logger.info("telemetry: Azure Monitor, set up by the Functions Python worker (%s)", AZURE_MONITOR_SETTING)
        return _from_globals("azure_monitor", capture)
    if _sdk_already_configured():
        logger.info("telemetry: OpenTelemetry providers already installed in this process; using them")
        return _from_globals("preconfigured", capture)
    traces, metrics = settings.traces_url, settings.metrics_url
    if not (traces or metrics):
        return OFF
    _set_up_sdk(settings.service_name, traces, metrics)
    logger.info("telemetry: OTLP/HTTP, traces to %s, metrics to %s", traces or "-", metrics or "-")
    return _from_globals("otlp", capture)


def _sdk_already_configured() -> bool:
    if "opentelemetry.trace" not in sys.modules:
        return False  # nobody imported the API, so nobody set a provider
    from opentelemetry import metrics, trace

    tracer_set = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    meter_set = type(metrics.get_meter_provider()).__name__ != "_ProxyMeterProvider"
    return tracer_set or meter_set


def _set_up_sdk(service_name: str, traces: str, metrics_url: str) -> None:
    """The OpenTelemetry SDK with OTLP/HTTP exporters, as the global providers (once per process)."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.name": service_name})
    if traces:
        from azure.core.settings import settings as azure_settings
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces)))
        trace.set_tracer_provider(tracer_provider)
        azure_settings.tracing_implementation = "opentelemetry"  # storage and identity calls become spans
    if metrics_url:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=metrics_url))  # OTEL_METRIC_EXPORT_INTERVAL
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))


def _from_globals(mode: str, capture_content: bool) -> OpenTelemetry:
    from opentelemetry import metrics, trace

    return OpenTelemetry(trace.get_tracer(SCOPE), metrics.get_meter(SCOPE), mode=mode, capture_content=capture_content)


@contextlib.contextmanager
def install(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, *, capture_content: bool = False
) -> Iterator[OpenTelemetry]:
    """Record to these providers (a test's in-memory exporter and reader) until the block ends,
    whatever ``configure()`` decided; the global providers are left alone."""
    global _installed
    installed = OpenTelemetry(
        tracer_provider.get_tracer(SCOPE),
        meter_provider.get_meter(SCOPE),
        mode="installed",
        capture_content=capture_content,
    )
    previous, _installed = _installed, installed
    try:
        yield installed
    finally:
        _installed = previous
