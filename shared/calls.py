"""The live lane's model calls: one job sent through the pool to the API each deployment serves.

``call_model`` sends a job to the best pool entry that serves it (``shared.apis.usable_entries``; failover and
circuits are ``shared.routing``'s, admission each deployment's pacing gate's) as a chat completion or a
response (``shared.apis``), on the tier ``shared.tiers`` picks, and returns the one ``Answer`` shape. A flex
request refused for capacity is waited for or resent on the default tier there too. ``retrieve`` and
``cancel`` reach a background response where it was started (``shared.background``).
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime
from typing import Literal

import openai

from shared import apis, pacing, telemetry, tiers
from shared.apis import Answer
from shared.connections import Runtime
from shared.jobs import Job, Redelivery
from shared.routing import Route
from shared.settings import PoolEntry

logger = logging.getLogger(__name__)


async def call_model(
    runtime: Runtime, job: Job, *, redelivery: Redelivery | None = None
) -> tuple[Answer, float, PoolEntry]:
    """One model call through the pool: the best deployment the job may use, failing over to the next;
    returns the answer, the seconds it took and the deployment that gave it. ``redelivery``: the job's retry
    history (when the flex window started). Raises ``tiers.FlexUnavailable`` to wait for flex capacity."""
    params = job.request_parameters()
    messages = job.chat_messages()
    tokens = pacing.estimate_tokens(messages, params.get("max_completion_tokens"))
    window = tiers.flex_window(job, runtime.settings, redelivery, _now())

    async def send(route: Route, last: bool) -> tuple[Answer, float]:
        entry, wait = route.entry, runtime.settings.model_admission_wait_seconds
        deadline = time.monotonic() + wait
        tier = tiers.tier_for(job, entry, window, _now())
        while True:
            try:
                left = max(deadline - time.monotonic(), 0.0) if wait else None
                async with _admitted(route.gate, tokens, wait=left):
                    with telemetry.current().chat(
                        deployment=entry.deployment,
                        endpoint=entry.endpoint,
                        parameters=params,
                        messages=messages,
                        api=entry.api,
                        service_tier=tier,
                    ) as call:
                        began = time.monotonic()
                        client = runtime.client(entry.endpoint, sdk_retries=last)
                        if entry.api == "responses":
                            background = apis.background_for(job, entry)
                            request = apis.responses_request(job, tier, background=background)
                            response = await client.responses.create(model=entry.deployment, **request)
                            answer, call_id = apis.response_answer(response), None
                        else:
                            completion = await client.chat.completions.create(
                                model=entry.deployment, **apis.chat_request(job, tier)
                            )
                            answer, call_id = apis.chat_answer(completion), completion.id
                        call.response(answer, response_id=call_id)
                        elapsed = time.monotonic() - began
                return answer, elapsed
            except openai.RateLimitError as exc:
                if pacing.capacity_refusal(tier, exc.code):  # flex capacity, not the quota: wait for it or fall back
                    tier = tiers.after_refusal(job, entry, pacing.retry_after(exc.response.headers), window, _now())
                    continue
                # Paced, a 429 is not retried by the SDK (shared/pacing/): with no other deployment to turn
                # to, wait in the gate again (it holds for the retry-after), within the same bound.
                if not (wait and last and time.monotonic() < deadline):
                    raise
                route.gate.observe(429, exc.response.headers)  # the hold, even if no response hook saw it

    entries = apis.usable_entries(job, runtime.settings)
    (answer, elapsed), entry = await runtime.router.call(entries, tokens, send)
    return answer, elapsed, entry


async def retrieve(runtime: Runtime, entry: PoolEntry, response_id: str) -> Answer:
    """A background response's state, from the resource that holds it (the SDK's own retries included)."""
    return await _reach(runtime, entry, response_id, "retrieve")


async def cancel(runtime: Runtime, entry: PoolEntry, response_id: str) -> Answer:
    """Cancel a background response (idempotent on Azure: a finished one is returned as it ended)."""
    return await _reach(runtime, entry, response_id, "cancel")


async def _reach(runtime: Runtime, entry: PoolEntry, response_id: str, action: Literal["retrieve", "cancel"]) -> Answer:
    """One call on a background response, traced: once it has ended, its span carries the answer's attributes
    and its usage is counted (a still-running one has neither)."""
    with telemetry.current().background(
        action, deployment=entry.deployment, endpoint=entry.endpoint, response_id=response_id
    ) as call:
        responses = runtime.client(entry.endpoint).responses
        response = await (responses.retrieve(response_id) if action == "retrieve" else responses.cancel(response_id))
        answer = apis.response_answer(response)
        call.response(answer)
        return answer


def _admitted(gate: pacing.Gate, tokens: int, *, wait: float | None) -> AbstractAsyncContextManager[object]:
    """Through the deployment's pacing gate within ``wait`` seconds (raises ``pacing.AdmissionTimeout``);
    straight on with pacing off (``MODEL_ADMISSION_WAIT_SECONDS`` 0: ``wait`` None)."""
    return nullcontext() if wait is None else gate.admit(tokens, wait=wait)


def _now() -> datetime:
    return datetime.now(UTC)


__all__ = ["call_model", "cancel", "retrieve"]
