"""Back to work seconds after an outage ends: the jobs waiting it out are woken when their deployment answers.

A job every deployment of which is failing waits in the retry store (``shared.delivery.requeue``) on a
growing backoff (``shared.policy.OUTAGE_BACKOFF``, minutes at the end), so without more the deployment can sit
idle for most of a backoff once it is back. Two things end that:

- **A probe when the circuit half-opens.** When one of this instance's circuits opens (``Router.on_opened``)
  and jobs wait out that outage, the instance probes it with a call of a few tokens when it half-opens
  (``probe_later``), so a deployment's return is noticed within ``shared.routing.OPEN_MAX`` even when no new
  job arrives, and no job spends its retry budget (``RETRY_MAX_ATTEMPTS``) on probes.
- **Everyone when it closes.** When a probe's answer closes a circuit (``Router.on_recovered``), this instance
  lists the retry store's metadata (one listing call per 5,000 waiting jobs) for the jobs waiting on an outage
  that may use that deployment, whichever instance re-enqueued them, and makes each one's pointer visible with
  ``update_message`` (its message id and pop receipt are recorded on the state:
  ``shared.store.record_pointer``), spread over ``RECOVERY_SPREAD_SECONDS`` so that the recovery is not a
  burst of its own; the pacing gate still admits each call. An instance whose circuit closes after another's
  wakes only the jobs re-enqueued since that one's wake (``recovery/<entry>``: one blob read and one write per
  wake), so each job is tried about once however many instances there are.

Nothing here can lose or double a job: a pointer delivered already (404), being delivered or woken by another
instance first (400 ``PopReceiptMismatch``: its pop receipt changed) is skipped; a failing listing or update
leaves the pointer to arrive at its due time; a job woken twice runs once (the pointer carries its one-time
token, and the first delivery moves it on).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared import store
from shared.connections import Runtime
from shared.constants import brief
from shared.jobs import BACKGROUND, RETRY_PREFIX, WAITING_ON
from shared.routing import Route
from shared.settings import PoolEntry

logger = logging.getLogger(__name__)
_running: set[asyncio.Task[int]] = set()  # wakes under way (held, or the loop could drop them unfinished)
POP_RECEIPT_MISMATCH = "PopReceiptMismatch"  # Update Message's 400 for a receipt that is no longer the message's
PROBE_TOKENS = 16  # the probe's output budget (what any model, reasoning ones included, takes)


@dataclass(frozen=True)
class Sleeper:
    """A job waiting out an outage: its pointer on the jobs queue, when that is due and when its state was last
    written (storage's clock)."""

    job_id: str
    pointer: str
    receipt: str
    due: datetime | None
    written: datetime | None = None


def attach(runtime: Runtime) -> None:
    """Probe a deployment whenever one of this process's circuits half-opens while jobs wait on it, and wake
    every waiting job once one closes again (once per runtime)."""
    router = runtime.router
    if router.on_recovered is None:
        router.on_recovered = lambda entry: _start(wake(runtime, entry))
    if router.on_opened is None:
        router.on_opened = lambda entry, seconds: _start(probe_later(runtime, entry, seconds))


def _start(wake_up: Coroutine[Any, Any, int]) -> None:
    """In the background: the call whose answer closed the circuit goes on with its own job."""
    task = asyncio.get_running_loop().create_task(wake_up)
    _running.add(task)
    task.add_done_callback(_running.discard)


async def settle() -> None:
    """Wait for the wakes under way (tests, and a host shutting down)."""
    while _running:
        await asyncio.gather(*_running, return_exceptions=True)


async def waiting_on(
    runtime: Runtime, entry: PoolEntry, *, since: datetime | None = None, first: bool = False
) -> list[Sleeper]:
    """The jobs waiting out an outage that may be sent to ``entry`` and whose pointer is recorded, due first
    (``since``: only those whose state was written at or after it, storage's clock; ``first``: stop at the first
    one, to learn whether any waits)."""
    sleepers = []
    blobs = store.worker_only(runtime).list_blobs(name_starts_with=RETRY_PREFIX, include=["metadata"])
    try:
        async for blob in blobs:
            metadata = blob.metadata or {}
            mark, receipt = store.Mark.of(metadata), metadata.get("receipt")
            if metadata.get("reason") != "outage" or not mark.pointer or not receipt:
                continue
            if metadata.get(WAITING_ON) == BACKGROUND:
                continue  # checked on its own schedule: its response runs on whatever the deployment does
            if entry not in runtime.settings.entries_for(metadata.get("deployment")):
                continue
            written = blob.last_modified
            if since is not None and written is not None and written < since:
                continue  # a waker before this one tried it
            job_id = blob.name.removeprefix(RETRY_PREFIX).removesuffix(".json")
            sleepers.append(Sleeper(job_id, mark.pointer, receipt, mark.due, written))
            if first:
                break
    except ResourceNotFoundError:
        return []  # no worker-only container yet: nothing ever waited
    return sorted(sleepers, key=lambda s: s.due or datetime.max.replace(tzinfo=UTC))


async def wake(runtime: Runtime, entry: PoolEntry, *, now: datetime | None = None) -> int:
    """Make the pointers of the jobs waiting out ``entry``'s outage visible, the i-th of n after
    i * ``RECOVERY_SPREAD_SECONDS`` / n seconds (one due sooner than that is left alone). Returns how many."""
    spread = runtime.settings.recovery_spread_seconds
    if spread <= 0:
        return 0
    try:
        sleepers = await waiting_on(runtime, entry, since=await _claim(runtime, entry))
    except Exception as exc:  # the pointers still come at their due time
        logger.warning("deployment %s answers again; the jobs waiting on it not listed: %s", entry.label, brief(exc))
        return 0
    now = now or datetime.now(UTC)
    queue = runtime.queues.get_queue_client(runtime.settings.jobs_queue)
    woken = 0
    for i, sleeper in enumerate(sleepers):
        after = round(i * spread / len(sleepers))
        if sleeper.due is not None and (sleeper.due - now).total_seconds() <= after:
            continue  # due by then anyway
        try:
            await queue.update_message(sleeper.pointer, sleeper.receipt, visibility_timeout=after)
        except ResourceNotFoundError:
            continue  # delivered and deleted already
        except HttpResponseError as exc:
            if getattr(exc, "error_code", None) != POP_RECEIPT_MISMATCH:
                logger.warning("job %s not woken (it runs when due): %s", sleeper.job_id, brief(exc))
            continue  # a mismatch: being delivered, or woken by another instance (its pop receipt changed)
        except Exception as exc:
            logger.warning("job %s not woken (it runs when due): %s", sleeper.job_id, brief(exc))
            continue
        woken += 1
    if sleepers:
        logger.info(
            "deployment %s answers again: %d of %d job(s) waiting out its outage woken over %d s",
            entry.label,
            woken,
            len(sleepers),
            spread,
        )
    return woken


async def _claim(runtime: Runtime, entry: PoolEntry) -> datetime | None:
    """Mark that this instance wakes ``entry``'s waiting jobs now (``recovery/<entry>``, an empty blob in the
    worker-only container); return when the previous waker did (storage's clock), whose jobs this one skips.
    Every instance whose circuit closes wakes, but each job is tried about once, not once per instance (K x N
    updates answered 404 otherwise). None (wake every job) when there was none or the store fails."""
    blob = store.worker_only(runtime).get_blob_client(f"recovery/{_name(entry)}")
    try:
        try:
            previous = (await blob.get_blob_properties()).last_modified
        except ResourceNotFoundError:
            previous = None
        await blob.upload_blob(b"", overwrite=True)
    except Exception as exc:  # only more 404s: every waiting job is tried
        logger.info("deployment %s: the last wake is not known (%s); waking every waiting job", entry.label, brief(exc))
        return None
    return previous if isinstance(previous, datetime) else None


def _name(entry: PoolEntry) -> str:
    """A blob name for a pool entry (its endpoint and deployment), whatever characters they hold."""
    return hashlib.sha256(f"{entry.endpoint}|{entry.deployment}".encode()).hexdigest()[:32]


async def probe_later(runtime: Runtime, entry: PoolEntry, seconds: float) -> bool:
    """When ``entry``'s circuit half-opens (in ``seconds``) and jobs wait out its outage, probe it with a call of
    a few tokens (``PROBE_TOKENS``) rather than a job's: a failed probe spends no job's retry budget, and the
    deployment's return is noticed within ``shared.routing.OPEN_MAX`` even when no new job arrives. Its answer
    closes the circuit (then ``wake``); a failure opens it again (then another ``probe_later``). True when it
    answered; False when not sent (the circuit closed or is being probed meanwhile, or nothing waits)."""
    if runtime.settings.recovery_spread_seconds <= 0:
        return False
    await asyncio.sleep(seconds)
    router = runtime.router
    circuit = router.route(entry).circuit
    if circuit.state(router.clock()) != "half-open" or not circuit.admits(router.clock()):
        return False
    try:
        if not await waiting_on(runtime, entry, first=True):
            return False  # the next job's call probes it
    except Exception as exc:
        logger.warning("deployment %s half-open; the jobs waiting on it not listed: %s", entry.label, brief(exc))
        return False

    async def ping(route: Route, last: bool) -> object:
        client = runtime.client(route.entry.endpoint, sdk_retries=False)
        if route.entry.api == "responses":  # through the API the deployment serves (a Responses-only model 400s)
            return await client.responses.create(
                model=route.entry.deployment, input="ping", max_output_tokens=PROBE_TOKENS, store=False
            )
        return await client.chat.completions.create(
            model=route.entry.deployment,
            messages=[{"role": "user", "content": "ping"}],
            max_completion_tokens=PROBE_TOKENS,
        )

    try:
        await router.call((entry,), PROBE_TOKENS, ping)
    except Exception as exc:  # still down (the router has opened the circuit again) or refused: logged only
        logger.info("deployment %s probed: %s", entry.label, brief(exc))
        return False
    logger.info("deployment %s probed: it answers again", entry.label)
    return True


__all__ = ["PROBE_TOKENS", "Sleeper", "attach", "probe_later", "settle", "waiting_on", "wake"]
