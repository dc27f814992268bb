"""How a queued job becomes a stored result.

Delivery is at-least-once, the model is slow, rate-limited and sometimes down, and senders
make mistakes. The policy, in the order ``handle`` applies it:

- The message is parsed and checked; anything invalid becomes a ``failed`` result at once and
  the message is consumed (never retried, never poisoned).
- A claim-check reference (a job too big for a message) is resolved from the payloads container
  first; the payload blob is deleted once the job's result is stored.
- A job whose result already exists is consumed without calling the model (redelivery).
- Model errors are classified (``classify``) into a verdict, a plain value:
  * ``GiveUp`` (400 incl. content filter, 404 deployment, wrong token audience): failed result.
  * ``RetryLater`` (429 with a wait longer than the SDK honours, PermissionDenied while a role
    assignment propagates): ``plan_retry`` bounds it by attempts (throttling) or age
    (permissions); within the bound a delayed copy goes back on the queue and this delivery
    ends, past it the job gets a failed result.
  * ``Transient`` (5xx, timeouts, dropped connections, storage and credential errors): the
    error is re-raised so the host retries after ``visibilityTimeout``; on the last attempt
    (``maxDequeueCount``) a failed result is written first, then the host poisons the message.
- The result is written create-only; then the ``reply_to`` notice is sent.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import openai
from azure.core.exceptions import ClientAuthenticationError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient
from openai.types.chat import ChatCompletion

from shared.connections import Runtime, get_runtime
from shared.constants import COGNITIVE_SERVICES_SCOPE, OPENAI_USER_ROLE, brief
from shared.jobs import (
    CLAIM_CHECK_BYTES,
    ErrorInfo,
    InvalidJob,
    Job,
    JobReference,
    Notice,
    Redelivery,
    Result,
    Timings,
    Usage,
    parse_job,
    parse_message,
)
from shared.settings import Settings, max_dequeue_count

logger = logging.getLogger(__name__)

PERMISSION_BACKOFF = (5.0, 15.0, 30.0, 60.0)  # role assignments usually land within 1-10 minutes


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

    reason: Literal["throttled", "permission_denied"]
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


async def handle(message: QueueMessage, runtime: Runtime | None = None) -> Result | None:
    """Process one queue message. Returns the stored result, or None when there was nothing to do
    (the result already existed, or the job was re-enqueued). Raises to make the host retry."""
    runtime = runtime or get_runtime()
    settings = runtime.settings
    started = _now()
    message_id = message.id or "unknown"
    dequeue_count = message.dequeue_count or 1
    ref: JobReference | None = None  # set when the message is a claim check for a job stored as a blob
    try:
        parsed = parse_message(message.get_body())
        if isinstance(parsed, JobReference):
            ref = parsed
            job = await _load_payload(runtime, ref)
        else:
            job = parsed
        job_id = job.id or message_id
        _check_allowed(job, settings)
    except InvalidJob as exc:
        # Keyed by the job's own id when it had a valid one, else by the queue message id.
        job_id = exc.job_id or message_id
        result = _result(runtime, job_id, message, started, error=ErrorInfo(code=exc.code, message=exc.message))
        return await _finish(runtime, result, reply_to=None, payload=ref)

    attempts = dequeue_count + (job.redelivery.attempt if job.redelivery else 0)
    if job_id in runtime.in_flight:
        logger.info("job %s is already in progress here; duplicate message %s consumed", job_id, message_id)
        return None
    runtime.in_flight.add(job_id)  # before any await, so a concurrent duplicate sees it
    try:
        if await _result_exists(runtime, job_id):
            logger.info("job %s already has a result; redelivered message %s consumed", job_id, message_id)
            await _release_payload(runtime, ref)
            return None
        try:
            completion, model_seconds = await _call_model(runtime, job)
        except Exception as exc:
            verdict = classify(exc, runtime)
            if isinstance(verdict, RetryLater):
                planned = plan_retry(verdict, job.redelivery, runtime.settings, now=_now())
                if isinstance(planned, Requeue):
                    await _requeue(runtime, job, job_id, planned)
                    return None
                verdict = planned
            elif isinstance(verdict, Transient):
                if dequeue_count < max_dequeue_count():
                    logger.warning("job %s attempt %d failed, host will retry: %s", job_id, dequeue_count, brief(exc))
                    raise
                # Last attempt: record the outcome for the sender, then let the host poison the message.
                verdict = GiveUp("transient_exhausted", f"gave up after {dequeue_count} attempts: {brief(exc)}")
                await _finish(
                    runtime,
                    _result(runtime, job_id, message, started, job=job, attempts=attempts, error=_error(verdict)),
                    reply_to=job.reply_to,
                    payload=ref,
                )
                raise
            result = _result(runtime, job_id, message, started, job=job, attempts=attempts, error=_error(verdict))
            return await _finish(runtime, result, reply_to=job.reply_to, payload=ref)
        result = _result(
            runtime,
            job_id,
            message,
            started,
            job=job,
            attempts=attempts,
            completion=completion,
            model_seconds=model_seconds,
        )
        return await _finish(runtime, result, reply_to=job.reply_to, payload=ref)
    finally:
        runtime.in_flight.discard(job_id)


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


async def _call_model(runtime: Runtime, job: Job) -> tuple[ChatCompletion, float]:
    params: dict[str, Any] = job.parameters.model_dump(exclude_none=True)
    began = time.monotonic()
    completion = await runtime.openai.chat.completions.create(
        model=job.deployment or runtime.settings.default_deployment,
        messages=job.chat_messages(),  # type: ignore[arg-type]  # plain dicts of role/content
        **params,
    )
    return completion, time.monotonic() - began


def classify(exc: Exception, runtime: Runtime) -> Verdict:
    """Map a model-call error to the policy."""
    if isinstance(exc, openai.RateLimitError):
        delay = _retry_after(exc.response.headers) or 30.0
        return RetryLater("throttled", delay, f"rate limited by Azure OpenAI; asked to retry after {delay:.0f} s")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        if exc.code == "PermissionDenied":
            principal = runtime.identity.get("oid", "unknown")
            who = runtime.identity.get("upn") or runtime.identity.get("appid") or ""
            return RetryLater(
                "permission_denied",
                0.0,
                f"principal {principal}{f' ({who})' if who else ''} lacks the '{OPENAI_USER_ROLE}' role on "
                f"{runtime.settings.openai_endpoint}. Grant it on the Azure OpenAI resource: az role assignment "
                f"create --assignee {principal} --role '{OPENAI_USER_ROLE}' --scope <OpenAI resource id>; "
                "a new assignment takes up to ~10 minutes to apply.",
            )
        return GiveUp(
            "token_rejected",
            f"Azure OpenAI rejected the token (HTTP {exc.status_code}): it must be issued for the scope "
            f"{COGNITIVE_SERVICES_SCOPE} and be unexpired. Service said: {brief(exc)}",
        )
    if isinstance(exc, openai.NotFoundError):
        return GiveUp("deployment_not_found", f"Azure OpenAI has no such deployment: {brief(exc)}")
    if isinstance(exc, openai.BadRequestError):
        if exc.code == "content_filter":
            return GiveUp("content_filter", "the prompt was blocked by Azure OpenAI's content filter")
        return GiveUp("model_rejected", f"Azure OpenAI refused the request: {brief(exc)}")
    if isinstance(exc, openai.APIStatusError) and 400 <= exc.status_code < 500 and exc.status_code not in (408, 409):
        return GiveUp("model_rejected", f"Azure OpenAI refused the request: {brief(exc)}")
    if isinstance(exc, ClientAuthenticationError):
        logger.error("no credential could get a token for Azure OpenAI: %s", exc.message)
    return Transient()


def plan_retry(
    verdict: RetryLater,
    previous: Redelivery | None,
    settings: Settings,
    *,
    now: datetime,
    jitter: Callable[[float, float], float] = random.uniform,
) -> Requeue | GiveUp:
    """Decide whether a job asked to retry later goes back on the queue, and when.

    Attempts and age count per reason: a job throttled after waiting out a role assignment starts
    its throttling budget afresh. Throttling is bounded by ``THROTTLE_MAX_ATTEMPTS`` re-enqueues,
    each waiting the advertised time capped by ``THROTTLE_MAX_DELAY_SECONDS`` plus up to 20 %
    jitter (so instances throttled together do not return together); a missing role by
    ``PERMISSION_RETRY_SECONDS`` since it was first seen, with backoff ``PERMISSION_BACKOFF``.
    """
    same = previous is not None and previous.reason == verdict.reason
    attempt = (previous.attempt if previous and same else 0) + 1
    first_seen = previous.first_seen if previous and same else now
    if verdict.reason == "throttled":
        if attempt > settings.throttle_max_attempts:
            return GiveUp("throttled", f"{verdict.message}; gave up after {attempt - 1} re-enqueues")
        delay = min(verdict.delay, settings.throttle_max_delay_seconds) * jitter(1.0, 1.2)
    else:
        waited = (now - first_seen).total_seconds()
        if waited >= settings.permission_retry_seconds:
            return GiveUp("permission_denied", f"{verdict.message} Still denied after {waited:.0f} s.")
        delay = PERMISSION_BACKOFF[min(attempt - 1, len(PERMISSION_BACKOFF) - 1)]
        delay = min(delay, max(1.0, settings.permission_retry_seconds - waited))
    return Requeue(Redelivery(attempt=attempt, first_seen=first_seen, reason=verdict.reason), delay)


async def _requeue(runtime: Runtime, job: Job, job_id: str, requeue: Requeue) -> None:
    """Send the delayed copy ``plan_retry`` asked for (as a claim check when it is too big for a message)."""
    settings = runtime.settings
    delay, redelivery = requeue.delay, requeue.redelivery
    copy = job.model_copy(update={"id": job_id, "redelivery": redelivery})
    body = copy.model_dump_json(exclude_none=True)
    if len(body.encode()) > CLAIM_CHECK_BYTES:  # too big for a message: the copy goes as a claim check too
        await runtime.ensure_once("payloads", _payloads(runtime).create_container)
        await _payloads(runtime).upload_blob(f"{job_id}.json", body.encode(), overwrite=True)
        body = JobReference.for_job(job_id).model_dump_json()
    queue = runtime.queues.get_queue_client(settings.jobs_queue)
    await queue.send_message(body, visibility_timeout=max(1, round(delay)))
    logger.warning(
        "job %s re-enqueued (%s, attempt %d) to run in %.0f s", job_id, redelivery.reason, redelivery.attempt, delay
    )


def _payloads(runtime: Runtime) -> ContainerClient:
    return runtime.blobs.get_container_client(runtime.settings.payloads_container)


async def _load_payload(runtime: Runtime, ref: JobReference) -> Job:
    """Claim check: the job's JSON from the payloads container, checked exactly as a message is."""
    # Bounded so a huge blob cannot exhaust memory: a valid job is at most MAX_PROMPT_CHARS of text,
    # up to 12 bytes a character once JSON-escaped, plus its other fields.
    limit = 12 * runtime.settings.max_prompt_chars + 1024 * 1024
    where = f"{runtime.settings.payloads_container}/{ref.payload.blob}"
    try:
        body = await (await _payloads(runtime).download_blob(ref.payload.blob, offset=0, length=limit + 1)).readall()
    except ResourceNotFoundError as exc:
        raise InvalidJob(
            "payload_missing", f"the job's payload blob {where} does not exist: submit the job again", job_id=ref.id
        ) from exc
    if len(body) > limit:
        raise InvalidJob("payload_too_large", f"payload blob {where} is over {limit} bytes", job_id=ref.id)
    try:
        job = parse_job(body)
    except InvalidJob as exc:
        raise InvalidJob(exc.code, f"payload: {exc.message}", job_id=ref.id) from exc
    if job.id != ref.id:
        raise InvalidJob("payload_mismatch", f"payload blob {where} holds job id {job.id!r}", job_id=ref.id)
    return job


async def _release_payload(runtime: Runtime, ref: JobReference | None) -> None:
    """Delete a claim-checked job's payload once its result is stored. Best effort: the result is
    already written, so a failure must not fail the job; the blob is left to the container's
    lifecycle rule (blob expiry needs a hierarchical-namespace account, which this is not)."""
    if ref is None:
        return
    try:
        await _payloads(runtime).delete_blob(ref.payload.blob)
    except ResourceNotFoundError:
        pass  # another delivery of the same job got there first
    except Exception as exc:
        logger.warning("job %s: payload blob not deleted, left for the lifecycle rule: %s", ref.id, brief(exc))


async def _result_exists(runtime: Runtime, job_id: str) -> bool:
    # A one-byte GET rather than HEAD: a 404 to HEAD comes without Content-Length, so the HTTP
    # client drops the connection and the next job pays a new TLS handshake (measured in bench/).
    try:
        await (await runtime.results().download_blob(f"{job_id}.json", offset=0, length=1)).readall()
    except ResourceNotFoundError:
        return False
    return True


async def _finish(
    runtime: Runtime, result: Result, *, reply_to: str | None, payload: JobReference | None = None
) -> Result | None:
    """Write the result once (If-None-Match: *), drop the claim-checked payload, then notify; log one line."""
    container = runtime.results()
    await runtime.ensure_once("results", container.create_container)
    blob_name = f"{result.id}.json"
    try:
        await container.upload_blob(
            blob_name,
            result.model_dump_json(exclude_none=True).encode(),
            overwrite=False,
            content_type="application/json",
        )
    except ResourceExistsError:
        logger.info("job %s: a result was already stored by another delivery; kept it", result.id)
        await _release_payload(runtime, payload)
        return None
    await _release_payload(runtime, payload)
    if reply_to:
        notice = Notice(
            id=result.id,
            status=result.status,
            result_container=container.container_name,
            result_blob=blob_name,
            error_code=result.error.code if result.error else None,
        )
        queue = runtime.queues.get_queue_client(reply_to)
        await runtime.ensure_once(f"queue:{reply_to}", queue.create_queue)
        await queue.send_message(notice.model_dump_json(exclude_none=True))
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
    runtime: Runtime,
    job_id: str,
    message: QueueMessage,
    started: datetime,
    *,
    job: Job | None = None,
    attempts: int | None = None,
    completion: ChatCompletion | None = None,
    model_seconds: float | None = None,
    error: ErrorInfo | None = None,
) -> Result:
    finished = _now()
    enqueued = message.insertion_time
    if enqueued is not None and enqueued.tzinfo is None:
        # Microsoft's Python worker hands out aware UTC times; a naive one (another host) is UTC too.
        enqueued = enqueued.replace(tzinfo=UTC)
    fields: dict[str, Any] = {}
    if completion is not None:
        choice = completion.choices[0]
        fields = {
            "model": completion.model,
            "output": choice.message.content,
            "finish_reason": choice.finish_reason,
            "usage": Usage.model_validate(completion.usage.model_dump()) if completion.usage else None,
        }
        fmt = job.parameters.response_format if job else None
        if fmt is not None and fmt.type != "text" and choice.message.content:
            try:
                fields["output_json"] = json.loads(choice.message.content)
            except ValueError:
                logger.warning("job %s asked for JSON but the model's output does not parse", job_id)
    return Result(
        id=job_id,
        status="failed" if error else "succeeded",
        deployment=(job.deployment or runtime.settings.default_deployment) if job else None,
        error=error,
        metadata=job.metadata if job else None,
        attempts=attempts if attempts is not None else (message.dequeue_count or 1),
        message_id=message.id,
        timings=Timings(
            enqueued_at=enqueued,
            started_at=started,
            finished_at=finished,
            queue_seconds=(started - enqueued).total_seconds() if enqueued else None,
            model_seconds=model_seconds,
        ),
        **fields,
    )


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
