"""The batch lane at size and as deployed: 1,000 jobs through it against the live lane's answers, and the
app's own timers in the local host process (queue trigger stages, the submit and collect timers run on
their NCRONTAB schedules)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from bench.batch_lane import batch_lane as bench_batch_lane
from bench.batch_lane import describe as describe_batch_lane
from emulators.stack.services import DEPLOYMENT, LocalAzure, OpenAIEmulator
from emulators.stack.workers import Jobs, WorkerHost, wait_until
from tests.worker.test_batch_lane import BATCH_DEPLOYMENT, BatchWorld, _world, answer

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture
async def dev_world(
    local_dev_settings: dict[str, str], aoai: OpenAIEmulator, jobs_for: Callable[[dict[str, str]], Awaitable[Jobs]]
) -> AsyncIterator[BatchWorld]:
    """The batch lane on a laptop's settings (Azurite's connection string: the quickest for 1,000 jobs)."""
    async for made in _world(local_dev_settings, aoai, jobs_for):
        yield made


def thousand() -> list[dict[str, Any]]:
    """1,000 different jobs: prompts and chats, budgets, efforts, JSON output, metadata."""
    jobs: list[dict[str, Any]] = []
    for i in range(1000):
        body: dict[str, Any] = {"id": f"k{i:04d}", "metadata": {"n": i}}
        if i % 4 == 1:
            body["messages"] = [{"role": "user", "content": f"Chat {i}"}]
            body["system"] = "Answer briefly."
        else:
            body["prompt"] = f"Question number {i}: what is {i} squared?"
        if i % 5 == 2:
            body["parameters"] = {"max_completion_tokens": 300 + i, "reasoning_effort": "low"}
        if i % 50 == 7:
            body["parameters"] = {"response_format": {"type": "json_object"}}
        if i % 97 == 3:
            body["parameters"] = {"reasoning_effort": "high", "max_completion_tokens": 100}  # the empty-output trap
        jobs.append(body)
    return jobs


@pytest.mark.slow(seconds=35)
@pytest.mark.timeout(300)  # CPU-bound: on a busy 2-core machine, beside other workers, it can take minutes
async def test_a_thousand_batch_jobs_give_the_live_lanes_results(dev_world: BatchWorld) -> None:
    world, inputs = dev_world, thousand()
    began = time.monotonic()
    assert await world.deliver(*({**body, "lane": "batch"} for body in inputs)) == [None] * 1000
    submitted = await world.submit()
    assert (submitted.claimed, len(submitted.submitted)) == (1000, 1)  # one file: under 50,000 requests, 200 MB
    collected = await world.collect()
    assert (collected.written, collected.polled) == (1000, 1)
    batch_seconds = time.monotonic() - began
    live = [{**body, "id": f"{body['id']}-live", "deployment": BATCH_DEPLOYMENT} for body in inputs]
    await world.deliver(*live)
    results = await world.jobs.results()
    assert len(results) == 2000
    compared = ("status", "output", "output_json", "finish_reason", "usage", "model", "metadata", "error")
    differ = [
        body["id"]
        for body in inputs
        if {k: results[body["id"]].get(k) for k in compared}
        != {k: results[f"{body['id']}-live"].get(k) for k in compared}
    ]
    assert differ == []
    assert {results[body["id"]]["lane"] for body in inputs} == {"batch"}
    statuses = [results[body["id"]]["status"] for body in inputs]
    assert statuses.count("failed") == sum(1 for i in range(1000) if i % 97 == 3)  # only the budget traps
    assert results["k0000"]["output"] == answer("Question number 0: what is 0 squared?")
    # Model API calls: one upload, one file status read (processed at once here), one create, one poll, two
    # file reads, three deletes (live: 1,000).
    by_route = world.batch_stats()["by_route"]
    batch_calls = sum(count for route, count in by_route.items() if "/files" in route or "/batches" in route)
    assert batch_calls == 9, by_route
    assert await world.staged() == {} and await world.manifests() == []
    print(f"\n1,000 batch-lane jobs staged, submitted and collected in {batch_seconds:.1f} s")


async def test_the_apps_timers_run_the_lane_in_the_host(
    keyless_settings: dict[str, str],
    aoai: OpenAIEmulator,
    jobs_for: Callable[[dict[str, str]], Awaitable[Jobs]],
    start_host: Callable[..., WorkerHost],
) -> None:
    fast = {"BATCH_SUBMIT_SCHEDULE": "*/2 * * * * *", "BATCH_COLLECT_SCHEDULE": "1/2 * * * * *"}
    async for world in _world(keyless_settings, aoai, jobs_for, **fast):
        replies = world.settings["REPLY_QUEUES_ALLOWED"]
        await world.jobs.send(
            *({"id": f"h{i}", "prompt": f"Through the host {i}", "lane": "batch"} for i in range(5)),
            {"id": "h-live", "prompt": "And one live"},
            {"id": "h-reply", "prompt": "Tell me", "lane": "batch", "reply_to": replies},
        )
        host = start_host(world.settings)
        results = await world.jobs.wait_for(7, host=host, timeout=90)
        assert {job_id: r["status"] for job_id, r in results.items()} == dict.fromkeys(results, "succeeded")
        assert results["h3"]["output"] == answer("Through the host 3")
        assert results["h-live"]["output"] == answer("And one live", DEPLOYMENT) and "lane" not in results["h-live"]
        assert {results[f"h{i}"]["lane"] for i in range(5)} == {"batch"}
        notice = [json.loads(m.content) async for m in world.jobs.queues.get_queue_client(replies).receive_messages()]
        assert [n["id"] for n in notice] == ["h-reply"]

        async def logged(host: WorkerHost = host) -> bool:  # the collect tick logs after the results it wrote
            log = host.log()
            return "staged for the batch lane" in log and "batch collect:" in log

        await wait_until(logged, what="the lane's log lines", host=host, timeout=30)


async def test_the_bench_figure_counts_model_calls_and_prices_tokens(stack: LocalAzure) -> None:
    figure = await bench_batch_lane(stack, 20)
    assert (figure["jobs"], figure["results"], figure["batches"]) == (20, 20, 1)
    kinds = figure["batch_calls_by_kind"]
    assert (kinds["uploads"], kinds["batch_creates"], kinds["file_reads"], kinds["file_deletes"]) == (1, 1, 2, 3)
    assert kinds["polls"] == figure["collect_ticks"] >= 1  # one poll a tick until the batch ends
    assert kinds["file_polls"] >= 2  # the emulator's default: a new upload reads pending for a second
    assert figure["model_api_calls"] == {"batch_lane": 7 + kinds["polls"] + kinds["file_polls"], "live_lane": 20}
    assert figure["tokens"]["batch_lane"] == figure["tokens"]["live_lane"]  # the same requests, the same tokens
    assert figure["billed_batch_over_live"] == 0.5
    assert "tokens billed at batch price ÷ live price **0.50**" in describe_batch_lane(figure)
