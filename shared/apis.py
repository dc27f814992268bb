"""One job, two APIs: how a job becomes a Chat Completions or a Responses request, and how either answer
becomes the one ``Answer`` a result is built from.

- **Which API.** A deployment declares the API it serves (``PoolEntry.api``: ``AZURE_OPENAI_API`` or the pool
  entry's ``api``). A job may name one (``api``); ``usable_entries`` keeps only the entries serving it and
  refuses the job (``api_mismatch``) before any model call when none does. ``background`` and
  ``reasoning_summary`` exist only in the Responses API, so they narrow the entries the same way.
- **The request.** ``chat_request`` is exactly what the worker always sent (the messages, the parameters,
  ``max_tokens`` as ``max_completion_tokens``), plus ``service_tier`` when one applies. ``responses_request``
  maps the same job: ``system`` -> ``instructions``, the prompt or messages -> ``input``,
  ``max_completion_tokens`` -> ``max_output_tokens``, ``reasoning_effort`` -> ``reasoning.effort`` (with
  ``reasoning.summary``), ``verbosity`` -> ``text.verbosity``, ``response_format`` -> ``text.format``;
  ``store`` false unless in background mode, which Azure refuses without it.
- **The answer.** ``chat_answer`` and ``response_answer`` give the same shape: text, finish reason (Responses:
  ``stop``, ``length`` for ``max_output_tokens``, ``content_filter``), usage with reasoning and cached tokens,
  the tier that served, the response id, the reasoning summary, and ``error`` when the answer is not a success:
  ``content_filter`` (the answer was cut: any partial text is kept and flagged), ``output_budget_exhausted``,
  or a background response that ``failed``, was ``cancelled`` or is ``incomplete`` for another reason.
- **The batch lane.** ``check_batch``: a batch-lane job goes to the batch deployment's API (``BATCH_API``), in a
  request line whose body is ``chat_request`` or ``responses_request`` (no tier, never background), and its
  output line becomes an ``Answer`` through ``chat_answer`` or ``response_answer`` (``shared.batch.lines``).
- **Filter findings.** ``prompt_filter_error`` reads a 400 for a blocked prompt (chat: ``innererror.
  content_filter_result``; Responses: ``content_filters``) into the categories and severities reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from shared.jobs import Api, ErrorInfo, FilterFinding, Job, Usage
from shared.messages import JobRefused
from shared.settings import PoolEntry, Settings

# A background response still running: come back later.
PENDING = ("queued", "in_progress")
# How the Responses API's end states read as a chat finish reason, so results look alike.
_FINISH = {"max_output_tokens": "length", "content_filter": "content_filter"}


@dataclass(frozen=True)
class Answer:
    """What a model call gave, in one shape for both APIs (see the module docstring)."""

    api: Api
    model: str | None = None
    output: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    service_tier: str | None = None
    response_id: str | None = None
    status: str | None = None  # Responses: queued, in_progress, completed, failed, cancelled, incomplete
    reasoning_summary: str | None = None
    error: ErrorInfo | None = None  # not a success (see the module docstring)

    @property
    def pending(self) -> bool:
        """A background response not finished yet."""
        return self.status in PENDING

    @property
    def filtered_output(self) -> bool:
        """Text the content filter cut short: kept in the result, flagged."""
        return bool(self.output) and self.error is not None and self.error.code == "content_filter"


def wants_responses(job: Job) -> bool:
    """Whether only a Responses deployment can serve this job (it names the API, or asks for what only it has)."""
    return job.api == "responses" or bool(job.background) or job.reasoning_summary is not None


def usable_entries(job: Job, settings: Settings) -> tuple[PoolEntry, ...]:
    """The pool entries this job may be sent to (``Settings.entries_for``), narrowed to the API it needs;
    raises ``JobRefused`` (``api_mismatch``) when none serves it."""
    entries = settings.entries_for(job.deployment)
    wanted: Api | None = job.api or ("responses" if wants_responses(job) else None)
    if wanted is None or not entries:
        return entries
    serving = tuple(e for e in entries if e.api == wanted)
    if serving:
        return serving
    name = job.deployment or settings.default_deployment
    why = (
        f"asks for the {wanted} API"
        if job.api
        else "asks for background mode or a reasoning summary, which only the Responses API offers"
    )
    raise JobRefused(
        "api_mismatch",
        f"the job {why}, and deployment '{name}' is configured for {entries[0].api}: leave api out, send it to a "
        f"deployment declaring {wanted} (AZURE_OPENAI_API, or a pool entry's api), or change the job",
        job_id=job.id,
    )


def check_api(job: Job, settings: Settings) -> None:
    """Before any spend: the job can go out through an API its deployment serves, with fields that API takes
    (``JobRefused``: ``api_mismatch``, ``unsupported_parameter``)."""
    if job.lane == "batch":
        check_batch(job, settings.batch_api)
        return
    for entry in usable_entries(job, settings):
        if entry.api == "responses":
            responses_request(job, None, background=False)  # raises for what the Responses API does not take
            return


def check_batch(job: Job, api: Api) -> None:
    """A batch-lane job can become a request line for the batch deployment's API (``BATCH_API``): raises
    ``JobRefused`` (``api_mismatch``, ``batch_parameter_not_allowed``, ``unsupported_parameter``) otherwise."""
    if api == "chat":
        if wants_responses(job):
            raise JobRefused(
                "api_mismatch",
                "the batch lane sends Chat Completions requests (BATCH_API=chat): leave api, background and "
                'reasoning_summary out of a "lane": "batch" job, or send it to the live lane',
                job_id=job.id,
            )
        return
    if job.api == "chat":
        raise JobRefused(
            "api_mismatch",
            "the job asks for the chat API, and the batch lane sends Responses requests (BATCH_API=responses): "
            "leave api out, or send the job to the live lane",
            job_id=job.id,
        )
    if job.background:
        raise JobRefused(
            "batch_parameter_not_allowed",
            "background cannot be used in the batch lane: a batch answers each request whole, in its output file; "
            "leave background out",
            job_id=job.id,
        )
    responses_request(job, None, background=False)  # raises for what the Responses API does not take


def background_for(job: Job, entry: PoolEntry) -> bool:
    """Whether this job runs in background mode on ``entry`` (the job says, else the deployment)."""
    if entry.api != "responses":
        return False
    return entry.background if job.background is None else job.background


def chat_request(job: Job, tier: str | None) -> dict[str, Any]:
    """The Chat Completions request body (without ``model``), as the worker has always sent it."""
    request: dict[str, Any] = {"messages": job.chat_messages(), **job.request_parameters()}
    if tier is not None:
        request["service_tier"] = tier
    return request


def responses_request(job: Job, tier: str | None, *, background: bool) -> dict[str, Any]:
    """The Responses request body (without ``model``): the same job fields, mapped (module docstring)."""
    params = job.request_parameters()
    request: dict[str, Any] = {"input": _input(job), "store": background}
    if job.system:
        request["instructions"] = job.system
    if background:
        request["background"] = True
    if tier is not None:
        request["service_tier"] = tier
    if (limit := params.pop("max_completion_tokens", None)) is not None:
        request["max_output_tokens"] = limit
    reasoning = {"effort": params.pop("reasoning_effort", None), "summary": job.reasoning_summary}
    if reasoning := {k: v for k, v in reasoning.items() if v is not None}:
        request["reasoning"] = reasoning
    text: dict[str, Any] = {}
    if (verbosity := params.pop("verbosity", None)) is not None:
        text["verbosity"] = verbosity
    if (fmt := params.pop("response_format", None)) is not None:
        text["format"] = _text_format(fmt)
    if text:
        request["text"] = text
    for name in ("temperature", "top_p"):  # the Responses API takes these two as they are
        if name in params:
            request[name] = params.pop(name)
    if params:  # seed, stop: Chat Completions only
        raise JobRefused(
            "unsupported_parameter",
            f"the Responses API takes no {', '.join(sorted(params))}: leave {'them' if len(params) > 1 else 'it'} "
            'out, or send the job with "api": "chat"',
            job_id=job.id,
        )
    return request


def _input(job: Job) -> str | list[dict[str, str]]:
    """``input``: the prompt as a string, or the messages (``system`` goes to ``instructions`` instead)."""
    if job.prompt is not None:
        return job.prompt
    return [m.model_dump() for m in job.messages or []]


def _text_format(fmt: Mapping[str, Any]) -> dict[str, Any]:
    """Chat's ``response_format`` as the Responses API's ``text.format`` (the json_schema's fields flattened)."""
    if fmt["type"] != "json_schema":
        return {"type": fmt["type"]}
    return {"type": "json_schema", **(fmt.get("json_schema") or {})}


def chat_answer(completion: ChatCompletion) -> Answer:
    """A chat completion as an ``Answer``; a cut answer (``finish_reason`` content_filter) is an error."""
    choice = completion.choices[0]
    usage = usage_of(completion)
    error = budget_exhausted(completion)
    if choice.finish_reason == "content_filter":
        found = _findings("completion", (choice.model_extra or {}).get("content_filter_results"))
        error = filter_error("the answer was cut by Azure OpenAI's content filter", found)
    return Answer(
        api="chat",
        model=completion.model,
        output=choice.message.content,
        finish_reason=choice.finish_reason,
        usage=usage,
        service_tier=completion.service_tier,
        error=error,
    )


def response_answer(response: Response) -> Answer:
    """A response (any status) as an ``Answer``."""
    text = response.output_text or None
    usage = _response_usage(response)
    reason = response.incomplete_details.reason if response.incomplete_details else None
    error: ErrorInfo | None = None
    if response.status == "failed":
        service = response.error
        said = f"{service.code}: {service.message}" if service else "no error given"
        error = ErrorInfo(code="response_failed", message=f"the response {response.id} failed ({said})")
    elif response.status == "cancelled":
        error = ErrorInfo(code="response_cancelled", message=f"the response {response.id} was cancelled")
    elif response.status == "incomplete" and reason == "content_filter":
        found = _findings_of_response(response)
        error = filter_error("the answer was cut by Azure OpenAI's content filter", found)
    elif response.status == "incomplete" and not text:
        spent = f"all {usage.completion_tokens}" if usage else "all its"
        thought = f" ({usage.reasoning_tokens} on reasoning)" if usage and usage.reasoning_tokens is not None else ""
        error = ErrorInfo(
            code="output_budget_exhausted",
            message=f"the response ended incomplete ({reason}) after {spent} output tokens{thought} and no output: "
            "raise max_completion_tokens or lower reasoning_effort",
        )
    return Answer(
        api="responses",
        model=response.model,
        output=text,
        finish_reason=_FINISH.get(reason or "", "length") if response.status == "incomplete" else _stop(response),
        usage=usage,
        service_tier=response.service_tier,
        response_id=response.id,
        status=response.status,
        reasoning_summary=_summary(response),
        error=error,
    )


def _stop(response: Response) -> str | None:
    return "stop" if response.status == "completed" else None


def _summary(response: Response) -> str | None:
    parts = [s.text for item in response.output if item.type == "reasoning" for s in item.summary]
    return "\n\n".join(parts) or None


def _response_usage(response: Response) -> Usage | None:
    usage = response.usage
    if usage is None:
        return None
    details, output_details = usage.input_tokens_details, usage.output_tokens_details
    return Usage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        reasoning_tokens=output_details.reasoning_tokens if output_details else None,
        cached_tokens=details.cached_tokens if details else None,
    )


def filter_error(message: str, found: list[FilterFinding]) -> ErrorInfo:
    """``content_filter`` with the categories the service filtered or detected, named in the message too."""
    if found:
        named = ", ".join(
            f"{f.category} ({f.severity or ('detected' if f.detected else 'filtered')})" for f in found if f.filtered
        )
        message = f"{message}: {named}" if named else message
    return ErrorInfo(code="content_filter", message=message, content_filter=found or None)


def prompt_filter_error(body: object) -> ErrorInfo:
    """A 400 for a blocked prompt (the SDK's ``BadRequestError.body``) as ``content_filter`` with its findings:
    chat puts them in ``innererror.content_filter_result``, the Responses API in ``content_filters``."""
    found: list[FilterFinding] = []
    if isinstance(body, dict):
        inner = body.get("innererror")
        if isinstance(inner, dict):
            found = _findings("prompt", inner.get("content_filter_result") or inner.get("content_filter_results"))
        found += _findings_of_list(body.get("content_filters"))
    return filter_error("the prompt was blocked by Azure OpenAI's content filter", found)


def _findings_of_response(response: Response) -> list[FilterFinding]:
    return _findings_of_list((response.model_extra or {}).get("content_filters"))


def _findings_of_list(items: object) -> list[FilterFinding]:
    """Azure's Responses ``content_filters``: ``[{blocked, source_type, content_filter_results}]``."""
    found: list[FilterFinding] = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            prompt = item.get("source_type") == "prompt"
            found += _findings("prompt" if prompt else "completion", item.get("content_filter_results"))
    return found


def _findings(source: Literal["prompt", "completion"], results: object) -> list[FilterFinding]:
    """The categories of one ``content_filter_results`` object that were filtered or detected."""
    found = []
    for category, verdict in (results or {}).items() if isinstance(results, dict) else ():
        if not isinstance(verdict, dict) or not (verdict.get("filtered") or verdict.get("detected")):
            continue
        found.append(
            FilterFinding(
                source=source,
                category=category,
                filtered=bool(verdict.get("filtered")),
                severity=verdict.get("severity") if isinstance(verdict.get("severity"), str) else None,
                detected=verdict.get("detected") if isinstance(verdict.get("detected"), bool) else None,
            )
        )
    return found


def budget_exhausted(completion: ChatCompletion) -> ErrorInfo | None:
    """HTTP 200 with no output: a reasoning model spent the whole ``max_completion_tokens`` thinking.
    Not a success: the sender needs to know to give it more room (or ask for less reasoning)."""
    choice = completion.choices[0]
    if choice.message.content or choice.finish_reason != "length":
        return None
    usage = usage_of(completion)
    spent = f"all {usage.completion_tokens}" if usage else "all its"
    reasoning = f" ({usage.reasoning_tokens} on reasoning)" if usage and usage.reasoning_tokens is not None else ""
    return ErrorInfo(
        code="output_budget_exhausted",
        message=f"the model used {spent} completion tokens{reasoning} before writing any output: raise "
        "max_completion_tokens or lower reasoning_effort",
    )


def usage_of(completion: ChatCompletion) -> Usage | None:
    usage = completion.usage
    if usage is None:
        return None
    completion_details, prompt_details = usage.completion_tokens_details, usage.prompt_tokens_details
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        reasoning_tokens=completion_details.reasoning_tokens if completion_details else None,
        cached_tokens=prompt_details.cached_tokens if prompt_details else None,
    )


__all__ = [
    "PENDING",
    "Answer",
    "background_for",
    "budget_exhausted",
    "chat_answer",
    "chat_request",
    "check_api",
    "check_batch",
    "filter_error",
    "prompt_filter_error",
    "response_answer",
    "responses_request",
    "usable_entries",
    "usage_of",
    "wants_responses",
]
