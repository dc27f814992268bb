"""Waking the jobs that wait out an outage (shared/recovery.py) on in-process fakes: the router's hooks, who is
woken and when, and every failure on the way (a pointer gone, an update or a listing failing, two instances
waking the same jobs). End to end through the local host: tests/worker/test_recovery_e2e.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import openai
import pytest

from shared import recovery, store
from shared.jobs import BackgroundWait, Job, Redelivery, RetryState
from shared.pacing import Pacer
from shared.routing import FAILURES_TO_OPEN, OPEN_BASE, ModelUnavailable, Router
from shared.settings import PoolEntry
from shared.worker import handle
from tests.worker.fakes import FakeResponses, FakeWorld, Message, fake_world

POOL = [
    {"name": "chat", "endpoint": "https://east.openai.azure.com", "deployment": "gpt-east", "priority": 1},
    {"name": "chat", "endpoint": "https://west.openai.azure.com", "deployment": "gpt-west", "priority": 2},
    {"name": "other", "endpoint": "https://east.openai.azure.com", "deployment": "gpt-other", "priority": 1},
]
NOW = datetime.now(UTC)  # the retry states' due times are real ones (shared.recovery reads the clock)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def down() -> openai.InternalServerError:
    request = httpx2.Request("POST", "https://res.openai.azure.com/openai/v1/chat/completions")
    return openai.InternalServerError("down", response=httpx2.Response(503, request=request), body=None)


def pooled(**settings: str) -> FakeWorld:
    return fake_world(AZURE_OPENAI_POOL=json.dumps(POOL), AZURE_OPENAI_DEPLOYMENT="chat", **settings)


def entry(world: FakeWorld, deployment: str) -> PoolEntry:
    return next(e for e in world.runtime.settings.pool if e.deployment == deployment)


async def waiting(
    world: FakeWorld, job_id: str, *, reason: str = "outage", deployment: str | None = None, due_in: float = 600
) -> str:
    """A job waiting in the retry store as ``shared.delivery.requeue`` leaves it; its pointer's message id."""
    redelivery = Redelivery(attempt=1, first_seen=NOW, reason=reason, total=1, since=NOW)  # type: ignore[arg-type]
    job = Job.model_validate({"id": job_id, "prompt": "hi", **({"deployment": deployment} if deployment else {})})
    state = RetryState(job=job, redelivery=redelivery, due=NOW + timedelta(seconds=due_in))
    saved = await store.save_retry_state(world.runtime, state, replaces=None, message_id=f"m-{job_id}")
    assert saved is not None
    sent = await world.jobs_queue.send_message(saved.ref.model_dump_json(), visibility_timeout=round(due_in))
    assert await store.record_pointer(world.runtime, saved, sent.id, sent.pop_receipt)
    return str(sent.id)


# --- the router's hooks --------------------------------------------------------------------------------------


async def test_the_router_says_when_a_circuit_opens_and_when_a_probe_closes_it() -> None:
    clock, events = Clock(), []
    router = Router(Pacer(), clock=clock)
    router.on_opened = lambda e, seconds: events.append(("opened", e.deployment, seconds))
    router.on_recovered = lambda e: events.append(("recovered", e.deployment))
    east = PoolEntry(endpoint="https://east.openai.azure.com", deployment="gpt-east")

    async def failing(route: Any, last: bool) -> str:
        raise down()

    async def answering(route: Any, last: bool) -> str:
        return "ok"

    assert await router.call((east,), 10, answering) == ("ok", east) and events == []  # closed: nothing to say
    for _ in range(FAILURES_TO_OPEN):
        with pytest.raises(openai.InternalServerError):
            await router.call((east,), 10, failing)
    assert events == [("opened", "gpt-east", OPEN_BASE)]
    with pytest.raises(ModelUnavailable):  # open: no call, nothing to say
        await router.call((east,), 10, answering)
    clock.now += OPEN_BASE
    with pytest.raises(openai.InternalServerError):  # the half-open probe fails: open again, for longer
        await router.call((east,), 10, failing)
    assert events[-1] == ("opened", "gpt-east", 2 * OPEN_BASE)
    clock.now += 2 * OPEN_BASE
    assert await router.call((east,), 10, answering) == ("ok", east)  # the probe answers: recovered
    assert events[-1] == ("recovered", "gpt-east") and len(events) == 3
    assert await router.call((east,), 10, answering) == ("ok", east) and len(events) == 3


# --- who is woken, and when ----------------------------------------------------------------------------------


async def test_the_jobs_waiting_out_the_deployments_outage_are_woken_spread_and_no_other() -> None:
    world = pooled(RECOVERY_SPREAD_SECONDS="10")
    pointers = [await waiting(world, f"o{i}", due_in=300 + i) for i in range(4)]
    await waiting(world, "slow", reason="throttled")  # a 429's retry-after is the service's to say
    await waiting(world, "elsewhere", deployment="other")  # may not go to the deployment that is back
    await waiting(world, "soon", due_in=0)  # comes before its turn anyway
    assert await recovery.wake(world.runtime, entry(world, "gpt-west"), now=NOW) == 4
    assert world.jobs_queue.updates == list(zip(pointers, [2, 4, 6, 8], strict=True))  # due first, over 10 s


async def test_a_closed_circuit_wakes_its_waiting_jobs_in_the_background() -> None:
    world = pooled(RECOVERY_SPREAD_SECONDS="2")  # within the jobs' first backoff (5 s)
    world.runtime.router = Router(world.runtime.pacer, clock=(clock := Clock()))
    recovery.attach(world.runtime)
    world.runtime.router.on_opened = lambda *_: None  # its probe is tested below, without sleeping
    world.model.errors = [down()] * 2 * FAILURES_TO_OPEN  # each job fails on both deployments of the pool
    for i in range(FAILURES_TO_OPEN):
        assert (
            await handle(Message(json.dumps({"id": f"j{i}", "prompt": "hi"}).encode(), id=f"m{i}"), world.runtime)
            is None
        )
    metadata = [world.worker_only.blobs[f"retries/j{i}.json"].metadata for i in range(FAILURES_TO_OPEN)]
    assert [m["reason"] for m in metadata] == ["outage"] * FAILURES_TO_OPEN and all("receipt" in m for m in metadata)
    clock.now += OPEN_BASE  # half-open: the next job is the probe, and it is answered
    assert await handle(Message(json.dumps({"id": "probe", "prompt": "hi"}).encode(), id="p"), world.runtime)
    await recovery.settle()
    assert sorted(woken for woken, _ in world.jobs_queue.updates) == sorted(world.jobs_queue.ids)
    [woken] = [
        await handle(Message(body.encode(), id=pointer), world.runtime)
        for (body, _), pointer in zip(world.jobs_queue.messages, world.jobs_queue.ids, strict=True)
        if pointer == world.jobs_queue.updates[0][0]
    ]
    assert woken is not None and woken.status == "succeeded" and woken.attempts == 2


async def test_recovery_waking_is_off_with_a_spread_of_zero() -> None:
    world = pooled(RECOVERY_SPREAD_SECONDS="0")
    await waiting(world, "o1")
    world.worker_only.failing_lists = 1  # not even listed
    assert await recovery.wake(world.runtime, entry(world, "gpt-east"), now=NOW) == 0
    assert world.jobs_queue.updates == [] and world.worker_only.failing_lists == 1


# --- every failure on the way --------------------------------------------------------------------------------


async def test_a_pointer_delivered_already_or_an_update_failing_leaves_the_others_woken() -> None:
    world = pooled()
    gone, taken, failing, fine = [await waiting(world, f"o{i}", due_in=300 + i) for i in range(4)]
    world.jobs_queue.deleted(gone)  # delivered and deleted since (404)
    world.jobs_queue.received(taken)  # being delivered: its pop receipt changed (400 PopReceiptMismatch)
    original = world.jobs_queue.update_message

    async def flaky(message: str, pop_receipt: str, *, visibility_timeout: int = 0) -> Any:
        if message == failing:
            world.jobs_queue.failing_updates = 1  # a dropped connection: that pointer still comes when due
        return await original(message, pop_receipt, visibility_timeout=visibility_timeout)

    world.jobs_queue.update_message = flaky  # type: ignore[method-assign]
    assert await recovery.wake(world.runtime, entry(world, "gpt-east"), now=NOW) == 1
    assert [pointer for pointer, _ in world.jobs_queue.updates] == [fine]


async def test_a_listing_that_fails_wakes_nothing_and_raises_nothing() -> None:
    world = pooled()
    await waiting(world, "o1")
    world.worker_only.failing_lists = 1  # the pointer arrives at its due time
    assert await recovery.wake(world.runtime, entry(world, "gpt-east"), now=NOW) == 0
    assert world.jobs_queue.updates == []


async def test_a_second_instance_wakes_only_the_jobs_re_enqueued_since_the_first_woke_them() -> None:
    world = pooled()
    pointers = [await waiting(world, f"o{i}", due_in=300 + i) for i in range(3)]
    assert await recovery.wake(world.runtime, entry(world, "gpt-east"), now=NOW) == 3
    # Another instance's circuit closes too: the jobs woken already are left alone (no 404 per job per instance),
    # one re-enqueued since (it met that instance's circuit still open) is woken.
    bounced = await waiting(world, "bounced", due_in=300)
    tried = len(world.jobs_queue.updates)
    assert await recovery.wake(world.runtime, entry(world, "gpt-west"), now=NOW) == 1
    assert [pointer for pointer, _ in world.jobs_queue.updates] == [*pointers, bounced] and tried == 3


async def test_two_instances_waking_the_same_jobs_without_the_store_wake_each_once() -> None:
    world = pooled()
    pointers = [await waiting(world, f"o{i}", due_in=300 + i) for i in range(3)]
    assert await recovery.wake(world.runtime, entry(world, "gpt-east"), now=NOW) == 3
    world.worker_only.fail_next("download")  # the last wake is not known: every waiting job is tried again ...
    assert await recovery.wake(world.runtime, entry(world, "gpt-west"), now=NOW) == 0  # ... and answered 404
    assert [pointer for pointer, _ in world.jobs_queue.updates] == pointers and len(world.jobs_queue.messages) == 3


async def test_a_job_without_a_recorded_pointer_is_not_woken_and_still_runs_when_due() -> None:
    world = pooled()
    world.model.errors = [down()] * 2
    world.worker_only.fail_next("set_metadata")  # the pointer goes out, its record does not
    assert await handle(Message(json.dumps({"id": "j1", "prompt": "hi"}).encode(), id="m1"), world.runtime) is None
    assert await recovery.wake(world.runtime, entry(world, "gpt-east")) == 0
    [(pointer, delay)] = world.jobs_queue.messages
    assert delay >= 5 and world.jobs_queue.updates == []
    result = await handle(Message(pointer.encode(), id=world.jobs_queue.ids[0]), world.runtime)
    assert result is not None and result.status == "succeeded"


# --- the probe when a circuit half-opens ---------------------------------------------------------------------


async def test_a_half_open_circuit_is_probed_with_a_few_tokens_while_jobs_wait_on_it() -> None:
    world = pooled()
    world.runtime.router = router = Router(world.runtime.pacer, clock=(clock := Clock()))
    recovered: list[str] = []
    router.on_recovered = lambda e: recovered.append(e.deployment)
    east = entry(world, "gpt-east")
    circuit = router.route(east).circuit
    circuit.failed(clock.now, probe=True)  # open for OPEN_BASE
    clock.now += OPEN_BASE
    assert await recovery.probe_later(world.runtime, east, 0) is False  # nothing waits: the next job probes it
    await waiting(world, "o1")
    world.model.errors = [down()]
    assert await recovery.probe_later(world.runtime, east, 0) is False  # still down: open again, longer
    assert circuit.state(clock.now) == "open" and recovered == []
    assert await recovery.probe_later(world.runtime, east, 0) is False  # not half-open: nothing sent
    clock.now = circuit.open_until
    assert await recovery.probe_later(world.runtime, east, 0) is True  # back: closed, and the jobs woken
    assert circuit.state(clock.now) == "closed" and recovered == ["gpt-east"]
    probes = world.model.calls
    assert len(probes) == 2 and all(p["messages"] == [{"role": "user", "content": "ping"}] for p in probes)
    assert {p["model"] for p in probes} == {"gpt-east"} and all(p["max_completion_tokens"] == 16 for p in probes)
    assert world.jobs_queue.updates == []  # no job was spent on probing
    assert await recovery.probe_later(world.runtime, east, 0) is False and len(world.model.calls) == 2  # closed


async def test_a_responses_deployment_is_probed_through_the_responses_api() -> None:
    world = fake_world(AZURE_OPENAI_DEPLOYMENT="gpt-5-pro", AZURE_OPENAI_API="responses")
    world.model.responses = fake = FakeResponses()  # type: ignore[attr-defined]
    world.runtime.router = router = Router(world.runtime.pacer, clock=(clock := Clock()))
    target = world.runtime.settings.pool[0]
    router.route(target).circuit.failed(clock.now, probe=True)
    clock.now += OPEN_BASE
    await waiting(world, "r1")
    assert await recovery.probe_later(world.runtime, target, 0) is True
    assert world.model.calls == []  # a Responses-only model answers chat completions with a 400
    assert [(c["model"], c["input"], c["max_output_tokens"], c["store"]) for c in fake.created] == [
        ("gpt-5-pro", "ping", 16, False)
    ]


async def test_a_background_job_whose_history_has_an_outage_is_not_woken() -> None:
    world = pooled(RECOVERY_SPREAD_SECONDS="10")
    await waiting(world, "o1")
    redelivery = Redelivery(attempt=1, first_seen=NOW, reason="outage", total=1, since=NOW)  # type: ignore[arg-type]
    thinking = BackgroundWait(response_id="resp_1", endpoint=POOL[1]["endpoint"], deployment="gpt-west", started_at=NOW)
    job = Job.model_validate({"id": "bg", "prompt": "hi"})
    state = RetryState(job=job, redelivery=redelivery, background=thinking, due=NOW + timedelta(seconds=60))
    saved = await store.save_retry_state(world.runtime, state, replaces=None, message_id="m-bg")
    assert saved is not None
    sent = await world.jobs_queue.send_message(saved.ref.model_dump_json(), visibility_timeout=60)
    assert await store.record_pointer(world.runtime, saved, sent.id, sent.pop_receipt)
    # Its next check is on its own schedule: the response runs on whatever the deployment does.
    assert [s.job_id for s in await recovery.waiting_on(world.runtime, entry(world, "gpt-west"))] == ["o1"]
