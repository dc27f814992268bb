"""Staging: the queue trigger's part of the batch lane, the delivery a batch-lane result is written as, and
how a staged job ends when the batch lane will not run it.

A batch-lane job has passed the live lane's checks (``shared.worker.open_delivery``) and has no final
result when it gets here; it is stored create-only as ``jobs/<id>.json`` in ``STAGING_CONTAINER``, with its
estimated enqueued tokens in the blob metadata, and its message is consumed. A redelivery, or the same id
sent again while it waits, finds it staged and changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from azure.storage.blob.aio import ContainerClient

from shared import store
from shared.connections import Runtime
from shared.constants import brief
from shared.delivery import Delivery, aware, finish
from shared.jobs import ErrorInfo, JobReference, Result

from .lines import job_tokens
from .records import Staged, StagedJob, delete_staged, ensure_staging, put_staged, staged_blob

logger = logging.getLogger(__name__)

LANE_OFF = "batch_lane_off"
LANE_OFF_MESSAGE = (
    "this worker's batch lane is off (BATCH_DEPLOYMENT is empty): send the job with lane live, or set "
    "BATCH_DEPLOYMENT to a GlobalBatch deployment of the resource"
)
UNREADABLE = "batch_staged_unreadable"


async def stage(delivery: Delivery) -> Result | None:
    """Stage a checked batch-lane job (None), or store its failed result when the lane is off."""
    runtime, job = delivery.runtime, delivery.job
    assert job is not None  # set by the queue trigger's open_delivery
    if not runtime.settings.batch_deployment:
        error = ErrorInfo(code=LANE_OFF, message=LANE_OFF_MESSAGE)
        return await finish(delivery, error=error, amend=in_lane)
    message = delivery.message
    record = StagedJob(
        job=job.model_copy(update={"id": delivery.job_id}),
        staged_at=delivery.started,
        message_id=message.id,
        enqueued_at=aware(message.insertion_time),
        attempts=delivery.attempts,
    )
    container = await ensure_staging(runtime)
    if await put_staged(container, record, job_tokens(record.job)):
        logger.info("job %s staged for the batch lane (message %s)", delivery.job_id, message.id)
    else:
        logger.info("job %s is already staged for the batch lane; message %s consumed", delivery.job_id, message.id)
    # The staged copy holds the whole job: a claim-check payload is no longer needed.
    await delivery.release()
    return None


def in_lane(result: Result) -> Result:
    return result.model_copy(update={"lane": "batch"})


@dataclass(frozen=True)
class StagedMessage:
    """The queue message a staged job came in (a ``shared.delivery.QueueMessage``), as its result reports it."""

    id: str | None
    dequeue_count: int | None
    insertion_time: datetime | None

    def get_body(self) -> bytes:
        return b""  # never read: the job is already parsed


def delivery_for(runtime: Runtime, staged: Staged) -> Delivery:
    """The delivery a staged job's result is written as: dated from its staging, so the result's
    ``timings`` span the wait for and in the batch."""
    record = staged.record
    message = StagedMessage(record.message_id, record.attempts, record.enqueued_at)
    assert record.job.id is not None
    return Delivery(runtime, message, record.staged_at, job_id=record.job.id, job=record.job)


async def fail_unreadable(runtime: Runtime, container: ContainerClient, job_id: str, reason: Exception) -> bool:
    """A staged blob that does not parse (written by another version, or damaged): its job fails with
    ``batch_staged_unreadable`` (unless it has a final result already) and the blob goes, so it can
    neither stop its batch from being settled nor be read again every tick. True when a result was written."""
    logger.error(
        "staging: %s does not parse, so its job fails (%s) and the blob is deleted: %s",
        staged_blob(job_id),
        UNREADABLE,
        brief(reason),
    )
    stored = await store.stored_result(runtime, job_id)
    written = None
    if stored is None or not stored.final:
        message = (
            f"the batch lane could not read this job's staged copy ({brief(reason)}); "
            "send the job again (with lane live to have it answered now)"
        )
        delivery = Delivery(runtime, StagedMessage(None, None, None), datetime.now(UTC), job_id=job_id)
        written = await finish(delivery, error=ErrorInfo(code=UNREADABLE, message=message), amend=in_lane)
    await delete_staged(container, job_id)
    return written is not None


async def send_live(runtime: Runtime, staged: Staged) -> None:
    """The job on the live jobs queue, through the claim check (it may be too big for a message)."""
    job = staged.record.job.model_copy(update={"lane": "live"})
    assert job.id is not None
    payloads = store.payloads(runtime)
    await runtime.ensure_once("payloads", payloads.create_container)
    await payloads.upload_blob(f"{job.id}.json", job.model_dump_json(exclude_none=True).encode(), overwrite=True)
    queue = runtime.queues.get_queue_client(runtime.settings.jobs_queue)
    await queue.send_message(JobReference.for_job(job.id).model_dump_json())


Ended = Literal["live", "failed", "answered"]


async def end_with_lane_off(runtime: Runtime, container: ContainerClient, staged: Staged, *, why: str) -> Ended:
    """A staged job the batch lane will not run because it was switched off (BATCH_DEPLOYMENT emptied):
    restaging it would strand it, so it goes to the live queue (``BATCH_ON_FAILURE=live``) or fails with
    ``batch_lane_off``; one answered meanwhile is just unstaged. Returns which."""
    job_id = staged.record.job.id
    assert job_id is not None
    stored = await store.stored_result(runtime, job_id)
    if stored is not None and stored.final:
        await delete_staged(container, job_id)
        return "answered"  # sent again live and answered meanwhile
    if runtime.settings.batch_on_failure == "live":
        await send_live(runtime, staged)
        await delete_staged(container, job_id)
        logger.info("job %s sent to the live lane: %s and the batch lane is off", job_id, why)
        return "live"
    message = f"{why}, and this worker's batch lane was switched off since (BATCH_DEPLOYMENT is empty): " + (
        "send the job again with lane live, or set BATCH_DEPLOYMENT (with BATCH_ON_FAILURE=live such jobs go to "
        "the live lane)"
    )
    await finish(delivery_for(runtime, staged), error=ErrorInfo(code=LANE_OFF, message=message), amend=in_lane)
    await delete_staged(container, job_id)
    return "failed"
