"""The shared budget's lease logic (shared/budget.py) on an in-memory store with the blob service's conditional
writes (bench/simstore.py), and the pacing gate consulting it; no network."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from bench.simstore import MemoryStore
from shared import budget
from shared.budget import Conflict, SharedBudget, ledger_name, parse
from shared.pacing import SHARING, AdmissionTimeout, Gate

LIMIT, WINDOW = 10_000, 10.0
NAME = ledger_name("https://x.openai.azure.com", "chat")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def view(store: MemoryStore, clock: Clock, instance: str) -> SharedBudget:
    return SharedBudget(store, NAME, instance, clock=clock, rng=random.Random(1))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock, latency=0.0)


async def test_a_first_claim_creates_the_ledger_and_leases_what_is_waiting(store: MemoryStore, clock: Clock) -> None:
    a = view(store, clock, "a")
    await a.claim(3_000, LIMIT, WINDOW)
    assert a.covers(3_000) and not a.covers(3_001)
    entries = parse(store.documents[NAME][0], clock())
    assert entries["a"].holding(clock()) == 3_000
    assert store.ops == 2  # one read, one write


async def test_claims_never_lease_more_than_the_limit_between_them(store: MemoryStore, clock: Clock) -> None:
    a, b = view(store, clock, "a"), view(store, clock, "b")
    await a.claim(9_000, LIMIT, WINDOW)
    await b.claim(9_000, LIMIT, WINDOW)
    assert a.granted == 9_000
    assert a.granted + b.granted <= LIMIT * budget.HEADROOM


async def test_a_write_between_read_and_write_conflicts_and_the_claim_rereads(store: MemoryStore, clock: Clock) -> None:
    a, b = view(store, clock, "a"), view(store, clock, "b")
    real_read = store.read
    raced = False

    async def read_then_b_writes(name: str) -> tuple[bytes, str] | None:
        nonlocal raced
        found = await real_read(name)
        if not raced:
            raced = True
            await b.claim(6_000, LIMIT, WINDOW)  # lands after a's read: a's If-Match must fail
        return found

    store.read = read_then_b_writes  # type: ignore[method-assign]
    await a.claim(6_000, LIMIT, WINDOW)
    assert store.conflicts == 1
    assert b.granted == 6_000
    assert a.granted == LIMIT * budget.HEADROOM - 6_000  # what the re-read left, not what it first saw


async def test_the_first_writers_racing_to_create_the_ledger_conflict(store: MemoryStore) -> None:
    await store.write(NAME, b"{}", None)
    with pytest.raises(Conflict):
        await store.write(NAME, b"{}", None)


async def test_leases_expire_so_an_instance_that_leaves_frees_its_part(store: MemoryStore, clock: Clock) -> None:
    a, b = view(store, clock, "a"), view(store, clock, "b")
    await a.claim(LIMIT, LIMIT, WINDOW)
    a.spend(int(a.granted))
    await b.claim(1_000, LIMIT, WINDOW)
    assert b.granted == 0  # a holds the window
    clock.now += budget.LEASE + WINDOW + budget.SKEW + 1  # a left without a word: its chunks run out
    b.next_claim = 0.0
    await b.claim(1_000, LIMIT, WINDOW)
    assert b.granted == 1_000
    assert "a" not in parse(store.documents[NAME][0], clock())


async def test_a_waiting_newcomer_caps_the_others_at_their_share(store: MemoryStore, clock: Clock) -> None:
    a, b = view(store, clock, "a"), view(store, clock, "b")
    await a.claim(4_000, LIMIT, WINDOW)
    a.spend(4_000)
    await b.claim(LIMIT, LIMIT, WINDOW)  # granted what is free, short of what it waits for: its want is written
    assert 0 < b.granted < LIMIT
    b.spend(int(b.granted))
    clock.now += budget.LEASE + WINDOW + budget.SKEW + 1  # everything expired; b's want is stale, a new one:
    c = view(store, clock, "c")
    await c.claim(LIMIT, LIMIT, WINDOW)  # c now waits below its share ...
    c_share = c.granted
    await a.claim(LIMIT, LIMIT, WINDOW)
    assert c_share == LIMIT * budget.HEADROOM  # nothing else was held
    assert a.granted == 0  # ... and the ledger is full: nothing for a


async def test_a_recent_want_below_its_share_caps_a_claim(store: MemoryStore, clock: Clock) -> None:
    a, b = view(store, clock, "a"), view(store, clock, "b")
    await b.claim(LIMIT, LIMIT, WINDOW)
    b.spend(int(b.granted))
    clock.now += budget.LEASE + WINDOW + budget.SKEW + 1
    b.next_claim = 0.0
    await b.claim(100, LIMIT, WINDOW)  # small, met: no want
    await a.claim(LIMIT, LIMIT, WINDOW)
    assert a.granted == LIMIT * budget.HEADROOM - 100  # nobody waits: a may take all that is free
    store_b = parse(store.documents[NAME][0], clock())["b"]
    store_b.want = 5_000  # b now says it waits, holding less than its share
    entries = parse(store.documents[NAME][0], clock())
    entries["b"] = store_b
    store.documents[NAME] = (budget.dump(entries), store.documents[NAME][1])
    a.spend(int(a.granted))
    clock.now += budget.LEASE + WINDOW + budget.SKEW + 1
    store_b.seen = clock.now
    store_b.chunks = []
    entries = {"b": store_b}
    store.documents[NAME] = (budget.dump(entries), store.documents[NAME][1])
    a.next_claim = 0.0
    await a.claim(LIMIT, LIMIT, WINDOW)
    assert a.granted == pytest.approx(LIMIT * budget.HEADROOM / 2)  # its share of two, not all


async def test_a_failing_store_degrades_once_logged_and_rejoins(
    store: MemoryStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    a = view(store, clock, "a")
    store.faults = 1.0
    with caplog.at_level(logging.WARNING, logger="shared.budget"):
        await a.claim(1_000, LIMIT, WINDOW)
        await a.claim(1_000, LIMIT, WINDOW)  # degraded: no second call, no second warning
    assert not a.live() and not a.covers(1)
    assert store.failed == 1
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "StoreDown" in caplog.records[0].getMessage()
    store.faults = 0.0
    clock.now += budget.REJOIN
    assert a.live()
    await a.claim(1_000, LIMIT, WINDOW)
    assert a.covers(1_000)


async def test_a_slow_store_counts_as_failed(clock: Clock) -> None:
    slow = MemoryStore(clock, latency=5.0)
    a = SharedBudget(slow, NAME, "a", clock=clock, timeout=0.05)
    await a.claim(1_000, LIMIT, WINDOW)
    assert not a.live()


async def test_an_unreadable_ledger_is_rewritten_whole(store: MemoryStore, clock: Clock) -> None:
    store.documents[NAME] = (b"not json", '"0"')
    a = view(store, clock, "a")
    await a.claim(1_000, LIMIT, WINDOW)
    assert a.covers(1_000)
    assert set(parse(store.documents[NAME][0], clock())) == {"a"}


# --- The gate consulting it -------------------------------------------------------------------------------


HEADERS = {
    "x-ratelimit-limit-tokens": str(LIMIT),
    "x-ratelimit-remaining-tokens": str(LIMIT),
    "x-ratelimit-reset-tokens": "1s",
}


def gate_with(shared: SharedBudget, clock: Clock) -> Gate:
    async def sleep(seconds: float) -> None:
        clock.now += seconds
        await asyncio.sleep(0)

    gate = Gate(clock=clock, sleep=sleep, shared=shared)
    gate.observe(200, HEADERS)
    return gate


async def test_the_gate_admits_on_a_lease_and_counts_the_call_against_it(store: MemoryStore, clock: Clock) -> None:
    a = view(store, clock, "a")
    gate = gate_with(a, clock)
    assert gate.wait_for(1_000, clock())[1] == SHARING  # nothing leased yet
    ticket = await gate.acquire(1_000, wait=5)
    gate.release(ticket)
    assert a.granted == 0  # leased what waited (1,000), then spent it
    assert store.ops == 2


async def test_the_gate_waits_while_the_ledger_is_full_and_times_out(store: MemoryStore, clock: Clock) -> None:
    other = view(store, clock, "other")
    await other.claim(LIMIT, LIMIT, WINDOW)
    gate = gate_with(view(store, clock, "a"), clock)
    with pytest.raises(AdmissionTimeout):
        await gate.acquire(1_000, wait=3)


async def test_the_gate_falls_back_to_its_own_share_when_the_store_fails(store: MemoryStore, clock: Clock) -> None:
    store.faults = 1.0
    a = view(store, clock, "a")
    gate = gate_with(a, clock)
    ticket = await gate.acquire(1_000, wait=5)  # the per-instance gate: the headers say the window is free
    gate.release(ticket)
    assert not a.live()
    assert gate.wait_for(1_000, clock())[1] != SHARING
