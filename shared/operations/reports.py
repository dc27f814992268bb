"""What ``status`` and ``replay`` report (``Status`` and its parts, ``ReplayReport`` of ``ReplayItem``), and the
rules a replay follows (``ReplayRules``): plain values the command line prints or turns into JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class QueueState:
    """One queue: its approximate depth (visible or not) and how long its head message has waited."""

    name: str
    exists: bool
    messages: int
    oldest_seconds: float | None  # the first visible message's age; None when none is visible


@dataclass(frozen=True)
class ResultCounts:
    """Results stored (or replaced) in the last ``minutes``, by status and, for failed ones, error code."""

    minutes: int
    total: int
    by_status: dict[str, int]
    failed_by_code: dict[str, int]
    unread: int  # failed results whose body --limit left unread (their code is not counted)


@dataclass(frozen=True)
class WorkerStore:
    """The worker-only container (``STAGING_CONTAINER``): the batch lane's staged jobs and manifests, and the
    retry store. ``refused``: why it could not be read (the rest of ``status`` does not need it)."""

    name: str
    exists: bool
    staged_jobs: int = 0  # jobs/<id>.json: waiting for a batch, or in one
    oldest_staged_seconds: float | None = None
    open_batches: int = 0  # manifests submitted: a batch out (or refused) that the collector will settle
    batches_by_state: dict[str, int] = field(default_factory=dict)  # every manifest, by state
    waiting_retries: int = 0  # retries/<id>.json: jobs re-enqueued to try again later
    waiting_background: int = 0  # of those, jobs whose background response is still being collected
    refused: str | None = None


@dataclass(frozen=True)
class Status:
    queue: QueueState
    poison: QueueState
    results: ResultCounts
    worker: WorkerStore

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Action = Literal["replayed", "dropped", "skipped"]


@dataclass(frozen=True)
class ReplayItem:
    """What replay did (or, in a dry run, would do) with one poison message, and why."""

    message_id: str
    job_id: str | None
    action: Action
    reason: str
    status: str | None = None  # the job's stored result: succeeded, failed, or None when there is none
    code: str | None = None  # its error code when failed


@dataclass
class ReplayReport:
    queue: str
    poison: str
    dry_run: bool
    items: list[ReplayItem] = field(default_factory=list)
    not_shown: int = 0  # dry run: poison messages past the first PEEK_MAX (a peek shows no more)

    def count(self, action: Action) -> int:
        return sum(1 for item in self.items if item.action == action)

    def to_dict(self) -> dict[str, Any]:
        counts = {action: self.count(action) for action in ("replayed", "dropped", "skipped")}
        return {**asdict(self), **counts}


@dataclass(frozen=True)
class ReplayRules:
    """Which poisoned messages ``replay`` moves back."""

    code: str | None = None  # only jobs whose failed result has this error code
    include_invalid: bool = False  # also messages that are not valid jobs
    drop_succeeded: bool = False  # delete the messages of jobs that already succeeded
    include_unnamed: bool = False  # also jobs without an id of their own (whether they succeeded is unknown)

    def skip(self, message_id: str, job_id: str, stored: tuple[str, str | None] | None) -> ReplayItem | None:
        """Skipped (or dropped) for its stored result; None when the result does not stop a replay."""
        status, code = stored or (None, None)
        if status == "succeeded":
            if self.drop_succeeded:
                return ReplayItem(message_id, job_id, "dropped", "already succeeded", status)
            return ReplayItem(message_id, job_id, "skipped", "already succeeded (--drop-succeeded deletes it)", status)
        if self.code is not None and code != self.code:
            reason = f"{describe_outcome(stored)}, not {self.code}"
            return ReplayItem(message_id, job_id, "skipped", reason, status, code)
        return None


def describe_outcome(stored: tuple[str, str | None] | None) -> str:
    """A stored result as a replay reason says it: ``no result``, the status, and a failed one's code."""
    if stored is None:
        return "no result"
    status, code = stored
    return f"{status}: {code}" if code else status
