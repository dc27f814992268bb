"""The process's gates, one per (endpoint, deployment), and the httpx hooks that feed them every response."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from shared.budget import SharedBudget
from shared.pacing.gate import CURRENT, Clock, Gate, Sleep
from shared.pacing.headers import capacity_refusal, origin


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
        ticket = CURRENT.get()
        if ticket is not None and ticket.charge is not None:
            ticket.charge.at = ticket.gate.clock()

    async def on_response(self, response: Any) -> None:
        """httpx response hook: feed the gate of the deployment the request named (v1 body ``model``)."""
        request = response.request
        try:
            body = json.loads(request.content)
            deployment, tier = body.get("model"), body.get("service_tier")
        except (ValueError, AttributeError, TypeError, RuntimeError):  # RuntimeError: a streamed upload (Files API)
            return
        if not isinstance(deployment, str):
            return
        ticket = CURRENT.get()
        status = response.status_code
        # The body of a 429 is read only for a flex request (the only one whose 429 may not be the quota's).
        if status == 429 and tier == "flex" and capacity_refusal(tier, await _code(response)):
            status = 503  # flex capacity: the quota (one for every tier) is untouched, so no hold
        self.gate(str(request.url), deployment).observe(status, response.headers, ticket)
        if response.status_code == 429 and ticket is not None:
            # A call admitted by a gate is the gate's to retry (after the hold, by the budget): the SDK's own
            # retry would go round it, at the same moment as every other call throttled with it.
            response.headers["x-should-retry"] = "false"
