"""Service tiers per job, and the flex fallback.

A job's ``service_tier`` (else its deployment's: ``AZURE_OPENAI_SERVICE_TIER`` or a pool entry's
``service_tier``; else none is sent and the deployment's own applies) goes with the request, and the result
records the tier Azure says served it. Every tier draws on the deployment's one quota, as on Azure: the
pacing gate and the pool know nothing of tiers, except that a flex refusal for capacity holds no gate.

Flex is served at half price when Azure has capacity, and answers 429 (not billed) when it has not, with no
fallback of its own. ``shared.pacing.capacity_refusal`` tells that 429 from a quota one by its code. Then:

- while the **flex window** is open the job waits for flex: ``FlexUnavailable`` becomes a re-enqueue
  (``shared.policy``: reason ``flex_unavailable``) after the 429's retry-after (Azure's flex 429 may carry none:
  then ``FLEX_BACKOFF``, growing per wait), never past the window's end;
- once it has closed the job goes out on the ``default`` tier, at once if the window is already over.

The window ends at the job's ``deadline`` less ``AZURE_OPENAI_TIMEOUT_SECONDS`` (room for the default-tier call
itself); without a deadline, ``FLEX_MAX_WAIT_SECONDS`` after the job was first re-enqueued (or after now, on a
first refusal). It closes early when the job's own retry bound (``RETRY_MAX_ATTEMPTS``, ``RETRY_MAX_SECONDS``)
would be spent by another wait, so a flex job never fails for want of flex: it falls back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.jobs import Job, Redelivery
from shared.settings import PoolEntry, Settings

logger = logging.getLogger(__name__)

FLEX_BACKOFF = (5.0, 10.0, 20.0, 40.0, 60.0)  # waits for a flex 429 that says nothing of when to come back
FALLBACK = "default"


@dataclass(frozen=True)
class FlexWindow:
    """Until when a job may wait for flex capacity, and how many times it has waited already."""

    until: datetime
    waits: int = 0


class FlexUnavailable(Exception):
    """Flex capacity is short and the flex window is still open: come back after ``delay`` seconds."""

    def __init__(self, delay: float, deployment: str) -> None:
        super().__init__(f"no flex capacity on deployment '{deployment}'; waiting {delay:.0f} s for it")
        self.delay = delay


def requested(job: Job, entry: PoolEntry) -> str | None:
    """The tier to ask for on ``entry``: the job's, else the deployment's (None: send none)."""
    return job.service_tier or entry.service_tier


def flex_window(job: Job, settings: Settings, redelivery: Redelivery | None, now: datetime) -> FlexWindow:
    """Until when this job may wait for flex capacity (module docstring)."""
    since = redelivery.retrying_since if redelivery is not None else now
    until = job.deadline - timedelta(seconds=settings.openai_timeout) if job.deadline else None
    until = until or since + timedelta(seconds=settings.flex_max_wait_seconds)
    until = min(until, since + timedelta(seconds=settings.retry_max_seconds))
    if redelivery is not None and redelivery.total_attempts >= settings.retry_max_attempts:
        until = now  # one more re-enqueue would fail the job: go out on the default tier instead
    waits = redelivery.causes.get("flex_unavailable", 0) if redelivery is not None else 0
    return FlexWindow(until, waits)


def tier_for(job: Job, entry: PoolEntry, window: FlexWindow, now: datetime) -> str | None:
    """The tier this attempt asks for: flex only while its window is open, then ``default``."""
    tier = requested(job, entry)
    if tier == "flex" and now >= window.until:
        logger.info("job %s: flex window over; sent on the default tier", job.id)
        return FALLBACK
    return tier


def after_refusal(job: Job, entry: PoolEntry, retry_after: float | None, window: FlexWindow, now: datetime) -> str:
    """A flex request was refused for capacity: raise ``FlexUnavailable`` to wait while the window allows it,
    else return the tier to resend on at once (``default``)."""
    left = (window.until - now).total_seconds()
    if left >= 1.0:
        backoff = FLEX_BACKOFF[min(window.waits, len(FLEX_BACKOFF) - 1)]
        raise FlexUnavailable(min(retry_after or backoff, left), entry.deployment)
    logger.info("job %s: no flex capacity and no time left to wait for it; resent on the default tier", job.id)
    return FALLBACK


__all__ = [
    "FALLBACK",
    "FLEX_BACKOFF",
    "FlexUnavailable",
    "FlexWindow",
    "after_refusal",
    "flex_window",
    "requested",
    "tier_for",
]
