"""How a queued job becomes a stored result.

Delivery is at-least-once, the model is slow, rate-limited and sometimes down, and senders
make mistakes. The policy, in the order ``handle`` applies it:

- The message is parsed and checked (``shared.jobs`` turns any bad input into ``InvalidJob``),
  and the result that will echo it is serialised once, so it is known to be writable before any
  model spend; anything invalid becomes a ``failed`` result at once and the message is consumed
  (never retried, never poisoned).
- A claim-check reference (a job too big for a message) is resolved from the payloads container,
  a re-enqueued job from the retry store (``retries/<id>.json`` in the results container, where
  producers cannot write: how often a job was retried is never taken from a message). Both blobs
  are deleted once the job's result is stored.
- A job with a succeeded result is consumed without calling the model (redelivery, or a producer
  sending the same id again); a job with a *failed* result runs again and replaces it.
- Model errors are classified (``classify``) into a verdict, a plain value:
  * ``GiveUp`` (400 incl. content filter, 404 deployment, wrong token audience): failed result.
  * ``RetryLater`` (429 with a wait longer than the SDK honours, the instance's pacing gate not
    admitting the call within ``MODEL_ADMISSION_WAIT_SECONDS`` (``shared.pacing``), PermissionDenied
    while a role assignment propagates): ``plan_retry`` bounds it by attempts (throttling) or age
    (permissions); within the bound a delayed copy goes back on the queue and this delivery
    ends, past it the job gets a failed result.
  * ``Transient`` (5xx, timeouts, dropped connections, storage and credential errors): the
    error is re-raised so the host retries after ``visibilityTimeout``; on the last attempt
    (``maxDequeueCount``) a failed result is written first, then the host poisons the message.
- The result is written create-only (a failed one replaced only at the version read), marked
  with its status and, until the ``reply_to`` notice is confirmed sent, the reply queue: a
  redelivery that finds the mark sends the notice again. Notices are at-least-once.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import openai
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from azure.storage.queue.aio import QueueClient
from openai.types.chat import ChatCompletion

from shared import pacing, store, telemetry
from shared.connections import Runtime, get_runtime
from shared.constants import COGNITIVE_SERVICES_SCOPE, OPENAI_USER_ROLE, brief
from shared.jobs import (
    ErrorInfo,
    InvalidJob,
    Job,
    JobReference,
    PayloadRef,
    Redelivery,
    RequeuedRef,
    Result,
    RetryState,
    Timings,
    Usage,
    parse_message,
)
from shared.logs import quiet_third_party_loggers
from shared.routing import ModelUnavailable, Route, failure_kind
from shared.settings import PoolEntry, Settings, max_dequeue_count

logger = logging.getLogger(__name__)
quiet_third_party_loggers()  # the app's own log levels for the SDKs, set once on import (see shared/logs.py)

PERMISSION_BACKOFF = (5.0, 15.0, 30.0, 60.0)  # role assignments usually land within 1-10 minutes
OUTAGE_BACKOFF = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0)  # regional incidents last minutes to hours


class QueueMessage(Protocol):
    """What the worker needs of ``azure.functions.QueueMessage`` (keeps this module host-agnostic)."""

    @property
    def id(self) -> str | None: ...
    @property
    def dequeue_count(self) -> int | None: ...
    @property
    def insertion_time(self) -> datetime | None: ...
    def get_body(self) -> bytes: ...


@dataclass(frozen=True)
class GiveUp:
    """Verdict: the job ends now as a failed result with this code."""

    code: str
    message: str


@dataclass(frozen=True)
class RetryLater:
    """Verdict: run the job again after ``delay`` seconds, by re-enqueuing a delayed copy."""

    reason: Literal["throttled", "permission_denied", "outage"]
    delay: float
    message: str


@dataclass(frozen=True)
class Transient:
    """Verdict: let the host redeliver the message (its ``maxDequeueCount`` bounds the attempts)."""


Verdict = GiveUp | RetryLater | Transient


@dataclass(frozen=True)
class Requeue:
    """What ``plan_retry`` decided: send a copy carrying ``redelivery``, invisible for ``delay`` seconds."""

    redelivery: Redelivery
    delay: float


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
    served: PoolEntry | None = None  # the deployment that answered
    span: telemetry.JobSpan = field(default_factory=telemetry.JobSpan)  # this delivery's trace (no-op when off)

    @property
    def attempts(self) -> int:
        return (self.message.dequeue_count or 1) + (self.redelivery.attempt if self.redelivery else 0)


async def handle(message: QueueMessage, runtime: Runtime | None = None) -> Result | None:
    """Process one queue message. Returns the stored result, or None when there was nothing to do
    (the result already existed, or the job was re-enqueued). Raises to make the host retry."""
    runtime = runtime or get_runtime()
    delivery = Delivery(runtime, message, _now(), job_id=message.id or "unknown")
    refused: ErrorInfo | None = None
    try:
        await _open(delivery)
    except InvalidJob as exc:
        # Keyed by the job's own id when it had a valid one; nothing of a refused job is echoed or notified.
        delivery.job, delivery.job_id = None, exc.job_id or delivery.job_id
        refused = ErrorInfo(code=exc.code, message=exc.message)
    # The span starts once the job (and the producer's trace context it carries) is known, dated from
    # the delivery's start; a stored job's fetch above runs in the host's context, which it links to.
    with _process_span(delivery) as delivery.span:
        if refused is not None:
            return await _finish(delivery, error=refused)
        job_id = delivery.job_id
        if job_id in runtime.in_flight:
            logger.info("job %s is already in progress here; duplicate message %s consumed", job_id, message.id)
            return None
        runtime.in_flight.add(job_id)  # before any await, so a concurrent duplicate sees it
        try:
            return await _run(delivery)
        finally:
            runtime.in_flight.discard(job_id)


def _process_span(delivery: Delivery) -> AbstractContextManager[telemetry.JobSpan]:
    job, message, started = delivery.job, delivery.message, delivery.started
    enqueued = _aware(message.insertion_time)
    return telemetry.current().process(
        queue=delivery.runtime.settings.jobs_queue,
        message_id=message.id,
        job_id=delivery.job_id,
        attempt=delivery.attempts,
        started=started,
        traceparent=job.traceparent if job else None,
        tracestate=job.tracestate if job else None,
        queue_seconds=(started - enqueued).total_seconds() if enqueued else None,
        requeued=delivery.requeued,
    )


async def _open(delivery: Delivery) -> None:
    """Parse the message, fetch a job stored aside (claim check, retry store) and check it against
    this deployment's settings; prove now that its result can be written. Raises InvalidJob."""
    runtime = delivery.runtime
    parsed = parse_message(delivery.message.get_body())
    if isinstance(parsed, JobReference):
        delivery.payload = parsed.payload
        job = await store.load_payload(runtime, parsed)
    elif isinstance(parsed, RequeuedRef):
        state = await store.load_retry_state(runtime, parsed)
        job, delivery.redelivery, delivery.payload, delivery.requeued = state.job, state.redelivery, state.payload, True
    else:
        job = parsed
    delivery.job, delivery.job_id = job, job.id or delivery.job_id
    _check_allowed(job, runtime.settings)
    try:  # everything the result echoes, serialised before any model spend
        _result(delivery).model_dump_json()
    except ValueError as exc:
        raise InvalidJob("invalid_text", f"the job cannot be stored back: {brief(exc)}", job_id=job.id) from exc


async def _run(delivery: Delivery) -> Result | None:
    runtime, job = delivery.runtime, delivery.job
    assert job is not None  # set by _open
    stored = await store.stored_result(runtime, delivery.job_id)
    if stored is not None and stored.final:
        logger.info("job %s already has a result; message %s consumed", delivery.job_id, delivery.message.id)
        await store.notify_pending(runtime, delivery.job_id, stored)
        await store.release(delivery.runtime, delivery.job_id, payload=delivery.payload, requeued=delivery.requeued)
        return None
    if job.lane == "batch":  # staged for the next batch instead of a model call now (shared/batch.py)
        from shared import batch  # here: the batch lane builds on this module

        return await batch.stage(delivery)
    try:
        completion, model_seconds, delivery.served = await _call_model(runtime, job)
    except Exception as exc:
        verdict: Verdict | Requeue = classify(exc, runtime, deployment=job.deployment)
        if isinstance(verdict, RetryLater):
            verdict = plan_retry(verdict, delivery.redelivery, runtime.settings, now=_now())
        if isinstance(verdict, Requeue):
            await _requeue(delivery, verdict)
            return None
        if isinstance(verdict, Transient):
            await _transient(delivery, exc)
            raise
        return await _finish(delivery, error=_error(verdict))
    return await _finish(
        delivery, completion=completion, model_seconds=model_seconds, error=_budget_exhausted(completion)
    )


async def _transient(delivery: Delivery, exc: Exception) -> None:
    """Before the host retries: on the last attempt (``maxDequeueCount``) record the outcome for the sender;
    what the job left aside stays, so `python -m shared replay` can run it again from the poison queue."""
    count = delivery.message.dequeue_count or 1
    if count < max_dequeue_count():
        logger.warning("job %s attempt %d failed, host will retry: %s", delivery.job_id, count, brief(exc))
        return
    gave_up = GiveUp("transient_exhausted", f"gave up after {count} attempts: {brief(exc)}")
    await _finish(delivery, error=_error(gave_up), keep_leftovers=True)


def _budget_exhausted(completion: ChatCompletion) -> ErrorInfo | None:
    """HTTP 200 with no output: a reasoning model spent the whole ``max_completion_tokens`` thinking.
    Not a success: the sender needs to know to give it more room (or ask for less reasoning)."""
    choice = completion.choices[0]
    if choice.message.content or choice.finish_reason != "length":
        return None
    usage = _usage(completion)
    spent = f"all {usage.completion_tokens}" if usage else "all its"
    reasoning = f" ({usage.reasoning_tokens} on reasoning)" if usage and usage.reasoning_tokens is not None else ""
    return ErrorInfo(
        code="output_budget_exhausted",
        message=f"the model used {spent} completion tokens{reasoning} before writing any output: raise "
        "max_completion_tokens or lower reasoning_effort",
    )


def _usage(completion: ChatCompletion) -> Usage | None:
    usage = completion.usage
    if usage is None:
        return None
    completion_details, prompt_details = usage.completion_tokens_details, usage.prompt_tokens_details
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        reasoning_tokens=completion_details.reasoning_tokens if completion_details else None,
        cached_tokens=prompt_details.cached_tokens if prompt_details else None,
    )


def _check_allowed(job: Job, settings: Settings) -> None:
    """Checks that depend on this deployment's settings rather than on the contract itself."""
    if job.deployment is not None and job.deployment not in settings.allowed_deployments:
        raise InvalidJob(
            "deployment_not_allowed",
            f"deployment '{job.deployment}' is not allowed (allowed: {', '.join(settings.allowed_deployments)})",
            job_id=job.id,
        )
    if job.reply_to is not None and job.reply_to not in settings.reply_queues_allowed:
        raise InvalidJob(
            "reply_to_not_allowed", f"reply_to queue '{job.reply_to}' is not in REPLY_QUEUES_ALLOWED", job_id=job.id
        )
    if (chars := job.prompt_chars()) > settings.max_prompt_chars:
        raise InvalidJob(
            "prompt_too_large", f"prompt is {chars} characters; the limit is {settings.max_prompt_chars}", job_id=job.id
        )


async def _call_model(runtime: Runtime, job: Job) -> tuple[ChatCompletion, float, PoolEntry]:
    """One chat completion through the pool (``shared.routing``): the best deployment the job may use,
    failing over to the next; returns the answer, the seconds it took and the deployment that gave it."""
    params = job.request_parameters()
    messages = job.chat_messages()
    tokens = pacing.estimate_tokens(messages, params.get("max_completion_tokens"))

    async def send(route: Route, last: bool) -> tuple[ChatCompletion, float]:
        entry, wait = route.entry, runtime.settings.model_admission_wait_seconds
        deadline = time.monotonic() + wait
        while True:
            try:
                left = max(deadline - time.monotonic(), 0.0) if wait else None
                async with _admitted(route.gate, tokens, wait=left):
                    with telemetry.current().chat(
                        deployment=entry.deployment, endpoint=entry.endpoint, parameters=params, messages=messages
                    ) as call:
                        began = time.monotonic()
                        completion = await runtime.client(entry.endpoint, sdk_retries=last).chat.completions.create(
                            model=entry.deployment,
                            messages=messages,  # type: ignore[arg-type]  # plain dicts of role/content
                            **params,
                        )
                        elapsed = time.monotonic() - began
                        call.response(completion)
                return completion, elapsed
            except openai.RateLimitError as exc:
                # Paced, a 429 is not retried by the SDK (shared/pacing.py): with no other deployment to turn
                # to, wait in the gate again (it holds for the retry-after), within the same bound.
                if not (wait and last and time.monotonic() < deadline):
                    raise
                route.gate.observe(429, exc.response.headers)  # the hold, even if no response hook saw it

    (completion, elapsed), entry = await runtime.router.call(runtime.settings.entries_for(job.deployment), tokens, send)
    return completion, elapsed, entry


def _admitted(gate: pacing.Gate, tokens: int, *, wait: float | None) -> AbstractAsyncContextManager[object]:
    """Through the deployment's pacing gate within ``wait`` seconds (raises ``pacing.AdmissionTimeout``);
    straight on with pacing off (``MODEL_ADMISSION_WAIT_SECONDS`` 0: ``wait`` None)."""
    return nullcontext() if wait is None else gate.admit(tokens, wait=wait)


# What to do when a model refuses a parameter (reasoning models take only their defaults for these).
_PARAMETER_ADVICE = {
    "temperature": "reasoning models (gpt-5.x, o-series) accept only the default: leave temperature out",
    "top_p": "reasoning models (gpt-5.x, o-series) accept only the default: leave top_p out",
    "stop": "reasoning models do not take stop sequences: leave stop out",
    "max_tokens": "send max_completion_tokens instead",
    "reasoning_effort": "only reasoning models take reasoning_effort, and not every value: leave it out or pick "
    "low, medium or high",
    "verbosity": "only GPT-5 family models take verbosity: leave it out",
}


def classify(exc: Exception, runtime: Runtime, *, deployment: str | None = None) -> Verdict:
    """Map a model-call error to the policy (``deployment``: the one the request went to, for messages)."""
    if isinstance(exc, pacing.AdmissionTimeout):  # never sent: the instance's own gate said wait longer
        return RetryLater("throttled", exc.delay, f"not admitted by this instance's pacing gate: {exc}")
    if isinstance(exc, ModelUnavailable):  # never sent: every deployment's circuit is open
        return RetryLater("outage", exc.delay, str(exc))
    if failure_kind(exc) == "failed":  # 5xx, 408, timeout, dropped connection: on every deployment tried
        return RetryLater("outage", 0.0, f"Azure OpenAI did not answer: {brief(exc)}")
    if isinstance(exc, openai.RateLimitError):
        delay = _retry_after(exc.response.headers) or 30.0
        return RetryLater("throttled", delay, f"rate limited by Azure OpenAI; asked to retry after {delay:.0f} s")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return _denied(exc, runtime)
    if isinstance(exc, openai.NotFoundError):
        return GiveUp("deployment_not_found", f"Azure OpenAI has no such deployment: {brief(exc)}")
    if isinstance(exc, openai.BadRequestError):
        return _refused(exc, runtime, deployment)
    if isinstance(exc, openai.APIStatusError) and 400 <= exc.status_code < 500 and exc.status_code not in (408, 409):
        return GiveUp("model_rejected", f"Azure OpenAI refused the request: {brief(exc)}")
    if isinstance(exc, ValueError | TypeError) and not isinstance(exc, openai.OpenAIError):
        # Raised while building the request, before anything is sent (e.g. a number JSON cannot carry).
        return GiveUp("invalid_request", f"the request could not be encoded for Azure OpenAI: {brief(exc)}")
    if isinstance(exc, ClientAuthenticationError):
        logger.error("no credential could get a token for Azure OpenAI: %s", exc.message)
    return Transient()


def _denied(exc: openai.AuthenticationError | openai.PermissionDeniedError, runtime: Runtime) -> Verdict:
    """401/403: a role still propagating (retry for a while) or a token the service cannot take (give up)."""
    if exc.code == "PermissionDenied":
        principal = runtime.identity.get("oid", "unknown")
        who = runtime.identity.get("upn") or runtime.identity.get("appid") or ""
        return RetryLater(
            "permission_denied",
            0.0,
            f"principal {principal}{f' ({who})' if who else ''} lacks the '{OPENAI_USER_ROLE}' role on "
            f"{pacing.origin(str(exc.request.url))}. Grant it on that Azure OpenAI resource: az role assignment "
            f"create --assignee {principal} --role '{OPENAI_USER_ROLE}' --scope <OpenAI resource id>; "
            "a new assignment takes up to ~10 minutes to apply.",
        )
    return GiveUp(
        "token_rejected",
        f"Azure OpenAI rejected the token (HTTP {exc.status_code}): it must be issued for the scope "
        f"{COGNITIVE_SERVICES_SCOPE} and be unexpired. Service said: {brief(exc)}",
    )


def _refused(exc: openai.BadRequestError, runtime: Runtime, deployment: str | None) -> GiveUp:
    """400: the content filter, a parameter the model does not take, or another refusal."""
    if exc.code == "content_filter":
        return GiveUp("content_filter", "the prompt was blocked by Azure OpenAI's content filter")
    if exc.code in ("unsupported_parameter", "unsupported_value"):
        param = exc.param or "a parameter"
        advice = _PARAMETER_ADVICE.get(param, f"leave {param} out for this deployment")
        return GiveUp(
            "unsupported_parameter",
            f"deployment '{deployment or runtime.settings.default_deployment}' does not accept '{param}': "
            f"{advice}. Service said: {brief(exc)}",
        )
    return GiveUp("model_rejected", f"Azure OpenAI refused the request: {brief(exc)}")


def plan_retry(
    verdict: RetryLater,
    previous: Redelivery | None,
    settings: Settings,
    *,
    now: datetime,
    jitter: Callable[[float, float], float] = random.uniform,
) -> Requeue | GiveUp | Transient:
    """Decide whether a job asked to retry later goes back on the queue, and when.

    Attempts and age count per reason: a job throttled after waiting out a role assignment starts
    its throttling budget afresh. Throttling is bounded by ``THROTTLE_MAX_ATTEMPTS`` re-enqueues,
    each waiting the advertised time capped by ``THROTTLE_MAX_DELAY_SECONDS``; a missing role by
    ``PERMISSION_RETRY_SECONDS`` since it was first seen, with backoff ``PERMISSION_BACKOFF``; an
    outage by ``MODEL_OUTAGE_TOLERANCE_SECONDS``, waiting the longer of ``OUTAGE_BACKOFF`` and the time
    until a circuit half-opens. Past its bound an outage is left to the host's own retries (``Transient``:
    then the poison queue, from which a job can be replayed), the others fail. Delays carry up to 20 %
    jitter, so instances held up together do not return together.
    """
    same = previous is not None and previous.reason == verdict.reason
    attempt = (previous.attempt if previous and same else 0) + 1
    first_seen = previous.first_seen if previous and same else now
    waited = (now - first_seen).total_seconds()
    if verdict.reason == "throttled":
        if attempt > settings.throttle_max_attempts:
            return GiveUp("throttled", f"{verdict.message}; gave up after {attempt - 1} re-enqueues")
        delay = min(verdict.delay, settings.throttle_max_delay_seconds)
    elif verdict.reason == "outage":
        if waited >= settings.model_outage_tolerance_seconds:
            return Transient()
        delay = max(verdict.delay, OUTAGE_BACKOFF[min(attempt - 1, len(OUTAGE_BACKOFF) - 1)])
        delay = min(delay, max(1.0, settings.model_outage_tolerance_seconds - waited))
    else:
        if waited >= settings.permission_retry_seconds:
            return GiveUp("permission_denied", f"{verdict.message} Still denied after {waited:.0f} s.")
        delay = PERMISSION_BACKOFF[min(attempt - 1, len(PERMISSION_BACKOFF) - 1)]
        delay = min(delay, max(1.0, settings.permission_retry_seconds - waited))
        return Requeue(Redelivery(attempt=attempt, first_seen=first_seen, reason=verdict.reason), delay)
    return Requeue(Redelivery(attempt=attempt, first_seen=first_seen, reason=verdict.reason), delay * jitter(1.0, 1.2))


async def _requeue(delivery: Delivery, requeue: Requeue) -> None:
    """Store the job with its new retry state, then enqueue a pointer to it, invisible for the delay."""
    runtime, job = delivery.runtime, delivery.job
    assert job is not None
    # The stored copy carries this delivery's span as its trace context: the next delivery continues the trace.
    update = {"id": delivery.job_id, **delivery.span.carrier()}
    state = RetryState(job=job.model_copy(update=update), redelivery=requeue.redelivery, payload=delivery.payload)
    ref = await store.save_retry_state(runtime, state)
    queue = runtime.queues.get_queue_client(runtime.settings.jobs_queue)
    await queue.send_message(ref.model_dump_json(), visibility_timeout=max(1, round(requeue.delay)))
    redelivery = requeue.redelivery
    telemetry.current().requeued(redelivery.reason)
    logger.warning(
        "job %s re-enqueued (%s, attempt %d) to run in %.0f s",
        delivery.job_id,
        redelivery.reason,
        redelivery.attempt,
        requeue.delay,
    )


async def _finish(
    delivery: Delivery,
    *,
    error: ErrorInfo | None = None,
    completion: ChatCompletion | None = None,
    model_seconds: float | None = None,
    keep_leftovers: bool = False,
    amend: Callable[[Result], Result] | None = None,
) -> Result | None:
    """Store the result (as ``amend`` changes it: the batch lane's fields), release what the job left
    aside (unless the message goes to poison and may be replayed), then notify; log one line."""
    result = _result(delivery, error=error, completion=completion, model_seconds=model_seconds)
    result = amend(result) if amend is not None else result
    reply_to = delivery.job.reply_to if delivery.job else None
    tracing = telemetry.current()
    delivery.span.outcome(result)
    with tracing.step("store result"):
        stored = await store.store_result(delivery.runtime, result, reply_to)
    if not keep_leftovers:
        await store.release(delivery.runtime, delivery.job_id, payload=delivery.payload, requeued=delivery.requeued)
    if not stored:
        logger.info("job %s: a result was already stored by another delivery; kept it", result.id)
        return None
    tracing.finished(result)
    if reply_to:
        await store.notify(delivery.runtime, result, reply_to)
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


def _result(
    delivery: Delivery,
    *,
    completion: ChatCompletion | None = None,
    model_seconds: float | None = None,
    error: ErrorInfo | None = None,
) -> Result:
    job, message, started = delivery.job, delivery.message, delivery.started
    finished = _now()
    enqueued = _aware(message.insertion_time)
    fields: dict[str, Any] = {}
    if completion is not None:
        choice = completion.choices[0]
        fields = {
            "model": completion.model,
            "output": choice.message.content,
            "finish_reason": choice.finish_reason,
            "usage": _usage(completion),
        }
        fmt = job.parameters.response_format if job else None
        if fmt is not None and fmt.type != "text" and choice.message.content:
            try:
                fields["output_json"] = json.loads(choice.message.content)
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
            enqueued_at=enqueued,
            started_at=started,
            finished_at=finished,
            queue_seconds=(started - enqueued).total_seconds() if enqueued else None,
            model_seconds=model_seconds,
        ),
        **fields,
    )


def _deployment(delivery: Delivery) -> str | None:
    """The deployment that answered, else the one the job asked for."""
    if delivery.served is not None:
        return delivery.served.deployment
    return (delivery.job.deployment or delivery.runtime.settings.default_deployment) if delivery.job else None


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
        recorder.queue_sampled(name, depth, max((_now() - head).total_seconds(), 0.0) if head else 0.0)


async def _queue_sample(queue: QueueClient) -> tuple[int, datetime | None]:
    """Approximate message count (invisible ones included) and the insertion time of the head message
    (the first visible one), or (0, None) for a queue that does not exist (a poison queue before its
    first message)."""
    try:
        properties = await queue.get_queue_properties()
        head = await queue.peek_messages(max_messages=1)
    except ResourceNotFoundError:
        return 0, None
    return properties.approximate_message_count or 0, _aware(head[0].inserted_on) if head else None


def _aware(moment: datetime | None) -> datetime | None:
    """Microsoft's Python worker hands out aware UTC times; a naive one (another host) is UTC too."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _error(failure: GiveUp) -> ErrorInfo:
    return ErrorInfo(code=failure.code, message=failure.message)


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (what Azure OpenAI sends with a 429)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return float(value) / scale
            except ValueError:
                continue
    return None


def _now() -> datetime:
    return datetime.now(UTC)
