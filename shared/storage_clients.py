"""The storage clients a tool outside the worker holds, closed with the credential made for them.

Used by both producer clients (``shared.producer``, ``shared.producer.aio``) and by
``shared.operations``. Cheap to import: ``shared.connections`` makes the worker's clients, and
imports the OpenAI SDK a producer need not install.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Self

from azure.core.credentials_async import AsyncTokenCredential
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient


@dataclass(frozen=True)
class StorageClients:
    """A queue and a blob service client of one account, and the credential made for them, if any."""

    queues: QueueServiceClient
    blobs: BlobServiceClient
    owned_credential: AsyncTokenCredential | None = None

    async def close(self) -> None:
        """Close both clients, then the credential made for them (never one the caller passed in)."""
        await self.queues.close()
        await self.blobs.close()
        if self.owned_credential is not None:
            await self.owned_credential.close()


class HoldsStorage:
    """An async context manager over its ``StorageClients``: they are closed when the block ends."""

    _storage: StorageClients

    async def __aenter__(self) -> Self:
        """Return the object itself; ``close()`` runs when the block ends."""
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close it (see ``close``)."""
        await self.close()

    async def close(self) -> None:
        """Close the storage clients and the credential made for them (never one passed in)."""
        await self._storage.close()
