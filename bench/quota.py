"""Figure 5 and issue 13's figures: many processes under one token limit, a pool of two deployments, model outages.

- ``scaleout`` (a): K worker processes (each the local queue host with host.json's cap and the bench's
  model latency) drain N queued jobs against one deployment whose token limit is half of what **one**
  process asks for (its cap / latency, in tokens per window). Its K = 1 run is also figure 5 (one process
  under a token limit at half its demand, the shipped settings): one run, two rows (``rate_limit``). The K
  in ``Scale.scaleout_extra`` run only with ``--all-scales``; without it their rows say they were not run.
- ``pool`` (b): workers routing over ``AZURE_OPENAI_POOL`` = two resources (two emulators on two ports,
  the same deployment name on each), limits L1 (priority 1) and L2 (priority 2) summing to half of what
  one process asks for: throughput ÷ (L1 + L2).
- ``outage`` (c): jobs arriving at a steady rate while the only deployment answers 503 for ``outage_s``,
  next to the same arrivals on a healthy resource (p95 job time compared within the run); and, at the
  same time, with ``--long-outage`` only, the primary of a two-resource pool down for ``long_outage_s``
  with the secondary healthy; with ``--long-outage-alone`` only, the only deployment down as long.

Every run switches pacing on (``MODEL_ADMISSION_WAIT_SECONDS``) and sets ``MODEL_OUTAGE_TOLERANCE_SECONDS``
(with ``--shared-budget``, ``PACING_SHARED_BUDGET=true`` too); a worker that does not know a setting ignores
it. Each emulator's own counters (they count 429s and 503s) are reset just before the jobs are sent, after
every worker is listening. Workers run as ``bench.counted_host``:
each run reports the Azure Storage requests its workers made from the first send to the drain, per job, the
app's apart from the host's (``bench.storage_ops``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceExistsError

from bench import harness, storage_ops
from bench.config import Bench
from bench.harness import Worker, enqueue, fetch_results, job_body, producer_jobs, start_worker
from emulators.aoai import estimate_request_tokens
from emulators.stack.services import DEPLOYMENT, OpenAIEmulator, start_openai_emulator, unique_names
from emulators.stack.workers import Jobs

REQUEUED = "re-enqueued"  # the worker's log line for a job sent back to the queue
FELL_BACK = "pacing on this instance's own share"  # shared/budget.py's WARNING: the shared budget's store failed
COUNTED_HOST = "bench.counted_host"  # the local host, counting its storage requests
AFTER_RECOVERY_S = 60.0  # 429s are counted this long after an outage ends (issue 23's target)


def worker_settings(b: Bench) -> dict[str, str]:
    """The settings every issue-13 run adds to the stack's (the rest are the shipped defaults)."""
    shared = {"PACING_SHARED_BUDGET": "true"} if b.shared_budget else {}
    return {
        "MODEL_ADMISSION_WAIT_SECONDS": str(b.scale.admission_wait_s),
        "MODEL_OUTAGE_TOLERANCE_SECONDS": str(b.scale.outage_tolerance_s),
        **shared,
    }


def tokens_per_job() -> int:
    """What the emulator (and the pacing gate) charges one bench job: prompt estimate + output budget."""
    sample = job_body(0)
    return estimate_request_tokens(
        {"messages": [{"role": "user", "content": sample["prompt"]}], **sample["parameters"]}
    )


def process_demand(b: Bench, tokens_each: int) -> float:
    """Tokens per rate window one process asks for: host.json's cap of calls, each lasting the model latency."""
    return b.options.concurrency / (b.scale.latency_ms / 1000) * b.scale.quota_window_s * tokens_each


@contextlib.contextmanager
def resource(b: Bench, **config: Any) -> Iterator[OpenAIEmulator]:
    """Another Azure OpenAI resource: an emulator on its own port, trusting the stack's tokens and granting
    its identities, with the one deployment ``DEPLOYMENT`` and ``config`` (EmulatorConfig fields)."""
    with start_openai_emulator(b.stack.issuer, deployments=[DEPLOYMENT], **config) as emulator:
        yield emulator


def pool_setting(primary: OpenAIEmulator, secondary: OpenAIEmulator) -> str:
    """``AZURE_OPENAI_POOL``: the same deployment on two resources, the first preferred."""
    entries = [
        {"name": "primary", "endpoint": primary.endpoint, "deployment": DEPLOYMENT, "priority": 1, "weight": 1},
        {"name": "secondary", "endpoint": secondary.endpoint, "deployment": DEPLOYMENT, "priority": 2, "weight": 1},
    ]
    return json.dumps(entries)


def single_settings(b: Bench, label: str, emulator: OpenAIEmulator) -> dict[str, str]:
    """A worker on ``emulator``'s one deployment (no pool)."""
    settings = b.stack.managed_identity_settings(unique_names(label))
    return {
        **settings,
        **worker_settings(b),
        "AZURE_OPENAI_ENDPOINT": emulator.endpoint,
        "AZURE_OPENAI_ALLOWED_DEPLOYMENTS": DEPLOYMENT,
    }


def pool_settings(b: Bench, label: str, primary: OpenAIEmulator, secondary: OpenAIEmulator) -> dict[str, str]:
    """A worker routing over ``pool_setting(primary, secondary)``."""
    return {**single_settings(b, label, primary), "AZURE_OPENAI_POOL": pool_setting(primary, secondary)}


# --- Running workers over one queue --------------------------------------------------------------------


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


def _quota(stats: dict[str, Any], jobs: int) -> dict[str, Any]:
    """An emulator's counters for a run: requests, 429s and 503s, per job too."""
    throttled = stats["by_status"].get("429", 0)
    return {
        "model_requests": stats["requests"],
        "model_requests_per_job": stats["requests"] / jobs if jobs else 0.0,
        "throttled_429": throttled,
        "throttled_per_job": throttled / jobs if jobs else 0.0,
        "unavailable_503": stats["by_status"].get("503", 0),
        "completions": stats["completions"],
    }


def _total(per_resource: dict[str, dict[str, Any]], jobs: int) -> dict[str, Any]:
    """``_quota`` summed over a pool's resources."""
    keys = ("model_requests", "throttled_429", "unavailable_503", "completions")
    total = {k: sum(r[k] for r in per_resource.values()) for k in keys}
    return {
        **total,
        "model_requests_per_job": total["model_requests"] / jobs if jobs else 0.0,
        "throttled_per_job": total["throttled_429"] / jobs if jobs else 0.0,
    }


def _served(results: list[dict[str, Any]], names: dict[str, str]) -> dict[str, int]:
    """Results per pool entry, by the ``endpoint`` a result records (``unrecorded`` where it has none)."""
    served: Counter[str] = Counter()
    for r in results:
        endpoint = str(r.get("endpoint") or "").rstrip("/")
        served[names.get(endpoint, endpoint or "unrecorded")] += 1
    return dict(served)


# --- (a) Scale-out under one token limit ------------------------------------------------------------


async def start_scaleout(b: Bench, processes: int) -> Started:
    label = f"scaleout-{processes}"
    settings = {**b.stack.managed_identity_settings(unique_names(label)), **worker_settings(b)}
    return await start_workers(b, label, settings, processes)


async def scaleout_run(
    b: Bench, started: Started, limit: int, tokens_each: int, then: Callable[[], Awaitable[object]]
) -> dict[str, Any]:
    n, window = b.scale.scaleout_jobs, b.scale.quota_window_s
    config = {"latency_ms": b.scale.latency_ms, "tpm": limit, "rate_window_seconds": window}
    ideal = n * tokens_each * window / limit

    def reset() -> None:
        b.stack.configure_model(**config)

    run, _ = await run_workers(b, started, Arrivals(n), reset=reset, timeout=ideal * 4 + b.scale.timeout_s, then=then)
    use = harness.limit_use(harness.admitted_times(run.results, b.scale.latency_ms / 1000), tokens_each, limit, window)
    drain = run.drain_seconds()
    return {
        **run.counts(),
        **_quota(b.stack.model_stats(), n),  # the next run's workers, started meanwhile, have not called it
        **use,
        "drain_s": drain,
        "ideal_drain_s": ideal,
        "drain_over_ideal": drain / ideal,
    }


async def scaleout_runs(b: Bench, limit: int, tokens_each: int) -> list[dict[str, Any]]:
    """One run per K, in turn; each run's workers start while the previous run's results are read and its
    workers stop (both waits, neither measured), not after."""
    chosen = b.scaleout_processes()
    runs: list[dict[str, Any]] = []
    pending = [await start_scaleout(b, chosen[0])] if chosen else []
    try:
        for following in [*chosen[1:], None]:

            async def start_following(k: int | None = following) -> None:
                if k is not None:
                    pending.append(await start_scaleout(b, k))

            runs.append(await scaleout_run(b, pending.pop(), limit, tokens_each, start_following))
    finally:
        await asyncio.gather(*(started.close() for started in pending))
    return runs


async def scaleout(b: Bench) -> dict[str, dict[str, Any]]:
    """(a): K processes, one deployment, its limit half of one process's demand, N jobs queued at once.

    Returns the report's ``scaleout`` and, from its K = 1 run, ``rate_limit`` (figure 5)."""
    tokens_each = tokens_per_job()
    demand = process_demand(b, tokens_each)
    limit = max(2 * tokens_each, round(demand / 2))
    window = b.scale.quota_window_s
    runs = await scaleout_runs(b, limit, tokens_each)
    ran = [run["processes"] for run in runs]
    figure = {
        "latency_s": b.scale.latency_ms / 1000,
        "window_s": window,
        "concurrency_per_process": b.options.concurrency,
        "tokens_charged_per_request": tokens_each,
        "demand_tokens_per_window_per_process": demand,
        "limit_tokens_per_window": limit,
        "limit_tokens_per_minute": limit * 60 / window,
        "demand_over_limit_per_process": demand / limit,
        "jobs": b.scale.scaleout_jobs,
        "worker_settings": worker_settings(b),
        "runs": runs,
        "not_run": [k for k in b.scale.scaleout_processes if k not in ran],  # python -m bench --all-scales
    }
    found = {"scaleout": figure}
    one = next((run for run in runs if run["processes"] == 1), None)
    if one is not None:
        found["rate_limit"] = rate_limit(figure, one)
    return found


def rate_limit(figure: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Figure 5 from the scale-out's K = 1 run: one process, the shipped settings, a token limit at half its
    demand. Does it keep the limit full (``fraction_of_limit``, measured as figure 6's), and lose nothing?"""
    keys = (
        "jobs", "results", "succeeded", "failed", "poisoned", "missing", "failed_jobs", "requeued_jobs", "drained",
        "fraction_of_limit", "measured_s", "measured_requests", "throttled_429", "model_requests",
    )  # fmt: skip
    window = figure["window_s"]
    return {
        "run": "scaleout K = 1",  # the one run figure 6's first row reports too
        "window_s": window,
        "limit_tokens_per_window": figure["limit_tokens_per_window"],
        "limit_tokens_per_minute": figure["limit_tokens_per_minute"],
        "tokens_charged_per_request": figure["tokens_charged_per_request"],
        "demand_tokens_per_window": figure["demand_tokens_per_window_per_process"],
        "demand_over_limit": figure["demand_over_limit_per_process"],
        **{k: run[k] for k in keys},
        "measured_windows": run["measured_s"] / window,
        "worker_settings": figure["worker_settings"],
    }


# --- (b) A pool of two deployments ---------------------------------------------------------------------


async def pool(b: Bench) -> dict[str, Any]:
    """(b): the same deployment on two resources (limits L1 > L2, priorities 1 and 2), N jobs queued at once."""
    n, window, latency_ms = b.scale.pool_jobs, b.scale.quota_window_s, b.scale.latency_ms
    tokens_each = tokens_per_job()
    demand = process_demand(b, tokens_each) * b.scale.pool_processes
    total = max(6 * tokens_each, round(demand / 2))
    limits = {"primary": round(total * 2 / 3), "secondary": total - round(total * 2 / 3)}
    config = {"latency_ms": latency_ms, "rate_window_seconds": window}
    b.stack.configure_model(**config, tpm=limits["primary"])
    with resource(b, **config, tpm=limits["secondary"]) as second:
        emulators = {"primary": b.stack.model, "secondary": second}
        settings = pool_settings(b, "pool", b.stack.model, second)

        def reset() -> None:
            b.stack.configure_model(**config, tpm=limits["primary"])
            second.reset()

        ideal = n * tokens_each * window / total
        timeout = ideal * 4 + b.scale.timeout_s
        started = await start_workers(b, "pool", settings, b.scale.pool_processes)
        run, _ = await run_workers(b, started, Arrivals(n), reset=reset, timeout=timeout)
        per_resource = {
            name: {"endpoint": e.endpoint, "limit_tokens_per_window": limits[name], **_quota(e.stats(), n)}
            for name, e in emulators.items()
        }
    use = harness.limit_use(harness.admitted_times(run.results, latency_ms / 1000), tokens_each, total, window)
    drain = run.drain_seconds()
    counts = run.counts()
    return {
        "latency_s": latency_ms / 1000,
        "window_s": window,
        "tokens_charged_per_request": tokens_each,
        "demand_tokens_per_window": demand,
        "limits_tokens_per_window": limits,
        "sum_tokens_per_window": total,
        "fraction_of_sum": use.pop("fraction_of_limit"),
        **use,
        **counts,
        **_total(per_resource, n),
        "by_resource": per_resource,
        "served_by": _served(run.results, {e.endpoint.rstrip("/"): name for name, e in emulators.items()}),
        "drain_s": drain,
        "ideal_drain_s": ideal,
        "drain_over_ideal": drain / ideal,
        "pool": json.loads(settings["AZURE_OPENAI_POOL"]),
        "worker_settings": worker_settings(b),
    }


# --- (c) Model outages ----------------------------------------------------------------------------------


def _timed(
    run: Run, outage: dict[str, float] | None, latency: float, down: OpenAIEmulator | None = None
) -> dict[str, Any]:
    """Job times, the drain against arrivals served at once, and with an outage the recovery: seconds from
    the outage's end to the last result, and the 429s ``down`` (the resource that was down) answered in the
    minute after it ended."""
    seconds = run.job_seconds()
    drain, ideal = run.drain_seconds(), run.paced_ideal_seconds(latency)
    out = {
        **run.counts(),
        "job_s_p50": harness.percentile(seconds, 0.5),
        "job_s_p95": harness.percentile(seconds, 0.95),
        "job_s_max": max(seconds, default=0.0),
        "drain_s": drain,
        "ideal_drain_s": ideal,
        "drain_over_ideal": drain / ideal if ideal else 0.0,
    }
    if outage is not None:
        ends = outage["ends_at"]
        finished = max((harness.finished_at(r) for r in run.results), default=ends)
        after = [r for r in (down.requests() if down else []) if ends <= r.began < ends + AFTER_RECOVERY_S]
        throttled = sum(1 for r in after if r.status == "429")
        out["outage"] = {
            "seconds": outage["seconds"],
            "after_first_send_s": outage["started_at"] - run.sent_at,
            "last_result_after_end_s": finished - ends,  # the recovery tail (< 0: none)
            "throttled_429_in_minute_after_end": throttled,
            "throttled_per_job_in_minute_after_end": throttled / run.jobs if run.jobs else 0.0,
        }
    return out


def _both(first: OpenAIEmulator, second: OpenAIEmulator) -> Callable[[], None]:
    def reset() -> None:
        first.reset()
        second.reset()

    return reset


async def _one_deployment(b: Bench, quiet: asyncio.Event) -> dict[str, Any]:
    """The only deployment down ``outage_s``, beside the same arrivals on a healthy resource (two runs at once).
    ``quiet`` is set once the healthy run is over and every job has been sent (the outage run then only waits)."""
    s = b.scale
    short = Arrivals(round(s.outage_jobs_per_s * (2 * s.outage_margin_s + s.outage_s)), s.outage_jobs_per_s)
    with resource(b, latency_ms=s.latency_ms) as healthy, resource(b, latency_ms=s.latency_ms) as down:
        failing = Arrivals(short.count, short.rate, (down, s.outage_margin_s, s.outage_s))
        calm_settings = single_settings(b, "outage-none", healthy)
        hit_settings = single_settings(b, "outage-only", down)

        async def calm_run() -> tuple[Run, dict[str, float] | None]:
            try:  # the same arrivals as the outage run, so its sending is over too when this returns
                started = await start_workers(b, "outage-none", calm_settings)
                return await run_workers(b, started, short, reset=healthy.reset, timeout=s.timeout_s)
            finally:
                quiet.set()

        async def hit_run() -> tuple[Run, dict[str, float] | None]:
            started = await start_workers(b, "outage-only", hit_settings)
            return await run_workers(b, started, failing, reset=down.reset, timeout=s.timeout_s)

        (calm, _), (hit, hit_outage) = await asyncio.gather(calm_run(), hit_run())
        latency = s.latency_ms / 1000
        without = {**_timed(calm, None, latency), **_quota(healthy.stats(), calm.jobs)}
        only = {**_timed(hit, hit_outage, latency, down), **_quota(down.stats(), hit.jobs)}
    return {
        "without_outage": {**without, "arrival_jobs_per_s": short.rate},
        "only_deployment_down": {**only, "arrival_jobs_per_s": short.rate},
        "p95_over_without": only["job_s_p95"] / without["job_s_p95"] if without["job_s_p95"] else 0.0,
    }


async def _failover(b: Bench) -> dict[str, Any]:
    """The primary of a two-resource pool down ``long_outage_s``, its secondary healthy."""
    s = b.scale
    count = round(s.long_outage_jobs_per_s * (2 * s.outage_margin_s + s.long_outage_s))
    with resource(b, latency_ms=s.latency_ms) as primary, resource(b, latency_ms=s.latency_ms) as secondary:
        arrivals = Arrivals(count, s.long_outage_jobs_per_s, (primary, s.outage_margin_s, s.long_outage_s))
        settings = pool_settings(b, "outage-pool", primary, secondary)
        started = await start_workers(b, "outage-pool", settings)
        pooled, pooled_outage = await run_workers(
            b, started, arrivals, reset=_both(primary, secondary), timeout=s.timeout_s
        )
        names = {primary.endpoint.rstrip("/"): "primary", secondary.endpoint.rstrip("/"): "secondary"}
        by_resource = {
            "primary": _quota(primary.stats(), pooled.jobs),
            "secondary": _quota(secondary.stats(), pooled.jobs),
        }
        timed = _timed(pooled, pooled_outage, s.latency_ms / 1000, primary)
    return {
        **timed,
        **_total(by_resource, pooled.jobs),
        "by_resource": by_resource,
        "served_by": _served(pooled.results, names),
        "arrival_jobs_per_s": arrivals.rate,
    }


async def _alone(b: Bench) -> dict[str, Any]:
    """The only deployment (no pool) down ``long_outage_s``, at the long outage's arrival rate: every job that
    arrives meanwhile waits the outage out, and the recovery tail is how soon they all run once it ends."""
    s = b.scale
    count = round(s.long_outage_jobs_per_s * (2 * s.outage_margin_s + s.long_outage_s))
    with resource(b, latency_ms=s.latency_ms) as down:
        arrivals = Arrivals(count, s.long_outage_jobs_per_s, (down, s.outage_margin_s, s.long_outage_s))
        started = await start_workers(b, "outage-alone", single_settings(b, "outage-alone", down))
        run, run_outage = await run_workers(b, started, arrivals, reset=down.reset, timeout=s.timeout_s)
        timed = _timed(run, run_outage, s.latency_ms / 1000, down)
        return {**timed, **_quota(down.stats(), run.jobs), "arrival_jobs_per_s": arrivals.rate}


async def _not_run() -> None:
    return None


async def outage(b: Bench, quiet: asyncio.Event | None = None) -> dict[str, Any]:
    """(c): the runs at once, each with its own resource(s) so every emulator's counters are its own. The long
    ones (the pool's primary down ``long_outage_s``; the only deployment down as long) only when
    ``b.long_outage`` (``b.long_outage_alone``); else each is reported as not run. ``quiet`` is set once the
    runs only wait for jobs re-enqueued by the outage (see ``_one_deployment``)."""
    s = b.scale
    quiet = quiet or asyncio.Event()
    one, failover, alone = await asyncio.gather(
        _one_deployment(b, quiet),
        _failover(b) if b.long_outage else _not_run(),
        _alone(b) if b.long_outage_alone else _not_run(),
    )
    return {
        "latency_s": s.latency_ms / 1000,
        "worker_settings": worker_settings(b),
        "outage_s": s.outage_s,
        "long_outage_s": s.long_outage_s,
        **one,
        "primary_down_with_secondary": failover,  # None: not run (python -m bench --long-outage runs it)
        "only_deployment_down_long": alone,  # None: not run (python -m bench --long-outage-alone runs it)
    }


def _kept_full(target: str, figure: dict[str, Any], fraction: str) -> dict[str, Any]:
    """Figures 5 and 7's target: >= 0.9 of the limit(s) used (``figure[fraction]``), 0 failed jobs."""
    used, failed = figure[fraction], figure["failed_jobs"]
    return {"target": target, "value": {fraction: used, "failed_jobs": failed}, "met": used >= 0.9 and failed == 0}


def targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Figure 5's and issue 13's targets for the sections this report has."""
    goals: dict[str, dict[str, Any]] = {}
    if "rate_limit" in report:
        goals["rate_limit"] = _kept_full(
            ">= 0.9 of the token limit used, 0 failed jobs (one process: the scale-out's K = 1 run)",
            report["rate_limit"],
            "fraction_of_limit",
        )
    if "scaleout" in report:
        goals["scaleout"] = scaleout_target(report["scaleout"]["runs"])
    if "pool" in report:
        goals["pool"] = _kept_full(">= 0.9 of L1 + L2, 0 failed", report["pool"], "fraction_of_sum")
    if "outage" in report:
        o = report["outage"]
        names = ("only_deployment_down", "primary_down_with_secondary", "only_deployment_down_long")
        runs = {k: o[k] for k in names if o.get(k) is not None}
        longer = {
            "primary_down_with_secondary": ", primary down with a healthy secondary (long_outage_s)",
            "only_deployment_down_long": ", only deployment down long_outage_s",
        }
        also = "".join(text for k, text in longer.items() if k in runs)
        goals["outage"] = {
            "target": f"0 failed, 0 poisoned: only deployment down (outage_s){also}",
            "value": {k: {"failed_jobs": r["failed_jobs"], "poisoned": r["poisoned"]} for k, r in runs.items()},
            "met": all(r["failed_jobs"] == 0 and r["poisoned"] == 0 for r in runs.values()),
        }
    return goals


def scaleout_meets(run: dict[str, Any]) -> bool:
    return bool(
        run["fraction_of_limit"] >= 0.95
        and run["throttled_per_job"] <= 0.1
        and run["requeued_fraction"] <= 0.01
        and run["drain_over_ideal"] <= 1.1
        and run["failed_jobs"] == 0
    )


def scaleout_target(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Judged at K = 8 and K = 16 (at smoke scale, on the largest K run)."""
    judged = [r for r in runs if r["processes"] >= 8] or sorted(runs, key=lambda r: r["processes"])[-1:]
    keys = ("fraction_of_limit", "throttled_per_job", "requeued_fraction", "drain_over_ideal", "failed_jobs")
    return {
        "target": "at K = 8 and 16: >= 0.95 of the limit, <= 0.1 429s/job, <= 1 % re-enqueued, "
        "drain <= 1.1 x ideal, 0 failed",
        "value": {str(r["processes"]): {k: r[k] for k in keys} for r in judged},
        "met": bool(judged) and all(scaleout_meets(r) for r in judged),
    }
