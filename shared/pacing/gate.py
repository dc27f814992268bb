"""The admission gate of one deployment (``Gate``: hold, budget, probe, bound, shared; the module docstring of
``shared.pacing`` says how it decides) and the ticket of a call it admitted."""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from shared.budget import SharedBudget
from shared.pacing.headers import DEFAULT_BACKOFF, parse_duration, retry_after
from shared.pacing.limits import HEADROOM, POLL, Charge, Limit, Own, read_limit

PROBE = 5.0  # seconds the first call of a gate waits alone for the service's numbers, at most
SPAN = 60.0  # seconds of the rate window until reset headers show a longer one (Azure's TPM/RPM: per minute)
EDGE = 0.25  # seconds a call is counted in the window beyond it: it reached the service after it left the gate
HELD = "held after a 429"
SHARING = "waiting for a lease of the shared budget"

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class AdmissionTimeout(Exception):
    """The gate would not admit the call within the wait bound; ``delay`` is the time still to wait."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(f"admission gate: {reason}; about {delay:.0f} s still to wait")
        self.delay = delay
        self.reason = reason


@dataclass
class Ticket:
    """One admitted call's charge; counted in flight until a response's headers include it."""

    gate: Gate
    tokens: int
    settled: bool = False
    charge: Charge | None = None


@dataclass
class Gate:
    """The admission gate of one deployment (see the module docstring)."""

    clock: Clock = time.monotonic
    sleep: Sleep = asyncio.sleep
    max_hold: float = 300.0
    hold_until: float = 0.0
    tokens: Limit = field(default_factory=lambda: Limit("tokens"))
    requests: Limit = field(default_factory=lambda: Limit("requests"))
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
        token = CURRENT.set(ticket)
        try:
            yield ticket
        finally:
            CURRENT.reset(token)
            self.release(ticket)

    def observe(self, status: int, headers: Mapping[str, str], ticket: Ticket | None = None) -> None:
        """Take in one response: its rate-limit headers and, for a 429, the hold."""
        now = self.clock()
        self.heard = True
        if ticket is not None and ticket.gate is self:
            ticket.settled = True  # these headers include its charge
        for budget in (self.tokens, self.requests):
            if (reset := read_limit(budget, headers, now)) is not None:
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


# The ticket of the call this task is making: the response hook reads it to know which in-flight charge the
# headers now include.
CURRENT: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("pacing_ticket", default=None)
