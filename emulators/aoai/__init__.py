"""Azure OpenAI data-plane emulator: chat completions behind Entra ID auth, RBAC, quotas and faults.

It answers what the real service answers to the openai SDK, including the awkward parts the
worker must survive: disabled keys, wrong audiences, role assignments that take minutes to
propagate, 429s with long ``retry-after``, 5xx, dropped connections, stalls and content filters.
Answers are a pure function of the request (``answer_for``), so tests can assert exact content.

Run standalone: ``python -m emulators.aoai --port 0 --grant <oid>`` prints the endpoint to export.
Control API (no auth; the real service has no ``/_emulator`` prefix): see ``create_app``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import time
import uuid
from collections import Counter, deque
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emulators import _server
from emulators.tokens import TokenError, TokenIssuer, verify

AUDIENCE = "https://cognitiveservices.azure.com"
UNLIMITED_REPORTED = 1_000_000_000  # what x-ratelimit-remaining-* count down from when no limit is set
KNOWN_MODELS = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06", "gpt-4.1": "gpt-4.1-2025-04-14"}
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
KEYS_DISABLED = "Key based authentication is disabled for this resource."
NO_ROLE = "Principal does not have access to API/Operation."
SERVER_FAULTS = {  # config field -> (status, code, message), as Azure (or OpenAI behind it) words them
    "fault_500": (
        500,
        "InternalServerError",
        "The server had an error while processing your request. Sorry about that!",
    ),
    "fault_503": (
        503,
        "ServiceUnavailable",
        "The service is temporarily unable to process your request. Try again later.",
    ),
}
NOT_DEPLOYED = (
    "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, "
    "please wait a moment and try again."
)


class Deployment(BaseModel):
    """One model deployment; ``tpm``/``rpm`` override the emulator-wide limits for it."""

    model_config = ConfigDict(extra="forbid")
    model: str
    tpm: int | None = Field(default=None, ge=1)
    rpm: int | None = Field(default=None, ge=1)


class EmulatorConfig(BaseModel):
    """Everything tunable at runtime (``PATCH /_emulator/config`` validates against this)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    deployments: dict[str, Deployment] = Field(
        default_factory=lambda: {"gpt-4o-mini": Deployment(model=_model_for("gpt-4o-mini"))}
    )
    # principal oid -> epoch seconds from which "Cognitive Services OpenAI User" is effective.
    grants: dict[str, float] = Field(default_factory=dict)
    grant_any: bool = False
    permission_denied_status: Literal[401, 403] = 401  # Azure usually answers 401; 403 is also reported
    api_key_status: Literal[401, 403] = 403  # disableLocalAuth: public reports show 403 AuthenticationTypeDisabled
    tpm: int | None = Field(default=None, ge=1)  # per deployment; None = unlimited
    rpm: int | None = Field(default=None, ge=1)
    default_max_tokens: int = Field(default=4096, ge=1)  # completion budget estimated when a request sets none
    rate_window_seconds: float = Field(default=60, gt=0)  # Azure's is 60 s; tests shrink it to see quota free up
    retry_after_override_seconds: float | None = Field(default=None, gt=0)
    latency_ms: float = Field(default=0, ge=0)
    per_token_ms: float = Field(default=0, ge=0)
    fault_seed: int = 0
    fault_500: float = Field(default=0, ge=0, le=1)
    fault_503: float = Field(default=0, ge=0, le=1)
    fault_drop: float = Field(default=0, ge=0, le=1)
    fault_stall: float = Field(default=0, ge=0, le=1)
    stall_seconds: float = Field(default=3600, ge=0)
    filter_trigger_prompt: str = "TRIGGER_PROMPT_FILTER"
    filter_trigger_output: str = "TRIGGER_OUTPUT_FILTER"
    system_fingerprint: str = "fp_b705f0c291"

    @field_validator("deployments", mode="before")
    @classmethod
    def _deployment_names(cls, value: Any) -> Any:
        # Accept ["gpt-4o-mini"] or {"name": "model"} as shorthands for {"name": {"model": ...}}.
        if isinstance(value, list | tuple):
            value = {name: None for name in value}
        if isinstance(value, dict):
            return {
                k: {"model": v or _model_for(k)} if v is None or isinstance(v, str) else v for k, v in value.items()
            }
        return value

    @field_validator("grants", mode="before")
    @classmethod
    def _grant_list(cls, value: Any) -> Any:
        return dict.fromkeys(value, 0.0) if isinstance(value, list | tuple | set) else value


def _model_for(deployment: str) -> str:
    return KNOWN_MODELS.get(deployment, deployment)


# --- Pure functions tests import to predict exact answers -------------------------------------------


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


# --- State ------------------------------------------------------------------------------------------


class EmulatorState:
    """Config, grants, sliding windows and counters; touched only from the server's event loop."""

    def __init__(self, config: EmulatorConfig, public_pem: bytes) -> None:
        self.config = config
        self.public_pem = public_pem
        self.rng = random.Random(config.fault_seed)
        self.windows: dict[str, deque[tuple[float, int]]] = {}  # deployment -> (monotonic time, tokens charged)
        self.closing = asyncio.Event()  # set on shutdown so stalls and latency end at once
        self.reset_stats()

    def reset_stats(self) -> None:
        self.by_status: Counter[str] = Counter()
        self.by_deployment: Counter[str] = Counter()
        self.prompt_tokens = self.completion_tokens = self.completions = 0
        self.principals: set[str] = set()
        self.tokens: set[str] = set()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": sum(self.by_status.values()),
            "by_status": dict(self.by_status),
            "by_deployment": dict(self.by_deployment),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "throttled": self.by_status["429"],
            "completions": self.completions,
            "principals": sorted(self.principals),
            "distinct_principals": len(self.principals),
            "distinct_tokens": len(self.tokens),
        }

    def update_config(self, **changes: Any) -> EmulatorConfig:
        """Partial update (a given ``deployments`` or ``grants`` map replaces the old one); raises ValidationError."""
        self.replace_config(EmulatorConfig.model_validate({**self.config.model_dump(), **changes}))
        return self.config

    def replace_config(self, config: EmulatorConfig) -> None:
        # Any change restarts the fault sequence, so "this config" always means "these faults, in this order".
        self.config = config.model_copy(deep=True)
        self.rng = random.Random(config.fault_seed)

    def grant(self, principal_id: str, delay_seconds: float = 0) -> float:
        """Assign the role; like Azure RBAC it only takes effect after ``delay_seconds`` (propagation)."""
        effective_at = time.time() + delay_seconds
        self.config.grants = {**self.config.grants, principal_id: effective_at}
        return effective_at

    def revoke(self, principal_id: str) -> bool:
        grants = dict(self.config.grants)
        found = grants.pop(principal_id, None) is not None
        self.config.grants = grants
        return found

    def has_role(self, principal_id: str) -> bool:
        effective_at = self.config.grants.get(principal_id)
        return self.config.grant_any or (effective_at is not None and effective_at <= time.time())

    def limits(self, deployment: str) -> tuple[int | None, int | None]:
        spec = self.config.deployments.get(deployment)
        return (spec and spec.tpm) or self.config.tpm, (spec and spec.rpm) or self.config.rpm

    def _window(self, deployment: str, now: float) -> deque[tuple[float, int]]:
        window = self.windows.setdefault(deployment, deque())
        while window and window[0][0] <= now - self.config.rate_window_seconds:
            window.popleft()
        return window

    def admit(self, deployment: str, estimate: int) -> tuple[float, str] | None:
        """Charge the sliding 60 s window, or return (seconds until enough of it frees up, which limit)."""
        now = time.monotonic()
        window = self._window(deployment, now)
        tpm, rpm = self.limits(deployment)
        waits: list[tuple[float, str]] = []
        span = self.config.rate_window_seconds
        if rpm is not None and len(window) >= rpm:
            waits.append((window[len(window) - rpm][0] + span - now, "call"))
        used = sum(n for _, n in window)
        if tpm is not None and used + estimate > tpm:
            if estimate > tpm:  # can never fit: 429 for a whole window until the caller lowers max_tokens
                waits.append((span, "token"))
            else:
                freed = 0
                for at, n in window:
                    freed += n
                    if used - freed + estimate <= tpm:
                        waits.append((at + span - now, "token"))
                        break
        if waits:
            return max(waits)
        window.append((now, estimate))
        return None

    def remaining(self, deployment: str) -> dict[str, str]:
        window = self._window(deployment, time.monotonic())
        tpm, rpm = self.limits(deployment)
        return {
            "x-ratelimit-remaining-requests": str(max(0, (rpm or UNLIMITED_REPORTED) - len(window))),
            "x-ratelimit-remaining-tokens": str(max(0, (tpm or UNLIMITED_REPORTED) - sum(n for _, n in window))),
        }

    async def sleep(self, seconds: float) -> bool:
        """Sleep without blocking the loop; False if the server began shutting down meanwhile."""
        if seconds <= 0:
            return not self.closing.is_set()
        try:
            await asyncio.wait_for(self.closing.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False


STATE = web.AppKey("openai_emulator_state", EmulatorState)
DEPLOYMENT = web.RequestKey("deployment", str)  # the deployment a data-plane request named
DROPPED = web.RequestKey("dropped", bool)


# --- Data plane -------------------------------------------------------------------------------------


def _error(http_status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=http_status)


def _bad_request(message: str, param: str | None = None) -> web.Response:
    return _error(400, "BadRequest", message, param=param, type="invalid_request_error")


def _authenticate(request: web.Request, state: EmulatorState) -> web.Response | None:
    """API key, then bearer token, then the role: the order Azure reports them in."""
    if "api-key" in request.headers:
        return _error(state.config.api_key_status, "AuthenticationTypeDisabled", KEYS_DISABLED)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return web.json_response({"statusCode": 401, "message": UNAUTHORIZED}, status=401)
    state.tokens.add(hashlib.sha256(token.strip().encode()).hexdigest())
    try:
        claims = verify(token.strip(), state.public_pem, audience=AUDIENCE)
    except TokenError:
        return web.json_response({"statusCode": 401, "message": UNAUTHORIZED}, status=401)
    oid = str(claims["oid"])
    state.principals.add(oid)
    if not state.has_role(oid):
        return _error(state.config.permission_denied_status, "PermissionDenied", NO_ROLE)
    return None


def _validate(body: Any) -> web.Response | None:
    if not isinstance(body, dict):
        return _bad_request("The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _bad_request("'messages' is a required property and must be a non-empty array.", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return _bad_request(f"messages[{i}] must be an object with a 'role'.", f"messages[{i}]")
        if not isinstance(message.get("content"), str | list | None):
            return _bad_request(f"messages[{i}].content must be a string or an array of parts.", f"messages[{i}]")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return _bad_request(f"Invalid '{key}': must be an integer >= 1.", key)
    if body.get("stream"):
        return _bad_request("stream=true is not supported by this emulator.", "stream")
    return None


def _throttled(state: EmulatorState, wait: float, kind: str, api_version: str) -> web.Response:
    wait = state.config.retry_after_override_seconds or wait
    seconds = max(1, math.ceil(wait))
    message = (
        f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {api_version} have exceeded "
        f"{kind} rate limit of your current AIServices S0 pricing tier. Please retry after {seconds} seconds. Please "
        "go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
    )
    response = _error(429, "429", message)
    # The SDK prefers retry-after-ms, so both must carry an override (else it would wait the short one).
    response.headers.update({"retry-after": str(seconds), "retry-after-ms": str(max(1, math.ceil(wait * 1000)))})
    return response


async def _fault(request: web.Request, state: EmulatorState) -> web.Response | None:
    """At most one injected fault per request, drawn from the seeded RNG (reproducible sequences)."""
    # One uniform draw split into consecutive slices: 500 | 503 | drop | stall | no fault.
    config, draw = state.config, state.rng.random()
    for field, (status, code, message) in SERVER_FAULTS.items():
        if draw < getattr(config, field):
            return _error(status, code, message)
        draw -= getattr(config, field)
    if draw < config.fault_drop:
        return _drop(request)
    draw -= config.fault_drop
    if draw < config.fault_stall and not await state.sleep(config.stall_seconds):
        return _drop(request)  # shutting down mid-stall: end it the way a dying server would
    return None


def _drop(request: web.Request) -> web.Response:
    # Close without a status line: the client sees "Server disconnected without sending a response".
    request[DROPPED] = True
    if request.transport is not None:
        request.transport.close()
    return web.Response()  # aiohttp's write then fails quietly on the closed transport


async def _chat(request: web.Request, deployment: str | None, api_version: str) -> web.Response:
    state = request.app[STATE]
    if deployment is not None:
        request[DEPLOYMENT] = deployment
    if denied := _authenticate(request, state):
        return denied
    try:
        body = await request.json()
    except ValueError:
        return _bad_request("The request body is not valid JSON.")
    if deployment is None:  # the v1 route names the deployment in the body
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _bad_request("'model' is a required property.", "model")
        deployment = request[DEPLOYMENT] = body["model"]
    spec = state.config.deployments.get(deployment)
    if spec is None:
        return _error(404, "DeploymentNotFound", NOT_DEPLOYED)
    if invalid := _validate(body):
        return invalid
    if fault := await _fault(request, state):
        return fault
    config, messages = state.config, body["messages"]
    if throttled := state.admit(deployment, estimate_request_tokens(body, config.default_max_tokens)):
        return _throttled(state, *throttled, api_version)
    prompt = "\n".join(message_text(m) for m in messages)
    if config.filter_trigger_prompt and config.filter_trigger_prompt in prompt:
        inner = {"code": "ResponsibleAIPolicyViolation", "content_filter_result": FLAGGED}
        return _error(400, "content_filter", FILTERED_PROMPT, type=None, param="prompt", status=400, innererror=inner)

    text, finish = render_content(messages, deployment, body.get("response_format")), "stop"
    stops = body.get("stop")
    for stop in [stops] if isinstance(stops, str) else stops or []:
        if isinstance(stop, str) and stop and stop in text:
            text = text[: text.index(stop)]
    budget = body.get("max_completion_tokens") or body.get("max_tokens")
    if budget is not None and count_text_tokens(text) > budget:
        text, finish = text[: budget * 4], "length"  # 4 chars per token: exactly `budget` tokens
    completion_tokens, filtered = count_text_tokens(text), SAFE
    content: str | None = text
    if config.filter_trigger_output and config.filter_trigger_output in text:
        content, finish, filtered = None, "content_filter", FLAGGED  # generated (and billed), then withheld
    if not await state.sleep((config.latency_ms + config.per_token_ms * completion_tokens) / 1000):
        return _drop(request)
    prompt_tokens = count_prompt_tokens(messages)
    state.prompt_tokens += prompt_tokens
    state.completion_tokens += completion_tokens
    state.completions += 1
    return web.json_response(
        {
            "id": f"chatcmpl-{uuid.uuid4().hex[:29]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": spec.model,
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
            },
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE}],
            "system_fingerprint": config.system_fingerprint,
        }
    )


async def deployment_chat(request: web.Request) -> web.Response:
    api_version = request.query.get("api-version", "").strip()
    if not api_version:  # Azure routes nothing without it: 404, not 400 (as publicly reported)
        return _error(404, "404", "Resource not found")
    return await _chat(request, request.match_info["deployment"], api_version)


async def v1_chat(request: web.Request) -> web.Response:
    return await _chat(request, None, "v1")


@web.middleware
async def data_plane(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request ids and rate-limit headers on every data-plane answer, and the per-request counters."""
    if not request.path.startswith("/openai/"):
        return await handler(request)
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:  # unrouted paths/methods: Azure's generic body, not aiohttp's text
        response = _error(exc.status, str(exc.status), "Resource not found" if exc.status == 404 else exc.reason)
    state = request.app[STATE]
    request_id = str(uuid.uuid4())
    response.headers.update({"apim-request-id": request_id, "x-request-id": request_id})
    deployment = request.get(DEPLOYMENT)
    if isinstance(deployment, str):
        state.by_deployment[deployment] += 1
        if deployment in state.config.deployments:
            response.headers.update(state.remaining(deployment))
    state.by_status["dropped" if request.get(DROPPED) else str(response.status)] += 1
    return response


# --- Control plane ----------------------------------------------------------------------------------


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


async def reset_stats(request: web.Request) -> web.Response:
    request.app[STATE].reset_stats()
    return web.json_response(request.app[STATE].stats())


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].config.model_dump(mode="json"))


async def patch_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise TypeError("body must be a JSON object")
        state.update_config(**changes)
    except ValidationError as exc:
        return web.json_response({"error": json.loads(exc.json(include_url=False))}, status=400)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(state.config.model_dump(mode="json"))


async def add_role(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        principal_id, delay = body["principal_id"], float(body.get("delay_seconds", 0))
        if not isinstance(principal_id, str) or not principal_id or not 0 <= delay < math.inf:
            raise ValueError
    except (ValueError, TypeError, KeyError, AttributeError):
        return web.json_response({"error": "expected {principal_id: str, delay_seconds?: number >= 0}"}, status=400)
    effective_at = request.app[STATE].grant(principal_id, delay)
    return web.json_response({"principal_id": principal_id, "effective_at": effective_at}, status=201)


async def delete_role(request: web.Request) -> web.Response:
    found = request.app[STATE].revoke(request.match_info["oid"])
    return web.Response(status=204) if found else web.json_response({"error": "no such grant"}, status=404)


def create_app(config: EmulatorConfig, public_pem: bytes) -> web.Application:
    """The emulator as an aiohttp app. Control API: ``GET /_emulator/stats``, ``POST /_emulator/stats/reset``,
    ``GET|PATCH /_emulator/config``, ``POST /_emulator/roles`` and ``DELETE /_emulator/roles/{oid}``."""
    # Real deployments take prompts of many MiB (context windows, not the HTTP layer, bound them).
    app = web.Application(middlewares=[data_plane], client_max_size=64 * 1024 * 1024)
    app[STATE] = EmulatorState(config.model_copy(deep=True), public_pem)

    async def on_shutdown(app: web.Application) -> None:
        app[STATE].closing.set()  # runs before aiohttp waits for in-flight handlers (a stall would hold it 60 s)

    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", deployment_chat)
    app.router.add_post("/openai/v1/chat/completions", v1_chat)
    app.router.add_get("/_emulator/stats", get_stats)
    app.router.add_post("/_emulator/stats/reset", reset_stats)
    app.router.add_get("/_emulator/config", get_config)
    app.router.add_patch("/_emulator/config", patch_config)
    app.router.add_post("/_emulator/roles", add_role)
    app.router.add_delete("/_emulator/roles/{oid}", delete_role)
    return app


class Running(_server.Running):
    """A started emulator; ``state`` is the live EmulatorState (touch it from the server's loop only)."""

    @property
    def state(self) -> EmulatorState:
        return self.app[STATE]


async def start(config: EmulatorConfig, *, public_pem: bytes, host: str = "127.0.0.1", port: int = 0) -> Running:
    running = await _server.serve(create_app(config, public_pem), host=host, port=port)
    return Running(url=running.url, app=running.app, runner=running.runner)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulators.aoai", description=(__doc__ or "").split("\n\n")[0])
    _server.loopback_args(parser, default_port=0)
    parser.add_argument("--state-dir", help="shared signing-key directory (default $LOCAL_AZURE_DIR or .local-azure)")
    parser.add_argument(
        "--grant", action="append", default=[], metavar="OID", help="principal holding the role (repeatable)"
    )
    parser.add_argument("--grant-any", action="store_true", help="every valid token holds the role")
    parser.add_argument(
        "--deployment",
        action="append",
        default=[],
        metavar="NAME[=MODEL]",
        help="deployment (repeatable; default gpt-4o-mini)",
    )
    parser.add_argument("--latency-ms", type=float, default=0, help="fixed latency per completion")
    parser.add_argument(
        "--tpm",
        type=int,
        default=None,
        help="tokens per minute per deployment (default unlimited; no max_tokens = 4096 charged)",
    )
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute per deployment (default unlimited)")
    args = parser.parse_args(argv)
    deployments = dict(spec.partition("=")[::2] for spec in args.deployment) or {"gpt-4o-mini": ""}
    config = EmulatorConfig.model_validate(
        {
            "deployments": {name: model or None for name, model in deployments.items()},
            "grants": args.grant,
            "grant_any": args.grant_any,
            "latency_ms": args.latency_ms,
            "tpm": args.tpm,
            "rpm": args.rpm,
        }
    )
    public_pem = TokenIssuer(args.state_dir).public_pem

    def banner(running: _server.Running) -> str:
        return f"export AZURE_OPENAI_ENDPOINT={running.url}\n# deployments: {', '.join(config.deployments)}"

    _server.run_forever(lambda: start(config, public_pem=public_pem, host=args.host, port=args.port), banner)
