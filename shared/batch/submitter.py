"""Submit (the ``BATCH_SUBMIT_SCHEDULE`` timer): staged jobs -> request files -> batches.

Each manifest goes ``claiming`` -> ``claimed`` -> ``uploaded`` -> ``processed`` -> ``submitted``, every state
written at the ETag read, by the instance that holds it (``records.acquire``). A tick first resumes the
manifests an earlier tick left part-way (a crash, a timeout, a wait), then makes new ones from the jobs no
manifest holds, in files of at most ``BATCH_MAX_REQUESTS_PER_FILE`` requests, 200 MB and
``BATCH_MAX_TOKENS_PER_FILE`` estimated enqueued tokens (``lines.job_tokens``, recorded at staging):

- ``claiming``: the manifest exists before any of its jobs is claimed; each claim is a conditional
  metadata write on the staged job, so a job two submitters both listed is claimed by exactly one, and
  the manifest then keeps only the jobs it won. A job whose result is already final is dropped (and its
  staged copy deleted): an id finished meanwhile is not run again.
- ``claimed`` -> upload: a resumed manifest first looks for its file at the Files API by name
  (``<manifest id>.jsonl``): an upload made just before a crash is reused, extra copies are deleted. A job
  whose staged copy does not parse, or whose request cannot be encoded, fails alone and is left out.
- ``uploaded`` -> wait for the file: Azure takes a batch only from a file it has ``processed`` (a fresh upload
  reads ``pending``). ``files.retrieve`` is polled for up to ``FILE_WAIT_IN_TICK_SECONDS`` a tick (shared by
  the tick's manifests), then the manifest waits for the next tick, which resumes the wait (the file is
  never uploaded again). A file that ends ``error``, or is not processed ``FILE_WAIT`` after its upload,
  fails the batch (its jobs go back once, as for any failed batch).
- ``processed`` -> create the batch: a resumed manifest first looks for a batch on its file (a batch
  created just before a crash is adopted, never created twice); the lock is renewed just before the call.

Refusals: a file the service says is not processed yet goes back to waiting; ``token_limit_exceeded``
(the deployment's enqueued-token quota is full) waits, the file kept, for the next tick, up to
``records.QUOTA_WAIT`` since it was first refused, then the batch fails and its jobs with it
(``batch_token_limit``); another refusal the service will repeat (400, 404) marks the manifest
``submitted`` with status ``failed``, which the collector treats as a failed batch. Anything else (429, 5xx,
a missing role or a refused token, a storage error, an error in this code) leaves the manifest for the next
tick, up to ``STEP_RETRY`` since a step of it first failed; then it fails.

With the lane switched off (``BATCH_DEPLOYMENT`` emptied) a tick creates nothing: manifests not yet
submitted are taken apart (a batch created for one just before is kept for the collector), and every
staged job no submitted batch holds goes to the live queue (``BATCH_ON_FAILURE=live``) or fails with
``batch_lane_off``.

The steps' helpers: ``claims`` (which staged jobs are free, and the claims), ``files`` (the upload, the wait for
it to be processed, an upload or batch found again) and ``submit_report`` (``SubmitReport``).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import openai
from azure.storage.blob.aio import ContainerClient

from shared.connections import Runtime, get_runtime
from shared.constants import brief
from shared.delivery import finish
from shared.jobs import ErrorInfo
from shared.messages import JobRefused
from shared.policy import GiveUp, classify

from .claims import Claims
from .files import (
    FILE_NOT_PROCESSED,
    NOT_PROCESSED,
    await_processed,
    find_batch,
    find_upload,
    never_processed,
    upload,
    why_not_processed,
)
from .lines import LINE_MARGIN, MAX_FILE_BYTES, URLS, Planned, plan_files, request_line
from .records import (
    LOCK_SECONDS,
    QUOTA_CODE,
    QUOTA_SINCE,
    QUOTA_WAIT,
    Held,
    Listed,
    Lost,
    Manifest,
    acquire,
    create_manifest,
    delete_file,
    delete_manifest,
    delete_staged,
    each,
    ensure_staging,
    list_manifests,
    list_staged,
    metadata_time,
    new_manifest_id,
    release,
    save,
)
from .staging import delivery_for, end_with_lane_off, in_lane
from .submit_report import SubmitReport

logger = logging.getLogger(__name__)

COMPLETION_WINDOW: Literal["24h"] = "24h"  # the only window Azure takes
CONTRIBUTOR_ROLE = "Cognitive Services OpenAI Contributor"  # covers files and batches, and far more
BATCH_ROLE = "Azure OpenAI Batch (oai-<token>)"  # the custom role infra/app/rbac.bicep makes: just those actions
Step = Any  # a bound method taking and returning the held manifest
# Waiting for an upload to be processed (files.await_processed): polled within a tick for at most this long, all
# the tick's manifests together.
FILE_WAIT_IN_TICK_SECONDS = 60.0
# A step failing for any other reason is retried each tick for this long since a step of the manifest first
# failed (a role being granted, an outage, a bug fixed by a deploy), then its batch fails.
STEP_RETRY = timedelta(hours=24)
STEP_FAILED = "submit_failed"


async def submit(runtime: Runtime | None = None) -> SubmitReport:
    """One tick: resume unfinished manifests, then submit what is staged and unclaimed; with the lane
    switched off, end what it left staged instead."""
    runtime = runtime or get_runtime()
    submitter = _Submitter(runtime, await ensure_staging(runtime), owner=uuid.uuid4().hex)
    if not runtime.settings.batch_deployment:
        return await submitter.drain()
    return await submitter.run()


@dataclass
class _Submitter:
    runtime: Runtime
    container: ContainerClient
    owner: str
    report: SubmitReport = field(default_factory=SubmitReport)
    latest: Held | None = None  # the manifest being advanced, as last written
    # Until when (time.monotonic) this tick may poll for uploads to be processed.
    wait_until: float = field(default_factory=lambda: time.monotonic() + FILE_WAIT_IN_TICK_SECONDS)
    claims: Claims = field(init=False)

    def __post_init__(self) -> None:
        self.claims = Claims(self.runtime, self.container, self.report)

    async def _save(self, held: Held, **changes: Any) -> Held:
        self.latest = await save(self.container, held, **changes)
        return self.latest

    async def run(self) -> SubmitReport:
        manifests = await list_manifests(self.container)
        self.claims.known = {held.manifest.id: True for held in manifests}
        for held in manifests:
            if held.manifest.state != "submitted":
                self.report.resumed += 1
                await self.advance(held, resumed=True)
        listed = {job.job_id: job for job in await list_staged(self.container) if await self.claims.free(job)}
        settings = self.runtime.settings
        tokens = await each(list(listed.values()), self.claims.tokens)
        planned = [
            Planned(job.job_id, job.size + LINE_MARGIN, n)
            for job, n in zip(listed.values(), tokens, strict=True)
            if n is not None
        ]
        plan = plan_files(
            planned, settings.batch_max_requests_per_file, MAX_FILE_BYTES, settings.batch_max_tokens_per_file
        )
        for job_ids in plan:
            now = _now()
            manifest = Manifest(
                id=new_manifest_id(now),
                deployment=settings.batch_deployment,
                api=settings.batch_api,
                state="claiming",
                job_ids=job_ids,
                created_at=now,
                owner=self.owner,
                lock_until=now + timedelta(seconds=LOCK_SECONDS),
            )
            held = await create_manifest(self.container, manifest)
            self.claims.known[manifest.id] = True
            self.report.manifests += 1
            await self.advance(held, resumed=False, listed=listed)
        if plan or self.report.resumed:
            logger.info("batch submit: %s", self.report)
        return self.report

    async def advance(self, held: Held, *, resumed: bool, listed: dict[str, Listed] | None = None) -> None:
        """Take the manifest through its remaining steps, or leave it (held elsewhere, or deferred)."""
        current = await acquire(self.container, held, self.owner, _now()) if resumed else held
        if current is None:
            self.report.busy += 1
            return
        steps: dict[str, Step] = {
            "claiming": self._claim,
            "claimed": self._upload,
            "uploaded": self._await_file,
            "processed": self._create,
        }
        self.latest = current
        step: Held | None = current
        seen: set[str] = set()
        try:
            while step is not None and step.manifest.state in steps and step.manifest.state not in seen:
                # A state met again waits for the next tick: a step that waits (a file not processed yet,
                # quota, a failure) keeps its state, and a file refused as pending after all goes back one.
                seen.add(step.manifest.state)
                step = await steps[step.manifest.state](step, resumed, listed or {})
            if step is not None:
                await release(self.container, step)
        except Lost as exc:
            logger.info("batch submit: %s; left to its new holder", exc)
        except Exception as exc:
            assert self.latest is not None
            try:
                await release(self.container, await self._refused(self.latest, exc))
            except Lost as lost:
                logger.info("batch submit: %s; left to its new holder", lost)

    async def _claim(self, held: Held, resumed: bool, listed: dict[str, Listed]) -> Held | None:
        manifest = held.manifest
        kept = await self.claims.take(manifest, listed)
        if not kept:
            await delete_manifest(self.container, held)
            return None
        self.report.claimed += len(kept)
        # Jobs a quota refusal sent back bring the time of that first refusal: the wait is bounded per job.
        refused = [listed[job_id].metadata.get(QUOTA_SINCE) for job_id in kept if job_id in listed]
        since = min((when for when in map(metadata_time, refused) if when is not None), default=manifest.quota_since)
        return await self._save(held, state="claimed", job_ids=kept, quota_since=since)

    async def _upload(self, held: Held, resumed: bool, listed: dict[str, Listed]) -> Held | None:
        manifest = held.manifest
        found = await find_upload(self.runtime, manifest) if resumed else None
        if found is not None:
            self.report.reused_uploads += 1
            return await self._save(held, state="uploaded", file_id=found.id)
        lines = await each(manifest.job_ids, lambda job_id: self._line(job_id, manifest))
        kept = [job_id for job_id, line in zip(manifest.job_ids, lines, strict=True) if line is not None]
        if not kept:
            await delete_manifest(self.container, held)
            return None
        data = b"".join(line for line in lines if line is not None)
        if len(data) > MAX_FILE_BYTES:  # not reached: plan_files bounds every line (LINE_MARGIN)
            raise ValueError(f"request file of manifest {manifest.id} is {len(data)} bytes, over {MAX_FILE_BYTES}")
        held = await self._save(held, job_ids=kept, lock_until=_now() + timedelta(seconds=LOCK_SECONDS))
        uploaded = await upload(self.runtime, manifest, data)
        self.report.uploads += 1
        try:
            return await self._save(held, state="uploaded", file_id=uploaded.id, uploaded_at=_now())
        except Lost:
            await delete_file(self.runtime, uploaded.id)  # an orphan: the manifest's new holder uploads its own
            raise

    async def _line(self, job_id: str, manifest: Manifest) -> bytes | None:
        """The job's request line; None when it is no longer staged (or held elsewhere), or it failed alone."""
        staged = await self.claims.load(job_id)
        if staged is None or staged.claim != manifest.id:
            return None
        try:
            return request_line(staged.record.job, manifest.deployment, manifest.api)
        except JobRefused as exc:  # staged before BATCH_API changed: the job no longer fits the lane's API
            error = ErrorInfo(code=exc.code, message=exc.message)
        except (ValueError, TypeError) as exc:  # a request JSON cannot carry: the live lane fails it alike
            verdict = classify(exc, self.runtime, deployment=manifest.deployment)
            assert isinstance(verdict, GiveUp)
            error = verdict.error()
        logger.warning("batch submit: job %s fails alone (%s): %s", job_id, error.code, error.message)
        await finish(delivery_for(self.runtime, staged), error=error, amend=in_lane)
        await delete_staged(self.container, job_id)
        self.report.failed_jobs += 1
        return None

    async def _await_file(self, held: Held, resumed: bool, listed: dict[str, Listed]) -> Held:
        """Wait for the uploaded file to be ``processed`` (the next state), for what is left of the tick's wait;
        a file not processed yet waits for the next tick, one that will never be fails the batch."""
        manifest = held.manifest
        found, waited = await await_processed(self.runtime, manifest, self.wait_until)
        status = str(found.status)
        if status == "processed":
            return await self._save(held, state="processed", file_status=status)
        if never_processed(status, waited):
            # Its batch fails, so its jobs go back once.
            what = why_not_processed(manifest, status, found.status_details, waited)
            logger.error("batch submit: manifest %s fails: %s", manifest.id, what)
            errors = [f"{FILE_NOT_PROCESSED}: {what}"]
            return await self._save(
                held, state="submitted", status="failed", errors=errors, file_status=status, submitted_at=_now()
            )
        self.report.waiting_files += 1
        logger.info(
            "batch submit: file %s of manifest %s is %s; the next tick looks again",
            manifest.file_id,
            manifest.id,
            status,
        )
        return await self._save(held, file_status=status)

    async def _create(self, held: Held, resumed: bool, listed: dict[str, Listed]) -> Held:
        manifest = held.manifest
        assert manifest.file_id is not None
        batch = await find_batch(self.runtime, manifest) if resumed else None
        if batch is None:
            # Renewed just before the one call that must not happen twice: a new holder could only
            # take over (and look for this batch) after LOCK_SECONDS, far beyond the call's timeout.
            held = await self._save(held, lock_until=_now() + timedelta(seconds=LOCK_SECONDS))
            try:
                batch = await self.runtime.openai.batches.create(
                    input_file_id=manifest.file_id,
                    # The lines' url (the service reads the file for the API); the SDK's type lists /v1/ forms only.
                    endpoint=cast(Any, URLS[manifest.api]),
                    completion_window=COMPLETION_WINDOW,
                )
            except openai.BadRequestError as exc:
                return await self._create_refused(held, exc)
        self.report.submitted.append(batch.id)
        logger.info("batch %s created for manifest %s (%d jobs)", batch.id, manifest.id, len(manifest.job_ids))
        return await self._save(held, state="submitted", batch_id=batch.id, status=batch.status, submitted_at=_now())

    async def _create_refused(self, held: Held, exc: openai.BadRequestError) -> Held:
        """A 400 at create that says to wait: the file not processed after all (back to waiting for it), or
        the enqueued-token quota full (wait, bounded). Any other is raised, for ``_refused``."""
        manifest = held.manifest
        if (state := NOT_PROCESSED.search(exc.message)) is not None:
            logger.info("batch submit: file %s of manifest %s is %s after all", manifest.file_id, manifest.id, state[1])
            return await self._save(held, state="uploaded", file_status=state[1])
        if exc.code != QUOTA_CODE and QUOTA_CODE not in exc.message:
            raise exc
        now = _now()
        since = manifest.quota_since or now
        if now - since >= QUOTA_WAIT:  # the collector then fails its jobs: batch_token_limit
            logger.error(
                "batch submit: manifest %s refused for enqueued-token quota since %s; its batch fails",
                manifest.id,
                since,
            )
            errors = [f"{QUOTA_CODE}: {brief(exc)}"]
            return await self._save(held, state="submitted", status="failed", errors=errors, submitted_at=now)
        self.report.deferred += 1
        logger.warning(
            "batch submit: manifest %s waits for enqueued-token quota (refused since %s): %s",
            manifest.id,
            since,
            brief(exc),
        )
        return await self._save(held, quota_since=since)

    async def _refused(self, held: Held, exc: Exception) -> Held:
        """A step failed: a refusal the service will repeat (400, 404) fails the batch (the collector then
        sends its jobs back once); anything else (a refused token or a missing role too) waits for the next
        tick, up to ``STEP_RETRY`` since a step of this manifest first failed."""
        manifest = held.manifest
        verdict = classify(exc, self.runtime, deployment=manifest.deployment)
        denied = isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError)
        if isinstance(verdict, GiveUp) and isinstance(exc, openai.APIStatusError) and not denied:
            logger.error("batch submit: manifest %s refused (%s): %s", manifest.id, verdict.code, verdict.message)
            errors = [f"{verdict.code}: {verdict.message}"]
            return await self._save(held, state="submitted", status="failed", errors=errors, submitted_at=_now())
        now = _now()
        since = manifest.deferred_since or now
        if now - since >= STEP_RETRY:
            logger.error(
                "batch submit: manifest %s has failed since %s; its batch fails: %s", manifest.id, since, brief(exc)
            )
            errors = [f"{STEP_FAILED}: a submit step failed each tick since {since:%Y-%m-%d %H:%M} UTC: {brief(exc)}"]
            return await self._save(held, state="submitted", status="failed", errors=errors, submitted_at=now)
        self.report.deferred += 1
        if denied:
            logger.error(
                "batch submit: principal %s may not use the Files and Batches APIs of %s (%s): grant it the batch role "
                "infra/ makes ('%s') or, broader, '%s' (the OpenAI User role covers inference only); manifest %s "
                "waits for the next tick",
                self.runtime.identity.get("oid", "unknown"),
                self.runtime.settings.openai_endpoint,
                brief(exc),
                BATCH_ROLE,
                CONTRIBUTOR_ROLE,
                manifest.id,
            )
        else:
            logger.warning("batch submit: manifest %s waits for the next tick: %s", manifest.id, brief(exc))
        return await self._save(held, deferred_since=since, deferrals=manifest.deferrals + 1)

    # --- The lane switched off -----------------------------------------------------------------------------------

    async def drain(self) -> SubmitReport:
        """The lane is off: take apart the manifests not yet submitted, then end every staged job no
        submitted batch holds (to the live queue, or failed ``batch_lane_off``)."""
        manifests = await list_manifests(self.container)
        self.claims.known = {held.manifest.id: True for held in manifests}
        for held in manifests:
            if held.manifest.state != "submitted":
                try:
                    await self._dismantle(held)
                except Lost as exc:
                    logger.info("batch submit: %s; left to its new holder", exc)
        for job in await list_staged(self.container):
            if await self.claims.free(job) and (staged := await self.claims.load(job.job_id)) is not None:
                why = "it was staged for the batch lane but never sent in a batch"
                ended = await end_with_lane_off(self.runtime, self.container, staged, why=why)
                self.report.to_live += ended == "live"
                self.report.lane_off += ended == "failed"
        if self.report != SubmitReport():
            logger.info("batch submit, lane off: %s", self.report)
        return self.report

    async def _dismantle(self, held: Held) -> None:
        """A manifest the lane, now off, had not submitted: a batch already made from its file is kept (the
        collector settles it); otherwise its file is deleted and the manifest with it, freeing its jobs."""
        current = await acquire(self.container, held, self.owner, _now())
        if current is None:
            self.report.busy += 1
            return
        manifest = current.manifest
        if manifest.file_id is not None and manifest.state in ("uploaded", "processed"):
            batch = await find_batch(self.runtime, manifest)
            if batch is not None:
                await save(self.container, current, state="submitted", batch_id=batch.id, status=batch.status)
                return
            await delete_file(self.runtime, manifest.file_id)
        elif manifest.state == "claimed" and (found := await find_upload(self.runtime, manifest)) is not None:
            await delete_file(self.runtime, found.id)
        await delete_manifest(self.container, current)
        self.claims.known[manifest.id] = False
        self.report.dismantled += 1


def _now() -> datetime:
    return datetime.now(UTC)
