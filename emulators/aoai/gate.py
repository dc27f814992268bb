"""The one path every model call takes, chat completions and Responses alike: the Entra checks, the deployment
lookup, its outage, the route's own body checks and model rules, the service tier, injected faults, flex capacity
and the deployment's quota (one sliding window per deployment, whatever the API or tier), in that order. What an
admitted call then answers is the route's (``app`` for chat, ``responses`` for the Responses API)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web

from emulators.aoai import tiers
from emulators.aoai.config import Deployment
from emulators.aoai.dataplane import STATE, authenticate, bad_request, error
from emulators.aoai.state import EmulatorState

# Azure's own values and wording, so clients see what the real service sends.
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

DEPLOYMENT = web.RequestKey("deployment", str)  # the deployment a data-plane request named
DROPPED = web.RequestKey("dropped", bool)

Parsed = TypeVar("Parsed")


@dataclass(frozen=True)
class Call(Generic[Parsed]):
    """An admitted model call: its deployment, the route's parsed body and the tier serving it (quota charged)."""

    state: EmulatorState
    deployment: str
    spec: Deployment
    body: Parsed
    tier: str


# The route's body checks and model rules: the parsed body, or the 400 refusing it.
Parse = Callable[[Any, Deployment, EmulatorState], "Parsed | web.Response"]


async def admit(
    request: web.Request,
    deployment: str | None,
    *,
    operation: str,
    api_version: str,
    parse: Parse[Parsed],
    estimate: Callable[[Parsed, EmulatorState], int],
) -> Call[Parsed] | web.Response:
    """Everything before the model answers (see the module docstring); ``deployment`` None: the v1 routes' body
    names it in ``model``. ``operation`` names the call in a quota 429's message."""
    state = request.app[STATE]
    if deployment is not None:
        request[DEPLOYMENT] = deployment
    if denied := authenticate(request, state):
        return denied
    try:
        body = await request.json()
    except ValueError:
        return bad_request("The request body is not valid JSON.")
    if deployment is None:
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return bad_request("'model' is a required property.", "model")
        deployment = request[DEPLOYMENT] = body["model"]
    spec = state.config.deployments.get(deployment)
    if spec is None:
        return error(404, "DeploymentNotFound", NOT_DEPLOYED)
    if down := await outage(request, state, deployment):
        return down
    parsed = parse(body, spec, state)
    if isinstance(parsed, web.Response):
        return parsed
    tier = tiers.resolve(body.get("service_tier"), request.headers.get(tiers.HEADER), spec)
    if isinstance(tier, dict):
        return web.json_response(tier, status=400)
    if injected := await fault(request, state):
        return injected
    if tiers.flex_unavailable(spec, tier, time.time()):  # refused before admission: not billed, no quota spent
        state.flex_unavailable += 1
        return web.json_response(tiers.FLEX_UNAVAILABLE, status=429)
    if throttled := state.admit(deployment, estimate(parsed, state)):
        return _throttled(spec, state, *throttled, operation, api_version)
    return Call(state, deployment, spec, parsed, tier)


def _throttled(
    spec: Deployment, state: EmulatorState, wait: float, kind: str, operation: str, api_version: str
) -> web.Response:
    wait = state.config.retry_after_override_seconds or wait
    seconds = max(1, math.ceil(wait))
    message = (
        f"Requests to the {operation} Operation under Azure OpenAI API version {api_version} have exceeded "
        f"{kind} rate limit of your current AIServices S0 pricing tier. Please retry after {seconds} seconds. Please "
        "go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
    )
    response = error(429, "429", message)
    if spec.omit_retry_after:  # the reported quirk: a 429 telling the client nothing about when to come back
        return response
    # The SDK prefers retry-after-ms, so both must carry an override (else it would wait the short one).
    response.headers.update({"retry-after": str(seconds), "retry-after-ms": str(max(1, math.ceil(wait * 1000)))})
    return response


async def outage(request: web.Request, state: EmulatorState, deployment: str) -> web.Response | None:
    """The deployment's outage (``config.Outage``), if one is in effect: 503, a stall until it ends, or a drop."""
    current = state.outage(deployment)
    if current is None:
        return None
    if current.mode == "503":
        return error(*SERVER_FAULTS["fault_503"])
    if current.mode == "timeout":
        await state.sleep(current.until - time.time())  # then close: a request caught in an outage never succeeds
    return drop(request)


async def fault(request: web.Request, state: EmulatorState) -> web.Response | None:
    """At most one injected fault per request, drawn from the seeded RNG (reproducible sequences)."""
    # One uniform draw split into consecutive slices: 500 | 503 | drop | stall | no fault.
    config, draw = state.config, state.rng.random()
    for field, (status, code, message) in SERVER_FAULTS.items():
        if draw < getattr(config, field):
            return error(status, code, message)
        draw -= getattr(config, field)
    if draw < config.fault_drop:
        return drop(request)
    draw -= config.fault_drop
    if draw < config.fault_stall and not await state.sleep(config.stall_seconds):
        return drop(request)  # shutting down mid-stall: end it the way a dying server would
    return None


def drop(request: web.Request) -> web.Response:
    """Close without a status line: the client sees "Server disconnected without sending a response"."""
    request[DROPPED] = True
    if request.transport is not None:
        request.transport.close()
    return web.Response()  # aiohttp's write then fails quietly on the closed transport
