"""The log levels the app sets for the libraries it uses, once, when the worker is imported.

Microsoft's Python worker forwards every logger to the Functions host at host.json's level, so
without this the Azure SDK's HTTP logging policy writes each storage and token request and
response at INFO (measured: 22 records for 5 jobs, plus one httpx2 line per model call) into
Application Insights, next to the one line per job the worker writes. The app cannot rely on a
host to quiet them: it does it itself.

Only loggers nobody has configured are changed (their level is NOTSET). A level set before the
app is imported is the operator's choice and stays: ``OPENAI_LOG=debug`` (the openai SDK sets its
logger from it), or ``logging.getLogger("azure").setLevel(logging.DEBUG)`` in a local harness.
"""

from __future__ import annotations

import logging

# Parents are enough: "azure" covers azure.core's http_logging_policy, azure.identity,
# azure.storage and azure.monitor.opentelemetry (the Application Insights exporter).
THIRD_PARTY_LOGGERS = ("azure", "msal", "openai", "httpx", "httpx2", "httpcore", "httpcore2", "urllib3")


def quiet_third_party_loggers(level: int = logging.WARNING) -> list[str]:
    """Set ``level`` on every unconfigured logger in ``THIRD_PARTY_LOGGERS``; return the names set."""
    quieted = []
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)
            quieted.append(name)
    return quieted
