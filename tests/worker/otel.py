"""In-memory OpenTelemetry for the worker's telemetry tests: a span exporter and a metric reader
installed with ``shared.telemetry.install`` for one test, and (``global_tracing``) the global tracer
provider plus azure-core's tracing switched to it for one test, then put back as they were."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import opentelemetry.trace as trace_api
from azure.core.settings import settings as azure_settings
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from shared import telemetry

PRODUCER_TRACE = "0af7651916cd43dd8448eb211c80319c"
PRODUCER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01"


@dataclass
class Captured:
    """What the worker exported during one test."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    recorder: telemetry.OpenTelemetry
    _metrics: dict[str, Any] | None = None

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name.startswith(prefix)]

    def collect(self) -> dict[str, Any]:
        """Metric name -> its data, collected now (each call is a new collection)."""
        data = self.reader.get_metrics_data()
        found: dict[str, Any] = {}
        for resource_metrics in data.resource_metrics if data else []:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = metric
        self._metrics = found
        return found

    def points(self, name: str) -> list[Any]:
        metrics = self._metrics if self._metrics is not None else self.collect()
        return list(metrics[name].data.data_points) if name in metrics else []

    def everything(self) -> str:
        """Every exported span (names, attributes, events, links, status) and metric point, as text."""
        spans = [span.to_json() for span in self.spans()]
        data = self.reader.get_metrics_data()
        return "\n".join([*spans, data.to_json() if data else ""])


def _providers() -> tuple[InMemorySpanExporter, TracerProvider, InMemoryMetricReader, MeterProvider]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return exporter, tracer_provider, reader, MeterProvider(metric_readers=[reader], shutdown_on_exit=False)


@contextlib.contextmanager
def captured(*, capture_content: bool = False) -> Iterator[Captured]:
    exporter, tracer_provider, reader, meter_provider = _providers()
    with telemetry.install(tracer_provider, meter_provider, capture_content=capture_content) as recorder:
        yield Captured(exporter, reader, tracer_provider, recorder)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@contextlib.contextmanager
def global_tracing(provider: TracerProvider) -> Iterator[None]:
    """``provider`` as the global tracer provider, with azure-core's OpenTelemetry tracing on (so
    storage and identity calls are spans), for the block only."""
    saved = trace_api._TRACER_PROVIDER, trace_api._TRACER_PROVIDER_SET_ONCE
    trace_api._TRACER_PROVIDER, trace_api._TRACER_PROVIDER_SET_ONCE = None, Once()
    trace_api.set_tracer_provider(provider)
    azure_settings.tracing_implementation = "opentelemetry"  # type: ignore[assignment]
    try:
        yield
    finally:
        azure_settings.tracing_implementation.unset_value()
        trace_api._TRACER_PROVIDER, trace_api._TRACER_PROVIDER_SET_ONCE = saved


def hex_span(span: ReadableSpan) -> str:
    return format(span.context.span_id, "016x")


def hex_trace(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def parent_of(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent else None


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return json.loads(json.dumps(dict(span.attributes or {}), default=list))
