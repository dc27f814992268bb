"""One token budget per deployment, shared by every instance: short leases claimed in a blob with conditional writes.

Each instance's pacing gate (``shared.pacing``) otherwise guesses its share of the deployment's window from the
rate-limit headers alone, and with many instances every one of them sees the same free room at once. Here the
window's tokens are leased instead, in one small JSON document per deployment (``budget/<hash>.json`` in the
worker-only container, ``STAGING_CONTAINER``: producers hold no role there, so none can forge a claim):

- **Ledger.** ``{"claims": {instance: {"chunks": [[until, tokens], ...], "want": tokens, "seen": time}}}``. A
  chunk is tokens an instance was granted or spent; it occupies the window ``until`` (its lease's end + the
  window's length, on the writer's wall clock: Azure hosts keep NTP time, and ``SKEW`` covers what they differ).
  Expired chunks are dropped by whoever writes next; an instance that leaves needs no call: its chunks expire.
- **Claim.** An instance whose gate has calls waiting reads the ledger, rewrites its own entry (what it really
  spent still in the window, no unspent remainder of its last lease), grants itself up to what it waits for
  within what is free below ``HEADROOM`` of the limit, and writes the ledger back only if it is unchanged
  (``If-Match`` its ETag; the first writer creates it with ``If-None-Match: *``). A conflict re-reads at once,
  at most ``ATTEMPTS`` times, then waits a jittered moment. A grant is spent within ``LEASE`` seconds or lost.
- **Fair share.** While another instance waits (``want`` > 0) holding less than the limit over the instances
  in the ledger, a claim takes no more than that share; otherwise it may take all that is free, so the limit
  is never left idle. A newcomer writes its ``want`` with its first claim, so the others cap themselves at
  their next claim, and it is at its share within a window (the longest anyone's old chunks occupy it).
- **The headers stay ground truth.** The limit is the one the deployment's headers give; a 429 holds the gate
  whatever the ledger says; the request budget (``x-ratelimit-*-requests``) is still paced per instance.
- **Degrade.** Any storage error, or a store slower than ``timeout`` seconds, switches this instance back to
  the per-instance gate (logged once at WARNING), no call waits on it, and it re-joins ``REJOIN`` seconds later.

Storage operations per claim: a read and a write (plus a read and a write per conflict); a claim covers every
call the gate then has waiting, so a busy instance spends a few per window, not per job. ``ops`` counts them.
"""

from __future__ import annotations

import asyncio
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

LEASE = 1.0  # seconds a grant may be spent in: short, so that what an instance cannot use soon goes back
ATTEMPTS = 3  # read-modify-writes one claim tries when others write in between
PATIENCE = 0.25  # of the window: about this long (jittered) before an instance granted less than it asked
# claims again (so each claim covers several calls, and the ledger is written a few times a window per instance)
SKEW = 0.25  # seconds added to every chunk's end: what the instances' wall clocks may differ by [U]
REJOIN = 30.0  # seconds on the per-instance gate after a store failure before trying the ledger again
TIMEOUT = 2.0  # seconds a store operation may take before it counts as failed
HEADROOM = 0.97  # of the limit the ledger grants (as shared.pacing's gates aim for)
CLAIMING = 0.25  # seconds between a waiter's re-checks while another call of its gate claims (shared.pacing's POLL)
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


Chunk = list[float]  # [until, tokens]


@dataclass
class Entry:
    chunks: list[Chunk]
    want: int = 0
    seen: float = 0.0

    def holding(self, now: float) -> float:
        return sum(tokens for until, tokens in self.chunks if until > now)


def parse(data: bytes | None, now: float) -> dict[str, Entry]:
    """The live entries of a ledger (expired chunks and instances gone dropped); an unreadable one is empty: it
    is rewritten whole by the next claim, and until every instance's chunks are back in it they may overshoot
    by one window, which the headers' 429 holds then catch."""
    try:
        claims = json.loads(data or b"{}").get("claims", {})
        entries = {
            str(name): Entry(
                [[float(u), float(t)] for u, t in raw.get("chunks", []) if float(u) > now],
                int(raw.get("want", 0)),
                float(raw.get("seen", 0.0)),
            )
            for name, raw in claims.items()
        }
    except (ValueError, TypeError, AttributeError):
        return {}
    return {name: e for name, e in entries.items() if e.chunks or (e.want and e.seen > now - 2 * LEASE)}


def dump(entries: dict[str, Entry]) -> bytes:
    claims = {name: {"chunks": e.chunks, "want": e.want, "seen": e.seen} for name, e in entries.items()}
    return json.dumps({"claims": claims}, separators=(",", ":")).encode()


@dataclass
class SharedBudget:
    """One instance's view of one deployment's shared budget (see the module docstring); consulted by its gate."""

    store: Store
    name: str  # the ledger's blob name (``ledger_name``)
    instance: str  # this instance's id in the ledger
    clock: Callable[[], float] = time.time  # wall time: the ledger is read by other hosts
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    timeout: float = TIMEOUT
    rng: random.Random = field(default_factory=random.Random)
    granted: float = 0.0  # tokens left to spend of the current lease ...
    lease_end: float = 0.0  # ... until then
    spent: deque[tuple[float, int]] = field(default_factory=deque)  # (wall time, tokens) of this gate's calls
    next_claim: float = 0.0  # no claim before then (after conflicts, or a claim that found nothing free)
    degraded_until: float = 0.0
    claiming: bool = False
    ops: int = 0  # storage operations made
    failures: int = 0

    def live(self) -> bool:
        """Whether the gate should follow the ledger now (False while degraded to the per-instance gate)."""
        return self.clock() >= self.degraded_until

    def covers(self, tokens: int) -> bool:
        """Whether this instance's lease still holds ``tokens``."""
        return self.clock() < self.lease_end and self.granted >= tokens

    def spend(self, tokens: int) -> None:
        """A call went through the gate: count it against the lease (and in the window, for the next claim)."""
        self.granted -= tokens
        self.spent.append((self.clock(), tokens))

    def retry_in(self) -> float:
        """Seconds until a claim is worth trying (while one is under way, a re-check's poll)."""
        return CLAIMING if self.claiming else max(self.next_claim - self.clock(), 0.0)

    async def claim(self, wanted: int, limit: int, window: float) -> None:
        """Lease up to ``wanted`` tokens of the ``limit`` per ``window`` seconds, if none is under way and it is
        time to; never raises: a store failure degrades to the per-instance gate."""
        if self.claiming or not self.live() or self.retry_in() > 0:
            return
        self.claiming = True
        try:
            for _ in range(ATTEMPTS):
                if await self._attempt(wanted, limit, window):
                    return
            self.next_claim = self.clock() + self.rng.uniform(0, PATIENCE * window)
        except Exception as exc:  # storage errors of every kind, and timeouts: all mean the same here
            self._degrade(exc)
        finally:
            self.claiming = False

    async def _attempt(self, wanted: int, limit: int, window: float) -> bool:
        """One read-modify-write; False on a conflict."""
        found = await self._op(self.store.read(self.name))
        data, etag = found if found is not None else (None, None)
        now = self.clock()
        entries = parse(data, now)
        while self.spent and self.spent[0][0] <= now - window:
            self.spent.popleft()
        lease_end = now + LEASE
        mine = [[at + window + SKEW, float(tokens)] for at, tokens in self.spent]
        others = {name: e for name, e in entries.items() if name != self.instance}
        used = sum(e.holding(now) for e in others.values()) + sum(t for _, t in mine)
        room = limit * HEADROOM - used
        share = limit * HEADROOM / (len(others) + 1)
        held = sum(t for _, t in mine)
        recent = now - 2 * PATIENCE * window  # a want not renewed since has been met, or its instance is gone
        if any(e.want > 0 and e.seen > recent and e.holding(now) < share for e in others.values()):
            room = min(room, share - held)  # someone waits below its share: take no more than ours
        grant = max(0.0, min(float(wanted), room))
        chunks = _merge(mine, window / 4)
        if grant > 0:
            chunks.append([lease_end + window + SKEW, grant])
        entries = {**others, self.instance: Entry(chunks, wanted if grant < wanted else 0, now)}
        try:
            await self._op(self.store.write(self.name, dump(entries), etag))
        except Conflict:
            return False
        self.granted, self.lease_end = grant, lease_end
        if grant < wanted:  # contended: come back when the window has had time to free some more
            self.next_claim = now + self.rng.uniform(0.5, 1.5) * PATIENCE * window
        if self.failures:
            logger.info("shared budget %s: the store answers again; following the ledger", self.name)
            self.failures = 0
        return True

    async def _op(self, call: Awaitable[Any]) -> Any:
        self.ops += 1
        return await asyncio.wait_for(call, self.timeout)

    def _degrade(self, exc: BaseException) -> None:
        self.granted, self.lease_end = 0.0, 0.0
        self.degraded_until = self.clock() + REJOIN
        if not self.failures:
            logger.warning(
                "shared budget %s: the store failed (%s: %s); pacing on this instance's own share for %.0f s",
                self.name,
                type(exc).__name__,
                exc,
                REJOIN,
            )
        self.failures += 1


def _merge(chunks: list[Chunk], width: float) -> list[Chunk]:
    """Chunks ending within ``width`` of each other as one (ending with the latest): the ledger stays small."""
    merged: list[Chunk] = []
    first = 0.0  # the end of the group's first chunk: no group spans more than ``width``
    for until, tokens in sorted(chunks):
        if merged and until - first <= width:
            merged[-1] = [until, merged[-1][1] + tokens]
        else:
            merged.append([until, tokens])
            first = until
    return merged


def sharing(container: ContainerClient) -> Callable[[str, str], SharedBudget]:
    """``shared.pacing.Pacer``'s ``share``: each deployment's budget in ``container``, as this process (a random id:
    a restarted instance is a new one, and its old chunks expire)."""
    instance = uuid.uuid4().hex[:12]
    store = BlobStore(container)
    return lambda endpoint, deployment: SharedBudget(store, ledger_name(endpoint, deployment), instance)
