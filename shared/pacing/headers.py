"""What a request costs and what a response says: the admission estimate, the reset and retry-after durations,
a 429's meaning, and the endpoint part of a gate's key."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

DEFAULT_OUTPUT_BUDGET = 4096  # output tokens charged for a request that sets no max_completion_tokens
DEFAULT_BACKOFF = 2.0  # seconds a 429 without a usable retry-after (or reset header) holds the gate
ABSURD = 86_400.0  # a retry-after or reset beyond a day is treated as missing

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def estimate_tokens(messages: list[dict[str, Any]], max_completion_tokens: int | None) -> int:
    """What Azure charges at admission: the prompt estimate plus the output budget."""
    prompt = sum(3 + math.ceil(len(str(m.get("content") or "")) / 4) for m in messages) + 3
    return prompt + (max_completion_tokens or DEFAULT_OUTPUT_BUDGET)


def parse_duration(value: str | None) -> float | None:
    """Seconds from a reset header: Go-style (``6s``, ``1m0s``, ``250ms``, ``1h2m3.5s``) or plain seconds.
    None when missing, negative or unparsable."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            return None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    return seconds if 0 <= seconds <= ABSURD and math.isfinite(seconds) else None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """A 429's ``retry-after-ms`` (preferred, as the SDK does) or ``retry-after`` in seconds, if usable."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            seconds = float(headers.get(name) or "") / scale
        except ValueError:
            continue
        if 0 < seconds <= ABSURD:
            return seconds
    return None


# Azure's code on a quota 429 ("Requests to ... have been limited"). A 429 with another code to a flex request is
# flex capacity running short (the code Azure gives it is unconfirmed; "ResourceUnavailable" as OpenAI's): not
# billed, not the deployment's quota, so it holds no gate (shared/tiers.py decides what the job does).
QUOTA_CODE = "429"


def capacity_refusal(tier: object, code: object) -> bool:
    """Whether a 429 with error ``code`` to a request for ``tier`` is flex capacity, not the shared quota."""
    return tier == "flex" and code != QUOTA_CODE


def origin(url: str) -> str:
    """``scheme://host[:port]``, lower-cased: the endpoint part of a gate's key."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def count(value: str | None) -> int | None:
    """A non-negative whole number from a header (``-1``, missing or unparsable: None)."""
    try:
        number = int(float(value or ""))
    except ValueError:
        return None
    return number if number >= 0 else None
