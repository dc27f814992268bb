"""The pacing gate (shared/pacing/) on a virtual clock: admission by the service's own numbers,
holds after a 429, the header quirks, the wait bound, and the worker's mapping of a timeout."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from types import SimpleNamespace

import httpx2
import openai
import pytest

from shared import pacing
from shared.pacing import DEFAULT_BACKOFF, EDGE, POLL, STALE, AdmissionTimeout, Charge, Gate, Pacer, Ticket
from shared.policy import RetryLater, classify
from shared.worker import handle
from tests.worker.fakes import Message, fake_world


class VirtualClock:
    """``clock`` and ``sleep`` for a Gate: time moves only when the test calls ``advance``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        target = self.now + seconds
        await _settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            wake, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake)
            future.set_result(None)
            await _settle()
        self.now = target
        await _settle()


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def limits(tokens: int | str | None, requests: int | str | None = 100, reset: str | None = "10s") -> dict[str, str]:
    headers = {"x-ratelimit-limit-tokens": "10000", "x-ratelimit-limit-requests": "100"}
    for name, value in (("remaining-tokens", tokens), ("remaining-requests", requests)):
        if value is not None:
            headers[f"x-ratelimit-{name}"] = str(value)
    if reset is not None:
        headers |= {"x-ratelimit-reset-tokens": reset, "x-ratelimit-reset-requests": reset}
    return headers


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def gate(vclock: VirtualClock) -> Gate:
    return Gate(clock=vclock.clock, sleep=vclock.sleep, max_hold=300)


def alone(gate: Gate, vclock: VirtualClock, remaining: int, limit: int = 10_000) -> None:
    """Make the window's use (limit - remaining) this gate's own, as for the only instance of a deployment."""
    gate.admitted.append(Charge(vclock.now, limit - remaining))


def admitted(tasks: list[asyncio.Task[Ticket]]) -> int:
    return sum(task.done() and task.exception() is None for task in tasks)


async def test_admits_at_once_within_the_remaining_budget(gate: Gate, vclock: VirtualClock) -> None:
    alone(gate, vclock, remaining=5000)
    gate.observe(200, limits(tokens=5000))
    first = await gate.acquire(2000, wait=60)
    second = await gate.acquire(2000, wait=60)
    assert gate.in_flight == [first, second]


def spread(gate: Gate, vclock: VirtualClock, each: int) -> None:
    """Five calls of ``each`` tokens admitted by this gate over the last 4 s, one a second."""
    gate.admitted.extend(Charge(vclock.now - ago, each) for ago in (4, 3, 2, 1, 0))


async def test_an_exhausted_budget_frees_up_as_the_gates_own_calls_leave_the_window(
    gate: Gate, vclock: VirtualClock
) -> None:
    spread(gate, vclock, 1900)  # 9,500 of 10,000 used, all of it this gate's
    gate.observe(200, limits(tokens=500, reset="6s"))  # a 6 s window: the oldest call leaves it in 2 s (+ EDGE)
    task = asyncio.create_task(gate.acquire(1000, wait=60))
    await vclock.advance(2.0)
    assert not task.done()
    await vclock.advance(EDGE + 0.1)
    assert task.done() and task.result().tokens == 1000


async def test_instances_share_what_frees_up_by_their_part_of_the_window(vclock: VirtualClock) -> None:
    # Two instances, each with half the window's use: each counts on half of what frees up.
    one, other = (Gate(clock=vclock.clock, sleep=vclock.sleep) for _ in range(2))
    for gate in (one, other):
        spread(gate, vclock, 950)
        gate.observe(200, limits(tokens=500, reset="6s"))
    tasks = [asyncio.create_task(gate.acquire(2500, wait=60)) for gate in (one, other)]
    await vclock.advance(4.0)
    # Aiming at HEADROOM (97 %) of the limit: alone, 3 s would do (5,700 used); sharing, each waits for 5,000 of
    # the deployment's 9,700 to be free: 4 s.
    assert admitted(tasks) == 0
    await vclock.advance(EDGE + 0.1)
    assert admitted(tasks) == 2
    newcomer = Gate(clock=vclock.clock, sleep=vclock.sleep)  # nothing of its own in a busy window
    newcomer.observe(200, limits(tokens=5000, reset="6s"))
    assert newcomer.needed(230) == 0 and newcomer.needed(240) > 0  # MIN_SHARE (5 %) of the 4,700 below HEADROOM


async def test_in_flight_charges_count_until_their_response_arrives(gate: Gate, vclock: VirtualClock) -> None:
    alone(gate, vclock, remaining=1000)
    gate.observe(200, limits(tokens=1000, reset="1m0s"))
    first = await gate.acquire(600, wait=60)
    second = asyncio.create_task(gate.acquire(600, wait=60))
    await vclock.advance(1)
    assert not second.done()  # 1000 left (and 150 refilled), 600 of it already spoken for here
    gate.observe(200, limits(tokens=400, reset="1m0s"), first)  # the first's charge is now in the headers
    await vclock.advance(1)
    assert not second.done()  # 400 (+160 refilled) < 600: still short, but no longer counted twice
    gate.observe(200, limits(tokens=5000, reset="1m0s"))  # the window freed up
    await vclock.advance(POLL)
    assert second.done()
    gate.release(first)
    assert gate.in_flight == [second.result()]


async def test_a_429_holds_every_waiter_for_its_retry_after(gate: Gate, vclock: VirtualClock) -> None:
    gate.observe(200, {})
    tasks = [asyncio.create_task(gate.acquire(10, wait=60)) for _ in range(5)]
    await _settle()
    assert admitted(tasks) == 5  # no numbers: nothing known, nothing held
    gate.observe(429, {"retry-after-ms": "7500", "retry-after": "8"})
    later = [asyncio.create_task(gate.acquire(10, wait=60)) for _ in range(5)]
    await vclock.advance(7.4)
    assert admitted(later) == 0  # all of them, not just the call that got the 429
    await vclock.advance(0.2)
    assert admitted(later) == 5


async def test_a_hold_is_capped_and_a_429_without_retry_after_backs_off(vclock: VirtualClock) -> None:
    gate = Gate(clock=vclock.clock, sleep=vclock.sleep, max_hold=30)
    gate.observe(429, {"retry-after": "900"})
    assert gate.hold_until == vclock.now + 30
    bare = Gate(clock=vclock.clock, sleep=vclock.sleep)
    bare.observe(429, {"x-ratelimit-remaining-tokens": "-1"})
    assert bare.hold_until == vclock.now + DEFAULT_BACKOFF
    by_reset = Gate(clock=vclock.clock, sleep=vclock.sleep)
    by_reset.observe(429, {"retry-after": "0", "x-ratelimit-reset-tokens": "4s"})
    assert by_reset.hold_until == vclock.now + 4


async def test_the_first_call_probes_alone_until_the_service_answers(gate: Gate, vclock: VirtualClock) -> None:
    tasks = [asyncio.create_task(gate.acquire(100, wait=60)) for _ in range(6)]
    await vclock.advance(1)
    assert admitted(tasks) == 1  # a cold burst is not sent blind
    alone(gate, vclock, remaining=650)
    gate.observe(200, limits(tokens=650, reset="1m0s"), tasks[0].result())  # 350 short of HEADROOM (97 %)
    await vclock.advance(POLL)
    assert admitted(tasks) == 4  # then as many as the numbers allow
    cold = Gate(clock=vclock.clock, sleep=vclock.sleep)
    stuck = [asyncio.create_task(cold.acquire(1, wait=60)) for _ in range(3)]
    await vclock.advance(pacing.PROBE + POLL)
    assert admitted(stuck) == 3  # a probe that never answers delays the others only so long


@pytest.mark.parametrize(
    "headers",
    [
        {},  # an unlimited deployment, PTU: nothing said
        limits(tokens=-1, requests=-1, reset=None),
        limits(tokens=0, requests=0, reset=None),  # the quirk: 0 and no retry-after, on a 200
        limits(tokens=0, requests=0, reset="0s"),
        limits(tokens="-1", requests=None, reset="-1"),
        limits(tokens="lots", requests="", reset="soon"),
    ],
)
async def test_quirk_headers_do_not_stall(gate: Gate, headers: dict[str, str]) -> None:
    gate.observe(200, headers)
    tickets = [await gate.acquire(10_000, wait=0.001) for _ in range(50)]
    assert len(gate.in_flight) == len(tickets) == 50


async def test_known_numbers_expire_at_their_reset_or_soon_without_one(gate: Gate, vclock: VirtualClock) -> None:
    gate.observe(200, {"x-ratelimit-remaining-tokens": "5"})  # no reset time: believed for STALE seconds
    task = asyncio.create_task(gate.acquire(100, wait=60))
    await vclock.advance(STALE + POLL)
    assert task.done()


async def test_a_request_larger_than_the_whole_limit_is_not_held_back(gate: Gate) -> None:
    gate.observe(200, limits(tokens=10, reset="50s"))
    assert (await gate.acquire(20_000, wait=0.001)).tokens == 20_000  # only the service can refuse it


async def test_the_wait_is_bounded_and_the_timeout_says_how_long_is_left(gate: Gate, vclock: VirtualClock) -> None:
    alone(gate, vclock, remaining=0)
    gate.observe(200, limits(tokens=0, reset="45s"))  # one call of this gate's holds the window for 45 s
    task = asyncio.create_task(gate.acquire(100, wait=10))
    await vclock.advance(10.5)
    assert task.done() and isinstance(task.exception(), AdmissionTimeout)
    error = task.exception()
    assert isinstance(error, AdmissionTimeout) and error.delay == pytest.approx(35, abs=0.5)
    gate.observe(429, {"retry-after": "200"})
    started = vclock.now
    with pytest.raises(AdmissionTimeout) as held:  # a hold that outlasts the bound: no point sleeping through it
        await gate.acquire(1, wait=60)
    assert vclock.now == started and held.value.delay == pytest.approx(200)


def test_reset_durations_as_the_service_writes_them() -> None:
    cases = {"6s": 6, "1m0s": 60, "250ms": 0.25, "8.64s": 8.64, "1h2m3.5s": 3723.5, "0s": 0, "12": 12, "0.5": 0.5}
    for text, seconds in cases.items():
        assert pacing.parse_duration(text) == pytest.approx(seconds), text
    for text in ("", "-1", "soon", "6s later", "1e9"):
        assert pacing.parse_duration(text) is None, text


def test_the_estimate_is_azures_admission_charge() -> None:
    messages = [{"role": "system", "content": "x" * 8}, {"role": "user", "content": "y" * 9}]
    assert pacing.estimate_tokens(messages, 100) == (3 + 2) + (3 + 3) + 3 + 100
    assert pacing.estimate_tokens(messages, None) == 14 + pacing.DEFAULT_OUTPUT_BUDGET


async def test_the_hook_feeds_the_gate_of_the_deployment_named_in_the_body(vclock: VirtualClock) -> None:
    pacer = Pacer(clock=vclock.clock, sleep=vclock.sleep)
    gate = pacer.gate("https://Res.openai.azure.com/", "gpt-a")
    request = SimpleNamespace(
        url="https://res.openai.azure.com/openai/v1/chat/completions", content=json.dumps({"model": "gpt-a"}).encode()
    )
    async with gate.admit(100, wait=1) as ticket:
        await pacer.on_response(SimpleNamespace(request=request, status_code=429, headers={"retry-after": "3"}))
        assert ticket.settled  # the hook knew which call it answered
    assert gate.hold_until == vclock.now + 3 and not gate.in_flight
    assert pacer.gate("https://res.openai.azure.com", "gpt-b").hold_until == 0  # per deployment


async def test_an_admission_timeout_is_a_throttled_retry_later_and_the_job_is_re_enqueued() -> None:
    world = fake_world(MODEL_ADMISSION_WAIT_SECONDS="1")
    verdict = classify(AdmissionTimeout(42.0, "held after a 429"), world.runtime)
    assert isinstance(verdict, RetryLater) and verdict.reason == "throttled" and verdict.delay == 42.0
    gate = world.runtime.pacer.gate(world.runtime.settings.openai_endpoint, "gpt-test")
    gate.observe(429, {"retry-after": "120"})
    result = await handle(Message(json.dumps({"id": "p1", "prompt": "hi"}).encode()), world.runtime)
    assert result is None and not world.model.calls  # never sent
    [(_, visibility)] = world.jobs_queue.messages
    assert 120 <= visibility <= 145


async def test_pacing_off_sends_straight_on() -> None:
    world = fake_world(MODEL_ADMISSION_WAIT_SECONDS="0")
    world.runtime.pacer.gate(world.runtime.settings.openai_endpoint, "gpt-test").observe(429, {"retry-after": "120"})
    result = await handle(Message(json.dumps({"id": "p2", "prompt": "hi"}).encode()), world.runtime)
    assert result is not None and result.status == "succeeded" and len(world.model.calls) == 1


async def test_a_429_under_the_gate_is_sent_again_through_the_gate_not_re_enqueued() -> None:
    world = fake_world(MODEL_ADMISSION_WAIT_SECONDS="30")
    request = httpx2.Request("POST", "https://res.openai.azure.com/openai/v1/chat/completions")
    response = httpx2.Response(429, headers={"retry-after-ms": "300"}, request=request)
    world.model.errors = [openai.RateLimitError("slow down", response=response, body=None)]
    result = await handle(Message(json.dumps({"id": "p3", "prompt": "hi"}).encode()), world.runtime)
    assert result is not None and result.status == "succeeded" and len(world.model.calls) == 2
    assert not world.jobs_queue.messages  # waited out in the gate: nothing went back on the queue
    gate = world.runtime.pacer.gate(world.runtime.settings.openai_endpoint, "gpt-test")
    assert gate.hold_until > 0  # the second call went only after the hold


async def test_one_outlier_reset_widens_the_window_only_while_it_is_in_force(gate: Gate, vclock: VirtualClock) -> None:
    gate.observe(200, limits(5000, reset="10s"))
    assert gate.window() == 10.0
    gate.observe(200, limits(5000, reset="600s"))  # one odd answer: the window lasts at least until then
    gate.observe(200, limits(5000, reset="8s"))
    assert gate.window() == 600.0
    await vclock.advance(601)  # past the outlier's own reset: it says nothing any more
    gate.observe(200, limits(5000, reset="9s"))
    assert gate.window() == 9.0  # the window shrinks back to what the service says now
