"""The Responses API's request, checked strictly against the fields the facts list (facts-api-surface.md section 1),
and what the model answers it: the same deterministic reply as chat completions (``answers.reply_for`` on the chat
view of the request), rendered as the SDK's ``Response`` JSON.

Anything else in the body is refused (400 ``unknown_parameter``), as are wrong types and values, with OpenAI's
wording (``invalid_type``, ``invalid_value``, ``missing_required_parameter``...: assumed to be Azure's too). The
model's parameter rules are chat's (``models.refusal``): a reasoning model refuses ``temperature``/``top_p`` other
than 1 with the chat route's bodies, ``reasoning.effort`` and ``text.verbosity`` follow ``reasoning_effort`` and
``verbosity`` (the param named as the Responses field). ``max_output_tokens`` below ``MIN_OUTPUT_TOKENS`` is
refused as OpenAI refuses it (Azure unconfirmed).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emulators.aoai import filters, models
from emulators.aoai.answers import count_prompt_tokens, message_text, reply_for
from emulators.aoai.config import EmulatorConfig

MIN_OUTPUT_TOKENS = 16
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
RESPONSES_PARAMS = {"reasoning_effort": "reasoning.effort", "verbosity": "text.verbosity"}  # chat name -> ours


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class ContentPart(_Strict):
    type: Literal["input_text", "output_text"]
    text: str
    annotations: list[Any] | None = None  # an assistant turn sent back as it came


class InputMessage(_Strict):
    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class ReasoningParam(_Strict):
    effort: str | None = None  # checked by the model's rules, as chat's reasoning_effort
    summary: Literal["auto", "concise", "detailed"] | None = None


class FormatText(_Strict):
    type: Literal["text"]


class FormatJsonObject(_Strict):
    type: Literal["json_object"]


class FormatJsonSchema(_Strict):
    type: Literal["json_schema"]
    name: str = Field(max_length=64)
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextParam(_Strict):
    format: Annotated[FormatText | FormatJsonObject | FormatJsonSchema, Field(discriminator="type")] | None = None
    verbosity: str | None = None  # checked by the model's rules, as chat's verbosity


class ResponseRequest(_Strict):
    """``POST /openai/v1/responses``'s body; ``service_tier`` is checked by ``tiers`` (as on chat)."""

    model: str
    input: str | list[InputMessage]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=MIN_OUTPUT_TOKENS)
    reasoning: ReasoningParam | None = None
    text: TextParam | None = None
    store: bool = True
    background: bool = False
    service_tier: str | None = None
    metadata: dict[str, str] | None = None
    prompt_cache_key: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool | None = None

    def messages(self) -> list[dict[str, Any]]:
        """The conversation as chat messages (``instructions`` first, as a developer message), for the shared reply
        and token counts."""
        turns = [] if self.instructions is None else [{"role": "developer", "content": self.instructions}]
        if isinstance(self.input, str):
            return [*turns, {"role": "user", "content": self.input}]
        for message in self.input:
            content = message.content
            text = content if isinstance(content, str) else "\n".join(part.text for part in content)
            turns.append({"role": message.role, "content": text})
        return turns

    def prompt_text(self) -> str:
        """Everything the model reads, as the content filter and the fault triggers look at it."""
        return "\n".join(message_text(m) for m in self.messages())

    def chat_view(self) -> dict[str, Any]:
        """The chat completions body this request amounts to (what ``models`` and ``answers`` read)."""
        view: dict[str, Any] = {"messages": self.messages(), "max_completion_tokens": self.max_output_tokens}
        view.update(temperature=self.temperature, top_p=self.top_p)
        if self.reasoning is not None:
            view["reasoning_effort"] = self.reasoning.effort
        if self.text is not None:
            view["verbosity"] = self.text.verbosity
            chosen = self.text.format
            if isinstance(chosen, FormatJsonSchema):
                view["response_format"] = {
                    "type": chosen.type,
                    "json_schema": {"name": chosen.name, "schema": chosen.schema_},
                }
            elif chosen is not None:
                view["response_format"] = {"type": chosen.type}
        return view


def parse(body: Any, model: str) -> ResponseRequest | dict[str, Any]:
    """The request, or the 400 body refusing it (its shape, then its limits, then the model's rules)."""
    if not isinstance(body, dict):
        return models.param_error("invalid_type", "", "The request body must be a JSON object.")
    try:
        request = ResponseRequest.model_validate(body)
    except ValidationError as exc:
        return _validation_error(exc)
    if refused := _limits(request):
        return refused
    if request.stream:
        return models.param_error("unsupported_value", "stream", "stream=true is not supported by this emulator.")
    refused = models.refusal(request.chat_view(), model)
    if refused is None:
        return request
    error = refused["error"]
    for chat_name, ours in RESPONSES_PARAMS.items():
        if error["param"] == chat_name:
            error["param"], error["message"] = ours, error["message"].replace(f"'{chat_name}'", f"'{ours}'")
    return refused


def _limits(request: ResponseRequest) -> dict[str, Any] | None:
    if isinstance(request.input, list) and not request.input:
        message = (
            "Invalid 'input': empty array. Expected an array with minimum length 1, but got an empty array instead."
        )
        return models.param_error("empty_array", "input", message)
    metadata = request.metadata or {}
    if len(metadata) > METADATA_PAIRS:
        message = (
            f"Invalid 'metadata': too many properties. Expected an object with at most {METADATA_PAIRS} properties, "
            f"but got an object with {len(metadata)} properties instead."
        )
        return models.param_error("object_above_max_properties", "metadata", message)
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_CHARS:
            message = (
                f"Invalid 'metadata': string too long. Expected a key with maximum length {METADATA_KEY_CHARS}, "
                f"but got a key with length {len(key)} instead."
            )
            return models.param_error("string_above_max_length", "metadata", message)
        if len(value) > METADATA_VALUE_CHARS:
            message = (
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length "
                f"{METADATA_VALUE_CHARS}, but got a string with length {len(value)} instead."
            )
            return models.param_error("string_above_max_length", f"metadata.{key}", message)
    return None


_TYPE_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean", "dict": "an object"}
_FORMAT_TYPES = {"text", "json_object", "json_schema"}


def _param(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the API names the param (``input[0].role``), without union branch tags."""
    name = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            name += f"[{part}]"
        elif part in _TYPE_NAMES or "[" in part or part[:1].isupper():
            continue  # a union member's tag (str, list[InputMessage], ContentPart...)
        elif i and loc[i - 1] == "format" and part in _FORMAT_TYPES:
            continue  # the discriminated format's tag
        else:
            name += f".{part}" if name else part
    return name


def _validation_error(exc: ValidationError) -> dict[str, Any]:
    # The deepest error is the one that says most (a union reports each member's, the shallow ones first).
    errors = exc.errors(include_url=False)
    first = max(errors, key=lambda e: len(e["loc"]))
    kind, param, value = first["type"], _param(first["loc"]), first.get("input")
    if kind == "extra_forbidden":
        return models.param_error("unknown_parameter", param, f"Unknown parameter: '{param}'.")
    if kind == "missing":
        return models.param_error("missing_required_parameter", param, f"Missing required parameter: '{param}'.")
    if kind in ("literal_error", "union_tag_invalid"):
        expected = first.get("ctx", {}).get("expected", "")
        message = f"Invalid value: '{models.format_value(value)}'. Supported values are: {expected}."
        return models.param_error("invalid_value", param, message)
    bound = {"greater_than_equal": ("below_min", "ge"), "less_than_equal": ("above_max", "le")}.get(kind)
    if bound is not None:
        number = "integer" if isinstance(value, int) else "decimal"
        limit = first.get("ctx", {}).get(bound[1])
        side = ">=" if bound[1] == "ge" else "<="
        message = (
            f"Invalid '{param}': {number} {bound[0].replace('_', ' ')}imum value. Expected a value {side} {limit}, "
            f"but got {models.format_value(value)} instead."
        )
        return models.param_error(f"{number}_{bound[0]}_value", param, message)
    message = f"Invalid type for '{param}': {first['msg'].lower()}."
    return models.param_error("invalid_type", param, message)


# --- What the model answers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Final:
    """How a response ends: its terminal status and the fields that go with it, and the tokens it bills."""

    status: str
    output: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    content_filters: list[dict[str, Any]] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0


BACKGROUND_FAILED = {"code": "server_error", "message": "The response failed while it was being generated."}


def answer(config: EmulatorConfig, request: ResponseRequest, deployment: str, model: str) -> Final | dict[str, Any]:
    """The model's answer (``Final``), or the prompt filter's 400 body. ``completed``, or ``incomplete`` when the
    budget ran out (``max_output_tokens``) or the output filter cut the text (``content_filter``)."""
    messages, prompt = request.messages(), request.prompt_text()
    if filters.prompt_blocked(config, prompt):
        return filters.responses_prompt_refusal(config)
    reply = reply_for(request.chat_view(), deployment, models.reasoning_tokens(request.chat_view(), model))
    text, reason = reply.content, "max_output_tokens" if reply.finish_reason == "length" else None
    partial = filters.cut(config, text)
    if partial is not None:
        text, reason = partial, "content_filter"
    output = []
    if models.is_reasoning_model(model):
        summary = request.reasoning.summary if request.reasoning else None
        output.append(reasoning_item(messages, summary))
    status = "completed" if reason is None else "incomplete"
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    output.append(
        {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "status": status, "role": "assistant", "content": content}
    )
    prompt_tokens = count_prompt_tokens(messages)
    usage = {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": reply.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
        "total_tokens": prompt_tokens + reply.completion_tokens,
    }
    return Final(
        status,
        output,
        usage,
        None if reason is None else {"reason": reason},
        None,
        filters.responses_entries(config, prompt, text, blocked=partial is not None),
        prompt_tokens,
        reply.completion_tokens,
        reply.reasoning_tokens,
    )


def reasoning_summary(messages: list[dict[str, Any]], detail: str) -> str:
    """The (deterministic) summary of the model's reasoning, when the request asks for one."""
    user = [m for m in messages if m.get("role") == "user"]
    return f"[{detail} summary] Answering: " + (message_text(user[-1]) if user else "")


def reasoning_item(messages: list[dict[str, Any]], summary: str | None) -> dict[str, Any]:
    parts = [] if summary is None else [{"type": "summary_text", "text": reasoning_summary(messages, summary)}]
    return {"id": f"rs_{uuid.uuid4().hex}", "type": "reasoning", "summary": parts, "encrypted_content": None}


def render(
    request: ResponseRequest,
    *,
    response_id: str,
    created_at: float,
    model: str,
    tier: str,
    status: str,
    final: Final | None,
    completed_at: float | None = None,
) -> dict[str, Any]:
    """The SDK's ``Response`` JSON; ``final`` None while queued, in progress or cancelled (no output, no usage)."""
    reasoning = models.is_reasoning_model(model)
    effort = request.reasoning.effort if request.reasoning else None
    text = request.text.model_dump(by_alias=True, exclude_none=True) if request.text else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at),
        "status": status,
        "background": request.background,
        "completed_at": None if completed_at is None else int(completed_at),
        "content_filters": final.content_filters if final else None,
        "error": final.error if final else None,
        "incomplete_details": final.incomplete_details if final else None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": None,
        "metadata": request.metadata or {},
        "model": model,
        "output": final.output if final else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": request.prompt_cache_key,
        "reasoning": {
            "effort": (effort or models.DEFAULT_EFFORT) if reasoning else None,
            "summary": request.reasoning.summary if request.reasoning else None,
        },
        "service_tier": tier,
        "store": request.store,
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "text": {"format": {"type": "text"}, "verbosity": "medium", **text},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0 if request.top_p is None else request.top_p,
        "truncation": request.truncation or "disabled",
        "usage": final.usage if final else None,
        "user": None,
    }
