"""The worker's own Azure OpenAI client (``Runtime``: v1 endpoint, Entra token provider as api_key)
asks for one token per process however many jobs it runs, with a managed identity and with
``az login``, and never sends an ``api-key`` header."""

from __future__ import annotations

import asyncio

import pytest

from emulators.stack.services import DEPLOYMENT, AzureCli, IdentityEndpoint, OpenAIEmulator, base_settings
from shared.connections import Runtime

pytestmark = pytest.mark.e2e  # 2,000 model calls: a few seconds
CALLS = 1000


async def run_calls(runtime: Runtime) -> None:
    async def one(i: int) -> str:
        completion = await runtime.openai.chat.completions.create(
            model=DEPLOYMENT,
            messages=[{"role": "user", "content": f"Question {i}?"}],
            max_completion_tokens=64,
            reasoning_effort="none",
        )
        return completion.choices[0].message.content or ""

    for start in range(0, CALLS, 100):  # 100 in flight, as several host batches would be
        answers = await asyncio.gather(*(one(i) for i in range(start, start + 100)))
        assert all(answers)


async def test_one_token_for_a_thousand_calls_with_a_managed_identity(
    aoai: OpenAIEmulator, names: dict[str, str], managed_identity: IdentityEndpoint
) -> None:
    before = managed_identity.tokens_issued()
    runtime = Runtime.from_env(
        {**base_settings(aoai, names), **managed_identity.env, "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    )
    try:
        await run_calls(runtime)
    finally:
        await runtime.close()
    assert managed_identity.tokens_issued() - before == 1
    stats = aoai.stats()
    assert stats["completions"] == CALLS and stats["principals"] == [runtime.identity["oid"]]


async def test_one_az_run_for_a_thousand_calls_on_a_laptop(
    aoai: OpenAIEmulator, names: dict[str, str], azure_cli: AzureCli
) -> None:
    runtime = Runtime.from_env({**base_settings(aoai, names), "AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    try:
        await run_calls(runtime)
    finally:
        await runtime.close()
    assert azure_cli.invocations() == 1
    assert aoai.stats()["completions"] == CALLS
