"""The live lane: how a queued job becomes a stored result, in the order ``handle`` goes.

1. ``open_delivery``: the message is parsed and checked (``shared.messages`` turns any bad input into
   ``JobRefused``); a claim-check reference (a job too big for a message) is resolved from the payloads
   container, a re-enqueued pointer from the retry store (``retries/<id>.json`` in the worker-only
   container, where producers hold no role; a pointer without the state's one-time token runs nothing);
   the job is checked against this deployment's settings and the result that will echo it is serialised
   once, so it is known to be writable before any model spend. A refused job becomes a ``failed`` result
   at once and its message is consumed (never retried, never poisoned), unless a result it may not replace
   is stored already.
2. ``run``: a job with a result it may not replace (a succeeded one, or one this very message wrote) is
   consumed without calling the model, its pending notice sent; so is a job whose id waits in the retry
   store (the first one runs; if that one's pointer never went out, this delivery sends it, due when the
   state says: see ``shared.delivery.resend_pointer``); a job with a *failed* result from another message
   runs again and replaces it. A ``"lane": "batch"`` job is staged for the batch lane (``shared.batch.stage``).
3. ``call_model`` (``shared.calls``): one chat completion or response, as the deployment serves
   (``shared.apis``), on the job's tier (``shared.tiers``), through the deployment pool (``shared.routing``) and
   each deployment's pacing gate (``shared.pacing``). A background response still running waits in the retry
   store and is checked on delayed pointers (``shared.background``) instead.
4. A model error becomes a verdict (``shared.policy.classify``), bounded by ``plan_retry``: a failed result
   (``GiveUp``), a delayed copy on the queue (``Requeue``: throttling, a role still propagating, an outage
   within ``MODEL_OUTAGE_TOLERANCE_SECONDS``), or the host's own retries (``Transient``: storage and
   credential errors, an outage past its tolerance), with a failed result stored on the last attempt.
5. ``shared.delivery.finish`` stores the result, releases what the job left aside and sends the notice.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractContextManager
from datetime import datetime

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue.aio import QueueClient

from shared import apis, background, recovery, store, telemetry
from shared.batch import stage
from shared.calls import call_model
from shared.connections import Runtime, get_runtime
from shared.constants import brief
from shared.delivery import (
    Delivery,
    QueueMessage,
    aware,
    before_host_retry,
    finish,
    now,
    requeue,
    resend_pointer,
    result_of,
)
from shared.jobs import ErrorInfo, Job, JobReference, RequeuedRef, Result
from shared.logs import quiet_third_party_loggers
from shared.messages import JobRefused, parse_message
from shared.policy import Requeue, RetryLater, Transient, Verdict, classify, plan_retry
from shared.settings import Settings

logger = logging.getLogger(__name__)
quiet_third_party_loggers()  # the app's own log levels for the SDKs, set once on import (see shared/logs.py)


async def handle(message: QueueMessage, runtime: Runtime | None = None) -> Result | None:
    """Process one queue message. Returns the stored result, or None when there was nothing to do
    (the result already existed, the job was re-enqueued, staged or is waiting already, or the message
    was a pointer its job's state was not given). Raises to make the host retry."""
    runtime = runtime or get_runtime()
    recovery.attach(runtime)
    delivery = Delivery(runtime, message, now(), job_id=message.id or "unknown")
    refused: ErrorInfo | None = None
    try:
        if not await open_delivery(delivery):
            return None
    except JobRefused as exc:
        # Keyed by the job's own id when it had a valid one; nothing of a refused job is echoed or notified.
        delivery.job, delivery.job_id = None, exc.job_id or delivery.job_id
        refused = ErrorInfo(code=exc.code, message=exc.message)
    # The span starts once the job (and the producer's trace context it carries) is known, dated from
    # the delivery's start; a stored job's fetch above runs in the host's context, which it links to.
    with _process_span(delivery) as delivery.span:
        if refused is not None:
            return await _refuse(delivery, refused)
        job_id = delivery.job_id
        if job_id in runtime.in_flight:
            logger.info("job %s is already in progress here; duplicate message %s consumed", job_id, message.id)
            return None
        runtime.in_flight.add(job_id)  # before any await, so a concurrent duplicate sees it
        try:
            return await run(delivery)
        finally:
            runtime.in_flight.discard(job_id)


def _process_span(delivery: Delivery) -> AbstractContextManager[telemetry.JobSpan]:
    job, message = delivery.job, delivery.message
    processing = telemetry.Processing(
        queue=delivery.runtime.settings.jobs_queue,
        message_id=message.id,
        job_id=delivery.job_id,
        attempt=delivery.attempts,
        started=delivery.started,
        traceparent=job.traceparent if job else None,
        tracestate=job.tracestate if job else None,
        queue_seconds=delivery.queue_seconds,
        requeued=delivery.requeued,
    )
    return telemetry.current().process(processing)


async def open_delivery(delivery: Delivery) -> bool:
    """Parse the message, fetch a job stored aside (claim check, retry store) and check it against
    this deployment's settings; prove now that its result can be written. Raises JobRefused. False for a
    re-enqueue pointer that is not the one its job's state was last given (a stale copy, or forged):
    it is consumed and nothing is touched (state, result, retry budget)."""
    runtime = delivery.runtime
    parsed = parse_message(delivery.message.get_body())
    if isinstance(parsed, JobReference):
        delivery.payload = parsed.payload
        job = await store.load_payload(runtime, parsed)
    elif isinstance(parsed, RequeuedRef):
        waiting = await store.load_retry_state(runtime, parsed, delivery.message.id)
        if waiting is None:
            logger.warning(
                "message %s points at job %s's retry state, which was not given this pointer (stale or forged); "
                "consumed",
                delivery.message.id,
                parsed.id,
            )
            # Nothing of this message is used, but a job whose own pointer was lost is put back on its way (a
            # replayed pointer is often the last message naming it).
            await resend_pointer(runtime, parsed.id)
            return False
        job = _continue(delivery, waiting)
    else:
        job = parsed
    delivery.job, delivery.job_id = job, job.id or delivery.job_id
    check_allowed(job, runtime.settings)
    try:  # everything the result echoes, serialised before any model spend
        result_of(delivery).model_dump_json()
    except ValueError as exc:
        raise JobRefused("invalid_text", f"the job cannot be stored back: {brief(exc)}", job_id=job.id) from exc
    return True


async def _refuse(delivery: Delivery, error: ErrorInfo) -> Result | None:
    """A refused job's failed result, unless a result this message cannot replace is there already (a
    redelivery after the result was stored and what the job left aside released): then only its notice. A
    redelivery of the message that stored its job in the retry store (its payload gone since) continues it."""
    if await _settled(delivery):
        return None
    if await _resume(delivery):
        return await run(delivery)
    return await finish(delivery, error=error)


async def _settled(delivery: Delivery) -> bool:
    """Whether the job already has a result this delivery must not replace (see ``Stored.settles``); then its
    pending notice is sent and what the job left aside released (with a final result, any retry state of it:
    nothing waits for an answered job)."""
    runtime, message = delivery.runtime, delivery.message
    stored = await store.stored_result(runtime, delivery.job_id)
    if stored is None or not stored.settles(message.id):
        return False
    logger.info("job %s already has a result; message %s consumed", delivery.job_id, message.id)
    await store.notify_pending(runtime, delivery.job_id, stored)
    await store.release(runtime, delivery.job_id, payload=delivery.payload, requeued=delivery.requeued or stored.final)
    return True


async def run(delivery: Delivery) -> Result | None:
    """A checked job: consumed if already answered or already waiting to be retried, staged for the batch
    lane, or answered now."""
    runtime = delivery.runtime
    settled, waiting = await asyncio.gather(
        _settled(delivery), store.waiting_mark(runtime, delivery.job_id) if not delivery.requeued else _none()
    )
    if settled:
        if waiting and await _resume(delivery):  # this message's job, answered: its retry state goes too
            await delivery.release()
        return None
    if waiting and not await _resume(delivery):  # the same id sent again while the first waits: the first runs
        logger.info(
            "job %s waits to be retried; message %s with its id consumed as a duplicate",
            delivery.job_id,
            delivery.message.id,
        )
        if waiting.lost(now()):  # unless nothing would ever run it
            await resend_pointer(runtime, delivery.job_id)
        return None
    job = delivery.job  # the waiting job's stored copy when this delivery resumed it
    assert job is not None  # set by open_delivery
    if job.lane == "batch":  # staged for the next batch instead of a model call now
        return await stage(delivery)
    try:
        if delivery.background is not None:  # a background response this job waits on: how is it doing
            answer, model_seconds = await background.check(delivery)
        else:
            answer, model_seconds, delivery.served = await call_model(runtime, job, redelivery=delivery.redelivery)
    except Exception as exc:
        verdict: Verdict | Requeue = classify(exc, runtime, deployment=job.deployment)
        if isinstance(verdict, RetryLater):
            verdict = plan_retry(verdict, delivery.redelivery, runtime.settings, now=now())
        if isinstance(verdict, Requeue):
            await requeue(delivery, verdict)
            return None
        if isinstance(verdict, Transient):
            await before_host_retry(delivery, exc)
            raise
        return await finish(delivery, error=verdict.error())
    if answer.pending:  # started (or still running) in background mode: collected on a delayed pointer
        assert delivery.served is not None
        await background.wait(delivery, answer, delivery.served)
        return None
    return await finish(delivery, answer=answer, model_seconds=model_seconds)


async def _none() -> None:
    return None


def _continue(delivery: Delivery, waiting: store.Waiting) -> Job:
    """This delivery runs the job waiting in the retry store, with its retry state; returns the job."""
    state = waiting.state
    delivery.job, delivery.redelivery, delivery.payload = state.job, state.redelivery, state.payload
    delivery.requeued, delivery.state_version, delivery.background = True, waiting.etag, state.background
    return state.job


async def _resume(delivery: Delivery) -> bool:
    """Whether the job waiting under this id was stored there by this very message (its pointer's send failed,
    so the host redelivers the message): then this delivery continues it. Any other message is a duplicate."""
    try:
        ref = RequeuedRef(id=delivery.job_id, requeued=True)
    except ValueError:  # a refused message without a valid job id: nothing of it can wait
        return False
    waiting = await store.load_retry_state(delivery.runtime, ref, delivery.message.id)
    if waiting is None:
        return False
    _continue(delivery, waiting)
    return True


def check_allowed(job: Job, settings: Settings) -> None:
    """Checks that depend on this deployment's settings rather than on the contract itself."""
    if job.deployment is not None and job.deployment not in settings.allowed_deployments:
        raise JobRefused(
            "deployment_not_allowed",
            f"deployment '{job.deployment}' is not allowed (allowed: {', '.join(settings.allowed_deployments)})",
            job_id=job.id,
        )
    if job.reply_to is not None and job.reply_to not in settings.reply_queues_allowed:
        raise JobRefused(
            "reply_to_not_allowed", f"reply_to queue '{job.reply_to}' is not in REPLY_QUEUES_ALLOWED", job_id=job.id
        )
    if (chars := job.prompt_chars()) > settings.max_prompt_chars:
        raise JobRefused(
            "prompt_too_large", f"prompt is {chars} characters; the limit is {settings.max_prompt_chars}", job_id=job.id
        )
    apis.check_api(job, settings)


async def sample_queues(runtime: Runtime | None = None) -> None:
    """Record the depth of the jobs queue and of its poison queue, and the age of each one's head
    message. Called by the timer trigger (one sample per schedule for the whole app, whatever the
    number of instances); with telemetry off it returns at once, without a storage call."""
    telemetry.configure()
    recorder = telemetry.current()
    if not recorder.enabled:
        return
    runtime = runtime or get_runtime()
    for name in (runtime.settings.jobs_queue, runtime.settings.poison_queue):
        depth, head = await _queue_sample(runtime.queues.get_queue_client(name))
        recorder.queue_sampled(name, depth, max((now() - head).total_seconds(), 0.0) if head else 0.0)


async def _queue_sample(queue: QueueClient) -> tuple[int, datetime | None]:
    """Approximate message count (invisible ones included) and the insertion time of the head message
    (the first visible one), or (0, None) for a queue that does not exist (a poison queue before its
    first message)."""
    try:
        properties = await queue.get_queue_properties()
        head = await queue.peek_messages(max_messages=1)
    except ResourceNotFoundError:
        return 0, None
    return properties.approximate_message_count or 0, aware(head[0].inserted_on) if head else None
