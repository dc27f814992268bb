"""Stored responses (``store: true``) and the background lifecycle, kept in memory by the emulator (so a client may
restart and come back for its response), and the Responses API's counters.

A background response's schedule is fixed when it is created: ``queued`` until ``queued_until``, then
``in_progress`` until ``done_at``, then its final status (``completed``, ``incomplete`` or ``failed``); a stuck one
(``done_at`` None) never leaves ``in_progress``. The status is computed from the clock on each read (no background
task). A cancel before the end makes it ``cancelled``; after the end it changes nothing (cancel is idempotent).
A synchronous response is stored already finished. Tokens are billed (``settle``) once, when a response is first
seen finished: completed and incomplete ones bill their usage; failed and cancelled ones bill nothing (our
assumption: Azure's billing of a cancelled background response is unconfirmed)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from emulators.aoai.response_objects import Final, ResponseRequest, render

TERMINAL = ("completed", "failed", "incomplete", "cancelled")
NOT_FOUND = "Response with id '{id}' not found."


@dataclass
class StoredResponse:
    id: str
    request: ResponseRequest
    deployment: str
    model: str
    tier: str
    created_at: float
    queued_until: float
    done_at: float | None  # None: stuck in progress
    final: Final
    cancelled_at: float | None = None
    settled: bool = False

    def status(self, now: float) -> str:
        finished = self.done_at is not None and now >= self.done_at
        if self.cancelled_at is not None and (self.done_at is None or self.cancelled_at < self.done_at):
            return "cancelled"
        if finished:
            return self.final.status
        return "queued" if now < self.queued_until else "in_progress"

    def to_json(self, now: float) -> dict[str, Any]:
        status = self.status(now)
        done = status not in ("queued", "in_progress", "cancelled")
        return render(
            self.request,
            response_id=self.id,
            created_at=self.created_at,
            model=self.model,
            tier=self.tier,
            status=status,
            final=self.final if done else None,
            completed_at=self.done_at if status == "completed" else None,
        )


class ResponseStore:
    """Every stored response of one emulated resource, and the API's counters; touched only from the server's loop."""

    def __init__(self) -> None:
        self.responses: dict[str, StoredResponse] = {}
        self.unsettled: set[str] = set()  # the ids of stored responses not yet billed
        self.reset_counters()

    def reset_counters(self) -> None:
        self.counts: Counter[str] = Counter()  # "created", "background", "retrieves", "cancels", "deletes"
        self.by_tier: dict[str, Counter[str]] = {}

    def count(self, what: str, tier: str) -> None:
        self.counts[what] += 1
        self.by_tier.setdefault(tier, Counter())[what] += 1

    def add(self, stored: StoredResponse) -> None:
        self.responses[stored.id] = stored
        if not stored.settled:
            self.unsettled.add(stored.id)

    def get(self, response_id: str) -> StoredResponse | None:
        return self.responses.get(response_id)

    def cancel(self, stored: StoredResponse, now: float) -> None:
        """Cancel it unless it already ended (or was cancelled): the answer is then its final object as it is."""
        if stored.status(now) in ("queued", "in_progress"):
            stored.cancelled_at = now

    def delete(self, response_id: str) -> bool:
        self.unsettled.discard(response_id)  # deleted before it was seen finished: never billed
        return self.responses.pop(response_id, None) is not None

    def settle(self, now: float) -> list[StoredResponse]:
        """The responses seen finished for the first time (each once), for their usage to be counted."""
        settled = [self.responses[i] for i in self.unsettled if self.responses[i].status(now) in TERMINAL]
        for stored in settled:
            stored.settled = True
            self.unsettled.discard(stored.id)
        return settled

    def stats(self) -> dict[str, Any]:
        return {
            **{name: self.counts[name] for name in ("created", "background", "retrieves", "cancels", "deletes")},
            "stored": len(self.responses),
            "by_tier": {tier: dict(counts) for tier, counts in sorted(self.by_tier.items())},
        }
