"""Unit tests of ``plan_retry``: when a job asked to retry later goes back on the queue, and when it gives up.

Pure logic with an injected clock and jitter: no storage, no model, no sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from shared.jobs import Redelivery
from shared.policy import PERMISSION_BACKOFF, GiveUp, Requeue, RetryLater, Transient, plan_retry
from shared.settings import Settings

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com",
    "AZURE_OPENAI_DEPLOYMENT": "d",
    "THROTTLE_MAX_ATTEMPTS": "3",
    "THROTTLE_MAX_DELAY_SECONDS": "60",
    "PERMISSION_RETRY_SECONDS": "100",
}
SETTINGS = Settings.from_env(ENV)
THROTTLED = RetryLater("throttled", 20.0, "rate limited")
DENIED = RetryLater("permission_denied", 0.0, "role missing")


def no_jitter(low: float, high: float) -> float:
    return low


def max_jitter(low: float, high: float) -> float:
    return high


def plan(
    verdict: RetryLater,
    previous: Redelivery | None,
    *,
    now: datetime = T0,
    jitter: Callable[[float, float], float] = no_jitter,
) -> Requeue | GiveUp:
    return plan_retry(verdict, previous, SETTINGS, now=now, jitter=jitter)


def requeued(outcome: Requeue | GiveUp) -> Requeue:
    assert isinstance(outcome, Requeue), outcome
    return outcome


def test_first_throttle_is_attempt_one_first_seen_now() -> None:
    outcome = requeued(plan(THROTTLED, None))
    assert outcome.redelivery == Redelivery(
        attempt=1, first_seen=T0, reason="throttled", total=1, since=T0, causes={"throttled": 1}
    )
    assert outcome.delay == 20.0


def test_throttle_attempts_count_up_and_keep_first_seen() -> None:
    previous = None
    for expected in (1, 2, 3):
        outcome = requeued(plan(THROTTLED, previous, now=T0 + timedelta(minutes=expected)))
        assert outcome.redelivery.attempt == expected
        assert outcome.redelivery.first_seen == T0 + timedelta(minutes=1)
        previous = outcome.redelivery
    gave_up = plan(THROTTLED, previous)
    assert isinstance(gave_up, GiveUp) and gave_up.code == "throttled"
    assert "gave up after 3 re-enqueues" in gave_up.message


def test_throttle_delay_is_capped_then_jittered_up_to_a_fifth() -> None:
    long_wait = RetryLater("throttled", 500.0, "rate limited")
    assert requeued(plan(long_wait, None)).delay == 60.0  # THROTTLE_MAX_DELAY_SECONDS
    assert requeued(plan(long_wait, None, jitter=max_jitter)).delay == pytest.approx(72.0)
    seen = {requeued(plan_retry(THROTTLED, None, SETTINGS, now=T0)).delay for _ in range(50)}
    assert all(20.0 <= delay <= 24.0 for delay in seen) and len(seen) > 1  # the real jitter, within bounds


def test_counting_restarts_when_the_reason_changes() -> None:
    waited_for_role = Redelivery(attempt=4, first_seen=T0 - timedelta(minutes=9), reason="permission_denied")
    outcome = requeued(plan(THROTTLED, waited_for_role))
    assert (outcome.redelivery.attempt, outcome.redelivery.first_seen) == (1, T0)
    assert outcome.redelivery.reason == "throttled"
    throttled_thrice = Redelivery(attempt=3, first_seen=T0 - timedelta(hours=1), reason="throttled")
    outcome = requeued(plan(DENIED, throttled_thrice))  # an hour of throttling does not use up the role budget
    assert (outcome.redelivery.attempt, outcome.redelivery.first_seen) == (1, T0)
    # ...but the job's own bound counts both: four re-enqueues since an hour ago, by cause.
    assert (outcome.redelivery.total, outcome.redelivery.since) == (4, T0 - timedelta(hours=1))
    assert outcome.redelivery.causes == {"permission_denied": 1}  # a state from before causes were kept


def test_permission_backoff_grows_then_stays_at_the_last_step() -> None:
    previous = None
    delays = []
    for _ in range(len(PERMISSION_BACKOFF) + 2):
        outcome = requeued(plan(DENIED, previous, now=T0))  # no time passes: only the backoff schedule shows
        delays.append(outcome.delay)
        previous = outcome.redelivery
    assert delays == [*PERMISSION_BACKOFF, PERMISSION_BACKOFF[-1], PERMISSION_BACKOFF[-1]]


def test_permission_retry_stops_at_the_deadline_and_never_waits_past_it() -> None:
    first = Redelivery(attempt=3, first_seen=T0, reason="permission_denied")
    near_end = requeued(plan(DENIED, first, now=T0 + timedelta(seconds=95)))
    assert near_end.delay == 5.0  # the 60 s step is cut to the 5 s left before PERMISSION_RETRY_SECONDS
    almost = requeued(plan(DENIED, first, now=T0 + timedelta(seconds=99.5)))
    assert almost.delay == 1.0  # never less than a second
    gave_up = plan(DENIED, first, now=T0 + timedelta(seconds=100))
    assert isinstance(gave_up, GiveUp) and gave_up.code == "permission_denied"
    assert "Still denied after 100 s" in gave_up.message


def alternate(settings: Settings) -> tuple[Requeue | GiveUp | Transient, int, datetime]:
    """An outage and a 429 in turn, each re-enqueue waited out, until the plan is not a re-enqueue: that
    plan, how many re-enqueues came before it, and when."""
    outage = RetryLater("outage", 0.0, "Azure OpenAI did not answer")
    previous, now = None, T0
    for step in range(1000):
        outcome = plan_retry(THROTTLED if step % 2 else outage, previous, settings, now=now, jitter=no_jitter)
        if not isinstance(outcome, Requeue):
            return outcome, step, now
        assert outcome.redelivery.attempt == 1  # each cause's own count starts afresh every time
        previous, now = outcome.redelivery, now + timedelta(seconds=outcome.delay)
    raise AssertionError("never bounded")


def test_alternating_causes_meet_the_jobs_own_bound_by_attempts() -> None:
    # 429s and 5xx in turn reset each cause's count: only the job's bound (RETRY_MAX_ATTEMPTS) ends it.
    outcome, step, _ = alternate(Settings.from_env({**ENV, "RETRY_MAX_ATTEMPTS": "6", "RETRY_MAX_SECONDS": "100000"}))
    assert isinstance(outcome, GiveUp) and step == 6  # six re-enqueues, then the seventh cause fails the job
    assert outcome.code == "model_unavailable"  # the last cause (an outage) names the failure
    assert "gave up after 6 re-enqueues" in outcome.message and "outage 4, throttled 3" in outcome.message


def test_alternating_causes_meet_the_jobs_own_bound_by_time() -> None:
    settings = Settings.from_env({**ENV, "RETRY_MAX_ATTEMPTS": "1000", "RETRY_MAX_SECONDS": "600"})
    outcome, step, now = alternate(settings)
    assert isinstance(outcome, GiveUp)
    assert outcome.code == ("throttled" if step % 2 else "model_unavailable")  # the last cause names it
    assert 600 <= (now - T0).total_seconds() < 600 + 60  # ends at the first planning past the bound
    assert "RETRY_MAX_SECONDS 600" in outcome.message


def test_the_job_bound_counts_a_state_written_before_it_existed_as_one_causes_history() -> None:
    old = Redelivery(attempt=24, first_seen=T0 - timedelta(minutes=5), reason="permission_denied")
    outcome = plan(DENIED, old)  # 24 re-enqueues already: the default job bound (24) is reached
    assert isinstance(outcome, GiveUp) and outcome.code == "permission_denied"
