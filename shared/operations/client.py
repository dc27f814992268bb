"""``Operations``: the jobs queue, its poison queue and the containers, read and replayed for an operator (the
package docstring says what ``status`` and ``replay`` do)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Self

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueMessage
from azure.storage.queue.aio import QueueClient, QueueServiceClient
from pydantic import ValidationError

from shared.constants import BLOB_READER_ROLE, MANIFEST_PREFIX, QUEUE_CONTRIBUTOR_ROLE, STAGED_PREFIX
from shared.errors import MissingPermissionError, QueueNotFoundError, storage_refusal
from shared.jobs import BACKGROUND, RETRY_PREFIX, WAITING_ON, JobReference, Result
from shared.messages import JobRefused, parse_message
from shared.operations.reports import (
    QueueState,
    ReplayItem,
    ReplayReport,
    ReplayRules,
    ResultCounts,
    Status,
    WorkerStore,
    describe_outcome,
)
from shared.settings import DEFAULT_STAGING_CONTAINER, StorageNames, staging_container
from shared.storage_clients import HoldsStorage, StorageClients, StorageEndpoints, create_credential

PEEK_MAX = 32  # the most messages one peek (or receive) returns
REPLAY_VISIBILITY = 300  # seconds a poison message being looked at stays invisible to others
READ_CONCURRENCY = 16


class Operations(HoldsStorage):
    """The jobs queue, its poison queue and the results and payloads containers, for an operator."""

    def __init__(
        self,
        queues: QueueServiceClient,
        blobs: BlobServiceClient,
        names: StorageNames,
        credential: AsyncTokenCredential | None = None,
        *,
        staging: str = DEFAULT_STAGING_CONTAINER,
    ) -> None:
        self._storage = StorageClients(queues, blobs, credential)  # the credential made for them: closed with them
        self.queue: QueueClient = queues.get_queue_client(names.jobs_queue)
        self.poison: QueueClient = queues.get_queue_client(f"{names.jobs_queue}-poison")
        self.results: ContainerClient = blobs.get_container_client(names.results_container)
        self.payloads: ContainerClient = blobs.get_container_client(names.payloads_container)
        self.worker_only: ContainerClient = blobs.get_container_client(staging)

    @classmethod
    def from_settings(cls, env: Mapping[str, str] | None = None) -> Self:
        """The worker's storage settings (``env`` defaults to the process environment); ConfigurationError
        names a bad one."""
        names = StorageNames.from_env(env)
        endpoints = StorageEndpoints.from_settings(env=env)
        credential = create_credential(env)  # no request until a token is needed (never with a connection string)
        queues, blobs = endpoints.queue_service(credential), endpoints.blob_service(credential)
        return cls(queues, blobs, names, credential, staging=staging_container(env))

    # ---- status ----

    async def status(self, *, minutes: int = 60, limit: int = 1000, now: datetime | None = None) -> Status:
        """Queue depths and head ages; results of the last ``minutes``, reading at most ``limit`` bodies.

        A result's status comes from its blob metadata (one listing); the error code of a failed one
        from its body, so only failed results are downloaded, at most ``limit`` of them.
        """
        now = now or datetime.now(UTC)
        queue, poison, results, worker = await asyncio.gather(
            self._queue_state(self.queue, now),
            self._queue_state(self.poison, now),
            self._results(minutes, limit, now),
            self._worker_store(now),
        )
        return Status(queue, poison, results, worker)

    async def _queue_state(self, queue: QueueClient, now: datetime) -> QueueState:
        with storage_refusal(f"reading queue {queue.queue_name}", QUEUE_CONTRIBUTOR_ROLE, queue.url):
            try:
                properties = await queue.get_queue_properties()
            except ResourceNotFoundError:
                return QueueState(queue.queue_name, exists=False, messages=0, oldest_seconds=None)
            head = await queue.peek_messages(max_messages=1)
        inserted = head[0].inserted_on if head else None
        oldest = round(max(0.0, (now - inserted).total_seconds()), 1) if inserted else None
        return QueueState(queue.queue_name, True, properties.approximate_message_count or 0, oldest)

    async def _results(self, minutes: int, limit: int, now: datetime) -> ResultCounts:
        since = now - timedelta(minutes=minutes)
        statuses: Counter[str] = Counter()
        to_read: list[tuple[str, str | None]] = []  # (blob, status in its metadata)
        listing = storage_refusal("listing results", BLOB_READER_ROLE, self.results.url)
        with listing, contextlib.suppress(ResourceNotFoundError):  # no container yet: no results
            async for blob in self.results.list_blobs(include=["metadata"]):
                # Results are the top-level <id>.json blobs (older releases kept their retry store under retries/ here).
                if "/" in blob.name or not blob.name.endswith(".json") or blob.last_modified < since:
                    continue
                status = (blob.metadata or {}).get("status")
                if status == "succeeded":
                    statuses[status] += 1
                else:  # failed, or written before results carried their status: the body says
                    to_read.append((blob.name, status))
        gate = asyncio.Semaphore(READ_CONCURRENCY)

        async def read(name: str) -> tuple[str, str | None] | None:
            async with gate:
                return await self._outcome(name)

        outcomes = await asyncio.gather(*(read(name) for name, _ in to_read[:limit]))
        codes: Counter[str] = Counter()
        for outcome in outcomes:
            if outcome is not None:  # None: deleted since it was listed
                statuses[outcome[0]] += 1
                if outcome[0] == "failed":
                    codes[outcome[1] or "?"] += 1
        unread = to_read[limit:]
        for _, status in unread:
            statuses[status or "unknown"] += 1
        return ResultCounts(
            minutes=minutes,
            total=sum(statuses.values()),
            by_status=dict(statuses.most_common()),
            failed_by_code=dict(codes.most_common()),
            unread=sum(1 for _, status in unread if status != "succeeded"),
        )

    async def _worker_store(self, now: datetime) -> WorkerStore:
        """One listing of the worker-only container, and each manifest read for its state (manifests are few:
        one per request file of up to 50,000 jobs)."""
        container = self.worker_only
        name, staged, retries, background, oldest = container.container_name, 0, 0, 0, None
        manifests: list[str] = []
        try:
            with storage_refusal(f"listing {name}", BLOB_READER_ROLE, container.url):
                async for blob in container.list_blobs(include=["metadata"]):
                    if blob.name.startswith(STAGED_PREFIX):
                        staged += 1
                        since = blob.creation_time or blob.last_modified
                        oldest = since if oldest is None or (since and since < oldest) else oldest
                    elif blob.name.startswith(MANIFEST_PREFIX):
                        manifests.append(blob.name)
                    elif blob.name.startswith(RETRY_PREFIX):
                        retries += 1
                        background += (blob.metadata or {}).get(WAITING_ON) == BACKGROUND
        except ResourceNotFoundError:
            return WorkerStore(name, exists=False)
        except MissingPermissionError as exc:
            return WorkerStore(name, exists=True, refused=str(exc))
        gate = asyncio.Semaphore(READ_CONCURRENCY)

        async def state(blob: str) -> str | None:
            async with gate:
                return await self._manifest_state(blob)

        states = Counter(found for found in await asyncio.gather(*(state(m) for m in manifests)) if found)
        age = round(max(0.0, (now - oldest).total_seconds()), 1) if oldest else None
        return WorkerStore(
            name,
            exists=True,
            staged_jobs=staged,
            oldest_staged_seconds=age,
            open_batches=states["submitted"],
            batches_by_state=dict(states.most_common()),
            waiting_retries=retries,
            waiting_background=background,
        )

    async def _manifest_state(self, blob: str) -> str | None:
        """A manifest's state (``unknown`` when its body says none); None when it went since the listing."""
        container = self.worker_only
        with storage_refusal(f"reading {container.container_name}", BLOB_READER_ROLE, container.url):
            try:
                body = await (await container.download_blob(blob)).readall()
            except ResourceNotFoundError:
                return None
        try:
            state = json.loads(body).get("state")
        except (ValueError, AttributeError):
            return "unknown"
        return state if isinstance(state, str) else "unknown"

    async def _outcome(self, name: str) -> tuple[str, str | None] | None:
        """A stored result's (status, error code) from its body; None when there is no such blob."""
        with storage_refusal("reading results", BLOB_READER_ROLE, self.results.url):
            try:
                body = await (await self.results.download_blob(name)).readall()
            except ResourceNotFoundError:
                return None
        try:
            result = Result.model_validate_json(body)
        except ValidationError:
            return "unknown", None
        return result.status, result.error.code if result.error else None

    async def _stored(self, job_id: str) -> tuple[str, str | None] | None:
        """The job's result (status from the blob metadata, the code from the body only when failed)."""
        name = f"{job_id}.json"
        with storage_refusal("reading results", BLOB_READER_ROLE, self.results.url):
            try:
                properties = await self.results.get_blob_client(name).get_blob_properties()
            except ResourceNotFoundError:
                return None
        if (properties.metadata or {}).get("status") == "succeeded":
            return "succeeded", None
        return await self._outcome(name)

    # ---- replay ----

    async def replay(
        self, rules: ReplayRules | None = None, *, dry_run: bool = False, limit: int | None = None
    ) -> ReplayReport:
        """Move poisoned jobs back to the jobs queue, as ``rules`` say (default: those with a failed result
        or none), at most ``limit``. A job whose result succeeded stays in the poison queue (deleted there
        with ``rules.drop_succeeded``), and so do a message that is not a job and a job with no id of its own
        unless the rules include them. ``dry_run`` peeks (the first PEEK_MAX messages) and changes nothing.
        Safe to run again: what was replayed has left the poison queue, what was skipped is skipped again.
        """
        report = ReplayReport(self.queue.queue_name, self.poison.queue_name, dry_run)
        rules = rules or ReplayRules()
        if dry_run:
            await self._plan(report, rules, limit)
        else:
            await self._move(report, rules, limit)
        return report

    async def _plan(self, report: ReplayReport, rules: ReplayRules, limit: int | None) -> None:
        with storage_refusal(f"peeking at {self.poison.queue_name}", QUEUE_CONTRIBUTOR_ROLE, self.poison.url):
            try:
                messages = await self.poison.peek_messages(max_messages=PEEK_MAX)
                depth = (await self.poison.get_queue_properties()).approximate_message_count or 0
            except ResourceNotFoundError:
                return  # no poison queue: nothing was ever poisoned
        for message in messages:
            if limit is not None and report.count("replayed") >= limit:
                break
            report.items.append(await self._decide(message, rules))
        report.not_shown = max(0, depth - len(messages))

    async def _move(self, report: ReplayReport, rules: ReplayRules, limit: int | None) -> None:
        """Receive the poison queue in batches; each message is replayed, dropped or left. Whatever was
        received and not deleted (skipped, past the limit, or when an error stops the run) is made
        visible again at the end, so the next run sees it at once."""
        received: list[QueueMessage] = []
        deleted: set[str] = set()
        seen: set[str] = set()
        try:
            while limit is None or report.count("replayed") < limit:
                batch = await self._receive()
                received += batch
                fresh = [message for message in batch if message.id not in seen]
                if not fresh:
                    break  # empty, or back at messages already looked at in this run
                for message in fresh:
                    if limit is not None and report.count("replayed") >= limit:
                        break
                    seen.add(message.id)
                    item = await self._decide(message, rules)
                    report.items.append(item)
                    if item.action != "skipped":
                        await self._apply(item, message)
                        deleted.add(message.id)
        finally:
            await self._release([message for message in received if message.id not in deleted])

    async def _receive(self) -> list[QueueMessage]:
        with storage_refusal(f"receiving from {self.poison.queue_name}", QUEUE_CONTRIBUTOR_ROLE, self.poison.url):
            try:
                pager = self.poison.receive_messages(
                    messages_per_page=PEEK_MAX, max_messages=PEEK_MAX, visibility_timeout=REPLAY_VISIBILITY
                )
                return [message async for message in pager]
            except ResourceNotFoundError:
                return []

    async def _apply(self, item: ReplayItem, message: QueueMessage) -> None:
        if item.action == "replayed":  # send first: a crash before the delete duplicates, never loses
            with storage_refusal(f"sending to {self.queue.queue_name}", QUEUE_CONTRIBUTOR_ROLE, self.queue.url):
                try:
                    await self.queue.send_message(message.content)
                except ResourceNotFoundError as exc:
                    raise QueueNotFoundError(self.queue.queue_name, self.queue.url) from exc
        deleting = storage_refusal(f"deleting from {self.poison.queue_name}", QUEUE_CONTRIBUTOR_ROLE, self.poison.url)
        with deleting, contextlib.suppress(ResourceNotFoundError):  # gone already: someone else moved it
            await self.poison.delete_message(message.id, message.pop_receipt)

    async def _release(self, messages: list[QueueMessage]) -> None:
        """Make messages left in place visible again (best effort: otherwise they return in minutes)."""
        for message in messages:
            with contextlib.suppress(HttpResponseError):
                await self.poison.update_message(message.id, message.pop_receipt, visibility_timeout=0)

    async def _decide(self, message: QueueMessage, rules: ReplayRules) -> ReplayItem:
        text = message.content if isinstance(message.content, str) else str(message.content)
        try:
            parsed = parse_message(text.encode())
        except JobRefused as exc:
            return await self._decide_invalid(message.id, exc, rules)
        if parsed.id is None:
            reason = "no job id: its result, if any, is under the original message's id, which poisoning does not keep"
            if rules.code is not None:
                return ReplayItem(message.id, None, "skipped", f"{reason}; not replayed with --code")
            if not rules.include_unnamed:  # it may have succeeded: replaying would run it again under a new id
                return ReplayItem(message.id, None, "skipped", f"{reason}; --include-no-id replays it anyway")
            return ReplayItem(message.id, None, "replayed", reason)
        stored = await self._stored(parsed.id)
        if skip := rules.skip(message.id, parsed.id, stored):
            return skip
        status, code = stored or (None, None)
        if gone := await self._missing_blob(parsed):
            return ReplayItem(message.id, parsed.id, "skipped", f"{gone} is gone: submit the job again", status, code)
        return ReplayItem(message.id, parsed.id, "replayed", describe_outcome(stored), status, code)

    async def _decide_invalid(self, message_id: str, exc: JobRefused, rules: ReplayRules) -> ReplayItem:
        stored = await self._stored(exc.job_id) if exc.job_id else None
        if exc.job_id and (skip := rules.skip(message_id, exc.job_id, stored)):
            return skip
        status, code = stored or (None, None)
        what = f"not a valid job ({exc.code})"
        if not rules.include_invalid:
            return ReplayItem(message_id, exc.job_id, "skipped", f"{what}: --include-invalid replays it", status, code)
        if rules.code is not None and exc.job_id is None:
            return ReplayItem(message_id, None, "skipped", f"{what}, no job id: not replayed with --code")
        return ReplayItem(message_id, exc.job_id, "replayed", f"{what}: the worker will record it as failed", status)

    async def _missing_blob(self, parsed: object) -> str | None:
        """The payload a claim-check reference points at, when it no longer exists (the worker deletes it with
        the result). A re-enqueued pointer's state is in the worker-only container, which operators need not
        read: replayed, a pointer whose state is gone is consumed by the worker without touching anything."""
        if not isinstance(parsed, JobReference):
            return None
        container, name = self.payloads, parsed.payload.blob
        with storage_refusal(f"reading {container.container_name}", BLOB_READER_ROLE, container.url):
            if await container.get_blob_client(name).exists():
                return None
        return f"its payload blob {container.container_name}/{name}"
