"""`make run`: the whole product on this machine, then the samples through it.

Starts Azurite, an OTLP receiver for traces and, unless AZURE_OPENAI_ENDPOINT (environment or
local.settings.json) names a real resource, the Azure OpenAI emulator and the managed-identity
endpoint. Starts the worker with `func start` when Azure Functions Core Tools is installed, else
with the local queue host, exporting to the receiver (OTEL_EXPORTER_OTLP_ENDPOINT). Sends every job
in samples/ with the Python producer client (each in a `send` span whose trace context the job
carries), prints each result as it lands, a summary and each sample's trace, and exits 0 once all
are done (1 if any is still missing at the timeout). On the emulator the batch lane is on (a
GlobalBatch deployment, its timers every 2 s), so the batch-lane sample is staged, submitted and
collected while you watch; and the samples' other deployments are there (``emulators/samples.py``): a
Responses-only model for the Responses, background and filtered samples, a flex model whose flex capacity
is short, so the flex sample falls back before its deadline. A sample naming a deployment the worker does
not allow (with a real endpoint: those) is left out.

With a real endpoint, the worker authenticates with your `az login` (AZURE_TOKEN_CREDENTIALS=dev),
exactly the code path it uses with a managed identity in Azure.

``start_stack`` starts all of it; `make up` (emulators/up.py) starts the same, keyless, and keeps it up.
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
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue.aio import QueueClient, QueueServiceClient
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from emulators import _process, otlp
from emulators import managed_identity as identity
from emulators import samples as sample_world
from emulators.aoai.models import model_for
from emulators.stack.services import (
    DEPLOYMENTS,
    OpenAIEmulator,
    OtlpReceiver,
    start_azurite,
    start_identity_endpoint,
    start_openai_emulator,
    start_otlp_receiver,
)
from emulators.stack.workers import host_command
from emulators.tokens import REPO_ROOT, TokenIssuer, state_dir
from shared.constants import DEFAULT_PAYLOADS_CONTAINER
from shared.errors import ConfigurationError, InvalidJobError, QueueNotFoundError
from shared.jobs import Result
from shared.producer.aio import JobsClient
from shared.settings import Settings, read_local_settings

PLACEHOLDER = "YOUR-RESOURCE"
BATCH_DEPLOYMENT = f"{DEPLOYMENTS[0]}-batch"  # the emulator's GlobalBatch deployment
PRODUCER_SERVICE = "make-run"  # service.name of this process's spans


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


@dataclass
class Sample:
    """One file in samples/, and what became of it."""

    name: str
    body: dict[str, Any]
    raw: bool = False  # sent without the producer client, which refused it
    result: Result | None = None

    @property
    def id(self) -> str:
        return str(self.body["id"])


async def run_samples(
    env: dict[str, str], samples: list[Path], timeout: float, receiver: OtlpReceiver | None = None
) -> int:
    """Send the samples through the Python producer client, print each result as it lands, then a
    summary and (with ``receiver``) each sample's trace."""
    connection = env["AzureWebJobsStorage"]
    jobs = [Sample(path.name, json.loads(path.read_text())) for path in samples]
    sent = datetime.now(UTC)
    async with (
        JobsClient.from_connection_string(
            connection,
            queue=env["JOBS_QUEUE"],
            results_container=env["RESULTS_CONTAINER"],
            payloads_container=env.get("PAYLOADS_CONTAINER", DEFAULT_PAYLOADS_CONTAINER),
        ) as client,
        QueueServiceClient.from_connection_string(connection) as queues,
    ):
        await send_samples(client, queues.get_queue_client(env["JOBS_QUEUE"]), jobs)
        await collect_results(client, jobs, timeout)
        await print_notices(client, env["REPLY_QUEUES_ALLOWED"].split(",")[0])
    done = [job for job in jobs if job.result is not None]
    succeeded = sum(1 for job in done if job.result is not None and job.result.status == "succeeded")
    missing = sorted(job.id for job in jobs if job.result is None)
    print(
        f"\nsummary: {len(done)}/{len(jobs)} done, {succeeded} succeeded, "
        f"{len(done) - succeeded} failed, {len(missing)} missing"
    )
    if missing:
        print(f"still waiting for: {', '.join(missing)}")
    for note in sample_world.notes([(job.body, job.result) for job in done if job.result is not None], sent):
        print(note)
    if receiver is not None:
        await print_traces(receiver, jobs, env["JOBS_QUEUE"])
    return 0 if not missing else 1


async def send_samples(client: JobsClient, queue: QueueClient, jobs: list[Sample]) -> None:
    """Each sample through the producer client, which validates it, sends it in a ``send`` span and
    puts that span's trace context in the job; one it refuses goes as it is, to show the worker's answer."""
    with contextlib.suppress(ResourceExistsError):
        await queue.create_queue()  # infra creates it in Azure
    now = datetime.now(UTC)
    for job in jobs:
        job.body = sample_world.prepared(job.body, now)
        try:
            await client.submit(job.body)
        except InvalidJobError as exc:
            print(
                f"{job.name}: the producer client refuses it ({exc.code}); sent as is, as a producer "
                "without the client could, to show the worker's answer"
            )
            await queue.send_message(json.dumps(job.body))
            job.raw = True
    print(f"enqueued {len(jobs)} sample jobs on '{client.queue_name}'\n")


async def collect_results(client: JobsClient, jobs: list[Sample], timeout: float) -> None:
    pending = {job.id: job for job in jobs}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for job_id, job in list(pending.items()):
            result = await client.get_result(job_id)
            if result is not None:
                del pending[job_id]
                job.result = result
                print(describe(job.name, result))
        if pending:
            await asyncio.sleep(0.5)


async def print_notices(client: JobsClient, reply_queue: str) -> None:
    with contextlib.suppress(QueueNotFoundError):
        async for notice in client.notices(reply_queue, once=True):
            print(f"reply_to notice: {notice.model_dump_json(exclude_none=True)}")


def describe(sample: str, result: Result) -> str:
    if result.status == "succeeded":
        detail = json.dumps(result.output_json) if result.output_json is not None else (result.output or "")
        usage = result.usage
        reasoning = f", {usage.reasoning_tokens} reasoning" if usage and usage.reasoning_tokens else ""
        tokens = f"{usage.total_tokens if usage else '?'} tokens{reasoning}"
        lane = ", Responses API" if result.api == "responses" else ""
        if result.lane == "batch":
            in_batch = result.timings.batch_seconds
            lane += f", batch lane{f' ({in_batch:.0f} s in the batch)' if in_batch is not None else ''}"
        return f"✓ {sample} -> {result.id}: {detail}  [{result.model}, {tokens}{lane}]"
    error = result.error
    kept = f" (partial answer kept, flagged: {result.output!r})" if result.output_filtered else ""
    return f"✗ {sample} -> {result.id}: {error.code if error else '?'}: {error.message if error else ''}{kept}"


# ---- traces ----


def start_tracing(endpoint: str) -> TracerProvider:
    """This process's OpenTelemetry SDK, exporting to the local receiver, so the producer client's
    ``send`` spans are recorded and their context goes into the sample jobs."""
    provider = TracerProvider(resource=Resource.create({"service.name": PRODUCER_SERVICE}))
    exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    return provider


def trace_id_of(receiver: OtlpReceiver, job: Sample, queue: str) -> str | None:
    """The trace a sample ran in: its result's ``trace_id`` (the worker's), else the trace of the
    ``send`` span whose message the worker took (the result's ``message_id``)."""
    result = job.result
    if result is None:
        return None
    if result.trace_id:
        return result.trace_id
    for span in receiver.spans(name=f"send {queue}"):
        if result.message_id and span.attributes.get("messaging.message.id") == result.message_id:
            return span.trace_id
    return None


def trace_lines(receiver: OtlpReceiver, jobs: list[Sample], queue: str) -> tuple[list[str], bool]:
    """One line per sample, and whether every trace has its worker side (a CONSUMER span) yet."""
    lines, complete = [], True
    for job in jobs:
        trace_id = trace_id_of(receiver, job, queue)
        if trace_id is None:
            why = "sent without the producer client" if job.raw else "no result" if job.result is None else "none"
            lines.append(f"  {job.id}: no trace ({why})")
            continue
        spans = receiver.spans(trace_id=trace_id)
        complete = complete and any(span.kind == "CONSUMER" for span in spans)
        lines.append(f"  {job.id} trace {trace_id[:8]}…: {otlp.summarize(spans)}")
    return lines, complete


def worker_services(stats: dict[str, Any]) -> list[str]:
    return [service for service in stats["services"] if service != PRODUCER_SERVICE]


async def print_traces(receiver: OtlpReceiver, jobs: list[Sample], queue: str, wait: float = 3.0) -> None:
    """Each sample's trace as the receiver got it, once the worker's spans (and, if it exports, its
    first metrics: every OTEL_METRIC_EXPORT_INTERVAL) are in, or ``wait`` seconds have passed."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush()  # this process's send spans
    deadline = time.monotonic() + wait
    while True:
        lines, complete = trace_lines(receiver, jobs, queue)
        stats = receiver.stats()
        settled = complete and (bool(stats["metric_names"]) or not worker_services(stats))
        if settled or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.2)
    print(f"\ntraces (OTLP receiver at {receiver.endpoint}):")
    if not stats["spans"]:
        print("  no traces received (is telemetry on?)")
        return
    print("\n".join(lines))
    if not worker_services(stats):
        print("  no traces received from the worker (is telemetry on? it exports to OTEL_EXPORTER_OTLP_ENDPOINT)")
    if stats["metric_names"]:
        print(f"  metrics: {', '.join(stats['metric_names'])}")


def start_traces(stack: contextlib.ExitStack, env: dict[str, str], *, producer_spans: bool = True) -> OtlpReceiver:
    """The OTLP receiver, the worker's settings to export to it, and (``producer_spans``) this process's SDK
    exporting there."""
    receiver = stack.enter_context(start_otlp_receiver())
    env.update(receiver.env())  # OTEL_EXPORTER_OTLP_ENDPOINT and short export intervals, for the worker
    if producer_spans:
        stack.callback(start_tracing(receiver.endpoint).shutdown)  # flushed before the receiver stops
    print(f"traces: OTLP receiver at {receiver.endpoint} (the worker's OTEL_EXPORTER_OTLP_ENDPOINT)")
    return receiver


def batch_lane(aoai: OpenAIEmulator) -> dict[str, str]:
    """The batch lane on the emulator: a GlobalBatch deployment of the default model, answering in about a
    second, and the two timers every couple of seconds (the defaults, 5 minutes and 1 minute, suit Azure)."""
    aoai.add_batch_deployment(BATCH_DEPLOYMENT, model=model_for(DEPLOYMENTS[0]))  # the same versioned model
    aoai.configure_batches(processing_seconds=1)
    print(f"batch lane: {BATCH_DEPLOYMENT} on the emulator, submitted and collected every 2 s")
    return {
        "BATCH_DEPLOYMENT": BATCH_DEPLOYMENT,
        "BATCH_SUBMIT_SCHEDULE": "*/2 * * * * *",
        "BATCH_COLLECT_SCHEDULE": "1/2 * * * * *",
    }


def runnable(
    samples: list[Path], *, batch_answers_soon: bool, deployments: Collection[str] | None = None
) -> list[Path]:
    """The samples to send: with a real endpoint a batch is answered within 24 hours, not while we wait; a sample
    naming a deployment not in ``deployments`` (the worker's allowed ones) would only be refused."""
    kept = []
    for path in samples:
        body = json.loads(path.read_text())
        if not batch_answers_soon and body.get("lane") == "batch":
            print(f"{path.name}: left out (a real batch answers within 24 h): python -m shared submit --lane batch ...")
        elif deployments is not None and body.get("deployment") not in (None, *deployments):
            print(f"{path.name}: left out (this worker has no deployment '{body['deployment']}': the emulator's)")
        else:
            kept.append(path)
    return kept


def allowed_deployments(env: dict[str, str]) -> tuple[str, ...] | None:
    """The deployments the worker lets jobs name (None: its settings do not read, and the worker will say why)."""
    try:
        return Settings.from_env(env).allowed_deployments
    except ConfigurationError:
        return None


@dataclass
class LocalStack:
    """What `make run` and `make up` start, all stopped by the ExitStack they were started in."""

    env: dict[str, str]  # the worker's environment: its app settings and how it reaches each stand-in
    endpoint: str | None  # the real Azure OpenAI endpoint configured, or None: the emulator
    receiver: OtlpReceiver
    worker: subprocess.Popen[bytes]
    log_path: Path
    ca_bundle: Path | None  # what trusts the keyless Azurite's certificate (None: plain HTTP with the key)


def start_stack(
    stack: contextlib.ExitStack,
    settings: dict[str, str],
    *,
    keyless: bool = False,
    cert_dir: Path | None = None,
    producer_spans: bool = True,
    samples: bool = False,
) -> LocalStack:
    """Azurite (``keyless``: HTTPS and tokens, as in Azure, its certificate made in ``cert_dir``; else the
    development key), the OTLP receiver and, unless ``settings`` name a real endpoint, the managed-identity
    endpoint and the Azure OpenAI emulator (its batch lane on; with ``samples``, the deployments and timing the
    samples need, ``emulators/samples.py``); then the worker. Each is stopped when ``stack`` closes."""
    state, endpoint = state_dir(), real_endpoint(settings)
    print(f"starting Azurite ({'keyless: HTTPS and tokens, ' if keyless else ''}in memory, telemetry off) ...")
    azurite = stack.enter_context(start_azurite(keyless=keyless, cert_dir=cert_dir))
    env = {**os.environ, **settings, **azurite.settings()}
    env.setdefault("JOBS_QUEUE", "jobs")
    env.setdefault("RESULTS_CONTAINER", "results")
    env.setdefault("REPLY_QUEUES_ALLOWED", "job-replies")
    # Local storage is this Azurite: by its connection string, or keyless by the __*ServiceUri settings it gave
    # (a connection string would win over those, so none may be left).
    for name in ("AzureWebJobsStorage__credential", "AzureWebJobsStorage__accountName"):
        env.pop(name, None)
    if keyless:
        env.pop("AzureWebJobsStorage", None)
    if endpoint:
        print(f"Azure OpenAI: {endpoint} (your az login)")
        env["AZURE_TOKEN_CREDENTIALS"] = "dev"
    else:
        issuer = TokenIssuer(state)
        mi = stack.enter_context(start_identity_endpoint(issuer))
        grants = [identity.SYSTEM_ASSIGNED.object_id]
        deployments = (*DEPLOYMENTS, sample_world.RESPONSES_DEPLOYMENT, sample_world.FLEX_DEPLOYMENT)
        extra: dict[str, Any] = {"deployments": deployments, **sample_world.EMULATOR} if samples else {}
        aoai = stack.enter_context(start_openai_emulator(issuer, grants=grants, latency_ms=200, **extra))
        print(f"Azure OpenAI: emulator at {aoai.endpoint} (managed identity at {mi.running.url})")
        env.update(mi.env)
        env.update(
            AZURE_OPENAI_ENDPOINT=aoai.endpoint,
            AZURE_OPENAI_DEPLOYMENT=DEPLOYMENTS[0],
            AZURE_OPENAI_ALLOWED_DEPLOYMENTS=",".join(DEPLOYMENTS),
            AZURE_TOKEN_CREDENTIALS="ManagedIdentityCredential",
        )
        env.update(batch_lane(aoai))
        if samples:
            aoai.update_deployment(sample_world.FLEX_DEPLOYMENT, **sample_world.flex_gap())
            env.update(sample_world.worker_settings(aoai.endpoint, deployments))
    receiver = start_traces(stack, env, producer_spans=producer_spans)
    log_path = state / "worker.log"
    worker = start_worker(env, log_path)
    stack.callback(_process.stop, worker)
    print(f"worker log: {log_path}")
    return LocalStack(env, endpoint, receiver, worker, log_path, azurite.ca_bundle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "samples")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--settings", type=Path, default=REPO_ROOT / "local.settings.json")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        local = start_stack(stack, configured_settings(args.settings), samples=True)
        allowed = allowed_deployments(local.env)
        samples = runnable(
            sorted(args.samples.glob("*.json")), batch_answers_soon=not local.endpoint, deployments=allowed
        )
        code = asyncio.run(run_samples(local.env, samples, args.timeout, local.receiver))
        if local.worker.poll() is not None:
            print(f"the worker exited early (code {local.worker.returncode}); see {local.log_path}")
            return 1
        return code


if __name__ == "__main__":
    sys.exit(main())
