"""Where a job's pieces live in storage, and the writes that make delivery safe to repeat.

- Claim-check payloads (jobs too big for a message) in ``PAYLOADS_CONTAINER``.
- The retry store: a job the worker re-enqueues waits as ``retries/<id>.json`` in the results
  container (producers can read there, not write), so its retry count cannot come from a message.
- Results as ``<id>.json``, written create-only (a *failed* one replaced only at the version read)
  with their status and, until the notice is confirmed, the ``reply_to`` queue in blob metadata.
- Notices, at-least-once.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import ContainerClient
from pydantic import ValidationError

from shared.connections import Runtime
from shared.constants import brief
from shared.jobs import Job, JobReference, Notice, PayloadRef, RequeuedRef, Result, RetryState
from shared.messages import JobRefused, parse_job

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stored:
    """What the result blob's metadata says of a stored result (read with the existence check)."""

    status: str | None  # None: written before results carried their status; treated as final
    notify: str | None  # the reply queue whose notice is not yet confirmed sent

    @property
    def final(self) -> bool:
        return self.status != "failed"


def payloads(runtime: Runtime) -> ContainerClient:
    return runtime.blobs.get_container_client(runtime.settings.payloads_container)


async def load_payload(runtime: Runtime, ref: JobReference) -> Job:
    """Claim check: the job's JSON from the payloads container, checked exactly as a message is."""
    # Bounded so a huge blob cannot exhaust memory: a valid job is at most MAX_PROMPT_CHARS of text,
    # up to 12 bytes a character once JSON-escaped, plus its other fields.
    limit = 12 * runtime.settings.max_prompt_chars + 1024 * 1024
    where = f"{runtime.settings.payloads_container}/{ref.payload.blob}"
    try:
        body = await (await payloads(runtime).download_blob(ref.payload.blob, offset=0, length=limit + 1)).readall()
    except ResourceNotFoundError as exc:
        raise JobRefused(
            "payload_missing", f"the job's payload blob {where} does not exist: submit the job again", job_id=ref.id
        ) from exc
    if len(body) > limit:
        raise JobRefused("payload_too_large", f"payload blob {where} is over {limit} bytes", job_id=ref.id)
    try:
        job = parse_job(body)
    except JobRefused as exc:
        raise JobRefused(exc.code, f"payload: {exc.message}", job_id=ref.id) from exc
    if job.id != ref.id:
        raise JobRefused("payload_mismatch", f"payload blob {where} holds job id {job.id!r}", job_id=ref.id)
    return job


async def load_retry_state(runtime: Runtime, ref: RequeuedRef) -> RetryState:
    """The job and retry state the worker stored when it re-enqueued ``ref``."""
    try:
        body = await (await runtime.results().download_blob(ref.blob)).readall()
        return RetryState.model_validate_json(body)
    except ResourceNotFoundError as exc:
        # Another delivery finished the job and deleted it (its result stands), or the message was
        # not the worker's: either way there is nothing to run.
        raise JobRefused(
            "retry_state_missing", f"no stored retry state for job {ref.id}: submit the job again", job_id=ref.id
        ) from exc
    except ValidationError as exc:
        raise JobRefused("retry_state_invalid", f"stored retry state: {brief(exc)}", job_id=ref.id) from exc


async def release(runtime: Runtime, job_id: str, *, payload: PayloadRef | None, requeued: bool) -> None:
    """Delete what a job left aside (claim-check payload, retry state) once its result is stored.
    Best effort: the result is already written, so a failure must not fail the job; blobs left over
    are removed by the containers' lifecycle rules."""
    leftovers = [(payloads(runtime), payload.blob)] if payload else []
    if requeued:
        leftovers.append((runtime.results(), RequeuedRef(id=job_id, requeued=True).blob))
    for container, name in leftovers:
        try:
            await container.delete_blob(name)
        except ResourceNotFoundError:
            pass  # another delivery of the same job got there first
        except Exception as exc:
            logger.warning("job %s: blob %s not deleted, left for the lifecycle rule: %s", job_id, name, brief(exc))


async def stored_result(runtime: Runtime, job_id: str) -> Stored | None:
    """The stored result's status and pending notice, or None when there is no result yet."""
    # A one-byte GET rather than HEAD: a 404 to HEAD comes without Content-Length, so the HTTP
    # client drops the connection and the next job pays a new TLS handshake (measured in bench/).
    try:
        downloader = await runtime.results().download_blob(f"{job_id}.json", offset=0, length=1)
        await downloader.readall()
    except ResourceNotFoundError:
        return None
    metadata = downloader.properties.metadata or {}
    return Stored(status=metadata.get("status"), notify=metadata.get("notify"))


async def store_result(runtime: Runtime, result: Result, reply_to: str | None) -> bool:
    """Write the result create-only; replace a stored *failed* result (only the version we read, so of
    concurrent deliveries one wins), never a succeeded one. False when another delivery's result stands.

    The blob's metadata carries the status (read back by ``_stored`` with the existence check) and,
    until the notice is confirmed sent, the reply queue: a redelivery then sends the notice again.
    """
    container = runtime.results()
    await runtime.ensure_once("results", container.create_container)
    name, body = f"{result.id}.json", result.model_dump_json(exclude_none=True).encode()
    metadata = {"status": result.status, **({"notify": reply_to} if reply_to else {})}
    settings = ContentSettings(content_type="application/json")
    try:
        await container.upload_blob(name, body, overwrite=False, metadata=metadata, content_settings=settings)
        return True
    except ResourceExistsError:
        pass
    try:
        downloader = await container.download_blob(name, offset=0, length=1)
        await downloader.readall()
    except ResourceNotFoundError:
        return False  # deleted meanwhile by someone replaying the job: theirs to redo
    if (downloader.properties.metadata or {}).get("status") != "failed":
        return False
    try:
        await container.upload_blob(
            name,
            body,
            overwrite=True,
            metadata=metadata,
            content_settings=settings,
            etag=downloader.properties.etag,
            match_condition=MatchConditions.IfNotModified,
        )
    except ResourceModifiedError:
        return False
    logger.info("job %s: replaced its earlier failed result", result.id)
    return True


async def notify(runtime: Runtime, result: Result, reply_to: str) -> None:
    """Send the notice, then clear the result's pending mark (at-least-once: consumers de-duplicate by id)."""
    container = runtime.results()
    notice = Notice(
        id=result.id,
        status=result.status,
        result_container=container.container_name,
        result_blob=f"{result.id}.json",
        error_code=result.error.code if result.error else None,
    )
    queue = runtime.queues.get_queue_client(reply_to)
    await runtime.ensure_once(f"queue:{reply_to}", queue.create_queue)
    body = notice.model_dump_json(exclude_none=True)
    try:
        await queue.send_message(body)
    except ResourceNotFoundError:  # deleted since this process made sure of it: make it again
        with contextlib.suppress(ResourceExistsError):
            await queue.create_queue()
        await queue.send_message(body)
        logger.warning("job %s: reply queue %s was missing and has been created again", result.id, reply_to)
    await container.get_blob_client(f"{result.id}.json").set_blob_metadata({"status": result.status})


async def notify_pending(runtime: Runtime, job_id: str, stored: Stored) -> None:
    """A stored result whose notice was never confirmed (the sender died, or the send failed): send it."""
    if stored.notify is None or stored.notify not in runtime.settings.reply_queues_allowed:
        return
    body = await (await runtime.results().download_blob(f"{job_id}.json")).readall()
    await notify(runtime, Result.model_validate_json(body), stored.notify)
    logger.info("job %s: sent the notice a previous delivery had not confirmed", job_id)


async def save_retry_state(runtime: Runtime, state: RetryState) -> RequeuedRef:
    """Store a job about to be re-enqueued with its retry state; return the pointer to enqueue."""
    ref = RequeuedRef(id=state.job.id or "", requeued=True)
    container = runtime.results()
    await runtime.ensure_once("results", container.create_container)
    await container.upload_blob(ref.blob, state.model_dump_json(exclude_none=True).encode(), overwrite=True)
    return ref
