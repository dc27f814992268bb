"""The job and result contract: what producers put on the queue and what the worker stores.

Published as JSON Schema in ``schemas/`` (generated from these models; a test keeps them in
sync). Producers and the worker validate with the same models.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from shared.constants import NAME_PATTERN

SCHEMA_VERSION = 1
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
MAX_METADATA_CHARS = 4096

# C0 control characters (and DEL) other than tab, line feed and carriage return: never meaningful in a
# prompt, often a sign of binary data pasted by mistake, and NUL is refused by some downstream stores.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control_characters(text: str) -> str:
    if found := _CONTROL.search(text):
        raise PydanticCustomError(
            "invalid_text",
            "control character U+{code:04X} at position {position}; send plain text (tab and newlines are fine)",
            {"code": ord(found.group()), "position": found.start()},
        )
    return text


# W3C Trace Context, version 00: version-trace_id-parent_id-flags, lower-case hex.
TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
JobId = Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)]
# Which way a job goes to the model: "live" (a chat completion now) or "batch" (Azure OpenAI Global
# Batch: gathered into a batch file, answered within 24 hours at half the price; shared/batch/).
Lane = Literal["live", "batch"]
# What the batch endpoint cannot take, and why (refused with ``batch_parameter_not_allowed`` for a
# batch-lane job; the live lane refuses them as it refuses any unknown parameter).
BATCH_REFUSED_PARAMETERS = {
    "stream": "a batch answers each request whole, in its output file: leave stream out",
    "stream_options": "a batch answers each request whole, in its output file: leave stream_options out",
}
NonBlank = Annotated[str, StringConstraints(min_length=1, pattern=r"\S"), AfterValidator(_no_control_characters)]
# Which Azure OpenAI API a job is sent through (shared/apis.py maps the same fields onto both); each deployment
# declares the one it serves (AZURE_OPENAI_API, or ``api`` on a pool entry).
Api = Literal["chat", "responses"]
# The per-request processing tier: auto (the deployment's own), default (Standard), priority, flex (half price,
# answered 429 when flex capacity is short; shared/tiers.py falls back to default within the job's deadline).
ServiceTier = Literal["auto", "default", "priority", "flex"]
ReasoningSummary = Literal["auto", "concise", "detailed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant", "developer"]
    content: NonBlank


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = Field(
        default=None, description="Required for type json_schema: {name, schema, strict?} as Azure OpenAI takes it."
    )

    @model_validator(mode="after")
    def _schema_matches_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema' and only then")
        return self


class Parameters(_Strict):
    """The model options a job may set; anything else is refused (it could change cost or safety).

    Reasoning models (gpt-5.x, o-series) take ``max_completion_tokens`` (their reasoning is paid from
    it), ``reasoning_effort`` and ``verbosity``, and refuse ``temperature``/``top_p`` other than 1 and
    ``stop``; the worker reports such a refusal as ``unsupported_parameter``. ``max_tokens`` is still
    accepted from producers and sent as ``max_completion_tokens``.
    """

    temperature: Annotated[float, Field(ge=0, le=2, strict=False)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1, strict=False)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=128_000)] | None = Field(
        default=None, description="Output budget, reasoning tokens included."
    )
    max_tokens: Annotated[int, Field(ge=1, le=128_000)] | None = Field(
        default=None, description="Older name of the output budget; sent as max_completion_tokens."
    )
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = Field(
        default=None, description="Reasoning models only; which values a model takes varies (docs: the job contract)."
    )
    verbosity: Literal["low", "medium", "high"] | None = Field(default=None, description="GPT-5 family only.")
    response_format: ResponseFormat | None = None
    # The service takes a 64-bit integer; a bigger one would be sent and refused (or worse, wrapped).
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    stop: NonBlank | Annotated[list[NonBlank], Field(min_length=1, max_length=4)] | None = None

    @model_validator(mode="after")
    def _one_token_limit(self) -> Parameters:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("set max_completion_tokens or max_tokens, not both")
        return self


RetryReason = Literal["throttled", "permission_denied", "outage", "flex_unavailable"]


class Redelivery(_Strict):
    """How often and since when the worker has put a job back on the queue (kept in ``RetryState``):
    per cause (``attempt`` and ``first_seen`` of the current ``reason``) and across all causes."""

    attempt: Annotated[int, Field(ge=1)]
    first_seen: datetime = Field(strict=False)
    reason: RetryReason
    # Across every cause, so causes that alternate (429s and 5xx in one incident) still meet a bound.
    # Defaults read a state written before these existed as one cause's history.
    total: Annotated[int, Field(ge=0)] = 0
    since: datetime | None = Field(default=None, strict=False)
    causes: dict[RetryReason, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)

    @property
    def total_attempts(self) -> int:
        return self.total or self.attempt

    @property
    def retrying_since(self) -> datetime:
        return self.since or self.first_seen


class Job(_Strict):
    """One unit of work. Exactly one of ``prompt`` or ``messages``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"oneOf": [{"required": ["prompt"]}, {"required": ["messages"]}]},
    )

    id: JobId | None = Field(default=None, description="Idempotency key; default: the queue message id.")
    prompt: NonBlank | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    system: NonBlank | None = None
    deployment: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")] | None = None
    parameters: Parameters = Field(default_factory=Parameters)
    metadata: dict[str, Any] | None = Field(default=None, description="Small object echoed into the result.")
    reply_to: Annotated[str, StringConstraints(pattern=NAME_PATTERN)] | None = None
    traceparent: Annotated[str, StringConstraints(pattern=TRACEPARENT_PATTERN)] | None = Field(
        default=None,
        description="W3C trace context of the producer's span: the job's trace continues from it (a queue "
        "message carries no headers, so the context travels in the body).",
    )
    tracestate: Annotated[str, StringConstraints(max_length=512)] | None = Field(
        default=None, description="W3C tracestate that goes with traceparent."
    )
    lane: Lane = Field(
        default="live",
        description="live: answered now; batch: sent through Azure OpenAI Global Batch (half price, within "
        "24 hours), its result stored exactly like a live one.",
    )
    api: Api | None = Field(
        default=None,
        description="chat (Chat Completions) or responses (the Responses API); default: what the deployment "
        "declares. A deployment that does not declare it refuses the job (api_mismatch) before any model call.",
    )
    background: bool | None = Field(
        default=None,
        description="Responses API only: start the response in background mode and collect it later (no worker "
        "slot held while the model thinks); default: the deployment's setting.",
    )
    service_tier: ServiceTier | None = Field(
        default=None,
        description="Processing tier asked of Azure OpenAI; default: the deployment's. A flex request refused for "
        "capacity waits while the deadline leaves room, then goes out on the default tier.",
    )
    deadline: datetime | None = Field(
        default=None,
        strict=False,
        description="Absolute time (with a UTC offset) by which the job should be answered: bounds how long a flex "
        "job waits for flex capacity before it falls back to the default tier.",
    )
    reasoning_summary: ReasoningSummary | None = Field(
        default=None,
        description="Responses API only: ask the reasoning model for a summary of its reasoning, stored in the "
        "result's reasoning_summary.",
    )

    @model_validator(mode="before")
    @classmethod
    def _batch_parameters(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("lane") == "batch" and isinstance(data.get("parameters"), dict):
            for name in data["parameters"]:
                if name in BATCH_REFUSED_PARAMETERS:
                    raise PydanticCustomError(
                        "batch_parameter",
                        "parameter '{name}' cannot be used in the batch lane: {why}",
                        {"name": name, "why": BATCH_REFUSED_PARAMETERS[name]},
                    )
        return data

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> Job:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if self.api == "chat" and (self.background or self.reasoning_summary is not None):
            raise ValueError("background and reasoning_summary exist only in the Responses API: not with api 'chat'")
        if self.deadline is not None and self.deadline.utcoffset() is None:
            raise ValueError("deadline needs a UTC offset (e.g. 2026-12-07T06:00:00Z): a bare time is ambiguous")
        if self.metadata is not None and len(json.dumps(self.metadata)) > MAX_METADATA_CHARS:
            raise ValueError(f"metadata is larger than {MAX_METADATA_CHARS} characters of JSON")
        return self

    def chat_messages(self) -> list[dict[str, str]]:
        """The messages sent to the model."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        if self.prompt is not None:
            out.append({"role": "user", "content": self.prompt})
        else:
            out.extend(m.model_dump() for m in self.messages or [])
        return out

    def request_parameters(self) -> dict[str, Any]:
        """The model parameters as both lanes send them: ``max_tokens`` goes as ``max_completion_tokens``
        (the name today's reasoning models accept; older ones take it too)."""
        params: dict[str, Any] = self.parameters.model_dump(exclude_none=True)
        if "max_tokens" in params:
            params["max_completion_tokens"] = params.pop("max_tokens")
        return params

    def prompt_chars(self) -> int:
        return sum(len(m["content"]) for m in self.chat_messages())


class FilterFinding(BaseModel):
    """One category Azure OpenAI's content filter reported on (only those it filtered or detected are kept)."""

    source: Literal["prompt", "completion"]
    category: str = Field(description="hate, sexual, violence, self_harm, jailbreak, protected_material_text, ...")
    filtered: bool
    severity: str | None = Field(default=None, description="safe, low, medium or high (severity categories).")
    detected: bool | None = Field(default=None, description="Detection categories (jailbreak, protected material).")


class ErrorInfo(BaseModel):
    code: str
    message: str
    content_filter: list[FilterFinding] | None = Field(
        default=None, description="code content_filter: the categories and severities the service reported."
    )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = Field(description="Output tokens, reasoning tokens included.")
    total_tokens: int
    reasoning_tokens: int | None = Field(default=None, description="Of completion_tokens, spent on reasoning.")
    cached_tokens: int | None = Field(default=None, description="Of prompt_tokens, served from the prompt cache.")


class Timings(BaseModel):
    enqueued_at: datetime | None = None
    started_at: datetime
    finished_at: datetime
    queue_seconds: float | None = None
    model_seconds: float | None = None
    batch_seconds: float | None = Field(
        default=None, description="Batch lane: from the batch's creation to its end (the time spent in the batch)."
    )


class Result(BaseModel):
    """Stored as ``<results container>/<id>.json``, written once."""

    schema_version: int = SCHEMA_VERSION
    id: str
    status: Literal["succeeded", "failed"]
    deployment: str | None = None
    endpoint: str | None = Field(default=None, description="The Azure OpenAI resource that answered.")
    model: str | None = None
    output: str | None = None
    output_json: Any = Field(default=None, description="Parsed output when a JSON response_format was asked for.")
    finish_reason: str | None = None
    usage: Usage | None = None
    error: ErrorInfo | None = None
    metadata: dict[str, Any] | None = None
    attempts: int = 1
    message_id: str | None = None
    trace_id: str | None = Field(default=None, description="The trace this job ran in (when tracing is on).")
    lane: Lane | None = Field(default=None, description='"batch" for a batch-lane job; absent for the live lane.')
    api: Api | None = Field(
        default=None, description="The API the answer came through (chat or responses), on either lane."
    )
    service_tier: str | None = Field(default=None, description="The tier that served the request, as Azure echoed it.")
    response_id: str | None = Field(default=None, description="Responses API: the response's id (resp_...).")
    reasoning_summary: str | None = Field(default=None, description="The reasoning summary, when the job asked.")
    output_filtered: bool | None = Field(
        default=None,
        description="True when output holds text the content filter cut short: partial, never a success.",
    )
    timings: Timings


class Notice(BaseModel):
    """Sent to ``reply_to`` after the result blob is written."""

    id: str
    status: Literal["succeeded", "failed"]
    result_container: str
    result_blob: str
    error_code: str | None = None


# Claim check. A queue message holds at most 64 KiB, so a bigger job travels as a small
# reference to a blob holding its JSON. Producers switch well below the limit: other senders
# may base64 the text (+33%) and the service counts the XML-escaped form.
CLAIM_CHECK_BYTES = 48 * 1024


class PayloadRef(_Strict):
    blob: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,128}\.json$")] = Field(
        description="Blob name '<id>.json' in the worker's PAYLOADS_CONTAINER (the container is never taken "
        "from the message)."
    )


class JobReference(_Strict):
    """A queue message standing in for a job whose JSON is stored in a payload blob (claim check)."""

    id: JobId
    payload: PayloadRef

    @model_validator(mode="after")
    def _blob_named_by_id(self) -> JobReference:
        # One fixed name per job: a message can point at its own payload and nothing else.
        if self.payload.blob != f"{self.id}.json":
            raise ValueError("payload.blob must be '<id>.json' for the reference's own id")
        return self

    @classmethod
    def for_job(cls, job_id: str) -> JobReference:
        return cls(id=job_id, payload=PayloadRef(blob=f"{job_id}.json"))


# Retry state. A job the worker puts back on the queue (throttled, waiting for a role assignment or out an
# outage) waits as ``retries/<id>.json`` in the worker-only STAGING_CONTAINER, where producers hold no role,
# and the message is only a pointer to it carrying the state's one-time token: a pointer nobody was given
# runs nothing, and nothing a producer sends can set how often or when a job is retried.
RETRY_PREFIX = "retries/"
# Blob metadata naming what a waiting job waits on: a background response (shared/background.py).
WAITING_ON, BACKGROUND = "waiting", "background"
RETRY_TOKEN_PATTERN = r"^[0-9a-f]{32}$"


class RequeuedRef(_Strict):
    """The message the worker re-enqueues; the job and its retry state are in ``RetryState``."""

    id: JobId
    requeued: Literal[True]
    # Matches the stored state's: a forged or stale pointer is consumed without touching anything.
    # (None only in pointers written before tokens existed, valid only for a state without one.)
    token: Annotated[str, StringConstraints(pattern=RETRY_TOKEN_PATTERN)] | None = None

    @property
    def blob(self) -> str:
        return retry_blob(self.id)


def retry_blob(job_id: str) -> str:
    return f"{RETRY_PREFIX}{job_id}.json"


class BackgroundWait(_Strict):
    """A background response the worker started for a job and collects on delayed pointers."""

    response_id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    endpoint: str
    deployment: str
    started_at: datetime = Field(strict=False)
    polls: Annotated[int, Field(ge=0)] = 0


class RetryState(_Strict):
    """Stored by the worker as ``retries/<id>.json`` in the worker-only container; deleted with the result."""

    job: Job
    redelivery: Redelivery | None = None  # None: a background job that has not been re-enqueued for a retry
    payload: PayloadRef | None = Field(default=None, description="Claim-check blob to delete with the result.")
    token: Annotated[str, StringConstraints(pattern=RETRY_TOKEN_PATTERN)] | None = None
    background: BackgroundWait | None = Field(
        default=None, description="The background response this job waits on (shared/background.py)."
    )
    # When its pointer is due: a pointer lost to a failed send is sent again for this time (shared/delivery.py).
    due: datetime | None = None


SCHEMA_FILES: dict[str, type[BaseModel]] = {
    "job.schema.json": Job,
    "result.schema.json": Result,
    "notice.schema.json": Notice,
    "job-reference.schema.json": JobReference,
}
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def json_schemas() -> dict[str, dict[str, Any]]:
    """The published JSON Schemas, generated from the models so they cannot drift."""
    out = {}
    for name, model in SCHEMA_FILES.items():
        schema = model.model_json_schema(mode="validation")
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": name, **schema}
        out[name] = schema
    return out


if __name__ == "__main__":  # python -m shared.jobs  -> rewrite schemas/
    SCHEMA_DIR.mkdir(exist_ok=True)
    for file_name, schema in json_schemas().items():
        (SCHEMA_DIR / file_name).write_text(json.dumps(schema, indent=2) + "\n")
