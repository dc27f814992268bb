"""Figure 8: model outages, jobs arriving at a steady rate while a deployment answers 503.

Part of ``bench.quota`` (its docstring says which runs and when): the only deployment down beside a healthy
resource, and with the bench's flags the primary of a pool down long, or the only deployment down as long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bench import harness
from bench.config import Bench
from bench.quota.resources import (
    model_counts,
    pool_settings,
    resource,
    served_by,
    single_settings,
    summed_counts,
    worker_settings,
)
from bench.quota.workers import Arrivals, Run, run_workers, start_workers
from emulators.stack.services import OpenAIEmulator

AFTER_RECOVERY_S = 60.0  # 429s are counted this long after an outage ends (issue 23's target)


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
        without = {**_timed(calm, None, latency), **model_counts(healthy.stats(), calm.jobs)}
        only = {**_timed(hit, hit_outage, latency, down), **model_counts(down.stats(), hit.jobs)}
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
            "primary": model_counts(primary.stats(), pooled.jobs),
            "secondary": model_counts(secondary.stats(), pooled.jobs),
        }
        timed = _timed(pooled, pooled_outage, s.latency_ms / 1000, primary)
    return {
        **timed,
        **summed_counts(by_resource, pooled.jobs),
        "by_resource": by_resource,
        "served_by": served_by(pooled.results, names),
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
        return {**timed, **model_counts(down.stats(), run.jobs), "arrival_jobs_per_s": arrivals.rate}


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
