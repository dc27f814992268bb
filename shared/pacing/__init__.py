"""Pacing on the service's own numbers: one admission gate per deployment, shared by every invocation
in the process, in front of every model call.

Azure OpenAI charges a request at admission (prompt estimate + output budget) and says, on every
response, what the deployment has left (``x-ratelimit-remaining-tokens`` / ``-requests``) and when
that resets (``x-ratelimit-reset-*``). Those numbers describe the deployment's *global* quota, so
instances that each follow them converge without talking to each other.

How a ``Gate`` decides (``Gate.admit``):

- **Hold.** A 429 holds the whole gate (every waiter, not just the call that got it) until its
  ``retry-after-ms`` / ``retry-after``, capped by ``max_hold`` (``THROTTLE_MAX_DELAY_SECONDS``). A 429
  without a usable retry-after (missing, ``0``, negative, not a number, over a day) holds for the
  longer of its reset headers, else ``DEFAULT_BACKOFF`` seconds.
- **Budget.** The last response said how much of the deployment's window is used (limit - remaining).
  That use frees up as it leaves the window; the gate assumes it leaves as its *own* calls of then do
  (each ``span`` = the longest reset seen, + ``EDGE``, after it went out on the wire): exact for one
  instance, and for many alike their calls bunch where its own do. (With no calls of its own in the
  window, linearly until the reset time.) Of what is free below ``HEADROOM`` (97 %) of the limit, the
  gate counts on its share: its own calls over all the window held (at least ``MIN_SHARE``; 1 alone),
  less what it admitted since the response. The shares of all instances add up to one, so together they
  admit about what the deployment frees, without talking to each other. A gate also takes at most
  ``GROWTH`` times what it had in the window (slow start: instances starting together see an empty
  window). Else the caller waits until it would, re-checking every ``POLL`` seconds (a newer response
  may say more). A request larger than the deployment's whole limit is let through: only the service
  can refuse it, and waiting would not help.
- **Probe.** Until a gate has heard a single response it knows nothing, and a burst of invocations
  starting together would all be sent blind. So the first call goes alone and the others wait for its
  answer (at most ``PROBE`` seconds, or until it fails without one); from then on only the headers
  decide. This costs one model latency per deployment per process, once.
- **Unknown is not zero.** A header that is missing, ``-1``, unparsable, or ``0`` without a positive
  reset time of its own (the quirk of answers that carry ``0`` and no retry-after) leaves that budget
  unknown, and an unknown budget admits. What the headers said expires at their reset time, or
  ``STALE`` seconds after they arrived when they gave none, so a gate never stalls on old news.
  With no headers at all (an unlimited emulator deployment, PTU) the gate, past its probe, only ever
  charges and releases: it admits at once, and only a 429 makes it wait.
- **Bound.** A caller waits at most ``wait`` seconds (``MODEL_ADMISSION_WAIT_SECONDS``; the host keeps
  renewing the message's visibility meanwhile). When a hold ends after that bound it gives up at once
  rather than sleeping for nothing (a budget may free up before its reset, so that wait runs to the
  bound); either way it raises
  ``AdmissionTimeout`` carrying the time still to wait, which the worker turns into a throttled
  re-enqueue. The worker skips the gate entirely when the bound is 0 (pacing off).
- **Shared.** With ``PACING_SHARED_BUDGET`` the token budget is instead a lease claimed from one ledger per
  deployment that every instance writes (``shared.budget``); hold, probe and the request budget stay as above,
  and while the store fails the gate counts on its share as described here.
- **Retry.** A 429 to a call the gate admitted is not retried by the SDK (the response hook sets
  ``x-should-retry: false``): its retry would go round the gate, at the same moment as every call
  throttled with it. The worker sends it through the gate again (which holds for the retry-after), or to
  the pool's next deployment.

Requests and responses reach the gate through httpx hooks (``Pacer.on_request`` dates a call's charge
when it goes out; ``Pacer.on_response``), which see every
response, the 429s the SDK retries by itself included (a raw-response wrapper sees only the last).
The call's own ticket travels in a context variable, so the hook knows which in-flight charge its
headers now include and stops counting it twice. Admission is not FIFO: waiters re-check in turn and
the first to find room takes it; no await separates a check from its charge.

Estimates (``estimate_tokens``) follow Azure's admission count: per message 3 tokens of framing +
characters/4, 3 more priming the reply, plus ``max_completion_tokens``, or ``DEFAULT_OUTPUT_BUDGET``
(4096) when the job sets none: Azure then charges a default of its own that it does not publish per
model, and 4096 is what the local emulator charges; erring high only makes the gate more careful.
The 1 s / 10 s RPM sub-windows are not modelled: the remaining-requests header is honoured as given.

By concept: ``headers`` (estimates and what a response's headers and 429s say), ``limits`` (one limit as
last told, and a gate's share of it), ``gate`` (``Gate``, ``Ticket``, ``AdmissionTimeout``) and ``pacer``
(``Pacer``: the gates of the process and the httpx hooks).
"""

from shared.pacing.gate import (
    EDGE,
    HELD,
    PROBE,
    SHARING,
    SPAN,
    AdmissionTimeout,
    Clock,
    Gate,
    Sleep,
    Ticket,
)
from shared.pacing.headers import (
    ABSURD,
    DEFAULT_BACKOFF,
    DEFAULT_OUTPUT_BUDGET,
    QUOTA_CODE,
    capacity_refusal,
    estimate_tokens,
    origin,
    parse_duration,
    retry_after,
)
from shared.pacing.limits import GROWTH, HEADROOM, MIN_SHARE, POLL, STALE, Charge, Own
from shared.pacing.pacer import Pacer

__all__ = [
    "ABSURD",
    "DEFAULT_BACKOFF",
    "DEFAULT_OUTPUT_BUDGET",
    "EDGE",
    "GROWTH",
    "HEADROOM",
    "HELD",
    "MIN_SHARE",
    "POLL",
    "PROBE",
    "QUOTA_CODE",
    "SHARING",
    "SPAN",
    "STALE",
    "AdmissionTimeout",
    "Charge",
    "Clock",
    "Gate",
    "Own",
    "Pacer",
    "Sleep",
    "Ticket",
    "capacity_refusal",
    "estimate_tokens",
    "origin",
    "parse_duration",
    "retry_after",
]
