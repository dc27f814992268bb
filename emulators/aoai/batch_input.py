"""A batch input file checked as Azure's validation step checks it (``batches`` runs this at create).

Error codes and the BOM message are Azure's documented ones (how-to-batch-content, "Error codes" and "Known issues").
Our assumptions: a missing/empty ``custom_id``, a method other than POST or a body that is not an object is
``invalid_request``; a line without a string ``body.model`` is ``model_not_found``; blank lines are skipped; a BOM is
``invalid_request`` (Azure documents only its message); at most ``MAX_REPORTED_ERRORS`` errors are listed.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

BOM = b"\xef\xbb\xbf"
CHAT_URLS = ("/chat/completions", "/v1/chat/completions")  # the older docs' form and the v1 form
RESPONSES_URLS = ("/v1/responses",)
URLS = CHAT_URLS + RESPONSES_URLS  # a file's lines all name one of these (url_mismatch otherwise)
MAX_REPORTED_ERRORS = 100
BOM_MESSAGE = (
    "Validation failed: A valid model deployment name couldn't be extracted from the input file. Please ensure that "
    "each row in the input file has a valid deployment name specified in the 'model' field, and that the deployment "
    "name is consistent across all rows."
)


@dataclass(frozen=True)
class Request:
    """One valid line: its 1-based line number, ``custom_id``, ``url`` and the chat completions or Responses
    ``body``."""

    line: int
    custom_id: str
    url: str
    body: dict[str, Any]

    @property
    def deployment(self) -> str:
        return str(self.body["model"])


def error(code: str, message: str, *, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    """One entry of a failed batch's ``errors.data`` (the SDK's ``BatchError``)."""
    return {"code": code, "message": message, "param": param, "line": line}


def parse(
    data: bytes, max_requests: int, deployments: Collection[str], batch_deployments: Mapping[str, int | None]
) -> tuple[list[Request], list[dict[str, Any]]]:
    """The file's requests and its validation errors (any error fails the whole batch, as in Azure).

    ``deployments``: every deployment of the resource; ``batch_deployments``: those of type Global Batch."""
    if data.startswith(BOM):  # Azure refuses UTF-8 with BOM, with a message about the deployment name
        return [], [error("invalid_request", BOM_MESSAGE)]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [], [error("invalid_json_line", "The input file is not valid UTF-8.")]
    numbered = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not numbered:
        message = "The input file is empty. Please ensure that the batch contains at least one request."
        return [], [error("empty_file", message)]
    if len(numbered) > max_requests:
        message = f"The number of requests in the input file exceeds the maximum allowed value of {max_requests:,}."
        return [], [error("too_many_tasks", message)]
    requests: list[Request] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, line in numbered:
        request = _request(number, line)
        if isinstance(request, Request):
            if requests:  # the later lines must match the first (model_mismatch), so only it is looked up
                errors.extend(_against_file(request, requests[0], seen))
            else:
                errors.extend(_deployment(request, deployments, batch_deployments))
            seen.add(request.custom_id)
            requests.append(request)
        else:
            errors.append(request)
    return requests, errors[:MAX_REPORTED_ERRORS]


def _request(number: int, line: str) -> Request | dict[str, Any]:
    """The line as a Request, or the one error that stops it being one."""
    try:
        value = json.loads(line)
    except ValueError:
        return error("invalid_json_line", f"Line {number} is not valid JSON.", line=number)
    if not isinstance(value, dict):
        return error("invalid_request", f"Line {number} is not a JSON object.", line=number)
    custom_id, body = value.get("custom_id"), value.get("body")
    if not isinstance(custom_id, str) or not custom_id:
        return error("invalid_request", "'custom_id' is required and must be a string.", line=number, param="custom_id")
    if value.get("method") != "POST":
        return error("invalid_request", "'method' must be 'POST'.", line=number, param="method")
    if value.get("url") not in URLS:
        message = f"'url' must be one of {', '.join(URLS)}."
        return error("url_mismatch", message, line=number, param="url")
    if not isinstance(body, dict):
        return error("invalid_request", "'body' is required and must be an object.", line=number, param="body")
    if not isinstance(body.get("model"), str):
        return error("model_not_found", "'body.model' must name a deployment.", line=number, param="body.model")
    return Request(number, custom_id, str(value["url"]), body)


def _against_file(request: Request, first: Request, seen: set[str]) -> list[dict[str, Any]]:
    """What is wrong with the line given the lines before it: one url, one deployment, unique custom_ids."""
    errors: list[dict[str, Any]] = []
    number = request.line
    if request.custom_id in seen:
        message = f"The custom ID '{request.custom_id}' is a duplicate of the custom ID in another request."
        errors.append(error("duplicate_custom_id", message, line=number, param="custom_id"))
    if request.url != first.url:
        message = f"The url '{request.url}' doesn't match the rest of the file ('{first.url}')."
        errors.append(error("url_mismatch", message, line=number, param="url"))
    if request.deployment != first.deployment:
        message = (
            f"The model deployment name '{request.deployment}' doesn't match the rest of the file "
            f"('{first.deployment}'). All requests in a batch must name the same deployment."
        )
        errors.append(error("model_mismatch", message, line=number, param="body.model"))
    return errors


def _deployment(
    request: Request, deployments: Collection[str], batch_deployments: Mapping[str, int | None]
) -> list[dict[str, Any]]:
    name, number = request.deployment, request.line
    if name not in deployments:
        message = f"The model deployment '{name}' was not found."
        return [error("model_not_found", message, line=number, param="body.model")]
    if name not in batch_deployments:
        message = f"The deployment '{name}' is not a Global Batch deployment (its SKU must be globalbatch)."
        return [error("invalid_request", message, line=number, param="body.model")]
    return []
