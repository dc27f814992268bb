"""The local queue host, counting every Azure Storage request its process makes, the worker's apart from the host's.

Run: ``python -m bench.counted_host --storage-counts FILE [functions_host arguments]``. Every request the
storage SDKs send goes through azure-core's aiohttp transport; this wraps its ``send`` (each attempt of a
retried call is a request, as Azurite sees it) and counts the requests to the storage endpoints the settings
name (not the token requests to the identity endpoint). A request is the **worker's** when the code that made
it runs inside the app (``function_app`` or ``shared.*`` on the call stack, including tasks the app started:
a task's stack starts at its own coroutine), else the **host's** (its queue polling, and the delete, visibility
update or poison copy after an invocation). Counts are bucketed by tenth of a second, so the bench can keep
only those within a run, and written as JSON when the host stops (SIGTERM lets running invocations finish).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.core.pipeline.transport import AioHttpTransport

import function_app  # noqa: F401  # imported first, as bench.profiled_host does; index_app finds it in sys.modules
from bench.storage_ops import BUCKET_S
from emulators import functions_host

APP_MODULES = ("function_app", "shared.")
SERVICES = ("blob", "queue", "table")


def storage_hosts(env: Mapping[str, str]) -> dict[str, str]:
    """netloc -> service (blob/queue/table) of the storage the settings name: identity-based service URIs
    (``<connection>__<service>ServiceUri``) or a connection string's ``<Service>Endpoint``."""
    hosts: dict[str, str] = {}
    for name, value in env.items():
        for service in SERVICES:
            if name.lower().endswith(f"__{service}serviceuri"):
                hosts[urlsplit(value).netloc] = service
        if "EndpointsProtocol=" in value or "Endpoint=" in value:
            for part in value.split(";"):
                key, _, url = part.partition("=")
                service = key.strip().lower().removesuffix("endpoint")
                if service in SERVICES and url:
                    hosts[urlsplit(url).netloc] = service
    return hosts


def operation(service: str, method: str, url: str) -> str:
    """A request's kind: service, method and what it names (``queue POST messages``, ``blob PUT blob``),
    with its ``comp`` (``blob GET container?comp=list``)."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if service == "queue":
        shape = {1: "account", 2: "queue", 3: "messages"}.get(len(path), "message")
    elif service == "blob":
        shape = {1: "account", 2: "container"}.get(len(path), "blob")
    else:
        shape = "table" if len(path) <= 2 else "entity"
    comp = parse_qs(parts.query).get("comp")
    return f"{service} {method} {shape}" + (f"?comp={comp[0]}" if comp else "")


def made_by_app() -> bool:
    """Is app code on the current call stack (the transport's caller chain, up to its task's first coroutine)?"""
    frame = inspect.currentframe()
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if name == APP_MODULES[0] or name.startswith(APP_MODULES[1]):
            return True
        frame = frame.f_back
    return False


class StorageCounter:
    """Requests per (tenth of a second, worker or host, operation)."""

    def __init__(self, hosts: dict[str, str], clock: Callable[[], float] = time.time) -> None:
        self.hosts = hosts
        self.clock = clock
        self.counts: Counter[tuple[float, str, str]] = Counter()

    def record(self, method: str, url: str, by_app: bool) -> None:
        service = self.hosts.get(urlsplit(url).netloc)
        if service is None:
            return  # not storage (the managed-identity endpoint's token requests)
        bucket = round(self.clock() // BUCKET_S * BUCKET_S, 1)
        self.counts[(bucket, "worker" if by_app else "host", operation(service, method, url))] += 1

    def install(self) -> None:
        """Wrap the aiohttp transport's send, for every storage client this process makes from now on."""
        send = AioHttpTransport.send

        async def counted_send(transport: AioHttpTransport, request: Any, **kwargs: Any) -> Any:
            self.record(str(request.method), str(request.url), made_by_app())
            return await send(transport, request, **kwargs)

        AioHttpTransport.send = counted_send

    def to_json(self) -> list[list[Any]]:
        return [[t, who, op, n] for (t, who, op), n in sorted(self.counts.items())]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.counted_host", add_help=False)
    parser.add_argument("--storage-counts", type=Path, required=True)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    counter = StorageCounter(storage_hosts(os.environ))
    counter.install()
    try:
        functions_host.main(rest)
    finally:
        args.storage_counts.write_text(json.dumps(counter.to_json()))


if __name__ == "__main__":
    main()
