"""What the live chat route (``app``) and the Files and Batches routes (``batch_routes``) share: the app's state
key, Azure's error bodies (``error``, ``bad_request``), the Entra checks (``authenticate``), the request body's
validation (``validate``) and the completion an admitted request gets (``answer_body``), which a batch line gets too."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from emulators.aoai import models
from emulators.aoai.answers import count_prompt_tokens, message_text, reply_for
from emulators.aoai.config import EmulatorConfig
from emulators.aoai.state import EmulatorState
from emulators.tokens import TokenError, verify

# Azure's own values and wording, so clients (and their error handling) see what the real service sends.
AUDIENCE = "https://cognitiveservices.azure.com"
SAFE = {name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual", "violence")}
FLAGGED = {**SAFE, "hate": {"filtered": True, "severity": "high"}}
UNAUTHORIZED = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), "
    "or have expired."
)
FILTERED_PROMPT = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify "
    "your prompt and retry. To learn more about our content filtering policies please read our documentation: "
    "https://go.microsoft.com/fwlink/?linkid=2198766"
)
# A Foundry project's OpenAI-compatible route takes only ai.azure.com tokens, and its 401 names that audience (as
# publicly reported, e.g. microsoft/agent-framework#7201; the exact wording is assumed to follow the one above).
PROJECT_AUDIENCE = "https://ai.azure.com"
PROJECT_UNAUTHORIZED = UNAUTHORIZED.replace(AUDIENCE, PROJECT_AUDIENCE)
KEYS_DISABLED = "Key based authentication is disabled for this resource."
NO_ROLE = "Principal does not have access to API/Operation."

STATE = web.AppKey("openai_emulator_state", EmulatorState)
AUDIENCE_TAKEN = web.RequestKey("audience", str)  # the route's audience, when not the resource's (AUDIENCE)


def error(http_status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=http_status)


def bad_request(message: str, param: str | None = None) -> web.Response:
    return error(400, "BadRequest", message, param=param, type="invalid_request_error")


def authenticate(request: web.Request, state: EmulatorState) -> web.Response | None:
    """API key, then bearer token, then the role: the order Azure reports them in."""
    if "api-key" in request.headers:
        return error(state.config.api_key_status, "AuthenticationTypeDisabled", KEYS_DISABLED)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    audience = request.get(AUDIENCE_TAKEN, AUDIENCE)
    unauthorized = PROJECT_UNAUTHORIZED if audience == PROJECT_AUDIENCE else UNAUTHORIZED
    if scheme.lower() != "bearer" or not token.strip():
        return web.json_response({"statusCode": 401, "message": unauthorized}, status=401)
    state.tokens.add(hashlib.sha256(token.strip().encode()).hexdigest())
    try:
        claims = verify(token.strip(), state.public_pem, audience=audience)
    except TokenError:
        return web.json_response({"statusCode": 401, "message": unauthorized}, status=401)
    oid = str(claims["oid"])
    state.principals.add(oid)
    if not state.has_role(oid):
        return error(state.config.permission_denied_status, "PermissionDenied", NO_ROLE)
    return None


def validate(body: Any) -> web.Response | None:
    if not isinstance(body, dict):
        return bad_request("The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return bad_request("'messages' is a required property and must be a non-empty array.", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return bad_request(f"messages[{i}] must be an object with a 'role'.", f"messages[{i}]")
        if not isinstance(message.get("content"), str | list | None):
            return bad_request(f"messages[{i}].content must be a string or an array of parts.", f"messages[{i}]")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return bad_request(f"Invalid '{key}': must be an integer >= 1.", key)
    if body.get("stream"):
        return bad_request("stream=true is not supported by this emulator.", "stream")
    return None


@dataclass(frozen=True)
class Answered:
    """The completion the model gives an admitted request, and its token counts."""

    body: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int


def answer_body(config: EmulatorConfig, body: dict[str, Any], deployment: str, model: str) -> web.Response | Answered:
    """The content filter and the (deterministic) reply to an admitted request, as the live route and a batch
    line both answer it. Reasoning models spend ``models.reasoning_tokens`` out of the budget first."""
    messages = body["messages"]
    prompt = "\n".join(message_text(m) for m in messages)
    if config.filter_trigger_prompt and config.filter_trigger_prompt in prompt:
        inner = {"code": "ResponsibleAIPolicyViolation", "content_filter_result": FLAGGED}
        return error(400, "content_filter", FILTERED_PROMPT, type=None, param="prompt", status=400, innererror=inner)
    reply = reply_for(body, deployment, models.reasoning_tokens(body, model))
    completion_tokens, finish, filtered = reply.completion_tokens, reply.finish_reason, SAFE
    content: str | None = reply.content
    if config.filter_trigger_output and config.filter_trigger_output in reply.content:
        content, finish, filtered = None, "content_filter", FLAGGED  # generated (and billed), then withheld
    prompt_tokens = count_prompt_tokens(messages)
    completion = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:29]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": finish,
                "logprobs": None,
                "content_filter_results": filtered,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens_details": {
                "accepted_prediction_tokens": 0,
                "audio_tokens": 0,
                "reasoning_tokens": reply.reasoning_tokens,  # 0 for non-reasoning models
                "rejected_prediction_tokens": 0,
            },
            "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
        },
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE}],
        "system_fingerprint": config.system_fingerprint,
    }
    return Answered(completion, prompt_tokens, completion_tokens, reply.reasoning_tokens)
