"""The running emulator's mutable state: config, role grants, rate windows, fault RNG and counters."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any

from emulators.aoai import rates, tiers
from emulators.aoai.batches import BatchStore
from emulators.aoai.config import BatchConfig, Deployment, EmulatorConfig, Outage, OutageMode
from emulators.aoai.models import model_for
from emulators.aoai.response_store import ResponseStore

REQUEST_LOG_SIZE = 200_000  # the newest data-plane requests kept in ``EmulatorState.requests``


@dataclass(frozen=True)
class RecordedRequest:
    """One data-plane request as the emulator answered it, for tests to assert on what happened rather than on
    how fast: when it arrived and when its answer was ready (epoch seconds, the clock grants and outages use),
    its route, the deployment it named, its status (``"dropped"`` for a closed connection) and error code."""

    began: float
    ended: float
    method: str
    route: str
    deployment: str | None
    status: str
    code: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def error_code(body: bytes) -> str | None:
    """The ``error.code`` of an Azure-style JSON error body (None when there is none)."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return str(code) if code is not None else None


class EmulatorState:
    """Config, grants, sliding windows and counters; touched only from the server's event loop."""

    def __init__(self, config: EmulatorConfig, public_pem: bytes) -> None:
        self.config = config
        self.public_pem = public_pem
        self.rng = random.Random(config.fault_seed)
        self.windows: dict[str, rates.Window] = {}  # deployment -> its rate window
        self.closing = asyncio.Event()  # set on shutdown so stalls and latency end at once
        self.batches = BatchStore()  # the Files and Batches APIs' files and batches
        self.responses = ResponseStore()  # the Responses API's stored responses
        self.reset_stats()

    def reset_stats(self) -> None:
        self.by_status: Counter[str] = Counter()
        self.by_deployment: Counter[str] = Counter()
        self.by_route: Counter[str] = Counter()  # "POST /openai/v1/files"...: API calls, for the bench
        self.batches.reset_counters()
        self.responses.reset_counters()
        self.prompt_tokens = self.completion_tokens = self.reasoning_tokens = self.completions = 0
        self.by_tier: dict[str, Counter[str]] = {}  # tier -> answers and their tokens, both APIs
        self.flex_unavailable = 0  # flex 429s (capacity), apart from the quota's
        self.principals: set[str] = set()
        self.tokens: set[str] = set()
        self.requests: deque[RecordedRequest] = deque(maxlen=REQUEST_LOG_SIZE)  # oldest first

    def record(self, request: RecordedRequest) -> None:
        """Keep one answered data-plane request in ``requests`` (cleared with the stats)."""
        self.requests.append(request)

    def count_usage(self, tier: str, prompt: int, completion: int, reasoning: int) -> None:
        """Bill one answer served on ``tier`` (chat completion or response)."""
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.reasoning_tokens += reasoning
        self.by_tier.setdefault(tier, Counter()).update(
            answers=1, prompt_tokens=prompt, completion_tokens=completion, reasoning_tokens=reasoning
        )

    def settle_responses(self) -> None:
        """Bill the background responses that finished since last looked at (``response_store``)."""
        now = time.time()
        for stored in self.responses.settle(now):
            final = stored.final
            if stored.status(now) in ("completed", "incomplete"):  # failed and cancelled ones bill nothing
                self.count_usage(stored.tier, final.prompt_tokens, final.completion_tokens, final.reasoning_tokens)

    def stats(self) -> dict[str, Any]:
        self.settle_responses()
        return {
            "requests": sum(self.by_status.values()),
            "by_status": dict(self.by_status),
            "by_deployment": dict(self.by_deployment),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,  # reasoning tokens included, as Azure bills them
            "reasoning_tokens": self.reasoning_tokens,
            "throttled": self.by_status["429"] - self.flex_unavailable,  # the quota's 429s
            "flex_unavailable": self.flex_unavailable,
            "completions": self.completions,  # chat completions answered live (responses: "responses")
            "by_tier": {tier: {**counts, "price": tiers.PRICE[tier]} for tier, counts in sorted(self.by_tier.items())},
            "responses": self.responses.stats(),
            "principals": sorted(self.principals),
            "distinct_principals": len(self.principals),
            "distinct_tokens": len(self.tokens),
            "by_route": dict(self.by_route),
            "batch": self.batches.stats(time.time()),
        }

    def update_config(self, **changes: Any) -> EmulatorConfig:
        """Partial update (a given ``deployments`` or ``grants`` map replaces the old one); raises ValidationError."""
        self.replace_config(EmulatorConfig.model_validate({**self.config.model_dump(), **changes}))
        return self.config

    def replace_config(self, config: EmulatorConfig) -> None:
        # Any change restarts the fault sequence, so "this config" always means "these faults, in this order".
        self.config = config.model_copy(deep=True)
        self.rng = random.Random(config.fault_seed)

    def reset_responses(self) -> None:
        """Forget every stored response (their counters go with the stats)."""
        self.responses = ResponseStore()

    def reset_batches(self) -> None:
        """Forget every file and batch (the batch knobs stay)."""
        self.batches = BatchStore()

    def add_batch_deployment(
        self, name: str, model: str | None = None, enqueued_token_limit: int | None = None
    ) -> None:
        """Make ``name`` a Global Batch deployment holding at most ``enqueued_token_limit`` enqueued tokens (None =
        no limit); added (or given ``model``) if missing or ``model`` is given (default: ``models.model_for(name)``)."""
        deployments = self.config.model_dump()["deployments"]
        if model is not None or name not in deployments:
            deployments[name] = {**deployments.get(name, {}), "model": model or model_for(name)}
        batch = {
            **self.config.batch.model_dump(),
            "deployments": {**self.config.batch.deployments, name: enqueued_token_limit},
        }
        self.update_config(deployments=deployments, batch=batch)

    def update_batch_config(self, **changes: Any) -> BatchConfig:
        """Partial update of the batch knobs (``config.BatchConfig``; the others stay); raises ValidationError."""
        self.update_config(batch={**self.config.batch.model_dump(), **changes})
        return self.config.batch

    def update_deployment(self, name: str, **changes: Any) -> Deployment:
        """Partial update of one deployment (its other fields and the other deployments stay); raises KeyError
        for an unknown deployment, ValidationError for bad values."""
        deployments = self.config.model_dump()["deployments"]
        deployments[name] = {**deployments[name], **changes}
        self.update_config(deployments=deployments)
        return self.config.deployments[name]

    def fail_deployment(self, name: str, seconds: float, mode: OutageMode = "503") -> float:
        """Take ``name`` down for ``seconds`` from now (``Outage``); returns when it ends (epoch seconds)."""
        until = time.time() + seconds
        self.update_deployment(name, outage={"mode": mode, "until": until})
        return until

    def outage(self, deployment: str) -> Outage | None:
        """The deployment's outage if it is in effect right now."""
        spec = self.config.deployments.get(deployment)
        outage = spec.outage if spec is not None else None
        return outage if outage is not None and time.time() < outage.until else None

    def grant(self, principal_id: str, delay_seconds: float = 0) -> float:
        """Assign the role; like Azure RBAC it only takes effect after ``delay_seconds`` (propagation)."""
        effective_at = time.time() + delay_seconds
        self.config.grants = {**self.config.grants, principal_id: effective_at}
        return effective_at

    def revoke(self, principal_id: str) -> bool:
        grants = dict(self.config.grants)
        found = grants.pop(principal_id, None) is not None
        self.config.grants = grants
        return found

    def has_role(self, principal_id: str) -> bool:
        effective_at = self.config.grants.get(principal_id)
        return self.config.grant_any or (effective_at is not None and effective_at <= time.time())

    def quota(self, deployment: str) -> rates.Quota:
        spec = self.config.deployments.get(deployment)
        return rates.Quota(
            tpm=(spec and spec.tpm) or self.config.tpm,
            rpm=(spec and spec.rpm) or self.config.rpm,
            span=self.config.rate_window_seconds,
        )

    def _window(self, deployment: str, now: float) -> rates.Window:
        return rates.expire(self.windows.setdefault(deployment, deque()), now, self.config.rate_window_seconds)

    def admit(self, deployment: str, estimate: int) -> tuple[float, str] | None:
        """Charge the deployment's sliding window, or return (seconds until enough of it frees up, which limit)."""
        now = time.monotonic()
        return rates.admit(self._window(deployment, now), self.quota(deployment), estimate, now)

    def rate_headers(self, deployment: str) -> dict[str, str]:
        """The ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers for the deployment right now."""
        now = time.monotonic()
        accurate = rates.headers(self._window(deployment, now), self.quota(deployment), now)
        spec = self.config.deployments.get(deployment)
        return rates.unreported(accurate) if spec is not None and spec.unreported_rate_headers else accurate

    async def sleep(self, seconds: float) -> bool:
        """Sleep without blocking the loop; False if the server began shutting down meanwhile."""
        if seconds <= 0:
            return not self.closing.is_set()
        try:
            await asyncio.wait_for(self.closing.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False
