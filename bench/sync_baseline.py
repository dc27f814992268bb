"""The baseline users would otherwise write: a synchronous queue function in the Python worker.

The function is ``def`` (not ``async def``), so the Python worker runs each invocation in its
thread pool, ``ThreadPoolExecutor(max_workers=PYTHON_THREADPOOL_THREAD_COUNT)``, default
``min(32, os.cpu_count() + 4)``. Inside it: ``openai.OpenAI`` (v1 endpoint) with the **sync**
``azure.identity.get_bearer_token_provider(DefaultAzureCredential(), scope)`` and the sync
blob SDK. It does the same I/O as ``shared.worker`` for a good job (result-exists check, model
call, create-only upload) and stores the same ``shared.jobs.Result`` document, so the only
difference measured is sync-in-threads versus one event loop.

Queue handling is the local host's own ``QueueListener`` (host.json semantics) with the function
call handed to the pool as the Python worker does, so both sides see the same host.

Run: ``python -m bench.sync_baseline [--cold]`` with the app settings in the environment; stop
with SIGTERM. ``--cold`` skips warming the token provider (the sync provider has no lock, so
every thread that finds it cold fetches its own token).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.identity import DefaultAzureCredential, get_bearer_token_provider
from azure.storage.blob import BlobServiceClient, ContainerClient
from openai import OpenAI

from emulators import functions_host
from emulators.signals import run_until_signalled
from shared.jobs import Result, Timings, Usage
from shared.messages import parse_job
from shared.settings import Settings, host_json_path
from shared.storage_clients import StorageEndpoints, create_credential

logger = logging.getLogger("bench.sync_baseline")


def thread_count() -> int:
    """The Python worker's default pool size (PYTHON_THREADPOOL_THREAD_COUNT when set)."""
    configured = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "").strip()
    return int(configured) if configured else min(32, (os.cpu_count() or 1) + 4)


def make_function(settings: Settings, *, warm: bool = True) -> Callable[[QueueMessage], None]:
    """Module-level clients, as a sync Functions app would create them, and the function body."""
    credential = DefaultAzureCredential()
    provider = get_bearer_token_provider(credential, settings.token_scope)
    if warm:
        provider()  # one token before any thread races for it
    client = OpenAI(
        base_url=settings.openai_base_url,
        api_key=provider,  # the v1 client sends the token as a Bearer, like the async worker's
        timeout=settings.openai_timeout,
        max_retries=settings.openai_max_retries,
    )
    storage = StorageEndpoints.from_settings()
    if storage.connection_string:
        blobs = BlobServiceClient.from_connection_string(storage.connection_string)
    else:
        assert storage.blob_url is not None
        blobs = BlobServiceClient(storage.blob_url, credential=credential)
    container: ContainerClient = blobs.get_container_client(settings.results_container)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()

    def process_job(msg: QueueMessage) -> None:
        started = datetime.now(UTC)
        job = parse_job(msg.get_body())
        job_id = job.id or msg.id or "unknown"
        blob = container.get_blob_client(f"{job_id}.json")
        try:
            blob.get_blob_properties()
            return  # already done (redelivery)
        except ResourceNotFoundError:
            pass
        began = time.monotonic()
        completion = client.chat.completions.create(
            model=job.deployment or settings.default_deployment,
            messages=job.chat_messages(),  # type: ignore[arg-type]
            **job.parameters.model_dump(exclude_none=True),
        )
        model_seconds = time.monotonic() - began
        choice = completion.choices[0]
        result = Result(
            id=job_id,
            status="succeeded",
            deployment=job.deployment or settings.default_deployment,
            model=completion.model,
            output=choice.message.content,
            finish_reason=choice.finish_reason,
            usage=Usage.model_validate(completion.usage.model_dump()) if completion.usage else None,
            metadata=job.metadata,
            attempts=msg.dequeue_count or 1,
            message_id=msg.id,
            timings=Timings(started_at=started, finished_at=datetime.now(UTC), model_seconds=model_seconds),
        )
        with contextlib.suppress(ResourceExistsError):  # another delivery stored it first
            blob.upload_blob(
                result.model_dump_json(exclude_none=True).encode(), overwrite=False, content_type="application/json"
            )

    return process_job


async def serve(*, warm: bool, stop: asyncio.Event) -> None:
    settings = Settings.from_env()
    pool = ThreadPoolExecutor(max_workers=thread_count(), thread_name_prefix="sync-func")
    function = make_function(settings, warm=warm)
    loop = asyncio.get_running_loop()

    async def invoke(msg: QueueMessage) -> None:
        # What the Python worker does with a sync function: run it in its pool, off the loop.
        await loop.run_in_executor(pool, function, msg)

    options = functions_host.QueueOptions.from_host_json(host_json_path())
    queue_function = functions_host.QueueFunction(
        name="process_job_sync",
        queue_name=settings.jobs_queue,
        connection="AzureWebJobsStorage",
        arg_name="msg",
        call=invoke,
    )
    # The host's own identity for its queues, as functions_host.serve() builds it.
    credential = create_credential()
    service = StorageEndpoints.from_settings(queue_function.connection).queue_service(credential)
    listener = functions_host.QueueListener(queue_function, service, options)
    logger.info(
        "process_job_sync: listening on queue %s (concurrency %d, %d threads, provider %s)",
        settings.jobs_queue, options.concurrency, thread_count(), "warm" if warm else "cold",
    )  # fmt: skip

    async def relay() -> None:
        await stop.wait()
        listener.stopping.set()

    relay_task = asyncio.create_task(relay())
    try:
        await listener.run()
    finally:
        relay_task.cancel()
        await service.close()
        await credential.close()
        pool.shutdown(wait=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="do not warm the token provider first")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    run_until_signalled(lambda stop: serve(warm=not args.cold, stop=stop))


if __name__ == "__main__":
    main()
