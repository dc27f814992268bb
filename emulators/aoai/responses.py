"""The Responses API (v1): ``POST /openai/v1/responses``, ``GET /openai/v1/responses/{id}``,
``POST /openai/v1/responses/{id}/cancel`` and ``DELETE /openai/v1/responses/{id}``, also on a Foundry project's route
(``/api/projects/<project>/openai/v1/...``, ai.azure.com tokens only), for the real SDK's ``client.responses``.

A create takes chat's path (``gate``: Entra checks, deployment, outage, body checks, tier, faults, flex capacity,
the deployment's one quota charged once), then answers as ``response_objects`` says: at once (after the configured
latency), or, with ``background: true`` (which needs ``store: true``), ``queued`` at once with the lifecycle of
``response_store`` (``EmulatorConfig.background_queued_seconds``/``background_seconds``; a prompt with
``background_fail_trigger`` ends ``failed``, one with ``background_stuck_trigger`` never ends). Retrieve, cancel and
delete find a stored response by id (404 otherwise), after the Entra checks and the injected faults (a poll may
fail as any call may); they spend no quota but carry the deployment's rate-limit headers.

Our assumptions (unconfirmed): ``BACKGROUND_NEEDS_STORE`` and ``NOT_BACKGROUND`` (cancelling a synchronous response)
and their codes; the 404's code ``NotFound``; a quota 429 names the ``Responses_Create`` operation; outages do not
touch retrieve/cancel/delete (stored responses are not served by the deployment); ``?stream=true`` is refused.
Not modelled: streaming, ``input_items``, tools, ``previous_response_id``, webhooks, the 30-day retention.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from emulators.aoai import gate, models
from emulators.aoai.answers import count_prompt_tokens
from emulators.aoai.config import Deployment
from emulators.aoai.dataplane import AUDIENCE_TAKEN, PROJECT_AUDIENCE, STATE, authenticate, error
from emulators.aoai.response_objects import BACKGROUND_FAILED, Final, ResponseRequest, answer, parse
from emulators.aoai.response_store import NOT_FOUND, StoredResponse
from emulators.aoai.state import EmulatorState

BACKGROUND_NEEDS_STORE = "Background mode requires 'store' to be true: stateless background requests are not supported."
NOT_BACKGROUND = "Only responses created with 'background' set to true can be cancelled."
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def check(body: Any, spec: Deployment, state: EmulatorState) -> ResponseRequest | web.Response:
    """The route's own checks after the deployment lookup (a batch line's too): the body, then background's rule."""
    parsed = parse(body, spec.model)
    if isinstance(parsed, dict):
        return web.json_response(parsed, status=400)
    if parsed.background and not parsed.store:
        return web.json_response(models.param_error("invalid_value", "store", BACKGROUND_NEEDS_STORE), status=400)
    return parsed


def _estimate(request: ResponseRequest, state: EmulatorState) -> int:
    """What the quota is charged up front, as for chat: the prompt + the output budget (or the default)."""
    return count_prompt_tokens(request.messages()) + (request.max_output_tokens or state.config.default_max_tokens)


async def create(request: web.Request) -> web.StreamResponse:
    call = await gate.admit(
        request, None, operation="Responses_Create", api_version="v1", parse=check, estimate=_estimate
    )
    if isinstance(call, web.Response):
        return call
    state, body, config = call.state, call.body, call.state.config
    answered = answer(config, body, call.deployment, call.spec.model)
    if isinstance(answered, dict):
        return web.json_response(answered, status=400)
    response_id, now = f"resp_{uuid.uuid4().hex}", time.time()
    state.responses.count("created", call.tier)
    if body.background:
        state.responses.count("background", call.tier)
        prompt = body.prompt_text()
        if config.background_fail_trigger and config.background_fail_trigger in prompt:
            answered = Final("failed", error=dict(BACKGROUND_FAILED))
        queued_until = now + config.background_queued_seconds
        stuck = bool(config.background_stuck_trigger) and config.background_stuck_trigger in prompt
        done_at = None if stuck else queued_until + config.background_seconds
        stored = StoredResponse(
            response_id, body, call.deployment, call.spec.model, call.tier, now, queued_until, done_at, answered
        )
        state.responses.add(stored)
        return web.json_response(stored.to_json(now))
    if not await state.sleep((config.latency_ms + config.per_token_ms * answered.completion_tokens) / 1000):
        return gate.drop(request)
    done = time.time()
    state.count_usage(call.tier, answered.prompt_tokens, answered.completion_tokens, answered.reasoning_tokens)
    stored = StoredResponse(
        response_id, body, call.deployment, call.spec.model, call.tier, now, now, done, answered, settled=True
    )
    if body.store:  # a stateless response is answered, never kept
        state.responses.add(stored)
    return web.json_response(stored.to_json(done))


async def _stored(request: web.Request) -> StoredResponse | web.Response:
    """The response the path names, after the Entra checks and injected faults (or the answer refusing the call)."""
    state = request.app[STATE]
    if denied := authenticate(request, state):
        return denied
    response_id = request.match_info["response_id"]
    stored = state.responses.get(response_id)
    if stored is None:
        message = NOT_FOUND.format(id=response_id)
        return error(404, "NotFound", message, param=None, type="invalid_request_error")
    request[gate.DEPLOYMENT] = stored.deployment
    if injected := await gate.fault(request, state):
        return injected
    return stored


async def retrieve(request: web.Request) -> web.StreamResponse:
    if request.query.get("stream", "").lower() == "true":
        message = "stream=true is not supported by this emulator."
        return web.json_response(models.param_error("unsupported_value", "stream", message), status=400)
    stored = await _stored(request)
    if isinstance(stored, web.Response):
        return stored
    state = request.app[STATE]
    state.responses.count("retrieves", stored.tier)
    state.settle_responses()
    return web.json_response(stored.to_json(time.time()))


async def cancel(request: web.Request) -> web.StreamResponse:
    stored = await _stored(request)
    if isinstance(stored, web.Response):
        return stored
    if not stored.request.background:
        return web.json_response(models.param_error("invalid_request", "response_id", NOT_BACKGROUND), status=400)
    state, now = request.app[STATE], time.time()
    state.responses.count("cancels", stored.tier)
    state.responses.cancel(stored, now)
    state.settle_responses()
    return web.json_response(stored.to_json(now))


async def delete(request: web.Request) -> web.StreamResponse:
    stored = await _stored(request)
    if isinstance(stored, web.Response):
        return stored
    state = request.app[STATE]
    state.settle_responses()  # one finished by now is billed before it goes
    state.responses.count("deletes", stored.tier)
    state.responses.delete(stored.id)
    return web.json_response({"id": stored.id, "object": "response.deleted", "deleted": True})


def _on_project(route: Route) -> Route:
    """The same route on a Foundry project's endpoint: only ai.azure.com tokens."""

    async def run(request: web.Request) -> web.StreamResponse:
        request[AUDIENCE_TAKEN] = PROJECT_AUDIENCE
        return await route(request)

    return run


def _as_is(route: Route) -> Route:
    return route


def add_routes(app: web.Application) -> None:
    for prefix, wrap in (("/openai/v1", _as_is), ("/api/projects/{project}/openai/v1", _on_project)):
        app.router.add_post(f"{prefix}/responses", wrap(create))
        app.router.add_get(f"{prefix}/responses/{{response_id}}", wrap(retrieve))
        app.router.add_post(f"{prefix}/responses/{{response_id}}/cancel", wrap(cancel))
        app.router.add_delete(f"{prefix}/responses/{{response_id}}", wrap(delete))
