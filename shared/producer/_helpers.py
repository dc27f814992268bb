"""What the blocking and async ``JobsClient`` share: their constructors, how they connect, the checks.

Private to ``shared.producer``, beside the ``aio`` twin as the Azure SDK keeps its ``_*_helpers``.
``ClientBase`` holds the three public constructors once, with their options and defaults; each twin
says in ``_connect`` what it does with them (the async client builds the storage clients, the
blocking one has its private loop build an async client). A ``Connect`` is how the storage clients
are made, decided up front and run later, on the loop that will use them.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Mapping
from typing import Any, Generic, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

from azure.core.credentials_async import AsyncTokenCredential
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from shared.constants import (
    DEFAULT_JOBS_QUEUE,
    DEFAULT_PAYLOADS_CONTAINER,
    DEFAULT_RESULTS_CONTAINER,
    NAME_RULE,
    is_valid_name,
)
from shared.errors import ConfigurationError, InvalidJobError
from shared.jobs import JOB_ID_PATTERN
from shared.settings import StorageNames
from shared.storage_clients import StorageClients, StorageEndpoints, create_credential

# Payloads go up in pieces of at most 1 MiB: aiohttp warns (ResourceWarning) that a bigger single
# bytes body can stall the event loop, and a payload is often just over that size.
BLOB_OPTIONS: dict[str, Any] = {"max_single_put_size": 1024 * 1024, "max_block_size": 1024 * 1024}

C = TypeVar("C")  # the credential a twin takes: async only, or (the blocking one) either kind


# Makes the storage clients from the caller's credential, as the event loop that uses them sees it.
Connect = Callable[[AsyncTokenCredential | None], StorageClients]


def check_name(name: str, setting: str) -> str:
    if not is_valid_name(name):
        raise ConfigurationError(f"{setting} is {name!r}: queue and container names are {NAME_RULE}.")
    return name


def check_id(job_id: str) -> str:
    # Ids become blob names: refuse anything outside the contract (no '/', no '..').
    if not isinstance(job_id, str) or not re.fullmatch(JOB_ID_PATTERN, job_id):
        raise InvalidJobError(
            f"{job_id!r} is not a job id: ids are 1-128 characters from A-Z a-z 0-9 _ -", field="id", code="invalid_id"
        )
    return job_id


def blob_url_for(queue_account_url: str) -> str:
    """``https://acct.queue.core.windows.net`` -> ``https://acct.blob.core.windows.net``."""
    parts = urlsplit(queue_account_url)
    host = parts.hostname or ""
    labels = host.split(".")
    if len(labels) < 3 or labels[1] != "queue":
        raise ValueError(
            f"cannot derive the blob endpoint from {queue_account_url!r}: pass blob_account_url "
            "(e.g. https://<account>.blob.core.windows.net)"
        )
    netloc = parts.netloc.replace(host, ".".join([labels[0], "blob", *labels[2:]]), 1)
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def account_connect(queue_url: str, blob_url: str, client_kwargs: Mapping[str, Any]) -> Connect:
    """Account URLs; without a credential, a ``DefaultAzureCredential`` the client owns."""

    def connect(credential: AsyncTokenCredential | None) -> StorageClients:
        owned = None
        if credential is None:
            from azure.identity.aio import DefaultAzureCredential

            credential = owned = DefaultAzureCredential()
        return StorageClients(
            QueueServiceClient(queue_url, credential=credential, **client_kwargs),
            BlobServiceClient(blob_url, credential=credential, **{**BLOB_OPTIONS, **client_kwargs}),
            owned,
        )

    return connect


def connection_string_connect(connection_string: str, client_kwargs: Mapping[str, Any]) -> Connect:
    """A storage connection string (Azurite): any credential given is not used."""

    def connect(credential: AsyncTokenCredential | None) -> StorageClients:
        return StorageClients(
            QueueServiceClient.from_connection_string(connection_string, **client_kwargs),
            BlobServiceClient.from_connection_string(connection_string, **{**BLOB_OPTIONS, **client_kwargs}),
        )

    return connect


def settings_connect(endpoints: StorageEndpoints, env: Mapping[str, str] | None) -> Connect:
    """The worker's storage settings; without a credential, the worker's own (owned by the client)."""
    if endpoints.connection_string:  # Azurite (StorageEndpoints expands UseDevelopmentStorage=true)
        return connection_string_connect(endpoints.connection_string, {})

    def connect(credential: AsyncTokenCredential | None) -> StorageClients:
        owned = None
        if credential is None:
            credential = owned = create_credential(env)
        assert endpoints.blob_url is not None  # StorageEndpoints sets both URLs without a connection string
        return StorageClients(
            endpoints.queue_service(credential),
            BlobServiceClient(endpoints.blob_url, credential=credential, **BLOB_OPTIONS),
            owned,
        )

    return connect


class ClientBase(abc.ABC, Generic[C]):
    """The twins' constructors: account URLs and a credential, a connection string, or the worker's settings.

    ``queue_name``, ``results_container`` and ``payloads_container`` are the names in use (the
    worker's ``JOBS_QUEUE``, ``RESULTS_CONTAINER`` and ``PAYLOADS_CONTAINER``).
    """

    queue_name: str
    results_container: str
    payloads_container: str

    def __init__(
        self,
        queue_account_url: str,
        credential: C | None = None,
        *,
        blob_account_url: str | None = None,
        queue: str = DEFAULT_JOBS_QUEUE,
        results_container: str = DEFAULT_RESULTS_CONTAINER,
        payloads_container: str = DEFAULT_PAYLOADS_CONTAINER,
        **client_kwargs: Any,
    ) -> None:
        """Connect to the queue and blob services of one storage account with an Entra ID credential.

        ``queue_account_url`` is ``https://<account>.queue.core.windows.net``; ``blob_account_url``
        is derived from it for public-cloud URLs (pass it for any other endpoint). ``credential`` is
        any async TokenCredential (the blocking client also takes a blocking one, such as
        ``azure.identity.DefaultAzureCredential``); by default an async ``DefaultAzureCredential``
        owned (and closed) by this client. A credential passed in stays the caller's to close.
        ``queue``, ``results_container`` and ``payloads_container`` must match the worker's
        ``JOBS_QUEUE``, ``RESULTS_CONTAINER`` and ``PAYLOADS_CONTAINER``; ``client_kwargs`` go to
        both storage clients. Nothing is sent yet, so no role is needed here.

        Raises ConfigurationError for a name storage would refuse, ValueError when the blob URL
        cannot be derived; the blocking client raises RuntimeError inside a running event loop.
        """
        blob_url = blob_account_url or blob_url_for(queue_account_url)
        names = _checked_names(queue, results_container, payloads_container)
        self._setup(names, credential, account_connect(queue_account_url, blob_url, client_kwargs))

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        *,
        queue: str = DEFAULT_JOBS_QUEUE,
        results_container: str = DEFAULT_RESULTS_CONTAINER,
        payloads_container: str = DEFAULT_PAYLOADS_CONTAINER,
        **client_kwargs: Any,
    ) -> Self:
        """Connect with a storage connection string: for Azurite only (the Azure account allows no keys).

        ``connection_string`` is ``UseDevelopmentStorage=true`` expanded, or Azurite's full string;
        the keyword options are the constructor's. Raises ConfigurationError for a bad name and
        ValueError for a malformed connection string; the blocking client raises RuntimeError
        inside a running event loop.
        """
        names = _checked_names(queue, results_container, payloads_container)
        return cls._opened(names, None, connection_string_connect(connection_string, client_kwargs))

    @classmethod
    def from_settings(cls, env: Mapping[str, str] | None = None, *, credential: C | None = None) -> Self:
        """Connect with the worker's own app settings: ``AzureWebJobsStorage`` (connection string) or its
        identity-based ``AzureWebJobsStorage__*`` settings, ``JOBS_QUEUE``, ``RESULTS_CONTAINER``,
        ``PAYLOADS_CONTAINER``.

        ``env`` defaults to the process environment; raises ConfigurationError naming a missing/bad setting.
        Without ``credential``, the worker's credential (DefaultAzureCredential, ``AZURE_CLIENT_ID``
        for a user-assigned identity) is created and owned by the client. Nothing is sent yet, so
        no role is needed here. The blocking client also takes a blocking credential, and raises
        RuntimeError inside a running event loop.
        """
        names = StorageNames.from_env(env)  # checked there, each error naming its setting
        return cls._opened(names, credential, settings_connect(StorageEndpoints.from_settings(env=env), env))

    @classmethod
    def _opened(cls, names: StorageNames, credential: C | None, connect: Connect) -> Self:
        client = cls.__new__(cls)
        client._setup(names, credential, connect)
        return client

    def _setup(self, names: StorageNames, credential: C | None, connect: Connect) -> None:
        self.queue_name = names.jobs_queue
        self.results_container = names.results_container
        self.payloads_container = names.payloads_container
        self._connect(names, credential, connect)

    @abc.abstractmethod
    def _connect(self, names: StorageNames, credential: C | None, connect: Connect) -> None:
        """Make the client usable: ``connect`` makes its storage clients, from ``credential``."""


def _checked_names(queue: str, results_container: str, payloads_container: str) -> StorageNames:
    return StorageNames(
        jobs_queue=check_name(queue, "queue"),
        results_container=check_name(results_container, "results_container"),
        payloads_container=check_name(payloads_container, "payloads_container"),
    )
