"""What the live routes (``gate``, ``app``, ``responses``) and the Files and Batches routes (``batch_routes``) share:
the app's state key, Azure's error bodies (``error``, ``bad_request``), the Entra checks (``authenticate``), the chat
request body's validation (``validate``) and the completion an admitted chat request gets (``answer_body``), which a
batch line gets too."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from emulators.aoai import filters, models
from emulators.aoai.answers import count_prompt_tokens, message_text, reply_for
from emulators.aoai.config import EmulatorConfig
from emulators.aoai.state import EmulatorState
from emulators.tokens import TokenError, verify

# Azure's own values and wording, so clients (and their error handling) see what the real service sends.
AUDIENCE = "https://cognitiveservices.azure.com"
UNAUTHORIZED = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), "
    "or have expired."
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


def chat_checks(body: Any, model: str) -> web.Response | None:
    """The chat route's own checks after the deployment lookup, as the live route and a batch line both run them:
    a Responses-only model refuses the operation, then the body's shape, then the model's parameter rules."""
    if unsupported := models.chat_refusal(model):
        return web.json_response(unsupported, status=400)
    if invalid := validate(body):
        return invalid
    if refused := models.refusal(body, model):  # the model's rules: reasoning families refuse some parameters
        return web.json_response(refused, status=400)
    return None


@dataclass(frozen=True)
class Answered:
    """The completion the model gives an admitted request, and its token counts."""

    body: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int


def answer_body(
    config: EmulatorConfig, body: dict[str, Any], deployment: str, model: str, tier: str = "default"
) -> web.Response | Answered:
    """The content filter (``filters``) and the (deterministic) reply to an admitted request, as the live route and
    a batch line both answer it, served on ``tier``. Reasoning models spend ``models.reasoning_tokens`` out of the
    budget first. An answer the output filter cuts is generated (and billed), then withheld from the trigger on."""
    messages = body["messages"]
    prompt = "\n".join(message_text(m) for m in messages)
    if filters.prompt_blocked(config, prompt):
        return web.json_response(filters.chat_prompt_refusal(config), status=400)
    reply = reply_for(body, deployment, models.reasoning_tokens(body, model))
    completion_tokens, finish, content = reply.completion_tokens, reply.finish_reason, reply.content
    partial = filters.cut(config, reply.content)
    if partial is not None:
        content, finish = partial, "content_filter"
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
                "content_filter_results": filters.completion_results(config, flagged=partial is not None),
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
        "prompt_filter_results": filters.chat_prompt_annotations(config),
        "service_tier": tier,
        "system_fingerprint": config.system_fingerprint,
    }
    return Answered(completion, prompt_tokens, completion_tokens, reply.reasoning_tokens)
