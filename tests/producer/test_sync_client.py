"""The blocking ``shared.producer.JobsClient``: the async client's whole surface, without an event loop.

Tests that need the async fixtures (``jobs_for``) are async and run the blocking client in a
worker thread, as async code that must call blocking code would: the blocking client refuses to
run on a thread whose event loop is running.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from azure.core.credentials import AccessToken, TokenCredential
from azure.identity import ManagedIdentityCredential

from emulators.aoai import answer_for
from shared.constants import DEVELOPMENT_STORAGE
from shared.errors import InvalidJobError, QueueNotFoundError, WaitTimeoutError
from shared.jobs import Job, Notice, Result
from shared.producer import JobsClient, SubmitProgress, aio
from tests.conftest import DEPLOYMENT, OpenAIEmulator
from tests.producer.helpers import message_count
from tests.worker_fixtures import Jobs


def answer(prompt: str) -> str:
    return answer_for([{"role": "user", "content": prompt}], DEPLOYMENT)


def public(names: Iterable[str]) -> set[str]:
    return {name for name in names if not name.startswith("_")}


def options(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """Parameter names, kinds and defaults (not annotations: the credential and return types differ)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_blocking_client_has_the_async_clients_whole_surface() -> None:
    async def async_names() -> set[str]:
        async with aio.JobsClient.from_connection_string(DEVELOPMENT_STORAGE) as client:
            return public(dir(client))

    twin_names = asyncio.run(async_names())
    with JobsClient.from_connection_string(DEVELOPMENT_STORAGE, queue="orders") as client:
        assert public(dir(client)) == twin_names  # instance attributes (queue_name, ...) included
        assert (client.queue_name, client.results_container) == ("orders", "results")
        assert client.queue_url == "http://127.0.0.1:10001/devstoreaccount1/orders"

    assert options(JobsClient) == options(aio.JobsClient)  # the constructor
    for name in sorted(public(dir(aio.JobsClient))):
        blocking, twin = inspect.getattr_static(JobsClient, name), inspect.getattr_static(aio.JobsClient, name)
        assert type(blocking) is type(twin), name  # classmethods stay classmethods, properties properties
        if not isinstance(twin, property):
            assert options(getattr(JobsClient, name)) == options(getattr(aio.JobsClient, name)), name
    assert inspect.isasyncgenfunction(aio.JobsClient.notices) and inspect.isgeneratorfunction(JobsClient.notices)


async def test_blocking_client_refuses_to_run_inside_an_event_loop() -> None:
    with pytest.raises(RuntimeError, match=r"use shared\.producer\.aio\.JobsClient"):
        JobsClient.from_connection_string(DEVELOPMENT_STORAGE)


class RecordingCredential:
    """A blocking credential that records which threads asked it for a token, and for what."""

    def __init__(self, inner: TokenCredential) -> None:
        self.inner = inner
        self.requests: list[tuple[int, tuple[str, ...]]] = []

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.requests.append((threading.get_ident(), scopes))
        return self.inner.get_token(*scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs)


async def test_constructed_from_urls_and_a_blocking_credential_keyless(
    keyless_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    settings = keyless_settings
    replies = settings["REPLY_QUEUES_ALLOWED"]
    await jobs_for(settings)  # creates the jobs queue
    host = start_host(settings)

    def blocking() -> None:
        with ManagedIdentityCredential() as identity:
            credential = RecordingCredential(identity)
            with JobsClient(
                settings["AzureWebJobsStorage__queueServiceUri"],
                credential,
                blob_account_url=settings["AzureWebJobsStorage__blobServiceUri"],
                queue=settings["JOBS_QUEUE"],
                results_container=settings["RESULTS_CONTAINER"],
                payloads_container=settings["PAYLOADS_CONTAINER"],
            ) as client:
                job_id = client.submit({"prompt": "Blocking and keyless?", "reply_to": replies})
                result = client.wait([job_id], timeout=60)[job_id]
                assert result.status == "succeeded", (result, host.log()[-2000:])
                assert result.output == answer("Blocking and keyless?")
                assert client.get_result(job_id) == result
                # The worker's notice, deleted once the iterator moves past it.
                notices = list(client.notices(replies, max_notices=1, timeout=30))
                assert notices == [
                    Notice(
                        id=job_id,
                        status="succeeded",
                        result_container=settings["RESULTS_CONTAINER"],
                        result_blob=f"{job_id}.json",
                    )
                ]
                assert list(client.notices(replies, once=True)) == []
            # The caller's credential was used, for storage, from a worker thread: a slow sign-in
            # never blocks the private loop.
            assert credential.requests
            assert threading.get_ident() not in {thread for thread, _ in credential.requests}
            assert {scopes for _, scopes in credential.requests} == {("https://storage.azure.com/.default",)}

    await asyncio.to_thread(blocking)
    assert aoai.stats()["completions"] == 1


async def put_notices(jobs: Jobs, queue: str, *bodies: Notice | str) -> None:
    client = jobs.queues.get_queue_client(queue)
    await client.create_queue()
    for body in bodies:
        await client.send_message(body if isinstance(body, str) else body.model_dump_json())


async def messages_in(jobs: Jobs, queue: str) -> int:
    """Messages on the queue, invisible ones (received, not deleted) included."""
    properties = await jobs.queues.get_queue_client(queue).get_queue_properties()
    return int(properties.approximate_message_count)


def notice(job_id: str) -> Notice:
    return Notice(id=job_id, status="succeeded", result_container="results", result_blob=f"{job_id}.json")


async def test_blocking_notices_iterate_and_delete_only_what_the_caller_got_past(
    local_dev_settings: dict[str, str], jobs_for: Any
) -> None:
    jobs: Jobs = await jobs_for(local_dev_settings)
    stopped, drained = local_dev_settings["REPLY_QUEUES_ALLOWED"], local_dev_settings["REPLY_QUEUES_ALLOWED"] + "-2"
    await put_notices(jobs, stopped, notice("n-1"), "not a notice", notice("n-2"), notice("n-3"))
    await put_notices(jobs, drained, notice("n-4"), notice("n-5"))

    def blocking() -> tuple[list[str], list[str]]:
        with JobsClient.from_settings(local_dev_settings) as client:
            following = client.notices(stopped, once=True)
            got = [next(following).id, next(following).id]  # asking for n-2 deletes n-1
            following.close()  # n-2 was not got past: it stays
            with pytest.raises(QueueNotFoundError):
                next(client.notices(f"{stopped}-missing"))
            return got, [n.id for n in client.notices(drained, once=True)]

    got, all_of_them = await asyncio.to_thread(blocking)
    assert got == ["n-1", "n-2"]  # the message that is not a notice was skipped
    assert await messages_in(jobs, stopped) == 3  # the non-notice, n-2 and n-3 (received, not deleted)
    assert all_of_them == ["n-4", "n-5"]  # `once` stopped at the empty queue
    assert await messages_in(jobs, drained) == 0


async def test_blocking_submit_many_and_wait_behave_like_the_async_ones(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    settings = local_dev_settings
    jobs: Jobs = await jobs_for(settings)

    def refuse_invalid() -> None:
        with JobsClient.from_settings(settings) as client, pytest.raises(InvalidJobError) as caught:
            client.submit_many([{"prompt": "fine"}, {"prompt": "fine", "colour": "red"}])
        assert (caught.value.index, caught.value.field) == (1, "colour")

    await asyncio.to_thread(refuse_invalid)
    assert await message_count(jobs) == 0  # one invalid job: nothing sent
    host = start_host(settings)
    seen: list[tuple[SubmitProgress, int]] = []

    def blocking() -> tuple[list[str], dict[str, Result], WaitTimeoutError, int]:
        batch: list[Job | dict[str, Any]] = [Job(prompt=f"Blocking batch {i}?") for i in range(6)]
        batch += [{"id": f"sync-{i}", "prompt": f"Blocking dict {i}?"} for i in range(6)]
        with JobsClient.from_settings(settings) as client:
            ids = client.submit_many(batch, concurrency=3, progress=lambda p: seen.append((p, threading.get_ident())))
            asked = [*reversed(ids), ids[0]]  # any order, repeats collapse
            results = client.wait(asked, timeout=60, poll_interval=0.2)
            with pytest.raises(WaitTimeoutError) as waited:
                client.wait([ids[0], "never-sent"], timeout=0.3)
            return ids, results, waited.value, threading.get_ident()

    ids, results, timeout, caller = await asyncio.to_thread(blocking)
    assert ids[6:] == [f"sync-{i}" for i in range(6)]
    assert all(len(job_id) == 32 and int(job_id, 16) >= 0 for job_id in ids[:6])  # uuid4 hex ids assigned
    assert list(results) == list(reversed(ids))  # in the order asked
    assert all(r.status == "succeeded" for r in results.values()), host.log()[-2000:]
    assert results["sync-3"].output == answer("Blocking dict 3?")
    assert results[ids[0]].output == answer("Blocking batch 0?")
    assert [p.done for p, _ in seen] == list(range(1, 13)) and {p.total for p, _ in seen} == {12}
    assert sorted(p.id for p, _ in seen) == sorted(ids)
    assert {thread for _, thread in seen} == {caller}  # progress runs on the calling thread
    assert timeout.missing == ["never-sent"] and list(timeout.results) == [ids[0]]
    assert aoai.stats()["completions"] == 12
