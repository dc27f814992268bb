"""What both producer clients do to a job before sending it: validate it with the worker's own parser,
give it an id and, when asked, a lane. Private: ``shared.producer`` and ``shared.producer.aio`` export
the public names."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.errors import InvalidJobError
from shared.jobs import Job, Lane
from shared.messages import JobRefused, parse_job

# What submit and submit_many take: a contract Job, or a dict of the same shape.
JobInput = Job | Mapping[str, Any]


def new_job_id() -> str:
    """A fresh job id (uuid4 hex: 32 characters within the contract's id alphabet)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class SubmitProgress:
    """Reported by ``submit_many`` after each job is on the queue (``id`` is the one just sent)."""

    id: str
    done: int
    total: int
    elapsed: float

    @property
    def rate(self) -> float:
        """Jobs per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate (None before the first job)."""
        return (self.total - self.done) / self.rate if self.rate > 0 else None


@dataclass(frozen=True)
class _Prepared:
    job: Job
    data: dict[str, Any]
    text: str  # exactly the JSON of data, as validated

    @property
    def id(self) -> str:
        assert self.job.id is not None  # prepare_job always sets one
        return self.job.id


def prepare_job(job: JobInput, *, index: int | None = None, lane: Lane | None = None) -> Job:
    """Validate ``job`` as the worker will and give it an id if it has none; raise InvalidJobError.

    The returned Job always has an ``id`` (see ``JobsClient.submit`` for why). ``lane`` (``"live"`` or
    ``"batch"``) is given to a job that names none; a job naming the other one is refused
    (``lane_conflict``).
    """
    return _prepare(job, index=index, lane=lane).job


def _prepare(job: JobInput, *, index: int | None = None, lane: Lane | None = None) -> _Prepared:
    where = f"job #{index}: " if index is not None else ""
    if isinstance(job, Job):
        # No serializer warnings: a Job built without validation is re-validated just below.
        data: dict[str, Any] = job.model_dump(mode="json", exclude_unset=True, warnings=False)
    elif isinstance(job, Mapping):
        data = dict(job)
    else:
        raise InvalidJobError(
            f"{where}a job is a shared.jobs.Job or a dict, got {type(job).__name__}",
            field=None,
            code="invalid_job",
            index=index,
        )
    if data.get("redelivery") is not None:
        raise InvalidJobError(
            f"{where}redelivery is set by the worker on its own copies; leave it out",
            field="redelivery",
            code="unknown_field",
            index=index,
        )
    if data.get("id") is None:
        data["id"] = new_job_id()
    if lane is not None and data.setdefault("lane", lane) != lane:
        raise InvalidJobError(
            f"{where}the job says lane {data['lane']!r} but it is being sent to the {lane} lane",
            field="lane",
            code="lane_conflict",
            index=index,
        )
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
        body = text.encode()  # UnicodeEncodeError (a ValueError) for lone surrogates
    except (TypeError, ValueError) as exc:
        raise InvalidJobError(
            f"{where}the job is not JSON ({exc}); use strings, numbers, booleans, lists and objects",
            field=None,
            code="invalid_json",
            index=index,
        ) from exc
    try:
        # The worker's own parser on the exact bytes that will be sent: same models, same verdicts.
        return _Prepared(parse_job(body), data, text)
    except JobRefused as exc:
        cause = exc.__cause__
        field = None
        if isinstance(cause, ValidationError) and (errors := cause.errors(include_url=False)):
            field = ".".join(str(part) for part in errors[0]["loc"]) or None
        error = InvalidJobError(f"{where}{exc.message}", field=field, code=exc.code, index=index)
        raise error from (cause if isinstance(cause, ValidationError) else exc)
