"""What the worker calls to record telemetry, and what runs when telemetry is off (records nothing)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # types only: importing this module imports neither openai nor the contract
    from shared.jobs import Result, Usage

SCOPE = "keyless_openai_worker"  # instrumentation scope of the app's own spans and metrics
MESSAGING_SYSTEM = "azure.storage.queue"  # the conventions register no value for Storage Queues
PROVIDER_NAME = "azure.ai.openai"  # gen_ai.provider.name for Azure OpenAI
# GenAI metrics conventions (semantic-conventions v1.41.0, gen-ai-metrics.md): explicit bucket boundaries.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
# Enqueued -> started: from a busy moment's fraction of a second to a throttled job's capped wait and beyond.
QUEUE_WAIT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


@dataclass(frozen=True)
class Processing:
    """What the process span of one delivery says: the message, the job, and the producer's trace context."""

    queue: str
    message_id: str | None
    job_id: str
    attempt: int
    started: datetime
    traceparent: str | None = None
    tracestate: str | None = None
    queue_seconds: float | None = None  # enqueued -> started, when the host says when it was enqueued
    requeued: bool = False


class JobSpan:
    """The span of one job's delivery, as the worker sees it (this one: telemetry off)."""

    trace_id: str | None = None  # hex, when the span is recorded

    def carrier(self) -> dict[str, str | None]:
        """``traceparent``/``tracestate`` of this span, for a copy of the job stored to run again ({} if off)."""
        return {}

    def outcome(self, result: Result) -> None:
        """Note the job's result on the span."""


class ModelAnswer(Protocol):
    """What the GenAI span reads from a model's answer: ``shared.apis.Answer``, one shape for both APIs (a
    protocol because telemetry sits below ``apis`` in the layers, and needs no more than these)."""

    @property
    def api(self) -> Literal["chat", "responses"]: ...
    @property
    def model(self) -> str | None: ...
    @property
    def output(self) -> str | None: ...
    @property
    def finish_reason(self) -> str | None: ...
    @property
    def usage(self) -> Usage | None: ...
    @property
    def service_tier(self) -> str | None: ...
    @property
    def response_id(self) -> str | None: ...
    @property
    def reasoning_summary(self) -> str | None: ...


class ChatCall:
    """One model call being traced (this one: telemetry off)."""

    def response(self, answer: ModelAnswer, *, response_id: str | None = None) -> None:
        """Note the model's answer: id, model, finish reason, token usage, tier served (content only when opted
        in). ``response_id``: a chat completion's id, which the answer does not carry (its ``response_id`` is the
        Responses API's, and the result's)."""


_NO_SPAN = JobSpan()
_NO_CALL = ChatCall()


class Telemetry:
    """What the worker calls. This base class records nothing: it is what runs when telemetry is off."""

    mode = "off"
    enabled = False
    capture_content = False

    def process(self, delivery: Processing) -> AbstractContextManager[JobSpan]:
        """The CONSUMER span ``process <queue>`` of one delivery (current while the job runs)."""
        return contextlib.nullcontext(_NO_SPAN)

    def chat(
        self,
        *,
        deployment: str,
        endpoint: str,
        parameters: Mapping[str, Any],
        messages: Sequence[Mapping[str, str]],
        api: Literal["chat", "responses"] = "chat",
        service_tier: str | None = None,
    ) -> AbstractContextManager[ChatCall]:
        """The GenAI CLIENT span ``chat <deployment>`` and the model-call metrics, for a chat completion or a
        response (``api``), asked for on ``service_tier`` (None: the deployment's)."""
        return contextlib.nullcontext(_NO_CALL)

    def background(
        self, action: Literal["retrieve", "cancel"], *, deployment: str, endpoint: str, response_id: str
    ) -> AbstractContextManager[ChatCall]:
        """The CLIENT span ``<action> <deployment>`` of a call reaching a background response; the answer it
        notes (once the response has ended) carries the same attributes as a ``chat`` span's, and its usage
        counts in ``gen_ai.client.token.usage`` (the create had none to count)."""
        return contextlib.nullcontext(_NO_CALL)

    def step(self, name: str) -> AbstractContextManager[None]:
        """An INTERNAL span for one step of a job (e.g. ``store result``)."""
        return contextlib.nullcontext()

    def finished(self, result: Result) -> None:
        """Count a job that ended with a stored result, by status and error code."""

    def requeued(self, reason: str) -> None:
        """Count a job put back on the queue, by reason."""

    def throttled(self, deployment: str) -> None:
        """Count one 429 response from Azure OpenAI (each one, the SDK's own retries included)."""

    def queue_sampled(self, queue: str, depth: int, oldest_age_seconds: float) -> None:
        """Record one sample of a queue's depth and the age of its head message."""


OFF = Telemetry()
