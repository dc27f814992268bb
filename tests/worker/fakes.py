"""In-process stand-ins for the storage and model clients the worker holds, for fast unit and
property tests of ``shared.worker.handle``'s policy. They keep the parts of the real services'
behaviour the policy relies on (create-only and ETag-conditional writes, metadata, visibility
delays, the SDK refusing what JSON cannot carry); everything else is covered end to end against
Azurite and the emulators.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from shared.connections import Runtime
from shared.settings import Settings

_etags = itertools.count(1)
_writes = itertools.count(1)


@dataclass
class Blob:
    body: bytes
    metadata: dict[str, str]
    etag: str = field(default_factory=lambda: f'"{next(_etags)}"')
    # Storage's Last-Modified, one second apart per write here (Azure's has one-second resolution).
    last_modified: datetime = field(
        default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=next(_writes))
    )


BLOB_CALLS = ("download", "upload", "delete", "set_metadata")


class FakeContainer:
    def __init__(self, name: str) -> None:
        self.container_name = name
        self.blobs: dict[str, Blob] = {}
        self.before_conditional_upload: Callable[[], None] | None = None  # to interleave a rival writer
        self.failing: list[tuple[str, bool]] = []  # the next calls of a kind to fail (see fail_next)
        self.failed: list[tuple[str, str]] = []  # (kind, blob) of each call made to fail
        self.failing_lists = 0  # the next listings fail as a dropped connection would

    def fail_next(self, call: str, *, applied: bool = False) -> None:
        """Make the next ``call`` (one of BLOB_CALLS) fail as a dropped connection would: before it reaches
        storage, or (``applied``, for a write) after storage carried it out, its answer lost."""
        assert call in BLOB_CALLS, call
        self.failing.append((call, applied and call != "download"))

    def _call(self, call: str, name: str, *, applied: bool) -> None:
        """Raise if the next ``call`` is to fail at this point (before or after it is carried out)."""
        for i, (kind, after) in enumerate(self.failing):
            if kind == call:
                if after == applied:
                    del self.failing[i]
                    self.failed.append((call, name))
                    raise ServiceRequestError(f"{call} {name}: connection reset")
                return

    async def create_container(self) -> None:
        raise ResourceExistsError("exists")  # infra made it; the worker tolerates this

    async def download_blob(self, name: str, offset: int = 0, length: int | None = None) -> Any:
        self._call("download", name, applied=False)
        blob = self.blobs.get(name)
        if blob is None:
            raise ResourceNotFoundError(f"{name} not found")
        data = blob.body[offset : None if length is None else offset + length]

        async def readall() -> bytes:
            return data

        return SimpleNamespace(
            readall=readall, properties=SimpleNamespace(metadata=dict(blob.metadata), etag=blob.etag)
        )

    async def upload_blob(
        self,
        name: str,
        data: bytes,
        *,
        overwrite: bool = False,
        metadata: dict[str, str] | None = None,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        if match_condition is not None and self.before_conditional_upload is not None:
            rival, self.before_conditional_upload = self.before_conditional_upload, None
            rival()
        self._call("upload", name, applied=False)
        existing = self.blobs.get(name)
        if existing is not None and not overwrite:
            raise ResourceExistsError(f"{name} exists")
        if match_condition == MatchConditions.IfNotModified and (existing is None or existing.etag != etag):
            raise ResourceModifiedError(f"{name} changed")
        data.decode("utf-8")  # storage keeps bytes; the worker must have produced valid UTF-8
        self.blobs[name] = blob = Blob(bytes(data), dict(metadata or {}))
        self._call("upload", name, applied=True)
        return {"etag": blob.etag}

    async def delete_blob(self, name: str) -> None:
        self._call("delete", name, applied=False)
        if self.blobs.pop(name, None) is None:
            raise ResourceNotFoundError(f"{name} not found")
        self._call("delete", name, applied=True)

    async def list_blobs(self, name_starts_with: str = "", include: list[str] | None = None) -> AsyncIterator[Any]:
        """Like the SDK's pager: the blobs named so, with their metadata (asked for with ``include``)."""
        if self.failing_lists:
            self.failing_lists -= 1
            raise ServiceRequestError("list: connection reset")
        for name, blob in sorted(self.blobs.items()):
            if name.startswith(name_starts_with):
                metadata = dict(blob.metadata) if include else None
                yield SimpleNamespace(name=name, metadata=metadata, etag=blob.etag, last_modified=blob.last_modified)

    def get_blob_client(self, name: str) -> Any:
        async def upload_blob(data: bytes, **options: Any) -> dict[str, Any]:
            return await self.upload_blob(name, data, **options)

        async def set_blob_metadata(
            metadata: dict[str, str], etag: str | None = None, match_condition: MatchConditions | None = None
        ) -> None:
            self._call("set_metadata", name, applied=False)
            blob = self.blobs.get(name)
            if blob is None:
                raise ResourceNotFoundError(f"{name} not found")
            if match_condition == MatchConditions.IfNotModified and blob.etag != etag:
                raise ResourceModifiedError(f"{name} changed")
            self.blobs[name] = Blob(blob.body, dict(metadata))  # a new version, as in Azure
            self._call("set_metadata", name, applied=True)

        async def get_blob_properties() -> Any:
            self._call("download", name, applied=False)
            blob = self.blobs.get(name)
            if blob is None:
                raise ResourceNotFoundError(f"{name} not found")
            return SimpleNamespace(metadata=dict(blob.metadata), etag=blob.etag, last_modified=blob.last_modified)

        return SimpleNamespace(
            upload_blob=upload_blob, set_blob_metadata=set_blob_metadata, get_blob_properties=get_blob_properties
        )


class FakeQueue:
    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[tuple[str, int]] = []  # (body, visibility timeout)
        self.ids: list[str] = []  # each sent message's id, in step with ``messages``
        self.receipts: dict[str, str] = {}  # by message id: its current pop receipt (until it is received)
        self.updates: list[tuple[str, int]] = []  # (message id, visibility timeout) of each update_message
        self.missing = False  # a reply queue deleted under the worker
        self.failing_sends = 0  # the next sends fail as a network error would
        self.failing_updates = 0  # the next update_message calls fail as a network error would
        self._sequence = itertools.count(1)

    async def create_queue(self) -> None:
        if not self.missing:
            raise ResourceExistsError("exists")
        self.missing = False

    async def send_message(self, body: str, visibility_timeout: int = 0) -> Any:
        if self.missing:
            raise ResourceNotFoundError(f"queue {self.name} not found")
        if self.failing_sends:
            self.failing_sends -= 1
            raise ServiceRequestError("connection reset")
        number = next(self._sequence)
        message_id, receipt = f"{self.name}-{number}", f"receipt-{number}"
        self.messages.append((body, visibility_timeout))
        self.ids.append(message_id)
        self.receipts[message_id] = receipt
        return SimpleNamespace(id=message_id, pop_receipt=receipt, content=body)

    def received(self, message_id: str) -> None:
        """The message was dequeued: its pop receipt changed (an update with the old one now fails, as in Azure)."""
        self.receipts[message_id] = f"dequeued-{message_id}"

    def deleted(self, message_id: str) -> None:
        self.receipts.pop(message_id, None)

    async def update_message(self, message: str, pop_receipt: str, *, visibility_timeout: int = 0) -> Any:
        """As Azure answers: 404 for a message gone, 400 ``PopReceiptMismatch`` for a receipt no longer its own."""
        if self.failing_updates:
            self.failing_updates -= 1
            raise ServiceRequestError("connection reset")
        if message not in self.receipts:
            raise ResourceNotFoundError("MessageNotFound")
        if self.receipts[message] != pop_receipt:
            mismatch = HttpResponseError(
                "The specified pop receipt did not match the pop receipt for a dequeued message."
            )
            mismatch.status_code, mismatch.error_code = 400, "PopReceiptMismatch"
            raise mismatch
        self.receipts[message] = new = f"{pop_receipt}+"
        self.updates.append((message, visibility_timeout))
        return SimpleNamespace(pop_receipt=new)


class FakeStorage:
    """Both storage service clients (``get_container_client`` / ``get_queue_client``)."""

    def __init__(self) -> None:
        self.containers: dict[str, FakeContainer] = {}
        self.queues: dict[str, FakeQueue] = {}

    def get_container_client(self, name: str) -> FakeContainer:
        return self.containers.setdefault(name, FakeContainer(name))

    def get_queue_client(self, name: str) -> FakeQueue:
        return self.queues.setdefault(name, FakeQueue(name))


class FakeModel:
    """``openai.AsyncOpenAI().chat.completions``: counts calls, answers ``echo: <last message>``.

    ``errors`` are raised by the next calls, in order. Like the SDK, a request JSON cannot carry
    (NaN, infinity) is refused before anything is sent.
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.errors: list[Exception] = []
        self.reasoning_tokens: int | None = None  # set: answer as a reasoning model spending this many
        self.chat = SimpleNamespace(completions=self)

    async def create(self, **request: Any) -> ChatCompletion:
        json.dumps(request, allow_nan=False)  # ValueError, as the SDK raises
        self.calls.append(request)
        if self.errors:
            raise self.errors.pop(0)
        content, finish, completion_tokens = f"echo: {request['messages'][-1]['content']}", "stop", 2
        if self.reasoning_tokens is not None:  # reasoning is paid from the budget first
            budget = request.get("max_completion_tokens", 10_000)
            completion_tokens = min(budget, self.reasoning_tokens + 2)
            if budget <= self.reasoning_tokens:
                content, finish = "", "length"
        return ChatCompletion.model_validate(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 0,
                "model": request["model"],
                "choices": [
                    {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}
                ],
                "usage": {
                    "prompt_tokens": 3,
                    "completion_tokens": completion_tokens,
                    "total_tokens": 3 + completion_tokens,
                    "completion_tokens_details": {
                        "reasoning_tokens": min(completion_tokens, self.reasoning_tokens or 0)
                    },
                    "prompt_tokens_details": {"cached_tokens": 0},
                },
            }
        )

    def with_options(self, **_: Any) -> FakeModel:
        """Like the SDK's copy with other options (the worker asks for one without retries to fail over)."""
        return self

    async def close(self) -> None:
        return None


class FakeResponses:
    """``client.responses``: a response per create; in background mode it runs until ``status`` says how it
    ended, otherwise it is completed at once. An ended one carries usage and the tier that served it."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.cancelled: list[str] = []
        self.status: dict[str, str] = {}
        self.errors: list[Exception] = []  # raised by the next retrieve calls, in order
        self.summarised: set[str] = set()  # responses asked for a reasoning summary

    def _response(self, response_id: str) -> Response:
        status = self.status[response_id]
        done = status == "completed"
        ended = status not in ("queued", "in_progress")
        usage = {
            "input_tokens": 11,
            "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
            "output_tokens": 9,
            "output_tokens_details": {"reasoning_tokens": 7},
            "total_tokens": 20,
        }
        content = [{"type": "output_text", "text": "deep thought", "annotations": []}]
        message = {"type": "message", "id": "m", "role": "assistant", "status": "completed", "content": content}
        return Response.model_validate(
            {
                "id": response_id,
                "object": "response",
                "created_at": 0,
                "model": "gpt-5-pro",
                "status": status,
                "output": ([self._reasoning()] if response_id in self.summarised else []) + [message] if done else [],
                "parallel_tool_calls": False,
                "tool_choice": "auto",
                "tools": [],
                "background": True,
                **({"usage": usage, "service_tier": "default"} if ended else {}),
            }
        )

    @staticmethod
    def _reasoning() -> dict[str, Any]:
        return {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "thought briefly"}]}

    async def create(self, **request: Any) -> Response:
        self.created.append(request)
        response_id = f"resp_{len(self.created)}"
        if request.get("reasoning", {}).get("summary"):
            self.summarised.add(response_id)
        self.status[response_id] = "queued" if request.get("background") else "completed"
        return self._response(response_id)

    async def retrieve(self, response_id: str) -> Response:
        if self.errors:
            raise self.errors.pop(0)
        return self._response(response_id)

    async def cancel(self, response_id: str) -> Response:
        self.cancelled.append(response_id)
        if self.status[response_id] in ("queued", "in_progress"):
            self.status[response_id] = "cancelled"
        return self._response(response_id)


SETTINGS = {
    "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com",
    "AZURE_OPENAI_DEPLOYMENT": "gpt-test",
    "REPLY_QUEUES_ALLOWED": "replies",
    "MAX_PROMPT_CHARS": "5000",
    # Pacing off: the fake model sends no rate-limit headers, and a 429's hold would keep every later delivery
    # of a test from the model. tests/worker/test_pacing*.py switch it on.
    "MODEL_ADMISSION_WAIT_SECONDS": "0",
}


@dataclass
class Message:
    """What ``azure.functions.QueueMessage`` gives the worker (aware UTC times, as the real worker does)."""

    body: bytes
    id: str = "msg-1"
    dequeue_count: int = 1
    insertion_time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def get_body(self) -> bytes:
        return self.body


@dataclass
class FakeWorld:
    runtime: Runtime
    storage: FakeStorage
    model: FakeModel

    @property
    def results(self) -> FakeContainer:
        return self.storage.get_container_client(self.runtime.settings.results_container)

    @property
    def payloads(self) -> FakeContainer:
        return self.storage.get_container_client(self.runtime.settings.payloads_container)

    @property
    def worker_only(self) -> FakeContainer:
        """STAGING_CONTAINER: the retry store, staged batch jobs and manifests."""
        return self.storage.get_container_client(self.runtime.settings.staging_container)

    @property
    def jobs_queue(self) -> FakeQueue:
        return self.storage.get_queue_client(self.runtime.settings.jobs_queue)

    def result(self, job_id: str) -> dict[str, Any]:
        return dict(json.loads(self.results.blobs[f"{job_id}.json"].body))

    def result_ids(self) -> set[str]:
        return {name.removesuffix(".json") for name in self.results.blobs if "/" not in name}


def fake_world(**settings: str) -> FakeWorld:
    storage, model = FakeStorage(), FakeModel()
    runtime = Runtime(
        settings=Settings.from_env({**SETTINGS, **settings}),
        credential=None,  # type: ignore[arg-type]  # never used: the fakes need no token
        openai=model,  # type: ignore[arg-type]
        queues=storage,  # type: ignore[arg-type]
        blobs=storage,  # type: ignore[arg-type]
        identity={"oid": "0000-oid"},
    )
    # No waking of waiting jobs on a circuit's changes (background tasks on the router's clock): the tests of
    # shared.recovery attach it themselves.
    runtime.router.on_opened, runtime.router.on_recovered = lambda *_: None, lambda *_: None
    return FakeWorld(runtime, storage, model)


def responses_world() -> FakeWorld:
    """A fake world whose deployment serves the Responses API (a Responses-only model), through ``FakeResponses``."""
    made = fake_world(AZURE_OPENAI_DEPLOYMENT="gpt-5-pro", AZURE_OPENAI_API="responses", BACKGROUND_MAX_SECONDS="600")
    made.model.responses = FakeResponses()  # type: ignore[attr-defined]
    return made


def responses_of(world: FakeWorld) -> FakeResponses:
    """The ``FakeResponses`` of a ``responses_world``."""
    fake: FakeResponses = world.model.responses  # type: ignore[attr-defined]
    return fake
