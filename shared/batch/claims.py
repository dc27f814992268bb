"""The staged jobs as one submit tick sees them (``Claims``): which are free to claim, their bodies and
estimated tokens, and the claims a ``claiming`` manifest makes.

Each claim is a conditional metadata write on the staged job, so a job two submitters both listed is claimed
by exactly one. A claim naming a manifest that does not exist is free again (never while its holder lives: a
manifest is written before its claims and deleted after its jobs are settled). A job whose result is already
final is dropped and unstaged; one whose staged copy does not parse fails alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from shared import store
from shared.connections import Runtime
from shared.constants import MANIFEST_PREFIX

from .lines import job_tokens
from .records import (
    CLAIM,
    MANIFEST_ID_PATTERN,
    Listed,
    Manifest,
    Staged,
    delete_staged,
    each,
    load_staged,
    read_manifest,
    set_claim,
    staged_blob,
)
from .staging import fail_unreadable
from .submit_report import SubmitReport


@dataclass
class Claims:
    """The staged jobs as one tick sees them, and the manifests their claims name (``known``)."""

    runtime: Runtime
    container: ContainerClient
    report: SubmitReport
    known: dict[str, bool] = field(default_factory=dict)  # manifest id -> exists

    async def tokens(self, job: Listed) -> int | None:
        """The job's estimated enqueued tokens: from its metadata, or its body if staged before they were
        recorded. None when it is no longer staged, or its blob does not parse (its job then fails)."""
        if job.tokens is not None:
            return job.tokens
        staged = await self.load(job.job_id)
        return job_tokens(staged.record.job) if staged is not None else None

    async def load(self, job_id: str) -> Staged | None:
        """The staged job; one whose blob does not parse fails alone (None, as for one no longer staged)."""
        try:
            return await load_staged(self.container, job_id)
        except ValueError as exc:
            self.report.failed_jobs += 1
            await fail_unreadable(self.runtime, self.container, job_id, exc)
            return None

    async def free(self, job: Listed) -> bool:
        """Unclaimed, or claimed by a manifest that does not exist."""
        claim = job.metadata.get(CLAIM)
        if not claim:
            return True
        if claim not in self.known:
            exists = False
            if re.fullmatch(MANIFEST_ID_PATTERN, claim) is not None:
                exists = await read_manifest(self.container, f"{MANIFEST_PREFIX}{claim}.json") is not None
            self.known[claim] = exists
        return not self.known[claim]

    async def take(self, manifest: Manifest, listed: dict[str, Listed]) -> list[str]:
        """Claim the manifest's jobs (as listed, when they were): those it won and whose result is not final."""

        async def claim(job_id: str) -> bool:
            seen = listed.get(job_id)
            for _ in range(2):
                version = (seen.etag, seen.metadata) if seen is not None else await self._version(job_id)
                if version is None:
                    return False  # no longer staged
                etag, metadata = version
                if metadata.get(CLAIM) == manifest.id:
                    return True
                if metadata.get(CLAIM) and not await self.free(Listed(job_id, etag, 0, metadata)):
                    return False
                if await set_claim(self.container, job_id, etag, {**metadata, CLAIM: manifest.id}):
                    return True
                seen = None  # changed since listed: look again
            return False

        won = await each(manifest.job_ids, claim)
        return await self._unfinished([job_id for job_id, ok in zip(manifest.job_ids, won, strict=True) if ok])

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
