"""Run an aiohttp app on loopback, embedded (tests, `make run`) or standalone (`python -m`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from emulators.signals import run_until_signalled

LOOPBACK = "127.0.0.1"
T = TypeVar("T")


@dataclass
class Running:
    """A started server: ``url`` to reach it, ``app`` to inspect its state, ``stop()`` to end it."""

    url: str
    app: web.Application
    runner: web.AppRunner

    async def stop(self) -> None:
        await self.runner.cleanup()


async def serve(app: web.Application, *, host: str = LOOPBACK, port: int = 0) -> Running:
    """Start ``app`` on ``host:port`` (0 picks a free port) and return once it accepts connections."""
    if host not in (LOOPBACK, "localhost", "::1"):
        raise ValueError(f"Local stand-ins listen on loopback only, not {host!r}.")
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # noqa: SLF001  # aiohttp keeps the bound socket there and offers no public way to it
    assert isinstance(server, asyncio.Server) and server.sockets  # started above
    bound = server.sockets[0].getsockname()[1]
    return Running(url=f"http://{host}:{bound}", app=app, runner=runner)


def loopback_args(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument("--host", default=LOOPBACK, help="loopback address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=default_port, help="port (0 = any free; default %(default)s)")


def run_forever(start: Callable[[], Awaitable[Running]], banner: Callable[[Running], str]) -> None:
    """Standalone mode: start, print how to reach it, stop cleanly on SIGINT/SIGTERM."""

    async def serve_until(stop: asyncio.Event) -> None:
        running = await start()
        print(banner(running), flush=True)
        await stop.wait()
        await running.stop()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C before the handlers are in place
        run_until_signalled(serve_until)


class ServerThread:
    """Run a stand-in on its own event loop in a daemon thread.

    Tests and ``make run`` use this so a stand-in keeps serving whatever loop (or none) the
    caller runs, as a separate service would.
    """

    def __init__(self, start: Callable[[], Coroutine[Any, Any, Running]], name: str) -> None:
        self._start = start
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self.running: Running | None = None

    def __enter__(self) -> Running:
        self._thread.start()
        self.running = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self.running

    def call(self, fn: Callable[[web.Application], T]) -> T:
        """Run ``fn(app)`` on the server's loop (state is only touched from there)."""
        assert self.running is not None

        async def run() -> T:
            assert self.running is not None
            return fn(self.running.app)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def __exit__(self, *exc: object) -> None:
        if self.running is not None:
            asyncio.run_coroutine_threadsafe(self.running.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
