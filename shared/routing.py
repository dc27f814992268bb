"""Which deployment serves a model call: the pool (``AZURE_OPENAI_POOL``), each entry's circuit, and failover.

A job's ``deployment`` names pool entries (``Settings.entries_for``); ``Router.call`` sends the call to the
best of them and, when that one fails in a way another deployment could fix, to the next:

- **Choice.** Among the entries not yet tried for this call whose circuit lets calls through, the
  highest-priority one whose pacing gate has room now (``shared.pacing``: what its last answers said is
  left, and no 429 hold); among equals, a weighted random pick. When none has room, the one that will have
  room soonest: the call then waits in its gate (within ``MODEL_ADMISSION_WAIT_SECONDS``) or is sent
  straight on when pacing is off.
- **Failover.** A 429 (the SDK's own short retries spent, or a wait longer than it honours), a 5xx, a
  timeout or a dropped connection moves the call to the next entry. While another entry remains, the call
  is sent without the SDK's own retries, so failover takes one failed request, not three. Anything else
  (400, 401, 403, 404) is the same everywhere (or a configuration fault to fix, not to hide): it is raised.
- **Circuits.** ``FAILURES_TO_OPEN`` failed calls in a row (5xx, timeouts, dropped connections) open an
  entry's circuit for ``OPEN_BASE`` seconds, doubling per re-opening up to ``OPEN_MAX``. While open, no call
  goes there; then one call probes it (half-open): an answer closes it, a failure re-opens it. 429s do not
  open circuits: the gate already holds the entry for the 429's retry-after, which routing respects.
- **Outage.** When no entry can take the call (every circuit open or probing), ``ModelUnavailable`` says
  how long until one half-opens, without sending anything. The worker re-enqueues the job (bounded by
  ``MODEL_OUTAGE_TOLERANCE_SECONDS``) instead of spending the message's delivery attempts.
- **Recovery.** When a circuit opens, ``Router.on_opened`` is called with its entry and the seconds until it
  half-opens; when a probe's answer closes it, ``Router.on_recovered`` (``shared.recovery`` probes it when it
  half-opens, then wakes the jobs waiting out that deployment's outage).

Circuits and gates are per process: each instance learns on its own, from its own calls.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import openai

from shared.pacing import AdmissionTimeout, Gate, Pacer
from shared.settings import PoolEntry

FAILURES_TO_OPEN = 3  # failed calls in a row (each after the SDK's own retries, if any) that open a circuit
OPEN_BASE = 5.0  # seconds a circuit first stays open
# Longest it stays open before the next probe: how late, at worst, a deployment's recovery is noticed (a
# failing probe per instance this often is nothing to a deployment that is down).
OPEN_MAX = 15.0

T = TypeVar("T")
Clock = Callable[[], float]


class ModelUnavailable(Exception):
    """No deployment the job may use can take a call now; ``delay``: seconds until one may (a probe)."""

    def __init__(self, delay: float, labels: list[str]) -> None:
        super().__init__(
            f"every deployment this job may use is failing ({', '.join(labels)}); the next probe in {delay:.0f} s"
        )
        self.delay = delay


@dataclass
class Circuit:
    """One pool entry's breaker: closed (calls flow), open (none until ``open_until``), half-open (one probe)."""

    failures: int = 0  # failed calls in a row
    openings: int = 0  # times opened in a row, for the growing open time
    open_until: float = 0.0  # 0: closed
    probing: bool = False  # half-open and its one probe is out

    def state(self, now: float) -> Literal["closed", "open", "half-open"]:
        if not self.open_until:
            return "closed"
        return "open" if now < self.open_until else "half-open"

    def admits(self, now: float) -> bool:
        """Whether a call may go to this entry now (closed, or half-open with no probe out)."""
        state = self.state(now)
        return state == "closed" or (state == "half-open" and not self.probing)

    def take(self, now: float) -> bool:
        """Send a call through; True when it is the half-open probe."""
        self.probing = self.state(now) == "half-open"
        return self.probing

    def succeeded(self) -> None:
        self.failures, self.openings, self.open_until, self.probing = 0, 0, 0.0, False

    def failed(self, now: float, *, probe: bool) -> None:
        if not probe and self.open_until:
            return  # sent before it opened (or beside its probe): already counted in the opening
        self.failures += 1
        if probe or self.failures >= FAILURES_TO_OPEN:
            self.open_until = now + min(OPEN_BASE * 2**self.openings, OPEN_MAX)
            self.openings += 1
            self.failures, self.probing = 0, False


@dataclass
class Route:
    """A pool entry with its circuit and its pacing gate."""

    entry: PoolEntry
    gate: Gate
    circuit: Circuit = field(default_factory=Circuit)


def failure_kind(exc: BaseException) -> Literal["throttled", "failed"] | None:
    """Whether another deployment might succeed where this one did not: throttled (429, or not admitted by
    the gate in time), failed (5xx, 408, timeout, dropped connection), or None (it would not)."""
    if isinstance(exc, openai.RateLimitError | AdmissionTimeout):
        return "throttled"
    if isinstance(exc, openai.APIConnectionError):  # timeouts included
        return "failed"
    if isinstance(exc, openai.APIStatusError) and (exc.status_code >= 500 or exc.status_code == 408):
        return "failed"
    return None


class Router:
    """The process's routes, one per pool entry; ``call`` sends one model call through them."""

    def __init__(
        self,
        pacer: Pacer,
        *,
        clock: Clock = time.monotonic,
        pick: Callable[[list[Route], list[float]], Route] = lambda r, w: random.choices(r, w)[0],
    ) -> None:
        self.pacer, self.clock, self.pick = pacer, clock, pick
        self.routes: dict[PoolEntry, Route] = {}
        self.on_recovered: Callable[[PoolEntry], None] | None = None  # called when a circuit closes again
        self.on_opened: Callable[[PoolEntry, float], None] | None = None  # called when one (re)opens

    def route(self, entry: PoolEntry) -> Route:
        if entry not in self.routes:
            self.routes[entry] = Route(entry, self.pacer.gate(entry.endpoint, entry.deployment))
        return self.routes[entry]

    def choose(self, entries: tuple[PoolEntry, ...], tokens: int, tried: list[Route]) -> Route | None:
        """The route for the next attempt (see the module docstring), or None when none may take it."""
        now = self.clock()
        routes = [r for r in map(self.route, entries) if r not in tried and r.circuit.admits(now)]
        if not routes:
            return None
        waits = {id(r): r.gate.needed(tokens, now) for r in routes}
        ready = [r for r in routes if waits[id(r)] <= 0]
        if not ready:
            return min(routes, key=lambda r: (waits[id(r)], r.entry.priority))
        best = [r for r in ready if r.entry.priority == ready[0].entry.priority]
        return best[0] if len(best) == 1 else self.pick(best, [r.entry.weight for r in best])

    def unavailable(self, entries: tuple[PoolEntry, ...]) -> ModelUnavailable:
        now = self.clock()
        routes = list(map(self.route, entries))
        delay = min((max(r.circuit.open_until - now, 0.0) for r in routes), default=OPEN_BASE)
        return ModelUnavailable(max(delay, 1.0), [r.entry.label for r in routes])

    async def call(
        self,
        entries: tuple[PoolEntry, ...],
        tokens: int,
        send: Callable[[Route, bool], Awaitable[T]],
    ) -> tuple[T, PoolEntry]:
        """Send through the best route, failing over as the module docstring says. ``send(route, last)``
        makes the call (``last``: no other route remains, so the SDK's own retries are worth having).
        Raises the last route's error, or ``ModelUnavailable`` when no route could be tried."""
        tried: list[Route] = []
        error: BaseException | None = None
        while (route := self.choose(entries, tokens, tried)) is not None:
            tried.append(route)
            probe = route.circuit.take(self.clock())
            last = self.choose(entries, tokens, tried) is None
            try:
                answer = await send(route, last)
            except Exception as exc:
                kind = failure_kind(exc)
                self._record(route, exc, kind, probe=probe)
                if kind is None:
                    raise
                error = exc
                continue
            finally:
                if probe and route.circuit.probing:  # cancelled mid-probe: let another call probe
                    route.circuit.probing = False
            self._succeeded(route)
            return answer, route.entry
        if error is not None:
            raise error
        raise self.unavailable(entries)

    def _record(self, route: Route, exc: Exception, kind: str | None, *, probe: bool) -> None:
        if isinstance(exc, AdmissionTimeout):
            return  # never sent: it says nothing of the deployment (a probe is freed for the next call)
        if kind == "failed":
            now, opened = self.clock(), route.circuit.open_until
            route.circuit.failed(now, probe=probe)
            if route.circuit.open_until != opened and self.on_opened is not None:
                self.on_opened(route.entry, route.circuit.open_until - now)
        elif kind is None or probe:
            self._succeeded(route)  # it answered: whatever the answer, the deployment is up
        # A 429 leaves the circuit as it was: the gate holds the entry for the retry-after.

    def _succeeded(self, route: Route) -> None:
        recovered = bool(route.circuit.open_until)
        route.circuit.succeeded()
        if recovered and self.on_recovered is not None:
            self.on_recovered(route.entry)

    def states(self) -> dict[str, Any]:
        """Each route's circuit state, for logs and tests."""
        now = self.clock()
        return {f"{r.entry.label}@{r.entry.endpoint}": r.circuit.state(now) for r in self.routes.values()}
