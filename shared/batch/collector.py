"""Collect (the ``BATCH_COLLECT_SCHEDULE`` timer): finished batches -> results, exactly like the live lane's.

Every ``submitted`` manifest's batch is polled (one ``retrieve`` a tick). Once it has ended, the
collector takes the manifest (``records.acquire``: of two collectors one proceeds, the other moves on)
and settles each of its jobs:

- a line in the output file becomes the job's result through the live lane's own path
  (``shared.delivery.finish``: create-only, a stored *failed* result replaced at the version read, the notice
  at-least-once), with ``lane: "batch"``, the batch deployment and the time spent in the batch; a
  reasoning model's empty answer is ``output_budget_exhausted`` there too;
- a line in the error file becomes a failed result with the service's code;
- a job the batch never ran (the batch ``failed``, ``expired`` or was ``cancelled``, or a completed one
  left it out) goes back to staging once (``BATCH_ON_FAILURE=restage``, the default) or to the live
  jobs queue (``live``); sent back once already, it fails with ``batch_expired``, ``batch_failed``,
  ``batch_cancelled`` or ``batch_result_missing``. A batch the service failed for lack of enqueued-token
  quota (``token_limit_exceeded``) sends its jobs back without counting: they wait for quota.

Each job's staged copy is deleted once it is settled, then the batch's files, then the manifest. A crash
anywhere leaves the manifest (its lock runs out) and the files, and the next collector redoes only what
is missing: a job whose staged copy is gone was settled; a stored result is never written twice (one
from this run of the batch is recognised by its ``started_at``, which is the job's staging time).
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

from azure.storage.blob.aio import ContainerClient
from openai.types import Batch

from shared import store
from shared.connections import Runtime, get_runtime
from shared.constants import brief
from shared.delivery import budget_exhausted, finish
from shared.jobs import ErrorInfo, JobReference, Result
from shared.settings import batch_lane_on

from . import records
from .lines import Answer, parse_answer

# Named here, not through ``records``: tests stand in for these three in the collector alone.
from .records import LOCK_SECONDS, delete_staged, save
from .staging import delivery_for

logger = logging.getLogger(__name__)

OPEN = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
NOT_RUN_CODES = {
    "failed": "batch_failed",
    "expired": "batch_expired",
    "cancelled": "batch_cancelled",
    "completed": "batch_result_missing",
}
QUOTA_CODE = "token_limit_exceeded"
DOWNLOAD_TIMEOUT_SECONDS = 600.0
SPOOL_BYTES = 32 * 1024 * 1024  # an output file bigger than this waits on disk, not in memory
CHUNK = 256  # answers settled together (each at most ``records.CONCURRENCY`` storage calls at a time)


@dataclass
class CollectReport:
    """What one tick did."""

    polled: int = 0  # batches asked for their status
    open: int = 0  # still running
    busy: int = 0  # ended, but another collector holds the manifest
    collected: list[str] = field(default_factory=list)  # batch ids (or manifest ids) settled this tick
    written: int = 0  # results stored by this collector
    restaged: int = 0
    to_live: int = 0
    failed_unrun: int = 0  # jobs failed because the batch ended without running them, twice
    unreadable_lines: int = 0


async def collect(runtime: Runtime | None = None) -> CollectReport:
    """One tick: poll every submitted batch; settle the ended ones."""
    if runtime is None:
        if not batch_lane_on():
            return CollectReport()  # the lane is off (set it again to collect batches still out)
        runtime = get_runtime()
    if not runtime.settings.batch_deployment:
        return CollectReport()
    collector = _Collector(runtime, await records.ensure_staging(runtime), owner=uuid.uuid4().hex)
    for held in await records.list_manifests(collector.container):
        if held.manifest.state != "submitted":
            continue
        try:
            await collector.collect(held)
        except records.Lost as exc:
            logger.info("batch collect: %s; left to its new holder", exc)
        except Exception as exc:  # one batch's trouble must not stop the others
            logger.warning(
                "batch collect: manifest %s not settled, next tick retries: %s", held.manifest.id, brief(exc)
            )
    if collector.report.collected:
        logger.info("batch collect: %s", collector.report)
    return collector.report


@dataclass
class _Collector:
    runtime: Runtime
    container: ContainerClient
    owner: str
    report: CollectReport = field(default_factory=CollectReport)
    taken: records.Held | None = None  # the manifest being settled, as last written

    async def collect(self, held: records.Held) -> None:
        manifest = held.manifest
        batch = None
        if manifest.batch_id is not None:
            batch = await self.runtime.openai.batches.retrieve(manifest.batch_id)
            self.report.polled += 1
        status = batch.status if batch is not None else (manifest.status or "failed")
        if status in OPEN:
            self.report.open += 1
            return
        self.taken = await records.acquire(self.container, held, self.owner, _now())
        if self.taken is None:
            self.report.busy += 1
            return
        try:
            answered: set[str] = set()
            files = (batch.output_file_id, batch.error_file_id) if batch is not None else ()
            for file_id in files:
                if file_id and batch is not None:
                    answered |= await self._settle_file(file_id, manifest, batch)
            unrun = [job_id for job_id in manifest.job_ids if job_id not in answered]
            await records.each(unrun, partial(self._send_back, manifest=manifest, batch=batch, status=status))
            await self._delete_files(manifest, batch)
            await records.delete_manifest(self.container, self.taken)
        except Exception:  # given back for the next tick (a process that dies keeps it until its lock runs out)
            await records.release(self.container, self.taken)
            raise
        self.report.collected.append(manifest.batch_id or manifest.id)
        logger.info("batch %s %s: settled %d jobs", manifest.batch_id or manifest.id, status, len(manifest.job_ids))

    async def _settle_file(self, file_id: str, manifest: records.Manifest, batch: Batch) -> set[str]:
        """Every answer in one output or error file; returns the jobs it answered."""
        wanted, answered, pending = set(manifest.job_ids), set(), []
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            async with self.runtime.openai.files.with_streaming_response.content(
                file_id, timeout=DOWNLOAD_TIMEOUT_SECONDS
            ) as response:
                async for chunk in response.iter_bytes():
                    spool.write(chunk)
            spool.seek(0)
            for line in spool:
                if not line.strip():
                    continue
                try:
                    answer = parse_answer(line)
                except ValueError as exc:
                    self.report.unreadable_lines += 1
                    logger.warning("batch %s: a line of file %s is not an answer: %s", batch.id, file_id, exc)
                    continue
                if answer.job_id not in wanted or answer.not_run:
                    continue  # not_run: sent back with the jobs the batch left out
                answered.add(answer.job_id)
                pending.append(answer)
                if len(pending) >= CHUNK:
                    await records.each(pending, partial(self._settle_answer, manifest=manifest, batch=batch))
                    pending = []
                    await self._renew()
        await records.each(pending, partial(self._settle_answer, manifest=manifest, batch=batch))
        return answered

    async def _renew(self) -> None:
        """Keep the manifest while a big batch is settled (raises Lost if another collector has it now)."""
        assert self.taken is not None
        lock_until, now = self.taken.manifest.lock_until, _now()
        if lock_until is None or lock_until - now < timedelta(seconds=LOCK_SECONDS / 2):
            self.taken = await save(self.container, self.taken, lock_until=now + timedelta(seconds=LOCK_SECONDS))

    async def _settle_answer(self, answer: Answer, *, manifest: records.Manifest, batch: Batch) -> None:
        staged = await self._ours(answer.job_id, manifest)
        if staged is None:
            return
        if not await self._stored(staged):
            error = answer.error
            if answer.completion is not None:
                error = budget_exhausted(answer.completion)
            amend = partial(as_batch, deployment=manifest.deployment, batch=batch)
            delivery = delivery_for(self.runtime, staged)
            written = await finish(delivery, completion=answer.completion, error=error, amend=amend)
            self.report.written += written is not None
        await delete_staged(self.container, answer.job_id)

    async def _send_back(self, job_id: str, *, manifest: records.Manifest, batch: Batch | None, status: str) -> None:
        """A job the batch never ran: back to staging or the live queue once, else a failed result."""
        staged = await self._ours(job_id, manifest)
        if staged is None:
            return
        stored = await store.stored_result(self.runtime, job_id)
        if stored is not None and stored.final:
            await delete_staged(self.container, job_id)
            return
        reported = batch.errors.data or [] if batch is not None and batch.errors is not None else []
        errors = [f"{error.code}: {error.message}" for error in reported] or manifest.errors
        quota = bool(errors) and all(error.startswith(QUOTA_CODE) for error in errors)
        settings = self.runtime.settings
        if settings.batch_on_failure == "live" and not quota:
            await self._to_live(staged)
            await delete_staged(self.container, job_id)
            self.report.to_live += 1
        elif staged.restaged < 1 or quota:
            metadata = {k: v for k, v in staged.metadata.items() if k != records.CLAIM}
            metadata[records.RESTAGED] = str(staged.restaged + (0 if quota else 1))
            if await records.set_claim(self.container, job_id, staged.etag, metadata):
                self.report.restaged += 1
        else:
            code = NOT_RUN_CODES.get(status, "batch_failed")
            said = f" ({'; '.join(errors)})" if errors else ""
            message = (
                f"batch {manifest.batch_id or '(not created)'} {status} without running this job{said}, and it "
                "had already been sent back once: send the job again (with lane live to have it answered now)"
            )
            amend = partial(as_batch, deployment=manifest.deployment, batch=batch)
            delivery = delivery_for(self.runtime, staged)
            failed = await finish(delivery, error=ErrorInfo(code=code, message=message), amend=amend)
            self.report.failed_unrun += failed is not None
            await delete_staged(self.container, job_id)

    async def _ours(self, job_id: str, manifest: records.Manifest) -> records.Staged | None:
        """The staged job, if it is still staged and held by this manifest (a job sent back may be held
        by a newer manifest already, and a settled one is gone)."""
        staged = await records.load_staged(self.container, job_id)
        return staged if staged is not None and staged.claim == manifest.id else None

    async def _stored(self, staged: records.Staged) -> bool:
        """Whether the job already has its result from this batch (or a final one): then only a pending
        notice is sent. An older *failed* result is replaced, as the live lane replaces it."""
        job_id = staged.record.job.id
        assert job_id is not None
        stored = await store.stored_result(self.runtime, job_id)
        if stored is None:
            return False
        if not stored.final:
            body = await (await self.runtime.results().download_blob(f"{job_id}.json")).readall()
            earlier = Result.model_validate_json(body)
            if earlier.lane != "batch" or earlier.timings.started_at != staged.record.staged_at:
                return False
        await store.notify_pending(self.runtime, job_id, stored)
        return True

    async def _to_live(self, staged: records.Staged) -> None:
        """The job on the live jobs queue, through the claim check (it may be too big for a message)."""
        job = staged.record.job.model_copy(update={"lane": "live"})
        assert job.id is not None
        payloads = store.payloads(self.runtime)
        await self.runtime.ensure_once("payloads", payloads.create_container)
        await payloads.upload_blob(f"{job.id}.json", job.model_dump_json(exclude_none=True).encode(), overwrite=True)
        queue = self.runtime.queues.get_queue_client(self.runtime.settings.jobs_queue)
        await queue.send_message(JobReference.for_job(job.id).model_dump_json())
        logger.info("job %s sent to the live lane after its batch ended without running it", job.id)

    async def _delete_files(self, manifest: records.Manifest, batch: Batch | None) -> None:
        ids = [manifest.file_id] + ([batch.output_file_id, batch.error_file_id] if batch is not None else [])
        for file_id in dict.fromkeys(i for i in ids if i):
            await records.delete_file(self.runtime, file_id)


def as_batch(result: Result, *, deployment: str, batch: Batch | None) -> Result:
    """The live lane's result as the batch lane stores it: its lane, the batch deployment, time in the batch."""
    timings = result.timings.model_copy(update={"batch_seconds": batch_seconds(batch)})
    return result.model_copy(update={"lane": "batch", "deployment": deployment, "timings": timings})


def batch_seconds(batch: Batch | None) -> float | None:
    if batch is None:
        return None
    ended = batch.completed_at or batch.expired_at or batch.cancelled_at or batch.failed_at
    return float(ended - batch.created_at) if ended else None


def _now() -> datetime:
    return datetime.now(UTC)
