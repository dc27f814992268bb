"""The wire: queue message bytes -> a job, a reference to one, or a refusal the worker stores.

``decode_body`` is the one boundary for untrusted bytes (plain or base64 JSON, checked for what Python
cannot take or give back); ``parse_job`` and ``parse_message`` validate against the contract
(``shared.jobs``) and turn every problem into ``JobRefused`` with a specific error code.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

from pydantic import ValidationError

from shared.jobs import JOB_ID_PATTERN, Job, JobReference, Parameters, RequeuedRef

# Deepest nesting a message may have. A job needs a handful of levels (a json_schema response format
# a few more); Python's parser and serialiser recurse, so deeper input could crash a delivery.
MAX_JSON_DEPTH = 64
_JSON_TYPES = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class JobRefused(ValueError):
    """The worker refuses this message: it can never become a valid job. ``code`` is the failed result's
    error code. (Control flow inside the worker; the producer raises ``shared.errors.InvalidJobError``
    before anything is sent.)"""

    def __init__(self, code: str, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.job_id = job_id


# JSON texts that are not objects but are also valid base64 ("null", "true", "1234"): read as JSON, so
# the sender hears "a job is a JSON object" rather than a confusing "not UTF-8".
_JSON_SCALAR = re.compile(rb"(null|true|false|-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?)")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def decode_body(body: bytes) -> Any:
    """Message bytes -> JSON value. Accepts plain JSON and base64-encoded JSON (line breaks allowed).

    The one boundary for untrusted bytes: whatever is wrong with them becomes ``JobRefused`` with a
    specific code, never another exception, and what it returns can be serialised again (so the result
    that echoes it can always be written).
    """
    text = _unwrap(body)
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobRefused("invalid_utf8", f"the message is not UTF-8 (byte {exc.start}); send UTF-8 JSON") from exc
    _check_depth(decoded)
    try:
        value = json.loads(decoded, object_pairs_hook=_object, parse_constant=_no_constant, parse_float=_finite_float)
    except JobRefused:
        raise
    except json.JSONDecodeError as exc:
        raise JobRefused(
            "invalid_json", f"the message is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    except ValueError as exc:  # Python refuses integers of more than 4,300 digits
        raise JobRefused("number_too_large", f"a number in the message is too large: {exc}") from exc
    except RecursionError as exc:  # not reachable after _check_depth; kept so no input can crash a delivery
        raise JobRefused("too_deep", f"the message nests deeper than {MAX_JSON_DEPTH} levels") from exc
    if "\\u" in decoded:  # only an escape can produce a lone surrogate, which no UTF-8 writer accepts
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise JobRefused(
                "invalid_text", "the message contains a lone UTF-16 surrogate escape (e.g. \\ud800)"
            ) from exc
    return value


def _unwrap(body: bytes) -> bytes:
    """Plain JSON as is; base64 (with or without line breaks every 76 characters) decoded."""
    text = body.strip().removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark from some editors
    if not text or text[:1] in (b"{", b"[", b'"') or _JSON_SCALAR.fullmatch(text):
        return text
    try:
        decoded = base64.b64decode(b"".join(text.split()), validate=True).strip()
    except (binascii.Error, ValueError):
        return text  # not base64 either: report it as what it most likely is, bad JSON
    if not decoded:
        raise JobRefused("invalid_json", "the message is base64 of nothing")
    return decoded


def _check_depth(text: str) -> None:
    """Refuse deep nesting before parsing (the parser and serialiser recurse), cheaply: the usual job
    has too few brackets to be too deep, counted over the raw text (an upper bound, since brackets
    inside strings count too); only otherwise are strings skipped and the brackets walked."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return
    skeleton = _JSON_STRING.sub("", text)
    depth = 0
    for bracket in _BRACKETS.finditer(skeleton):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise JobRefused("too_deep", f"the message nests deeper than {MAX_JSON_DEPTH} levels")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):  # the parser would keep the last silently
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JobRefused("duplicate_key", f"key {key!r} appears more than once in one object")
            seen.add(key)
    return value


def _no_constant(name: str) -> Any:
    raise JobRefused("invalid_json", f"{name} is not a JSON number; send a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JobRefused("number_too_large", f"the number {text[:40]} is too large for a 64-bit float")
    return value


_OUT_OF_RANGE = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _describe(error: ValidationError) -> tuple[str, str]:
    """First validation error -> (code, message naming the field)."""
    first = error.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in first["loc"]) or "job"
    kind = first["type"]
    if kind == "extra_forbidden":
        if first["loc"][:1] == ("parameters",):
            allowed = ", ".join(Parameters.model_fields)
            return "parameter_not_allowed", f"parameter '{first['loc'][-1]}' is not allowed (allowed: {allowed})"
        return "unknown_field", f"unknown field '{loc}'"
    if first["loc"][:1] == ("parameters",) and kind in _OUT_OF_RANGE:
        return "invalid_parameter", f"{loc}: {first['msg']} (the range Azure OpenAI takes)"
    if first["loc"][:1] == ("id",):
        return "invalid_id", "id must be 1-128 characters from A-Z a-z 0-9 _ -"
    if first["loc"][:1] == ("reply_to",):
        return "reply_to_not_allowed", "reply_to must be a queue name (3-63 lower-case letters, digits, hyphens)"
    message = first["msg"].removeprefix("Value error, ")
    text = f"{loc}: {message}" if first["loc"] else message
    if kind in ("string_too_short", "string_pattern_mismatch", "too_short") and first["loc"][:1] in (
        ("prompt",),
        ("messages",),
    ):
        return "empty_prompt", text
    if kind == "invalid_text":
        return "invalid_text", text
    if kind == "batch_parameter":
        return "batch_parameter_not_allowed", message
    if kind.endswith(("_type", "_parsing")) or kind == "literal_error":
        return "wrong_type", text
    if "exactly one of 'prompt' or 'messages'" in message:
        return "prompt_or_messages", message
    return "invalid_job", text


def parse_job(body: bytes) -> Job:
    """Decode and validate one job; raise JobRefused with a specific code."""
    return _validate_job(decode_body(body))


def parse_message(body: bytes) -> Job | JobReference | RequeuedRef:
    """A queue message: a job, a claim-check reference to one, or the worker's own re-enqueued
    reference (decoded once)."""
    value = decode_body(body)
    for field, model in (("payload", JobReference), ("requeued", RequeuedRef)):
        if isinstance(value, dict) and field in value:  # a job has no such field
            try:
                return model.model_validate(value)
            except ValidationError as exc:
                _, message = _describe(exc)
                raise JobRefused("invalid_reference", f"reference: {message}", job_id=_valid_id(value)) from exc
    return _validate_job(value)


def _valid_id(value: dict[str, Any]) -> str | None:
    raw_id = value.get("id")
    return raw_id if isinstance(raw_id, str) and re.fullmatch(JOB_ID_PATTERN, raw_id) else None


def _validate_job(value: Any) -> Job:
    if not isinstance(value, dict):
        raise JobRefused("invalid_job", f"a job is a JSON object, got {_JSON_TYPES.get(type(value), 'a value')}")
    try:
        return Job.model_validate(value)
    except ValidationError as exc:
        code, message = _describe(exc)
        raise JobRefused(code, message, job_id=_valid_id(value)) from exc


__all__ = ["MAX_JSON_DEPTH", "JobRefused", "decode_body", "parse_job", "parse_message"]
