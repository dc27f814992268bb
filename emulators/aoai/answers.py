"""What the "model" says and what it costs: pure functions of the request, so tests can predict exact answers."""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple


def message_text(message: dict[str, Any]) -> str:
    """``content`` as text: a string, or the ``text`` of each ``{"type": "text"}`` part joined with "\\n"."""
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


def count_text_tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: one token per 4 characters, rounded up."""
    return math.ceil(len(text) / 4)


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """3 tokens of framing per message + its text, + 3 priming the reply (OpenAI's published chat overhead)."""
    return sum(3 + count_text_tokens(message_text(m)) for m in messages) + 3


def estimate_request_tokens(body: dict[str, Any], default_max_tokens: int = 4096) -> int:
    """What the token limit is charged up front, like Azure: prompt tokens + the completion budget."""
    budget = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    return count_prompt_tokens(body["messages"]) + int(budget)


def answer_for(messages: list[dict[str, Any]], deployment: str) -> str:
    """The model's text: ``"[deployment] "`` + the last user message's text (before JSON/stop/length)."""
    user = [m for m in messages if m.get("role") == "user"]
    return f"[{deployment}] " + (message_text(user[-1]) if user else "")


def fill_schema(schema: Any, text: str) -> Any:
    """A minimal instance of a JSON schema: required properties only, strings = ``text``, enums = first."""
    if not isinstance(schema, dict):
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return fill_schema(schema[key][0], text)
    kind = schema.get("type", "object" if "properties" in schema else None)
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: fill_schema(properties.get(name, {}), text) for name in schema.get("required", [])}
    return {"string": text, "integer": 0, "number": 0.0, "boolean": False, "array": []}.get(str(kind))


def render_content(messages: list[dict[str, Any]], deployment: str, response_format: Any = None) -> str:
    """Full content for a request before ``stop``/``max_tokens`` are applied."""
    text = answer_for(messages, deployment)
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        return json.dumps({"answer": text})
    if kind == "json_schema":
        return json.dumps(fill_schema(response_format.get("json_schema", {}).get("schema", {}), text))
    return text


class Reply(NamedTuple):
    """What the model produced: ``content``, ``finish_reason`` and the reasoning tokens it spent first."""

    content: str
    finish_reason: str
    reasoning_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        """Billed output: the visible content's tokens plus the reasoning tokens (as Azure counts them)."""
        return count_text_tokens(self.content) + self.reasoning_tokens


def reply_for(body: dict[str, Any], deployment: str, reasoning: int = 0) -> Reply:
    """The reply to a validated request: ``render_content`` cut before each ``stop`` it contains; then
    ``reasoning`` tokens are spent out of the completion budget first and the text is cut to what is left
    (finish_reason ``"length"``; a budget the reasoning used up leaves ``""``: the empty-output trap)."""
    text, finish = render_content(body["messages"], deployment, body.get("response_format")), "stop"
    stops = body.get("stop")
    for stop in [stops] if isinstance(stops, str) else stops or []:
        if isinstance(stop, str) and stop and stop in text:
            text = text[: text.index(stop)]
    budget = body.get("max_completion_tokens") or body.get("max_tokens")
    if budget is None:
        return Reply(text, finish, reasoning)
    spent = min(reasoning, budget)
    left = budget - spent
    if count_text_tokens(text) > left:
        text, finish = text[: left * 4], "length"  # 4 chars per token: exactly `left` tokens
    return Reply(text, finish, spent)
