"""Producer tests use the worker's fixtures (local host, settings) plus a storage stand-in that says 403."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiohttp import web

from emulators._server import Running, ServerThread, serve
from shared.constants import azurite_connection_string
from tests.worker_fixtures import jobs_for, keyless_settings, local_dev_settings, start_host

__all__ = ["forbidden_storage", "jobs_for", "keyless_settings", "local_dev_settings", "start_host"]


def _forbidden_app() -> web.Application:
    """Answers every storage call as Azure does when the caller lacks a data-plane role."""

    async def refuse(request: web.Request) -> web.Response:
        body = (
            '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationPermissionMismatch</Code>'
            "<Message>This request is not authorized to perform this operation using this permission.</Message>"
            "</Error>"
        )
        return web.Response(
            status=403,
            text=body,
            content_type="application/xml",
            headers={"x-ms-error-code": "AuthorizationPermissionMismatch", "x-ms-request-id": "test"},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    return app


@pytest.fixture(scope="session")
def forbidden_storage() -> Iterator[str]:
    """A connection string for a storage account that refuses everything with 403."""

    async def start() -> Running:
        return await serve(_forbidden_app())

    with ServerThread(start, "forbidden-storage") as running:
        url = f"{running.url}/devstoreaccount1"
        yield azurite_connection_string(url, url, url)
