"""What a delivery is and how it ends, for every lane.

A ``Delivery`` is one message being handled: the job it carries (once known), what the job left aside
in storage (a claim-check payload, its copy in the retry store), the deployment that answered and the
trace it belongs to. It ends in one of three ways:

- ``finish``: the result is built (``result_of``: from an ``Answer`` of either API and either lane,
  ``shared.apis``), stored create-only (a *failed* one replaced at the version read) and marked with the ``reply_to``
  queue until its notice is confirmed sent; the notice goes out (at-least-once: a redelivery that finds
  the mark sends it again); only then is what the job left aside released, so a redelivery after a
  failed send still finds the job and its result; one log line.
- ``requeue``: the job and its new retry state (with its due time) go to the retry store (replacing only the
  version this delivery loaded, or create-only for a job's first wait) and a pointer carrying the state's new
  one-time token back on the jobs queue, invisible for the delay ``shared.policy.plan_retry`` chose; the
  pointer's message id and pop receipt are then recorded on the state's metadata (at the version written).
  A state with no pointer recorded is one whose send failed: the message that stored it continues it when
  the host redelivers it, and any other message naming the job (a duplicate, a replay of the poisoned
  message, a stale pointer) sends that pointer (``resend_pointer``), so no job is stranded.
- ``before_host_retry``: the host will redeliver the message; on its last attempt a failed result is stored
  first, keeping what the job left aside so the poisoned message can be replayed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared import store, telemetry
from shared.apis import Answer
from shared.connections import Runtime
from shared.constants import brief
from shared.jobs import BackgroundWait, ErrorInfo, Job, PayloadRef, Redelivery, RequeuedRef, Result, RetryState, Timings
from shared.policy import GiveUp, Requeue
from shared.settings import PoolEntry, max_dequeue_count

logger = logging.getLogger(__name__)
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600 - 1  # the Queue service takes a visibility timeout below seven days


class QueueMessage(Protocol):
    """What a delivery needs of ``azure.functions.QueueMessage`` (keeps the lanes host-agnostic)."""

    @property
    def id(self) -> str | None: ...
    @property
    def dequeue_count(self) -> int | None: ...
    @property
    def insertion_time(self) -> datetime | None: ...
    def get_body(self) -> bytes: ...


@dataclass
class Delivery:
    """One message being handled: what it carries, and what to clean up once its result is stored."""

    runtime: Runtime
    message: QueueMessage
    started: datetime
    job_id: str  # the job's own id, else the queue message id
    job: Job | None = None
    redelivery: Redelivery | None = None  # from the retry store, never from the message
    payload: PayloadRef | None = None  # claim-check blob to delete with the result
    requeued: bool = False  # the job waits in the retry store: delete it with the result
    state_version: str | None = None  # the retry state's version loaded (a re-enqueue replaces only that)
    served: PoolEntry | None = None  # the deployment that answered
    background: BackgroundWait | None = None  # the background response the job waits on (shared/background.py)
    span: telemetry.JobSpan = field(default_factory=telemetry.JobSpan)  # this delivery's trace (no-op when off)

    @property
    def attempts(self) -> int:
        return (self.message.dequeue_count or 1) + (self.redelivery.total_attempts if self.redelivery else 0)

    @property
    def enqueued(self) -> datetime | None:
        return aware(self.message.insertion_time)

    @property
    def queue_seconds(self) -> float | None:
        enqueued = self.enqueued
        return (self.started - enqueued).total_seconds() if enqueued else None

    async def release(self) -> None:
        """Delete what the job left aside (claim-check payload, retry-store copy)."""
        await store.release(self.runtime, self.job_id, payload=self.payload, requeued=self.requeued)


async def finish(
    delivery: Delivery,
    *,
    error: ErrorInfo | None = None,
    model_seconds: float | None = None,
    keep_leftovers: bool = False,
    amend: Callable[[Result], Result] | None = None,
    answer: Answer | None = None,
) -> Result | None:
    """Store the result (as ``amend`` changes it: the batch lane's fields), release what the job left
    aside (unless the message goes to poison and may be replayed), then notify; log one line. Returns
    the stored result, or None when another delivery had stored one first (it is kept)."""
    result = result_of(delivery, error=error, model_seconds=model_seconds, answer=answer)
    result = amend(result) if amend is not None else result
    reply_to = delivery.job.reply_to if delivery.job else None
    tracing = telemetry.current()
    delivery.span.outcome(result)
    with tracing.step("store result"):
        stored = await store.store_result(delivery.runtime, result, reply_to)
    if stored is None:
        logger.info("job %s: a result was already stored by another delivery; kept it", result.id)
        if not keep_leftovers:
            await delivery.release()
        return None
    tracing.finished(result)
    if reply_to:
        await store.notify(delivery.runtime, result, reply_to, stored)
    if not keep_leftovers:
        await delivery.release()
    usage = result.usage
    logger.info(
        "job id=%s status=%s code=%s deployment=%s attempt=%d latency_ms=%d model_ms=%d tokens=%s",
        result.id,
        result.status,
        result.error.code if result.error else "-",
        result.deployment or "-",
        result.attempts,
        (result.timings.finished_at - result.timings.started_at).total_seconds() * 1000,
        (result.timings.model_seconds or 0) * 1000,
        usage.total_tokens if usage else 0,
    )
    return result


async def requeue(delivery: Delivery, plan: Requeue) -> None:
    """Store the job with its new retry state, then enqueue a pointer to it, invisible for the delay, and record
    on the state that the pointer is out (and its pop receipt, with which ``shared.recovery`` wakes it early)."""
    runtime, job = delivery.runtime, delivery.job
    assert job is not None
    delay = max(1, round(plan.delay))
    # The stored copy carries this delivery's span as its trace context: the next delivery continues the trace.
    update = {"id": delivery.job_id, **delivery.span.carrier()}
    state = RetryState(
        job=job.model_copy(update=update),
        redelivery=plan.redelivery,
        payload=delivery.payload,
        background=delivery.background,  # a background job re-enqueued while collecting keeps its response
        due=now() + timedelta(seconds=delay),
    )
    saved = await store.save_retry_state(
        runtime, state, replaces=delivery.state_version, message_id=delivery.message.id
    )
    if saved is None:
        logger.warning("job %s: another delivery of it waits or moved it on; this one ends", delivery.job_id)
        return
    await send_pointer(runtime, saved, delay)
    redelivery = plan.redelivery
    telemetry.current().requeued(redelivery.reason)
    logger.warning(
        "job %s re-enqueued (%s, attempt %d) to run in %.0f s",
        delivery.job_id,
        redelivery.reason,
        redelivery.attempt,
        plan.delay,
    )


async def resend_pointer(runtime: Runtime, job_id: str) -> bool:
    """A delivery naming a job whose retry state records no pointer sent (the send failed and the message that
    stored it was poisoned, or a send's record failed), or one long overdue (``store.Mark.lost``), sends that
    pointer again, due when the state says, so the job is not stranded. Nothing of the message is used: the
    pointer is the state's own (its token, its due time); if two pointers with one token are ever out, the
    first delivered moves the token on and the other is stale. True when one was sent."""
    waiting = await store.load_waiting(runtime, job_id)
    if waiting is None or not waiting.mark.lost(now()):
        return False
    state = waiting.state
    ref = RequeuedRef(id=job_id, requeued=True, token=state.token)
    delay = max(0, math.ceil((state.due - now()).total_seconds())) if state.due else 0
    saved = store.Saved(ref, waiting.etag, store.retry_metadata(state, waiting.mark.stored_by))
    await send_pointer(runtime, saved, min(delay, MAX_VISIBILITY_SECONDS))
    logger.warning("job %s: its retry state had no pointer out; sent one, due in %d s", job_id, delay)
    return True


async def send_pointer(runtime: Runtime, saved: store.Saved, delay: int) -> None:
    """Enqueue the pointer to a saved retry state, invisible for ``delay`` seconds, and record on the state that
    it is out (and its pop receipt, with which ``shared.recovery`` wakes it early)."""
    queue = runtime.queues.get_queue_client(runtime.settings.jobs_queue)
    sent = await queue.send_message(saved.ref.model_dump_json(), visibility_timeout=delay)
    await store.record_pointer(runtime, saved, sent.id, sent.pop_receipt)


async def before_host_retry(delivery: Delivery, exc: Exception) -> None:
    """Before the host retries: on the last attempt (``maxDequeueCount``) record the outcome for the sender;
    what the job left aside stays, so `python -m shared replay` can run it again from the poison queue."""
    count = delivery.message.dequeue_count or 1
    if count < max_dequeue_count():
        logger.warning("job %s attempt %d failed, host will retry: %s", delivery.job_id, count, brief(exc))
        return
    gave_up = GiveUp("transient_exhausted", f"gave up after {count} attempts: {brief(exc)}")
    await finish(delivery, error=gave_up.error(), keep_leftovers=True)


def result_of(
    delivery: Delivery,
    *,
    model_seconds: float | None = None,
    error: ErrorInfo | None = None,
    answer: Answer | None = None,
) -> Result:
    """The result this delivery stores: the answer (or the error) with everything the job echoes. An
    ``answer`` (either API, ``shared.apis``) that is not a success fails the result with its own error."""
    job, message = delivery.job, delivery.message
    fields: dict[str, Any] = {}
    if answer is not None:
        error = error or answer.error
        fields = _answer_fields(answer)
        fmt = job.parameters.response_format if job else None
        if fmt is not None and fmt.type != "text" and answer.output and not answer.error:
            try:
                fields["output_json"] = json.loads(answer.output)
            except ValueError:
                logger.warning("job %s asked for JSON but the model's output does not parse", delivery.job_id)
    return Result(
        id=delivery.job_id,
        status="failed" if error else "succeeded",
        deployment=_deployment(delivery),
        endpoint=delivery.served.endpoint if delivery.served else None,
        error=error,
        metadata=job.metadata if job else None,
        attempts=delivery.attempts,
        message_id=message.id,
        trace_id=delivery.span.trace_id,
        timings=Timings(
            enqueued_at=delivery.enqueued,
            started_at=delivery.started,
            finished_at=now(),
            queue_seconds=delivery.queue_seconds,
            model_seconds=model_seconds,
        ),
        **fields,
    )


def _answer_fields(answer: Answer) -> dict[str, Any]:
    return {
        "model": answer.model,
        "output": answer.output,
        "finish_reason": answer.finish_reason,
        "usage": answer.usage,
        "api": answer.api,
        "service_tier": answer.service_tier,
        "response_id": answer.response_id,
        "reasoning_summary": answer.reasoning_summary,
        "output_filtered": True if answer.filtered_output else None,
    }


def _deployment(delivery: Delivery) -> str | None:
    """The deployment that answered, else the one the job asked for."""
    if delivery.served is not None:
        return delivery.served.deployment
    return (delivery.job.deployment or delivery.runtime.settings.default_deployment) if delivery.job else None


def aware(moment: datetime | None) -> datetime | None:
    """Microsoft's Python worker hands out aware UTC times; a naive one (another host) is UTC too."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "Delivery",
    "QueueMessage",
    "aware",
    "before_host_retry",
    "finish",
    "now",
    "requeue",
    "resend_pointer",
    "result_of",
]
