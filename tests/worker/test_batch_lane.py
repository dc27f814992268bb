"""The batch lane through the real SDKs: the queue trigger's ``worker.handle`` stages into Azurite, the
submit and collect timers' functions talk to the Azure OpenAI emulator's Files and Batches APIs with
the worker's own credential and v1 client, in this process (no host: each step is called, so a crash
can be put exactly between two of them).

A crash is ``Crash``, a BaseException the code under test never catches: the step stops there, holding
whatever it held (a manifest's lock), as a process that dies would; ``expire_locks`` then lets time pass.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from emulators.aoai import answer_for
from emulators.aoai.models import model_for
from emulators.stack.services import DEPLOYMENT, OpenAIEmulator
from emulators.stack.workers import Jobs
from shared import batch, worker
from shared.batch import collector, records
from shared.connections import Runtime
from shared.delivery import Delivery
from shared.jobs import Result
from tests.worker.fakes import Message

BATCH_DEPLOYMENT = "gpt-5.4-mini-batch"  # a GlobalBatch deployment of the same model as the live default


class Crash(BaseException):
    """The process dies here (never caught by the code under test)."""


@dataclass
class BatchWorld:
    runtime: Runtime
    aoai: OpenAIEmulator
    jobs: Jobs
    settings: dict[str, str]

    async def deliver(self, *bodies: dict[str, Any], concurrency: int = 16) -> list[Result | None]:
        """Each body as one queue message through the queue trigger's code (``worker.handle``)."""
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int, body: dict[str, Any]) -> Result | None:
            async with gate:
                return await worker.handle(Message(json.dumps(body).encode(), id=f"msg-{index}"), self.runtime)

        return list(await asyncio.gather(*(one(i, body) for i, body in enumerate(bodies))))

    async def submit(self) -> batch.SubmitReport:
        return await batch.submit(self.runtime)

    async def collect(self) -> batch.CollectReport:
        return await batch.collect(self.runtime)

    async def staged(self) -> dict[str, dict[str, str]]:
        """Staged job id -> its blob metadata (claim, restage count...; its token estimate left out)."""
        listed = await batch.list_staged(batch.staging(self.runtime))
        return {job.job_id: {k: v for k, v in job.metadata.items() if k != records.TOKENS} for job in listed}

    async def manifests(self) -> list[batch.Manifest]:
        return [held.manifest for held in await batch.list_manifests(batch.staging(self.runtime))]

    async def expire_locks(self) -> None:
        """Let every manifest's lock run out, as time would after its holder died."""
        container = batch.staging(self.runtime)
        past = datetime.now(UTC) - timedelta(seconds=1)
        for held in await batch.list_manifests(container):
            if held.manifest.lock_until is not None:
                await records.save(container, held, lock_until=past)

    def batch_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.aoai.stats()
        return stats

    def calls(self, route: str) -> int:
        return int(self.batch_stats()["by_route"].get(route, 0))


def job(job_id: str, prompt: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "prompt": prompt or f"Question {job_id}?", "lane": "batch", **fields}


def answer(prompt: str, deployment: str = BATCH_DEPLOYMENT) -> str:
    return answer_for([{"role": "user", "content": prompt}], deployment)


@pytest_asyncio.fixture
async def world(
    keyless_settings: dict[str, str], aoai: OpenAIEmulator, jobs_for: Callable[[dict[str, str]], Awaitable[Jobs]]
) -> AsyncIterator[BatchWorld]:
    """A keyless worker (managed identity, HTTPS + OAuth Azurite) with the batch lane on."""
    async for made in _world(keyless_settings, aoai, jobs_for):
        yield made


async def _world(
    settings: dict[str, str], aoai: OpenAIEmulator, jobs_for: Callable[[dict[str, str]], Awaitable[Jobs]], **extra: str
) -> AsyncIterator[BatchWorld]:
    aoai.add_batch_deployment(BATCH_DEPLOYMENT, model=model_for(DEPLOYMENT))
    # An upload is processed and a batch completes as soon as they are read (tests of waiting set their own times).
    aoai.configure_batches(processing_seconds=0, file_processing_seconds=0)
    settings = {
        **settings,
        "BATCH_DEPLOYMENT": BATCH_DEPLOYMENT,
        "STAGING_CONTAINER": settings["RESULTS_CONTAINER"].replace("results-", "staging-"),
        # Live jobs may name the batch deployment too: the emulator answers both lanes on it, so their
        # outputs can be compared (Azure would refuse a live call on a GlobalBatch deployment).
        "AZURE_OPENAI_ALLOWED_DEPLOYMENTS": f"{settings['AZURE_OPENAI_ALLOWED_DEPLOYMENTS']},{BATCH_DEPLOYMENT}",
        **extra,
    }
    jobs = await jobs_for(settings)
    runtime = Runtime.from_env(settings)
    try:
        yield BatchWorld(runtime, aoai, jobs, settings)
    finally:
        await runtime.close()


async def test_batch_jobs_are_staged_submitted_and_collected_into_live_results(world: BatchWorld) -> None:
    replies = world.settings["REPLY_QUEUES_ALLOWED"]
    schema = {"name": "place", "schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    inputs = [
        {"id": "plain", "prompt": "Why keyless?", "metadata": {"ticket": 42}, "reply_to": replies},
        {"id": "chat", "system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}]},
        {
            "id": "json",
            "prompt": "A city.",
            "parameters": {"response_format": {"type": "json_schema", "json_schema": schema}},
        },
        {
            "id": "trap",
            "prompt": "Think hard.",
            "parameters": {"reasoning_effort": "high", "max_completion_tokens": 200},
        },
        {"id": "budget", "prompt": "Old name.", "parameters": {"max_tokens": 900, "reasoning_effort": "low"}},
        {"id": "refused", "prompt": "Stop early.", "parameters": {"stop": "x"}},  # a reasoning model refuses stop
    ]
    staged = await world.deliver(*({**body, "lane": "batch"} for body in inputs))
    assert staged == [None] * len(inputs)  # consumed: nothing to return yet
    assert await world.deliver({**inputs[0], "lane": "batch"}) == [None]  # a redelivery changes nothing
    assert set(await world.staged()) == {body["id"] for body in inputs}
    assert world.batch_stats()["completions"] == 0  # no model call while staging

    submitted = await world.submit()
    assert (submitted.manifests, submitted.claimed, submitted.uploads, len(submitted.submitted)) == (1, 6, 1, 1)
    assert await world.submit() == batch.SubmitReport()  # nothing new: nothing done
    (manifest,) = await world.manifests()
    assert (manifest.state, manifest.batch_id, sorted(manifest.job_ids)) == (
        "submitted",
        submitted.submitted[0],
        sorted(body["id"] for body in inputs),
    )

    collected = await world.collect()
    assert (collected.collected, collected.written) == (submitted.submitted, 6)
    assert await world.staged() == {} and await world.manifests() == []
    assert world.batch_stats()["batch"]["files"] == 0  # input, output and error files deleted

    # The same jobs through the live lane, on the same deployment (see _world): the same answers.
    live = await world.deliver(
        *({**body, "id": f"{body['id']}-live", "deployment": BATCH_DEPLOYMENT} for body in inputs)
    )
    assert all(result is not None for result in live)
    results = await world.jobs.results()
    compared = ("status", "output", "output_json", "finish_reason", "usage", "model", "metadata")
    for body in inputs:
        batch_result, live_result = results[body["id"]], results[f"{body['id']}-live"]
        assert {k: batch_result.get(k) for k in compared} == {k: live_result.get(k) for k in compared}, body["id"]
        assert batch_result["lane"] == "batch" and "lane" not in live_result
        assert batch_result["deployment"] == BATCH_DEPLOYMENT
        timings = batch_result["timings"]
        assert timings["batch_seconds"] >= 0 and timings["started_at"] <= timings["finished_at"]
    assert results["plain"]["output"] == answer("Why keyless?")
    assert results["json"]["output_json"] == {}  # the schema requires nothing
    assert results["trap"]["error"]["code"] == "output_budget_exhausted"
    assert results["refused"]["error"]["code"] == "unsupported_parameter"
    assert live[5] is not None and live[5].error is not None and live[5].error.code == "unsupported_parameter"
    notices = [json.loads(m.content) async for m in world.jobs.queues.get_queue_client(replies).receive_messages()]
    assert sorted((n["id"], n["status"]) for n in notices) == [("plain", "succeeded"), ("plain-live", "succeeded")]
    assert await world.deliver({**inputs[1], "lane": "batch"}) == [None]  # finished: consumed, not staged again
    assert await world.staged() == {}


async def test_with_the_lane_off_a_batch_job_fails_at_once(
    keyless_settings: dict[str, str], aoai: OpenAIEmulator, jobs_for: Callable[[dict[str, str]], Awaitable[Jobs]]
) -> None:
    async for off in _world(keyless_settings, aoai, jobs_for, BATCH_DEPLOYMENT=""):
        (result,) = await off.deliver(job("off"))
        assert result is not None and result.error is not None
        assert (result.status, result.error.code, result.lane) == ("failed", "batch_lane_off", "batch")
        assert "BATCH_DEPLOYMENT" in result.error.message
        assert await off.staged() == {}
        assert await off.submit() == batch.SubmitReport() and await off.collect() == batch.CollectReport()
        refused = await off.deliver(job("streamed", parameters={"stream": True}))
        assert refused[0] is not None and refused[0].error is not None
        assert refused[0].error.code == "batch_parameter_not_allowed"


async def test_an_id_finished_meanwhile_is_not_submitted(world: BatchWorld) -> None:
    await world.deliver(job("done-live"), job("waiting"))
    # The producer sends the same id live and it is answered before the next submit.
    (live,) = await world.deliver({"id": "done-live", "prompt": "Now, please."})
    assert live is not None and live.status == "succeeded"
    submitted = await world.submit()
    assert (submitted.claimed, submitted.skipped_finished) == (1, 1)
    assert await world.staged() == {"waiting": {"manifest": (await world.manifests())[0].id}}
    assert (await world.collect()).written == 1
    results = await world.jobs.results()
    assert results["done-live"]["output"] == answer("Now, please.", DEPLOYMENT) and "lane" not in results["done-live"]


def crash_after(patch: pytest.MonkeyPatch, target: Any, name: str, *, calls: int = 1) -> list[Any]:
    """Make ``target.name`` do its work, then crash, on its first ``calls`` calls; returns what they returned."""
    real, done = getattr(target, name), []

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        value = await real(*args, **kwargs)
        if len(done) < calls:
            done.append(value)
            raise Crash(f"{name} done, then the process died")
        return value

    patch.setattr(target, name, wrapper)
    return done


def crash_before(patch: pytest.MonkeyPatch, target: Any, name: str) -> None:
    """Make ``target.name`` crash before doing anything, once."""
    real, crashed = getattr(target, name), []

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not crashed:
            crashed.append(True)
            raise Crash(f"died before {name}")
        return await real(*args, **kwargs)

    patch.setattr(target, name, wrapper)


async def submit_crashing(world: BatchWorld) -> None:
    with pytest.raises(Crash):
        await world.submit()


async def test_a_crash_after_upload_reuses_the_uploaded_file(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.deliver(*(job(f"u{i}") for i in range(5)))
    uploaded = crash_after(monkeypatch, world.runtime.openai.files, "create")
    await submit_crashing(world)
    (manifest,) = await world.manifests()
    assert (manifest.state, manifest.file_id, len(uploaded)) == ("claimed", None, 1)  # uploaded, not recorded
    assert (await world.submit()).busy == 1  # its holder's lock still runs: nobody takes it over yet
    await world.expire_locks()
    resumed = await world.submit()
    assert (resumed.resumed, resumed.reused_uploads, resumed.uploads, len(resumed.submitted)) == (1, 1, 0, 1)
    assert (await world.manifests())[0].file_id == uploaded[0].id
    assert world.calls("POST /openai/v1/files") == 1 and world.calls("POST /openai/v1/batches") == 1
    assert (await world.collect()).written == 5
    assert len(await world.jobs.results()) == 5


async def test_copies_of_a_crashed_upload_are_found_one_kept_the_others_deleted(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.deliver(*(job(f"o{i}") for i in range(3)))
    uploaded = crash_after(monkeypatch, world.runtime.openai.files, "create")
    await submit_crashing(world)
    (manifest,) = await world.manifests()
    # A second copy under the same name: the same upload by a holder that stalled, landing late.
    content = await (await world.runtime.openai.files.content(uploaded[0].id)).aread()
    late = await world.runtime.openai.files.create(file=(manifest.file_name, content), purpose="batch")
    await world.expire_locks()
    resumed = await world.submit()
    assert (resumed.reused_uploads, resumed.uploads, len(resumed.submitted)) == (1, 0, 1)
    assert world.calls("DELETE /openai/v1/files/{file_id}") == 1  # the other copy, an orphan
    assert (await world.manifests())[0].file_id in {uploaded[0].id, late.id}
    assert (await world.collect()).written == 3
    assert world.batch_stats()["batch"]["files"] == 0


async def test_a_holder_that_lost_its_manifest_mid_upload_deletes_its_file(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.deliver(*(job(f"l{i}") for i in range(3)))
    files = world.runtime.openai.files
    real = files.create

    async def stalls_past_its_lock(*args: Any, **kwargs: Any) -> Any:
        uploaded = await real(*args, **kwargs)
        container = batch.staging(world.runtime)
        (held,) = await batch.list_manifests(container)  # meanwhile another instance took the manifest over
        await records.save(container, held, owner="another-instance")
        return uploaded

    monkeypatch.setattr(files, "create", stalls_past_its_lock)
    stalled = await world.submit()
    monkeypatch.undo()
    assert (stalled.uploads, stalled.submitted) == (1, [])
    assert world.calls("DELETE /openai/v1/files/{file_id}") == 1  # its late upload: an orphan, deleted
    (manifest,) = await world.manifests()
    assert (manifest.state, manifest.owner) == ("claimed", "another-instance")


async def test_a_crash_before_batch_creation_creates_it_once(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.deliver(*(job(f"b{i}") for i in range(4)))
    crash_before(monkeypatch, world.runtime.openai.batches, "create")
    await submit_crashing(world)
    assert (await world.manifests())[0].state == "processed"
    await world.expire_locks()
    resumed = await world.submit()
    assert (resumed.reused_uploads, resumed.uploads, len(resumed.submitted)) == (0, 0, 1)
    assert world.calls("POST /openai/v1/batches") == 1
    assert (await world.collect()).written == 4


async def test_a_crash_right_after_batch_creation_adopts_the_batch(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.deliver(*(job(f"c{i}") for i in range(4)))
    created = crash_after(monkeypatch, world.runtime.openai.batches, "create")
    await submit_crashing(world)
    (manifest,) = await world.manifests()
    assert (manifest.state, manifest.batch_id) == ("processed", None)  # created, not recorded
    await world.expire_locks()
    resumed = await world.submit()
    assert resumed.submitted == [created[0].id]  # found by its input file, not created again
    assert world.calls("POST /openai/v1/batches") == 1 and world.calls("POST /openai/v1/files") == 1
    collected = await world.collect()
    assert (collected.collected, collected.written) == ([created[0].id], 4)


async def test_a_crash_between_completion_and_results_loses_and_duplicates_nothing(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    replies = world.settings["REPLY_QUEUES_ALLOWED"]
    await world.deliver(*(job(f"r{i}", reply_to=replies) for i in range(40)))
    await world.submit()
    finish = collector.finish
    stored: list[str] = []

    async def dies_after_ten(delivery: Delivery, **kwargs: Any) -> Result | None:
        if len(stored) >= 10:
            raise Crash("died while writing results")
        stored.append(delivery.job_id)
        return await finish(delivery, **kwargs)

    monkeypatch.setattr(collector, "finish", dies_after_ten)
    with pytest.raises(Crash):
        await world.collect()
    monkeypatch.undo()
    assert len(await world.jobs.results()) == 10
    assert len(await world.staged()) == 30  # settled jobs left staging with their result
    etags = {name: blob.etag async for blob in world.jobs.results_container.list_blobs() for name in [blob.name]}
    assert (await world.collect()).busy == 1  # the dead collector's lock still runs
    await world.expire_locks()
    again = await world.collect()
    assert again.written == 30
    after = {blob.name: blob.etag async for blob in world.jobs.results_container.list_blobs()}
    assert all(after[name] == etag for name, etag in etags.items())  # the first ten were not written again
    results = await world.jobs.results()
    assert sorted(results) == sorted(f"r{i}" for i in range(40))
    assert all(r["status"] == "succeeded" and r["lane"] == "batch" for r in results.values())
    notices = [
        json.loads(m.content)
        async for m in world.jobs.queues.get_queue_client(replies).receive_messages(messages_per_page=32)
    ]
    assert sorted(n["id"] for n in notices) == sorted(f"r{i}" for i in range(40))  # each exactly once
    assert await world.staged() == {} and await world.manifests() == []


async def test_a_crash_after_a_result_before_its_staged_copy_goes(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.deliver(*(job(f"s{i}") for i in range(3)))
    await world.submit()
    crash_after(monkeypatch, records, "delete_staged")  # the first job's result is stored, its staged copy stays
    with pytest.raises(Crash):
        await world.collect()
    first = {blob.name: blob.etag async for blob in world.jobs.results_container.list_blobs()}
    assert len(first) == 3  # the first job's result, and (same chunk) the others'
    await world.expire_locks()
    again = await world.collect()
    assert again.written == 0  # every result was there: none written twice
    assert {blob.name: blob.etag async for blob in world.jobs.results_container.list_blobs()} == first
    assert await world.staged() == {}


async def test_failed_lines_become_failed_results_with_the_services_code(world: BatchWorld) -> None:
    world.aoai.configure_batches(fail_custom_ids=["broken"], fail_code="server_error")
    await world.deliver(job("fine"), job("broken"), job("filtered", "TRIGGER_PROMPT_FILTER please"))
    await world.submit()
    collected = await world.collect()
    assert collected.written == 3
    results = await world.jobs.results()
    assert results["fine"]["status"] == "succeeded"
    for job_id, code in (("broken", "server_error"), ("filtered", "content_filter")):
        result = results[job_id]
        assert (result["status"], result["error"]["code"], result["lane"]) == ("failed", code, "batch"), result
    assert results["broken"]["error"]["message"].startswith("the batch service refused this request")
    # A blocked prompt reads as live: the filter's categories, not just the service's code.
    assert results["filtered"]["error"]["message"].startswith("the prompt was blocked by Azure OpenAI's content filter")
    assert [f["category"] for f in results["filtered"]["error"]["content_filter"]] == ["hate"]  # the emulator's
    # A failed result is not final: the same id sent again runs again and replaces it.
    world.aoai.configure_batches(fail_custom_ids=[])
    await world.deliver(job("broken"))
    await world.submit()
    assert (await world.collect()).written == 1
    assert (await world.jobs.result("broken") or {})["status"] == "succeeded"


async def test_an_expired_batch_sends_its_unrun_jobs_back_once_then_fails_them(world: BatchWorld) -> None:
    world.aoai.configure_batches(processing_seconds=3600)  # still in progress until expired
    await world.deliver(*(job(f"e{i}") for i in range(5)))
    (first,) = (await world.submit()).submitted
    open_ = await world.collect()
    assert (open_.polled, open_.open, open_.collected) == (1, 1, [])
    world.aoai.expire_batch(first, done=2)
    collected = await world.collect()
    assert (collected.written, collected.restaged) == (2, 3)
    assert len(await world.jobs.results()) == 2
    staged = await world.staged()
    assert len(staged) == 3 and all(meta == {"restaged": "1"} for meta in staged.values())  # unclaimed, counted
    (second,) = (await world.submit()).submitted
    world.aoai.expire_batch(second, done=0)
    failed = await world.collect()
    assert (failed.written, failed.restaged, failed.failed_unrun) == (0, 0, 3)
    results = await world.jobs.results()
    unrun = [r for r in results.values() if r["status"] == "failed"]
    assert len(unrun) == 3 and {r["error"]["code"] for r in unrun} == {"batch_expired"}
    assert all(second in r["error"]["message"] and r["lane"] == "batch" for r in unrun)
    assert await world.staged() == {} and await world.manifests() == []
    assert world.batch_stats()["batch"]["files"] == 0


async def test_a_failed_batch_can_send_its_jobs_to_the_live_lane(
    keyless_settings: dict[str, str], aoai: OpenAIEmulator, jobs_for: Callable[[dict[str, str]], Awaitable[Jobs]]
) -> None:
    async for live_world in _world(keyless_settings, aoai, jobs_for, BATCH_ON_FAILURE="live"):
        aoai.configure_batches(processing_seconds=3600)
        big = "long " * 20_000  # over a queue message: sent to the live lane through the claim check
        await live_world.deliver(job("l1"), job("l2", big))
        (created,) = (await live_world.submit()).submitted
        aoai.fail_batch(created, code="server_error", message="The batch failed.")
        collected = await live_world.collect()
        assert (collected.to_live, collected.restaged, collected.failed_unrun) == (2, 0, 0)
        assert await live_world.staged() == {}
        messages = [m async for m in live_world.jobs.queue.receive_messages(messages_per_page=32)]
        references = [json.loads(m.content) for m in messages]
        assert sorted(r["id"] for r in references) == ["l1", "l2"] and all("payload" in r for r in references)
        for message in messages:  # what the live worker does with them
            await worker.handle(Message(message.content.encode(), id=message.id), live_world.runtime)
        results = await live_world.jobs.results()
        assert results["l2"]["output"] == answer(big, DEPLOYMENT)
        assert all(r["status"] == "succeeded" and "lane" not in r for r in results.values())


async def test_a_batch_refused_for_quota_waits_without_failing(world: BatchWorld) -> None:
    world.aoai.add_batch_deployment(BATCH_DEPLOYMENT, token_limit=5)  # less than one prompt
    await world.deliver(job("q1"), job("q2"))
    deferred = await world.submit()
    assert (deferred.uploads, deferred.submitted, deferred.deferred) == (1, [], 1)
    (manifest,) = await world.manifests()
    assert (manifest.state, manifest.owner) == ("processed", None)  # given back for the next tick
    assert manifest.quota_since is not None and manifest.errors == []  # when the wait began; nothing failed
    world.aoai.add_batch_deployment(BATCH_DEPLOYMENT, token_limit=None)
    resumed = await world.submit()
    assert (resumed.uploads, len(resumed.submitted)) == (0, 1)
    assert (await world.collect()).written == 2


async def test_a_refused_file_fails_its_batch_and_its_jobs_go_back_once(world: BatchWorld) -> None:
    world.aoai.configure_batches(fail_batches_code="invalid_request")  # every new batch fails validation
    await world.deliver(job("f1"))
    await world.submit()
    assert (await world.collect()).restaged == 1
    await world.submit()
    failed = await world.collect()
    assert failed.failed_unrun == 1
    result = await world.jobs.result("f1") or {}
    assert (result["status"], result["error"]["code"]) == ("failed", "batch_failed")
    assert "invalid_request" in result["error"]["message"]


async def test_jobs_are_split_into_files_within_the_request_limit(
    keyless_settings: dict[str, str], aoai: OpenAIEmulator, jobs_for: Callable[[dict[str, str]], Awaitable[Jobs]]
) -> None:
    async for small in _world(keyless_settings, aoai, jobs_for, BATCH_MAX_REQUESTS_PER_FILE="3"):
        await small.deliver(*(job(f"s{i}") for i in range(8)))
        submitted = await small.submit()
        assert (submitted.manifests, len(submitted.submitted), submitted.claimed) == (3, 3, 8)
        assert sorted(len(m.job_ids) for m in await small.manifests()) == [2, 3, 3]
        assert len((await small.collect()).collected) == 3
        assert len(await small.jobs.results()) == 8


async def test_two_submitters_racing_submit_each_job_once(world: BatchWorld) -> None:
    await world.deliver(*(job(f"t{i}") for i in range(60)))
    one, two = await asyncio.gather(world.submit(), world.submit())
    assert one.claimed + two.claimed == 60
    manifests = await world.manifests()
    held = [job_id for manifest in manifests for job_id in manifest.job_ids]
    assert sorted(held) == sorted(f"t{i}" for i in range(60))  # every job in exactly one manifest
    assert all(manifest.state == "submitted" for manifest in manifests)
    requests = sum(world.aoai.batch_snapshot(m.batch_id or "")["request_counts"]["total"] for m in manifests)
    assert requests == 60
    assert (await world.collect()).written == 60


async def test_two_collectors_racing_write_each_result_once(world: BatchWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    replies = world.settings["REPLY_QUEUES_ALLOWED"]
    await world.deliver(*(job(f"w{i}", reply_to=replies) for i in range(50)))
    await world.submit()
    finish, stored = collector.finish, []

    async def counting(delivery: Delivery, **kwargs: Any) -> Result | None:
        written = await finish(delivery, **kwargs)
        if written is not None:
            stored.append(delivery.job_id)
        return written

    monkeypatch.setattr(collector, "finish", counting)
    one, two = await asyncio.gather(world.collect(), world.collect())
    monkeypatch.undo()
    assert sorted(stored) == sorted(f"w{i}" for i in range(50)) and one.written + two.written == 50
    assert sorted([len(one.collected), len(two.collected)]) == [0, 1]  # one settled it, the other found it taken
    notices = [
        json.loads(m.content)
        async for m in world.jobs.queues.get_queue_client(replies).receive_messages(messages_per_page=32)
    ]
    assert sorted(n["id"] for n in notices) == sorted(f"w{i}" for i in range(50))


async def test_a_collector_that_outlives_its_lock_and_its_successor_write_each_result_once(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.deliver(*(job(f"x{i}") for i in range(20)))
    await world.submit()
    finish, stored = collector.finish, []
    entered, resume = asyncio.Event(), asyncio.Event()

    async def slow_then_counting(delivery: Delivery, **kwargs: Any) -> Result | None:
        if not entered.is_set():  # the first collector stalls here, its first result not yet written
            entered.set()
            await resume.wait()
        written = await finish(delivery, **kwargs)
        if written is not None:
            stored.append(delivery.job_id)
        return written

    monkeypatch.setattr(collector, "finish", slow_then_counting)
    stalled = asyncio.create_task(world.collect())
    await entered.wait()
    await world.expire_locks()  # it stalled past its lock: the next collector takes the batch over
    successor = await world.collect()
    resume.set()
    first = await stalled
    assert sorted(stored) == sorted(f"x{i}" for i in range(20))  # each result written once, by one of them
    assert first.written + successor.written == 20 and successor.collected
    assert await world.staged() == {} and await world.manifests() == []


async def test_a_collector_keeps_its_lock_while_it_settles_a_big_batch(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.deliver(*(job(f"k{i}") for i in range(7)))
    await world.submit()
    renewals: list[datetime] = []
    real_acquire, real_save = records.acquire, records.save

    async def acquire_aged(container: Any, held: records.Held, owner: str, now: datetime) -> records.Held | None:
        """Taken as usual, then most of its time gone (one minute left), as after a long download."""
        taken = await real_acquire(container, held, owner, now)
        return None if taken is None else await real_save(container, taken, lock_until=now + timedelta(seconds=60))

    async def save(container: Any, held: records.Held, **changes: Any) -> records.Held:
        if set(changes) == {"lock_until"}:  # a renewal (taking and giving back also set the owner)
            renewals.append(changes["lock_until"])
        return await real_save(container, held, **changes)

    monkeypatch.setattr(collector, "CHUNK", 2)  # settle two answers at a time
    monkeypatch.setattr(records, "acquire", acquire_aged)
    monkeypatch.setattr(records, "save", save)
    assert (await world.collect()).written == 7
    assert len(renewals) == 1  # then it had more than half of its time left at each check
    assert renewals[0] - datetime.now(UTC) > timedelta(seconds=records.LOCK_SECONDS / 2)
