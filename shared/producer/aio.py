"""Enqueue jobs from other services and read their results, keyless: the async ``JobsClient``.

``JobsClient`` is the producer side of the contract in ``shared.jobs``: it validates a job with the
same models the worker uses before anything is sent, gives it an id, sends it as plain JSON text
(host.json ``messageEncoding: none``), stores jobs too big for a queue message as a payload blob
(claim check), and reads ``<results container>/<id>.json``. It authenticates with Entra ID only:
``DefaultAzureCredential`` unless you pass a credential (or, for Azurite, a connection string).

It does not import ``azure.functions`` or ``openai``: a producer service needs only the storage
and identity SDKs (with aiohttp) and pydantic. Its blocking twin, with the same methods, is
``shared.producer.JobsClient``.

Tracing (OpenTelemetry API only, when ``opentelemetry-api`` is installed: the package's ``tracing``
extra): each job is sent in its own PRODUCER span ``send {queue}`` (messaging conventions,
``messaging.system`` ``azure.storage.queue``), and the span's W3C context goes into the job's
``traceparent``/``tracestate``, where the worker continues the trace. A job that already carries a
``traceparent`` keeps it. Without the API, or with no SDK configured (the span is then a no-op with
an invalid context), the job is sent exactly as validated.

The data-plane roles the identity needs are listed in ``shared.producer`` and, one by one, in each
method's docstring.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterable

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from pydantic import ValidationError

from shared.constants import BLOB_CONTRIBUTOR_ROLE, BLOB_READER_ROLE, QUEUE_PROCESSOR_ROLE, QUEUE_SENDER_ROLE
from shared.errors import ConfigurationError, ProducerError, QueueNotFoundError, WaitTimeoutError, storage_refusal
from shared.jobs import CLAIM_CHECK_BYTES, JobReference, Lane, Notice, Result
from shared.producer import _tracing
from shared.producer._helpers import ClientBase, Connect, check_id, check_name
from shared.producer._jobs import JobInput, SubmitProgress, _prepare, _Prepared, new_job_id, prepare_job
from shared.settings import StorageNames
from shared.storage_clients import HoldsStorage

__all__ = ["JobInput", "JobsClient", "SubmitProgress", "new_job_id", "prepare_job"]

logger = logging.getLogger(__name__)


class JobsClient(ClientBase[AsyncTokenCredential], HoldsStorage):
    """Submit jobs to the worker's queue and read their results (async).

    Build it with the constructor (account URLs and a credential), ``from_settings`` (the worker's
    own app settings) or ``from_connection_string`` (Azurite). Use ``async with`` or call
    ``close()``. Each method's docstring names the data-plane role it needs; a 403 for lack of it
    raises ``MissingPermissionError`` naming that role and the resource.
    """

    def _connect(self, names: StorageNames, credential: AsyncTokenCredential | None, connect: Connect) -> None:
        self._storage = connect(credential)
        self._queues = self._storage.queues
        self._jobs = self._queues.get_queue_client(names.jobs_queue)
        self._results = self._storage.blobs.get_container_client(names.results_container)
        self._payloads = self._storage.blobs.get_container_client(names.payloads_container)
        self._results_container_seen = False

    @property
    def queue_url(self) -> str:
        """URL of the jobs queue this client sends to (shown in errors; no request is made)."""
        return str(self._jobs.url)

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
                with storage_refusal(f"sending to queue {self.queue_name}", QUEUE_SENDER_ROLE, self.queue_url):
                    sent = await self._jobs.send_message(text)
            except HttpResponseError as exc:
                if getattr(exc, "error_code", None) == "QueueNotFound":
                    raise QueueNotFoundError(self.queue_name, self.queue_url) from exc
                raise
            sending.sent(sent.id)

    async def _upload_payload(self, name: str, data: bytes) -> None:
        settings = ContentSettings(content_type="application/json")
        for attempt in (1, 2):
            try:
                with storage_refusal(f"uploading payload {name}", BLOB_CONTRIBUTOR_ROLE, str(self._payloads.url)):
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

    # ---- results ----

    async def get_result(self, job_id: str) -> Result | None:
        """Return the job's stored result, or None if there is none yet.

        Needs *Storage Blob Data Reader* on the results container. Raises InvalidJobError for an id
        outside the contract, MissingPermissionError on a 403, ProducerError for a blob that is not a
        result, and the storage SDK's HttpResponseError for any other storage failure.
        """
        name = f"{check_id(job_id)}.json"
        try:
            with storage_refusal(f"reading result {name}", BLOB_READER_ROLE, str(self._results.url)):
                data = await (await self._results.download_blob(name)).readall()
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) != "ContainerNotFound":
                self._results_container_seen = True
            return None  # the worker creates the container with its first result
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
        order = [check_id(job_id) for job_id in dict.fromkeys(ids)]
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
        queue = self._queues.get_queue_client(check_name(reply_queue, "reply queue"))
        url = str(queue.url)
        seen = 0
        delay = poll_interval
        deadline = None if timeout is None else time.monotonic() + timeout
        while max_notices is None or seen < max_notices:
            try:
                with storage_refusal(f"receiving from {reply_queue}", QUEUE_PROCESSOR_ROLE, url):
                    messages = [m async for m in queue.receive_messages(messages_per_page=32, max_messages=32)]
            except HttpResponseError as exc:
                if getattr(exc, "error_code", None) == "QueueNotFound":
                    raise QueueNotFoundError(reply_queue, url) from exc
                raise
            for message in messages:
                try:
                    notice = Notice.model_validate_json(message.content)
                except ValidationError:
                    logger.warning("message %s on %s is not a notice; left on the queue", message.id, reply_queue)
                    continue
                yield notice
                try:
                    with storage_refusal(f"deleting from {reply_queue}", QUEUE_PROCESSOR_ROLE, url):
                        await queue.delete_message(message)
                except ResourceNotFoundError:
                    pass  # its visibility ran out and another reader took it
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
