"""A stateful property test of the live lane (issue 21): ``handle`` driven by producers, the host and the
worker's own re-enqueues in any order, with duplicates, forged and stale pointers, redeliveries, storage
and notice-send failures at any step and model 429/5xx/400 in between.

The machine plays the queue host: it delivers any queued message (the clock moves on to when it is
visible), redelivers one whose delivery raised or whose delete was lost (same message id, ``dequeue_count``
+ 1) up to ``maxDequeueCount``, then moves it to the poison queue, from which the operator replays it as a
new message. It plays producers (jobs, claim checks, the same id again, pointers without the token or with a
guessed one, copies of stale pointers) and the weather (the next storage calls of a kind failing, before or
after storage carried them out; pointer or notice sends failing; the next model calls answering 429, 500
or 400). The clock is the machine's (``shared.delivery.now``, ``shared.worker.now``, the router's circuits)
and the retry bounds are small, so every bound is met.

After every step: a succeeded result never changes and no result disappears; a result exists only for an
id a producer sent, and a succeeded one answers one of that id's sends; no retry state is past
``RETRY_MAX_ATTEMPTS``; the model is called only in a delivery the worker planned (a producer's job for an
id neither answered nor waiting, the pointer carrying its retry state's current token, or a redelivery of
the message that stored that state), at most once each, so a job's calls never exceed its planned
deliveries; a result written by a continued job counts every re-enqueue in ``attempts``. Nothing a
delivery does touches another job (result, retry state, payload, notice, pointer); a forged or stale
pointer changes nothing at all but, for a job whose pointer never went out, sending that pointer (the state's
own token, due when the state says, recorded on the state's metadata); only a planned delivery moves a retry
state on (attempts, timing, token), and the job it holds stays the one first stored (a duplicate never
replaces it).

After the run, every queue drained (model healthy, no failures): every job sent has a result with no notice
pending, every job with ``reply_to`` was notified, and nothing is left in the worker-only container or the
payloads container, but what is left to the containers' lifecycle rules by design: blobs whose delete was
made to fail (released best effort), and a payload only the id's name ties to a job (a claim-check
duplicate's, one held by a retry state removed for its answered job, a poisoned reference's dropped by
the replay). A job whose retry state was stored by a message the host then poisoned before the pointer went
out is answered too: the replay (or any message naming it) sends the pointer the state never had.

Fast tier: in-process fakes (tests/worker/fakes.py), a few seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from unittest import mock

import httpx2
import openai
from azure.core.exceptions import AzureError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from shared.routing import ModelUnavailable, Router
from shared.settings import max_dequeue_count
from shared.store import LOST_POINTER_SECONDS
from shared.worker import handle
from tests.worker.fakes import BLOB_CALLS, Blob, FakeContainer, Message, fake_world

JOB_IDS = ("a", "b", "c")  # few, so that the same id comes back often
RETRY_MAX_ATTEMPTS = 3
BOUNDS = {  # small, so that every bound is reached within a run
    "RETRY_MAX_ATTEMPTS": str(RETRY_MAX_ATTEMPTS),
    "RETRY_MAX_SECONDS": "600",
    "THROTTLE_MAX_ATTEMPTS": "2",
    "THROTTLE_MAX_DELAY_SECONDS": "60",
    "MODEL_OUTAGE_TOLERANCE_SECONDS": "60",
}
T0 = datetime(2026, 1, 1, tzinfo=UTC)
VISIBILITY = timedelta(seconds=10)  # host.json visibilityTimeout: when the host redelivers a message that raised
Source = Literal["producer", "worker", "forged", "stale", "replay"]


@dataclass
class Queued:
    """A message on the jobs queue (or the poison queue), as the host sees it."""

    message: Message
    visible: datetime
    job_id: str
    source: Source
    seq: int


def _response(status: int, headers: dict[str, str] | None = None) -> httpx2.Response:
    request = httpx2.Request("POST", "https://res.openai.azure.com/openai/v1/chat/completions")
    return httpx2.Response(status, headers=headers, json={"error": {}}, request=request)


def model_error(kind: str) -> Exception:
    if kind == "429":
        return openai.RateLimitError("slow down", response=_response(429, {"retry-after": "30"}), body=None)
    if kind == "500":
        return openai.InternalServerError("down", response=_response(500), body=None)
    return openai.BadRequestError("no", response=_response(400), body={"code": "content_filter"})


class DeliveryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = fake_world(**BOUNDS)
        self.clock = T0
        self.world.runtime.router = Router(self.world.runtime.pacer, clock=lambda: (self.clock - T0).total_seconds())
        self.world.runtime.router.on_opened = self.world.runtime.router.on_recovered = lambda *_: None
        self.patches = [mock.patch(f"shared.{module}.now", self._now) for module in ("delivery", "worker")]
        for patch in self.patches:
            patch.start()
        self.loop = asyncio.new_event_loop()
        self.queue: list[Queued] = []
        self.poison: list[Queued] = []
        self.seq = itertools.count(1)
        self.prompts: dict[str, list[str]] = {}  # by job id: what producers sent, in order
        self.reply_to: dict[str, bool] = {}  # by job id (its resends keep the first one's choice)
        self.planned: Counter[str] = Counter()  # by job id: deliveries entitled to a model call
        self.calls: Counter[str] = Counter()  # by job id: model calls made
        self.pointers: list[str] = []  # every pointer the worker enqueued
        self.succeeded: dict[str, bytes] = {}  # succeeded results, as first seen
        self.waiting: dict[str, str] = {}  # by job id: the prompt of the job in the retry store, as first stored
        self.orphans: set[str] = set()  # payloads of claim-check duplicates (left to the lifecycle rule)
        self.poisoned: set[str] = set()  # ids of the messages the host moved to the poison queue

    # ---- producers ----

    @rule(job_id=st.sampled_from(JOB_IDS), reply=st.booleans(), claim_check=st.booleans())
    def send(self, job_id: str, reply: bool, claim_check: bool) -> None:
        """A job (again, when the id was sent before), in the message or behind a claim check."""
        prompts = self.prompts.setdefault(job_id, [])
        prompts.append(prompt := f"{job_id}#{len(prompts) + 1}")
        job: dict[str, Any] = {"id": job_id, "prompt": prompt}
        if self.reply_to.setdefault(job_id, reply):
            job["reply_to"] = "replies"
        body: dict[str, Any] = job
        if claim_check:  # the producer overwrites the payload, as shared/producer does
            self.world.payloads.blobs[f"{job_id}.json"] = Blob(json.dumps(job).encode(), {})
            body = {"id": job_id, "payload": {"blob": f"{job_id}.json"}}
        self._enqueue(json.dumps(body), job_id, "producer")

    @precondition(lambda self: self._pointers_sent_by_producers() < 2)  # a few at a time: they end at once
    @rule(
        job_id=st.sampled_from((*JOB_IDS, "z")), token=st.none() | st.text("0123456789abcdef", min_size=32, max_size=32)
    )
    def forge_pointer(self, job_id: str, token: str | None) -> None:
        """What a producer can send: the id and ``requeued``, without the token or with a guessed one."""
        self._enqueue(
            json.dumps({"id": job_id, "requeued": True, **({"token": token} if token else {})}), job_id, "forged"
        )

    @precondition(lambda self: self._pointers_sent_by_producers() < 2 and self._stale_pointers())
    @rule(data=st.data())
    def copy_stale_pointer(self, data: st.DataObject) -> None:
        """A copy of a pointer the worker enqueued once, whose job has moved on since."""
        body = data.draw(st.sampled_from(self._stale_pointers()))
        self._enqueue(body, json.loads(body)["id"], "stale")

    # ---- the host ----

    @precondition(lambda self: self.queue)
    @rule()
    def deliver_next(self) -> None:
        """The message due first."""
        self._deliver(self.queue[0])

    @precondition(lambda self: self.queue)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """Any message (the clock moves on to when it is visible)."""
        self._deliver(self.queue[data.draw(st.integers(0, len(self.queue) - 1))])

    @precondition(lambda self: self.queue)
    @rule(data=st.data())
    def deliver_and_lose_the_delete(self, data: st.DataObject) -> None:
        """The delivery ends but the host's delete of the message is lost: the message comes back."""
        self._deliver(self.queue[data.draw(st.integers(0, len(self.queue) - 1))], lose_delete=True)

    @precondition(lambda self: self.poison)
    @rule()
    def replay_poison(self) -> None:
        """The operator's ``python -m shared replay``: poisoned jobs go back on the queue as new messages, but for
        those that succeeded and whose notice went (dropped). (shared/operations/ also drops a succeeded job
        whose notice is still pending: see tests/worker/test_delivery_policy.py.)"""
        poisoned, self.poison = self.poison, []
        for item in poisoned:
            stored = self.world.results.blobs.get(f"{item.job_id}.json")
            if stored is None or stored.metadata.get("status") != "succeeded" or "notify" in stored.metadata:
                self._enqueue(item.message.body.decode(), item.job_id, "replay")
            elif b'"payload"' in item.message.body:  # what was kept for its replay goes with the lifecycle rule
                self.orphans.add(f"{item.job_id}.json")

    @rule(seconds=st.integers(1, 900))
    def advance(self, seconds: int) -> None:
        self.clock += timedelta(seconds=seconds)

    # ---- the weather ----

    @rule(
        container=st.sampled_from(("results", "payloads", "worker_only")),
        call=st.sampled_from(BLOB_CALLS),
        applied=st.booleans(),
        times=st.integers(1, 4),
    )
    def fail_storage(self, container: str, call: str, applied: bool, times: int) -> None:
        """The next ``times`` calls of a kind fail, before storage carries them out or (``applied``) after."""
        for _ in range(times):
            self._container(container).fail_next(call, applied=applied)

    @rule(queue=st.sampled_from(("jobs", "replies")), times=st.integers(1, 4))
    def fail_send(self, queue: str, times: int) -> None:
        """The next ``times`` sends fail: of a re-enqueued pointer, or of a notice."""
        (self.world.jobs_queue if queue == "jobs" else self._replies()).failing_sends += times

    @rule(kinds=st.lists(st.sampled_from(("429", "500", "429", "500", "400")), max_size=6))
    def model_next(self, kinds: list[str]) -> None:
        """The next model calls answer these errors, in order (none: the model is healthy again)."""
        self.world.model.errors[:] = [model_error(kind) for kind in kinds]

    # ---- invariants ----

    @invariant()
    def results_are_final_and_sent_for(self) -> None:
        for name, blob in self.world.results.blobs.items():
            job_id = name.removesuffix(".json")
            assert job_id in self.prompts, f"a result for {job_id}, which no producer sent"
            if job_id in self.succeeded:
                assert blob.body == self.succeeded[job_id], f"{job_id}'s succeeded result was replaced"
                continue
            result = json.loads(blob.body)
            assert result["id"] == job_id
            if result["status"] == "succeeded":
                assert result["output"].removeprefix("echo: ") in self.prompts[job_id], result["output"]
                self.succeeded[job_id] = blob.body
        gone = self.succeeded.keys() - {name.removesuffix(".json") for name in self.world.results.blobs}
        assert not gone, f"results removed: {gone}"

    @invariant()
    def retries_are_bounded(self) -> None:
        for name, blob in self.world.worker_only.blobs.items():
            state = json.loads(blob.body)
            assert name == f"retries/{state['job']['id']}.json"
            assert state["redelivery"].get("total", 0) <= RETRY_MAX_ATTEMPTS, state["redelivery"]

    @invariant()
    def model_calls_never_above_planned(self) -> None:
        for job_id, calls in self.calls.items():
            assert calls <= self.planned[job_id], (job_id, calls, self.planned[job_id])

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None:  # not while a failing step's error propagates
                self._drain()
                self._check_every_job_answered()
        finally:
            for patch in self.patches:
                patch.stop()
            self.loop.close()

    # ---- the machinery ----

    def _now(self) -> datetime:
        return self.clock

    def _container(self, name: str) -> FakeContainer:
        return {"results": self.world.results, "payloads": self.world.payloads, "worker_only": self.world.worker_only}[
            name
        ]

    def _replies(self) -> Any:
        return self.world.storage.get_queue_client("replies")

    def _enqueue(self, body: str, job_id: str, source: Source, delay: float = 0, message_id: str | None = None) -> None:
        seq = next(self.seq)
        message = Message(body.encode(), id=message_id or f"m{seq}", insertion_time=self.clock)
        self.queue.append(Queued(message, self.clock + timedelta(seconds=delay), job_id, source, seq))
        self.queue.sort(key=lambda item: (item.visible, item.seq))

    def _state(self, job_id: str) -> dict[str, Any] | None:
        blob = self.world.worker_only.blobs.get(f"retries/{job_id}.json")
        return json.loads(blob.body) if blob else None

    def _stored_by(self, job_id: str) -> str | None:
        """The message that stored the job's retry state, while no pointer is recorded as sent for it."""
        metadata = self.world.worker_only.blobs[f"retries/{job_id}.json"].metadata
        return None if "pointer" in metadata else metadata.get("message")

    def _pointers_sent_by_producers(self) -> int:
        return sum(item.source in ("forged", "stale") for item in self.queue)

    def _stale_pointers(self) -> list[str]:
        def current(body: str) -> bool:
            pointer = json.loads(body)
            state = self._state(pointer["id"])
            return state is not None and state.get("token") == pointer.get("token")

        return [body for body in dict.fromkeys(self.pointers) if not current(body)]

    def _entitled(self, item: Queued) -> bool:
        """Whether the worker planned this delivery: the pointer carrying the retry state's current token (or a
        redelivery of the message that stored that state, whose pointer may not have been sent), or a producer's
        job whose id neither waits in the retry store nor has a result this message cannot replace. (Once a pointer
        is recorded as sent, the message that stored the state is a duplicate: the pointer runs the job.)"""
        body = json.loads(item.message.body)
        state = self._state(item.job_id)
        if state is not None and self._stored_by(item.job_id) == item.message.id:
            return True
        if body.get("requeued") is True:
            return state is not None and state.get("token") == body.get("token")
        if state is not None:
            return False  # a duplicate: the one waiting runs
        stored = self.world.results.blobs.get(f"{item.job_id}.json")
        return stored is None or (
            stored.metadata.get("status") == "failed" and stored.metadata.get("message") != item.message.id
        )

    def _snapshot(self) -> dict[tuple[str, str], str]:
        return {
            (kind, name): blob.etag
            for kind in ("results", "payloads", "worker_only")
            for name, blob in self._container(kind).blobs.items()
        }

    def _deliver(self, item: Queued, *, lose_delete: bool = False) -> None:
        self.clock = max(self.clock, item.visible)
        entitled = self._entitled(item)
        before, notices, calls = self._snapshot(), len(self._replies().messages), len(self.world.model.calls)
        state_before = self._state(item.job_id)
        blob_before = self.world.worker_only.blobs.get(f"retries/{item.job_id}.json")
        if state_before is not None and not entitled and b'"payload"' in item.message.body:
            # A claim-check duplicate of a waiting job: its payload blob is the job's one name, which a copy sent
            # later (run once the first is answered) may need; it is left to the payloads lifecycle rule.
            self.orphans.add(f"{item.job_id}.json")
        raised: Exception | None = None
        try:
            self.loop.run_until_complete(handle(item.message, self.world.runtime))
        except (AzureError, openai.APIError, ModelUnavailable) as exc:  # storage or model: the host redelivers
            raised = exc
        sent, self.world.jobs_queue.messages = self.world.jobs_queue.messages, []
        sent_ids, self.world.jobs_queue.ids = self.world.jobs_queue.ids, []
        # Who and what this delivery touched.
        after = self._snapshot()
        changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
        touched = {_job_of(kind, name) for kind, name in changed}
        touched |= {json.loads(body)["id"] for body, _ in self._replies().messages[notices:]}
        touched |= {json.loads(body)["id"] for body, _ in sent}
        made = [call["messages"][-1]["content"].split("#")[0] for call in self.world.model.calls[calls:]]
        self.planned[item.job_id] += entitled
        for job_id in made:
            self.calls[job_id] += 1
        where = f"delivery of {item.source} message {item.message.id} (job {item.job_id}, {item.message.body!r})"
        assert touched <= {item.job_id}, f"{where} touched other jobs: {touched}"
        assert set(made) <= {item.job_id} and len(made) <= entitled, f"{where}: model calls {made}, entitled {entitled}"
        repaired = self._repaired(item, blob_before, sent)
        if item.source in ("forged", "stale"):
            assert repaired or not touched, f"{where} changed {changed}"
        if ("worker_only", f"retries/{item.job_id}.json") in changed and not repaired:
            # Only a planned delivery moves a job's retry state on; any delivery of an answered job's id deletes it.
            answered = item.job_id in self.succeeded and self._state(item.job_id) is None
            assert entitled or answered, f"{where} changed the job's retry state"
            if not entitled and state_before and state_before.get("payload"):  # not known to the one deleting it
                self.orphans.add(state_before["payload"]["blob"])
            self._check_waiting_job(item.job_id, state_before)
        result = self.world.results.blobs.get(f"{item.job_id}.json")
        if entitled and state_before is not None and ("results", f"{item.job_id}.json") in changed and result:
            written = json.loads(result.body)  # by a delivery that continued the job: its attempts count them all
            if written.get("message_id") == item.message.id:
                assert written["attempts"] > state_before["redelivery"]["total"], (written, state_before)
        for (body, delay), sent_id in zip(sent, sent_ids, strict=True):
            self.pointers.append(body)
            self._enqueue(body, item.job_id, "worker", delay, sent_id)
        # The host: a delivery that returned is deleted (unless the delete is lost); one that raised comes back
        # after the visibility timeout, until the last attempt: then to the poison queue.
        self.queue.remove(item)
        if raised is not None or lose_delete:
            if item.message.dequeue_count >= max_dequeue_count():
                self.poison.append(item)
                self.poisoned.add(item.message.id or "")
            else:
                item.message.dequeue_count += 1
                item.visible = self.clock + VISIBILITY
                self.queue.append(item)
                self.queue.sort(key=lambda queued: (queued.visible, queued.seq))
        self.clock += timedelta(seconds=1)

    def _repaired(self, item: Queued, before: Blob | None, sent: list[tuple[str, int]]) -> bool:
        """Whether the delivery only sent the pointer a waiting job never had (or whose pointer is long overdue): the
        state's body as it was (its job, attempts, token and due time), one pointer sent carrying the state's token
        and due no earlier than the state says, and nothing else changed (no model call, no result)."""
        after = self.world.worker_only.blobs.get(f"retries/{item.job_id}.json")
        if before is None or after is None or after.body != before.body:
            return False
        state = json.loads(before.body)
        overdue = (self.clock - datetime.fromisoformat(state["due"])).total_seconds() > LOST_POINTER_SECONDS
        if "pointer" in before.metadata and not overdue:
            return False
        if len(sent) != 1 or json.loads(sent[0][0]) != {"id": item.job_id, "requeued": True, "token": state["token"]}:
            return False
        due = datetime.fromisoformat(state["due"])
        assert sent[0][1] >= (due - self.clock).total_seconds() - 1, f"a pointer sent again early: {sent}, due {due}"
        return True

    def _check_waiting_job(self, job_id: str, before: dict[str, Any] | None) -> None:
        """A job waits in the retry store as it was when first stored (a duplicate never replaces it)."""
        state = self._state(job_id)
        if state is None:
            self.waiting.pop(job_id, None)
            return
        prompt = state["job"]["prompt"]
        if before is None:
            assert prompt in self.prompts[job_id]
            self.waiting[job_id] = prompt
        else:
            assert prompt == self.waiting[job_id], (prompt, self.waiting[job_id])

    def _drain(self) -> None:
        """Deliver until every queue is empty, with the model healthy and no failure injected."""
        for kind in ("results", "payloads", "worker_only"):
            self._container(kind).failing.clear()
        self.world.jobs_queue.failing_sends = self._replies().failing_sends = 0
        self.world.model.errors.clear()
        for _ in range(200):
            if self.queue:
                self._deliver(self.queue[0])
            elif self.poison:
                self.replay_poison()
            else:
                return
            self.results_are_final_and_sent_for()
            self.retries_are_bounded()
            self.model_calls_never_above_planned()
        raise AssertionError(f"the queues did not drain: {self.queue} {self.poison}")

    def _check_every_job_answered(self) -> None:
        notified = Counter(json.loads(body)["id"] for body, _ in self._replies().messages)
        for job_id in self.prompts:
            stored = self.world.results.blobs.get(f"{job_id}.json")
            assert stored is not None, f"job {job_id} has no result"
            assert "notify" not in stored.metadata, f"job {job_id}'s notice is still pending"
            if self.reply_to[job_id]:
                assert notified[job_id] >= 1, f"job {job_id} was never notified"
        for kind in ("worker_only", "payloads"):
            container = self._container(kind)
            lifecycle = {name for call, name in container.failed if call == "delete"}  # best effort, by design
            if kind == "payloads":
                lifecycle |= self.orphans
            left = set(container.blobs) - lifecycle
            assert not left, f"left behind in {kind}: {left}"


def _job_of(kind: str, name: str) -> str:
    return name.removeprefix("retries/").removesuffix(".json") if kind == "worker_only" else name.removesuffix(".json")


def test_delivery_state_machine() -> None:
    run_state_machine_as_test(
        DeliveryMachine,
        settings=settings(
            max_examples=75,
            stateful_step_count=60,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
