"""One token budget per deployment, shared by every instance: bookings of the window's tokens in a blob ledger.

Each instance's pacing gate (``shared.pacing``) otherwise guesses its share of the deployment's window from the
rate-limit headers alone, and with many instances every one of them sees the same free room at once. Here the
window's tokens are booked instead, in one small JSON document per deployment (``budget/<hash>.json`` in the
worker-only container, ``STAGING_CONTAINER``: producers hold no role there, so none can forge a booking):

- **Ledger.** ``{"claims": {instance: [[start, until, tokens], ...]}}``, times on the writer's wall clock (Azure
  hosts keep NTP time; ``SKEW`` covers what they differ [U]). A chunk is tokens an instance spent, or booked to
  spend from ``start`` for ``LEASE`` seconds; it occupies the window ``until`` (spent or lease end + the window's
  length + ``SKEW``). Expired chunks are dropped by whoever writes next; an instance that leaves needs no call.
- **Booking.** An instance whose gate has calls waiting and nothing booked reads the ledger, rewrites its own
  entry (what it spent still in the window), and books the earliest moment, no earlier than every booking in the
  ledger, at which the chunks then still in the window leave room below ``HEADROOM`` of the limit for a
  whole turn: what it waits for, at most the limit over the instances in the ledger (so that bookings take
  turns: a newcomer's comes after the others' current ones, within about a window), or less than a turn if
  that is free for its smallest waiting call more than ``CRUMB`` of a window sooner. It writes
  the ledger back only if unchanged (``If-Match`` its ETag; the first writer creates it with ``If-None-Match:
  *``); a conflict re-reads after a random pause of up to ``SPREAD`` round trips per instance in the ledger (so
  that as many writers take turns), at most ``ATTEMPTS`` times. Its calls then wait in the gate, without a
  storage call, until the booking starts, and go within ``LEASE`` seconds of it (what is left is dropped).
- **The headers stay ground truth.** The limit is the one the deployment's headers give; a 429 holds the gate
  whatever the ledger says; the request budget (``x-ratelimit-*-requests``) is still paced per instance, and so
  is a call larger than the ledger's room (no booking could hold it).
- **Margins.** A chunk ends ``LEASE`` + ``SKEW`` + the gate's ``EDGE`` after the window would free it: about
  0.7 s a window, 1 % of Azure's 60 s window (7 % of the bench's 10 s one).
- **Degrade.** Any storage error, or a store slower than ``timeout`` seconds, switches this instance back to
  the per-instance gate (logged once at WARNING), no call waits on it, and it tries the ledger again a second
  later, then after twice as long each time it fails again, ``REJOIN`` seconds at most (INFO once it answers).

Storage operations: a read and a write per booking (plus both again per conflict); a booking covers every call
the gate then has waiting, up to its turn's share, so an instance spends a few per window, not per job.
``ops`` counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

logger = logging.getLogger(__name__)

LEASE = 0.2  # seconds a booking may be spent in, from its start: the gate's waiters are there when it starts
ATTEMPTS = 3  # read-modify-writes one booking tries when others write in between
SPREAD = 0.5  # round trips per instance in the ledger a conflicted booking waits at most before it re-reads
JITTER = 0.02  # of the window: a booking that could not be written is tried again within this long
CRUMB = 0.1  # of the window: a booking takes less than a turn now rather than a whole one more than this later
SKEW = 0.25  # seconds added to every chunk's end: what the instances' wall clocks may differ by [U]
REJOIN = 30.0  # seconds at most on the per-instance gate after store failures before trying the ledger again
TIMEOUT = 2.0  # seconds a store operation may take before it counts as failed
HEADROOM = 0.97  # of the limit the ledger books (as shared.pacing's gates aim for)
CLAIMING = 0.25  # seconds between a waiter's re-checks while another call of its gate books (shared.pacing's POLL)
PREFIX = "budget/"


class Conflict(Exception):
    """The ledger changed since it was read (412), or was created meanwhile (409)."""


class Store(Protocol):
    """Where ledgers live: one document per name, written only if unchanged since read."""

    async def read(self, name: str) -> tuple[bytes, str] | None:
        """The document and its ETag, or None when there is none yet."""
        ...

    async def write(self, name: str, data: bytes, etag: str | None) -> str:
        """Replace the document if its ETag is still ``etag`` (create it if ``etag`` is None and there is none);
        returns the new ETag; raises ``Conflict`` otherwise."""
        ...


class BlobStore:
    """``Store`` on a blob container (the worker-only ``STAGING_CONTAINER``): ETags and ``If-Match`` /
    ``If-None-Match: *`` uploads. Any other storage error (a missing container, a role not granted, a timeout)
    propagates: the budget then degrades."""

    def __init__(self, container: ContainerClient) -> None:
        self.container = container

    async def read(self, name: str) -> tuple[bytes, str] | None:
        try:
            downloader = await self.container.download_blob(name)
            data = await downloader.readall()
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) == "ContainerNotFound":
                raise
            return None
        return data, str(downloader.properties.etag)

    async def write(self, name: str, data: bytes, etag: str | None) -> str:
        condition: dict[str, Any] = (
            {"overwrite": False} if etag is None else {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        )
        try:
            written = await self.container.get_blob_client(name).upload_blob(data, **condition)
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise Conflict(name) from exc
        return str(written["etag"])


def ledger_name(endpoint: str, deployment: str) -> str:
    """``budget/<sha256 of endpoint and deployment>.json``: one ledger per deployment, whatever its names hold."""
    digest = hashlib.sha256(f"{endpoint.lower()}\n{deployment}".encode()).hexdigest()[:32]
    return f"{PREFIX}{digest}.json"


Chunk = list[float]  # [start, until, tokens]
Ledger = dict[str, list[Chunk]]  # instance -> its chunks


def parse(data: bytes | None, now: float) -> Ledger:
    """The live chunks of a ledger, by instance (expired chunks and instances gone dropped). An unreadable ledger
    is empty: it is rewritten whole by the next booking, and until every instance has written again they may
    overshoot the limit for one window, which the headers' 429 holds then catch."""
    try:
        claims = json.loads(data or b"{}").get("claims", {})
        ledger = {
            str(name): [[float(a), float(u), max(0.0, float(t))] for a, u, t in chunks if float(u) > now]
            for name, chunks in claims.items()
        }
    except (ValueError, TypeError, AttributeError):
        return {}
    return {name: chunks for name, chunks in ledger.items() if chunks}


def dump(ledger: Ledger) -> bytes:
    return json.dumps({"claims": ledger}, separators=(",", ":")).encode()


def earliest(chunks: list[Chunk], after: float, room: float, least: float) -> tuple[float, float]:
    """The first moment from ``after`` on (no earlier than any chunk's start) at which the chunks still in the
    window leave at least ``least`` of ``room`` free, and how much they leave then."""
    at = max([after, *(c[0] for c in chunks)])
    ending = sorted((u, t) for _, u, t in chunks if u > at)
    free = room - sum(t for _, t in ending)
    for until, tokens in ending:
        if free >= least:
            break
        at, free = until, free + tokens
    return at, free


@dataclass
class SharedBudget:
    """One instance's view of one deployment's shared budget (see the module docstring); consulted by its gate."""

    store: Store
    name: str  # the ledger's blob name (``ledger_name``)
    instance: str  # this instance's id in the ledger
    clock: Callable[[], float] = time.time  # wall time: the ledger is read by other hosts
    timeout: float = TIMEOUT
    rng: random.Random = field(default_factory=random.Random)
    granted: float = 0.0  # tokens left to spend of the current booking ...
    lease_start: float = 0.0  # ... from then ...
    lease_end: float = 0.0  # ... until then
    spent: deque[tuple[float, int]] = field(default_factory=deque)  # (wall time, tokens) of this gate's calls
    next_claim: float = 0.0  # no booking before then (the current one's start, or after conflicts)
    degraded_until: float = 0.0
    claiming: bool = False
    claimed: asyncio.Event = field(default_factory=asyncio.Event)  # set when the booking under way is over
    ops: int = 0  # storage operations made
    crowd: int = 1  # instances in the ledger when last read
    round_trip: float = 0.0  # seconds the last read took
    failures: int = 0

    def live(self) -> bool:
        """Whether the gate should follow the ledger now (False while degraded to the per-instance gate)."""
        return self.clock() >= self.degraded_until

    def covers(self, tokens: int) -> bool:
        """Whether this instance's booking holds ``tokens`` now."""
        return self.lease_start <= self.clock() < self.lease_end and self.granted >= tokens

    def spend(self, tokens: int) -> None:
        """A call went through the gate: count it against the booking (and in the window, for the next one)."""
        self.granted -= tokens
        self.spent.append((self.clock(), tokens))

    def retry_in(self) -> float:
        """Seconds until the booking starts, or a booking is worth trying (while one is under way, a re-check's
        poll)."""
        now = self.clock()
        if self.claiming:
            return CLAIMING
        return self.lease_start - now if now < self.lease_start else max(self.next_claim - now, 0.0)

    async def claim(self, wanted: int, least: int, limit: int, window: float) -> None:
        """Book up to ``wanted`` tokens (``least``: the smallest call waiting) of the ``limit`` per ``window``
        seconds, if no booking is under way and it is time to; never raises: a store failure degrades to the
        per-instance gate."""
        if self.claiming or not self.live() or self.retry_in() > 0:
            return
        self.claiming = True
        self.claimed.clear()
        try:
            for _ in range(ATTEMPTS):
                if await self._attempt(wanted, least, limit, window):
                    return
                # Others wrote meanwhile: spread the retries of as many writers as the ledger names over about as
                # many round trips, rather than all re-reading at once and conflicting again.
                await asyncio.sleep(self.rng.uniform(0, SPREAD * self.crowd * self.round_trip))
            self.next_claim = self.clock() + self.rng.uniform(0, JITTER * window)
        except Exception as exc:  # storage errors of every kind, and timeouts: all mean the same here
            self._degrade(exc)
        finally:
            self.claiming = False
            self.claimed.set()

    async def settled(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for the booking under way to be over."""
        if self.claiming:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.claimed.wait(), timeout)

    async def _attempt(self, wanted: int, least: int, limit: int, window: float) -> bool:
        """One read-modify-write; False on a conflict."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        found = await self._op(self.store.read(self.name))
        self.round_trip = loop.time() - began
        data, etag = found if found is not None else (None, None)
        now = self.clock()
        ledger = parse(data, now)
        self.crowd = len(ledger) + 1
        while self.spent and self.spent[0][0] <= now - window:
            self.spent.popleft()
        mine = _merge([[at, at + window + SKEW, float(tokens)] for at, tokens in self.spent], LEASE)
        ledger[self.instance] = mine
        room = limit * HEADROOM
        chunks = [c for chunks in ledger.values() for c in chunks]
        turn = min(float(wanted), max(float(least), room / len(ledger)), room)  # a whole turn, not a crumb
        start, free = earliest(chunks, now, room, turn)
        soon, some = earliest(chunks, now, room, min(float(least), room))
        if start - soon > CRUMB * window:  # a whole turn is long in coming: take what is free for a call sooner
            start, free = soon, some
        grant = min(turn, free)
        ledger[self.instance] = [*mine, [start, start + LEASE + window + SKEW, grant]]
        try:
            await self._op(self.store.write(self.name, dump(ledger), etag))
        except Conflict:
            return False
        self.granted, self.lease_start, self.lease_end = grant, start, start + LEASE
        self.next_claim = start + self.rng.uniform(0, LEASE)  # the next booking: not all at once (they start alike)
        if self.failures:
            logger.info("shared budget %s: the store answers again; following the ledger", self.name)
            self.failures = 0
        return True

    async def _op(self, call: Awaitable[Any]) -> Any:
        self.ops += 1
        return await asyncio.wait_for(call, self.timeout)

    def _degrade(self, exc: BaseException) -> None:
        # A failure alone (a flaky store) costs a second on the instance's own share; one that persists (a store
        # down) doubles that each time up to REJOIN, so an instance then tries it a few times a minute at most.
        self.granted, self.lease_end = 0.0, 0.0
        self.degraded_until = self.clock() + min(REJOIN, 2.0**self.failures)
        if not self.failures:
            logger.warning(
                "shared budget %s: the store failed (%s: %s); pacing on this instance's own share until it answers",
                self.name,
                type(exc).__name__,
                exc,
            )
        self.failures += 1


def _merge(chunks: list[Chunk], width: float) -> list[Chunk]:
    """Chunks (oldest first) starting within ``width`` of the first of their group as one, ending with the group's
    last: the ledger stays small, at the cost of holding a few tokens up to ``width`` longer."""
    merged: list[Chunk] = []
    for start, until, tokens in chunks:
        if merged and start - merged[-1][0] <= width:
            merged[-1] = [merged[-1][0], until, merged[-1][2] + tokens]
        else:
            merged.append([start, until, tokens])
    return merged


def sharing(container: ContainerClient) -> Callable[[str, str], SharedBudget]:
    """``shared.pacing.Pacer``'s ``share``: each deployment's budget in ``container``, as this process (a random id:
    a restarted instance is a new one, and its old chunks expire)."""
    instance = uuid.uuid4().hex[:12]
    store = BlobStore(container)
    return lambda endpoint, deployment: SharedBudget(store, ledger_name(endpoint, deployment), instance)
