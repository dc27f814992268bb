"""Azure OpenAI's per-deployment quotas: a sliding window of the requests admitted and the tokens charged."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

UNLIMITED_REPORTED = 1_000_000_000  # x-ratelimit-limit-* when no limit is set; remaining-* count down from it

# (monotonic time admitted, tokens charged), oldest first.
Window = deque[tuple[float, int]]


@dataclass(frozen=True)
class Quota:
    """One deployment's limits: ``tpm`` tokens and ``rpm`` requests (None = unlimited) per ``span`` seconds."""

    tpm: int | None
    rpm: int | None
    span: float


def expire(window: Window, now: float, span: float) -> Window:
    """Drop the charges older than ``span`` seconds; returns ``window``."""
    while window and window[0][0] <= now - span:
        window.popleft()
    return window


def admit(window: Window, quota: Quota, estimate: int, now: float) -> tuple[float, str] | None:
    """Charge ``estimate`` tokens to an expired ``window``, or return (seconds until enough of it frees up,
    which limit: ``"call"`` or ``"token"``) and charge nothing."""
    waits = [
        wait for wait in (_call_wait(window, quota, now), _token_wait(window, quota, estimate, now)) if wait is not None
    ]
    if waits:
        return max(waits)
    window.append((now, estimate))
    return None


def _call_wait(window: Window, quota: Quota, now: float) -> tuple[float, str] | None:
    if quota.rpm is None or len(window) < quota.rpm:
        return None
    return window[len(window) - quota.rpm][0] + quota.span - now, "call"


def _token_wait(window: Window, quota: Quota, estimate: int, now: float) -> tuple[float, str] | None:
    used = sum(n for _, n in window)
    if quota.tpm is None or used + estimate <= quota.tpm:
        return None
    if estimate > quota.tpm:  # can never fit: 429 for a whole window until the caller lowers max_tokens
        return quota.span, "token"
    freed = 0
    for at, n in window:
        freed += n
        if used - freed + estimate <= quota.tpm:
            return at + quota.span - now, "token"
    return None


def headers(window: Window, quota: Quota, now: float) -> dict[str, str]:
    """The six ``x-ratelimit-*`` headers for an expired ``window``.

    ``limit`` is the deployment's rpm/tpm (``UNLIMITED_REPORTED`` when it has none, counted down like a limit);
    ``remaining`` is what the window has left; ``reset`` is the time until the window is back to its initial
    state (its newest charge expires), in OpenAI's duration form (``duration``). Requests and tokens are charged
    to one window, so both resets are equal.
    """
    requests, tokens = quota.rpm or UNLIMITED_REPORTED, quota.tpm or UNLIMITED_REPORTED
    reset = duration(window[-1][0] + quota.span - now if window else 0)
    return {
        "x-ratelimit-limit-requests": str(requests),
        "x-ratelimit-limit-tokens": str(tokens),
        "x-ratelimit-remaining-requests": str(max(0, requests - len(window))),
        "x-ratelimit-remaining-tokens": str(max(0, tokens - sum(n for _, n in window))),
        "x-ratelimit-reset-requests": reset,
        "x-ratelimit-reset-tokens": reset,
    }


def unreported(accurate: dict[str, str]) -> dict[str, str]:
    """The same headers as Azure sometimes sends them (openai/openai-dotnet#838): limit and remaining ``-1``,
    reset ``0``, carrying no information. The report shows the token trio; the request trio is assumed to match."""
    return {name: "0" if "-reset-" in name else "-1" for name in accurate}


def duration(seconds: float) -> str:
    """``seconds`` as OpenAI's reset headers write it (Go's duration form), rounded up to the millisecond:
    ``"0s"``, ``"250ms"``, ``"6s"``, ``"8.64s"``, ``"1m0s"``, ``"1h2m3.5s"``."""
    millis = max(0, math.ceil(round(seconds * 1000, 6)))
    if millis < 1000:
        return f"{millis}ms" if millis else "0s"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    text = f"{whole}.{fraction:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text
