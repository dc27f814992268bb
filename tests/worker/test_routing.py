"""The deployment pool (shared/routing.py) and the outage policy, on in-process fakes: circuits, the choice
among entries, failover inside one invocation, and a job waiting out an outage on the queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx2
import openai
import pytest

from shared.jobs import Redelivery, Result
from shared.pacing import Pacer
from shared.policy import OUTAGE_BACKOFF, Requeue, RetryLater, Transient, plan_retry
from shared.routing import FAILURES_TO_OPEN, OPEN_BASE, OPEN_MAX, Circuit, ModelUnavailable, Router
from shared.settings import PoolEntry, Settings
from shared.worker import handle
from tests.worker.fakes import FakeWorld, Message, fake_world

PRIMARY = {"name": "chat", "endpoint": "https://east.openai.azure.com", "deployment": "gpt-east", "priority": 1}
SECONDARY = {"name": "chat", "endpoint": "https://west.openai.azure.com", "deployment": "gpt-west", "priority": 2}


def unavailable(status: int = 503) -> openai.APIStatusError:
    request = httpx2.Request("POST", "https://east.openai.azure.com/openai/v1/chat/completions")
    return openai.InternalServerError("down", response=httpx2.Response(status, request=request), body=None)


def throttled() -> openai.RateLimitError:
    request = httpx2.Request("POST", "https://east.openai.azure.com/openai/v1/chat/completions")
    response = httpx2.Response(429, request=request, headers={"retry-after": "200"})
    return openai.RateLimitError("limited", response=response, body=None)


def pooled(*entries: dict[str, object], **settings: str) -> FakeWorld:
    return fake_world(AZURE_OPENAI_POOL=json.dumps(entries), AZURE_OPENAI_DEPLOYMENT="", **settings)


async def run(world: FakeWorld, job_id: str, **job: object) -> Result | None:
    return await handle(
        Message(json.dumps({"id": job_id, "prompt": "hi", **job}).encode(), id=f"m-{job_id}"), world.runtime
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_circuit_opens_after_a_run_of_failures_probes_once_then_closes() -> None:
    circuit, now = Circuit(), 0.0
    for _ in range(FAILURES_TO_OPEN - 1):
        circuit.failed(now, probe=False)
    assert circuit.state(now) == "closed"
    circuit.failed(now, probe=False)
    assert circuit.state(now) == "open" and not circuit.admits(now + OPEN_BASE - 0.1)
    for _ in range(2 * FAILURES_TO_OPEN):  # calls sent before it opened, failing late: no longer open for it
        circuit.failed(now + 1, probe=False)
    assert circuit.open_until == now + OPEN_BASE
    now += OPEN_BASE
    assert circuit.state(now) == "half-open" and circuit.admits(now)
    assert circuit.take(now) and not circuit.admits(now)  # one probe at a time
    circuit.failed(now, probe=True)  # the probe failed: open again, for longer
    assert circuit.open_until == now + 2 * OPEN_BASE
    now = circuit.open_until
    assert circuit.take(now)
    circuit.succeeded()
    assert circuit.state(now) == "closed" and circuit.admits(now)


def test_the_open_time_grows_to_a_bound() -> None:
    circuit, now = Circuit(), 0.0
    spans = []
    for _ in range(6):
        circuit.failed(now, probe=True)
        spans.append(circuit.open_until - now)
        now = circuit.open_until
    assert spans == [min(OPEN_BASE * 2**i, OPEN_MAX) for i in range(6)] and spans[-1] == OPEN_MAX


def test_the_pool_is_read_by_priority_and_a_job_names_a_group_or_a_deployment() -> None:
    batch = {"endpoint": "https://east.openai.azure.com", "deployment": "gpt-41", "priority": 3}
    settings = Settings.from_env({"AZURE_OPENAI_POOL": json.dumps([SECONDARY, batch, PRIMARY])})
    assert [e.deployment for e in settings.pool] == ["gpt-east", "gpt-west", "gpt-41"]
    assert settings.default_deployment == "chat" and settings.openai_endpoint == PRIMARY["endpoint"]
    assert [e.deployment for e in settings.entries_for(None)] == ["gpt-east", "gpt-west"]  # the group, in order
    assert [e.deployment for e in settings.entries_for("gpt-west")] == ["gpt-west"]  # pinned to one
    assert [e.label for e in settings.entries_for("gpt-41")] == ["gpt-41"]  # unnamed: its deployment name
    assert settings.allowed_deployments == ("chat", "gpt-east", "gpt-west", "gpt-41")


@pytest.mark.parametrize(
    ("pool", "says"),
    [
        ("[]", "empty list"),
        ("{}", "JSON list"),
        ('[{"endpoint": "http://east.example", "deployment": "d"}]', "https URL"),
        ('[{"endpoint": "https://e.openai.azure.com", "deployment": "d", "priority": 0}]', "priority"),
        ('[{"endpoint": "https://e.openai.azure.com", "deployment": "d", "key": "x"}]', "key"),
    ],
)
def test_a_bad_pool_setting_says_what_is_wrong(pool: str, says: str) -> None:
    from shared.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_POOL") as raised:
        Settings.from_env({"AZURE_OPENAI_POOL": pool})
    assert says in str(raised.value)


def test_the_choice_prefers_priority_then_room_then_weight() -> None:
    clock = Clock()
    picks: list[list[str]] = []
    router = Router(
        Pacer(clock=clock),
        clock=clock,
        pick=lambda routes, w: picks.append([r.entry.label for r in routes]) or routes[-1],
    )
    a, b, c = (
        PoolEntry(endpoint="https://a.openai.azure.com", deployment="d", name="a"),
        PoolEntry(endpoint="https://b.openai.azure.com", deployment="d", name="b", weight=3),
        PoolEntry(endpoint="https://c.openai.azure.com", deployment="d", name="c", priority=2),
    )
    assert router.choose((a, b, c), 10, []).entry == b and picks == [["a", "b"]]  # equals: weighted pick
    for entry in (a, b):
        router.route(entry).gate.observe(429, {"retry-after": "30"})  # held: no room
    assert router.choose((a, b, c), 10, []).entry == c  # the next priority with room
    router.route(c).gate.observe(429, {"retry-after": "60"})
    assert router.choose((a, b, c), 10, []).entry == a  # none has room: the soonest
    for entry in (a, b, c):
        router.route(entry).circuit.open_until = clock.now + 20
    assert router.choose((a, b, c), 10, []) is None
    assert isinstance(error := router.unavailable((a, b, c)), ModelUnavailable) and error.delay == 20


async def test_a_failed_call_fails_over_at_once_and_the_result_says_who_answered() -> None:
    world = pooled(PRIMARY, SECONDARY)
    world.model.errors = [unavailable()]
    result = await run(world, "j1")
    assert [c["model"] for c in world.model.calls] == ["gpt-east", "gpt-west"]
    assert result is not None and result.status == "succeeded"
    stored = world.result("j1")
    assert (stored["deployment"], stored["endpoint"]) == ("gpt-west", SECONDARY["endpoint"])


async def test_a_429_fails_over_and_holds_the_throttled_entry() -> None:
    world = pooled(PRIMARY, SECONDARY)
    world.model.errors = [throttled()]
    await run(world, "j1")
    assert [c["model"] for c in world.model.calls] == ["gpt-east", "gpt-west"]
    assert world.result("j1")["status"] == "succeeded"


async def test_other_refusals_do_not_fail_over() -> None:
    world = pooled(PRIMARY, SECONDARY)
    request = httpx2.Request("POST", "https://east.openai.azure.com/openai/v1/chat/completions")
    world.model.errors = [openai.BadRequestError("no", response=httpx2.Response(400, request=request), body=None)]
    await run(world, "j1")
    assert [c["model"] for c in world.model.calls] == ["gpt-east"]
    assert world.result("j1")["error"]["code"] == "model_rejected"


async def test_an_outage_of_every_entry_re_enqueues_then_opens_the_circuits_so_nothing_is_sent() -> None:
    world = pooled(PRIMARY, SECONDARY)
    world.model.errors = [unavailable() for _ in range(2 * FAILURES_TO_OPEN)]
    for i in range(FAILURES_TO_OPEN):
        assert await run(world, f"j{i}") is None  # re-enqueued, not raised: no delivery attempt spent
    assert len(world.model.calls) == 2 * FAILURES_TO_OPEN
    assert set(world.runtime.router.states().values()) == {"open"}
    assert await run(world, "later") is None
    assert len(world.model.calls) == 2 * FAILURES_TO_OPEN  # every circuit open: nothing sent
    delays = [visibility for _, visibility in world.jobs_queue.messages]
    assert len(delays) == FAILURES_TO_OPEN + 1 and min(delays) >= OUTAGE_BACKOFF[0]
    state = json.loads(world.worker_only.blobs["retries/later.json"].body)
    assert state["redelivery"]["reason"] == "outage"


def test_an_outage_is_waited_out_with_growing_delays_up_to_the_tolerance() -> None:
    settings = Settings.from_env(
        {
            "AZURE_OPENAI_ENDPOINT": "https://e.openai.azure.com",
            "AZURE_OPENAI_DEPLOYMENT": "d",
            "MODEL_OUTAGE_TOLERANCE_SECONDS": "600",
        }
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    verdict, previous, delays = RetryLater("outage", 0.0, "down"), None, []
    now = start
    while isinstance(planned := plan_retry(verdict, previous, settings, now=now, jitter=lambda a, b: a), Requeue):
        delays.append(planned.delay)
        previous, now = planned.redelivery, now + timedelta(seconds=planned.delay)
    assert delays[:5] == list(OUTAGE_BACKOFF[:5]) and sum(delays) == 600
    assert isinstance(planned, Transient)  # past the tolerance: the host's retries, then poison (replayable)
    later = plan_retry(RetryLater("outage", 45.0, "circuit"), None, settings, now=start, jitter=lambda a, b: a)
    assert isinstance(later, Requeue) and later.delay == 45.0  # not before the next probe
    none = Settings.from_env(
        {
            **{"AZURE_OPENAI_ENDPOINT": "https://e.openai.azure.com"},
            "AZURE_OPENAI_DEPLOYMENT": "d",
            "MODEL_OUTAGE_TOLERANCE_SECONDS": "0",
        }
    )
    assert isinstance(plan_retry(verdict, None, none, now=start), Transient)
    throttled_before = Redelivery(attempt=3, first_seen=start - timedelta(hours=1), reason="throttled")
    fresh = plan_retry(verdict, throttled_before, settings, now=start, jitter=lambda a, b: a)
    assert isinstance(fresh, Requeue) and fresh.redelivery.attempt == 1  # counted per reason


async def test_a_probe_that_timed_out_in_the_gate_leaves_the_circuit_half_open() -> None:
    # The probe was never sent (the gate did not admit it in time): nothing is known of the deployment,
    # so the circuit must not close; the next call may probe.
    from shared.pacing import AdmissionTimeout

    clock = Clock()
    router = Router(Pacer(clock=clock), clock=clock)
    entry = PoolEntry(endpoint="https://east.openai.azure.com", deployment="d")
    circuit = router.route(entry).circuit
    for _ in range(FAILURES_TO_OPEN):
        circuit.failed(clock.now, probe=False)
    clock.now = circuit.open_until  # half-open: the next call is the probe

    async def not_admitted(route: object, last: bool) -> str:
        raise AdmissionTimeout(3.0, "the window is full")

    with pytest.raises(AdmissionTimeout):
        await router.call((entry,), 10, not_admitted)
    assert circuit.state(clock.now) == "half-open" and circuit.admits(clock.now)  # not closed, probe freed

    async def answered(route: object, last: bool) -> str:
        return "ok"

    assert (await router.call((entry,), 10, answered))[0] == "ok"
    assert circuit.state(clock.now) == "closed"  # a probe that was sent and answered closes it
