"""The Files and Batches v1 routes (``batches`` says what they do), behind the chat route's Entra checks, their
``/_emulator`` controls, and ``answer``: what the live chat or Responses route answers a request body, for a batch's
lines."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web
from pydantic import ValidationError

from emulators.aoai import response_objects, responses
from emulators.aoai.batch_input import RESPONSES_URLS
from emulators.aoai.batch_objects import Outcome
from emulators.aoai.batches import FILE_EXPIRY_SECONDS, Refused
from emulators.aoai.dataplane import STATE, answer_body, authenticate, chat_checks, error
from emulators.aoai.state import EmulatorState

Handler = Callable[[web.Request, EmulatorState], Awaitable[web.StreamResponse]]
CHUNK = 1 << 20


# --- What the live route answers ------------------------------------------------------------------------------


def answer(state: EmulatorState, url: str, body: dict[str, Any]) -> Outcome:
    """What the live route for ``url`` (chat completions or Responses) answers ``body`` once admitted, minus what is
    not the model's (auth, outages, injected faults, tiers, quota, latency): the same checks in the same order as
    the live route and the same answer (a test holds them equal). ``body["model"]`` is a known deployment."""
    deployment = str(body["model"])
    model = state.config.deployments[deployment].model
    if url in RESPONSES_URLS:
        return _response(state, body, deployment, model)
    if refused := chat_checks(body, model):
        return _outcome(refused)
    answered = answer_body(state.config, body, deployment, model)
    if isinstance(answered, web.Response):
        return _outcome(answered)
    return Outcome(200, answered.body, answered.prompt_tokens, answered.completion_tokens, answered.reasoning_tokens)


def _response(state: EmulatorState, body: dict[str, Any], deployment: str, model: str) -> Outcome:
    """A ``/v1/responses`` line: a Responses body as Global Batch writes it (facts section 6): ``service_tier``
    ``default``, ``content_filters`` null, ``store`` true; never background."""
    spec = state.config.deployments[deployment]
    parsed = responses.check(body, spec, state)
    if isinstance(parsed, web.Response):
        return _outcome(parsed)
    final = response_objects.answer(state.config, parsed, deployment, model)
    if isinstance(final, dict):
        return Outcome(400, final)
    now = time.time()
    rendered = response_objects.render(
        parsed.model_copy(update={"store": True, "background": False}),
        response_id=f"resp_{uuid.uuid4().hex}",
        created_at=now,
        model=model,
        tier="default",
        status=final.status,
        final=final,
        completed_at=now if final.status == "completed" else None,
    )
    rendered["content_filters"] = None
    return Outcome(200, rendered, final.prompt_tokens, final.completion_tokens, final.reasoning_tokens)


def _outcome(response: web.Response) -> Outcome:
    return Outcome(response.status, json.loads(response.text or "{}"))


# --- Data plane -----------------------------------------------------------------------------------------------


def _api(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The handler behind the chat route's checks (API key refused, bearer token, role), errors as Azure words them."""

    async def run(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        if denied := authenticate(request, state):
            return denied
        try:
            return await handler(request, state)
        except Refused as refused:
            kind = "invalid_request_error" if refused.status == 400 else None
            return error(refused.status, refused.code, refused.message, param=refused.param, type=kind)

    return run


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    """The part's bytes, refused past ``limit`` (read to the end first, so the client gets the answer cleanly)."""
    chunks, size = [], 0
    while chunk := await part.read_chunk(CHUNK):
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise Refused(400, "invalid_request", f"The file is {size:,} bytes, over the {limit:,}-byte limit.", "file")
    return b"".join(chunks)


def _expiry(fields: dict[str, str]) -> int | None:
    """``expires_after[anchor]``/``[seconds]`` as the SDK sends them in a multipart form: seconds, or None."""
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    low, high = FILE_EXPIRY_SECONDS
    if anchor != "created_at" or seconds is None or not seconds.isdigit():
        message = f"expires_after needs anchor 'created_at' and seconds between {low} and {high}."
        raise Refused(400, "invalid_request", message, "expires_after")
    return int(seconds)


async def upload_file(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    if not request.content_type.startswith("multipart/"):
        raise Refused(400, "invalid_request", "Upload the file as multipart/form-data.", "file")
    fields: dict[str, str] = {}
    data, filename = None, "input.jsonl"
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "file":
            filename = part.filename or filename
            data = await _read_part(part, state.config.batch.max_file_bytes)
        elif part.name:
            fields[part.name] = await part.text()
    if data is None:
        raise Refused(400, "invalid_request", "'file' is a required property.", "file")
    purpose, expires_after = fields.get("purpose", ""), _expiry(fields)
    now = time.time()
    stored = state.batches.add_file(filename, purpose, data, expires_after, state.config.batch, now)
    return web.json_response(stored.to_json(now))


def _int_query(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise Refused(400, "invalid_request", f"'{name}' must be an integer from 1 to {high}.", name)
    return int(raw)


def _page(request: web.Request, items: list[dict[str, Any]], default_limit: int, high: int) -> web.Response:
    """A cursor page as the SDK's ``AsyncCursorPage`` reads it (``data``, ``has_more``; ``after`` = an item's id)."""
    limit, after = _int_query(request, "limit", default_limit, high), request.query.get("after")
    if after:
        index = next((i for i, item in enumerate(items) if item["id"] == after), None)
        if index is None:
            raise Refused(400, "invalid_request", f"'after' names no listed object: '{after}'.", "after")
        items = items[index + 1 :]
    page = items[:limit]
    first, last = (page[0]["id"], page[-1]["id"]) if page else (None, None)
    return web.json_response(
        {"object": "list", "data": page, "first_id": first, "last_id": last, "has_more": len(items) > limit}
    )


async def list_files(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise Refused(400, "invalid_request", "'order' must be 'asc' or 'desc'.", "order")
    now = time.time()
    files = state.batches.list_files(now, request.query.get("purpose"), descending=order == "desc")
    return _page(request, [f.to_json(now) for f in files], 10_000, 10_000)


async def get_file(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    now = time.time()
    return web.json_response(state.batches.file(request.match_info["file_id"], now).to_json(now))


async def file_content(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    stored = state.batches.file(request.match_info["file_id"], time.time())
    return web.Response(body=stored.data, content_type="application/octet-stream")


async def delete_file(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    return web.json_response(state.batches.delete_file(request.match_info["file_id"], time.time()))


async def create_batch(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise Refused(400, "invalid_request", "The request body must be a JSON object.")
    config = state.config
    batch = state.batches.create(
        body, config.batch, config.deployments.keys(), lambda url, line: answer(state, url, line), time.time()
    )
    return web.json_response(batch.to_json(batch.created_at))  # as created: validating


async def get_batch(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    now = time.time()
    return web.json_response(state.batches.batch(request.match_info["batch_id"], now).to_json(now))


async def list_batches(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    now = time.time()
    return _page(request, [b.to_json(now) for b in state.batches.list_batches(now)], 20, 100)


async def cancel_batch(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    now = time.time()
    return web.json_response(state.batches.cancel(request.match_info["batch_id"], now).to_json(now))


# --- Control plane --------------------------------------------------------------------------------------------


async def _control_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    body = await request.json()
    if not isinstance(body, dict):
        raise TypeError("body must be a JSON object")
    return body


async def patch_batch_config(request: web.Request) -> web.Response:
    """Partial update of ``EmulatorConfig.batch`` (``config.BatchConfig``)."""
    try:
        batch = request.app[STATE].update_batch_config(**await _control_body(request))
    except ValidationError as exc:
        return web.json_response({"error": json.loads(exc.json(include_url=False))}, status=400)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(batch.model_dump(mode="json"))


async def force_batch(request: web.Request) -> web.Response:
    """``POST /_emulator/batches/{id}/expire`` (``{"done"?: n}``) or ``.../fail`` (``{"code"?, "message"?}``)."""
    state, now = request.app[STATE], time.time()
    try:
        body = await _control_body(request)
        batch_id = request.match_info["batch_id"]
        if request.match_info["action"] == "expire":
            done = body.get("done")
            if done is not None and (not isinstance(done, int) or isinstance(done, bool)):
                raise TypeError("done must be an integer")
            batch = state.batches.expire(batch_id, now, done)
        else:
            code, message = body.get("code", "server_error"), body.get("message", "Failed by the emulator.")
            batch = state.batches.fail(batch_id, now, str(code), str(message))
    except Refused as refused:
        return web.json_response({"error": refused.message}, status=refused.status)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(batch.to_json(now))


async def reset_batches(request: web.Request) -> web.Response:
    request.app[STATE].reset_batches()
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    """The v1 Files and Batches routes and their controls (``PATCH /_emulator/batch-config``,
    ``POST /_emulator/batches/{id}/expire|fail``, ``POST /_emulator/batches/reset``)."""
    router = app.router
    router.add_post("/openai/v1/files", _api(upload_file))
    router.add_get("/openai/v1/files", _api(list_files))
    router.add_get("/openai/v1/files/{file_id}", _api(get_file))
    router.add_get("/openai/v1/files/{file_id}/content", _api(file_content))
    router.add_delete("/openai/v1/files/{file_id}", _api(delete_file))
    router.add_post("/openai/v1/batches", _api(create_batch))
    router.add_get("/openai/v1/batches", _api(list_batches))
    router.add_get("/openai/v1/batches/{batch_id}", _api(get_batch))
    router.add_post("/openai/v1/batches/{batch_id}/cancel", _api(cancel_batch))
    router.add_patch("/_emulator/batch-config", patch_batch_config)
    router.add_post("/_emulator/batches/reset", reset_batches)
    router.add_post("/_emulator/batches/{batch_id}/{action:expire|fail}", force_batch)
