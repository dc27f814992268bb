"""OTLP/HTTP receiver: where the worker's and producers' traces, metrics and logs go locally.

The OpenTelemetry SDK's OTLP/HTTP exporters post to ``$OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces``,
``/v1/metrics`` and ``/v1/logs``: protobuf (``application/x-protobuf``, their default, gzip or
not) or OTLP/JSON (``application/json``, ids in hex). Everything is kept in memory, flattened, and
read back through a small control API:

- ``GET /_emulator/spans`` (``?trace_id=&name=&service=``), ``/_emulator/metrics`` (``?name=``),
  ``/_emulator/logs`` (``?trace_id=``): what was received, as JSON;
- ``GET /_emulator/traces``: one line per trace (``send jobs > process jobs > chat ...``);
- ``GET /_emulator/stats``, ``POST /_emulator/reset``.

It listens on loopback only. Run standalone: ``python -m emulators.otlp --port 0`` prints the
``OTEL_EXPORTER_OTLP_ENDPOINT`` to export.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf import json_format  # type: ignore[import-untyped]  # protobuf has no types: Any
from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped]
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from emulators._server import Running, loopback_args, run_forever, serve

DEFAULT_PORT = 4318  # OTLP/HTTP's registered port
MAX_RECORDS = 100_000  # per signal; the oldest go first
MAX_BODY = 32 * 1024 * 1024
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
STORAGE_NAMESPACE = "Microsoft.Storage"  # az.namespace, when an SDK sets it


# --- What is kept -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpanRecord:
    """One received span; ids in lower-case hex, ``kind`` and ``status`` as their short names."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER (UNSPECIFIED if not set)
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status: str  # UNSET, OK, ERROR
    status_message: str
    service: str  # the resource's service.name
    scope: str
    resource: dict[str, Any]
    links: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MetricRecord:
    """One metric from one export: its points flattened to dicts (``value``, or count/sum/buckets)."""

    name: str
    unit: str
    description: str
    type: str  # gauge, sum, histogram, exponential_histogram, summary
    service: str
    scope: str
    points: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LogRecord:
    time_ns: int
    severity: str
    body: Any
    attributes: dict[str, Any]
    trace_id: str | None
    span_id: str | None
    service: str
    scope: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReceiverState:
    """Everything received, newest last, at most ``max_records`` per signal."""

    max_records: int = MAX_RECORDS
    spans: deque[SpanRecord] = field(default_factory=deque)
    metrics: deque[MetricRecord] = field(default_factory=deque)
    logs: deque[LogRecord] = field(default_factory=deque)
    requests: Counter[str] = field(default_factory=Counter)  # signal -> export requests accepted
    rejected: int = 0

    def __post_init__(self) -> None:
        self.spans = deque(self.spans, maxlen=self.max_records)
        self.metrics = deque(self.metrics, maxlen=self.max_records)
        self.logs = deque(self.logs, maxlen=self.max_records)

    def find_spans(
        self, *, trace_id: str | None = None, name: str | None = None, service: str | None = None
    ) -> list[SpanRecord]:
        return [
            span
            for span in self.spans
            if (trace_id is None or span.trace_id == trace_id)
            and (name is None or span.name == name)
            and (service is None or span.service == service)
        ]

    def find_metrics(self, name: str | None = None) -> list[MetricRecord]:
        return [metric for metric in self.metrics if name is None or metric.name == name]

    def trace_ids(self) -> list[str]:
        """Every trace id seen, in the order its first span arrived."""
        return list(dict.fromkeys(span.trace_id for span in self.spans))

    def stats(self) -> dict[str, Any]:
        return {
            "spans": len(self.spans),
            "traces": len(self.trace_ids()),
            "metrics": len(self.metrics),
            "metric_names": sorted({metric.name for metric in self.metrics}),
            "logs": len(self.logs),
            "requests": dict(self.requests),
            "rejected": self.rejected,
            "services": sorted({span.service for span in self.spans}),
        }

    def reset(self) -> None:
        self.spans.clear()
        self.metrics.clear()
        self.logs.clear()
        self.requests.clear()
        self.rejected = 0


STATE = web.AppKey("state", ReceiverState)


# --- Decoding OTLP ------------------------------------------------------------------------------------


def _hex(raw: bytes) -> str:
    return raw.hex()


def any_value(value: common_pb2.AnyValue) -> Any:
    """An OTLP AnyValue as plain Python (bytes as hex)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def attributes(pairs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {pair.key: any_value(pair.value) for pair in pairs}


def _service(resource: resource_pb2.Resource) -> tuple[dict[str, Any], str]:
    found = attributes(resource.attributes)
    return found, str(found.get("service.name", "unknown_service"))


def spans_from(request: trace_service_pb2.ExportTraceServiceRequest) -> list[SpanRecord]:
    out = []
    for resource_spans in request.resource_spans:
        resource, service = _service(resource_spans.resource)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(
                    SpanRecord(
                        trace_id=_hex(span.trace_id),
                        span_id=_hex(span.span_id),
                        parent_span_id=_hex(span.parent_span_id) or None,
                        name=span.name,
                        kind=trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=attributes(span.attributes),
                        status=trace_pb2.Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                        status_message=span.status.message,
                        service=service,
                        scope=scope_spans.scope.name,
                        resource=resource,
                        links=[{"trace_id": _hex(link.trace_id), "span_id": _hex(link.span_id)} for link in span.links],
                        events=[event.name for event in span.events],
                    )
                )
    return out


def _points(metric: Any, kind: str) -> list[dict[str, Any]]:
    data = getattr(metric, kind)
    points = []
    for point in data.data_points:
        item: dict[str, Any] = {"attributes": attributes(point.attributes), "time_ns": point.time_unix_nano}
        if kind in ("gauge", "sum"):
            item["value"] = getattr(point, point.WhichOneof("value") or "as_int")
        else:
            item["count"] = point.count
            item["sum"] = point.sum if kind == "summary" or point.HasField("sum") else None
        if kind == "histogram":
            item["bucket_counts"] = list(point.bucket_counts)
            item["explicit_bounds"] = list(point.explicit_bounds)
        points.append(item)
    return points


def metrics_from(request: metrics_service_pb2.ExportMetricsServiceRequest) -> list[MetricRecord]:
    out = []
    for resource_metrics in request.resource_metrics:
        _, service = _service(resource_metrics.resource)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data") or "gauge"
                out.append(
                    MetricRecord(
                        name=metric.name,
                        unit=metric.unit,
                        description=metric.description,
                        type=kind,
                        service=service,
                        scope=scope_metrics.scope.name,
                        points=_points(metric, kind),
                    )
                )
    return out


def logs_from(request: logs_service_pb2.ExportLogsServiceRequest) -> list[LogRecord]:
    out = []
    for resource_logs in request.resource_logs:
        _, service = _service(resource_logs.resource)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                out.append(
                    LogRecord(
                        time_ns=record.time_unix_nano or record.observed_time_unix_nano,
                        severity=record.severity_text,
                        body=any_value(record.body),
                        attributes=attributes(record.attributes),
                        trace_id=_hex(record.trace_id) or None,
                        span_id=_hex(record.span_id) or None,
                        service=service,
                        scope=scope_logs.scope.name,
                    )
                )
    return out


_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _ids_to_base64(value: Any) -> Any:
    """OTLP/JSON writes trace and span ids in hex; protobuf's JSON mapping reads bytes as base64."""
    if isinstance(value, list):
        return [_ids_to_base64(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key in _ID_KEYS and isinstance(item, str) and item:
            with contextlib.suppress(ValueError):  # not hex: left for the parser to refuse
                item = base64.b64encode(bytes.fromhex(item)).decode()
        out[key] = _ids_to_base64(item)
    return out


def decode(body: bytes, content_type: str, message: Message) -> None:
    """Fill ``message`` from an OTLP/HTTP body; ValueError if it is not one."""
    if content_type == JSON:
        try:
            json_format.ParseDict(_ids_to_base64(json.loads(body)), message, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, binascii.Error) as exc:
            raise ValueError(f"not OTLP/JSON: {exc}") from exc
        return
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise ValueError(f"not OTLP protobuf: {exc}") from exc


# --- The HTTP side ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Signal:
    request: Callable[[], Message]
    response: Callable[[], Message]
    store: Callable[[ReceiverState, Any], None]


def _store_traces(state: ReceiverState, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
    state.spans.extend(spans_from(request))


def _store_metrics(state: ReceiverState, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
    state.metrics.extend(metrics_from(request))


def _store_logs(state: ReceiverState, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
    state.logs.extend(logs_from(request))


SIGNALS = {
    "traces": _Signal(
        trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse, _store_traces
    ),
    "metrics": _Signal(
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        _store_metrics,
    ),
    "logs": _Signal(logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse, _store_logs),
}


def _encode(message: Message, content_type: str, status: int = 200) -> web.Response:
    if content_type == JSON:
        return web.json_response(json_format.MessageToDict(message), status=status)
    return web.Response(body=message.SerializeToString(), status=status, content_type=PROTOBUF)


async def export(request: web.Request) -> web.Response:
    """``POST /v1/{traces,metrics,logs}``: as an OTLP/HTTP collector answers (200, or 400 with a Status)."""
    signal = SIGNALS[request.match_info["signal"]]
    state = request.app[STATE]
    content_type = request.content_type  # aiohttp has already undone a gzip/deflate Content-Encoding
    if content_type not in (PROTOBUF, JSON):
        state.rejected += 1
        return web.Response(status=415, text=f"OTLP/HTTP takes {PROTOBUF} or {JSON}, not {content_type}")
    message = signal.request()
    try:
        decode(await request.read(), content_type, message)
    except ValueError as exc:
        state.rejected += 1
        return _encode(status_pb2.Status(code=3, message=str(exc)), content_type, status=400)  # INVALID_ARGUMENT
    signal.store(state, message)
    state.requests[request.match_info["signal"]] += 1
    return _encode(signal.response(), content_type)


async def get_spans(request: web.Request) -> web.Response:
    query = request.query
    found = request.app[STATE].find_spans(
        trace_id=query.get("trace_id"), name=query.get("name"), service=query.get("service")
    )
    return web.json_response({"spans": [span.to_json() for span in found]})


async def get_traces(request: web.Request) -> web.Response:
    state = request.app[STATE]
    traces = []
    for trace_id in state.trace_ids():
        spans = state.find_spans(trace_id=trace_id)
        traces.append(
            {
                "trace_id": trace_id,
                "spans": len(spans),
                "services": sorted({span.service for span in spans}),
                "summary": summarize(spans),
            }
        )
    return web.json_response({"traces": traces})


async def get_metrics(request: web.Request) -> web.Response:
    found = request.app[STATE].find_metrics(request.query.get("name"))
    return web.json_response({"metrics": [metric.to_json() for metric in found]})


async def get_logs(request: web.Request) -> web.Response:
    trace_id = request.query.get("trace_id")
    found = [log for log in request.app[STATE].logs if trace_id is None or log.trace_id == trace_id]
    return web.json_response({"logs": [log.to_json() for log in found]})


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


async def reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.reset()
    return web.json_response(state.stats())


def create_app(state: ReceiverState | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[STATE] = state or ReceiverState()
    app.router.add_post("/v1/{signal:traces|metrics|logs}", export)
    app.router.add_get("/_emulator/spans", get_spans)
    app.router.add_get("/_emulator/traces", get_traces)
    app.router.add_get("/_emulator/metrics", get_metrics)
    app.router.add_get("/_emulator/logs", get_logs)
    app.router.add_get("/_emulator/stats", get_stats)
    app.router.add_post("/_emulator/reset", reset)
    return app


async def start(state: ReceiverState | None = None, *, host: str = "127.0.0.1", port: int = 0) -> Running:
    return await serve(create_app(state), host=host, port=port)


def environment(endpoint: str, *, schedule_delay_ms: int = 200, metric_interval_ms: int = 1000) -> dict[str, str]:
    """What a process needs to export here with the SDK's OTLP/HTTP exporters, soon after each span ends."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": str(schedule_delay_ms),
        "OTEL_BLRP_SCHEDULE_DELAY": str(schedule_delay_ms),
        "OTEL_METRIC_EXPORT_INTERVAL": str(metric_interval_ms),
    }


# --- Reading a trace ----------------------------------------------------------------------------------


# The Azure SDK's client classes, by the group their calls are counted in.
_SDK_GROUPS = (
    (("Blob", "Container", "Queue", "Table", "Share", "Directory", "File", "DataLake"), "storage"),
    (("Credential", "Identity", "Msal"), "identity"),
)


def _sdk_group(span: SpanRecord, by_id: Mapping[str, SpanRecord]) -> str | None:
    """For a span the Azure SDK made (azure-core's own tracing, or its OpenTelemetry plugin): the
    group of the nearest SDK method span (``ContainerClient.upload_blob``) at or above it."""
    seen: set[str] = set()
    current: SpanRecord | None = span
    while current is not None and current.span_id not in seen and current.scope.startswith("azure"):
        seen.add(current.span_id)
        namespace = current.attributes.get("az.namespace")
        if isinstance(namespace, str) and namespace.startswith(STORAGE_NAMESPACE):
            return "storage"
        client, dot, _ = current.name.partition(".")
        if dot:
            return next((group for words, group in _SDK_GROUPS if any(w in client for w in words)), "azure")
        current = by_id.get(current.parent_span_id or "")
    if span.scope.startswith("azure"):
        return "http" if span.kind == "CLIENT" else "azure"
    return None


def auxiliary(span: SpanRecord, by_id: Mapping[str, SpanRecord]) -> str | None:
    """The group a supporting span is counted in (``storage``, ``identity``, ``http``, ...), or None
    for a span shown in the tree: a root, messaging, GenAI and the application's own spans."""
    if not span.parent_span_id:
        return None
    if "messaging.operation.name" in span.attributes or "gen_ai.operation.name" in span.attributes:
        return None
    if (group := _sdk_group(span, by_id)) is not None:
        return group
    if str(span.attributes.get("az.namespace", "")).startswith(STORAGE_NAMESPACE):
        return "storage"
    return "http" if span.kind == "CLIENT" else None


def summarize(spans: Sequence[SpanRecord]) -> str:
    """One trace in a line: ``send jobs > process jobs > chat gpt-5.4-mini (+3 storage)``.

    Spans shown are nested under their nearest shown ancestor (siblings in brackets, by start time);
    supporting calls (storage, other HTTP) are counted. A span whose parent did not arrive starts
    its own branch, separated by `` | ``.
    """
    by_id = {span.span_id: span for span in spans}
    groups: Counter[str] = Counter()
    shown: list[SpanRecord] = []
    for span in spans:
        group = auxiliary(span, by_id)
        if group is None:
            shown.append(span)
        else:
            groups[group] += 1
    shown_ids = {span.span_id for span in shown}
    children: dict[str | None, list[SpanRecord]] = {}
    for span in sorted(shown, key=lambda s: (s.start_ns, s.end_ns)):
        parent = by_id.get(span.parent_span_id or "")
        while parent is not None and parent.span_id not in shown_ids:
            parent = by_id.get(parent.parent_span_id or "")
        children.setdefault(parent.span_id if parent else None, []).append(span)

    def render(span: SpanRecord, depth: int = 0) -> str:
        below = children.get(span.span_id, [])
        if not below or depth > 32:
            return span.name
        inner = [render(child, depth + 1) for child in below]
        return f"{span.name} > {inner[0] if len(inner) == 1 else '[' + ', '.join(inner) + ']'}"

    text = " | ".join(render(root) for root in children.get(None, [])) or "(no spans)"
    if groups:
        text += " (" + ", ".join(f"+{count} {group}" for group, count in sorted(groups.items())) + ")"
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulators.otlp", description=__doc__.split("\n\n")[0])
    loopback_args(parser, default_port=DEFAULT_PORT)
    args = parser.parse_args(argv)

    def banner(running: Running) -> str:
        exports = "\n".join(f"export {k}={v}" for k, v in environment(running.url).items())
        return f"{exports}\n# received: curl {running.url}/_emulator/traces (spans, metrics, logs, stats)"

    run_forever(lambda: start(host=args.host, port=args.port), banner)


if __name__ == "__main__":
    main()
