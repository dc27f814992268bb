"""Enqueue jobs from other services and read their results, keyless: the blocking ``JobsClient``.

Laid out as the Azure SDK for Python does: ``shared.producer.JobsClient`` blocks, and its async twin
of the same name, with the same constructors, methods and keyword options, is
``shared.producer.aio.JobsClient``. Both validate a job with the worker's own models before
anything is sent, give it an id, store jobs too big for a queue message as a payload blob (claim
check) and read ``<results container>/<id>.json``. They authenticate with Entra ID only.

The package imports neither ``azure.functions`` nor ``openai``: a producer service needs only the
storage and identity SDKs, pydantic and ``opentelemetry-api``. With an OpenTelemetry SDK configured,
each job is sent in a PRODUCER span ``send {queue}`` whose W3C context goes into the job's
``traceparent``/``tracestate`` (unless the job already has one), so the worker's trace continues it;
without one, nothing is added.

Roles the identity needs (data plane, on the storage account or narrower):

- *Storage Queue Data Message Sender* on the jobs queue, to submit;
- *Storage Blob Data Reader* on the results container, to read results;
- *Storage Blob Data Contributor* on the payloads container, only for jobs over the claim-check size;
- *Storage Queue Data Message Processor* on a reply queue, to follow it with ``notices``.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar, cast

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.credentials_async import AsyncTokenCredential

from shared.constants import DEFAULT_JOBS_QUEUE, DEFAULT_PAYLOADS_CONTAINER, DEFAULT_RESULTS_CONTAINER
from shared.jobs import Lane, Notice, Result
from shared.producer import aio
from shared.producer._jobs import JobInput, SubmitProgress, new_job_id, prepare_job

__all__ = ["JobInput", "JobsClient", "SubmitProgress", "new_job_id", "prepare_job"]

T = TypeVar("T")

Credential = TokenCredential | AsyncTokenCredential


class JobsClient:
    """Submit jobs to the worker's queue and read their results (blocking).

    The blocking twin of ``shared.producer.aio.JobsClient``: the same constructors, methods,
    keyword options, errors and roles. It owns a private event loop and runs the async client on
    it, so the async SDK clients stay bound to one loop for their whole life. Use ``with`` or call
    ``close()``. Do not use it inside a running event loop (use the async client there); one
    instance is not thread-safe.
    """

    def __init__(
        self,
        queue_account_url: str,
        credential: Credential | None = None,
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
        any TokenCredential, blocking (``azure.identity.DefaultAzureCredential``) or async; by
        default an async ``DefaultAzureCredential`` owned (and closed) by this client. A credential
        passed in stays the caller's to close. The names must match the worker's ``JOBS_QUEUE``,
        ``RESULTS_CONTAINER`` and ``PAYLOADS_CONTAINER``; ``client_kwargs`` go to both storage
        clients. Nothing is sent yet, so no role is needed here.

        Raises ConfigurationError for a name storage would refuse, ValueError when the blob URL
        cannot be derived, RuntimeError inside a running event loop.
        """
        on_loop = _on_loop(credential)
        self._start(
            lambda: aio.JobsClient(
                queue_account_url,
                on_loop,
                blob_account_url=blob_account_url,
                queue=queue,
                results_container=results_container,
                payloads_container=payloads_container,
                **client_kwargs,
            )
        )

    def _start(self, build: Callable[[], aio.JobsClient]) -> None:
        self._runner = asyncio.Runner()
        self._closed = False

        async def make() -> aio.JobsClient:
            # Built on the private loop: the SDK clients and an owned credential belong to it.
            return build()

        try:
            self._client = self._run(make())
        except BaseException:
            self._closed = True
            self._runner.close()  # otherwise the loop is only closed when collected, with a ResourceWarning
            raise

    @classmethod
    def _wrapping(cls, build: Callable[[], aio.JobsClient]) -> Self:
        self = cls.__new__(cls)
        self._start(build)
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

        As ``shared.producer.aio.JobsClient.from_connection_string``; also RuntimeError inside a
        running event loop.
        """
        return cls._wrapping(
            lambda: aio.JobsClient.from_connection_string(
                connection_string,
                queue=queue,
                results_container=results_container,
                payloads_container=payloads_container,
                **client_kwargs,
            )
        )

    @classmethod
    def from_settings(cls, env: Mapping[str, str] | None = None, *, credential: Credential | None = None) -> Self:
        """Connect with the worker's own app settings (``env``, default ``os.environ``).

        As ``shared.producer.aio.JobsClient.from_settings`` (ConfigurationError names a missing or
        bad setting); ``credential`` may also be a blocking TokenCredential. RuntimeError inside a
        running event loop.
        """
        on_loop = _on_loop(credential)
        return cls._wrapping(lambda: aio.JobsClient.from_settings(env, credential=on_loop))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            # In a copy of the caller's context, not the one the runner took at construction: the
            # current span (and any other context variable) is the one at this call.
            return self._runner.run(coroutine, context=contextvars.copy_context())
        coroutine.close()  # never started: close it rather than leave a "never awaited" warning
        raise RuntimeError(
            "the blocking shared.producer.JobsClient cannot run inside an event loop: "
            "use shared.producer.aio.JobsClient there"
        )

    @property
    def queue_url(self) -> str:
        """URL of the jobs queue this client sends to (no request is made)."""
        return self._client.queue_url

    @property
    def queue_name(self) -> str:
        """Name of the jobs queue (the worker's ``JOBS_QUEUE``)."""
        return self._client.queue_name

    @property
    def results_container(self) -> str:
        """Name of the results container (the worker's ``RESULTS_CONTAINER``)."""
        return self._client.results_container

    @property
    def payloads_container(self) -> str:
        """Name of the claim-check payloads container (the worker's ``PAYLOADS_CONTAINER``)."""
        return self._client.payloads_container

    def __enter__(self) -> Self:
        """Return the client itself; ``close()`` runs when the block ends."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the client (see ``close``)."""
        self.close()

    def close(self) -> None:
        """Close the storage clients, the credential this client created, and the private loop.

        A credential passed in is left open. Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._client.close())
        finally:
            self._runner.close()

    def submit(self, job: JobInput, *, lane: Lane | None = None) -> str:
        """Validate and enqueue one job; return its id.

        As ``shared.producer.aio.JobsClient.submit`` (``lane="batch"``: the batch lane for a job that
        names none): needs *Storage Queue Data Message Sender* on the jobs queue (and *Storage Blob
        Data Contributor* on the payloads container for a claim-check job); raises InvalidJobError
        before sending anything, QueueNotFoundError, MissingPermissionError on a 403, or the storage
        SDK's HttpResponseError.
        """
        return self._run(self._client.submit(job, lane=lane))

    def submit_many(
        self,
        jobs: Iterable[JobInput],
        *,
        concurrency: int = 16,
        progress: Callable[[SubmitProgress], None] | None = None,
        lane: Lane | None = None,
    ) -> list[str]:
        """Validate every job, then send them with at most ``concurrency`` sends in flight; return the ids.

        As ``shared.producer.aio.JobsClient.submit_many``: one invalid job (InvalidJobError with
        ``index``) means nothing is sent; ``progress`` is called after each job is on the queue, on
        the calling thread; ``lane`` is ``submit``'s, for every job. Needs the roles of ``submit`` and
        raises its errors.
        """
        return self._run(self._client.submit_many(jobs, concurrency=concurrency, progress=progress, lane=lane))

    def get_result(self, job_id: str) -> Result | None:
        """Return the job's stored result, or None if there is none yet.

        As ``shared.producer.aio.JobsClient.get_result``: needs *Storage Blob Data Reader* on the
        results container; raises InvalidJobError for a bad id, MissingPermissionError on a 403,
        ProducerError for a blob that is not a result.
        """
        return self._run(self._client.get_result(job_id))

    def wait(
        self,
        ids: Iterable[str],
        timeout: float = 300.0,
        *,
        poll_interval: float = 0.5,
        max_interval: float = 5.0,
        concurrency: int = 16,
    ) -> dict[str, Result]:
        """Poll until every job has a result; return them keyed by id, in the order given.

        As ``shared.producer.aio.JobsClient.wait``: raises WaitTimeoutError listing the ids still
        missing after ``timeout`` seconds, and what ``get_result`` raises (whose role it needs).
        """
        return self._run(
            self._client.wait(
                ids, timeout, poll_interval=poll_interval, max_interval=max_interval, concurrency=concurrency
            )
        )

    def notices(
        self,
        reply_queue: str,
        *,
        max_notices: int | None = None,
        once: bool = False,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        max_interval: float = 5.0,
    ) -> Iterator[Notice]:
        """Follow a reply queue (a job's ``reply_to``): yield each notice, deleting it when the next is asked for.

        As ``shared.producer.aio.JobsClient.notices``, as a plain iterator: a notice the caller did
        not get past (``break``, an exception) stays on the queue and comes back later. Needs
        *Storage Queue Data Message Processor* on the reply queue; raises ConfigurationError,
        QueueNotFoundError, MissingPermissionError on a 403.
        """
        following = self._client.notices(
            reply_queue,
            max_notices=max_notices,
            once=once,
            timeout=timeout,
            poll_interval=poll_interval,
            max_interval=max_interval,
        )
        try:
            while (notice := self._run(_next_or_none(following))) is not None:
                yield notice
        finally:
            # Finish it on its loop now rather than when collected; a closed client's loop has
            # already shut it down.
            if not self._closed:
                self._run(following.aclose())


async def _next_or_none(iterator: AsyncIterator[T]) -> T | None:
    return await anext(iterator, None)


def _on_loop(credential: Credential | None) -> AsyncTokenCredential | None:
    """The credential as the async client on the private loop takes it."""
    if credential is None or inspect.iscoroutinefunction(credential.get_token):
        return cast(AsyncTokenCredential | None, credential)
    return _ThreadedCredential(cast(TokenCredential, credential))


class _ThreadedCredential:
    """A blocking credential seen from the private loop.

    Each token request runs in a worker thread, so a slow sign-in (az CLI, IMDS) does not stall the
    sends in flight. The caller owns the credential: ``close`` leaves it open.
    """

    def __init__(self, credential: TokenCredential) -> None:
        self._credential = credential

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return await asyncio.to_thread(
            self._credential.get_token, *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
        )

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        pass
