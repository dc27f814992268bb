"""Telemetry through OpenTelemetry: the process span, the GenAI spans of model calls (both APIs, and the checks
of a background response) and the worker's metrics."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:  # the OpenTelemetry API is imported only when telemetry is on
    from opentelemetry.metrics import CallbackOptions, Meter, Observation
    from opentelemetry.trace import Span, Tracer

    from shared.jobs import Result

from ._api import (
    DURATION_BUCKETS,
    MESSAGING_SYSTEM,
    PROVIDER_NAME,
    QUEUE_WAIT_BUCKETS,
    TOKEN_BUCKETS,
    ChatCall,
    JobSpan,
    ModelAnswer,
    Processing,
    Telemetry,
)

# openai.api.type (the OpenAI registry's name for each API; ours are "chat" and "responses").
_API_TYPE = {"chat": "chat_completions", "responses": "responses"}


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def _error_type(exc: BaseException) -> str:
    """Low-cardinality ``error.type``: the exception's class name, never its message (which may quote input)."""
    return type(exc).__qualname__


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
    def process(self, delivery: Processing) -> Iterator[JobSpan]:
        from opentelemetry import trace

        queue, traceparent, tracestate = delivery.queue, delivery.traceparent, delivery.tracestate

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
            "job.id": delivery.job_id,
            "job.attempt": delivery.attempt,
        }
        if delivery.message_id:
            attributes["messaging.message.id"] = delivery.message_id
        if delivery.queue_seconds is not None:
            self._queue_wait.record(
                max(delivery.queue_seconds, 0.0),
                {"messaging.destination.name": queue, "job.requeued": delivery.requeued},
            )
        with _started(
            self.tracer,
            f"process {queue}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            start_time=_ns(delivery.started),
        ) as span:
            yield _JobSpan(span, self._propagator)

    @contextlib.contextmanager
    def chat(
        self,
        *,
        deployment: str,
        endpoint: str,
        parameters: Mapping[str, Any],
        messages: Sequence[Mapping[str, str]],
        api: Literal["chat", "responses"] = "chat",
        service_tier: str | None = None,
    ) -> Iterator[ChatCall]:
        from opentelemetry import trace

        common = _common(deployment, endpoint)
        attributes = {**common, "openai.api.type": _API_TYPE[api], **_request_attributes(parameters)}
        if service_tier is not None:
            attributes["openai.request.service_tier"] = service_tier
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
    def background(
        self, action: Literal["retrieve", "cancel"], *, deployment: str, endpoint: str, response_id: str
    ) -> Iterator[ChatCall]:
        from opentelemetry import trace

        # No operation.duration here: a retrieve's few milliseconds are not how long the model took, and
        # counting them as operations would multiply a background job's calls by its polls.
        common = _common(deployment, endpoint)
        attributes = {**common, "openai.api.type": "responses", "gen_ai.response.id": response_id}
        with _started(self.tracer, f"{action} {deployment}", kind=trace.SpanKind.CLIENT, attributes=attributes) as span:
            yield _ChatCall(self, span, common)

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

    def response(self, answer: ModelAnswer, *, response_id: str | None = None) -> None:
        model = answer.model
        self.response_attributes = {"gen_ai.response.model": model} if model else {}
        attributes: dict[str, Any] = dict(self.response_attributes)
        if identity := response_id or answer.response_id:
            attributes["gen_ai.response.id"] = identity
        if answer.finish_reason is not None:  # a background response still running has none yet
            attributes["gen_ai.response.finish_reasons"] = [answer.finish_reason]
        if answer.service_tier is not None:
            attributes["openai.response.service_tier"] = answer.service_tier
        usage = answer.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
            if usage.reasoning_tokens is not None:
                attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
            if usage.cached_tokens is not None:
                attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
            metric_attributes = {**self._common, **self.response_attributes}
            self._telemetry.record_tokens(metric_attributes, usage.prompt_tokens, usage.completion_tokens)
        if self._telemetry.capture_content and (answer.output is not None or answer.reasoning_summary):
            parts = [{"type": "reasoning", "content": answer.reasoning_summary}] if answer.reasoning_summary else []
            parts.append({"type": "text", "content": answer.output or ""})
            attributes["gen_ai.output.messages"] = json.dumps(
                [{"role": "assistant", "parts": parts, "finish_reason": answer.finish_reason}]
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


def _common(deployment: str, endpoint: str) -> dict[str, Any]:
    """The attributes every model call's span and metrics share."""
    server = urlsplit(endpoint)
    common: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER_NAME,
        "gen_ai.request.model": deployment,
        "server.address": server.hostname or "",
    }
    if server.port:
        common["server.port"] = server.port
    return common


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
