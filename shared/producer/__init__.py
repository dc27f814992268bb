"""Enqueue jobs from other services and read their results, keyless: the blocking ``JobsClient``.

Laid out as the Azure SDK for Python does: ``shared.producer.JobsClient`` blocks, and its async twin
of the same name, with the same constructors, methods and keyword options, is
``shared.producer.aio.JobsClient``. Both validate a job with the worker's own models before
anything is sent, give it an id, store jobs too big for a queue message as a payload blob (claim
check) and read ``<results container>/<id>.json``. They authenticate with Entra ID only.

The package imports neither ``azure.functions`` nor ``openai``: a producer service needs only the
storage and identity SDKs (with aiohttp, their async transport) and pydantic; it installs alone as the
``keyless-openai-jobs`` distribution (``make dist``), whose version is ``__version__`` and whose job
contract is ``SCHEMA_VERSION``. With ``opentelemetry-api`` installed (the ``tracing`` extra) and an
OpenTelemetry SDK configured, each job is sent in a PRODUCER span ``send {queue}`` whose W3C context
goes into the job's ``traceparent``/``tracestate`` (unless the job already has one), so the worker's
trace continues it; without either, nothing is added.

Roles the identity needs (data plane, on the storage account or narrower):

- *Storage Queue Data Message Sender* on the jobs queue, to submit;
- *Storage Blob Data Reader* on the results container, to read results;
- *Storage Blob Data Contributor* on the payloads container, only for jobs over the claim-check size;
- *Storage Queue Data Message Processor* on a reply queue, to follow it with ``notices``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar, cast

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.credentials_async import AsyncTokenCredential

from shared.jobs import SCHEMA_VERSION
from shared.producer import aio
from shared.producer._helpers import ClientBase, Connect
from shared.producer._jobs import JobInput, SubmitProgress, new_job_id, prepare_job
from shared.settings import StorageNames

__all__ = ["SCHEMA_VERSION", "JobInput", "JobsClient", "SubmitProgress", "__version__", "new_job_id", "prepare_job"]

# The keyless-openai-jobs distribution's version (its one source: the build reads it from here).
__version__ = "0.1.0"

P = ParamSpec("P")
T = TypeVar("T")

Credential = TokenCredential | AsyncTokenCredential


def _blocking(
    method: Callable[Concatenate[aio.JobsClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[JobsClient, P], T]:
    """The async client's ``method``, run to the end on the private loop: same parameters, same docstring."""

    @functools.wraps(method)
    def call(self: JobsClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self._client, *args, **kwargs))

    return call


def _iterating(
    method: Callable[Concatenate[aio.JobsClient, P], AsyncGenerator[T, None]],
) -> Callable[Concatenate[JobsClient, P], Iterator[T]]:
    """The async client's generator ``method`` as a plain iterator, each step run on the private loop.

    What the caller did not get past (``break``, an exception) is left as the async generator
    leaves it: a notice not yet deleted stays on the queue and comes back later.
    """

    @functools.wraps(method)
    def call(self: JobsClient, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        following = method(self._client, *args, **kwargs)
        try:
            while (item := self._run(_next_or_none(following))) is not None:
                yield item
        finally:
            # Finish it on its loop now rather than when collected; a closed client's loop has
            # already shut it down.
            if not self._closed:
                self._run(following.aclose())

    return call


class JobsClient(ClientBase[Credential]):
    """Submit jobs to the worker's queue and read their results (blocking).

    The blocking twin of ``shared.producer.aio.JobsClient``: the same constructors, methods,
    keyword options, errors and roles; ``credential`` may also be a blocking TokenCredential (each
    token request then runs in a worker thread). It owns a private event loop and runs the async
    client on it, so the async SDK clients stay bound to one loop for their whole life; each method
    is the async client's, run to the end on that loop (``notices`` is a plain iterator, and
    ``submit_many`` calls ``progress`` on the calling thread). Use ``with`` or call ``close()``. Do
    not use it inside a running event loop (use the async client there: it raises RuntimeError); one
    instance is not thread-safe.
    """

    def _connect(self, names: StorageNames, credential: Credential | None, connect: Connect) -> None:
        on_loop = _on_loop(credential)
        self._runner = asyncio.Runner()
        self._closed = False

        async def make() -> aio.JobsClient:
            # Built on the private loop: the SDK clients and an owned credential belong to it.
            return aio.JobsClient._opened(names, on_loop, connect)

        try:
            self._client = self._run(make())
        except BaseException:
            self._closed = True
            self._runner.close()  # otherwise the loop is only closed when collected, with a ResourceWarning
            raise

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

    # The strings after each one are attribute docstrings: what the docs site (mkdocstrings) shows for them.
    submit = _blocking(aio.JobsClient.submit)
    """``shared.producer.aio.JobsClient.submit``, blocking: validate one job, send it, return its id."""
    submit_many = _blocking(aio.JobsClient.submit_many)
    """``shared.producer.aio.JobsClient.submit_many``, blocking: validate every job, then send them all."""
    get_result = _blocking(aio.JobsClient.get_result)
    """``shared.producer.aio.JobsClient.get_result``, blocking: a job's result, or None while there is none."""
    wait = _blocking(aio.JobsClient.wait)
    """``shared.producer.aio.JobsClient.wait``, blocking: the results of the ids given, polled until a timeout."""
    notices = _iterating(aio.JobsClient.notices)
    """``shared.producer.aio.JobsClient.notices`` as a plain iterator over a reply queue's notices."""


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
