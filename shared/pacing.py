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
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from shared.budget import SharedBudget

DEFAULT_OUTPUT_BUDGET = 4096  # output tokens charged for a request that sets no max_completion_tokens
DEFAULT_BACKOFF = 2.0  # seconds a 429 without a usable retry-after (or reset header) holds the gate
POLL = 0.25  # seconds between a waiter's re-checks
PROBE = 5.0  # seconds the first call of a gate waits alone for the service's numbers, at most
STALE = 1.0  # seconds a remaining-* value with no reset time of its own is believed
MIN_SHARE = 0.05  # least part of the deployment's refill a busy gate counts on (a newcomer among ~20 others)
SPAN = 60.0  # seconds of the rate window until reset headers show a longer one (Azure's TPM/RPM: per minute)
HEADROOM = 0.97  # of a limit the gates aim to fill: the rest absorbs what their estimates get wrong
GROWTH = 3  # a gate admits at most this many times what it had in the window when last told (slow start)
EDGE = 0.25  # seconds a call is counted in the window beyond it: it reached the service after it left the gate
ABSURD = 86_400.0  # a retry-after or reset beyond a day is treated as missing
HELD = "held after a 429"
SHARING = "waiting for a lease of the shared budget"

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


class AdmissionTimeout(Exception):
    """The gate would not admit the call within the wait bound; ``delay`` is the time still to wait."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(f"admission gate: {reason}; about {delay:.0f} s still to wait")
        self.delay = delay
        self.reason = reason


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


@dataclass
class Ticket:
    """One admitted call's charge; counted in flight until a response's headers include it."""

    gate: Gate
    tokens: int
    settled: bool = False
    charge: Charge | None = None


@dataclass(slots=True)
class Charge:
    """One call's charge to its deployment's window: ``at`` admission, then when it went out on the wire."""

    at: float
    tokens: int


Own = deque[Charge]  # the calls a gate admitted, oldest first


@dataclass
class _Budget:
    """What the last response said of one limit (tokens or requests), and until when to believe it."""

    kind: str = "tokens"
    remaining: int | None = None
    limit: int | None = None
    seen: float = 0.0  # (gate clock) when it was said
    until: float = 0.0  # when it expires: its reset time (the window is whole again), or seen + STALE
    refills: bool = False  # a reset time came with it: what is used frees up by then
    mine: int = 0  # of what was used then, how much this gate had admitted within the window

    def known(self, now: float) -> bool:
        return self.remaining is not None and now < self.until

    def cost(self, tokens: int) -> int:
        return tokens if self.kind == "tokens" else 1

    def allowance(self, now: float, own: Own, span: float) -> float:
        """What this gate may still admit now: its share of what the deployment has free, less what it
        admitted since the value was said (see ``_share`` and ``_used``)."""
        remaining = self.remaining or 0
        since = self.since(own)
        if self.limit is None:
            return remaining - since
        used = self.limit - remaining
        still = sum(self.cost(c.tokens) for c in own if now - span < c.at <= self.seen)
        fair = self._share(used) * (self.limit * HEADROOM - self._used(used, still, now)) - since
        return min(fair, self._growth() - since)

    def surely(self, own: Own) -> float:
        """The least share of what is left, less what this gate admitted since (no pass over the window): far
        from the limit (an unlimited deployment reports a huge one) it admits on this alone, before the
        share, the freeing and the slow start of ``allowance`` are worked out."""
        if self.limit is None:
            return (self.remaining or 0) - self.since(own)
        return MIN_SHARE * ((self.remaining or 0) - self.limit * (1 - HEADROOM)) - self.since(own)

    def since(self, own: Own) -> int:
        """What this gate admitted after the value was said (the newest calls: counted from the end)."""
        total = 0
        for charge in reversed(own):
            if charge.at <= self.seen:
                break
            total += self.cost(charge.tokens)
        return total

    def _growth(self) -> float:
        """Slow start: instances starting together each see the window nearly empty at first; growing by at
        most GROWTH per answer, each sees the others' use in the headers before it takes more than its share."""
        return self.mine * (GROWTH - 1) if self.mine else math.inf

    def wait(self, needed: int, now: float, own: Own, span: float) -> float:
        """Seconds until ``allowance`` covers ``needed``: it grows as this gate's own earlier calls leave the
        window (with none of them, linearly until the reset time); at the latest the reset time, when the
        value expires."""
        latest = max(self.until - now, POLL)
        if self.limit is None:
            return latest
        since = self.since(own)
        if self._growth() - since < needed:
            return POLL  # until the next answer says more of this gate's calls are in the window
        used = self.limit - (self.remaining or 0)
        room = self.limit * HEADROOM - (needed + since) / self._share(used)
        if self.mine == 0:  # linear: used * (1 - x) <= room
            if not self.refills or used <= 0 or room < 0:
                return latest
            at = self.seen + (1.0 - room / used) * (self.until - self.seen)
            return min(max(at - now, 0.0), latest)
        still = sum(self.cost(c.tokens) for c in own if now - span < c.at <= self.seen)
        for c in own:  # oldest first: each leaves the window span seconds after it was sent
            if c.at > self.seen:
                break
            if c.at + span <= now:
                continue
            still -= self.cost(c.tokens)
            if used * still / self.mine <= room:
                return c.at + span - now
        return latest

    def _share(self, used: int) -> float:
        """This instance's part of the deployment's window when it was said: its own charges over all (at
        least MIN_SHARE; 1 when it is the only user)."""
        if used <= 0 or self.mine >= used:
            return 1.0
        return max(self.mine / used, MIN_SHARE)

    def _used(self, used: int, still: int, now: float) -> float:
        """The deployment's use now of what was used when said: it frees up as this gate's own charges of
        then do, on the assumption that the others' were spread over the window like its own (exact for
        one instance; for many alike, their charges bunch where its own do). With none of its own, linearly
        to the reset time."""
        if self.mine > 0:
            return used * still / self.mine
        if self.refills and self.until > self.seen:
            return used * max(0.0, 1.0 - (now - self.seen) / (self.until - self.seen))
        return float(used)


@dataclass
class Gate:
    """The admission gate of one deployment (see the module docstring)."""

    clock: Clock = time.monotonic
    sleep: Sleep = asyncio.sleep
    max_hold: float = 300.0
    hold_until: float = 0.0
    tokens: _Budget = field(default_factory=lambda: _Budget("tokens"))
    requests: _Budget = field(default_factory=lambda: _Budget("requests"))
    in_flight: list[Ticket] = field(default_factory=list)
    heard: bool = False  # a response has been observed: until then one call at a time probes the service
    probe_sent: float = 0.0
    # The window is at least as long as the longest reset time still in force (a reset given at t says the
    # window lasts until t + reset; past that it says nothing, so one outlier widens the window only until
    # then). Kept as (until, reset), newest last, each longer than every later one: the longest is first.
    resets: deque[tuple[float, float]] = field(default_factory=deque)
    last_reset: float = 0.0  # the newest reset seen: the window's length when none is in force any more
    # ... and at most this: an answered call's reset time plus how long ago it went out (its charge is in the
    # window, so the window's newest charge is no older); equal to the window when it was the newest.
    span_bound: float = math.inf
    admitted: Own = field(default_factory=deque)  # (when, tokens) of the calls admitted here within the span
    shared: SharedBudget | None = None  # the deployment's budget shared by every instance (shared/budget.py)
    waiting: int = 0  # tokens of the calls waiting in ``acquire``: what a claim of the shared budget asks for

    async def acquire(self, tokens: int, *, wait: float) -> Ticket:
        """Admit a call estimated at ``tokens``, waiting up to ``wait`` seconds; raises AdmissionTimeout."""
        self.waiting += tokens
        try:
            return await self._acquire(tokens, self.clock() + wait)
        finally:
            self.waiting -= tokens

    async def _acquire(self, tokens: int, deadline: float) -> Ticket:
        while True:
            now = self.clock()
            needed, reason = self.wait_for(tokens, now)
            if reason == SHARING and self.shared is not None:
                if self.shared.claiming:  # another call of this gate claims for every waiter: wait for it
                    await self.shared.settled(POLL)
                else:
                    await self.shared.claim(self.waiting, tokens, self.tokens.limit or 0, self.window() + EDGE)
                now = self.clock()
                needed, reason = self.wait_for(tokens, now)
            if needed <= 0:
                charge = Charge(now, tokens)
                ticket = Ticket(self, tokens, charge=charge)
                if not self.heard and not self.in_flight:
                    self.probe_sent = now
                self.in_flight.append(ticket)
                self.admitted.append(charge)
                if self.shared is not None:
                    self.shared.spend(tokens)
                return ticket
            # A hold only ever grows: one that outlasts the bound is not worth waiting for. A budget may free
            # up sooner than computed (a newer response says so), so that wait runs to the bound.
            if now >= deadline or (reason == HELD and now + needed > deadline):
                raise AdmissionTimeout(max(needed, POLL), reason)
            await self.sleep(min(needed, POLL, deadline - now))

    def release(self, ticket: Ticket) -> None:
        """The call is over (answered or failed): its charge stops counting as in flight."""
        if ticket in self.in_flight:
            self.in_flight.remove(ticket)

    @asynccontextmanager
    async def admit(self, tokens: int, *, wait: float) -> AsyncIterator[Ticket]:
        """``acquire`` for the body of the block; the ticket is current (for the response hook) inside it."""
        ticket = await self.acquire(tokens, wait=wait)
        token = _CURRENT.set(ticket)
        try:
            yield ticket
        finally:
            _CURRENT.reset(token)
            self.release(ticket)

    def observe(self, status: int, headers: Mapping[str, str], ticket: Ticket | None = None) -> None:
        """Take in one response: its rate-limit headers and, for a 429, the hold."""
        now = self.clock()
        self.heard = True
        if ticket is not None and ticket.gate is self:
            ticket.settled = True  # these headers include its charge
        for budget in (self.tokens, self.requests):
            if (reset := _read(budget, headers, now)) is not None:
                self._reset_seen(reset, now)
                if status == 200 and ticket is not None and ticket.gate is self and ticket.charge is not None:
                    self.span_bound = min(self.span_bound, reset + now - ticket.charge.at)
            if budget.seen == now:
                # Its own calls still in the service's window (not the gate's padded span: those that left it
                # would be freed a second time when the gate sees them go).
                budget.mine = sum(budget.cost(c.tokens) for c in self.admitted if c.at > now - self.window())
        if status == 429:
            wait = retry_after(headers)
            if wait is None:
                resets = [parse_duration(headers.get(f"x-ratelimit-reset-{k}")) for k in ("tokens", "requests")]
                wait = max((r for r in resets if r), default=DEFAULT_BACKOFF)
            self.hold_until = max(self.hold_until, now + min(wait, self.max_hold))

    def _reset_seen(self, reset: float, now: float) -> None:
        while self.resets and self.resets[-1][1] <= reset:  # shorter and sooner over: never the longest again
            self.resets.pop()
        self.resets.append((now + reset, reset))
        self.last_reset = reset

    def window(self) -> float:
        """The rate window's length as the reset headers have shown it (``SPAN`` until they have)."""
        if not self.last_reset:
            return SPAN
        now = self.clock()
        while self.resets and self.resets[0][0] <= now:
            self.resets.popleft()
        longest = self.resets[0][1] if self.resets else self.last_reset
        return max(longest, self.span_bound) if math.isfinite(self.span_bound) else longest

    def needed(self, tokens: int, now: float | None = None) -> float:
        """Seconds before a call estimated at ``tokens`` would be admitted (0: now)."""
        return self.wait_for(tokens, self.clock() if now is None else now)[0]

    def wait_for(self, tokens: int, now: float) -> tuple[float, str]:
        """Seconds to wait before ``tokens`` may be admitted (0: now), and why."""
        if self.hold_until > now:
            return self.hold_until - now, HELD
        charged = [t for t in self.in_flight if not t.settled]
        if not self.heard and charged and now < self.probe_sent + PROBE:
            return self.probe_sent + PROBE - now, "waiting for the deployment's first answer"
        span = self.window() + EDGE
        while self.admitted and self.admitted[0].at <= now - span:
            self.admitted.popleft()
        sharing = self.shared is not None and self.tokens.limit is not None and self.shared.live()
        for budget in (self.tokens, self.requests):
            cost = budget.cost(tokens)
            if budget.limit is not None and cost > budget.limit:
                continue  # a call larger than the whole limit is the service's to refuse
            if sharing and budget is self.tokens and self.shared is not None and cost <= (budget.limit or 0) * HEADROOM:
                if self.shared.covers(cost):
                    continue  # booked: the ledger, not this instance's guess, says the window has room
                return max(self.shared.retry_in(), POLL / 10), SHARING
            if not budget.known(now):
                continue  # unknown admits
            if budget.surely(self.admitted) < cost and budget.allowance(now, self.admitted, span) < cost:
                wait = budget.wait(cost, now, self.admitted, span)
                return max(wait, POLL / 10), f"deployment's {budget.kind} used up for now"
        return 0.0, ""


def _read(budget: _Budget, headers: Mapping[str, str], now: float) -> float | None:
    """Update ``budget`` from one response's headers; returns the reset time they gave, if any."""
    kind = budget.kind
    remaining = _count(headers.get(f"x-ratelimit-remaining-{kind}"))
    reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
    if remaining is None or (remaining == 0 and not reset):
        return None  # unknown (missing, -1, or the quirk's bare 0): keep what is known, which expires on its own
    budget.remaining, budget.limit = remaining, _count(headers.get(f"x-ratelimit-limit-{kind}")) or None
    budget.seen, budget.until, budget.refills = now, now + (reset if reset else STALE), bool(reset)
    return reset or None


def _count(value: str | None) -> int | None:
    try:
        number = int(float(value or ""))
    except ValueError:
        return None
    return number if number >= 0 else None


_CURRENT: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("pacing_ticket", default=None)


async def _code(response: Any) -> object:
    """The error code of a (small) error response, read in the hook (httpx keeps the body for the SDK)."""
    try:
        await response.aread()
        return json.loads(response.content).get("error", {}).get("code")
    except (ValueError, AttributeError, TypeError):
        return None


class Pacer:
    """The process's gates, one per (endpoint, deployment), and the httpx hook that feeds them."""

    def __init__(
        self,
        *,
        max_hold: float = 300.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        share: Callable[[str, str], SharedBudget] | None = None,  # (endpoint, deployment) -> its shared budget
    ) -> None:
        self.max_hold, self.clock, self.sleep, self.share = max_hold, clock, sleep, share
        self.gates: dict[tuple[str, str], Gate] = {}

    def gate(self, endpoint: str, deployment: str) -> Gate:
        key = (origin(endpoint), deployment)
        if key not in self.gates:
            shared = self.share(*key) if self.share is not None else None
            self.gates[key] = Gate(clock=self.clock, sleep=self.sleep, max_hold=self.max_hold, shared=shared)
        return self.gates[key]

    async def on_request(self, request: Any) -> None:
        """httpx request hook: date the call's charge when it leaves (on a busy instance, later than admitted)."""
        ticket = _CURRENT.get()
        if ticket is not None and ticket.charge is not None:
            ticket.charge.at = ticket.gate.clock()

    async def on_response(self, response: Any) -> None:
        """httpx response hook: feed the gate of the deployment the request named (v1 body ``model``)."""
        request = response.request
        try:
            deployment = json.loads(request.content).get("model")
        except (ValueError, AttributeError, TypeError, RuntimeError):  # RuntimeError: a streamed upload (Files API)
            return
        if not isinstance(deployment, str):
            return
        ticket = _CURRENT.get()
        status = response.status_code
        tier = json.loads(request.content).get("service_tier")
        if status == 429 and tier == "flex" and capacity_refusal(tier, await _code(response)):
            status = 503  # flex capacity: the quota (one for every tier) is untouched, so no hold
        self.gate(str(request.url), deployment).observe(status, response.headers, ticket)
        if response.status_code == 429 and ticket is not None:
            # A call admitted by a gate is the gate's to retry (after the hold, by the budget): the SDK's own
            # retry would go round it, at the same moment as every other call throttled with it.
            response.headers["x-should-retry"] = "false"
