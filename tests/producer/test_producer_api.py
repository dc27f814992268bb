"""The Python producer API: submit, submit_many, get_result, wait, through the local queue host."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from emulators.aoai import answer_for
from shared.errors import InvalidJobError, MissingPermissionError, QueueNotFoundError, WaitTimeoutError
from shared.jobs import Job
from shared.producer import JobsClient as BlockingJobsClient
from shared.producer import SubmitProgress
from shared.producer.aio import JobsClient
from tests.conftest import DEPLOYMENT, REPO, OpenAIEmulator
from tests.producer.helpers import blob_names, message_count, peek_bodies
from tests.worker_fixtures import WorkerHost


def test_producer_imports_without_azure_functions_or_openai() -> None:
    code = (
        "import sys\n"
        "import shared.producer, shared.producer.aio, shared.cli\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'openai' or m.startswith('azure.functions'))\n"
        "assert not loaded, loaded\n"
        "from shared.producer.aio import JobsClient\n"
        "JobsClient.from_settings({'AzureWebJobsStorage': 'UseDevelopmentStorage=true'})\n"
        "assert not any(m.startswith('azure.functions') for m in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


async def test_submit_submit_many_and_wait_keyless(
    keyless_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    await jobs_for(keyless_settings)  # creates the jobs queue
    host: WorkerHost = start_host(keyless_settings)
    seen: list[SubmitProgress] = []
    async with JobsClient.from_settings(keyless_settings) as client:
        single = await client.submit({"prompt": "One question?", "metadata": {"from": "api"}})
        assert len(single) == 32 and int(single, 16) >= 0  # a uuid4 hex id was assigned
        batch: list[Job | dict[str, Any]] = [Job(prompt=f"Batch question {i}?") for i in range(10)]
        batch += [{"id": f"mine-{i}", "prompt": f"Dict question {i}?", "system": "Be brief."} for i in range(10)]
        ids = await client.submit_many(batch, concurrency=4, progress=seen.append)
        assert ids[10:] == [f"mine-{i}" for i in range(10)]
        results = await client.wait([single, *ids], timeout=60)
        assert list(results) == [single, *ids]  # in the order asked
        assert all(r.status == "succeeded" for r in results.values()), host.log()[-2000:]
        assert results[single].output == answer_for([{"role": "user", "content": "One question?"}], DEPLOYMENT)
        assert results[single].metadata == {"from": "api"}
        assert results["mine-3"].output == answer_for([{"role": "user", "content": "Dict question 3?"}], DEPLOYMENT)
        assert await client.get_result(single) == results[single]
        assert await client.get_result("never-submitted") is None
    assert [p.done for p in seen] == list(range(1, 21)) and {p.total for p in seen} == {20}
    assert sorted(p.id for p in seen) == sorted(ids)
    assert aoai.stats()["completions"] == 21
    assert "One question?" not in host.log()  # prompts never reach the INFO log


async def test_large_job_goes_through_the_claim_check(
    keyless_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    settings = {**keyless_settings, "MAX_PROMPT_CHARS": "2000000"}
    jobs = await jobs_for(settings)
    prompt = ("All work and no play makes Jack a dull boy. " * 25_000)[: 1 << 20]  # 1 MiB
    async with JobsClient.from_settings(settings) as client:
        job_id = await client.submit({"prompt": prompt})
        # On the queue: only a small reference; the job itself is in the payloads container.
        [reference] = await peek_bodies(jobs)
        assert reference == {"id": job_id, "payload": {"blob": f"{job_id}.json"}}
        assert await blob_names(jobs, settings["PAYLOADS_CONTAINER"]) == [f"{job_id}.json"]
        host = start_host(settings)
        result = (await client.wait([job_id], timeout=90))[job_id]
    assert result.status == "succeeded", (result, host.log()[-2000:])
    assert result.output == answer_for([{"role": "user", "content": prompt}], DEPLOYMENT)
    assert await blob_names(jobs, settings["PAYLOADS_CONTAINER"]) == []  # payload deleted after the result
    assert await jobs.queue_drained()


async def test_invalid_jobs_are_refused_before_anything_is_sent(
    local_dev_settings: dict[str, str], jobs_for: Any
) -> None:
    jobs = await jobs_for(local_dev_settings)
    async with JobsClient.from_settings(local_dev_settings) as client:
        with pytest.raises(InvalidJobError) as caught:
            await client.submit({"prompt": "hi", "parameters": {"temperature": 3}})
        assert caught.value.field == "parameters.temperature"
        assert "parameters.temperature" in str(caught.value)
        assert isinstance(caught.value.__cause__, ValidationError)  # chained from pydantic

        good = {"prompt": "fine"}
        with pytest.raises(InvalidJobError) as caught:
            await client.submit_many([good, good, {"prompt": "x", "colour": "red"}, good])
        assert (caught.value.index, caught.value.field, caught.value.code) == (2, "colour", "unknown_field")

        for bad, field in [
            ({"prompt": ""}, "prompt"),
            ({"id": "../etc/passwd", "prompt": "x"}, "id"),
            ({"prompt": "x", "redelivery": {"attempt": 1, "first_seen": "2024-01-01T00:00:00Z"}}, "redelivery"),
            (Job.model_construct(prompt="x", messages=[{"role": "user", "content": "y"}]), None),
        ]:
            with pytest.raises(InvalidJobError) as caught:
                await client.submit(bad)  # type: ignore[arg-type]
            assert caught.value.field == field, caught.value
        with pytest.raises(InvalidJobError):
            await client.get_result("../../secret")  # ids become blob names: never a path
    assert await message_count(jobs) == 0


async def test_typed_errors_name_the_fix(local_dev_settings: dict[str, str], forbidden_storage: str) -> None:
    async with JobsClient.from_settings(local_dev_settings) as client:  # its queue was never created
        with pytest.raises(QueueNotFoundError, match="JOBS_QUEUE"):
            await client.submit({"prompt": "x"})
        with pytest.raises(WaitTimeoutError) as waited:
            await client.wait(["a-1", "b-2"], timeout=0.3)
        assert waited.value.missing == ["a-1", "b-2"]
        assert "a-1, b-2" in str(waited.value) and "does not exist yet" in str(waited.value)
    async with JobsClient.from_connection_string(forbidden_storage) as client:
        with pytest.raises(MissingPermissionError) as sending:
            await client.submit({"prompt": "x"})
        assert sending.value.role == "Storage Queue Data Message Sender"
        assert sending.value.resource.endswith("/devstoreaccount1/jobs")
        assert "az role assignment create" in str(sending.value)
        with pytest.raises(MissingPermissionError) as reading:
            await client.get_result("some-job")
        assert reading.value.role == "Storage Blob Data Reader"
        assert reading.value.resource.endswith("/devstoreaccount1/results")
        with pytest.raises(MissingPermissionError) as uploading:
            await client.submit({"prompt": "x" * 60_000})  # claim check: the upload is refused first
        assert uploading.value.role == "Storage Blob Data Contributor"


def test_blocking_client(local_dev_settings: dict[str, str]) -> None:
    with BlockingJobsClient.from_settings(local_dev_settings) as client:
        with pytest.raises(QueueNotFoundError):
            client.submit({"prompt": "x"})
        assert client.get_result("nothing-yet") is None
        with pytest.raises(WaitTimeoutError):
            client.wait(["nothing-yet"], timeout=0.2)


async def test_client_from_urls_derives_the_blob_endpoint() -> None:
    from azure.identity.aio import ManagedIdentityCredential

    credential = ManagedIdentityCredential()  # never asked for a token here
    client = JobsClient("https://acct.queue.core.windows.net", credential, queue="orders")
    assert client.queue_url == "https://acct.queue.core.windows.net/orders"
    assert client._results.url == "https://acct.blob.core.windows.net/results"
    await client.close()
    await credential.close()
    with pytest.raises(ValueError, match="blob_account_url"):
        JobsClient("https://127.0.0.1:10001/devstoreaccount1", credential)
