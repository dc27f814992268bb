"""Figures 5 and 6: K worker processes under one token limit, half of what one process asks for.

Part of ``bench.quota`` (its docstring says how the runs are made): one run per K, the K = 1 run reported
twice (figure 5, ``rate_limit``), and figure 6's target.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bench import harness
from bench.config import Bench
from bench.quota.resources import model_counts, process_demand, tokens_per_job, worker_settings
from bench.quota.workers import Arrivals, Started, run_workers, start_workers
from emulators.stack.services import unique_names


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
        **model_counts(b.stack.model_stats(), n),  # the next run's workers, started meanwhile, have not called it
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
