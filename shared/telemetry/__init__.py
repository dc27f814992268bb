"""Traces and metrics of the worker: opt-in, keyless, set up at most once per process.

The package: ``_api`` is what the worker calls (``Telemetry``, which records nothing: telemetry off),
``_otel`` its OpenTelemetry implementation, and this module decides which one runs.

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

What is recorded (names in docs/telemetry.md): per job a CONSUMER span ``process <queue>``
whose parent is the producer's span when the job carries ``traceparent`` (a queue message has no
headers, so the context travels in the body), linked to whatever context the host set; under it a
GenAI CLIENT span ``chat <deployment>`` (a chat completion or a response: the answer's attributes either
way; a background response's checks are ``retrieve``/``cancel <deployment>`` spans that carry them once it
has ended), the result write and, when azure-core tracing is on, each storage call. Prompts and answers
never appear in telemetry unless ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``; exception
messages never do (only their type). Metrics carry no job ids.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from shared.settings import AZURE_MONITOR_SETTING, TelemetrySettings

from ._api import (
    DURATION_BUCKETS,
    OFF,
    QUEUE_WAIT_BUCKETS,
    SCOPE,
    TOKEN_BUCKETS,
    ChatCall,
    JobSpan,
    ModelAnswer,
    Processing,
    Telemetry,
)
from ._otel import OpenTelemetry

if TYPE_CHECKING:  # the API is imported only when telemetry is on
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

logger = logging.getLogger(__name__)

__all__ = [
    "DURATION_BUCKETS",
    "OFF",
    "QUEUE_WAIT_BUCKETS",
    "TOKEN_BUCKETS",
    "ChatCall",
    "JobSpan",
    "ModelAnswer",
    "OpenTelemetry",
    "Processing",
    "Telemetry",
    "configure",
    "current",
    "install",
]

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
