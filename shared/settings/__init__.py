"""Every app setting the worker reads, in one place.

Azure Functions exposes app settings (and `local.settings.json` ``Values`` locally) as
environment variables, so this package reads ``os.environ`` and no other module does: the others
take a ``Settings`` or one of its parts (``StorageConnection``, ``TelemetrySettings``, the identity's
``user_assigned_client_id``), each read from a mapping that defaults to ``environment()``. ``SETTINGS``
is the single list of names: the infra tests check that Bicep and ``local.settings.sample.json`` set
exactly these.

By concept: ``app`` holds ``SETTINGS``, ``StorageNames`` and ``Settings``; ``pool`` the deployments
(``PoolEntry``, ``AZURE_OPENAI_POOL``) and endpoints; ``runtime`` the storage connection, identity, proxy,
telemetry switches and host.json; ``local_file`` a local.settings.json's values; ``_read`` the parsing
they share. Import from ``shared.settings``: the names below are its public face.
"""

from shared.settings._read import environment
from shared.settings.app import (
    BATCH_MAX_REQUESTS_PER_FILE,
    BATCH_MAX_TOKENS_PER_FILE,
    BATCH_SERVICE_MAX_REQUESTS,
    DEFAULT_STAGING_CONTAINER,
    SETTINGS,
    BatchOnFailure,
    Settings,
    StorageNames,
    staging_container,
)
from shared.settings.local_file import apply_local_settings, overlaid, read_local_settings
from shared.settings.pool import PoolEntry, is_project_endpoint, token_scope, v1_base_url
from shared.settings.runtime import (
    AZURE_MONITOR_SETTING,
    CAPTURE_CONTENT,
    OTLP_ENDPOINT,
    PROXY_VARIABLES,
    StorageConnection,
    TelemetrySettings,
    host_json_path,
    max_dequeue_count,
    proxy_configured,
    user_assigned_client_id,
)

__all__ = [
    "AZURE_MONITOR_SETTING",
    "BATCH_MAX_REQUESTS_PER_FILE",
    "BATCH_MAX_TOKENS_PER_FILE",
    "BATCH_SERVICE_MAX_REQUESTS",
    "CAPTURE_CONTENT",
    "DEFAULT_STAGING_CONTAINER",
    "OTLP_ENDPOINT",
    "PROXY_VARIABLES",
    "SETTINGS",
    "BatchOnFailure",
    "PoolEntry",
    "Settings",
    "StorageConnection",
    "StorageNames",
    "TelemetrySettings",
    "apply_local_settings",
    "environment",
    "host_json_path",
    "is_project_endpoint",
    "max_dequeue_count",
    "overlaid",
    "proxy_configured",
    "read_local_settings",
    "staging_container",
    "token_scope",
    "user_assigned_client_id",
    "v1_base_url",
]
