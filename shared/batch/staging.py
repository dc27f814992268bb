"""Staging: the queue trigger's part of the batch lane, and the delivery a batch-lane result is written as.

A batch-lane job has passed the live lane's checks (``shared.worker.open_delivery``) and has no final
result when it gets here; it is stored create-only as ``jobs/<id>.json`` in ``STAGING_CONTAINER`` and its
message is consumed. A redelivery, or the same id sent again while it waits, finds it staged and changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from shared.connections import Runtime
from shared.delivery import Delivery, aware, finish
from shared.jobs import ErrorInfo, Result

from .records import Staged, StagedJob, ensure_staging, put_staged

logger = logging.getLogger(__name__)

LANE_OFF = (
    "this worker's batch lane is off (BATCH_DEPLOYMENT is empty): send the job with lane live, or set "
    "BATCH_DEPLOYMENT to a GlobalBatch deployment of the resource"
)


async def stage(delivery: Delivery) -> Result | None:
    """Stage a checked batch-lane job (None), or store its failed result when the lane is off."""
    runtime, job = delivery.runtime, delivery.job
    assert job is not None  # set by the queue trigger's open_delivery
    if not runtime.settings.batch_deployment:
        return await finish(delivery, error=ErrorInfo(code="batch_lane_off", message=LANE_OFF), amend=in_lane)
    message = delivery.message
    record = StagedJob(
        job=job.model_copy(update={"id": delivery.job_id}),
        staged_at=delivery.started,
        message_id=message.id,
        enqueued_at=aware(message.insertion_time),
        attempts=delivery.attempts,
    )
    container = await ensure_staging(runtime)
    if await put_staged(container, record):
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
