"""The producer's ``send {queue}`` span and the W3C trace context it puts in the job.

A storage queue message carries no headers or metadata, so the context crosses the queue in the
job's own ``traceparent``/``tracestate`` fields; the worker continues the trace from them.

Each job is its own queue message, sent by its own ``send_message`` call (the queue service has no
batch send), so every job gets one PRODUCER span named ``send {queue}`` and that span's context is
the message's creation context. The conventions' per-message ``create`` spans are for one batch
operation publishing several messages, which never happens here.

Only the OpenTelemetry API is used, and only when it is installed (the producer package's ``tracing``
extra): without it there is no span and the job is sent byte for byte as validated. Without an SDK
the tracer is a no-op: the span has an invalid context (unless the caller's context is already a
valid remote one, which the API passes through), nothing is injected and the job is sent as validated.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from shared.jobs import TRACEPARENT_PATTERN

try:
    from opentelemetry import trace
    from opentelemetry.trace import Span, SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # installed without the "tracing" extra: no spans, nothing added to a job
    TRACING = False
else:
    TRACING = True

# No registered messaging.system value exists for Azure Storage queues; the conventions allow a custom one.
MESSAGING_SYSTEM = "azure.storage.queue"
TRACESTATE_MAX_CHARS = 512  # the contract's limit on a job's tracestate
_TRACESTATE_ENTRY_MAX = 128  # W3C: when truncating, drop entries longer than this first

if TRACING:
    # Resolved on each use: once the application installs an SDK, spans are recorded. Tests swap it.
    tracer = trace.get_tracer("shared.producer")

    # W3C Trace Context exactly, whatever the application's global propagator is: the job's fields
    # are traceparent and tracestate, and nothing else (baggage, B3) has a place to go.
    _W3C = TraceContextTextMapPropagator()


class Sending:
    """One job's send: ``stamp`` gives the text to send, ``sent`` records the queue message id."""

    def __init__(self, span: Span | None, inject: bool) -> None:
        self._span = span  # None without the OpenTelemetry API
        self._inject = inject

    def stamp(self, job: Mapping[str, Any], text: str) -> str:
        """``text`` (the validated JSON of ``job``) with this span's context added, when there is one to add."""
        if not self._inject or self._span is None:
            return text
        context = self._span.get_span_context()
        if not context.is_valid:
            return text  # a no-op span: no SDK, nothing to continue from
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, trace.set_span_in_context(self._span))
        traceparent = carrier.get("traceparent")
        if traceparent is None or not re.fullmatch(TRACEPARENT_PATTERN, traceparent):
            return text
        fields = {"traceparent": traceparent}
        if state := _fit_tracestate(carrier.get("tracestate", "")):
            fields["tracestate"] = state
        # A tracestate without a traceparent describes no trace; ours replaces it.
        data = {key: value for key, value in job.items() if key != "tracestate"}
        return _dumps({**data, **fields})

    def sent(self, message_id: str | None) -> None:
        if message_id and self._span is not None and self._span.is_recording():
            self._span.set_attribute("messaging.message.id", message_id)


@contextlib.contextmanager
def send_span(queue: str, queue_url: str, job: Mapping[str, Any]) -> Iterator[Sending]:
    """The PRODUCER span around sending ``job`` to ``queue`` (current while the storage calls run).

    A job that already has a ``traceparent`` keeps it (and its ``tracestate``), and the span joins
    that trace as its child, so the send and the worker's processing end up in the caller's trace.
    Otherwise the span is a child of the current context and its own context goes into the job.
    Without the OpenTelemetry API there is no span and the job is sent as it is.
    """
    if not TRACING:
        yield Sending(None, inject=False)
        return
    given = job.get("traceparent")
    parent = None
    if isinstance(given, str):
        carrier = {"traceparent": given}
        if isinstance(state := job.get("tracestate"), str):
            carrier["tracestate"] = state
        parent = _W3C.extract(carrier)
    with tracer.start_as_current_span(
        f"send {queue}", context=parent, kind=SpanKind.PRODUCER, attributes=_attributes(queue, queue_url)
    ) as span:
        try:
            yield Sending(span, inject=given is None)
        except Exception as exc:
            if span.is_recording():
                span.set_attribute("error.type", f"{type(exc).__module__}.{type(exc).__qualname__}")
            raise


def _attributes(queue: str, queue_url: str) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": queue,
    }
    parts = urlsplit(queue_url)
    if parts.hostname:
        attributes["server.address"] = parts.hostname
    if parts.port:
        attributes["server.port"] = parts.port
    return attributes


def _fit_tracestate(state: str) -> str:
    """``state`` within the contract's 512 characters, truncated as W3C says: whole entries only,
    the long ones (over 128 characters) first, then from the right (the oldest)."""
    if len(state) <= TRACESTATE_MAX_CHARS:
        return state
    entries = [entry for entry in state.split(",") if len(entry) <= _TRACESTATE_ENTRY_MAX]
    while entries and len(",".join(entries)) > TRACESTATE_MAX_CHARS:
        entries.pop()
    return ",".join(entries)


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False)
