"""What the batch lane keeps in ``STAGING_CONTAINER``, and the conditional writes that make each step safe
to repeat or to race.

- ``jobs/<id>.json``: a staged job (``StagedJob``), written create-only by the queue trigger. Its blob
  metadata says which manifest has claimed it (``manifest``), how often a failed batch sent it back
  (``restaged``), since when batches holding it have been refused for enqueued-token quota
  (``quota_since``) and its estimated enqueued tokens (``tokens``, what files are sized by); a claim is
  set only at the ETag read, so of two submitters one wins each job.
- ``batches/<manifest id>.json``: a manifest (``Manifest``): the jobs of one request file and one
  batch, the file and batch ids once known, and its state. Created create-only, then every change is
  written at the ETag last read (``save``); a holder takes it for a while (``acquire``: ``owner`` and
  ``lock_until``) before a step with side effects (an upload, a batch creation, writing results).

Ids are checked against the contract's patterns before they become blob names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

import openai
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import ContainerClient
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared import store
from shared.connections import Runtime
from shared.constants import MANIFEST_PREFIX, STAGED_PREFIX, brief
from shared.jobs import JOB_ID_PATTERN, Api, Job, JobId

logger = logging.getLogger(__name__)

MANIFEST_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$"
LOCK_SECONDS = 600.0  # far longer than any one step's calls with their timeouts and retries
CONCURRENCY = 16  # storage calls in flight for one manifest's jobs
CLAIM = "manifest"  # staged blob metadata: the manifest that has claimed the job
RESTAGED = "restaged"  # staged blob metadata: how often a failed batch sent the job back
QUOTA_SINCE = "quota_since"  # staged blob metadata: when a batch holding it was first refused for quota
TOKENS = "tokens"  # staged blob metadata: the job's estimated enqueued tokens (``lines.job_tokens``)
_JSON = ContentSettings(content_type="application/json")
# Enqueued-token quota: the service's code for a batch refused for it (at create, or failed after validation),
# how long the lane waits for quota since a batch holding a job was first refused, and the code a job then fails
# with. A day: quota frees as other batches end, and a batch runs up to about that long.
QUOTA_CODE = "token_limit_exceeded"
QUOTA_WAIT = timedelta(hours=24)
TOKEN_LIMIT = "batch_token_limit"

T = TypeVar("T")
ManifestState = Literal["claiming", "claimed", "uploaded", "processed", "submitted"]


class StagedJob(BaseModel):
    """A batch-lane job waiting in the staging container, with what its result will need from the delivery."""

    model_config = ConfigDict(extra="forbid")
    job: Job
    staged_at: datetime
    message_id: str | None = None
    enqueued_at: datetime | None = None
    attempts: int = 1


class Manifest(BaseModel):
    """One request file and the batch made from it.

    States, in order: ``claiming`` (written before its jobs are claimed; ``job_ids`` are candidates),
    ``claimed`` (``job_ids`` are exactly the jobs it holds), ``uploaded`` (``file_id`` known; waiting for
    the service to process the file), ``processed`` (the file may become a batch), ``submitted``
    (``batch_id`` known, or ``status`` failed when the service refused the file or a bound ran out). The
    collector deletes it once every job has its result, went back to staging or to the live queue.
    """

    model_config = ConfigDict(extra="forbid")
    id: Annotated[str, StringConstraints(pattern=MANIFEST_ID_PATTERN)]
    deployment: str
    api: Api = Field(default="chat", description="The API its request lines go to (BATCH_API when it was made).")
    state: ManifestState
    job_ids: list[JobId]
    created_at: datetime
    file_id: str | None = None
    batch_id: str | None = None
    status: str | None = Field(default=None, description="The batch's status when last written.")
    errors: list[str] = Field(default_factory=list, description="What the service said when it refused or failed.")
    submitted_at: datetime | None = None
    owner: str | None = None
    lock_until: datetime | None = None
    uploaded_at: datetime | None = None
    file_status: str | None = Field(default=None, description="The input file's status when last read.")
    quota_since: datetime | None = Field(
        default=None, description="Since when its batch (or, for one of its jobs, an earlier one) is refused for quota."
    )
    deferred_since: datetime | None = Field(default=None, description="When a step of it first failed and waited.")
    deferrals: int = Field(default=0, ge=0, description="Ticks a failed step has waited.")

    @property
    def blob(self) -> str:
        return f"{MANIFEST_PREFIX}{self.id}.json"

    @property
    def file_name(self) -> str:
        """The request file's name at the Files API: how a crashed submitter's upload is found again."""
        return f"{self.id}.jsonl"


def new_manifest_id(now: datetime) -> str:
    """Sortable by creation time, unique across instances."""
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:12]}"


def staged_blob(job_id: str) -> str:
    if not re.fullmatch(JOB_ID_PATTERN, job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return f"{STAGED_PREFIX}{job_id}.json"


# The batch lane's blobs live in the worker-only container beside the retry store (``shared.store``).
staging = store.worker_only
ensure_staging = store.ensure_worker_only


# --- Staged jobs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Staged:
    """A staged job as read, with the version its claim or release is written against."""

    record: StagedJob
    etag: str
    metadata: dict[str, str]

    @property
    def claim(self) -> str | None:
        return self.metadata.get(CLAIM) or None

    @property
    def restaged(self) -> int:
        raw = self.metadata.get(RESTAGED, "0")
        return int(raw) if raw.isdigit() else 0

    @property
    def quota_since(self) -> datetime | None:
        return metadata_time(self.metadata.get(QUOTA_SINCE))


def metadata_time(raw: str | None) -> datetime | None:
    """A metadata timestamp (ISO 8601 with its offset); None when absent or not one."""
    try:
        when = datetime.fromisoformat(raw or "")
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


async def put_staged(container: ContainerClient, record: StagedJob, tokens: int) -> bool:
    """Stage a job create-only, with its estimated enqueued tokens in the metadata; False when it was
    already staged (a redelivery, or the same id sent again)."""
    assert record.job.id is not None
    try:
        await container.upload_blob(
            staged_blob(record.job.id),
            record.model_dump_json(exclude_none=True).encode(),
            overwrite=False,
            metadata={TOKENS: str(tokens)},
            content_settings=_JSON,
        )
    except ResourceExistsError:
        return False
    return True


async def load_staged(container: ContainerClient, job_id: str) -> Staged | None:
    try:
        downloader = await container.download_blob(staged_blob(job_id))
        body = await downloader.readall()
    except ResourceNotFoundError:
        return None
    properties = downloader.properties
    return Staged(StagedJob.model_validate_json(body), str(properties.etag), dict(properties.metadata or {}))


async def set_claim(container: ContainerClient, job_id: str, etag: str, metadata: dict[str, str]) -> bool:
    """Replace a staged job's metadata (its claim, its restage count) at version ``etag``; False if it changed."""
    try:
        await container.get_blob_client(staged_blob(job_id)).set_blob_metadata(
            metadata, etag=etag, match_condition=MatchConditions.IfNotModified
        )
    except (ResourceModifiedError, ResourceNotFoundError):
        return False
    return True


async def delete_staged(container: ContainerClient, job_id: str) -> None:
    with contextlib.suppress(ResourceNotFoundError):  # another collector got there first
        await container.delete_blob(staged_blob(job_id))


@dataclass(frozen=True)
class Listed:
    """A staged job as the container listing shows it (no body)."""

    job_id: str
    etag: str
    size: int
    metadata: dict[str, str]

    @property
    def tokens(self) -> int | None:
        """Its estimated enqueued tokens; None for a job staged before they were recorded."""
        raw = self.metadata.get(TOKENS, "")
        return int(raw) if raw.isdigit() else None


async def list_staged(container: ContainerClient) -> list[Listed]:
    """Every staged job, oldest name first; a blob whose name is not ``jobs/<valid id>.json`` is skipped."""
    found = []
    try:
        async for blob in container.list_blobs(name_starts_with=STAGED_PREFIX, include=["metadata"]):
            job_id = str(blob.name).removeprefix(STAGED_PREFIX).removesuffix(".json")
            if not re.fullmatch(JOB_ID_PATTERN, job_id) or blob.name != f"{STAGED_PREFIX}{job_id}.json":
                logger.warning("staging: %s is not a staged job's name; left alone", blob.name)
                continue
            found.append(Listed(job_id, str(blob.etag), int(blob.size or 0), dict(blob.metadata or {})))
    except ResourceNotFoundError:
        return []  # no container yet: nothing was ever staged
    return found


# --- Manifests ------------------------------------------------------------------------------------------


class Lost(Exception):
    """The manifest changed since this holder read it: another instance has it now (or it is gone)."""


@dataclass(frozen=True)
class Held:
    """A manifest and the ETag its next state is written against."""

    manifest: Manifest
    etag: str


async def create_manifest(container: ContainerClient, manifest: Manifest) -> Held:
    result = await container.get_blob_client(manifest.blob).upload_blob(
        manifest.model_dump_json(exclude_none=True).encode(), overwrite=False, content_settings=_JSON
    )
    return Held(manifest, str(result["etag"]))


async def read_manifest(container: ContainerClient, blob: str) -> Held | None:
    try:
        downloader = await container.download_blob(blob)
        body = await downloader.readall()
    except ResourceNotFoundError:
        return None
    return Held(Manifest.model_validate_json(body), str(downloader.properties.etag))


async def list_manifests(container: ContainerClient) -> list[Held]:
    """Every manifest, oldest first (a malformed one is logged and skipped)."""
    names = []
    try:
        async for blob in container.list_blobs(name_starts_with=MANIFEST_PREFIX):
            names.append(str(blob.name))
    except ResourceNotFoundError:
        return []
    held = []
    for name in sorted(names):
        try:
            found = await read_manifest(container, name)
        except ValueError as exc:
            logger.error("staging: manifest %s does not parse; left alone: %s", name, exc)
            continue
        if found is not None:
            held.append(found)
    return held


async def save(container: ContainerClient, held: Held, **changes: Any) -> Held:
    """Write the manifest with ``changes`` at the version held; raise Lost if someone else wrote it since."""
    manifest = held.manifest.model_copy(update=changes)
    Manifest.model_validate(manifest.model_dump())  # a change must keep it valid
    try:
        result = await container.get_blob_client(manifest.blob).upload_blob(
            manifest.model_dump_json(exclude_none=True).encode(),
            overwrite=True,
            content_settings=_JSON,
            etag=held.etag,
            match_condition=MatchConditions.IfNotModified,
        )
    except (ResourceModifiedError, ResourceNotFoundError) as exc:
        raise Lost(f"manifest {manifest.id} changed under this instance") from exc
    return Held(manifest, str(result["etag"]))


async def acquire(container: ContainerClient, held: Held, owner: str, now: datetime) -> Held | None:
    """Take the manifest for ``LOCK_SECONDS`` (or renew it); None while another holder's time runs."""
    manifest = held.manifest
    if manifest.owner not in (None, owner) and manifest.lock_until is not None and manifest.lock_until > now:
        return None
    try:
        return await save(container, held, owner=owner, lock_until=now + timedelta(seconds=LOCK_SECONDS))
    except Lost:
        return None


async def release(container: ContainerClient, held: Held) -> None:
    """Give the manifest back before the lock runs out (best effort: the lock expires anyway)."""
    try:
        await save(container, held, owner=None, lock_until=None)
    except Exception as exc:
        logger.debug("manifest %s not released (its lock will expire): %s", held.manifest.id, exc)


async def delete_manifest(container: ContainerClient, held: Held) -> None:
    try:
        await container.delete_blob(held.manifest.blob, etag=held.etag, match_condition=MatchConditions.IfNotModified)
    except ResourceNotFoundError:
        pass
    except ResourceModifiedError as exc:
        raise Lost(f"manifest {held.manifest.id} changed under this instance") from exc


# --- Helpers --------------------------------------------------------------------------------------------


async def each(items: Iterable[T], work: Callable[[T], Awaitable[Any]], limit: int = CONCURRENCY) -> list[Any]:
    """``work`` on every item, at most ``limit`` at a time; results in order (the first error is raised
    once all have settled, so no call is left running unknown)."""
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> Any:
        async with gate:
            return await work(item)

    outcomes = await asyncio.gather(*(one(item) for item in items), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes


async def delete_file(runtime: Runtime, file_id: str) -> None:
    """Delete an uploaded or output file; one already gone is fine, and one that will not go expires by itself."""
    try:
        await runtime.openai.files.delete(file_id)
    except openai.NotFoundError:
        pass
    except Exception as exc:
        logger.warning("file %s not deleted (it expires by itself): %s", file_id, brief(exc))
