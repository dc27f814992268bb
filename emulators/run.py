"""`make run`: the whole product on this machine, then the samples through it.

Starts Azurite and, unless AZURE_OPENAI_ENDPOINT (environment or local.settings.json) names a
real resource, the Azure OpenAI emulator and the managed-identity endpoint. Starts the worker
with `func start` when Azure Functions Core Tools is installed, else with the local queue host.
Enqueues every job in samples/, prints each result as it lands and a summary, and exits 0 once
all are done (1 if any is still missing at the timeout).

With a real endpoint, the worker authenticates with your `az login` (AZURE_TOKEN_CREDENTIALS=dev),
exactly the code path it uses with a managed identity in Azure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from emulators import _process
from emulators import managed_identity as identity
from emulators.stack.services import DEPLOYMENTS, start_azurite, start_identity_endpoint, start_openai_emulator
from emulators.stack.workers import host_command
from emulators.tokens import REPO_ROOT, TokenIssuer, state_dir
from shared.settings import read_local_settings

PLACEHOLDER = "YOUR-RESOURCE"


def configured_settings(path: Path) -> dict[str, str]:
    """local.settings.json Values (if the developer made one), with the environment on top."""
    values = read_local_settings(path) if path.exists() else {}
    keys = set(json.loads((REPO_ROOT / "local.settings.sample.json").read_text())["Values"]) | set(values)
    values.update({k: os.environ[k] for k in keys if os.environ.get(k)})
    return values


def real_endpoint(settings: dict[str, str]) -> str | None:
    endpoint = settings.get("AZURE_OPENAI_ENDPOINT", "")
    return endpoint if endpoint.startswith("https://") and PLACEHOLDER not in endpoint else None


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    if shutil.which("func"):
        command = ["func", "start", "--python"]
        print("worker: Azure Functions Core Tools (func start)")
    else:
        command = host_command(log_path.parent)  # its settings come from env below
        print("worker: local queue host (func not found; python -m emulators.functions_host)")
    with log_path.open("wb") as log:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


async def run_samples(env: dict[str, str], samples: list[Path], timeout: float) -> int:
    connection = env["AzureWebJobsStorage"]
    jobs = {path.name: json.loads(path.read_text()) for path in samples}
    async with (
        QueueServiceClient.from_connection_string(connection) as queues,
        BlobServiceClient.from_connection_string(connection) as blobs,
    ):
        queue = queues.get_queue_client(env["JOBS_QUEUE"])
        with contextlib.suppress(ResourceExistsError):
            await queue.create_queue()
        for body in jobs.values():
            await queue.send_message(json.dumps(body))
        print(f"enqueued {len(jobs)} sample jobs on '{env['JOBS_QUEUE']}'\n")
        container = blobs.get_container_client(env["RESULTS_CONTAINER"])
        pending = {body["id"]: name for name, body in jobs.items()}
        outcomes: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                try:
                    data = await (await container.download_blob(f"{job_id}.json")).readall()
                except ResourceNotFoundError:
                    continue
                result = json.loads(data)
                outcomes[job_id] = result["status"]
                print(describe(pending.pop(job_id), result))
            await asyncio.sleep(0.5)
        replies = queues.get_queue_client(env.get("REPLY_QUEUES_ALLOWED", "job-replies").split(",")[0])
        with contextlib.suppress(ResourceNotFoundError):
            async for notice in replies.receive_messages():
                print(f"reply_to notice: {notice.content}")
    succeeded = sum(1 for s in outcomes.values() if s == "succeeded")
    print(
        f"\nsummary: {len(outcomes)}/{len(jobs)} done, {succeeded} succeeded, "
        f"{len(outcomes) - succeeded} failed, {len(pending)} missing"
    )
    if pending:
        print(f"still waiting for: {', '.join(sorted(pending))}")
    return 0 if not pending else 1


def describe(sample: str, result: dict[str, Any]) -> str:
    if result["status"] == "succeeded":
        detail = json.dumps(result["output_json"]) if "output_json" in result else result.get("output", "")
        usage = result.get("usage", {})
        reasoning = f", {usage['reasoning_tokens']} reasoning" if usage.get("reasoning_tokens") else ""
        tokens = f"{usage.get('total_tokens')} tokens{reasoning}"
        return f"✓ {sample} -> {result['id']}: {detail}  [{result.get('model')}, {tokens}]"
    error = result["error"]
    return f"✗ {sample} -> {result['id']}: {error['code']}: {error['message']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "samples")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--settings", type=Path, default=REPO_ROOT / "local.settings.json")
    args = parser.parse_args(argv)
    settings = configured_settings(args.settings)
    state = state_dir()
    endpoint = real_endpoint(settings)
    with contextlib.ExitStack() as stack:
        print("starting Azurite (in memory, telemetry off) ...")
        azurite = stack.enter_context(start_azurite(keyless=False))
        env = {**os.environ, **settings, **azurite.settings()}
        env.setdefault("JOBS_QUEUE", "jobs")
        env.setdefault("RESULTS_CONTAINER", "results")
        env.setdefault("REPLY_QUEUES_ALLOWED", "job-replies")
        for name in ("AzureWebJobsStorage__credential", "AzureWebJobsStorage__accountName"):
            env.pop(name, None)  # local storage is Azurite, reached by its connection string
        if endpoint:
            print(f"Azure OpenAI: {endpoint} (your az login)")
            env["AZURE_TOKEN_CREDENTIALS"] = "dev"
        else:
            issuer = TokenIssuer(state)
            mi = stack.enter_context(start_identity_endpoint(issuer))
            grants = [identity.SYSTEM_ASSIGNED.object_id]
            aoai = stack.enter_context(start_openai_emulator(issuer, grants=grants, latency_ms=200))
            print(f"Azure OpenAI: emulator at {aoai.endpoint} (managed identity at {mi.running.url})")
            env.update(mi.env)
            env.update(
                AZURE_OPENAI_ENDPOINT=aoai.endpoint,
                AZURE_OPENAI_DEPLOYMENT=DEPLOYMENTS[0],
                AZURE_OPENAI_ALLOWED_DEPLOYMENTS=",".join(DEPLOYMENTS),
                AZURE_TOKEN_CREDENTIALS="ManagedIdentityCredential",
            )
        log_path = state / "worker.log"
        worker = start_worker(env, log_path)
        stack.callback(_process.stop, worker)
        print(f"worker log: {log_path}")
        code = asyncio.run(run_samples(env, sorted(args.samples.glob("*.json")), args.timeout))
        if worker.poll() is not None:
            print(f"the worker exited early (code {worker.returncode}); see {log_path}")
            return 1
        return code


if __name__ == "__main__":
    sys.exit(main())
