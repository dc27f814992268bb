"""The deployment pool and the outage policy end to end: the local queue host running function_app.py, the
real openai SDK with an `az login` token, Azurite, and two Azure OpenAI emulators standing in for two
regions' resources (one token serves both)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from emulators.aoai.state import RecordedRequest
from emulators.stack import services
from emulators.stack.services import DEPLOYMENT, OpenAIEmulator
from emulators.stack.workers import Jobs, WorkerHost, wait_until
from emulators.tokens import TokenIssuer
from shared.routing import OPEN_BASE, OPEN_MAX

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def west(issuer: TokenIssuer) -> Iterator[OpenAIEmulator]:
    """A second region's resource with the same deployment name."""
    with services.start_openai_emulator(issuer) as emulator:
        yield emulator


def pool(*regions: OpenAIEmulator) -> str:
    return json.dumps(
        [
            {"name": "chat", "endpoint": r.endpoint, "deployment": DEPLOYMENT, "priority": i + 1}
            for i, r in enumerate(regions)
        ]
    )


def job(i: int) -> dict[str, Any]:
    return {"id": f"pool-{i:03d}", "prompt": f"Question {i}?", "parameters": {"max_completion_tokens": 2000}}


async def served_by(jobs: Jobs, ids: list[str], host: WorkerHost, *, stored: int) -> dict[str, int]:
    """Which endpoints answered ``ids``, once ``stored`` results in all are there."""
    results = await jobs.wait_for(stored, host=host, timeout=120)
    picked = [results[i] for i in ids]
    assert all(r["status"] == "succeeded" for r in picked), [r.get("error") for r in picked]
    counts: dict[str, int] = {}
    for r in picked:
        counts[r["endpoint"]] = counts.get(r["endpoint"], 0) + 1
    return counts


def half_open_by(failures: list[RecordedRequest]) -> float:
    """When the primary's circuit (shared/routing.py) is half-open at the latest, from the failures the emulator
    recorded while it was down (the host's circuit is its own; this bounds it from what reached the service).

    A circuit (re)opens on a failed call, so at the last failure at the latest, for ``OPEN_BASE`` doubled per
    re-opening (at most ``OPEN_MAX``). Only a half-open probe re-opens it, and a probe goes out ``OPEN_BASE`` or
    more after the first failure: counting every later failure as one errs long, never short. The margin covers
    the host noticing the last failure after the emulator answered it."""
    first, last = failures[0], failures[-1]
    reopenings = sum(1 for r in failures if r.began >= first.began + OPEN_BASE)
    return last.ended + min(OPEN_BASE * 2**reopenings, OPEN_MAX) + 2.0


@pytest.mark.slow(seconds=15)
async def test_failover_to_the_second_region_and_back_once_the_first_recovers(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator, west: OpenAIEmulator
) -> None:
    west.reset()
    settings = {**local_dev_settings, "AZURE_OPENAI_POOL": pool(aoai, west), "AZURE_OPENAI_DEPLOYMENT": "chat"}
    aoai.fail_deployment(DEPLOYMENT, 3600)  # down until the test ends it, however long the host takes to start
    jobs = await jobs_for(settings)
    first = [job(i) for i in range(20)]
    await jobs.send(*first)
    host = start_host(settings)
    during = await served_by(jobs, [b["id"] for b in first], host, stored=20)
    aoai.restore_deployment(DEPLOYMENT)  # the outage ends now, with every job of the first batch answered
    assert during == {west.endpoint: 20}, during  # the primary was down throughout: the second region answered
    assert west.stats()["completions"] == during[west.endpoint]
    failures = aoai.requests(DEPLOYMENT)
    assert failures and {r.status for r in failures} == {"503"}, failures  # what reached the primary failed
    await asyncio.sleep(max(0.0, half_open_by(failures) - time.time()))  # the circuit's open time past
    probe = job(20)
    await jobs.send(probe)
    assert await served_by(jobs, [probe["id"]], host, stored=21) == {aoai.endpoint: 1}  # the half-open probe
    rest = [job(i) for i in range(21, 31)]
    await jobs.send(*rest)
    after = await served_by(jobs, [b["id"] for b in rest], host, stored=31)
    assert after == {aoai.endpoint: 10}, after  # back on the primary: its circuit closed
    assert await jobs.poison_count() == 0


@pytest.mark.timeout(300)  # a minute of outage, then re-enqueue delays of up to 40 s
@pytest.mark.slow(seconds=180)
async def test_a_60_s_outage_of_the_only_deployment_ends_with_every_job_succeeded(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    aoai.fail_deployment(DEPLOYMENT, 3600)  # until the worker's first call, then 60 s from it (below)
    jobs = await jobs_for(local_dev_settings)
    bodies = [job(i) for i in range(24)]
    await jobs.send(*bodies)
    host = start_host(local_dev_settings)

    async def first_failure() -> RecordedRequest | None:
        return next(iter(aoai.requests(DEPLOYMENT)), None)

    hit = await wait_until(first_failure, what="the worker's first call", host=host)
    aoai.update_deployment(DEPLOYMENT, outage={"mode": "503", "until": hit.began + 60})  # however slow the start
    results = await jobs.wait_for(len(bodies), host=host, timeout=240)
    assert all(r["status"] == "succeeded" for r in results.values()), [r.get("error") for r in results.values()]
    stats = aoai.stats()
    # Every job answered once, and the host's few-token probe that found the deployment back (shared/recovery.py)
    # if no job's call found it first.
    assert stats["completions"] - len(bodies) in (0, 1) and stats["by_status"].get("503", 0) > 0
    assert stats["requests"] < 10 * len(bodies)  # the open circuit kept jobs from calling during the outage
    assert await jobs.poison_count() == 0
    assert "re-enqueued (outage" in host.log()
