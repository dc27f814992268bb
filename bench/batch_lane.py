"""The batch lane's figure: 1,000 jobs through it, against the same 1,000 through the live lane.

Both lanes run in this process with the app's own code (the queue trigger's ``worker.handle``, the
submit and collect timers' functions) against keyless Azurite and the Azure OpenAI emulator, and
every number comes from the emulator's own counters:

- model API calls: the batch lane's Files and Batches calls (upload, the file's status read until it is
  processed, create, one poll per collect tick until the batch ends, the output and error files read,
  three deletes) against the live lane's chat completions (one per job);
- tokens billed at the batch price over the live price: each lane's prompt + completion tokens
  (reasoning included, as Azure bills them), the batch lane's at ``BATCH_PRICE_FACTOR`` of the live
  price. Global Batch costs 50 % of Global Standard, input and output alike, so the ratio is 0.5 when
  both lanes spend the same tokens on the same requests, which the run checks rather than assumes.

``python -m bench.batch_lane [--jobs N]`` prints the figure alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when used: ``main`` must trust the local certificate before aiohttp is imported
    from emulators.stack.services import LocalAzure

BATCH_JOBS = {"full": 1000, "smoke": 10}
BATCH_PRICE_FACTOR = 0.5  # Global Batch: 50 % of the Global Standard price (shared/facts-operations.md, section 4)
PROCESSING_S = 2.0  # how long the emulator takes over a batch
COLLECT_EVERY_S = 0.5  # collect ticks (Azure: once a minute, so one poll per minute a batch runs)
BATCH_ROUTES = ("/openai/v1/files", "/openai/v1/batches")


@dataclass
class _Message:
    """A queue message as the host hands it to the queue trigger."""

    body: bytes
    id: str
    dequeue_count: int = 1
    insertion_time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def get_body(self) -> bytes:
        return self.body


def _bodies(jobs: int) -> list[dict[str, Any]]:
    """Short questions on the default (reasoning) model at low effort, a few with a JSON answer."""
    bodies = []
    for i in range(jobs):
        body: dict[str, Any] = {"id": f"lane-{i:05d}", "prompt": f"Classify ticket {i:05d} in one word."}
        body["parameters"] = {"reasoning_effort": "low", "max_completion_tokens": 400}
        if i % 10 == 0:
            body["parameters"]["response_format"] = {"type": "json_object"}
        bodies.append(body)
    return bodies


async def _deliver(runtime: Any, bodies: list[dict[str, Any]], concurrency: int = 16) -> None:
    from shared import worker

    gate = asyncio.Semaphore(concurrency)

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            await worker.handle(_Message(json.dumps(body).encode(), id=f"m-{body['id']}"), runtime)

    await asyncio.gather(*(one(body) for body in bodies))


def _calls(before: dict[str, Any], after: dict[str, Any]) -> Counter[str]:
    """Batch-lane API calls between two stats snapshots, by route."""
    routes = Counter(after["by_route"]) - Counter(before["by_route"])
    return Counter({route: n for route, n in routes.items() if any(part in route for part in BATCH_ROUTES)})


def _kinds(calls: Counter[str]) -> dict[str, int]:
    kinds: Counter[str] = Counter()
    for route, n in calls.items():
        method, path = route.split(" ", 1)
        if path.endswith("/content"):
            kinds["file_reads"] += n
        elif method == "DELETE":
            kinds["file_deletes"] += n
        elif method == "POST" and path.endswith("/files"):
            kinds["uploads"] += n
        elif method == "POST" and path.endswith("/batches"):
            kinds["batch_creates"] += n
        elif method == "GET" and "{batch_id}" in path:
            kinds["polls"] += n
        elif method == "GET" and "{file_id}" in path:
            kinds["file_polls"] += n  # a new upload's status, read until the service has processed it
        else:
            kinds["other"] += n
    return dict(kinds)


async def batch_lane(stack: LocalAzure, jobs: int) -> dict[str, Any]:
    """The figure for ``jobs`` jobs (see the module docstring)."""
    from emulators.aoai.models import model_for
    from emulators.stack.environment import patched_environ
    from emulators.stack.services import DEPLOYMENT, unique_names
    from shared import batch
    from shared.connections import Runtime

    batch_deployment = f"{DEPLOYMENT}-batch"
    stack.configure_model()
    stack.model.add_batch_deployment(batch_deployment, model=model_for(DEPLOYMENT))
    stack.model.configure_batches(processing_seconds=PROCESSING_S)
    names = unique_names("lane")
    settings = {
        **stack.managed_identity_settings(names),
        "BATCH_DEPLOYMENT": batch_deployment,
        "STAGING_CONTAINER": names["RESULTS_CONTAINER"].replace("results-", "staging-"),
        # The emulator answers live calls on the batch deployment too: both lanes then send the same requests.
        "AZURE_OPENAI_ALLOWED_DEPLOYMENTS": f"{DEPLOYMENT},{batch_deployment}",
    }
    bodies = _bodies(jobs)
    with patched_environ(settings):
        runtime = Runtime.from_env(settings)
        try:
            began = time.monotonic()
            await _deliver(runtime, [{**body, "lane": "batch"} for body in bodies])
            before = stack.model_stats()
            submitted = await batch.submit(runtime)
            ticks, written = 0, 0
            while written < jobs and ticks < 120:
                await asyncio.sleep(COLLECT_EVERY_S)
                ticks += 1
                written += (await batch.collect(runtime)).written
            after = stack.model_stats()
            batch_seconds = time.monotonic() - began
            live_before = stack.model_stats()
            await _deliver(
                runtime, [{**body, "id": f"{body['id']}-live", "deployment": batch_deployment} for body in bodies]
            )
            live_after = stack.model_stats()
        finally:
            await runtime.close()
    calls = _calls(before, after)
    answered = {k: after["batch"][k] - before["batch"][k] for k in ("prompt_tokens", "completion_tokens")}
    live_tokens = {k: live_after[k] - live_before[k] for k in ("prompt_tokens", "completion_tokens")}
    batch_total, live_total = sum(answered.values()), sum(live_tokens.values())
    live_calls = live_after["completions"] - live_before["completions"]
    return {
        "jobs": jobs,
        "batches": len(submitted.submitted),
        "results": written,
        "collect_ticks": ticks,
        "model_api_calls": {"batch_lane": sum(calls.values()), "live_lane": live_calls},
        "batch_calls_by_kind": _kinds(calls),
        "live_calls_per_batch_call": live_calls / max(sum(calls.values()), 1),
        "tokens": {"batch_lane": answered, "live_lane": live_tokens},
        "batch_price_factor": BATCH_PRICE_FACTOR,
        "billed_batch_over_live": BATCH_PRICE_FACTOR * batch_total / live_total if live_total else None,
        "seconds": round(batch_seconds, 1),
        "processing_s": PROCESSING_S,
        "collect_every_s": COLLECT_EVERY_S,
    }


def describe(figure: dict[str, Any]) -> str:
    """One line: the wording of docs/bench.md and results.md."""
    kinds = figure["batch_calls_by_kind"]
    parts = ", ".join(
        f"{kinds.get(k, 0)} {label}"
        for k, label in (
            ("uploads", "upload"),
            ("file_polls", "file status reads"),
            ("batch_creates", "create"),
            ("polls", "polls"),
            ("file_reads", "file reads"),
            ("file_deletes", "deletes"),
        )
    )
    calls = figure["model_api_calls"]
    return (
        f"**{calls['batch_lane']}** model API calls ({parts}) vs **{calls['live_lane']}** in the live lane; "
        f"tokens billed at batch price ÷ live price **{figure['billed_batch_over_live']:.2f}**"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_lane", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=BATCH_JOBS["full"])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "out" / "batch-lane")
    args = parser.parse_args(argv)
    from emulators import netguard
    from emulators.stack import environment

    cert_dir = environment.trust_local_certificate()
    netguard.install()
    from emulators.stack.services import start_local_azure

    args.workdir.mkdir(parents=True, exist_ok=True)
    with start_local_azure(args.workdir, cert_dir) as stack:
        figure = asyncio.run(batch_lane(stack, args.jobs))
    print(json.dumps(figure, indent=2))
    print(describe(figure))
    return 0


if __name__ == "__main__":
    sys.exit(main())
