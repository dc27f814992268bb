"""The credential and storage clients, for the worker and every tool beside it.

``create_credential`` is the process's one ``DefaultAzureCredential``; ``StorageEndpoints`` resolves a
Functions storage connection and makes its clients; ``StorageClients`` holds a pair of them with the
credential made for them. Used by ``shared.connections`` (the worker's runtime), both producer clients and
``shared.operations``. Imports neither the OpenAI SDK nor the Functions library: the producer package ships
this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import DefaultAzureCredential
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from shared.settings import StorageConnection, proxy_configured, user_assigned_client_id


def create_credential(env: Mapping[str, str] | None = None) -> DefaultAzureCredential:
    """The process's one credential. ``AZURE_CLIENT_ID`` picks a user-assigned identity."""
    client_id, _ = user_assigned_client_id(env)
    return DefaultAzureCredential(managed_identity_client_id=client_id)


class StorageEndpoints(StorageConnection):
    """A storage connection (``shared.settings.StorageConnection``) and the clients that reach it."""

    def queue_service(self, credential: AsyncTokenCredential) -> QueueServiceClient:
        if self.connection_string:
            return QueueServiceClient.from_connection_string(self.connection_string, **_transport_options())
        assert self.queue_url is not None
        return QueueServiceClient(self.queue_url, credential=credential, **_transport_options())

    def blob_service(self, credential: AsyncTokenCredential) -> BlobServiceClient:
        if self.connection_string:
            return BlobServiceClient.from_connection_string(self.connection_string, **_transport_options())
        assert self.blob_url is not None
        return BlobServiceClient(self.blob_url, credential=credential, **_transport_options())


def _transport_options() -> dict[str, Any]:
    """Read proxy settings from the environment only when there are some: with it on, the HTTP
    client looks up ~/.netrc and the proxy variables in a worker thread on every request
    (measured in bench/ at about half a millisecond of CPU per storage call)."""
    return {"use_env_settings": proxy_configured()}


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
