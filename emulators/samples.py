"""`make run`'s samples on the emulator: the deployments they name beyond the two defaults, and what their results
show beyond the answer (``emulators/run.py`` sends them).

- ``EMULATOR``: the emulator's deployments and background timing. ``gpt-5.1-codex`` is Responses-only (sent
  chat completions it answers Azure's 400 ``OperationNotSupported``): the Responses, background and filtered samples
  go to it. ``gpt-5.6-luna`` takes flex; ``flex_gap`` makes its flex capacity short for the whole run, so the flex
  sample waits for it and then falls back to the default tier before its deadline. A background response thinks
  ``THINK_SECONDS`` (a long reasoning job, scaled down), in parallel with the other samples.
- ``worker_settings``: the worker's pool (``AZURE_OPENAI_POOL``), each deployment with the API it serves, and
  background polls every 2 s doubling to 4 s, so a finished response is collected within seconds.
- ``prepared``: a sample's ``deadline`` may be relative to when it is sent (``"+75s"``), as a static file needs.
- ``notes``: after the results, what the background and flex samples showed: the jobs answered while the model
  thought (no worker slot held meanwhile: the job waits as a delayed queue message), the tier that served and the
  time left before the deadline.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.jobs import Result

RESPONSES_DEPLOYMENT = "gpt-5.1-codex"  # Responses only
FLEX_DEPLOYMENT = "gpt-5.6-luna"  # takes service_tier flex
THINK_SECONDS = 20.0
EMULATOR: dict[str, Any] = {"background_seconds": THINK_SECONDS, "background_queued_seconds": 0.5}
_RELATIVE = re.compile(r"^\+([0-9]{1,5})s$")


def flex_gap(seconds: float = 3600) -> dict[str, float]:
    """The flex deployment's fields for a flex capacity gap lasting ``seconds`` (the run, and then some)."""
    return {"flex_unavailable_until": time.time() + seconds}


def worker_settings(endpoint: str, deployments: Sequence[str]) -> dict[str, str]:
    """The worker's pool on the emulator (``deployments``, each serving chat unless it is Responses-only) and its
    background polling."""
    pool = [
        {"endpoint": endpoint, "deployment": name, **({"api": "responses"} if name == RESPONSES_DEPLOYMENT else {})}
        for name in deployments
    ]
    return {
        "AZURE_OPENAI_POOL": json.dumps(pool),
        "BACKGROUND_POLL_SECONDS": "2",
        "BACKGROUND_POLL_MAX_SECONDS": "4",
    }


def prepared(body: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The job to send: a relative ``deadline`` (``"+75s"``) made the absolute time it names from ``now``."""
    found = _RELATIVE.match(str(body.get("deadline", "")))
    if found is None:
        return body
    return {**body, "deadline": (now + timedelta(seconds=int(found[1]))).isoformat()}


def notes(answered: Sequence[tuple[dict[str, Any], Result]], sent: datetime) -> list[str]:
    """What the background and flex samples showed, one line each (none for the others); ``sent``: when the
    samples were sent."""
    lines = []
    for body, result in answered:
        if body.get("background") and result.response_id:
            others = [other for _, other in answered if other is not result]
            lines.append(_background_note(result, others, sent))
        if body.get("service_tier") == "flex" and body.get("deadline"):
            lines.append(_flex_note(body, result))
    return lines


def _background_note(result: Result, others: Sequence[Result], sent: datetime) -> str:
    ended = result.timings.finished_at
    meanwhile = sum(1 for other in others if sent < other.timings.finished_at < ended)
    return (
        f"{result.id}: background response {(result.response_id or '')[:12]}… answered "
        f"{(ended - sent).total_seconds():.0f} s after it was sent; meanwhile {meanwhile} other samples were "
        "answered, and no worker slot waited for it (the job waited as a delayed queue message)"
    )


def _flex_note(body: dict[str, Any], result: Result) -> str:
    deadline = datetime.fromisoformat(str(body["deadline"])).astimezone(UTC)
    left = f"{(deadline - result.timings.finished_at).total_seconds():.0f} s before its deadline"
    if result.service_tier == "flex":
        return f"{result.id}: asked for flex and was served on flex (delivery {result.attempts}), {left}"
    served = "the default tier" if result.service_tier == "default" else f"tier {result.service_tier or 'unknown'}"
    return (
        f"{result.id}: asked for flex, found no flex capacity, waited for it (delivery {result.attempts}) and fell "
        f"back to {served} {left}"
    )
