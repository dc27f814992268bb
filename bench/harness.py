"""Processes, producers and measurements shared by the bench scenarios.

Workers run as the product does: ``python -m emulators.functions_host`` (or the sync baseline)
in its own process, behind the suite's network guard, started by emulators.stack.workers as the
tests start theirs. The bench process enqueues, waits and reads results; it never shares a GIL
with the worker it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from emulators.stack.workers import HOST_MODULE, Jobs, WaitTimeout, WorkerHost, host_command, start_host, wait_until
from emulators.tokens import Principal, TokenIssuer
from shared.storage_clients import StorageEndpoints

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HOST_MODULES = (HOST_MODULE, "bench.profiled_host", "bench.counted_host")  # taking the local host's arguments
PRODUCER = Principal(object_id="be4c0000-0000-4000-8000-0000000be4c0", name="bench-producer")
LISTENING = "listening on queue"  # the local host's log line once it polls its queue


# --- The bench's own storage access ----------------------------------------------------------------


class IssuerCredential:
    """Tokens minted in-process from the local issuer, for the bench's producer/reader clients.

    They never touch the managed-identity endpoint, so its counter sees only the worker.
    """

    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        token, expires_on = self.issuer.mint(audience=scopes[0], principal=PRODUCER, lifetime=24 * 3600)
        return AccessToken(token, expires_on)

    async def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        token, expires_on = self.issuer.mint(audience=scopes[0], principal=PRODUCER, lifetime=24 * 3600)
        return AccessTokenInfo(token, expires_on)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> IssuerCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def producer_jobs(settings: dict[str, str], issuer: TokenIssuer) -> Jobs:
    """An emulators.stack.workers.Jobs for ``settings`` (key or token, as the settings say).

    HTTPS trust comes from SSL_CERT_FILE, set by bench/__main__.py (or tests/conftest.py) before
    aiohttp was imported.
    Not ``connection_verify=<path>``: azure-core then builds a new SSLContext per request, so
    aiohttp (whose pool is keyed by the context) opens a new TLS connection for every request.
    """
    endpoints = StorageEndpoints.from_settings(env=settings)
    if endpoints.connection_string:
        queues = QueueServiceClient.from_connection_string(endpoints.connection_string)
        blobs = BlobServiceClient.from_connection_string(endpoints.connection_string)
    else:
        assert endpoints.queue_url and endpoints.blob_url
        credential = IssuerCredential(issuer)
        queues = QueueServiceClient(endpoints.queue_url, credential=credential)
        blobs = BlobServiceClient(endpoints.blob_url, credential=credential)
    return Jobs(settings, queues, blobs)


def job_body(i: int, *, max_tokens: int = 16) -> dict[str, Any]:
    # The default deployment is a reasoning model: no reasoning, so the budget buys the answer alone
    # and admission charges what it did before reasoning models (prompt + budget).
    parameters = {"max_completion_tokens": max_tokens, "reasoning_effort": "none"}
    return {"id": f"bench-{i:05d}", "prompt": f"Question number {i:05d}?", "parameters": parameters}


async def enqueue(jobs: Jobs, bodies: Sequence[dict[str, Any]], concurrency: int = 16) -> None:
    """Create the queue if need be and send every body (plain JSON text), a few at a time."""
    await jobs.ensure_queue()
    await jobs.send(*bodies, concurrency=concurrency)


async def wait_drained(jobs: Jobs, host: WorkerHost, timeout: float, poll: float = 0.5) -> bool:
    """Wait until the queue holds nothing (every job's delivery deleted); False (and why, with the
    worker's log, on stdout) at the deadline or if the worker exits: the run reports what it got."""
    try:
        return await jobs.queue_drained(host=host, timeout=timeout, interval=poll)
    except WaitTimeout as failure:
        print(f"bench: {failure}", flush=True)
        return False


async def fetch_results(jobs: Jobs) -> list[dict[str, Any]]:
    """Every stored result document."""
    return list((await jobs.results()).values())


async def stored_statuses(jobs: Jobs) -> list[dict[str, Any]]:
    """Every stored result as ``{"id", "status"}``, from one listing of the results container: the worker
    writes each result's status into its blob's metadata. For runs that only count results, it spares
    downloading every document (a second or more per thousand)."""
    try:
        return [
            {"id": blob.name.removesuffix(".json"), "status": (blob.metadata or {}).get("status", "unknown")}
            async for blob in jobs.results_container.list_blobs(include=["metadata"])
            if "/" not in blob.name  # results are the top-level <id>.json blobs, as in Jobs.results
        ]
    except ResourceNotFoundError:
        return []


# --- Worker processes ------------------------------------------------------------------------------


@dataclass
class Worker:
    """A worker subprocess (emulators.stack.workers.WorkerHost) and when it was spawned (wall clock)."""

    host: WorkerHost
    spawned_at: float

    @property
    def pid(self) -> int:
        return self.host.process.pid

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def stop(self) -> None:
        self.host.stop()

    async def stopped(self) -> None:
        """Stop without blocking the loop (SIGTERM lets running invocations finish)."""
        await asyncio.to_thread(self.host.stop)


async def stop_all(workers: Sequence[Worker]) -> None:
    """Stop several workers together: SIGTERM to every one first, so they wind down at once rather than a
    few at a time (``stopped`` waits in the loop's thread pool), then wait for each."""
    for worker in workers:
        if worker.host.process.poll() is None:
            worker.host.process.send_signal(signal.SIGTERM)
    await asyncio.gather(*(worker.stopped() for worker in workers))


def start_worker(
    settings: dict[str, str],
    log_path: Path,
    *,
    module: str = HOST_MODULE,
    args: Sequence[str] = (),
) -> Worker:
    """Spawn a worker as the tests' start_host fixture does (settings via the environment)."""
    if module in HOST_MODULES:
        command = host_command(log_path.parent, module=module, args=args)
    else:
        command = [sys.executable, "-m", module, *args]
    spawned_at = time.time()
    return Worker(start_host(command, settings, log_path), spawned_at)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far, from /proc/<pid>/stat (utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


@dataclass
class CpuMeter:
    """CPU used between two moments by the worker, Azurite, this process (the emulators run here)
    and the whole machine, so a run can say which of them the work was waiting for."""

    pids: dict[str, int]
    start: dict[str, float] | None = None

    def _read(self) -> dict[str, float]:
        busy, total = machine_cpu()
        values = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        return {**values, "bench_process": time.process_time(), "machine_busy": busy, "machine_total": total}

    def begin(self) -> None:
        self.start = self._read()

    def end(self, jobs: int) -> dict[str, float]:
        assert self.start is not None
        now = self._read()
        delta = {k: now[k] - self.start[k] for k in now}
        total = delta.pop("machine_total") or 1e-9
        busy = delta.pop("machine_busy")
        out = {f"{k}_cpu_ms_per_job": v * 1000 / jobs for k, v in delta.items()}
        out["machine_busy_fraction"] = busy / total
        out["machine_cores_busy"] = busy / total * (os.cpu_count() or 1)
        return out


async def wait_for_log(worker: Worker, text: str, timeout: float, label: str) -> None:
    """Wait for ``text`` in the worker's log; WaitTimeout (with the log) at the deadline or if it exits."""

    async def logged() -> bool:
        return text in worker.host.log()

    await wait_until(
        logged, what=f"{label}: {text!r} in the worker's log", host=worker.host, timeout=timeout, interval=0.05
    )


async def wait_listening(workers: Sequence[Worker], label: str, timeout: float = 120) -> None:
    """Wait until every worker logs that it is listening (WaitTimeout, with its log, if one does not)."""
    await asyncio.gather(*(wait_for_log(w, LISTENING, timeout, f"{label}/{i}") for i, w in enumerate(workers)))


async def wait_drained_all(jobs: Jobs, workers: Sequence[Worker], timeout: float, poll: float = 0.5) -> bool:
    """``wait_drained`` with several workers on one queue: False at the deadline or once any of them exits."""

    async def empty() -> bool:
        exited = [w.host for w in workers if w.host.process.poll() is not None]
        if exited:
            raise WaitTimeout(f"a worker exited while {jobs.settings['JOBS_QUEUE']} drained\n{exited[0].tail()}")
        return await jobs.message_count() == 0

    try:
        return await wait_until(empty, what=f"{jobs.settings['JOBS_QUEUE']} to drain", timeout=timeout, interval=poll)
    except WaitTimeout as failure:
        print(f"bench: {failure}", flush=True)
        return False


def errors_logged(worker: Worker) -> int:
    """ERROR lines in the worker's log."""
    return sum(1 for line in worker.host.log().splitlines() if " ERROR " in line)


def log_count(worker: Worker, text: str) -> int:
    """Lines of the worker's log containing ``text``."""
    return sum(1 for line in worker.host.log().splitlines() if text in line)


def log_time(log: str, text: str) -> float | None:
    """Epoch seconds of the first log line containing ``text`` (the host's asctime format)."""
    for line in log.splitlines():
        if text in line:
            with contextlib.suppress(ValueError):
                return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


# --- Figures from stored results -------------------------------------------------------------------


def epoch(value: str) -> float:
    """An ISO 8601 time from a result document (``timings.started_at``, ``finished_at``) as epoch seconds."""
    return datetime.fromisoformat(value).timestamp()


def finished_at(result: dict[str, Any]) -> float:
    """When a result document says its job finished (``timings.finished_at``), in epoch seconds."""
    return epoch(result["timings"]["finished_at"])


def steady_state(results: list[dict[str, Any]], skip: int) -> dict[str, float]:
    """Completion rate between the ``skip``-th and the ``skip``-th-from-last completion, and why.

    Little's law splits it: rate = mean jobs in flight / mean seconds per job, where in-flight is
    each result's ``timings.started_at``..``finished_at`` overlapping the window.
    """
    spans = sorted((epoch(r["timings"]["started_at"]), epoch(r["timings"]["finished_at"])) for r in results)
    model = [r["timings"].get("model_seconds") or 0.0 for r in results]
    finishes = sorted(end for _, end in spans)
    n = len(finishes)
    if n < 2:
        return {
            "jobs_per_s": 0.0,
            "window_s": 0.0,
            "mean_in_flight": 0.0,
            "mean_job_s": 0.0,
            "mean_model_s": 0.0,
            "jobs_in_window": n,
        }
    if n - 2 * skip >= 10:  # enough for a steady state: completions skip..n-1-skip
        first, last = skip, n - 1 - skip
        t0, t1, done = finishes[first], finishes[last], last - first
    else:  # a handful of jobs (smoke scale): first start to last finish
        t0, t1, done = spans[0][0], finishes[-1], n
    window = max(t1 - t0, 1e-9)
    busy = sum(max(0.0, min(end, t1) - max(start, t0)) for start, end in spans)
    return {
        "jobs_per_s": done / window,
        "window_s": window,
        "mean_in_flight": busy / window,
        "mean_job_s": sum(end - start for start, end in spans) / n,
        "mean_model_s": sum(model) / n,
        "jobs_in_window": done,
    }


def statuses(results: list[dict[str, Any]]) -> dict[str, int]:
    out = {"succeeded": 0, "failed": 0}
    for r in results:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation between closest ranks; 0.0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def admitted_times(results: list[dict[str, Any]], latency: float) -> list[float]:
    """When each success was admitted by the model's quota (epoch s, sorted): the emulator admits, then
    sleeps the latency, so ~``latency`` before the result was written."""
    return sorted(finished_at(r) - latency for r in results if r["status"] == "succeeded")


def limit_use(admitted: Sequence[float], tokens_each: int, limit: int, window: float) -> dict[str, Any]:
    """The share of a token limit (``limit`` per ``window`` s) that admitted requests used while the limit
    was what held them back, over whole windows: from one window after the first admission (the first
    window starts empty: a burst) for as many windows as end before the admission that left less than one
    window's worth of requests to come (after it the backlog, not the limit, sets the pace). Whole windows,
    because a sliding window admits in bursts that echo the first one, a window apart. Too short a run
    for one such window (smoke scale): first admission to last, burst included."""
    if not admitted:
        return {"fraction_of_limit": 0.0, "measured_s": 0.0, "measured_requests": 0, "admitted_per_window": []}
    per_window = max(1, limit // tokens_each)
    by_window = Counter(int((t - admitted[0]) // window) for t in admitted)
    start = admitted[0] + window
    last_full = admitted[len(admitted) - 1 - per_window] if len(admitted) > per_window else admitted[0]
    windows = int((last_full - start) // window)
    if windows >= 1:
        end = start + windows * window
        count = sum(1 for t in admitted if start <= t < end)
    else:
        start, end = admitted[0], max(admitted[-1], admitted[0] + window)
        count = len(admitted)
    span = end - start
    return {
        "fraction_of_limit": count * tokens_each / (limit * span / window),
        "measured_s": span,
        "measured_requests": count,
        "admitted_per_window": [by_window[i] for i in range(max(by_window) + 1)],  # from the first admission
    }
