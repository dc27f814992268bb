"""One limit of a deployment (tokens or requests) as its last response told it, and how much of it a gate may
take now: its share of what the window frees, less what it admitted since (the module docstring of
``shared.pacing``, **Budget** and **Unknown is not zero**)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from shared.pacing.headers import count, parse_duration

POLL = 0.25  # seconds between a waiter's re-checks
STALE = 1.0  # seconds a remaining-* value with no reset time of its own is believed
MIN_SHARE = 0.05  # least part of the deployment's refill a busy gate counts on (a newcomer among ~20 others)
HEADROOM = 0.97  # of a limit the gates aim to fill: the rest absorbs what their estimates get wrong
GROWTH = 3  # a gate admits at most this many times what it had in the window when last told (slow start)


@dataclass(slots=True)
class Charge:
    """One call's charge to its deployment's window: ``at`` admission, then when it went out on the wire."""

    at: float
    tokens: int


Own = deque[Charge]  # the calls a gate admitted, oldest first


@dataclass
class Limit:
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


def read_limit(budget: Limit, headers: Mapping[str, str], now: float) -> float | None:
    """Update ``budget`` from one response's headers; returns the reset time they gave, if any."""
    kind = budget.kind
    remaining = count(headers.get(f"x-ratelimit-remaining-{kind}"))
    reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
    if remaining is None or (remaining == 0 and not reset):
        return None  # unknown (missing, -1, or the quirk's bare 0): keep what is known, which expires on its own
    budget.remaining, budget.limit = remaining, count(headers.get(f"x-ratelimit-limit-{kind}")) or None
    budget.seen, budget.until, budget.refills = now, now + (reset if reset else STALE), bool(reset)
    return reset or None
