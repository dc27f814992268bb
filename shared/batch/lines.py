"""The lines of batch files, as pure functions: a job's request line, the plan of which jobs go in which
file, and what an output or error line says about its job.

A line goes to the API the batch deployment serves (``BATCH_API``, recorded in each manifest): ``/chat/completions``
with the live lane's chat body, or ``/v1/responses`` with its Responses body (``shared.apis``: the same mapping,
no tier, ``store`` false as live; Azure's documented output line shows ``store: true``, so Global Batch may keep
the response anyway: nothing here reads it back by id). An output line's body becomes the live lane's ``Answer``
(``chat_answer`` / ``response_answer``), so a cut answer, an incomplete response and the empty-output trap end as
they end live; a 400 for a blocked prompt keeps the categories the service reported."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from shared import apis
from shared.constants import brief
from shared.jobs import JOB_ID_PATTERN, Api, ErrorInfo, Job
from shared.pacing import estimate_tokens

REQUEST_URL = "/chat/completions"  # per line and for the batch (the v1 batch format Azure documents)
RESPONSES_URL = "/v1/responses"  # a Responses line's url, and the batch's endpoint (facts: the SDK's form)
URLS: dict[Api, str] = {"chat": REQUEST_URL, "responses": RESPONSES_URL}
MAX_FILE_BYTES = 200_000_000  # the service's 200 MB per file
# A staged job's blob is its job's JSON plus a few timestamps; its request line re-wraps the same texts
# (messages, parameters) with the model, url and custom_id. This bounds the difference generously.
LINE_MARGIN = 1024
# Error-file codes for requests the batch never ran (it expired or was cancelled first): those jobs are
# sent back (BATCH_ON_FAILURE) rather than failed with the code.
NOT_RUN = frozenset({"batch_expired", "batch_cancelled"})
_CODE = re.compile(r"[^A-Za-z0-9_.-]")


def request_line(job: Job, deployment: str, api: Api = "chat") -> bytes:
    """One JSONL line: the request the live lane sends for ``job`` through ``api`` (same messages and parameters,
    mapped by ``shared.apis``), on the batch deployment, ``custom_id`` = the job id. UTF-8, no BOM. Raises
    ``JobRefused`` for a job that API cannot take (staged before ``BATCH_API`` changed)."""
    assert job.id is not None  # staged jobs always carry their id
    apis.check_batch(job, api)
    request = (
        apis.responses_request(job, None, background=False) if api == "responses" else apis.chat_request(job, None)
    )
    line = {"custom_id": job.id, "method": "POST", "url": URLS[api], "body": {"model": deployment, **request}}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def job_tokens(job: Job) -> int:
    """What the job holds of the deployment's enqueued-token quota, by the live lane's own admission
    estimate (prompt plus output budget: more than the prompt tokens the service may count, never less)."""
    return estimate_tokens(job.chat_messages(), job.request_parameters().get("max_completion_tokens"))


@dataclass(frozen=True)
class Planned:
    """A staged job as files are planned: its id, a bound on its line's size and its estimated tokens."""

    job_id: str
    line_bytes: int
    tokens: int


def plan_files(
    jobs: Sequence[Planned], max_requests: int, max_bytes: int = MAX_FILE_BYTES, max_tokens: int | None = None
) -> list[list[str]]:
    """Split jobs into files of at most ``max_requests`` lines, ``max_bytes`` and ``max_tokens`` estimated
    enqueued tokens, keeping their order. A job over a limit alone still gets a file of its own (its size
    is bounded by MAX_PROMPT_CHARS long before 200 MB; one over the token limit waits for quota, bounded)."""
    files: list[list[str]] = []
    current: list[str] = []
    size = tokens = 0
    for job in jobs:
        full = len(current) >= max_requests or size + job.line_bytes > max_bytes
        if current and (full or (max_tokens is not None and tokens + job.tokens > max_tokens)):
            files.append(current)
            current, size, tokens = [], 0, 0
        current.append(job.job_id)
        size += job.line_bytes
        tokens += job.tokens
    if current:
        files.append(current)
    return files


@dataclass(frozen=True)
class Outcome:
    """What one output or error line says of its job: an answer (``shared.apis.Answer``, a success or not), a
    failure before any answer, or that it never ran."""

    job_id: str
    answer: apis.Answer | None = None
    error: ErrorInfo | None = None
    not_run: str | None = None  # the service's code when the batch ended before the request ran


def parse_answer(line: bytes | str, api: Api = "chat") -> Outcome:
    """One line of an output or error file of a batch whose lines went to ``api``; raises ValueError for a line
    that is not one."""
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("a batch output line is a JSON object")
    job_id = value.get("custom_id")
    if not isinstance(job_id, str) or not re.fullmatch(JOB_ID_PATTERN, job_id):
        raise ValueError(f"custom_id {str(job_id)[:80]!r} is not a job id")
    response = value.get("response") if isinstance(value.get("response"), dict) else None
    error = value.get("error") if isinstance(value.get("error"), dict) else None
    status = response.get("status_code") if response else None
    body = response.get("body") if response else None
    if status == 200 and isinstance(body, dict):
        return _answered(job_id, body, api)
    if error is None and isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
    if error is None:
        raise ValueError(f"line for {job_id} has neither a 200 response nor an error")
    code = _code(error.get("code"))
    if code in NOT_RUN:
        return Outcome(job_id, not_run=code)
    if code == "content_filter":  # a blocked prompt: the categories, as the live lane reports them
        return Outcome(job_id, error=apis.prompt_filter_error(error))
    said = brief(str(error.get("message") or "no message"))
    where = f" (HTTP {status})" if isinstance(status, int) else ""
    return Outcome(job_id, error=ErrorInfo(code=code, message=f"the batch service refused this request{where}: {said}"))


def _answered(job_id: str, body: dict[str, Any], api: Api) -> Outcome:
    """A 200 line's body, read as the API its line went to gives it. A response is built as the SDK builds the
    live lane's (leniently: Azure's bodies lack fields the SDK's types require, ``cache_write_tokens``), once
    it has the shape of one."""
    try:
        if api == "chat":
            answer = apis.chat_answer(ChatCompletion.model_validate(body))
        elif body.get("object") == "response" and isinstance(body.get("output"), list) and body.get("status"):
            answer = apis.response_answer(Response.construct(**body))
        else:
            raise ValueError(f"not a response: object {str(body.get('object'))[:40]!r}")
    except (ValueError, IndexError, AttributeError, TypeError) as exc:  # ValidationError is a ValueError
        return Outcome(job_id, error=ErrorInfo(code="invalid_response", message=f"unreadable answer: {brief(exc)}"))
    if answer.pending:  # a batch answers each request whole: a response still running is not an answer
        message = f"the batch answered with response {answer.response_id} still {answer.status}"
        return Outcome(job_id, error=ErrorInfo(code="invalid_response", message=message))
    return Outcome(job_id, answer=answer)


def _code(raw: Any) -> str:
    """The service's error code, kept as the result's code (bounded, and only characters codes use)."""
    code = _CODE.sub("_", str(raw or ""))[:64]
    return code or "batch_request_failed"
