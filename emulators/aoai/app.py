"""The emulator as an aiohttp app: the data plane (auth, validation, faults, quotas, completions) and the
``/_emulator`` control API."""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from emulators import _server
from emulators.aoai import batch_routes, gate, responses
from emulators.aoai.answers import estimate_request_tokens
from emulators.aoai.config import Deployment, EmulatorConfig
from emulators.aoai.dataplane import AUDIENCE_TAKEN, PROJECT_AUDIENCE, STATE, answer_body, chat_checks, error
from emulators.aoai.gate import DEPLOYMENT, DROPPED
from emulators.aoai.state import EmulatorState, RecordedRequest, error_code

# --- Data plane -------------------------------------------------------------------------------------


def _chat_request(body: Any, spec: Deployment, state: EmulatorState) -> dict[str, Any] | web.Response:
    """The chat route's own checks (``dataplane.chat_checks``), after the deployment lookup."""
    return refused if (refused := chat_checks(body, spec.model)) else dict(body)


def _chat_estimate(body: dict[str, Any], state: EmulatorState) -> int:
    return estimate_request_tokens(body, state.config.default_max_tokens)


async def _chat(request: web.Request, deployment: str | None, api_version: str) -> web.Response:
    call = await gate.admit(
        request,
        deployment,
        operation="ChatCompletions_Create",
        api_version=api_version,
        parse=_chat_request,
        estimate=_chat_estimate,
    )
    if isinstance(call, web.Response):
        return call
    return await _complete(request, call)


async def _complete(request: web.Request, call: gate.Call[dict[str, Any]]) -> web.Response:
    """An admitted request: ``answer_body`` after its latency, usage counted."""
    state, config = call.state, call.state.config
    answered = answer_body(config, call.body, call.deployment, call.spec.model, call.tier)
    if isinstance(answered, web.Response):
        return answered
    if not await state.sleep((config.latency_ms + config.per_token_ms * answered.completion_tokens) / 1000):
        return gate.drop(request)
    state.count_usage(call.tier, answered.prompt_tokens, answered.completion_tokens, answered.reasoning_tokens)
    state.completions += 1
    return web.json_response(answered.body)


async def deployment_chat(request: web.Request) -> web.Response:
    api_version = request.query.get("api-version", "").strip()
    if not api_version:  # Azure routes nothing without it: 404, not 400 (as publicly reported)
        return error(404, "404", "Resource not found")
    return await _chat(request, request.match_info["deployment"], api_version)


async def v1_chat(request: web.Request) -> web.Response:
    return await _chat(request, None, "v1")


async def project_v1_chat(request: web.Request) -> web.Response:
    """``/api/projects/{project}/openai/v1/chat/completions``: a Foundry project endpoint on this resource, the
    same deployments behind the ai.azure.com audience (any project name is one)."""
    request[AUDIENCE_TAKEN] = PROJECT_AUDIENCE
    return await _chat(request, None, "v1")


@web.middleware
async def data_plane(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request ids and the six ``x-ratelimit-*`` headers (``rates.headers``) on every data-plane answer that names
    a deployment (200, 4xx, 429, 5xx alike), and the per-request counters."""
    if not request.path.startswith(("/openai/", "/api/projects/")):
        return await handler(request)
    began = time.time()
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:  # unrouted paths/methods: Azure's generic body, not aiohttp's text
        response = error(exc.status, str(exc.status), "Resource not found" if exc.status == 404 else exc.reason)
    state = request.app[STATE]
    request_id = str(uuid.uuid4())
    response.headers.update({"apim-request-id": request_id, "x-request-id": request_id})
    deployment = request.get(DEPLOYMENT)
    if isinstance(deployment, str):
        state.by_deployment[deployment] += 1
        if deployment in state.config.deployments:
            response.headers.update(state.rate_headers(deployment))
    status = "dropped" if request.get(DROPPED) else str(response.status)
    state.by_status[status] += 1
    resource = request.match_info.route.resource  # None when nothing matched
    route = resource.canonical if resource else "unrouted"
    state.by_route[f"{request.method} {route}"] += 1
    body = response.body if isinstance(response, web.Response) else None
    code = error_code(body) if isinstance(body, bytes) and status != "200" else None
    deployment_name = deployment if isinstance(deployment, str) else None
    state.record(RecordedRequest(began, time.time(), request.method, route, deployment_name, status, code))
    return response


# --- Control plane ----------------------------------------------------------------------------------


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


async def get_requests(request: web.Request) -> web.Response:
    """The recorded data-plane requests (``state.RecordedRequest``), oldest first."""
    return web.json_response([recorded.to_json() for recorded in request.app[STATE].requests])


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


async def patch_deployment(request: web.Request) -> web.Response:
    """Partial update of one deployment, e.g. ``{"outage": {"mode": "timeout", "until": <epoch s>}}``."""
    state, name = request.app[STATE], request.match_info["deployment"]
    if name not in state.config.deployments:
        return web.json_response({"error": f"no deployment {name!r}"}, status=404)
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise TypeError("body must be a JSON object")
        spec = state.update_deployment(name, **changes)
    except ValidationError as exc:
        return web.json_response({"error": json.loads(exc.json(include_url=False))}, status=400)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(spec.model_dump(mode="json"))


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
    ``GET /_emulator/requests`` (each data-plane request recorded since the last reset),
    ``GET|PATCH /_emulator/config``, ``PATCH /_emulator/deployments/{deployment}`` (one deployment's fields, e.g. its
    ``outage``), ``POST /_emulator/roles`` and ``DELETE /_emulator/roles/{oid}``; the Files and Batches routes and
    their controls come from ``batch_routes.add_routes``."""
    # Real deployments take prompts of many MiB (context windows, not the HTTP layer, bound them).
    app = web.Application(middlewares=[data_plane], client_max_size=64 * 1024 * 1024)
    app[STATE] = EmulatorState(config.model_copy(deep=True), public_pem)

    async def on_shutdown(app: web.Application) -> None:
        app[STATE].closing.set()  # runs before aiohttp waits for in-flight handlers (a stall would hold it 60 s)

    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", deployment_chat)
    app.router.add_post("/openai/v1/chat/completions", v1_chat)
    app.router.add_post("/api/projects/{project}/openai/v1/chat/completions", project_v1_chat)
    responses.add_routes(app)
    batch_routes.add_routes(app)
    app.router.add_get("/_emulator/stats", get_stats)
    app.router.add_post("/_emulator/stats/reset", reset_stats)
    app.router.add_get("/_emulator/requests", get_requests)
    app.router.add_get("/_emulator/config", get_config)
    app.router.add_patch("/_emulator/config", patch_config)
    app.router.add_patch("/_emulator/deployments/{deployment}", patch_deployment)
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
