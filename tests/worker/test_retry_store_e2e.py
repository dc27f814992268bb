"""The retry store as a trust boundary and notices on every path, in-process through the real storage and
openai SDKs against Azurite and the Azure OpenAI emulator (issue 21, defects 1-3).

Each delivery is one ``worker.handle`` call with a message built as the host would hand it over, so a test
decides exactly which message arrives when: the forged pointer, the stale copy, the redelivery after a
failed notice send. A failed send is injected at the storage SDK's boundary (the reply queue's client
raises once, as a dropped connection would); everything else is the real services' behaviour.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from azure.core.exceptions import ServiceRequestError

from shared import worker
from shared.connections import Runtime
from shared.jobs import Result
from tests.conftest import OpenAIEmulator
from tests.producer.helpers import blob_names, peek_bodies
from tests.worker.e2e import message, worker_only
from tests.worker_fixtures import Jobs

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture
async def runtime(local_dev_settings: dict[str, str]) -> AsyncIterator[Runtime]:
    # Pacing off: a 429 past the SDK's wait then re-enqueues at once instead of being waited out in the gate.
    settings = {**local_dev_settings, "THROTTLE_MAX_DELAY_SECONDS": "1", "MODEL_ADMISSION_WAIT_SECONDS": "0"}
    made = Runtime.from_env(settings)
    yield made
    await made.close()


async def retry_state(jobs: Jobs, job_id: str) -> dict[str, Any] | None:
    blob = worker_only(jobs).get_blob_client(f"retries/{job_id}.json")
    if not await blob.exists():
        return None
    return dict(json.loads(await (await blob.download_blob()).readall()))


async def throttled_once(jobs: Jobs, runtime: Runtime, aoai: OpenAIEmulator, body: dict[str, Any]) -> str:
    """Deliver ``body`` while the model throttles it past the SDK's wait: it waits in the retry store; the
    pointer the worker re-enqueued (as the host will hand it over once visible)."""
    aoai.configure(tpm=1000, retry_after_override_seconds=150)
    assert await worker.handle(message(body, f"first-{body['id']}"), runtime) is None
    aoai.configure(tpm=None, retry_after_override_seconds=None)
    queue = jobs.queues.get_queue_client(jobs.settings["JOBS_QUEUE"])
    for _ in range(50):  # visible after the capped delay (1 s, plus up to 20 % jitter)
        async for sent in queue.receive_messages(visibility_timeout=30):
            await queue.delete_message(sent)
            return str(sent.content)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no pointer re-enqueued (peeked: {await peek_bodies(jobs)})")


async def test_a_forged_pointer_runs_nothing_and_spends_nothing(
    jobs: Jobs, runtime: Runtime, aoai: OpenAIEmulator
) -> None:
    pointer = await throttled_once(jobs, runtime, aoai, {"id": "rs-c", "prompt": "mine"})
    before = await retry_state(jobs, "rs-c")
    assert before is not None and json.loads(pointer)["token"] == before["token"]
    calls = aoai.stats()["completions"]
    for i in range(8):  # what any producer can send: the id, with no token or a guessed one
        forged = {"id": "rs-c", "requeued": True, **({"token": f"{i:032x}"} if i % 2 else {})}
        assert await worker.handle(message(forged, f"forged-{i}"), runtime) is None
    assert await retry_state(jobs, "rs-c") == before  # attempts, timing and token untouched
    assert "rs-c" not in await jobs.results() and aoai.stats()["completions"] == calls
    result = await worker.handle(message(json.loads(pointer), "due"), runtime)
    assert result is not None and result.status == "succeeded" and result.attempts == 2
    assert await retry_state(jobs, "rs-c") is None


async def test_producers_never_see_a_waiting_job_where_they_read_results(
    jobs: Jobs, runtime: Runtime, aoai: OpenAIEmulator
) -> None:
    await throttled_once(jobs, runtime, aoai, {"id": "secret", "prompt": "another producer's prompt"})
    assert await blob_names(jobs, jobs.settings["RESULTS_CONTAINER"]) == []  # nothing under retries/ either
    state = await retry_state(jobs, "secret")
    assert state is not None and state["job"]["prompt"] == "another producer's prompt"


async def test_the_same_id_sent_while_it_waits_is_consumed_and_the_first_runs(
    jobs: Jobs, runtime: Runtime, aoai: OpenAIEmulator
) -> None:
    pointer = await throttled_once(jobs, runtime, aoai, {"id": "rs-b", "prompt": "rs-b first"})
    before = await retry_state(jobs, "rs-b")
    second = {"id": "rs-b", "prompt": "rs-b second"}
    assert await worker.handle(message(second, "second"), runtime) is None
    assert await retry_state(jobs, "rs-b") == before
    result = await worker.handle(message(json.loads(pointer), "due"), runtime)
    assert result is not None and result.status == "succeeded"
    stored = Result.model_validate((await jobs.results())["rs-b"])
    assert stored.attempts == 2 and stored.output is not None and "rs-b first" in stored.output


class FailingOnce:
    """A reply queue client whose next send fails as a dropped connection would; the rest is the real one."""

    def __init__(self, real: Any) -> None:
        self.real, self.failed = real, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def send_message(self, content: str, **options: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise ServiceRequestError("connection reset by peer")
        return await self.real.send_message(content, **options)


def fail_next_notice(runtime: Runtime, reply_queue: str) -> None:
    real_client, clients = runtime.queues.get_queue_client, {}

    def get_queue_client(name: str) -> Any:
        client = real_client(name)
        if name != reply_queue:
            return client
        return clients.setdefault(name, FailingOnce(client))

    runtime.queues.get_queue_client = get_queue_client  # type: ignore[method-assign]


async def notices(jobs: Jobs, reply_queue: str) -> list[dict[str, Any]]:
    queue = jobs.queues.get_queue_client(reply_queue)
    return [json.loads(m.content) for m in await queue.peek_messages(max_messages=32)]


async def test_a_claim_check_job_gets_its_notice_after_a_failed_send(
    jobs: Jobs, runtime: Runtime, aoai: OpenAIEmulator
) -> None:
    replies = jobs.settings["REPLY_QUEUES_ALLOWED"].split(",")[0]
    payloads = jobs.blobs.get_container_client(jobs.settings["PAYLOADS_CONTAINER"])
    if not await payloads.exists():
        await payloads.create_container()
    await payloads.upload_blob("big.json", json.dumps({"id": "big", "prompt": "large", "reply_to": replies}))
    fail_next_notice(runtime, replies)
    reference = {"id": "big", "payload": {"blob": "big.json"}}
    with pytest.raises(ServiceRequestError):
        await worker.handle(message(reference, "ref"), runtime)  # the host will redeliver it
    assert await payloads.get_blob_client("big.json").exists()  # kept until the notice is confirmed
    assert await worker.handle(message(reference, "ref", dequeue_count=2), runtime) is None
    assert [n["id"] for n in await notices(jobs, replies)] == ["big"]
    properties = await jobs.results_container.get_blob_client("big.json").get_blob_properties()
    assert "notify" not in properties.metadata and properties.metadata["status"] == "succeeded"
    assert not await payloads.get_blob_client("big.json").exists()
    assert aoai.stats()["completions"] == 1


async def test_a_requeued_job_that_failed_keeps_its_result_and_gets_its_notice(
    jobs: Jobs, runtime: Runtime, aoai: OpenAIEmulator
) -> None:
    replies = jobs.settings["REPLY_QUEUES_ALLOWED"].split(",")[0]
    filtered = "please TRIGGER_PROMPT_FILTER now"  # the emulator's content filter refuses this prompt
    pointer = await throttled_once(jobs, runtime, aoai, {"id": "cf", "prompt": filtered, "reply_to": replies})
    fail_next_notice(runtime, replies)
    due = json.loads(pointer)
    with pytest.raises(ServiceRequestError):
        await worker.handle(message(due, "due"), runtime)
    assert await worker.handle(message(due, "due", dequeue_count=2), runtime) is None  # the notice, not a rerun
    result = (await jobs.results())["cf"]
    assert result["error"]["code"] == "content_filter"  # not retry_state_missing
    assert [(n["id"], n["error_code"]) for n in await notices(jobs, replies)] == [("cf", "content_filter")]
    assert await retry_state(jobs, "cf") is None
    # A stale copy of the pointer arriving later changes nothing.
    assert await worker.handle(message(due, "late-copy"), runtime) is None
    assert (await jobs.results())["cf"] == result


async def test_causes_that_alternate_still_meet_the_jobs_retry_bound(
    local_dev_settings: dict[str, str], jobs: Jobs, aoai: OpenAIEmulator
) -> None:
    # 429s and 5xx in turn, as in an Azure incident: each resets the other's own count, the job's bound holds.
    settings = {
        **local_dev_settings,
        "THROTTLE_MAX_DELAY_SECONDS": "1",
        "MODEL_ADMISSION_WAIT_SECONDS": "0",
        "AZURE_OPENAI_MAX_RETRIES": "0",
        "RETRY_MAX_ATTEMPTS": "3",
    }
    runtime = Runtime.from_env(settings)
    queue = jobs.queues.get_queue_client(jobs.settings["JOBS_QUEUE"])
    try:
        body: dict[str, Any] = {"id": "flaky", "prompt": "hi"}
        for attempt in range(4):
            throttle = attempt % 2 == 0
            aoai.configure(
                tpm=1000 if throttle else None,
                retry_after_override_seconds=150 if throttle else None,
                fault_500=0.0 if throttle else 1.0,
            )
            outcome = await worker.handle(message(body, f"delivery-{attempt}"), runtime)
            if outcome is not None:
                break
            for _ in range(100):  # the re-enqueued pointer, once visible
                received = [m async for m in queue.receive_messages(visibility_timeout=30)]
                if received:
                    await queue.delete_message(received[0])
                    body = json.loads(received[0].content)
                    break
                await asyncio.sleep(0.1)
        assert outcome is not None and outcome.error is not None, outcome
        assert attempt == 3  # three re-enqueues (throttled, outage, throttled), then the bound
        assert outcome.error.code == "model_unavailable"  # the last cause: every deployment failing
        assert "gave up after 3 re-enqueues" in outcome.error.message
        assert "outage 2, throttled 2" in outcome.error.message  # every cause met, the last one included
        assert await retry_state(jobs, "flaky") is None
    finally:
        aoai.configure(tpm=None, retry_after_override_seconds=None, fault_500=0.0)
        await runtime.close()
