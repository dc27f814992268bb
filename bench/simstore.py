"""The simulation's shared store: documents with ETags and the blob service's conditional writes, in memory,
taking ``latency`` seconds an operation, failing a ``faults`` share of them, or all of them while ``down``."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.budget import Conflict


class StoreDown(Exception):
    """An injected storage failure (as an HTTP error or a dropped connection would be)."""


@dataclass
class MemoryStore:
    """``shared.budget.Store`` in memory: a write succeeds only if the document's ETag is still the one read."""

    clock: Callable[[], float]
    latency: float = 0.01
    faults: float = 0.0
    down: tuple[float, float] | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    documents: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    ops: int = 0
    conflicts: int = 0
    failed: int = 0
    version: int = 0

    async def _arrive(self) -> None:
        self.ops += 1
        await asyncio.sleep(self.latency / 2)
        now = self.clock()
        if (self.down is not None and self.down[0] <= now < self.down[1]) or self.rng.random() < self.faults:
            self.failed += 1
            raise StoreDown("injected storage failure")

    async def read(self, name: str) -> tuple[bytes, str] | None:
        await self._arrive()
        found = self.documents.get(name)
        await asyncio.sleep(self.latency / 2)
        return found

    async def write(self, name: str, data: bytes, etag: str | None) -> str:
        await self._arrive()
        current = self.documents.get(name)
        if (current[1] if current else None) != etag:
            self.conflicts += 1
            raise Conflict(name)
        self.version += 1
        self.documents[name] = (data, f'"{self.version}"')
        await asyncio.sleep(self.latency / 2)
        return f'"{self.version}"'
