"""Producer tests use the worker's fixtures (local host, settings)."""

from __future__ import annotations

from tests.worker_fixtures import jobs_for, keyless_settings, local_dev_settings, start_host

__all__ = ["jobs_for", "keyless_settings", "local_dev_settings", "start_host"]
