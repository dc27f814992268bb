"""Enqueue jobs from other services and read their results, keyless: the async ``JobsClient``.

``JobsClient`` is the producer side of the contract in ``shared.jobs``: it validates a job with the
same models the worker uses before anything is sent, gives it an id, sends it as plain JSON text
(host.json ``messageEncoding: none``), stores jobs too big for a queue message as a payload blob
(claim check), and reads ``<results container>/<id>.json``. It authenticates with Entra ID only:
``DefaultAzureCredential`` unless you pass a credential (or, for Azurite, a connection string).

It does not import ``azure.functions`` or ``openai``: a producer service needs only the storage
and identity SDKs, pydantic and ``opentelemetry-api``. Its blocking twin, with the same methods, is
``shared.producer.JobsClient``.

Tracing (OpenTelemetry API only): each job is sent in its own PRODUCER span ``send {queue}``
(messaging conventions, ``messaging.system`` ``azure.storage.queue``), and the span's W3C context
goes into the job's ``traceparent``/``tracestate``, where the worker continues the trace. A job
that already carries a ``traceparent`` keeps it. With no SDK configured the span is a no-op with
an invalid context, and the job is sent exactly as validated.

Roles the identity needs (data plane, on the storage account or narrower):

- *Storage Queue Data Message Sender* on the jobs queue, to submit;
- *Storage Blob Data Reader* on the results container, to read results;
- *Storage Blob Data Contributor* on the payloads container, only for jobs over the claim-check size;
- *Storage Queue Data Message Processor* on a reply queue, to follow it with ``notices``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, NoReturn, Self
from urllib.parse import urlsplit, urlunsplit

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient
from pydantic import ValidationError

from shared.constants import (
    BLOB_CONTRIBUTOR_ROLE,
    BLOB_READER_ROLE,
    DEFAULT_JOBS_QUEUE,
    DEFAULT_PAYLOADS_CONTAINER,
    DEFAULT_RESULTS_CONTAINER,
    NAME_RULE,
    QUEUE_PROCESSOR_ROLE,
    QUEUE_SENDER_ROLE,
    STORAGE_PERMISSION_CODES,
    is_valid_name,
)
from shared.errors import (
    ConfigurationError,
    MissingPermissionError,
    ProducerError,
    QueueNotFoundError,
    WaitTimeoutError,
)
from shared.jobs import CLAIM_CHECK_BYTES, JobReference, Lane, Notice, Result
from shared.producer import _tracing
from shared.producer._jobs import JobInput, SubmitProgress, _check_id, _prepare, _Prepared, new_job_id, prepare_job

__all__ = ["JobInput", "JobsClient", "SubmitProgress", "new_job_id", "prepare_job"]

logger = logging.getLogger(__name__)


# Payloads go up in pieces of at most 1 MiB: aiohttp warns (ResourceWarning) that a bigger single
# bytes body can stall the event loop, and a payload is often just over that size.
_BLOB_OPTIONS: dict[str, Any] = {"max_single_put_size": 1024 * 1024, "max_block_size": 1024 * 1024}


def _check_name(name: str, setting: str) -> str:
    if not is_valid_name(name):
        raise ConfigurationError(f"{setting} is {name!r}: queue and container names are {NAME_RULE}.")
    return name


def _blob_url_for(queue_account_url: str) -> str:
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


class JobsClient:
    """Submit jobs to the worker's queue and read their results (async).

    Build it with the constructor (account URLs and a credential), ``from_settings`` (the worker's
    own app settings) or ``from_connection_string`` (Azurite). Use ``async with`` or call
    ``close()``. Each method's docstring names the data-plane role it needs; a 403 for lack of it
    raises ``MissingPermissionError`` naming that role and the resource.
    """

    def __init__(
        self,
        queue_account_url: str,
        credential: AsyncTokenCredential | None = None,
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
        any async TokenCredential; by default an async ``DefaultAzureCredential`` owned (and closed)
        by this client. ``queue``, ``results_container`` and ``payloads_container`` must match the
        worker's ``JOBS_QUEUE``, ``RESULTS_CONTAINER`` and ``PAYLOADS_CONTAINER``; ``client_kwargs``
        go to both storage clients. Nothing is sent yet, so no role is needed here.

        Raises ConfigurationError for a name storage would refuse, ValueError when the blob URL
        cannot be derived.
        """
        owned = None
        if credential is None:
            from azure.identity.aio import DefaultAzureCredential

            credential = owned = DefaultAzureCredential()
        blob_url = blob_account_url or _blob_url_for(queue_account_url)
        self._setup(
            QueueServiceClient(queue_account_url, credential=credential, **client_kwargs),
            BlobServiceClient(blob_url, credential=credential, **{**_BLOB_OPTIONS, **client_kwargs}),
            queue=queue,
            results_container=results_container,
            payloads_container=payloads_container,
            owned_credential=owned,
        )

    def _setup(
        self,
        queues: QueueServiceClient,
        blobs: BlobServiceClient,
        *,
        queue: str,
        results_container: str,
        payloads_container: str,
        owned_credential: AsyncTokenCredential | None,
    ) -> None:
        self._queues = queues
        self._blobs = blobs
        self._owned_credential = owned_credential
        self.queue_name = _check_name(queue, "queue")
        self.results_container = _check_name(results_container, "results_container")
        self.payloads_container = _check_name(payloads_container, "payloads_container")
        self._jobs = queues.get_queue_client(self.queue_name)
        self._results = blobs.get_container_client(self.results_container)
        self._payloads = blobs.get_container_client(self.payloads_container)
        self._results_container_seen = False

    @classmethod
    def _from_services(
        cls,
        queues: QueueServiceClient,
        blobs: BlobServiceClient,
        *,
        queue: str,
        results_container: str,
        payloads_container: str,
        owned_credential: AsyncTokenCredential | None = None,
    ) -> Self:
        self = cls.__new__(cls)
        self._setup(
            queues,
            blobs,
            queue=queue,
            results_container=results_container,
            payloads_container=payloads_container,
            owned_credential=owned_credential,
        )
        return self

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
        ValueError for a malformed connection string.
        """
        return cls._from_services(
            QueueServiceClient.from_connection_string(connection_string, **client_kwargs),
            BlobServiceClient.from_connection_string(connection_string, **{**_BLOB_OPTIONS, **client_kwargs}),
            queue=queue,
            results_container=results_container,
            payloads_container=payloads_container,
        )

    @classmethod
    def from_settings(
        cls, env: Mapping[str, str] | None = None, *, credential: AsyncTokenCredential | None = None
    ) -> Self:
        """The worker's own settings: ``AzureWebJobsStorage`` (connection string) or its identity-based
        ``AzureWebJobsStorage__*`` settings, ``JOBS_QUEUE``, ``RESULTS_CONTAINER``, ``PAYLOADS_CONTAINER``.

        ``env`` defaults to ``os.environ``; raises ConfigurationError naming a missing/bad setting.
        Without ``credential``, the worker's credential (DefaultAzureCredential, ``AZURE_CLIENT_ID``
        for a user-assigned identity) is created and owned by the client. Nothing is sent yet, so
        no role is needed here.
        """
        # Imported here: shared.connections also builds the worker's OpenAI client, which a
        # producer that passes URLs itself need not install.
        from shared.connections import StorageEndpoints, create_credential
        from shared.settings import StorageNames

        env = os.environ if env is None else env
        configured = StorageNames.from_env(env)
        names = {
            "queue": configured.jobs_queue,
            "results_container": configured.results_container,
            "payloads_container": configured.payloads_container,
        }
        endpoints = StorageEndpoints.from_settings(env=env)
        if endpoints.connection_string:  # Azurite (StorageEndpoints expands UseDevelopmentStorage=true)
            return cls.from_connection_string(endpoints.connection_string, **names)
        owned = None
        if credential is None:
            credential = owned = create_credential(env)
        assert endpoints.blob_url is not None  # StorageEndpoints sets both URLs without a connection string
        return cls._from_services(
            endpoints.queue_service(credential),
            BlobServiceClient(endpoints.blob_url, credential=credential, **_BLOB_OPTIONS),
            owned_credential=owned,
            **names,
        )

    @property
    def queue_url(self) -> str:
        """URL of the jobs queue this client sends to (shown in errors; no request is made)."""
        return str(self._jobs.url)

    async def __aenter__(self) -> Self:
        """Return the client itself; ``close()`` runs when the block ends."""
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the client (see ``close``)."""
        await self.close()

    async def close(self) -> None:
        """Close the storage clients and the credential this client created (never one passed in)."""
        await self._queues.close()
        await self._blobs.close()
        if self._owned_credential is not None:
            await self._owned_credential.close()

    # ---- sending ----

    async def submit(self, job: JobInput, *, lane: Lane | None = None) -> str:
        """Validate and enqueue one job; return its id.

        ``job`` is a ``shared.jobs.Job`` or a dict in the same shape. It is checked with the worker's
        own parser first, so a job that would fail validation raises InvalidJobError (naming the
        field) and nothing is sent. A job without an ``id`` gets a new one (uuid4 hex): the worker
        stores the result as ``<id>.json``, so the id is how you find it (``get_result``/``wait``), and
        it makes a resubmission harmless (the worker skips a job whose result exists). A job over
        the claim-check size is stored in the payloads container and a small reference is enqueued.
        With an OpenTelemetry SDK configured, the send is a PRODUCER span ``send {queue}`` (a child
        of the current span, or of the job's own ``traceparent`` if it has one) whose context goes
        into the job's ``traceparent``/``tracestate`` unless the job already has a ``traceparent``.

        Needs *Storage Queue Data Message Sender* on the jobs queue, and *Storage Blob Data
        Contributor* on the payloads container for a claim-check job. Raises InvalidJobError,
        QueueNotFoundError when the queue does not exist, MissingPermissionError on a 403, and the
        storage SDK's HttpResponseError for any other storage failure.

        ``lane="batch"`` sends a job that names no lane through the batch lane (Azure OpenAI Global
        Batch: half the price, answered within 24 hours, the same result); a job naming the other lane
        raises InvalidJobError (``lane_conflict``). The job's own ``"lane"`` field does the same.
        """
        prepared = _prepare(job, lane=lane)
        await self._send(prepared)
        return prepared.id

    async def submit_many(
        self,
        jobs: Iterable[JobInput],
        *,
        concurrency: int = 16,
        progress: Callable[[SubmitProgress], None] | None = None,
        lane: Lane | None = None,
    ) -> list[str]:
        """Validate every job, then send them with at most ``concurrency`` sends in flight.

        Returns the ids in input order. All jobs are validated before the first is sent, so one
        invalid job (InvalidJobError with ``index``) means nothing is sent. ``progress`` is called
        after each job is on the queue; if a send fails, the error is raised once the sends in
        flight settle, and exactly the jobs reported to ``progress`` were sent. Each job is its
        own queue message and gets its own ``send {queue}`` span, as with ``submit``.

        ``lane`` is ``submit``'s, for every job. Needs the roles of ``submit`` and raises its errors;
        ValueError for ``concurrency`` below 1.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        prepared = [_prepare(job, index=index, lane=lane) for index, job in enumerate(jobs)]
        total = len(prepared)
        pending = iter(prepared)  # shared by the senders: each takes the next job
        done = 0
        began = time.monotonic()

        failures: list[Exception] = []

        async def sender() -> None:
            nonlocal done
            for item in pending:
                if failures:
                    return  # stop taking new jobs; sends already in flight still finish
                try:
                    await self._send(item)
                    done += 1
                    if progress is not None:
                        progress(SubmitProgress(item.id, done, total, time.monotonic() - began))
                except Exception as exc:
                    failures.append(exc)
                    return

        # Not a TaskGroup: it would cancel sends in flight, leaving it unknown whether they landed.
        await asyncio.gather(*(sender() for _ in range(min(concurrency, total))))
        if failures:
            raise failures[0]
        return [item.id for item in prepared]

    async def _send(self, prepared: _Prepared) -> None:
        # One PRODUCER span per job, its W3C context in the job unless the caller set one (see _tracing).
        with _tracing.send_span(self.queue_name, self.queue_url, prepared.data) as sending:
            text = sending.stamp(prepared.data, prepared.text)
            if len(text.encode()) > CLAIM_CHECK_BYTES:
                # Claim check: store the job first, then enqueue a reference the worker resolves.
                # A crash in between leaves only an orphan blob (the lifecycle rule removes it).
                await self._upload_payload(f"{prepared.id}.json", text.encode())
                text = JobReference.for_job(prepared.id).model_dump_json()
            try:
                sent = await self._jobs.send_message(text)
            except HttpResponseError as exc:
                if getattr(exc, "error_code", None) == "QueueNotFound":
                    raise QueueNotFoundError(self.queue_name, self.queue_url) from exc
                _raise_storage_error(exc, f"sending to queue {self.queue_name}", QUEUE_SENDER_ROLE, self.queue_url)
            sending.sent(sent.id)

    async def _upload_payload(self, name: str, data: bytes) -> None:
        settings = ContentSettings(content_type="application/json")
        for attempt in (1, 2):
            try:
                await self._payloads.upload_blob(name, data, overwrite=True, content_settings=settings)
                return
            except ResourceNotFoundError as exc:
                # No container yet: infra creates it in Azure; locally (Azurite) make it once.
                if attempt == 2 or getattr(exc, "error_code", None) != "ContainerNotFound":
                    raise
                try:
                    await self._payloads.create_container()
                except ResourceExistsError:
                    pass
                except HttpResponseError as create_error:
                    raise ConfigurationError(
                        f"payloads container {self._payloads.url} does not exist and could not be created "
                        f"({create_error.status_code}): deploy the infra or set PAYLOADS_CONTAINER to the worker's"
                    ) from create_error
            except HttpResponseError as exc:
                _raise_storage_error(exc, f"uploading payload {name}", BLOB_CONTRIBUTOR_ROLE, str(self._payloads.url))

    # ---- results ----

    async def get_result(self, job_id: str) -> Result | None:
        """Return the job's stored result, or None if there is none yet.

        Needs *Storage Blob Data Reader* on the results container. Raises InvalidJobError for an id
        outside the contract, MissingPermissionError on a 403, ProducerError for a blob that is not a
        result, and the storage SDK's HttpResponseError for any other storage failure.
        """
        name = f"{_check_id(job_id)}.json"
        try:
            data = await (await self._results.download_blob(name)).readall()
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) != "ContainerNotFound":
                self._results_container_seen = True
            return None  # the worker creates the container with its first result
        except HttpResponseError as exc:
            _raise_storage_error(exc, f"reading result {name}", BLOB_READER_ROLE, str(self._results.url))
        self._results_container_seen = True
        try:
            return Result.model_validate_json(data)
        except ValidationError as exc:
            raise ProducerError(
                f"{self._results.url}/{name} is not a result this client understands ({exc.error_count()} "
                "problem(s)); is RESULTS_CONTAINER shared with something else?"
            ) from exc

    async def wait(
        self,
        ids: Iterable[str],
        timeout: float = 300.0,
        *,
        poll_interval: float = 0.5,
        max_interval: float = 5.0,
        concurrency: int = 16,
    ) -> dict[str, Result]:
        """Poll until every job has a result; return them keyed by id, in the order given.

        Polls the missing ones with exponential backoff (``poll_interval`` doubling up to
        ``max_interval``, with jitter), at most ``concurrency`` reads at a time. Raises
        WaitTimeoutError listing the ids still missing after ``timeout`` seconds (its ``results``
        holds those that arrived), and whatever ``get_result`` raises, whose role it needs
        (*Storage Blob Data Reader* on the results container).
        """
        order = [_check_id(job_id) for job_id in dict.fromkeys(ids)]
        found: dict[str, Result] = {}
        deadline = time.monotonic() + timeout
        delay = poll_interval
        limit = asyncio.Semaphore(concurrency)

        async def fetch(job_id: str) -> tuple[str, Result | None]:
            async with limit:
                return job_id, await self.get_result(job_id)

        while True:
            missing = [job_id for job_id in order if job_id not in found]
            for job_id, result in await asyncio.gather(*(fetch(job_id) for job_id in missing)):
                if result is not None:
                    found[job_id] = result
            missing = [job_id for job_id in order if job_id not in found]
            if not missing:
                return {job_id: found[job_id] for job_id in order}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                hint = (
                    ""
                    if self._results_container_seen
                    else f" (container '{self.results_container}' does not exist yet: no job has finished, "
                    "or RESULTS_CONTAINER differs from the worker's)"
                )
                raise WaitTimeoutError(missing, timeout, results=dict(found), hint=hint)
            await asyncio.sleep(min(delay * random.uniform(0.8, 1.2), remaining))
            delay = min(delay * 2, max_interval)

    async def notices(
        self,
        reply_queue: str,
        *,
        max_notices: int | None = None,
        once: bool = False,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        max_interval: float = 5.0,
    ) -> AsyncGenerator[Notice, None]:
        """Follow a reply queue (a job's ``reply_to``): yield each notice, deleting it once the
        caller asks for the next one (a notice the caller did not get past comes back later).

        Stops after ``max_notices``, when the queue is empty with ``once``, or after ``timeout``
        seconds without reaching ``max_notices``; an empty queue is polled with backoff from
        ``poll_interval`` up to ``max_interval``. A message that is not a notice is logged and left.

        Needs *Storage Queue Data Message Processor* on the reply queue. Raises ConfigurationError
        for a bad queue name, QueueNotFoundError when it does not exist, MissingPermissionError on a
        403, and the storage SDK's HttpResponseError for any other storage failure.
        """
        queue = self._queues.get_queue_client(_check_name(reply_queue, "reply queue"))
        url = str(queue.url)
        seen = 0
        delay = poll_interval
        deadline = None if timeout is None else time.monotonic() + timeout
        while max_notices is None or seen < max_notices:
            try:
                messages = [m async for m in queue.receive_messages(messages_per_page=32, max_messages=32)]
            except HttpResponseError as exc:
                if getattr(exc, "error_code", None) == "QueueNotFound":
                    raise QueueNotFoundError(reply_queue, url) from exc
                _raise_storage_error(exc, f"receiving from {reply_queue}", QUEUE_PROCESSOR_ROLE, url)
            for message in messages:
                try:
                    notice = Notice.model_validate_json(message.content)
                except ValidationError:
                    logger.warning("message %s on %s is not a notice; left on the queue", message.id, reply_queue)
                    continue
                yield notice
                try:
                    await queue.delete_message(message)
                except ResourceNotFoundError:
                    pass  # its visibility ran out and another reader took it
                except HttpResponseError as exc:
                    _raise_storage_error(exc, f"deleting from {reply_queue}", QUEUE_PROCESSOR_ROLE, url)
                seen += 1
                if max_notices is not None and seen >= max_notices:
                    return
            if messages:
                delay = poll_interval
                continue
            if once or (deadline is not None and time.monotonic() >= deadline):
                return
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(pause)
            delay = min(delay * 2, max_interval)


def _raise_storage_error(exc: HttpResponseError, action: str, role: str, resource: str) -> NoReturn:
    """A 403 for lack of a data role becomes MissingPermissionError; anything else is re-raised as is."""
    code = getattr(exc, "error_code", None)
    if exc.status_code == 403 and code in STORAGE_PERMISSION_CODES:
        raise MissingPermissionError(action=action, role=role, resource=resource, error_code=str(code)) from exc
    raise exc
