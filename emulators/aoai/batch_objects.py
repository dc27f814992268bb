"""The Files and Batches APIs' objects (``batches`` keeps them): a file, one request's result line, a batch with
its schedule, and how each renders as the openai SDK's ``FileObject`` / ``Batch`` JSON."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emulators.aoai.config import BatchConfig

COMPLETION_WINDOW = 24 * 3600


@dataclass(frozen=True)
class Outcome:
    """What the live route (chat completions or Responses) answers one request body: status, JSON body and its token
    counts."""

    status: int
    body: dict[str, Any]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0


Answer = Callable[[str, dict[str, Any]], Outcome]  # (the line's url, its body) -> what the live route answers


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str  # "batch" (uploaded input) or "batch_output" (a batch's output or error file)
    data: bytes
    created_at: float
    expires_at: float | None = None
    # An uploaded file reads "pending" until then (Azure processes a new upload before a batch may use it),
    # then "processed", or "error" with ``error`` as its status_details. None: processed from the start.
    processed_at: float | None = None
    error: str | None = None

    def status(self, now: float) -> str:
        if self.processed_at is not None and now < self.processed_at:
            return "pending"
        return "error" if self.error is not None else "processed"

    def to_json(self, now: float) -> dict[str, Any]:
        expires_at = None if self.expires_at is None else int(self.expires_at)
        status = self.status(now)
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": status,
            "expires_at": expires_at,
            "status_details": self.error if status == "error" else None,
        }


@dataclass
class Result:
    """One request's line of the output or error file."""

    custom_id: str
    outcome: Outcome | None  # None: the request never produced a response (injected failure, expiry, cancel)
    error: dict[str, Any] | None = None
    id: str = field(default_factory=lambda: f"batch_req_{uuid.uuid4().hex}")
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def ok(self) -> bool:
        return self.outcome is not None and self.outcome.status == 200

    def line(self) -> dict[str, Any]:
        response = None
        if self.outcome is not None:
            response = {"status_code": self.outcome.status, "request_id": self.request_id, "body": self.outcome.body}
        return {"id": self.id, "custom_id": self.custom_id, "response": response, "error": self.error}


@dataclass(frozen=True)
class Schedule:
    """When a batch starts, finalizes and completes (epoch seconds), fixed at create from ``BatchConfig``."""

    in_progress_at: float
    finalizing_at: float
    done_at: float
    expire_at: float | None
    cancelling_seconds: float

    @classmethod
    def starting(cls, now: float, config: BatchConfig) -> Schedule:
        in_progress_at = now + config.validating_seconds
        finalizing_at = in_progress_at + config.processing_seconds
        expire_at = None if config.expire_after_seconds is None else in_progress_at + config.expire_after_seconds
        done_at = finalizing_at + config.finalizing_seconds
        return cls(in_progress_at, finalizing_at, done_at, expire_at, config.cancelling_seconds)


@dataclass
class Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    deployment: str | None
    created_at: float
    total: int
    results: list[Result] = field(repr=False)  # in file order; empty when validation failed or once ended
    errors: list[dict[str, Any]]
    enqueued_tokens: int
    schedule: Schedule
    shuffle_seed: int | None
    cancelling_at: float | None = None
    ended: tuple[str, float, int] | None = None  # (terminal status, when, requests processed)
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: tuple[int, int] = (0, 0)  # (completed, failed) once ended
    usage: dict[str, Any] | None = None
    reported_status: str | None = None  # a status the API shows instead of the real one (``report_status``)

    def processed(self, at: float) -> int:
        """Requests done by ``at``: evenly over the in-progress window."""
        start, end = self.schedule.in_progress_at, self.schedule.finalizing_at
        if at >= end:
            return self.total
        return 0 if at <= start else math.floor(self.total * (at - start) / (end - start))

    def status(self, now: float) -> str:
        if self.ended is not None:
            return self.ended[0]
        if self.cancelling_at is not None:
            return "cancelling"
        if now <= self.schedule.in_progress_at:  # so create answers "validating" even with no validating time
            return "validating"
        return "in_progress" if now < self.schedule.finalizing_at else "finalizing"

    def to_json(self, now: float) -> dict[str, Any]:
        status = self.reported_status or self.status(now)
        # Work stops when cancelling starts or the batch ends; a stage after that was never reached.
        stop = self.cancelling_at if self.cancelling_at is not None else self.ended[1] if self.ended else now
        ran = not self.errors and self.schedule.in_progress_at < stop
        ended_at = int(self.ended[1]) if self.ended else None
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "in_progress_at": int(self.schedule.in_progress_at) if ran else None,
            "expires_at": int(self.created_at) + COMPLETION_WINDOW,
            "finalizing_at": int(self.schedule.finalizing_at) if ran and self.schedule.finalizing_at <= stop else None,
            "completed_at": ended_at if status == "completed" else None,
            "failed_at": ended_at if status == "failed" else None,
            "expired_at": ended_at if status == "expired" else None,
            "cancelling_at": None if self.cancelling_at is None else int(self.cancelling_at),
            "cancelled_at": ended_at if status == "cancelled" else None,
            "request_counts": self._counts(status, stop),
            "metadata": self.metadata,
            "usage": self.usage,
        }

    def _counts(self, status: str, stop: float) -> dict[str, int]:
        if status == "validating":
            return {"total": 0, "completed": 0, "failed": 0}  # as Azure's create answer shows
        if self.ended is not None:
            completed, failed = self.counts
        else:
            done = self.results[: self.processed(stop)] if not self.errors else []
            completed = sum(r.ok for r in done)
            failed = len(done) - completed
        return {"total": self.total, "completed": completed, "failed": failed}


def usage(results: list[Result]) -> dict[str, Any]:
    prompt = sum(r.outcome.prompt_tokens for r in results if r.outcome)
    completion = sum(r.outcome.completion_tokens for r in results if r.outcome)
    reasoning = sum(r.outcome.reasoning_tokens for r in results if r.outcome)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def json_line(value: Any) -> str:
    """One JSONL line: compact, UTF-8 as is, newline-terminated."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"
