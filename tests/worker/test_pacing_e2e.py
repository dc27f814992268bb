"""Pacing end to end: the worker's real v1 client (real openai SDK, managed-identity token) against the
Azure OpenAI emulator with a small token limit and a short rate window; storage in process
(tests/worker/fakes.py). The same burst is run with the gate and with pacing off
(``MODEL_ADMISSION_WAIT_SECONDS=0``) so the 429 counts compare like for like."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

from emulators.aoai import estimate_request_tokens
from emulators.stack.services import SECOND_DEPLOYMENT, IdentityEndpoint, OpenAIEmulator
from shared.connections import create_openai_client
from shared.constants import COGNITIVE_SERVICES_SCOPE
from shared.jobs import Result
from shared.worker import handle
from tests.worker.fakes import FakeWorld, Message, fake_world

pytestmark = pytest.mark.e2e

JOBS = 24
OUTPUT = 100  # max_completion_tokens of each job
PROMPT = "Summarise the queue."
HOLD = 6  # seconds each 429 of the hold test says to wait (retry-after)


def job(i: int) -> dict[str, object]:
    return {"id": f"pace-{i}", "prompt": PROMPT, "parameters": {"max_completion_tokens": OUTPUT}}


CHARGE = estimate_request_tokens({"messages": [{"role": "user", "content": PROMPT}], "max_completion_tokens": OUTPUT})


@asynccontextmanager
async def worker(emulator: OpenAIEmulator, wait_seconds: int, retries: int = 3) -> AsyncIterator[FakeWorld]:
    """One worker instance (its own pacer) whose model client is the real one, fed to that pacer."""
    made = fake_world(
        AZURE_OPENAI_ENDPOINT=emulator.endpoint,
        AZURE_OPENAI_DEPLOYMENT=SECOND_DEPLOYMENT,  # a gpt-4.1-class model: all the budget goes to output
        AZURE_OPENAI_MAX_RETRIES=str(retries),
        MODEL_ADMISSION_WAIT_SECONDS=str(wait_seconds),
    )
    async with DefaultAzureCredential() as credential:
        provider = get_bearer_token_provider(credential, COGNITIVE_SERVICES_SCOPE)
        made.runtime.openai = create_openai_client(made.runtime.settings, provider, pacer=made.runtime.pacer)
        try:
            yield made
        finally:
            await made.runtime.openai.close()


@pytest.fixture
def emulator(aoai: OpenAIEmulator, managed_identity: IdentityEndpoint) -> OpenAIEmulator:
    return aoai


async def run(world: FakeWorld, spec: dict[str, object]) -> Result | None:
    return await handle(Message(json.dumps(spec).encode(), id=f"msg-{spec['id']}"), world.runtime)


async def burst(emulator: OpenAIEmulator, wait_seconds: int) -> tuple[list[Result | None], dict[str, object]]:
    emulator.reset()  # empty rate window and fresh stats, same config
    async with worker(emulator, wait_seconds) as world:
        results = await asyncio.gather(*(run(world, job(i)) for i in range(JOBS)))
    return results, emulator.stats()


@pytest.mark.slow(seconds=7)
async def test_a_burst_at_twice_the_limit_succeeds_with_far_fewer_429s(emulator: OpenAIEmulator) -> None:
    # The limit is half the burst's demand; the window is 2 s so quota frees up within the test.
    emulator.configure(tpm=JOBS * CHARGE // 2, rate_window_seconds=2, latency_ms=100)

    paced, paced_stats = await burst(emulator, wait_seconds=60)
    unpaced, unpaced_stats = await burst(emulator, wait_seconds=0)

    assert all(r is not None and r.status == "succeeded" for r in paced), [r and r.error for r in paced]
    assert paced_stats["completions"] == JOBS
    unpaced_429, paced_429 = int(unpaced_stats["throttled"]), int(paced_stats["throttled"])  # type: ignore[call-overload]
    print(f"429s for {JOBS} jobs at twice the limit: paced {paced_429}, unpaced {unpaced_429}")
    assert unpaced_429 >= JOBS // 2 - 2  # without the gate, the half that does not fit is refused (then retried)
    assert paced_429 <= 2 and paced_429 * 5 <= unpaced_429
    del unpaced  # unpaced jobs may end re-enqueued when the SDK's retries run out: only its 429s matter here


async def test_a_429_holds_the_other_invocations_for_its_retry_after(emulator: OpenAIEmulator) -> None:
    # Another instance spends nearly all of a 1000-token window behind this one's back; each 429 says 6 s. What
    # the emulator recorded shows the hold, whatever the machine's speed: after the 429, the next call of this
    # instance reached the service no sooner than 6 s after the 429 was answered.
    emulator.configure(tpm=1000, rate_window_seconds=3, retry_after_override_seconds=HOLD)
    emulator.reset()
    async with worker(emulator, 60, retries=0) as other:  # the other instance: one big call
        big = {"id": "big", "prompt": "x", "parameters": {"max_completion_tokens": 1000 - CHARGE // 2}}
        assert (spent := await run(other, big)) is not None and spent.status == "succeeded"
    before = len(emulator.requests())

    async with worker(emulator, 60) as world:
        first = asyncio.create_task(run(world, job(0)))  # sent at once (nothing known here): 429, hold 6 s
        await _until(lambda: int(emulator.stats()["throttled"]) >= 1, timeout=30)  # type: ignore[call-overload]
        others = [asyncio.create_task(run(world, job(i))) for i in range(1, 6)]
        results = await asyncio.gather(first, *others)

    throttled, *after = emulator.requests()[before:]
    assert throttled.status == "429", throttled
    held_until = throttled.ended + HOLD
    # Only the throttled call reached the service while the instance was held (the 429's own retry included).
    assert after and all(r.began >= held_until for r in after), [(r.began - throttled.ended, r.status) for r in after]
    assert all(r is not None and r.status == "succeeded" for r in results), [r and r.error for r in results]
    stats = emulator.stats()
    assert stats["completions"] == 7  # the big one, then all six
    assert int(stats["throttled"]) <= 3  # type: ignore[call-overload]  # the first call's, while the window drains


async def _until(condition: Callable[[], bool], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
