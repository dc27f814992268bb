"""What the worker's process needs besides the app's own settings, each read the way its owner reads it: the
storage connection (as the Functions host resolves it), the user-assigned identity, the proxy variables, the
telemetry switches and host.json."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from shared.constants import DEVELOPMENT_STORAGE, STORAGE_CONNECTION, is_development_shorthand
from shared.errors import ConfigurationError
from shared.settings._read import environment, truthy


@dataclass
class StorageConnection:
    """Where the storage named by a Functions connection setting lives: a connection string (Azurite),
    or the service URLs of identity-based access (``<connection>__*``)."""

    connection_string: str | None = None
    queue_url: str | None = None
    blob_url: str | None = None

    @classmethod
    def from_settings(cls, connection: str = STORAGE_CONNECTION, env: Mapping[str, str] | None = None) -> Self:
        """Resolve a connection the way the Functions host does: a connection string, or ``__`` settings."""
        env = environment() if env is None else env
        if value := env.get(connection, "").strip():
            if is_development_shorthand(value):
                value = DEVELOPMENT_STORAGE
            return cls(connection_string=value)
        account = env.get(f"{connection}__accountName", "").strip()
        queue = env.get(f"{connection}__queueServiceUri", "").strip() or (
            f"https://{account}.queue.core.windows.net" if account else ""
        )
        blob = env.get(f"{connection}__blobServiceUri", "").strip() or (
            f"https://{account}.blob.core.windows.net" if account else ""
        )
        if not (queue and blob):
            raise ConfigurationError(
                f"Storage connection '{connection}' is not configured: set {connection}__accountName "
                f"(or __queueServiceUri and __blobServiceUri) for identity-based access, or {connection} "
                "to a connection string for Azurite locally."
            )
        return cls(queue_url=queue, blob_url=blob)


def user_assigned_client_id(env: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """The user-assigned identity's client id the credential is given, and the setting it came from
    (``AZURE_CLIENT_ID``, else the storage connection's ``__clientId``); (None, "") for none."""
    env = environment() if env is None else env
    for name in ("AZURE_CLIENT_ID", f"{STORAGE_CONNECTION}__clientId"):
        if value := env.get(name, "").strip():
            return value, name
    return None, ""


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def proxy_configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether any proxy variable is set (the HTTP clients read the environment only then)."""
    env = environment() if env is None else env
    return any(env.get(name) for name in PROXY_VARIABLES)


AZURE_MONITOR_SETTING = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


@dataclass(frozen=True)
class TelemetrySettings:
    """The telemetry switches (``shared.telemetry`` says what each mode does)."""

    azure_monitor: bool = False  # PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: Microsoft's worker exports
    traces_url: str = ""  # OTLP/HTTP traces endpoint, from the base URL or the per-signal setting
    metrics_url: str = ""
    service_name: str = "keyless-openai-worker"
    capture_content: bool = False  # OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TelemetrySettings:
        """The OTEL_* and Azure Monitor switches; never raises (telemetry must not stop the worker)."""
        env = environment() if env is None else env
        base = env.get(OTLP_ENDPOINT, "").strip().rstrip("/")
        return cls(
            azure_monitor=truthy(env.get(AZURE_MONITOR_SETTING)),
            traces_url=env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
            or (f"{base}/v1/traces" if base else ""),
            metrics_url=env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip()
            or (f"{base}/v1/metrics" if base else ""),
            service_name=env.get("OTEL_SERVICE_NAME", "").strip() or cls.service_name,
            capture_content=truthy(env.get(CAPTURE_CONTENT)),
        )


def host_json_path() -> Path:
    """The app's host.json: in the script root the Functions host names (``AzureWebJobsScriptRoot``,
    set in Azure and by Core Tools), else beside the ``shared`` package (the app root)."""
    root = environment().get("AzureWebJobsScriptRoot") or Path(__file__).resolve().parents[2]
    return Path(root) / "host.json"


@functools.cache
def max_dequeue_count(host_json: Path | None = None) -> int:
    """``extensions.queues.maxDequeueCount`` from host.json: the attempt on which the host poisons."""
    try:
        queues = json.loads((host_json or host_json_path()).read_text())["extensions"]["queues"]
    except (OSError, KeyError, ValueError):
        return 5  # the queue extension's default
    return int(queues.get("maxDequeueCount", 5))
