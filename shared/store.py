"""Where a job's pieces live in storage, and the writes that make delivery safe to repeat.

- Claim-check payloads (jobs too big for a message) in ``PAYLOADS_CONTAINER``.
- The worker-only container (``STAGING_CONTAINER``, on which producers hold no role): the retry store,
  where a job the worker re-enqueues waits as ``retries/<id>.json`` with a one-time token its pointer
  must carry (so neither its retry count nor its timing can come from a message, and nobody but the
  worker can read its prompt), and the batch lane's staged jobs and manifests (``shared.batch.records``).
- Results as ``<id>.json``, written create-only (a *failed* one replaced only at the version read)
  with their status, the message that wrote them and, until the notice is confirmed, the ``reply_to``
  queue in blob metadata.
- Notices, at-least-once; what a job left aside is released only after its notice is confirmed.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import ContainerClient
from pydantic import ValidationError

from shared.connections import Runtime
from shared.constants import brief
from shared.jobs import (
    BACKGROUND,
    WAITING_ON,
    Job,
    JobReference,
    Notice,
    PayloadRef,
    RequeuedRef,
    Result,
    RetryState,
    retry_blob,
)
from shared.messages import JobRefused, parse_job

logger = logging.getLogger(__name__)
# A pointer this long past its due time is not coming: longer than a delivery may run (host.json's
# functionTimeout, 10 minutes) plus the host's redeliveries of it (5, 10 s apart).
LOST_POINTER_SECONDS = 900


@dataclass(frozen=True)
class Stored:
    """What the result blob's metadata says of a stored result (read with the existence check)."""

    status: str | None  # None: written before results carried their status; treated as final
    notify: str | None  # the reply queue whose notice is not yet confirmed sent
    message_id: str | None = None  # the queue message whose delivery wrote it (None: written before this)
    etag: str | None = None  # the version read: the notice's mark is cleared on this version only

    @property
    def final(self) -> bool:
        return self.status != "failed"

    def settles(self, message_id: str | None) -> bool:
        """Whether this result ends a delivery of ``message_id`` without running the job: it is final, or it
        was written by this very message (a redelivery after a crash or a failed notice, which must not
        run the job again; a *new* message with the same id replaces a failed result)."""
        return self.final or (message_id is not None and self.message_id == message_id)


@dataclass(frozen=True)
class Mark:
    """What a retry state's blob metadata says (read with the existence check): the message whose delivery
    stored it, the pointer recorded as sent for it (None: not sent, or its record failed) and when that is due."""

    stored_by: str | None
    pointer: str | None
    due: datetime | None = None

    @classmethod
    def of(cls, metadata: dict[str, str] | None) -> Mark:
        metadata = metadata or {}
        try:
            due = datetime.fromisoformat(metadata["due"]) if metadata.get("due") else None
        except ValueError:
            due = None
        return cls(metadata.get("message"), metadata.get("pointer"), due)

    def lost(self, now: datetime) -> bool:
        """Whether nothing will run the job: no pointer out, or the one out is ``LOST_POINTER_SECONDS`` overdue
        (poisoned and dropped rather than replayed, or expired)."""
        if self.pointer is None:
            return True
        return self.due is not None and (now - self.due).total_seconds() > LOST_POINTER_SECONDS

    def resumed_by(self, message_id: str | None) -> bool:
        """Whether a delivery of ``message_id`` continues the job: the message that stored the state, while its
        pointer is not known to be out (once it is, the pointer runs the job and the message is a duplicate)."""
        return self.pointer is None and message_id is not None and self.stored_by == message_id


@dataclass(frozen=True)
class Waiting:
    """A job waiting in the retry store, and the version read (a re-enqueue replaces this version only)."""

    state: RetryState
    etag: str
    mark: Mark = Mark(None, None)


@dataclass(frozen=True)
class Saved:
    """A retry state just written: the pointer to send for it, the version written and its metadata (kept
    when the sent pointer is recorded)."""

    ref: RequeuedRef
    etag: str
    metadata: dict[str, str]


def payloads(runtime: Runtime) -> ContainerClient:
    return runtime.blobs.get_container_client(runtime.settings.payloads_container)


def worker_only(runtime: Runtime) -> ContainerClient:
    """``STAGING_CONTAINER``: the worker's own state (retry store, staged batch jobs, manifests)."""
    return runtime.blobs.get_container_client(runtime.settings.staging_container)


async def ensure_worker_only(runtime: Runtime) -> ContainerClient:
    container = worker_only(runtime)
    await runtime.ensure_once("staging", container.create_container)
    return container


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


async def load_retry_state(runtime: Runtime, ref: RequeuedRef, message_id: str | None = None) -> Waiting | None:
    """The job and retry state the worker stored when it re-enqueued ``ref``, or None when ``ref`` is not the
    pointer the state was last given (stale: the job moved on; forged: nobody gave it) or there is no state
    (the job finished, or never waited): then there is nothing to run. The queue message whose delivery stored
    the state (``message_id``, redelivered when the pointer's send failed) is given it too while no pointer is
    recorded as sent for it."""
    waiting = await load_waiting(runtime, ref.id)
    if waiting is None or (waiting.state.token != ref.token and not waiting.mark.resumed_by(message_id)):
        return None
    return waiting


async def load_waiting(runtime: Runtime, job_id: str) -> Waiting | None:
    """The job waiting under ``job_id`` in the retry store, whoever may run it, or None."""
    try:
        downloader = await worker_only(runtime).download_blob(retry_blob(job_id))
        body = await downloader.readall()
    except ResourceNotFoundError:
        return None
    try:
        state = RetryState.model_validate_json(body)
    except ValidationError as exc:
        raise JobRefused("retry_state_invalid", f"stored retry state: {brief(exc)}", job_id=job_id) from exc
    if state.job.id != job_id:
        return None
    return Waiting(state, downloader.properties.etag, Mark.of(downloader.properties.metadata))


async def waiting_mark(runtime: Runtime, job_id: str) -> Mark | None:
    """Whether a job of this id waits in the retry store (then a new message with its id is a duplicate), and
    what its metadata says of its pointer."""
    try:
        downloader = await worker_only(runtime).download_blob(retry_blob(job_id), offset=0, length=1)
        await downloader.readall()
    except ResourceNotFoundError:
        return None
    return Mark.of(downloader.properties.metadata)


async def release(runtime: Runtime, job_id: str, *, payload: PayloadRef | None, requeued: bool) -> None:
    """Delete what a job left aside (claim-check payload, retry state) once its result is stored and its
    notice confirmed. Best effort: the result is already written, so a failure must not fail the job; blobs
    left over are removed by the containers' lifecycle rules."""
    leftovers = [(payloads(runtime), payload.blob)] if payload else []
    if requeued:
        leftovers.append((worker_only(runtime), retry_blob(job_id)))
    for container, name in leftovers:
        try:
            await container.delete_blob(name)
        except ResourceNotFoundError:
            pass  # another delivery of the same job got there first
        except Exception as exc:
            logger.warning("job %s: blob %s not deleted, left for the lifecycle rule: %s", job_id, name, brief(exc))


async def stored_result(runtime: Runtime, job_id: str) -> Stored | None:
    """The stored result's status, writer and pending notice, or None when there is no result yet."""
    # A one-byte GET rather than HEAD: a 404 to HEAD comes without Content-Length, so the HTTP
    # client drops the connection and the next job pays a new TLS handshake (measured in bench/).
    try:
        downloader = await runtime.results().download_blob(f"{job_id}.json", offset=0, length=1)
        await downloader.readall()
    except ResourceNotFoundError:
        return None
    return _stored(downloader.properties.metadata or {}, downloader.properties.etag)


def _stored(metadata: dict[str, str], etag: str | None) -> Stored:
    return Stored(metadata.get("status"), metadata.get("notify"), metadata.get("message"), etag)


async def store_result(runtime: Runtime, result: Result, reply_to: str | None) -> Stored | None:
    """Write the result create-only; replace a stored *failed* result (only the version we read, so of
    concurrent deliveries one wins), never a succeeded one. None when another delivery's result stands.

    The blob's metadata carries the status and the message that wrote it (read back by ``stored_result``
    with the existence check) and, until the notice is confirmed sent, the reply queue: a redelivery then
    sends the notice again. Returns what was stored, with the version written.
    """
    container = runtime.results()
    await runtime.ensure_once("results", container.create_container)
    name, body = f"{result.id}.json", result.model_dump_json(exclude_none=True).encode()
    metadata = _metadata(result, notify=reply_to)
    settings = ContentSettings(content_type="application/json")
    try:
        return await _upload(container, name, body, metadata, settings)
    except ResourceExistsError:
        pass
    try:
        downloader = await container.download_blob(name, offset=0, length=1)
        await downloader.readall()
    except ResourceNotFoundError:
        return None  # deleted meanwhile by someone replaying the job: theirs to redo
    if (downloader.properties.metadata or {}).get("status") != "failed":
        return None
    try:
        written = await _upload(container, name, body, metadata, settings, etag=downloader.properties.etag)
    except ResourceModifiedError:
        return None
    logger.info("job %s: replaced its earlier failed result", result.id)
    return written


def _if_unchanged(etag: str | None) -> dict[str, Any]:
    """The options that write only the version ``etag`` ({} for none: the SDK passes a bare etag down to the
    transport, which refuses it)."""
    return {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}


def _metadata(result: Result, *, notify: str | None) -> dict[str, str]:
    message = {"message": result.message_id} if result.message_id else {}
    return {"status": result.status, **message, **({"notify": notify} if notify else {})}


async def _upload(
    container: ContainerClient,
    name: str,
    body: bytes,
    metadata: dict[str, str],
    settings: ContentSettings,
    *,
    etag: str | None = None,
) -> Stored:
    """Create-only, or (with ``etag``) replace only that version; the stored result as written."""
    blob = container.get_blob_client(name)
    response = await blob.upload_blob(
        body,
        overwrite=etag is not None,
        metadata=metadata,
        content_settings=settings,
        **_if_unchanged(etag),
    )
    return _stored(metadata, response.get("etag"))


async def notify(runtime: Runtime, result: Result, reply_to: str, stored: Stored) -> None:
    """Send the notice, then clear the result's pending mark on the version ``stored`` (at-least-once:
    consumers de-duplicate by id). A result replaced meanwhile keeps its own mark: its writer notifies."""
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
    try:
        await container.get_blob_client(f"{result.id}.json").set_blob_metadata(
            _metadata(result, notify=None), **_if_unchanged(stored.etag)
        )
    except ResourceModifiedError:
        logger.info("job %s: its result was replaced while the notice was sent; the new one keeps its mark", result.id)


async def notify_pending(runtime: Runtime, job_id: str, stored: Stored) -> None:
    """A stored result whose notice was never confirmed (the sender died, or the send failed): send it."""
    if stored.notify is None or stored.notify not in runtime.settings.reply_queues_allowed:
        return
    downloader = await runtime.results().download_blob(f"{job_id}.json")
    result = Result.model_validate_json(await downloader.readall())
    await notify(
        runtime, result, stored.notify, _stored(downloader.properties.metadata or {}, downloader.properties.etag)
    )
    logger.info("job %s: sent the notice a previous delivery had not confirmed", job_id)


async def save_retry_state(
    runtime: Runtime, state: RetryState, *, replaces: str | None, message_id: str | None
) -> Saved | None:
    """Store a job about to be re-enqueued with its retry state and a new one-time token; return the pointer
    to enqueue. ``replaces``: the version this delivery loaded (None: a job's first wait, written
    create-only); ``message_id``: the queue message being delivered, in the blob's metadata (if the pointer
    is not sent, the host redelivers that message, which continues the job), with the cause it waits for and
    the deployment it asked for (what ``shared.recovery`` looks for when a deployment comes back). None when
    the write fails: another delivery of the same job waits or moved it on first."""
    token = secrets.token_hex(16)
    ref = RequeuedRef(id=state.job.id or "", requeued=True, token=token)
    container = await ensure_worker_only(runtime)
    body = state.model_copy(update={"token": token}).model_dump_json(exclude_none=True).encode()
    metadata = retry_metadata(state, message_id)
    try:
        response = await container.get_blob_client(ref.blob).upload_blob(
            body, overwrite=replaces is not None, metadata=metadata, **_if_unchanged(replaces)
        )
    except (ResourceExistsError, ResourceModifiedError):
        return None
    return Saved(ref, str(response.get("etag")), metadata)


def retry_metadata(state: RetryState, stored_by: str | None) -> dict[str, str]:
    """A retry state's blob metadata: the cause it waits for, when its pointer is due, the deployment it asked for
    (none: the default) and the message whose delivery stored it."""
    metadata: dict[str, str] = {"reason": state.redelivery.reason} if state.redelivery is not None else {}
    if state.background is not None:  # a job waiting on its background response (`status` counts them)
        metadata[WAITING_ON] = BACKGROUND
    if state.due:
        metadata["due"] = state.due.isoformat()
    if state.job.deployment:
        metadata["deployment"] = state.job.deployment
    if stored_by:
        metadata["message"] = stored_by
    return metadata


async def record_pointer(runtime: Runtime, saved: Saved, pointer_id: str, receipt: str | None) -> bool:
    """Record on the retry state (only the version ``saved`` wrote) that its pointer is out: its message id (the
    message that stored the state is then a duplicate, and no other delivery sends the pointer again) and pop
    receipt (``shared.recovery`` makes it visible early with it). Best effort: False when the state moved on or
    the write failed; the pointer still runs the job at its due time (it carries the token)."""
    metadata = {**saved.metadata, "pointer": pointer_id, **({"receipt": receipt} if receipt else {})}
    try:
        await (
            worker_only(runtime)
            .get_blob_client(saved.ref.blob)
            .set_blob_metadata(metadata, **_if_unchanged(saved.etag))
        )
    except (ResourceModifiedError, ResourceNotFoundError):
        logger.info("job %s: its retry state moved on before its pointer was recorded", saved.ref.id)
        return False
    except Exception as exc:
        logger.warning("job %s: its pointer %s went out but was not recorded: %s", saved.ref.id, pointer_id, brief(exc))
        return False
    return True
