"""Figure 10 (issue 22): long reasoning jobs in background mode against the same jobs held synchronously, and what
flex costs against the default tier.

Jobs that think ``THINK_S`` (5 minutes, as a high-effort or ``-pro`` call can on Azure) are too long to wait for in
a bench, so the run **scales time** by ``scale`` (1/5 at full scale: a 60 s think). Everything that grows with the
think time is scaled alike: the emulator's synchronous answer takes the think time (``latency_ms``), its background
response runs as long (``background_seconds``, queued 0 s), and the worker's background polls start at
``BACKGROUND_POLL_SECONDS`` x scale doubling to ``BACKGROUND_POLL_MAX_SECONDS`` x scale (the shipped 5 s and 60 s
become 1 s and 12 s), so a job is polled as many times as at full scale (``polls_at``). What does not scale is what
one invocation costs (a storage write, a queue message, an HTTP round trip): the background side's time is a count
of invocations times that cost, the synchronous side's is the think time. So the measured ratio times ``scale`` is
the ratio for 5-minute jobs (``projected``), which the figure reports beside the measured one.

Two worker hosts (the local queue host, host.json's 24 slots each), one per side, on their own queues, run
``jobs`` jobs each at once against one emulator; their ``process`` spans go to an OTLP receiver. Per job:

- **slot-seconds**: the sum of the job's invocations (its ``process`` spans, by ``job.id``): what it held of a
  worker slot, the function's execution time;
- **instance-seconds**: the union of the side's invocations over the run, per job: how long an instance had to be
  up (busy with at least one of them), shared among jobs running at once;
- **polls**: the emulator's ``responses.retrieves`` per background job (and ``polls_at``'s count for 5 minutes at
  the shipped settings);
- **flex cost ratio**: then ``jobs`` jobs on flex and ``jobs`` on the default tier of a flex model, 0 ms think; each
  tier's tokens times its price multiplier (the emulator's ``by_tier`` counters) per job, flex over default.

``python -m bench.responses [--scale smoke]`` prints the figure alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when used: ``main`` must trust the local certificate before aiohttp is imported
    from emulators.stack.services import LocalAzure

THINK_S = 300.0  # what each job thinks on Azure: 5 minutes
SHIPPED_POLL_S = (5, 60)  # BACKGROUND_POLL_SECONDS, BACKGROUND_POLL_MAX_SECONDS as shipped
FLEX_DEPLOYMENT = "gpt-5.6-luna"  # a flex model (shared/catalogue.py)
SPAN_WAIT_S = 15.0  # for the workers' last spans to be exported after the last result


@dataclass(frozen=True)
class Scaled:
    """One scale of the figure: jobs per side, the time scale and the poll settings it implies."""

    jobs: int
    scale: float
    poll_s: tuple[int, int]  # BACKGROUND_POLL_SECONDS, BACKGROUND_POLL_MAX_SECONDS at this scale

    @property
    def think_s(self) -> float:
        return THINK_S * self.scale


# Full: 24 jobs (one host's slots), 1/5 (a 60 s think; the polls 1 s to 12 s, exactly the shipped ones scaled).
# Smoke: every path once; 5 s thinks, where the poll settings (whole seconds) cannot scale: its polls differ.
SCALES = {"full": Scaled(24, 1 / 5, (1, 12)), "smoke": Scaled(3, 1 / 60, (1, 2))}


def polls_at(think_s: float, first_s: float, cap_s: float) -> int:
    """Polls of one background job that thinks ``think_s`` (``shared.background.poll_delay``: the first after
    ``first_s``, doubling up to ``cap_s``; the last one finds it done), ignoring the queue's own polling lag."""
    waited, polls = 0.0, 0
    while waited < think_s:
        waited += min(first_s * 2**polls, cap_s)
        polls += 1
    return polls


def _bodies(prefix: str, jobs: int, **fields: Any) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{i:03d}", "prompt": f"Think hard about problem {i}.", **fields} for i in range(jobs)]


def _invocations(spans: Sequence[Any], prefix: str) -> dict[str, list[tuple[int, int]]]:
    """Each job's invocations (start, end ns): the worker's ``process`` spans, by ``job.id``."""
    found: dict[str, list[tuple[int, int]]] = {}
    for span in spans:
        job_id = span.attributes.get("job.id")
        if span.kind == "CONSUMER" and isinstance(job_id, str) and job_id.startswith(f"{prefix}-"):
            found.setdefault(job_id, []).append((span.start_ns, span.end_ns))
    return found


def union_s(intervals: list[tuple[int, int]]) -> float:
    total, end = 0, 0
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total / 1e9


def _side(invocations: dict[str, list[tuple[int, int]]], jobs: int) -> dict[str, Any]:
    every = [interval for spans in invocations.values() for interval in spans]
    slot = sum((stop - start) / 1e9 for start, stop in every)
    return {
        "jobs_seen": len(invocations),
        "invocations_per_job": len(every) / jobs,
        "slot_s_per_job": slot / jobs,
        "instance_s_per_job": union_s(every) / jobs,
    }


def tier_cost(by_tier: dict[str, dict[str, Any]], tier: str) -> float | None:
    """Tokens billed on ``tier`` times its price multiplier, per answer (None when none was served there)."""
    counts = by_tier.get(tier) or {}
    answers = int(counts.get("answers", 0))
    if not answers:
        return None
    tokens = int(counts.get("prompt_tokens", 0)) + int(counts.get("completion_tokens", 0))
    return float(counts.get("price", 1.0)) * tokens / answers


async def _spans_for(receiver: Any, prefixes: Sequence[str], jobs: int) -> list[Any]:
    """The workers' spans once every job's last invocation (the one that stored its result) has arrived."""
    deadline = time.monotonic() + SPAN_WAIT_S
    while True:
        spans = receiver.spans()
        final = {s.attributes.get("job.id") for s in spans if s.kind == "CONSUMER" and "job.status" in s.attributes}
        if all(f"{p}-{i:03d}" in final for p in prefixes for i in range(jobs)) or time.monotonic() > deadline:
            return list(spans)
        await asyncio.sleep(0.2)


async def responses_figure(stack: LocalAzure, scale_name: str, logs: Path) -> dict[str, Any]:
    """The figure at ``SCALES[scale_name]`` (see the module docstring)."""
    from bench.harness import producer_jobs, start_worker, stop_all, wait_listening
    from emulators.stack.services import DEPLOYMENT, start_otlp_receiver, unique_names

    scaled = SCALES[scale_name]
    think, n = scaled.think_s, scaled.jobs
    deployments = {DEPLOYMENT: None, FLEX_DEPLOYMENT: None}
    stack.configure_model(deployments=deployments)  # no think yet: the warm-up jobs below
    endpoint = stack.model.endpoint
    pool = [{"endpoint": endpoint, "deployment": DEPLOYMENT, "api": "responses"}]
    pool.append({"endpoint": endpoint, "deployment": FLEX_DEPLOYMENT})
    with start_otlp_receiver() as receiver:
        sides: dict[str, Any] = {}
        for side in ("sync", "background"):
            settings = {
                **stack.managed_identity_settings(unique_names(f"resp-{side}")),
                **receiver.env(),
                "AZURE_OPENAI_POOL": json.dumps(pool),
                "AZURE_OPENAI_DEPLOYMENT": DEPLOYMENT,
                "AZURE_OPENAI_TIMEOUT_SECONDS": str(int(think * 2 + 30)),  # a synchronous think is one long call
                "BACKGROUND_POLL_SECONDS": str(scaled.poll_s[0]),
                "BACKGROUND_POLL_MAX_SECONDS": str(scaled.poll_s[1]),
            }
            sides[side] = (settings, producer_jobs(settings, stack.issuer))
        workers = [
            start_worker(settings, logs / f"responses-{side}" / "worker.log") for side, (settings, _) in sides.items()
        ]
        try:
            await wait_listening(workers, "responses")
            # One quick job per worker first: its pacing gate admits one call until the first answer tells it the
            # deployment's limits, which would queue the other synchronous jobs behind a whole think.
            for index, (_, jobs) in enumerate(sides.values()):
                await jobs.ensure_queue()
                await jobs.send({"id": "warm-up", "prompt": "Ready?"})
                await jobs.wait_for(1, host=workers[index].host, timeout=60)
            stack.configure_model(
                deployments=deployments, latency_ms=think * 1000, background_seconds=think, background_queued_seconds=0
            )
            began = time.monotonic()
            sync_jobs, bg_jobs = sides["sync"][1], sides["background"][1]
            await asyncio.gather(
                sync_jobs.send(*_bodies("sync", n, background=False), concurrency=8),
                bg_jobs.send(*_bodies("bg", n, background=True), concurrency=8),
            )
            timeout = think * 3 + 60
            sync_results, _ = await asyncio.gather(
                sync_jobs.wait_for(n + 1, host=workers[0].host, timeout=timeout),
                bg_jobs.wait_for(n + 1, host=workers[1].host, timeout=timeout),
            )
            wall_s = time.monotonic() - began
            spans = await _spans_for(receiver, ("sync", "bg"), n)
            think_stats = stack.model_stats()
            # Flex against default: the same jobs on a flex model, no think time (the price is the figure).
            stack.configure_model(deployments=deployments)
            await bg_jobs.send(
                *_bodies("flex", n, deployment=FLEX_DEPLOYMENT, service_tier="flex"),
                *_bodies("std", n, deployment=FLEX_DEPLOYMENT, service_tier="default"),
                concurrency=8,
            )
            tiered = await bg_jobs.wait_for(3 * n + 1, host=workers[1].host, timeout=120)
            flex_stats = stack.model_stats()
        finally:
            await stop_all(workers)
            for _, jobs in sides.values():
                await jobs.close()
    sync, background = _side(_invocations(spans, "sync"), n), _side(_invocations(spans, "bg"), n)
    slot_ratio = background["slot_s_per_job"] / sync["slot_s_per_job"]
    instance_ratio = background["instance_s_per_job"] / sync["instance_s_per_job"]
    flex_cost, default_cost = tier_cost(flex_stats["by_tier"], "flex"), tier_cost(flex_stats["by_tier"], "default")
    everyone = [*sync_results.values(), *tiered.values()]  # the background side's container holds the tier jobs too
    failed = sorted({r["id"] for r in everyone if r["status"] != "succeeded"})
    return {
        "jobs_per_side": n,
        "think_s_at_full_scale": THINK_S,
        "scale": scaled.scale,
        "think_s": think,
        "poll_s": list(scaled.poll_s),
        "wall_s": round(wall_s, 1),
        "sync": sync,
        "background": background,
        "slot_ratio": slot_ratio,
        "instance_ratio": instance_ratio,
        "projected": {"slot_ratio": slot_ratio * scaled.scale, "instance_ratio": instance_ratio * scaled.scale},
        "polls_per_job": think_stats["responses"]["retrieves"] / n,
        "polls_at_full_scale": polls_at(THINK_S, *SHIPPED_POLL_S),
        "responses_created": think_stats["responses"]["created"],
        "flex": {
            "served": {tier: counts.get("answers", 0) for tier, counts in flex_stats["by_tier"].items()},
            "cost_per_job": {"flex": flex_cost, "default": default_cost},
            "cost_ratio": flex_cost / default_cost if flex_cost is not None and default_cost else None,
            "tiers_in_results": {
                kind: sorted({str(r.get("service_tier")) for r in tiered.values() if r["id"].startswith(f"{kind}-")})
                for kind in ("flex", "std")
            },
        },
        "failed_jobs": failed,
    }


def describe(figure: dict[str, Any]) -> str:
    """One line: the bench table's wording."""
    sync, bg, projected = figure["sync"], figure["background"], figure["projected"]
    cost = figure["flex"]["cost_ratio"]
    failed = len(figure["failed_jobs"])
    return (
        f"slot-seconds per job **{bg['slot_s_per_job']:.2f}** in background vs {sync['slot_s_per_job']:.1f} held "
        f"synchronously (ratio {figure['slot_ratio']:.4f}; for 5-minute thinks **{projected['slot_ratio']:.5f}**); "
        f"instance-seconds per job {bg['instance_s_per_job']:.2f} vs {sync['instance_s_per_job']:.2f} "
        f"(5 min: {projected['instance_ratio']:.5f}); **{figure['polls_per_job']:.1f}** polls per job "
        f"({figure['polls_at_full_scale']} at 5 min, shipped settings); flex cost ÷ default "
        + (f"**{cost:.2f}**" if cost is not None else "unavailable (no flex or default answers)")
        + (f"; **{failed}** failed" if failed else "")
    )


def rows(report: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """The bench table's row for this figure (``bench/report.py`` lists it)."""
    f = report["responses"]
    figure = (
        f"Responses API, {f['jobs_per_side']} jobs thinking {f['think_s_at_full_scale'] / 60:g} min each, "
        f"background vs synchronous (time scaled x{f['scale']:g}: {f['think_s']:g} s thinks, polls "
        f"{f['poll_s'][0]}–{f['poll_s'][1]} s); flex vs default tier"
    )
    return [("10", figure, describe(f), "", "")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.responses", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "out" / "responses")
    args = parser.parse_args(argv)
    from emulators import netguard
    from emulators.stack import environment

    cert_dir = environment.trust_local_certificate()
    netguard.install()
    from emulators.stack.services import start_local_azure

    args.workdir.mkdir(parents=True, exist_ok=True)
    with start_local_azure(args.workdir, cert_dir) as stack:
        figure = asyncio.run(responses_figure(stack, args.scale, args.workdir / "logs"))
    print(json.dumps(figure, indent=2))
    print(describe(figure))
    return 0


if __name__ == "__main__":
    sys.exit(main())
