"""The batch lane against Azure's real file and quota states, and what a step's failure may cost (issue 21,
items 5 and 6), through the real SDKs against Azurite and the emulator's Files and Batches APIs.

Time is never waited for: the emulator holds an upload ``pending`` until ``process_files()``, and the lane's
own waits (a file's, quota's, a failing step's) are ended by moving the time they began into the past, as
``BatchWorld.expire_locks`` does for locks. Each test fails on the code before it (ecdf16f).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest

from emulators.aoai import count_prompt_tokens
from emulators.stack.services import DEPLOYMENT, OpenAIEmulator
from emulators.stack.workers import Jobs
from shared import batch, worker
from shared.batch import files, records, submitter
from shared.batch.lines import job_tokens
from shared.connections import Runtime
from shared.jobs import Job
from shared.operations import Operations
from tests.worker.fakes import Message
from tests.worker.test_batch_lane import (
    BATCH_DEPLOYMENT,
    BatchWorld,
    Crash,
    _world,
    answer,
    crash_after,
    job,
    world,
)

__all__ = ["world"]  # the keyless batch-lane fixture of test_batch_lane.py, used here as is


async def change_manifest(world: BatchWorld, **changes: Any) -> None:
    """Write fields of the one manifest (a time moved into the past: the wait it began has run out)."""
    container = batch.staging(world.runtime)
    (held,) = await batch.list_manifests(container)
    await records.save(container, held, **changes)


def long_ago(wait: timedelta) -> datetime:
    return datetime.now(UTC) - wait - timedelta(minutes=1)


async def results(world: BatchWorld) -> dict[str, tuple[str, str | None]]:
    """Job id -> (status, error code) of every stored result."""
    stored = await world.jobs.results()
    return {job_id: (r["status"], (r.get("error") or {}).get("code")) for job_id, r in stored.items()}


# --- 5. Azure's file states: a batch only from a processed file ---------------------------------------------------


async def test_a_batch_is_created_only_once_its_file_is_processed_and_a_crash_resumes_the_wait(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.aoai.configure_batches(file_processing_seconds=3600)  # pending until process_files()
    monkeypatch.setattr(submitter, "FILE_WAIT_IN_TICK_SECONDS", 0.0)  # one look a tick, then the next tick
    await world.deliver(*(job(f"p{i}") for i in range(3)))
    with pytest.MonkeyPatch.context() as patch:
        crash_after(patch, world.runtime.openai.files, "retrieve")  # dies while waiting for the file
        with pytest.raises(Crash):
            await world.submit()
    (manifest,) = await world.manifests()
    assert (manifest.state, manifest.file_id is not None, manifest.uploaded_at is not None) == ("uploaded", True, True)
    await world.expire_locks()

    waiting = await world.submit()  # resumes the wait: the file is not uploaded again, no batch is tried
    assert (waiting.resumed, waiting.uploads, waiting.reused_uploads, waiting.waiting_files) == (1, 0, 0, 1)
    (manifest,) = await world.manifests()
    assert (manifest.state, manifest.file_status, manifest.owner) == ("uploaded", "pending", None)
    assert world.calls("POST /openai/v1/batches") == 0  # nothing Azure would refuse was sent
    assert world.calls("POST /openai/v1/files") == 1

    world.aoai.process_files()
    created = await world.submit()
    assert (created.uploads, len(created.submitted)) == (0, 1)
    assert world.calls("POST /openai/v1/batches") == world.calls("POST /openai/v1/files") == 1
    assert (await world.collect()).written == 3
    assert set((await results(world)).values()) == {("succeeded", None)}


async def test_within_a_tick_the_submitter_waits_for_a_file_being_processed(world: BatchWorld) -> None:
    world.aoai.configure_batches(file_processing_seconds=0.5)  # read pending at least once, then processed
    await world.deliver(job("w1"), job("w2"))
    submitted = await world.submit()
    assert (submitted.uploads, len(submitted.submitted), submitted.waiting_files) == (1, 1, 0)
    assert world.calls("GET /openai/v1/files/{file_id}") >= 2  # looked again after a pending answer
    assert world.calls("POST /openai/v1/batches") == 1  # and created the batch once, when it could
    assert (await world.collect()).written == 2


async def test_a_file_that_ends_in_error_fails_its_batch_with_what_the_service_said(world: BatchWorld) -> None:
    world.aoai.configure_batches(file_error="The file could not be parsed.")  # processed at once, as an error
    await world.deliver(job("e1"))
    failed = await world.submit()
    assert (failed.uploads, failed.submitted) == (1, [])
    (manifest,) = await world.manifests()
    assert (manifest.state, manifest.status, manifest.file_status) == ("submitted", "failed", "error")
    assert manifest.errors[0].startswith("file_not_processed:") and "could not be parsed" in manifest.errors[0]
    assert world.calls("POST /openai/v1/batches") == 0
    assert (await world.collect()).restaged == 1  # a failed batch: its job goes back once
    world.aoai.configure_batches(file_error=None)
    await world.submit()
    assert (await world.collect()).written == 1


async def test_a_file_never_processed_fails_its_batch_once_the_wait_runs_out(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.aoai.configure_batches(file_processing_seconds=3600)
    monkeypatch.setattr(submitter, "FILE_WAIT_IN_TICK_SECONDS", 0.0)
    await world.deliver(job("n1"))
    assert (await world.submit()).waiting_files == 1
    await change_manifest(world, uploaded_at=long_ago(files.FILE_WAIT))
    await world.submit()
    (manifest,) = await world.manifests()
    assert (manifest.state, manifest.status) == ("submitted", "failed")
    assert "was still pending" in manifest.errors[0] and manifest.errors[0].startswith("file_not_processed:")
    assert (await world.collect()).restaged == 1
    assert world.batch_stats()["batch"]["input_files"] == 0  # the stuck file was deleted with the manifest


async def test_a_batch_refused_because_its_file_is_pending_after_all_waits_for_it(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that read processed and is refused as pending at create (the service's view lagging):
    Azure's 400 sends the manifest back to waiting, it does not fail the batch."""
    world.aoai.configure_batches(file_processing_seconds=3600)
    monkeypatch.setattr(submitter, "FILE_WAIT_IN_TICK_SECONDS", 0.0)
    read = world.runtime.openai.files.retrieve

    async def seen_processed(*args: Any, **kwargs: Any) -> Any:
        found = await read(*args, **kwargs)
        return found.model_copy(update={"status": "processed"})

    await world.deliver(job("l1"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(world.runtime.openai.files, "retrieve", seen_processed)
        refused = await world.submit()
    assert (refused.submitted, refused.deferred) == ([], 0)
    (manifest,) = await world.manifests()
    assert (manifest.state, manifest.file_status, manifest.errors) == ("uploaded", "pending", [])
    world.aoai.process_files()
    assert len((await world.submit()).submitted) == 1
    assert (await world.collect()).written == 1


# --- 5. Enqueued-token quota: files sized by tokens; refusals wait, bounded ----------------------------------------


async def test_request_files_are_sized_by_estimated_enqueued_tokens(
    keyless_settings: dict[str, str], aoai: OpenAIEmulator, jobs_for: Callable[[dict[str, str]], Awaitable[Jobs]]
) -> None:
    prompts = [f"Summarise item {i}: " + "words " * 600 for i in range(5)]
    estimate = job_tokens(Job.model_validate({"id": "x", "prompt": prompts[0], "parameters": {"max_tokens": 400}}))
    enqueued = count_prompt_tokens([{"role": "user", "content": prompts[0]}])  # what the emulator holds of a request
    # Two requests fit the deployment's quota, three do not; the setting says the same in the worker's estimate.
    async for small in _world(keyless_settings, aoai, jobs_for, BATCH_MAX_TOKENS_PER_FILE=str(2 * estimate + 10)):
        aoai.add_batch_deployment(BATCH_DEPLOYMENT, token_limit=2 * enqueued + 10)
        await small.deliver(*(job(f"t{i}", prompt, parameters={"max_tokens": 400}) for i, prompt in enumerate(prompts)))
        submitted = await small.submit()
        assert (submitted.manifests, len(submitted.submitted), submitted.deferred) == (3, 3, 0)
        assert sorted(len(m.job_ids) for m in await small.manifests()) == [1, 2, 2]
        assert (await small.collect()).written == 5
        assert set((await results(small)).values()) == {("succeeded", None)}


async def test_a_batch_refused_for_quota_at_create_waits_then_its_jobs_fail_batch_token_limit(
    world: BatchWorld,
) -> None:
    world.aoai.add_batch_deployment(BATCH_DEPLOYMENT, token_limit=5)  # less than one prompt: refused at create
    await world.deliver(job("q1"), job("q2"))
    first = await world.submit()
    again = await world.submit()
    assert (first.deferred, again.deferred, again.uploads, again.submitted) == (1, 1, 0, [])
    (manifest,) = await world.manifests()
    began = manifest.quota_since
    assert began is not None and manifest.state == "processed"
    await change_manifest(world, quota_since=long_ago(records.QUOTA_WAIT))
    await world.submit()
    (manifest,) = await world.manifests()
    assert (manifest.state, manifest.status) == ("submitted", "failed")
    assert manifest.errors[0].startswith("token_limit_exceeded")
    collected = await world.collect()
    assert (collected.failed_unrun, collected.restaged) == (2, 0)
    assert await results(world) == {"q1": ("failed", "batch_token_limit"), "q2": ("failed", "batch_token_limit")}
    message = (await world.jobs.result("q1") or {})["error"]["message"]
    assert "enqueued-token quota" in message and "BATCH_MAX_TOKENS_PER_FILE" in message
    assert await world.staged() == {} and await world.manifests() == []


async def test_a_batch_failed_for_quota_sends_its_jobs_back_uncounted_until_the_bound(world: BatchWorld) -> None:
    world.aoai.configure_batches(processing_seconds=3600)
    said = "The number of enqueued tokens has surpassed the configured limit of 30K for the deployment."
    await world.deliver(job("v1"))
    for _ in range(2):  # failed after validation (regions without fail-fast): back to staging, not counted
        (created,) = (await world.submit()).submitted
        world.aoai.fail_batch(created, code="token_limit_exceeded", message=said)
        assert (await world.collect()).restaged == 1
        (metadata,) = (await world.staged()).values()
        assert records.RESTAGED not in metadata and records.QUOTA_SINCE in metadata
    listed = await batch.list_staged(batch.staging(world.runtime))
    aged = {**listed[0].metadata, records.QUOTA_SINCE: long_ago(records.QUOTA_WAIT).isoformat()}
    assert await records.set_claim(batch.staging(world.runtime), "v1", listed[0].etag, aged)
    (created,) = (await world.submit()).submitted
    world.aoai.fail_batch(created, code="token_limit_exceeded", message=said)
    assert (await world.collect()).failed_unrun == 1
    assert await results(world) == {"v1": ("failed", "batch_token_limit")}


async def test_a_status_the_worker_does_not_know_counts_as_running(world: BatchWorld) -> None:
    world.aoai.configure_batches(processing_seconds=3600)
    await world.deliver(job("u1"), job("u2"))
    (created,) = (await world.submit()).submitted
    world.aoai.report_batch_status(created, "paused")  # a status the service may add one day
    polled = await world.collect()
    assert (polled.polled, polled.open, polled.collected, polled.restaged) == (1, 1, [], 0)
    assert {meta.get("manifest") for meta in (await world.staged()).values()} == {(await world.manifests())[0].id}
    world.aoai.report_batch_status(created, None)
    world.aoai.expire_batch(created, done=2)
    assert (await world.collect()).written == 2


# --- 6. What a failing step may cost -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refusal", "error"),
    [
        ({"Authorization": "Bearer not-a-token"}, openai.AuthenticationError),  # 401, the token refused
        ({"api-key": "a-key"}, openai.PermissionDeniedError),  # 403 AuthenticationTypeDisabled
    ],
)
async def test_a_refused_token_in_a_submit_step_defers_the_manifest_and_spends_no_restage(
    world: BatchWorld, monkeypatch: pytest.MonkeyPatch, refusal: dict[str, str], error: type[Exception]
) -> None:
    files = world.runtime.openai.files
    upload, seen = files.create, []

    async def refused_once(*args: Any, **kwargs: Any) -> Any:
        if not seen:
            try:
                return await upload(*args, **kwargs, extra_headers=refusal)
            except Exception as exc:
                seen.append(exc)
                raise
        return await upload(*args, **kwargs)

    monkeypatch.setattr(files, "create", refused_once)
    await world.deliver(job("a1"), job("a2"))
    deferred = await world.submit()
    assert isinstance(seen[0], error) and (deferred.deferred, deferred.submitted) == (1, [])
    (manifest,) = await world.manifests()
    assert (manifest.state, manifest.status, manifest.errors) == ("claimed", None, [])
    assert manifest.deferred_since is not None and manifest.deferrals == 1
    resumed = await world.submit()
    assert (resumed.uploads, len(resumed.submitted)) == (1, 1)
    assert (await world.collect()).written == 2
    assert set((await results(world)).values()) == {("succeeded", None)}


async def test_a_type_error_in_a_submit_step_defers_the_manifest_for_a_bounded_time(world: BatchWorld) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("an SDK that changed under us")

    await world.deliver(job("b1"), job("b2"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(world.runtime.openai.batches, "create", broken)
        for tick in (1, 2):
            assert (await world.submit()).deferred == 1
            (manifest,) = await world.manifests()
            assert (manifest.state, manifest.deferrals, manifest.errors) == ("processed", tick, [])
        await change_manifest(world, deferred_since=long_ago(submitter.STEP_RETRY))
        await world.submit()  # failing past the bound: the batch fails, its jobs go back once
    (manifest,) = await world.manifests()
    assert (manifest.state, manifest.status) == ("submitted", "failed")
    assert manifest.errors[0].startswith("submit_failed:") and "an SDK that changed under us" in manifest.errors[0]
    assert (await world.collect()).restaged == 2
    await world.submit()
    assert (await world.collect()).written == 2


async def corrupt_staged(world: BatchWorld, job_id: str) -> None:
    """The staged blob's body replaced by bytes that do not parse, its metadata (claim, tokens) kept."""
    blob = batch.staging(world.runtime).get_blob_client(f"jobs/{job_id}.json")
    metadata = (await blob.get_blob_properties()).metadata
    await blob.upload_blob(b'{"job": {"id": "' + job_id.encode() + b'", "prompt": 1', overwrite=True, metadata=metadata)


async def test_an_unparseable_staged_blob_fails_its_job_alone_at_submit(world: BatchWorld) -> None:
    await world.deliver(job("g1"), job("bad"), job("g2"))
    await corrupt_staged(world, "bad")
    submitted = await world.submit()
    (manifest,) = await world.manifests()
    assert (manifest.state, manifest.status, sorted(manifest.job_ids)) == ("submitted", "validating", ["g1", "g2"])
    assert (len(submitted.submitted), submitted.failed_jobs) == (1, 1)
    assert (await world.collect()).written == 2
    assert await results(world) == {
        "g1": ("succeeded", None),
        "g2": ("succeeded", None),
        "bad": ("failed", "batch_staged_unreadable"),
    }
    assert (await world.jobs.result("bad") or {})["lane"] == "batch"
    assert await world.staged() == {} and await world.manifests() == []


async def test_an_unparseable_staged_blob_does_not_pin_its_batch_at_collect(world: BatchWorld) -> None:
    await world.deliver(job("c1"), job("c2"), job("c3"))
    (created,) = (await world.submit()).submitted
    await corrupt_staged(world, "c2")
    collected = await world.collect()
    assert (collected.collected, collected.written) == ([created], 2)  # settled despite the bad blob
    assert collected.unreadable_staged == 1
    assert await results(world) == {
        "c1": ("succeeded", None),
        "c2": ("failed", "batch_staged_unreadable"),
        "c3": ("succeeded", None),
    }
    assert await world.staged() == {} and await world.manifests() == []
    assert await world.collect() == batch.CollectReport()  # nothing left to raise on the next tick


# --- 6. The lane switched off ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("on_failure", ["restage", "live"])
async def test_with_the_lane_switched_off_batches_out_are_collected_and_staged_jobs_end(
    world: BatchWorld, on_failure: str
) -> None:
    world.aoai.configure_batches(processing_seconds=3600)
    await world.deliver(*(job(f"out{i}") for i in range(3)))
    (out,) = (await world.submit()).submitted  # a batch running when the lane is switched off
    await world.deliver(job("mid"))
    with pytest.MonkeyPatch.context() as patch:
        crash_after(patch, world.runtime.openai.files, "create")  # a manifest left with its file uploaded
        with pytest.raises(Crash):
            await world.submit()
    await world.expire_locks()
    await world.deliver(job("late"))  # staged, in no manifest

    settings = {**world.settings, "BATCH_DEPLOYMENT": "", "BATCH_ON_FAILURE": on_failure}
    off = Runtime.from_env(settings)
    try:
        assert (await batch.collect(off)).open == 1  # still polled while it runs
        drained = await batch.submit(off)
        assert (drained.dismantled, drained.to_live + drained.lane_off, drained.submitted) == (1, 2, [])
        assert world.batch_stats()["batch"]["input_files"] == 1  # the half-submitted one's file deleted
        world.aoai.expire_batch(out, done=1)
        collected = await batch.collect(off)
        assert (collected.written, collected.to_live + collected.failed_unrun, collected.restaged) == (1, 2, 0)
        assert await world.staged() == {} and await world.manifests() == []
        stored = await results(world)
        assert sum(status == "succeeded" for status, _ in stored.values()) == 1
        if on_failure == "restage":  # restaging would wait for a lane that is off: they fail, saying so
            assert sorted(stored) == ["late", "mid", "out0", "out1", "out2"]
            assert sorted(code for _, code in stored.values() if code) == ["batch_lane_off"] * 4
            message = (await world.jobs.result("late") or {})["error"]["message"]
            assert "switched off" in message and "BATCH_ON_FAILURE=live" in message
        else:  # to the live lane, through the claim check, and answered there
            messages = [m async for m in world.jobs.queue.receive_messages(messages_per_page=32)]
            assert sorted(json.loads(m.content)["id"] for m in messages) == sorted(set(
                ["late", "mid", "out0", "out1", "out2"]) - set(stored))  # fmt: skip
            for message in messages:
                await worker.handle(Message(message.content.encode(), id=message.id), off)
            live = await world.jobs.result("late") or {}
            assert (live["status"], live["output"]) == ("succeeded", answer("Question late?", DEPLOYMENT))
    finally:
        await off.close()


async def test_status_shows_staged_jobs_open_batches_and_waiting_retries(world: BatchWorld) -> None:
    world.aoai.configure_batches(processing_seconds=3600)
    await world.deliver(job("s1"), job("s2"))
    await world.submit()
    await world.deliver(job("s3"))
    container = batch.staging(world.runtime)
    await container.upload_blob("retries/r1.json", b"{}")  # the retry store shares the container
    async with Operations.from_settings(world.settings) as operations:
        status = await operations.status()
    store = status.worker
    assert (store.name, store.exists, store.refused) == (world.settings["STAGING_CONTAINER"], True, None)
    assert (store.staged_jobs, store.open_batches, store.batches_by_state, store.waiting_retries) == (
        3,
        1,
        {"submitted": 1},
        1,
    )
    assert store.oldest_staged_seconds is not None and store.oldest_staged_seconds >= 0
    assert status.to_dict()["worker"]["staged_jobs"] == 3
