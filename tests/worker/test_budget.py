"""The shared budget's bookings (shared/budget.py) on an in-memory store with the blob service's conditional
writes (bench/simstore.py), and the pacing gate consulting it; no network, the clock a test's own."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from bench.simstore import MemoryStore
from shared import budget
from shared.budget import LEASE, SKEW, Conflict, SharedBudget, ledger_name, parse
from shared.pacing import SHARING, AdmissionTimeout, Gate

LIMIT, WINDOW = 10_000, 10.0
ROOM = LIMIT * budget.HEADROOM
NAME = ledger_name("https://x.openai.azure.com", "chat")
HELD = LEASE + WINDOW + SKEW  # how long a booking occupies the window, from its start


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def view(store: MemoryStore, clock: Clock, instance: str) -> SharedBudget:
    return SharedBudget(store, NAME, instance, clock=clock, rng=random.Random(1))


def ledger(store: MemoryStore, clock: Clock) -> dict[str, list[list[float]]]:
    return parse(store.documents[NAME][0], clock())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock, latency=0.0)


async def test_a_first_booking_creates_the_ledger_and_starts_now(store: MemoryStore, clock: Clock) -> None:
    a = view(store, clock, "a")
    await a.claim(3_000, 1_000, LIMIT, WINDOW)
    assert a.covers(3_000) and not a.covers(3_001)
    assert ledger(store, clock) == {"a": [[clock(), clock() + HELD, 3_000.0]]}
    assert store.ops == 2  # one read, one write


async def test_a_booking_starts_when_the_ledger_has_room_never_before(store: MemoryStore, clock: Clock) -> None:
    a, b = view(store, clock, "a"), view(store, clock, "b")
    await a.claim(LIMIT, 1_000, LIMIT, WINDOW)
    assert a.granted == ROOM  # alone: the whole room below the headroom
    await b.claim(1_000, 1_000, LIMIT, WINDOW)
    assert not b.covers(1_000)  # nothing free now: booked for when a's chunk leaves the window
    assert b.lease_start == pytest.approx(clock() + HELD)
    assert b.retry_in() == pytest.approx(HELD)
    clock.now = b.lease_start
    assert b.covers(1_000)
    clock.now += LEASE
    assert not b.covers(1_000)  # a booking not spent within its lease is gone


async def test_bookings_take_turns_and_a_newcomer_comes_after_the_current_ones(
    store: MemoryStore, clock: Clock
) -> None:
    a, b, c = view(store, clock, "a"), view(store, clock, "b"), view(store, clock, "c")
    await a.claim(LIMIT, 500, LIMIT, WINDOW)
    a.spend(int(a.granted))
    await b.claim(LIMIT, 500, LIMIT, WINDOW)
    assert b.granted == pytest.approx(ROOM / 2)  # two in the ledger: a turn is half the room
    clock.now += 1
    await c.claim(LIMIT, 500, LIMIT, WINDOW)
    assert c.granted == pytest.approx(ROOM / 3)
    assert c.lease_start >= b.lease_start  # never ahead of a booking already made


async def test_a_write_between_read_and_write_conflicts_and_the_booking_rereads(
    store: MemoryStore, clock: Clock
) -> None:
    a, b = view(store, clock, "a"), view(store, clock, "b")
    real_read = store.read
    raced = False

    async def read_then_b_writes(name: str) -> tuple[bytes, str] | None:
        nonlocal raced
        found = await real_read(name)
        if not raced:
            raced = True
            await b.claim(6_000, 6_000, LIMIT, WINDOW)  # lands after a's read: a's If-Match must fail
        return found

    store.read = read_then_b_writes  # type: ignore[method-assign]
    await a.claim(6_000, 6_000, LIMIT, WINDOW)
    assert store.conflicts == 1
    assert b.covers(6_000)
    assert not a.covers(1)  # what the re-read showed: b's 6,000 fill the window, a books after them
    assert a.lease_start == pytest.approx(b.lease_start + HELD)
    assert set(ledger(store, clock)) == {"a", "b"}


async def test_the_first_writers_racing_to_create_the_ledger_conflict(store: MemoryStore) -> None:
    await store.write(NAME, b"{}", None)
    with pytest.raises(Conflict):
        await store.write(NAME, b"{}", None)


async def test_an_instance_that_leaves_frees_its_part_when_its_chunks_expire(store: MemoryStore, clock: Clock) -> None:
    a, b = view(store, clock, "a"), view(store, clock, "b")
    await a.claim(LIMIT, 1_000, LIMIT, WINDOW)
    a.spend(int(a.granted))
    clock.now += HELD + 1  # a left without a word
    await b.claim(LIMIT, 1_000, LIMIT, WINDOW)
    assert b.covers(int(ROOM))
    assert set(ledger(store, clock)) == {"b"}


async def test_a_new_booking_records_what_was_spent_not_what_was_booked(store: MemoryStore, clock: Clock) -> None:
    a = view(store, clock, "a")
    await a.claim(5_000, 1_000, LIMIT, WINDOW)
    a.spend(2_000)  # 3,000 of the booking never used
    clock.now += LEASE
    spent_at = clock() - LEASE
    await a.claim(1_000, 1_000, LIMIT, WINDOW)
    chunks = ledger(store, clock)["a"]
    assert chunks[0] == [spent_at, spent_at + WINDOW + SKEW, 2_000.0]
    assert chunks[1][2] == 1_000


async def test_a_failing_store_degrades_once_logged_and_rejoins(
    store: MemoryStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    a = view(store, clock, "a")
    store.faults = 1.0
    with caplog.at_level(logging.INFO, logger="shared.budget"):
        await a.claim(1_000, 1_000, LIMIT, WINDOW)
        await a.claim(1_000, 1_000, LIMIT, WINDOW)  # degraded: no second call
        assert not a.live() and not a.covers(1)
        assert store.failed == 1
        clock.now += 1
        assert a.live()  # a failure alone: a second on its own share
        await a.claim(1_000, 1_000, LIMIT, WINDOW)  # fails again: twice as long, no second warning
        clock.now += 1
        assert not a.live()
        clock.now += 1
        assert a.live()
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert "StoreDown" in caplog.records[0].getMessage()
        store.faults = 0.0
        await a.claim(1_000, 1_000, LIMIT, WINDOW)
    assert a.covers(1_000)
    assert caplog.records[-1].levelno == logging.INFO  # back on the ledger, said once
    assert a.failures == 0


async def test_a_store_that_stays_down_is_tried_less_and_less_often(store: MemoryStore, clock: Clock) -> None:
    a = view(store, clock, "a")
    store.faults = 1.0
    for _ in range(20):  # two minutes, a claim every 6 s
        await a.claim(1_000, 1_000, LIMIT, WINDOW)
        clock.now += 6
    assert store.failed <= 8  # 1, 2, 4, 8, 16 s, then every 30 s at most


async def test_a_slow_store_counts_as_failed(clock: Clock) -> None:
    slow = MemoryStore(clock, latency=5.0)
    a = SharedBudget(slow, NAME, "a", clock=clock, timeout=0.05)
    await a.claim(1_000, 1_000, LIMIT, WINDOW)
    assert not a.live()


@pytest.mark.parametrize("document", [b"not json", b'{"claims": {"x": [[1, 2]]}}', b'{"claims": 3}'])
async def test_an_unreadable_ledger_is_rewritten_whole(store: MemoryStore, clock: Clock, document: bytes) -> None:
    store.documents[NAME] = (document, '"0"')
    a = view(store, clock, "a")
    await a.claim(1_000, 1_000, LIMIT, WINDOW)
    assert a.covers(1_000)
    assert set(ledger(store, clock)) == {"a"}


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


async def test_the_gate_admits_on_a_booking_and_counts_the_call_against_it(store: MemoryStore, clock: Clock) -> None:
    a = view(store, clock, "a")
    gate = gate_with(a, clock)
    assert gate.wait_for(1_000, clock())[1] == SHARING  # nothing booked yet
    ticket = await gate.acquire(1_000, wait=5)
    gate.release(ticket)
    assert a.granted == 0  # booked what waited (1,000), then spent it
    assert store.ops == 2


async def test_the_gate_waits_for_its_booking_to_start(store: MemoryStore, clock: Clock) -> None:
    other = view(store, clock, "other")
    await other.claim(LIMIT, 1_000, LIMIT, WINDOW)
    a = view(store, clock, "a")
    gate = gate_with(a, clock)
    began = clock()
    ticket = await gate.acquire(1_000, wait=2 * HELD)
    gate.release(ticket)
    assert clock() >= began + HELD  # not before the other's chunk left the window
    assert store.ops == 4  # the other's booking, then one of its own: no storage call while it waited


async def test_the_gate_gives_up_when_the_booking_starts_after_the_wait_bound(store: MemoryStore, clock: Clock) -> None:
    other = view(store, clock, "other")
    await other.claim(LIMIT, 1_000, LIMIT, WINDOW)
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


async def test_a_call_above_the_ledgers_room_is_left_to_the_headers(store: MemoryStore, clock: Clock) -> None:
    gate = gate_with(view(store, clock, "a"), clock)
    ticket = await gate.acquire(int(ROOM) + 100, wait=1)  # no booking could ever hold it: the headers decide
    gate.release(ticket)
    assert store.ops == 0


def test_a_chunk_of_negative_tokens_frees_nothing(clock: Clock) -> None:
    forged = b'{"claims": {"x": [[0, 9999999999, -50000]]}}'
    assert parse(forged, clock()) == {"x": [[0.0, 9999999999.0, 0.0]]}
