"""What a failed model call means for its job: the verdicts, ``classify`` and ``plan_retry``.

Every lane asks the same two questions when a call to Azure OpenAI fails, and gets the same answers:

- ``classify`` turns the error into a verdict, a plain value:
  * ``GiveUp`` (400 incl. content filter (with the categories reported), refused parameters and a
    Responses-only model sent a chat completion (``responses_only``), 404 deployment, a token with the wrong
    audience, a request the SDK could not encode): the job ends as a failed result with that code.
  * ``RetryLater`` (429 past what the instance's pacing gate waits, the gate not admitting the call within
    ``MODEL_ADMISSION_WAIT_SECONDS``, PermissionDenied while a role assignment propagates, and an outage:
    5xx, 408, timeouts or dropped connections on every deployment the job may use, or every circuit open),
    and a flex request refused for capacity while the job's flex window is open (``shared.tiers``).
  * ``Transient`` (storage and credential errors, anything unrecognised): the host's own retries, bounded
    by ``maxDequeueCount``, then the poison queue.
- ``plan_retry`` bounds a ``RetryLater``: within its bound a ``Requeue`` (a delayed copy of the job goes
  back on the queue), past it a ``GiveUp`` (throttled, permission_denied) or, for an outage past
  ``MODEL_OUTAGE_TOLERANCE_SECONDS``, ``Transient``.

Carrying the verdict out (storing the result, re-enqueuing) is ``shared.delivery``'s.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import openai
from azure.core.exceptions import ClientAuthenticationError

from shared import pacing
from shared.apis import prompt_filter_error
from shared.connections import Runtime
from shared.constants import OPENAI_USER_ROLE, SCOPE_SUFFIX, audience_of, audiences_named, brief
from shared.jobs import ErrorInfo, FilterFinding, Redelivery, RetryReason
from shared.routing import ModelUnavailable, failure_kind
from shared.settings import Settings
from shared.tiers import FlexUnavailable

logger = logging.getLogger(__name__)

PERMISSION_BACKOFF = (5.0, 15.0, 30.0, 60.0)  # role assignments usually land within 1-10 minutes
OUTAGE_BACKOFF = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0)  # regional incidents last minutes to hours
THROTTLE_DEFAULT_DELAY = 30.0  # a 429 that says nothing of when to come back


@dataclass(frozen=True)
class GiveUp:
    """Verdict: the job ends now as a failed result with this code."""

    code: str
    message: str
    findings: tuple[FilterFinding, ...] = field(default=(), hash=False)  # content_filter: what the filter said

    def error(self) -> ErrorInfo:
        """The ``error`` the failed result carries."""
        return ErrorInfo(code=self.code, message=self.message, content_filter=list(self.findings) or None)


@dataclass(frozen=True)
class RetryLater:
    """Verdict: run the job again after ``delay`` seconds, by re-enqueuing a delayed copy."""

    reason: RetryReason
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
    if isinstance(exc, FlexUnavailable):  # flex capacity short, and the job's flex window still open
        return RetryLater("flex_unavailable", exc.delay, str(exc))
    if failure_kind(exc) == "failed":  # 5xx, 408, timeout, dropped connection: on every deployment tried
        return RetryLater("outage", 0.0, f"Azure OpenAI did not answer: {brief(exc)}")
    if isinstance(exc, openai.RateLimitError):
        delay = pacing.retry_after(exc.response.headers) or THROTTLE_DEFAULT_DELAY
        return RetryLater("throttled", delay, f"rate limited by Azure OpenAI; asked to retry after {delay:.0f} s")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return _denied(exc, runtime)
    if isinstance(exc, openai.NotFoundError):
        return GiveUp("deployment_not_found", f"Azure OpenAI has no such deployment: {brief(exc)}")
    if isinstance(exc, openai.BadRequestError):
        return _refused(exc, deployment or runtime.settings.default_deployment)
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
    return GiveUp("token_rejected", _rejected(exc, runtime.settings.token_scope))


def _rejected(exc: openai.AuthenticationError | openai.PermissionDeniedError, scope: str) -> str:
    """Why the token was refused: an audience the endpoint does not take (its 401 names the ones it does, so the
    scope to set is known: a Foundry project endpoint takes only https://ai.azure.com), else expiry or tenant."""
    accepted = audiences_named(f"{exc.message} {exc.body}")
    if accepted and audience_of(scope) not in accepted:
        wanted = f"{accepted[0]}{SCOPE_SUFFIX}"
        return (
            f"Azure OpenAI rejected the token (HTTP {exc.status_code}): the endpoint accepts tokens for "
            f"{' or '.join(accepted)}, and this worker asks for the scope {scope}. Set AZURE_OPENAI_TOKEN_SCOPE="
            f"{wanted}. Service said: {brief(exc)}"
        )
    return (
        f"Azure OpenAI rejected the token (HTTP {exc.status_code}): it must be issued for the scope "
        f"{scope} (AZURE_OPENAI_TOKEN_SCOPE) and be unexpired. Service said: {brief(exc)}"
    )


def _refused(exc: openai.BadRequestError, deployment: str) -> GiveUp:
    """400: the content filter, a parameter the model does not take, or another refusal."""
    if exc.code == "content_filter":
        error = prompt_filter_error(exc.body)
        return GiveUp(error.code, error.message, tuple(error.content_filter or ()))
    if exc.code == "OperationNotSupported":  # a Responses-only model sent a chat completion
        return GiveUp(
            "responses_only",
            f"deployment '{deployment}' does not take Chat Completions (a Responses-only model): declare it as "
            '"api": "responses" (AZURE_OPENAI_API=responses, or its AZURE_OPENAI_POOL entry). '
            f"Service said: {brief(exc)}",
        )
    if exc.code in ("unsupported_parameter", "unsupported_value"):
        param = exc.param or "a parameter"
        advice = _PARAMETER_ADVICE.get(param, f"leave {param} out for this deployment")
        return GiveUp(
            "unsupported_parameter",
            f"deployment '{deployment}' does not accept '{param}': {advice}. Service said: {brief(exc)}",
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

    Two bounds hold. Per cause, attempts and age count afresh when the cause changes: throttling is
    bounded by ``THROTTLE_MAX_ATTEMPTS`` re-enqueues, each waiting the advertised time capped by
    ``THROTTLE_MAX_DELAY_SECONDS``; a missing role by ``PERMISSION_RETRY_SECONDS`` since it was first seen,
    with backoff ``PERMISSION_BACKOFF``; an outage by ``MODEL_OUTAGE_TOLERANCE_SECONDS``, waiting the longer
    of ``OUTAGE_BACKOFF`` and the time until a circuit half-opens. Per job, across every cause (causes that
    alternate, as 429s and 5xx do in one incident, would otherwise reset each other's bound for ever):
    ``RETRY_MAX_ATTEMPTS`` re-enqueues and ``RETRY_MAX_SECONDS``. Past a cause's bound an outage is left to
    the host's own retries (``Transient``: then the poison queue, from which a job can be replayed), the
    others fail; past the job's bound it fails with the last cause and the causes seen. Throttling and
    outage delays carry up to 20 % jitter, so instances held up together do not return together.
    """
    same = previous is not None and previous.reason == verdict.reason
    attempt = (previous.attempt if previous and same else 0) + 1
    first_seen = previous.first_seen if previous and same else now
    waited = (now - first_seen).total_seconds()
    causes = dict(previous.causes) if previous else {}
    causes[verdict.reason] = causes.get(verdict.reason, 0) + 1
    redelivery = Redelivery(
        attempt=attempt,
        first_seen=first_seen,
        reason=verdict.reason,
        total=(previous.total_attempts if previous else 0) + 1,
        since=previous.retrying_since if previous else now,
        causes=causes,
    )
    if exhausted := _job_bound(redelivery, verdict, settings, now):
        return exhausted
    if verdict.reason == "throttled":
        if attempt > settings.throttle_max_attempts:
            return GiveUp("throttled", f"{verdict.message}; gave up after {attempt - 1} re-enqueues")
        delay = min(verdict.delay, settings.throttle_max_delay_seconds)
    elif verdict.reason == "flex_unavailable":  # bounded by the flex window (shared/tiers.py), then default tier
        return Requeue(redelivery, max(1.0, verdict.delay))
    elif verdict.reason == "outage":
        if waited >= settings.model_outage_tolerance_seconds:
            return Transient()
        delay = max(verdict.delay, OUTAGE_BACKOFF[min(attempt - 1, len(OUTAGE_BACKOFF) - 1)])
        delay = min(delay, max(1.0, settings.model_outage_tolerance_seconds - waited))
    else:
        if waited >= settings.permission_retry_seconds:
            return GiveUp("permission_denied", f"{verdict.message} Still denied after {waited:.0f} s.")
        delay = PERMISSION_BACKOFF[min(attempt - 1, len(PERMISSION_BACKOFF) - 1)]
        return Requeue(redelivery, min(delay, max(1.0, settings.permission_retry_seconds - waited)))
    return Requeue(redelivery, delay * jitter(1.0, 1.2))


# The code a job fails with when its last cause is the one past the job's bound.
_CAUSE_CODES = {
    "throttled": "throttled",
    "permission_denied": "permission_denied",
    "outage": "model_unavailable",
    "flex_unavailable": "flex_unavailable",
}


def _job_bound(redelivery: Redelivery, verdict: RetryLater, settings: Settings, now: datetime) -> GiveUp | None:
    """The job's bound across every cause: past ``RETRY_MAX_ATTEMPTS`` or ``RETRY_MAX_SECONDS``, a failure
    with the last cause's code and the history (re-enqueues so far, how long, which causes how often)."""
    spent = (now - redelivery.retrying_since).total_seconds()
    done = redelivery.total - 1  # re-enqueues already made; this one would be the next
    if done < settings.retry_max_attempts and spent < settings.retry_max_seconds:
        return None
    seen = ", ".join(f"{cause} {count}" for cause, count in sorted(redelivery.causes.items()))
    return GiveUp(
        _CAUSE_CODES[verdict.reason],
        f"{verdict.message}; gave up after {done} re-enqueues over {spent:.0f} s ({seen}): the job's retry bound "
        f"(RETRY_MAX_ATTEMPTS {settings.retry_max_attempts}, RETRY_MAX_SECONDS {settings.retry_max_seconds})",
    )


__all__ = [
    "OUTAGE_BACKOFF",
    "PERMISSION_BACKOFF",
    "GiveUp",
    "Requeue",
    "RetryLater",
    "Transient",
    "Verdict",
    "classify",
    "plan_retry",
]
