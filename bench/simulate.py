"""Issue 23's simulation: K instances on one deployment, on a virtual clock (``bench.virtual``), in one process.

What is real: each instance's ``shared.pacing.Pacer`` / ``Gate`` and ``shared.routing.Router`` (a one-entry pool),
driven as ``shared.calls.call_model`` drives them (a 429 goes back through the gate until the admission bound,
then the job is re-enqueued after the retry-after; a gate that will not admit in time re-enqueues it), and the
deployment's rate limiter: the emulator's own accounting (``emulators.aoai.rates``: the sliding window, its
429s and its ``x-ratelimit-*`` headers). With ``Setup.shared`` the gates also consult one shared budget
(``shared.budget``) held in an in-memory store with the blob store's conditional-write semantics
(``bench.simstore``), into which store failures and slowness can be injected.

What is modelled: the queue (one FIFO all instances take from, ``concurrency`` jobs at a time each, as
host.json's batchSize + newBatchThreshold), the network (a few ms each way), the model's latency (by a job's
size), instances joining late and leaving (finishing what they hold, taking nothing more).

The deployment's limit grows with K, so that every K is loaded as the live K = 16 run is: the limit is half of
what one instance asks for, per 16 instances (each instance's fair share is 1/32 of its demand).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx2
import openai

from bench import virtual
from bench.simstore import MemoryStore
from emulators.aoai import rates
from shared import budget
from shared.budget import SharedBudget, ledger_name
from shared.pacing import HEADROOM, AdmissionTimeout, Pacer, retry_after
from shared.routing import Route, Router
from shared.settings import PoolEntry

ENDPOINT = "https://simulated.openai.azure.com"
DEPLOYMENT = "chat"
PROMPT_TOKENS = 12  # a short prompt's admission estimate (framing included)
SIZES = ((0.5, 16), (0.3, 256), (0.2, 1024))  # (share of jobs, max_completion_tokens): jobs of mixed size
THROTTLE_DEFAULT_DELAY = 30.0  # shared.policy's re-enqueue delay for a 429 that says nothing


@dataclass(frozen=True)
class Setup:
    """One simulated run. Times in (virtual) seconds."""

    instances: int
    jobs_per_instance: int = 75  # 1,200 jobs at K = 16, as the live runs
    concurrency: int = 24  # host.json: batchSize 4 + newBatchThreshold 20
    window: float = 10.0  # the bench's rate window (Azure's is 60 s)
    latency: float = 0.4  # a job's model latency: this ...
    latency_per_token: float = 0.0004  # ... plus this per output token budgeted (mean about 0.5 s)
    network: float = 0.01  # each way
    admission_wait: float = 60.0  # MODEL_ADMISSION_WAIT_SECONDS
    max_hold: float = 300.0  # THROTTLE_MAX_DELAY_SECONDS
    late_fraction: float = 0.125  # of the instances join late ...
    late_at: float = 20.0  # ... at this time
    leaving_fraction: float = 0.125  # of the first instances leave ...
    leave_at: float = 40.0  # ... at this time
    seed: int = 23
    shared: bool = False  # the gates consult the shared budget (shared.budget)
    store_faults: float = 0.0  # share of store operations that fail
    store_latency: float = 0.01  # seconds a store operation takes
    store_down: tuple[float, float] | None = None  # (from, until): every store operation fails

    def limit(self) -> int:
        """Tokens per window: half of what one instance asks for, per 16 instances."""
        demand = self.concurrency / self.mean_latency() * self.window * self.mean_tokens()
        return round(demand / 2 * self.instances / 16)

    def mean_tokens(self) -> float:
        return sum(p * (PROMPT_TOKENS + out) for p, out in SIZES)

    def mean_latency(self) -> float:
        return sum(p * (self.latency + self.latency_per_token * out) for p, out in SIZES)


@dataclass
class Job:
    index: int
    tokens: int
    latency: float
    deliveries: int = 0


@dataclass
class Model:
    """The deployment: the emulator's sliding window (``emulators.aoai.rates``) behind a network."""

    quota: rates.Quota
    network: float
    clock: Callable[[], float]
    window: rates.Window = field(default_factory=deque)
    admitted: list[tuple[float, int]] = field(default_factory=list)  # (when, tokens) of every admission
    requests: int = 0
    throttled: int = 0

    async def call(self, tokens: int, latency: float) -> tuple[int, dict[str, str]]:
        """One chat completion charged ``tokens``: 200 after ``latency``, or a 429 with its retry-after."""
        self.requests += 1
        await asyncio.sleep(self.network)
        now = self.clock()
        verdict = rates.admit(rates.expire(self.window, now, self.quota.span), self.quota, tokens, now)
        if verdict is not None:
            self.throttled += 1
            wait = verdict[0]
            headers = rates.headers(self.window, self.quota, now)
            # As the emulator's 429 carries them (emulators/aoai/app.py): whole seconds, and exact milliseconds.
            headers |= {
                "retry-after": str(max(1, math.ceil(wait))),
                "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
            }
            await asyncio.sleep(self.network)
            return 429, headers
        self.admitted.append((now, tokens))
        await asyncio.sleep(latency)
        now = self.clock()
        headers = rates.headers(rates.expire(self.window, now, self.quota.span), self.quota, now)
        await asyncio.sleep(self.network)
        return 200, headers


def _throttled(headers: dict[str, str]) -> openai.RateLimitError:
    """The SDK's error for a 429, as the worker meets it."""
    response = httpx2.Response(429, headers=headers, request=httpx2.Request("POST", f"{ENDPOINT}/openai/v1/chat"))
    return openai.RateLimitError("429 Too Many Requests", response=response, body=None)


@dataclass
class Instance:
    """One worker instance: its own pacer and router, ``concurrency`` jobs at a time."""

    sim: Simulation
    index: int
    joins: float
    leaves: float | None
    pacer: Pacer = field(init=False)
    router: Router = field(init=False)
    admitted: list[tuple[float, int]] = field(default_factory=list)
    idle: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        clock = self.sim.clock
        self.pacer = Pacer(max_hold=self.sim.setup.max_hold, clock=clock)
        self.router = Router(self.pacer, clock=clock)
        self.sim.attach(self)

    async def run(self) -> None:
        await asyncio.sleep(self.joins)
        slots = [asyncio.ensure_future(self.slot()) for _ in range(self.sim.setup.concurrency)]
        if self.leaves is not None:
            await asyncio.sleep(self.leaves - self.joins)
            self.sim.leaving(self)
            for task in list(self.idle):
                task.cancel()
        await asyncio.gather(*slots, return_exceptions=True)

    async def slot(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        while self.leaves is None or self.sim.clock() < self.leaves:
            self.idle.add(task)
            try:
                job = await self.sim.queue.get()
            finally:
                self.idle.discard(task)
            await self.handle(job)

    async def handle(self, job: Job) -> None:
        job.deliveries += 1
        try:
            await self.router.call((self.sim.entry,), job.tokens, lambda route, last: self.send(route, last, job))
        except AdmissionTimeout as exc:
            self.sim.requeue(job, exc.delay)
        except openai.RateLimitError as exc:
            self.sim.requeue(job, retry_after(exc.response.headers) or THROTTLE_DEFAULT_DELAY)
        else:
            self.sim.finished(job)

    async def send(self, route: Route, last: bool, job: Job) -> None:
        """As ``shared.calls.call_model``'s ``send``: through the gate, a 429 back through it within the bound."""
        clock, wait = self.sim.clock, self.sim.setup.admission_wait
        deadline = clock() + wait
        while True:
            try:
                async with route.gate.admit(job.tokens, wait=max(deadline - clock(), 0.0)) as ticket:
                    if ticket.charge is not None:
                        ticket.charge.at = clock()  # Pacer.on_request: the charge leaves now
                    self.admitted.append((clock(), job.tokens))
                    status, headers = await self.sim.model.call(job.tokens, job.latency)
                    route.gate.observe(status, headers, ticket)  # Pacer.on_response
                    if status == 429:
                        raise _throttled(headers)
                    return
            except openai.RateLimitError as exc:
                if not (wait and last and clock() < deadline):
                    raise
                route.gate.observe(429, exc.response.headers)


class Simulation:
    """One run of ``Setup`` (call ``run`` inside a ``bench.virtual`` loop)."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        loop = asyncio.get_running_loop()
        self.clock: Callable[[], float] = loop.time
        self.random = random.Random(setup.seed)
        self.entry = PoolEntry(endpoint=ENDPOINT, deployment=DEPLOYMENT)
        self.model = Model(rates.Quota(tpm=setup.limit(), rpm=None, span=setup.window), setup.network, self.clock)
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.jobs = [self._job(i) for i in range(setup.instances * setup.jobs_per_instance)]
        self.done = asyncio.Event()
        self.finished_count = 0
        self.requeued: set[int] = set()
        self.requeues = 0
        self.last_result = 0.0
        self.present: list[tuple[float, float]] = []  # (joins, leaves) of every instance
        self.store = MemoryStore(self.clock, setup.store_latency, setup.store_faults, setup.store_down)

    def _job(self, index: int) -> Job:
        out = self.random.choices([o for _, o in SIZES], [p for p, _ in SIZES])[0]
        latency = self.setup.latency + self.setup.latency_per_token * out * self.random.uniform(0.5, 1.5)
        return Job(index, PROMPT_TOKENS + out, latency)

    def attach(self, instance: Instance) -> None:
        """Give an instance's gate its view of the shared budget (with ``setup.shared``)."""
        if self.setup.shared:
            gate = instance.pacer.gate(ENDPOINT, DEPLOYMENT)
            name = ledger_name(ENDPOINT, DEPLOYMENT)
            rng = random.Random(self.setup.seed * 1000 + instance.index)
            gate.shared = SharedBudget(self.store, name, f"instance-{instance.index}", clock=self.clock, rng=rng)

    def leaving(self, instance: Instance) -> None:
        """An instance stops taking jobs (scale-in): what it holds it finishes."""

    def requeue(self, job: Job, delay: float) -> None:
        self.requeues += 1
        self.requeued.add(job.index)
        asyncio.get_running_loop().call_later(max(1.0, round(delay)), self.queue.put_nowait, job)

    def finished(self, job: Job) -> None:
        self.finished_count += 1
        self.last_result = self.clock()
        if self.finished_count == len(self.jobs):
            self.done.set()

    def instances(self) -> list[Instance]:
        s = self.setup
        late = round(s.instances * s.late_fraction)
        leaving = round(s.instances * s.leaving_fraction)
        made = []
        for i in range(s.instances):
            joins = s.late_at if i >= s.instances - late else 0.0
            leaves = s.leave_at if i < leaving else None
            made.append(Instance(self, i, joins, leaves))
            self.present.append((joins, leaves if leaves is not None else math.inf))
        return made

    async def run(self) -> dict[str, Any]:
        for job in self.jobs:
            self.queue.put_nowait(job)
        instances = self.instances()
        tasks = [asyncio.ensure_future(i.run()) for i in instances]
        ideal = sum(j.tokens for j in self.jobs) * self.setup.window / self.setup.limit()
        with contextlib.suppress(TimeoutError):  # what is left unfinished counts as failed
            await asyncio.wait_for(self.done.wait(), timeout=ideal * 6 + 600)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return self.figures(instances, ideal)

    def figures(self, instances: list[Instance], ideal: float) -> dict[str, Any]:
        s, n = self.setup, len(self.jobs)
        joiners = [i for i in instances if i.joins > 0]
        reach = [self.fair_share_at(i) for i in joiners]
        reached = [r for r in reach if r is not None]
        return {
            "instances": s.instances,
            "shared_budget": s.shared,
            "store": store_label(s),
            "jobs": n,
            "limit_tokens_per_window": s.limit(),
            "window_s": s.window,
            "drain_s": self.last_result,
            "ideal_drain_s": ideal,
            "drain_over_ideal": self.last_result / ideal,
            "model_requests": self.model.requests,
            "throttled_429": self.model.throttled,
            "throttled_per_job": self.model.throttled / n,
            "fraction_of_limit": limit_use(self.model.admitted, s.limit(), s.window),
            "requeued_jobs": len(self.requeued),
            "requeues": self.requeues,
            "failed_jobs": n - self.finished_count,
            "store_ops": self.store.ops,
            "store_ops_per_job": self.store.ops / n,
            "store_conflicts": self.store.conflicts,
            "store_failures": self.store.failed,
            "late_joiners": len(joiners),
            "late_joiners_at_fair_share": len(reached),
            "late_joiner_windows_to_fair_share_max": max(reached) / s.window if reached else None,
            "late_joiner_windows_to_fair_share_median": statistics.median(reached) / s.window if reached else None,
        }

    def fair_share_at(self, instance: Instance, part: float = 0.8) -> float | None:
        """Seconds from ``instance`` joining until its admissions over the last window reach ``part`` of its fair
        share (the limit's ``HEADROOM`` over the instances present), or None if they never do while jobs wait."""
        window, limit = self.setup.window, self.setup.limit()
        admitted = deque[tuple[float, int]]()
        total = 0
        for at, tokens in instance.admitted:
            admitted.append((at, tokens))
            total += tokens
            while admitted[0][0] <= at - window:
                total -= admitted.popleft()[1]
            present = sum(1 for joins, leaves in self.present if joins <= at < leaves)
            if total >= part * HEADROOM * limit / max(present, 1):
                return at - instance.joins
        return None


def store_label(setup: Setup) -> str:
    """How the shared store behaves in a run: ``-`` (no shared budget), ``answers``, or the failures injected."""
    if not setup.shared:
        return "-"
    faults = []
    if setup.store_down is not None:
        faults.append(f"down {setup.store_down[0]:.0f}-{setup.store_down[1]:.0f} s")
    if setup.store_faults:
        faults.append(f"{setup.store_faults:.0%} of operations fail")
    return ", ".join(faults) or "answers"


def limit_use(admitted: list[tuple[float, int]], limit: int, window: float) -> float:
    """The share of the limit the admissions used while the limit held them back, over whole windows: from one
    window after the first admission (the first window starts empty: a burst) to the admission that left less
    than one window's worth to come (then the backlog sets the pace), as ``bench.harness.limit_use`` counts."""
    if not admitted:
        return 0.0
    start = admitted[0][0] + window
    left, cut = sum(t for _, t in admitted), admitted[-1][0]
    for at, tokens in admitted:
        left -= tokens
        if left < limit:
            cut = at
            break
    windows = int((cut - start) // window)
    if windows < 1:  # too short a run for a whole window past the first: first admission to last, burst included
        span = max(admitted[-1][0] - admitted[0][0], window)
        return sum(t for _, t in admitted) / (limit * span / window)
    end = start + windows * window
    return sum(t for at, t in admitted if start <= at < end) / (limit * windows)


class _Count(logging.Handler):
    """Counts the budget's log lines (one WARNING per instance falling back) instead of printing them."""

    def __init__(self) -> None:
        super().__init__()
        self.warnings = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.warnings += record.levelno >= logging.WARNING


def simulate(setup: Setup) -> dict[str, Any]:
    """Run ``setup`` on a virtual clock; its figures (and ``fallbacks``: the times an instance fell back to its
    own gate because the store failed)."""

    async def main() -> dict[str, Any]:
        return await Simulation(setup).run()

    logger, count = logging.getLogger(budget.__name__), _Count()
    logger.addHandler(count)
    logger.propagate = False
    try:
        result: dict[str, Any] = virtual.run(main())
    finally:
        logger.removeHandler(count)
        logger.propagate = True
    return {**result, "fallbacks": count.warnings}


def compare(instances: int, **changes: Any) -> list[dict[str, Any]]:
    """Today's per-instance gate, then the shared budget, at ``instances``."""
    setup = Setup(instances, **changes)
    return [simulate(setup), simulate(replace(setup, shared=True))]
