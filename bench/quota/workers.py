"""Running a quota run's workers over one queue: how the jobs arrive, what the run left behind.

Part of figures 5-8 (``bench.quota``). Workers run as ``bench.counted_host``, so each run reports the Azure
Storage requests its workers made from the first send to the drain (``bench.storage_ops``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceExistsError

from bench import harness, storage_ops
from bench.config import Bench
from bench.harness import Worker, enqueue, fetch_results, job_body, producer_jobs, start_worker
from emulators.stack.services import DEPLOYMENT, OpenAIEmulator
from emulators.stack.workers import Jobs

REQUEUED = "re-enqueued"  # the worker's log line for a job sent back to the queue
FELL_BACK = "pacing on this instance's own share"  # shared/budget.py's WARNING: the shared budget's store failed
COUNTED_HOST = "bench.counted_host"  # the local host, counting its storage requests


@dataclass
class Run:
    """What one run's workers left behind: results, the poison queue's count, and when the jobs went out."""

    jobs: int
    results: list[dict[str, Any]]
    poisoned: int
    drained: bool
    sent_at: float  # epoch seconds, just before the first job was sent
    workers: list[Worker]
    machine_busy_fraction: float
    loadavg_1m: float  # at the start of the run
    sent: dict[str, float]  # job id -> epoch seconds it was sent
    phase_s: dict[str, float]  # the waits around the measurement: workers starting, results read and workers stopped
    storage: dict[str, Any]  # storage_ops.summary from the first send to the drain

    def counts(self) -> dict[str, Any]:
        """Statuses, poisoned, missing and failed_jobs (failed + poisoned + missing), re-enqueued jobs, times a
        worker fell back from the shared budget to its own gate, and how long the run spent before and after its
        jobs (``phase_s``)."""
        counts = harness.statuses(self.results)
        missing = self.jobs - len(self.results)
        codes = Counter(str((r.get("error") or {}).get("code")) for r in self.results if r["status"] == "failed")
        requeued = sum(1 for r in self.results if r.get("attempts", 1) > 1)
        return {
            "jobs": self.jobs,
            "results": len(self.results),
            **counts,
            "poisoned": self.poisoned,
            "missing": missing,
            "failed_jobs": counts["failed"] + self.poisoned + missing,
            "failure_codes": dict(codes),
            "requeued_jobs": requeued,
            "requeued_fraction": requeued / self.jobs if self.jobs else 0.0,
            "requeues_logged": sum(harness.log_count(w, REQUEUED) for w in self.workers),
            "budget_fallbacks_logged": sum(harness.log_count(w, FELL_BACK) for w in self.workers),
            "drained": self.drained,
            "errors_logged": sum(harness.errors_logged(w) for w in self.workers),
            "processes": len(self.workers),
            "loadavg_1m_at_start": round(self.loadavg_1m, 2),
            "machine_busy_fraction": self.machine_busy_fraction,
            "phase_s": {k: round(v, 1) for k, v in self.phase_s.items()},
            "storage_requests_per_job": self.storage["worker_requests_per_job"],
            "storage": self.storage,
        }

    def job_seconds(self) -> list[float]:
        """Send → result written, for every result of a job this run sent."""
        return [harness.finished_at(r) - self.sent[r["id"]] for r in self.results if r["id"] in self.sent]

    def drain_seconds(self) -> float:
        """First job sent → last result written."""
        finished = [harness.finished_at(r) for r in self.results]
        return max(finished) - self.sent_at if finished else 0.0

    def paced_ideal_seconds(self, latency: float) -> float:
        """The drain if every job ran the moment it arrived: first send → last send + one model call."""
        return max(self.sent.values(), default=self.sent_at) - self.sent_at + latency


@dataclass
class Arrivals:
    """How a run's jobs go out: ``count`` at once (``rate`` None) or one every 1/``rate`` seconds; ``outage``
    takes ``emulator``'s deployment down ``after`` seconds into the sending, for ``seconds``."""

    count: int
    rate: float | None = None
    outage: tuple[OpenAIEmulator, float, float] | None = None  # (emulator, after, seconds)


async def _send(jobs: Jobs, arrivals: Arrivals, sent: dict[str, float]) -> None:
    bodies = [job_body(i) for i in range(arrivals.count)]
    if arrivals.rate is None:
        now = time.time()
        sent.update((body["id"], now) for body in bodies)
        await enqueue(jobs, bodies)
        return
    began = time.monotonic()
    for i, body in enumerate(bodies):
        await asyncio.sleep(max(0.0, began + i / arrivals.rate - time.monotonic()))
        sent[body["id"]] = time.time()
        await jobs.send(body)


async def _outage(arrivals: Arrivals) -> dict[str, float] | None:
    if arrivals.outage is None:
        return None
    emulator, after, seconds = arrivals.outage
    await asyncio.sleep(after)
    began = time.time()
    until = await asyncio.to_thread(emulator.fail_deployment, DEPLOYMENT, seconds)
    return {"started_at": began, "ends_at": until, "seconds": seconds}


@dataclass
class Started:
    """A run's worker processes, spawned on its own (empty) queue, perhaps not listening yet."""

    label: str
    jobs: Jobs
    workers: list[Worker]
    began: float  # time.monotonic() when the first was spawned

    async def close(self) -> None:
        """Stop the workers (at once if they have already stopped) and close the queue clients."""
        await harness.stop_all(self.workers)
        await self.jobs.close()


async def start_workers(b: Bench, label: str, settings: dict[str, str], processes: int = 1) -> Started:
    """Create the run's queue and worker-only container, as the infrastructure does, and spawn ``processes``
    workers on it (see ``run_workers``). The shared budget's ledger lives in that container, and the worker does
    not create it for the ledger (a missing container degrades to the per-instance gate)."""
    started = Started(label, producer_jobs(settings, b.stack.issuer), [], time.monotonic())
    try:
        await enqueue(started.jobs, [])
        with contextlib.suppress(ResourceExistsError):
            await started.jobs.blobs.get_container_client(settings["STAGING_CONTAINER"]).create_container()
        started.began = time.monotonic()
        for i in range(processes):
            log = b.logs / label / f"worker-{i}" / "worker.log"
            counts = ("--storage-counts", str(storage_ops.counts_path(log)))
            started.workers.append(start_worker(settings, log, module=COUNTED_HOST, args=counts))
    except BaseException:
        await started.close()
        raise
    return started


async def _nothing() -> None:
    return None


async def run_workers(
    b: Bench,
    started: Started,
    arrivals: Arrivals,
    *,
    reset: Callable[[], object],
    timeout: float,
    then: Callable[[], Awaitable[object]] = _nothing,
) -> tuple[Run, dict[str, float] | None]:
    """Wait until ``started``'s workers listen, ``reset`` the emulators, send the jobs as ``arrivals`` says,
    then wait (up to ``timeout`` s after the last send) for the queue to drain. The results are read while
    the workers stop and ``then`` runs (the scale-out starts its next run's workers there)."""
    jobs, workers = started.jobs, started.workers
    try:
        await harness.wait_listening(workers, started.label)
        setup = time.monotonic() - started.began
        await asyncio.to_thread(reset)
        load = os.getloadavg()[0]
        meter = harness.CpuMeter({})
        meter.begin()
        sent: dict[str, float] = {}
        sent_at = time.time()
        outage, _ = await asyncio.gather(_outage(arrivals), _send(jobs, arrivals, sent))
        drained = await harness.wait_drained_all(jobs, workers, timeout, b.scale.poll_s)
        drained_at = time.time()
        busy = meter.end(max(1, arrivals.count))["machine_busy_fraction"]
        ended = time.monotonic()
        (results, poisoned), _, _ = await asyncio.gather(
            asyncio.gather(fetch_results(jobs), jobs.poison_count()), harness.stop_all(workers), then()
        )
        phases = {"workers_listening": setup, "results_read_workers_stopped": time.monotonic() - ended}
    finally:
        await started.close()
    counted = [storage_ops.counts_path(w.host.log_path) for w in workers]  # written as each stopped
    storage = storage_ops.summary(counted, arrivals.count, sent_at, drained_at)
    run = Run(arrivals.count, results, poisoned, drained, sent_at, workers, busy, load, sent, phases, storage)
    return run, outage
