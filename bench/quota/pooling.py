"""Figure 7: workers routing over a pool of two deployments, their limits summing to half of one process's demand.

Part of ``bench.quota`` (its docstring says how the runs are made).
"""

from __future__ import annotations

import json
from typing import Any

from bench import harness
from bench.config import Bench
from bench.quota.resources import (
    model_counts,
    pool_settings,
    process_demand,
    resource,
    served_by,
    summed_counts,
    tokens_per_job,
    worker_settings,
)
from bench.quota.workers import Arrivals, run_workers, start_workers


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
            name: {"endpoint": e.endpoint, "limit_tokens_per_window": limits[name], **model_counts(e.stats(), n)}
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
        **summed_counts(per_resource, n),
        "by_resource": per_resource,
        "served_by": served_by(run.results, {e.endpoint.rstrip("/"): name for name, e in emulators.items()}),
        "drain_s": drain,
        "ideal_drain_s": ideal,
        "drain_over_ideal": drain / ideal,
        "pool": json.loads(settings["AZURE_OPENAI_POOL"]),
        "worker_settings": worker_settings(b),
    }
