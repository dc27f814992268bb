"""Background jobs: a response started in background mode is collected later, holding no worker slot meanwhile.

A job with ``background`` (or sent to a deployment whose default it is; Responses API only) is created with
``background: true`` and ``store: true`` (Azure refuses stateless background requests). Azure answers at once
with the response ``queued``; the worker then:

1. ``wait``: stores the job in the retry store (``retries/<id>.json`` in the worker-only container) with the
   response's id, where it was started and since when (``BackgroundWait``), a new one-time token, and the
   blob marked ``waiting: background`` (``python -m shared status`` counts these); then enqueues a pointer
   carrying the token, invisible for the poll interval, and the invocation ends. Nothing a producer sends can
   point the worker at a response: a pointer without the state's current token runs nothing.
2. ``check``: a pointer's delivery retrieves the response. Still running: ``wait`` again, each interval
   doubling from ``BACKGROUND_POLL_SECONDS`` up to ``BACKGROUND_POLL_MAX_SECONDS`` (never past the bound).
   Past ``BACKGROUND_MAX_SECONDS`` since it started: cancelled, and the job fails ``background_timeout``.
   Finished: the result is stored like any other (``shared.apis.Answer``); failed, cancelled or incomplete
   responses are failed results with the service's error. A response the service no longer has fails the job
   (``background_lost``). A retrieve that fails goes through the usual policy (re-enqueue, host retries) and the
   job keeps its response.

Crash safety. Once the id is stored, no delivery starts another response for the job: a redelivery of the
pointer (its token is still the state's) or of the job's own message (the state says which message stored
it) continues collecting, and a new message with the job's id is a duplicate while the job waits. One window
is left: the process dying after Azure accepted the create and before the state is written; the host then
redelivers the job's message and a second response starts, at most once per delivery attempt
(``maxDequeueCount``). When the write fails without the process dying, the response is cancelled first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from datetime import datetime, timedelta

import openai

from shared import calls, store, telemetry
from shared.apis import Answer
from shared.constants import brief
from shared.delivery import Delivery, now, send_pointer
from shared.jobs import BackgroundWait, ErrorInfo, RetryState
from shared.settings import PoolEntry, Settings

logger = logging.getLogger(__name__)


def entry_of(wait: BackgroundWait, settings: Settings) -> PoolEntry:
    """The pool entry the response was started on (rebuilt if the pool changed since: it lives there)."""
    for entry in settings.pool:
        if (entry.endpoint, entry.deployment) == (wait.endpoint, wait.deployment):
            return entry
    return PoolEntry(endpoint=wait.endpoint, deployment=wait.deployment, api="responses")


async def check(delivery: Delivery) -> tuple[Answer, float]:
    """The waiting response now (cancelled once past ``BACKGROUND_MAX_SECONDS``), and the seconds since it
    started. Raises what the SDK raises, for the usual policy."""
    wait, runtime = delivery.background, delivery.runtime
    assert wait is not None
    entry = delivery.served = entry_of(wait, runtime.settings)
    try:
        answer = await calls.retrieve(runtime, entry, wait.response_id)
    except openai.NotFoundError as exc:
        lost = ErrorInfo(
            code="background_lost",
            message=f"the service no longer has response {wait.response_id} (deleted or expired): {brief(exc)}",
        )
        return Answer(api="responses", response_id=wait.response_id, status="failed", error=lost), _since(wait)
    elapsed = _since(wait)
    if answer.pending and elapsed >= runtime.settings.background_max_seconds:
        answer = await calls.cancel(runtime, entry, wait.response_id)
        if answer.status in ("cancelled", "queued", "in_progress"):
            bound = runtime.settings.background_max_seconds
            timeout = ErrorInfo(
                code="background_timeout",
                message=f"the background response {wait.response_id} was still {answer.status} after {elapsed:.0f} "
                f"s and has been cancelled (BACKGROUND_MAX_SECONDS {bound})",
            )
            answer = dataclasses.replace(answer, status="cancelled", error=timeout)
    return answer, elapsed


async def wait(delivery: Delivery, answer: Answer, served: PoolEntry) -> None:
    """Park the job until its response (``answer``, still running on ``served``) is checked again: its state
    with the response in the retry store, and a delayed pointer to it."""
    runtime, job = delivery.runtime, delivery.job
    assert job is not None and answer.response_id is not None
    previous = delivery.background
    waiting = (
        previous.model_copy(update={"polls": previous.polls + 1})
        if previous is not None
        else BackgroundWait(
            response_id=answer.response_id, endpoint=served.endpoint, deployment=served.deployment, started_at=now()
        )
    )
    delay = max(1, round(poll_delay(waiting, runtime.settings, now())))
    state = RetryState(
        job=job.model_copy(update={"id": delivery.job_id, **delivery.span.carrier()}),
        redelivery=delivery.redelivery,
        payload=delivery.payload,
        background=waiting,
        due=now() + timedelta(seconds=delay),
    )
    try:
        saved = await store.save_retry_state(
            runtime, state, replaces=delivery.state_version, message_id=delivery.message.id
        )
    except Exception:
        if previous is None:  # nothing records this response: do not leave it running for nobody
            await _abandon(delivery, served, answer.response_id)
        raise
    if saved is None:
        logger.warning("job %s: another delivery of it waits or moved it on; this one ends", delivery.job_id)
        if previous is None:
            await _abandon(delivery, served, answer.response_id)
        return
    await send_pointer(runtime, saved, delay)  # if this fails, the host redelivers this message, which goes on
    telemetry.current().requeued("background")
    logger.info(
        "job %s: background response %s is %s; checked again in %.0f s (check %d)",
        delivery.job_id,
        waiting.response_id,
        answer.status,
        delay,
        waiting.polls + 1,
    )


def poll_delay(waiting: BackgroundWait, settings: Settings, at: datetime) -> float:
    """The wait before the next check: doubling per check from the first interval up to the cap, and never
    past the moment the bound cancels the response (at least 1 s, the queue's unit)."""
    grown = float(settings.background_poll_seconds * 2 ** min(waiting.polls, 30))
    left = settings.background_max_seconds - (at - waiting.started_at).total_seconds()
    return max(1.0, min(grown, settings.background_poll_max_seconds, left))


async def _abandon(delivery: Delivery, served: PoolEntry, response_id: str) -> None:
    """Best effort: cancel a response this delivery cannot record (it would run, and bill, for nobody)."""
    with contextlib.suppress(Exception):
        await calls.cancel(delivery.runtime, served, response_id)
        logger.warning("job %s: cancelled response %s, which could not be recorded", delivery.job_id, response_id)


def _since(wait: BackgroundWait) -> float:
    return (now() - wait.started_at).total_seconds()


__all__ = ["check", "entry_of", "poll_delay", "wait"]
