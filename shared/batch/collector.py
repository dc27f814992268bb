"""Collect (the ``BATCH_COLLECT_SCHEDULE`` timer): finished batches -> results, exactly like the live lane's.

Every ``submitted`` manifest's batch is polled (one ``retrieve`` a tick). Once it has ended, the
collector takes the manifest (``records.acquire``: of two collectors one proceeds, the other moves on)
and settles each of its jobs:

- a line in the output file (a chat completion or a response, as the manifest's ``api`` says) becomes the job's
  result through the live lane's own path (``shared.apis.Answer``, then ``shared.delivery.finish``: create-only, a
  stored *failed* result replaced at the version read, the notice at-least-once), with ``lane: "batch"``, the batch
  deployment and the time spent in the batch; a reasoning model's empty answer is ``output_budget_exhausted``, an
  answer cut by the content filter ``content_filter`` (its partial text kept, flagged), an incomplete response
  failed, as live;
- a line in the error file becomes a failed result with the service's code (a blocked prompt:
  ``content_filter`` with the categories reported);
- a job the batch never ran (the batch ``failed``, ``expired`` or was ``cancelled``, or a completed one
  left it out) goes back to staging once (``BATCH_ON_FAILURE=restage``, the default) or to the live
  jobs queue (``live``); sent back once already, it fails with ``batch_expired``, ``batch_failed``,
  ``batch_cancelled`` or ``batch_result_missing``. A batch the service failed (or the submitter gave up
  creating) for lack of enqueued-token quota (``token_limit_exceeded``) sends its jobs back without
  counting: they wait for quota, up to ``records.QUOTA_WAIT`` since a batch holding them was first
  refused, then fail with ``batch_token_limit``;
- with the lane switched off (``BATCH_DEPLOYMENT`` emptied) batches still out are collected all the same,
  and a job one never ran goes to the live queue (``live``) or fails with ``batch_lane_off``: sent back
  to staging it would wait for a lane that is off.

A status this worker does not know counts as still running (the service may add one): a batch is
settled only once it says ``completed``, ``failed``, ``expired`` or ``cancelled``. A staged job whose blob
does not parse fails alone (``batch_staged_unreadable``) instead of stopping its batch from being settled.

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
from shared.delivery import finish
from shared.jobs import ErrorInfo, Result

from . import records
from .lines import Outcome, parse_answer
from .staging import delivery_for, end_with_lane_off, fail_unreadable, send_live

logger = logging.getLogger(__name__)

OPEN = frozenset({"validating", "in_progress", "finalizing", "cancelling"})  # those the API documents
NOT_RUN_CODES = {
    "failed": "batch_failed",
    "expired": "batch_expired",
    "cancelled": "batch_cancelled",
    "completed": "batch_result_missing",
}
ENDED = frozenset(NOT_RUN_CODES)  # only these end a batch: any other status, known or not, is still running
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
    failed_unrun: int = 0  # jobs failed because batches ended without running them (twice, out of quota, lane off)
    unreadable_lines: int = 0
    unreadable_staged: int = 0  # staged blobs that did not parse: their jobs failed alone


async def collect(runtime: Runtime | None = None) -> CollectReport:
    """One tick: poll every submitted batch; settle the ended ones (with the lane switched off too: the
    batches it left out still end, and their results are stored)."""
    runtime = runtime or get_runtime()
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
        status = str(batch.status) if batch is not None else (manifest.status or "failed")
        if status not in ENDED:
            if status not in OPEN:
                what = "a status this worker does not know: taken as still running"
                logger.warning("batch %s says %r, %s", manifest.batch_id, status, what)
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
                    answer = parse_answer(line, manifest.api)
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
        if lock_until is None or lock_until - now < timedelta(seconds=records.LOCK_SECONDS / 2):
            self.taken = await records.save(
                self.container, self.taken, lock_until=now + timedelta(seconds=records.LOCK_SECONDS)
            )

    async def _settle_answer(self, answer: Outcome, *, manifest: records.Manifest, batch: Batch) -> None:
        staged = await self._ours(answer.job_id, manifest)
        if staged is None:
            return
        if not await self._stored(staged):
            amend = partial(as_batch, deployment=manifest.deployment, batch=batch)
            delivery = delivery_for(self.runtime, staged)
            written = await finish(delivery, answer=answer.answer, error=answer.error, amend=amend)
            self.report.written += written is not None
        await records.delete_staged(self.container, answer.job_id)

    async def _send_back(self, job_id: str, *, manifest: records.Manifest, batch: Batch | None, status: str) -> None:
        """A job the batch never ran: waits for quota, goes back to staging or the live queue once, or fails."""
        staged = await self._ours(job_id, manifest)
        if staged is None:
            return
        stored = await store.stored_result(self.runtime, job_id)
        if stored is not None and stored.final:
            await records.delete_staged(self.container, job_id)
            return
        reported = batch.errors.data or [] if batch is not None and batch.errors is not None else []
        errors = [f"{error.code}: {error.message}" for error in reported] or manifest.errors
        said = f" ({'; '.join(errors)})" if errors else ""
        why = f"batch {manifest.batch_id or '(not created)'} {status} without running this job{said}"
        if not self.runtime.settings.batch_deployment:
            ended = await end_with_lane_off(self.runtime, self.container, staged, why=why)
            self.report.to_live += ended == "live"
            self.report.failed_unrun += ended == "failed"
        elif errors and all(error.startswith(records.QUOTA_CODE) for error in errors):
            await self._wait_for_quota(staged, manifest, batch, why)
        elif self.runtime.settings.batch_on_failure == "live":
            await send_live(self.runtime, staged)
            await records.delete_staged(self.container, job_id)
            logger.info("job %s sent to the live lane after its batch ended without running it", job_id)
            self.report.to_live += 1
        elif staged.restaged < 1:
            await self._restage(staged, {records.RESTAGED: str(staged.restaged + 1)})
        else:
            again = "send the job again (with lane live to have it answered now)"
            message = f"{why}, and it had already been sent back once: {again}"
            code = NOT_RUN_CODES.get(status, "batch_failed")
            await self._fail(staged, manifest, batch, ErrorInfo(code=code, message=message))

    async def _wait_for_quota(
        self, staged: records.Staged, manifest: records.Manifest, batch: Batch | None, why: str
    ) -> None:
        """Refused for enqueued-token quota: back to staging uncounted, until ``records.QUOTA_WAIT`` has passed
        since a batch holding the job was first refused; then failed with ``batch_token_limit``."""
        now = _now()
        since = min(when for when in (staged.quota_since, manifest.quota_since, now) if when is not None)
        if now - since < records.QUOTA_WAIT:
            await self._restage(staged, {records.QUOTA_SINCE: since.isoformat()})
            return
        hours = records.QUOTA_WAIT.total_seconds() / 3600
        message = (
            f"{why}: batches holding this job have been refused for the batch deployment's enqueued-token quota "
            f"since {since:%Y-%m-%d %H:%M} UTC, longer than the lane waits ({hours:g} h). Raise the deployment's "
            "enqueued-token quota (BATCH_MAX_TOKENS_PER_FILE at most that), or send the job again later"
        )
        await self._fail(staged, manifest, batch, ErrorInfo(code=records.TOKEN_LIMIT, message=message))

    async def _restage(self, staged: records.Staged, changes: dict[str, str]) -> None:
        """Back to staging for the next submit: its claim dropped, ``changes`` made to its metadata."""
        metadata = {k: v for k, v in staged.metadata.items() if k != records.CLAIM}
        job_id = staged.record.job.id
        assert job_id is not None
        if await records.set_claim(self.container, job_id, staged.etag, {**metadata, **changes}):
            self.report.restaged += 1

    async def _fail(
        self, staged: records.Staged, manifest: records.Manifest, batch: Batch | None, error: ErrorInfo
    ) -> None:
        amend = partial(as_batch, deployment=manifest.deployment, batch=batch)
        failed = await finish(delivery_for(self.runtime, staged), error=error, amend=amend)
        self.report.failed_unrun += failed is not None
        job_id = staged.record.job.id
        assert job_id is not None
        await records.delete_staged(self.container, job_id)

    async def _ours(self, job_id: str, manifest: records.Manifest) -> records.Staged | None:
        """The staged job, if it is still staged and held by this manifest (a job sent back may be held
        by a newer manifest already, and a settled one is gone). One whose blob does not parse fails alone."""
        try:
            staged = await records.load_staged(self.container, job_id)
        except ValueError as exc:
            self.report.unreadable_staged += 1
            await fail_unreadable(self.runtime, self.container, job_id, exc)
            return None
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
