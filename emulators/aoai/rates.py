"""Azure OpenAI's per-deployment quotas: a sliding window of the requests admitted and the tokens charged."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

UNLIMITED_REPORTED = 1_000_000_000  # what x-ratelimit-remaining-* count down from when no limit is set

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


def remaining(window: Window, quota: Quota) -> dict[str, str]:
    """The ``x-ratelimit-remaining-*`` headers for an expired ``window``."""
    return {
        "x-ratelimit-remaining-requests": str(max(0, (quota.rpm or UNLIMITED_REPORTED) - len(window))),
        "x-ratelimit-remaining-tokens": str(max(0, (quota.tpm or UNLIMITED_REPORTED) - sum(n for _, n in window))),
    }
