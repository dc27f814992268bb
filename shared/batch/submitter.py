"""Submit (the ``BATCH_SUBMIT_SCHEDULE`` timer): staged jobs -> request files -> batches.

Each manifest goes ``claiming`` -> ``claimed`` -> ``uploaded`` -> ``submitted``, every state written at
the ETag read, by the instance that holds it (``records.acquire``). A tick first resumes the manifests
an earlier tick left part-way (a crash, a timeout), then makes new ones from the jobs no manifest holds:

- ``claiming``: the manifest exists before any of its jobs is claimed; each claim is a conditional
  metadata write on the staged job, so a job two submitters both listed is claimed by exactly one, and
  the manifest then keeps only the jobs it won. A job whose result is already final is dropped (and its
  staged copy deleted): an id finished meanwhile is not run again.
- ``claimed`` -> upload: a resumed manifest first looks for its file at the Files API by name
  (``<manifest id>.jsonl``): an upload made just before a crash is reused, extra copies are deleted.
- ``uploaded`` -> create the batch: a resumed manifest first looks for a batch on its file (a batch
  created just before a crash is adopted, never created twice); the lock is renewed just before the call.

A refusal the service will repeat (400, 404) marks the manifest ``submitted`` with status ``failed``,
which the collector treats as a failed batch; anything else (429, 5xx, a missing role) leaves it for
the next tick.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import openai
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient
from openai.types import Batch, FileObject

from shared import store
from shared.connections import Runtime, get_runtime
from shared.constants import brief
from shared.policy import GiveUp, classify
from shared.settings import batch_lane_on

from .lines import LINE_MARGIN, MAX_FILE_BYTES, REQUEST_URL, plan_files, request_line
from .records import (
    CLAIM,
    LOCK_SECONDS,
    MANIFEST_ID_PATTERN,
    MANIFEST_PREFIX,
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
    load_staged,
    new_manifest_id,
    read_manifest,
    release,
    save,
    set_claim,
    staged_blob,
)

logger = logging.getLogger(__name__)

COMPLETION_WINDOW: Literal["24h"] = "24h"  # the only window Azure takes
# Request files expire after 14 days, the least Azure allows: with an expiry set a resource holds
# 10,000 input files rather than 500 (the collector deletes each file once its batch is done).
FILE_EXPIRY_SECONDS = 1_209_600
UPLOAD_TIMEOUT_SECONDS = 600.0  # a file of up to 200 MB
CONTRIBUTOR_ROLE = "Cognitive Services OpenAI Contributor"  # covers files and batches, and far more
BATCH_ROLE = "Azure OpenAI Batch (oai-<token>)"  # the custom role infra/app/rbac.bicep makes: just those actions
CLOCK_SKEW = timedelta(minutes=5)  # between this clock and the service's, when matching by creation time
Step = Any  # a bound method taking and returning the held manifest


@dataclass
class SubmitReport:
    """What one tick did (tests and the bench read it; the log says it in one line)."""

    manifests: int = 0  # new manifests made
    resumed: int = 0  # manifests an earlier tick had left part-way
    claimed: int = 0  # jobs this tick claimed
    submitted: list[str] = field(default_factory=list)  # batch ids created (or adopted) this tick
    uploads: int = 0
    reused_uploads: int = 0
    busy: int = 0  # manifests another instance holds
    skipped_finished: int = 0  # staged jobs whose result was final already
    deferred: int = 0  # manifests left for the next tick (throttled, a missing role, a failure)


async def submit(runtime: Runtime | None = None) -> SubmitReport:
    """One tick: resume unfinished manifests, then submit what is staged and unclaimed."""
    if runtime is None:
        if not batch_lane_on():
            return SubmitReport()  # the lane is off: no clients made, no storage call
        runtime = get_runtime()
    if not runtime.settings.batch_deployment:
        return SubmitReport()
    submitter = _Submitter(runtime, await ensure_staging(runtime), owner=uuid.uuid4().hex)
    return await submitter.run()


@dataclass
class _Submitter:
    runtime: Runtime
    container: ContainerClient
    owner: str
    report: SubmitReport = field(default_factory=SubmitReport)
    known: dict[str, bool] = field(default_factory=dict)  # manifest id -> exists
    latest: Held | None = None  # the manifest being advanced, as last written

    async def _save(self, held: Held, **changes: Any) -> Held:
        self.latest = await save(self.container, held, **changes)
        return self.latest

    async def run(self) -> SubmitReport:
        manifests = await list_manifests(self.container)
        self.known = {held.manifest.id: True for held in manifests}
        for held in manifests:
            if held.manifest.state != "submitted":
                self.report.resumed += 1
                await self.advance(held, resumed=True)
        listed = {job.job_id: job for job in await list_staged(self.container) if await self._free(job)}
        settings = self.runtime.settings
        plan = plan_files(
            [(job.job_id, job.size + LINE_MARGIN) for job in listed.values()],
            settings.batch_max_requests_per_file,
            MAX_FILE_BYTES,
        )
        for job_ids in plan:
            now = _now()
            manifest = Manifest(
                id=new_manifest_id(now),
                deployment=settings.batch_deployment,
                state="claiming",
                job_ids=job_ids,
                created_at=now,
                owner=self.owner,
                lock_until=now + timedelta(seconds=LOCK_SECONDS),
            )
            held = await create_manifest(self.container, manifest)
            self.known[manifest.id] = True
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
        steps: dict[str, Step] = {"claiming": self._claim, "claimed": self._upload, "uploaded": self._create}
        self.latest = current
        step: Held | None = current
        try:
            while step is not None and step.manifest.state in steps:
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

    async def _free(self, job: Listed) -> bool:
        """Unclaimed, or claimed by a manifest that does not exist (never true while its holder lives:
        a manifest is written before its claims and deleted after its jobs are settled)."""
        claim = job.metadata.get(CLAIM)
        if not claim:
            return True
        if claim not in self.known:
            exists = False
            if _valid_manifest_id(claim):
                exists = await read_manifest(self.container, f"{MANIFEST_PREFIX}{claim}.json") is not None
            self.known[claim] = exists
        return not self.known[claim]

    async def _claim(self, held: Held, resumed: bool, listed: dict[str, Listed]) -> Held | None:
        manifest = held.manifest

        async def claim(job_id: str) -> bool:
            seen = listed.get(job_id)
            for _ in range(2):
                version = (seen.etag, seen.metadata) if seen is not None else await self._version(job_id)
                if version is None:
                    return False  # no longer staged
                etag, metadata = version
                if metadata.get(CLAIM) == manifest.id:
                    return True
                if metadata.get(CLAIM) and not await self._free(Listed(job_id, etag, 0, metadata)):
                    return False
                if await set_claim(self.container, job_id, etag, {**metadata, CLAIM: manifest.id}):
                    return True
                seen = None  # changed since listed: look again
            return False

        won = await each(manifest.job_ids, claim)
        kept = await self._unfinished([job_id for job_id, ok in zip(manifest.job_ids, won, strict=True) if ok])
        if not kept:
            await delete_manifest(self.container, held)
            return None
        self.report.claimed += len(kept)
        return await self._save(held, state="claimed", job_ids=kept)

    async def _version(self, job_id: str) -> tuple[str, dict[str, str]] | None:
        try:
            properties = await self.container.get_blob_client(staged_blob(job_id)).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return str(properties.etag), dict(properties.metadata or {})

    async def _unfinished(self, job_ids: list[str]) -> list[str]:
        """Drop (and unstage) jobs whose result is final already: sent again live, or a finished id."""

        async def finished(job_id: str) -> bool:
            stored = await store.stored_result(self.runtime, job_id)
            if stored is None or not stored.final:
                return False
            await delete_staged(self.container, job_id)
            return True

        done = await each(job_ids, finished)
        self.report.skipped_finished += sum(done)
        return [job_id for job_id, skip in zip(job_ids, done, strict=True) if not skip]

    async def _upload(self, held: Held, resumed: bool, listed: dict[str, Listed]) -> Held | None:
        manifest = held.manifest
        found = await self._find_upload(manifest) if resumed else None
        if found is not None:
            self.report.reused_uploads += 1
            return await self._save(held, state="uploaded", file_id=found.id)
        lines = await each(manifest.job_ids, lambda job_id: self._line(job_id, manifest.deployment))
        kept = [job_id for job_id, line in zip(manifest.job_ids, lines, strict=True) if line is not None]
        if not kept:
            await delete_manifest(self.container, held)
            return None
        data = b"".join(line for line in lines if line is not None)
        if len(data) > MAX_FILE_BYTES:  # not reached: plan_files bounds every line (LINE_MARGIN)
            raise ValueError(f"request file of manifest {manifest.id} is {len(data)} bytes, over {MAX_FILE_BYTES}")
        held = await self._save(held, job_ids=kept, lock_until=_now() + timedelta(seconds=LOCK_SECONDS))
        uploaded = await self.runtime.openai.files.create(
            file=(manifest.file_name, data, "application/jsonl"),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": FILE_EXPIRY_SECONDS},
            timeout=UPLOAD_TIMEOUT_SECONDS,
        )
        self.report.uploads += 1
        try:
            return await self._save(held, state="uploaded", file_id=uploaded.id)
        except Lost:
            await delete_file(self.runtime, uploaded.id)  # an orphan: the manifest's new holder uploads its own
            raise

    async def _line(self, job_id: str, deployment: str) -> bytes | None:
        staged = await load_staged(self.container, job_id)
        return request_line(staged.record.job, deployment) if staged is not None else None

    async def _find_upload(self, manifest: Manifest) -> FileObject | None:
        """The file a crashed holder uploaded for this manifest, if any; extra copies are deleted."""
        since = (manifest.created_at - CLOCK_SKEW).timestamp()
        copies = []
        listing = _Recent(since)
        async for item in self.runtime.openai.files.list(purpose="batch", order="desc"):
            if listing.past(item.created_at):
                break
            if item.filename == manifest.file_name and item.created_at >= since:
                copies.append(item)
        usable = [item for item in reversed(copies) if item.status != "error"]
        keep = min(usable, key=lambda item: item.created_at) if usable else None  # the first holder's upload
        for item in copies:
            if item is not keep:
                await delete_file(self.runtime, item.id)
        return keep

    async def _create(self, held: Held, resumed: bool, listed: dict[str, Listed]) -> Held:
        manifest = held.manifest
        assert manifest.file_id is not None
        batch = await self._find_batch(manifest) if resumed else None
        if batch is None:
            # Renewed just before the one call that must not happen twice: a new holder could only
            # take over (and look for this batch) after LOCK_SECONDS, far beyond the call's timeout.
            held = await self._save(held, lock_until=_now() + timedelta(seconds=LOCK_SECONDS))
            batch = await self.runtime.openai.batches.create(
                input_file_id=manifest.file_id,
                endpoint=cast(Any, REQUEST_URL),  # Azure's form; the SDK's type lists the /v1/ one
                completion_window=COMPLETION_WINDOW,
            )
        self.report.submitted.append(batch.id)
        logger.info("batch %s created for manifest %s (%d jobs)", batch.id, manifest.id, len(manifest.job_ids))
        return await self._save(held, state="submitted", batch_id=batch.id, status=batch.status, submitted_at=_now())

    async def _find_batch(self, manifest: Manifest) -> Batch | None:
        """A batch already made from this manifest's file (its holder crashed before recording it)."""
        listing = _Recent((manifest.created_at - CLOCK_SKEW).timestamp())
        async for batch in self.runtime.openai.batches.list(limit=100):
            if batch.input_file_id == manifest.file_id:
                return batch
            if listing.past(batch.created_at):
                break
        return None

    async def _refused(self, held: Held, exc: Exception) -> Held:
        """A step failed: a refusal the service will repeat fails the batch (the collector then sends
        its jobs back once); anything else waits for the next tick."""
        manifest = held.manifest
        verdict = classify(exc, self.runtime, deployment=manifest.deployment)
        quota = isinstance(exc, openai.APIStatusError) and exc.code == "token_limit_exceeded"
        if isinstance(verdict, GiveUp) and not quota:
            logger.error("batch submit: manifest %s refused (%s): %s", manifest.id, verdict.code, verdict.message)
            errors = [f"{verdict.code}: {verdict.message}"]
            return await self._save(held, state="submitted", status="failed", errors=errors)
        self.report.deferred += 1
        if (
            isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError)
            and exc.code == "PermissionDenied"
        ):
            logger.error(
                "batch submit: principal %s may not use the Files and Batches APIs of %s: grant it the batch role "
                "infra/ makes ('%s') or, broader, '%s' (the OpenAI User role covers inference only); manifest %s "
                "waits for the next tick",
                self.runtime.identity.get("oid", "unknown"),
                self.runtime.settings.openai_endpoint,
                BATCH_ROLE,
                CONTRIBUTOR_ROLE,
                manifest.id,
            )
        else:
            logger.warning("batch submit: manifest %s waits for the next tick: %s", manifest.id, brief(exc))
        return held


@dataclass
class _Recent:
    """Whether a listing has gone past ``since``: only once it has shown itself newest first (the API's
    order; should a service list oldest first, the whole listing is read)."""

    since: float
    last: float | None = None
    rising: bool = False  # an item newer than the one before: not newest first

    def past(self, created_at: float) -> bool:
        shown_order = self.last is not None
        self.rising = self.rising or (self.last is not None and created_at > self.last)
        self.last = created_at
        return shown_order and not self.rising and created_at < self.since


def _valid_manifest_id(value: str) -> bool:
    return re.fullmatch(MANIFEST_ID_PATTERN, value) is not None


def _now() -> datetime:
    return datetime.now(UTC)
