"""Today's models through the worker's real client: the v1 endpoint of the Azure OpenAI emulator via
the real openai SDK with a managed-identity token, storage in process (tests/worker/fakes.py).

A reasoning deployment (gpt-5.4-mini) and a gpt-4.1-class one side by side: what each refuses
becomes a precise failed result, a budget spent on reasoning is a failure that says so, and the
reasoning tokens reach the result."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

from emulators.stack.services import DEPLOYMENT, SECOND_DEPLOYMENT, IdentityEndpoint, OpenAIEmulator
from shared.connections import create_openai_client
from shared.constants import COGNITIVE_SERVICES_SCOPE
from shared.jobs import Result
from shared.worker import handle
from tests.worker.fakes import FakeWorld, Message, fake_world


@pytest_asyncio.fixture
async def world(aoai: OpenAIEmulator, managed_identity: IdentityEndpoint) -> AsyncIterator[FakeWorld]:
    made = fake_world(
        AZURE_OPENAI_ENDPOINT=aoai.endpoint,
        AZURE_OPENAI_DEPLOYMENT=DEPLOYMENT,
        AZURE_OPENAI_ALLOWED_DEPLOYMENTS=SECOND_DEPLOYMENT,
        AZURE_OPENAI_MAX_RETRIES="0",
    )
    async with DefaultAzureCredential() as credential:
        provider = get_bearer_token_provider(credential, COGNITIVE_SERVICES_SCOPE)
        made.runtime.openai = create_openai_client(made.runtime.settings, provider)
        yield made
        await made.runtime.openai.close()


async def run(world: FakeWorld, job: dict[str, Any]) -> Result:
    result = await handle(Message(json.dumps(job).encode(), id=f"msg-{job['id']}"), world.runtime)
    assert result is not None
    return result


async def test_a_reasoning_model_answers_and_reports_its_reasoning(world: FakeWorld, aoai: OpenAIEmulator) -> None:
    params = {"max_tokens": 2000, "reasoning_effort": "low", "verbosity": "low"}  # max_tokens: sent as the new name
    result = await run(world, {"id": "r1", "prompt": "Why queues?", "parameters": params})
    assert result.status == "succeeded" and result.output
    assert result.model == "gpt-5.4-mini-2026-03-17" and result.usage is not None
    assert result.usage.reasoning_tokens == 64 and result.usage.completion_tokens > 64
    assert aoai.stats()["completions"] == 1


async def test_parameters_a_reasoning_model_refuses_fail_at_once_naming_them(world: FakeWorld) -> None:
    for i, (params, name) in enumerate([({"temperature": 0.2}, "temperature"), ({"stop": ["END"]}, "stop")]):
        result = await run(world, {"id": f"p{i}", "prompt": "hi", "parameters": params})
        assert result.status == "failed" and result.error is not None
        assert result.error.code == "unsupported_parameter", result.error
        assert f"'{name}'" in result.error.message and f"'{DEPLOYMENT}'" in result.error.message
    older = await run(
        world, {"id": "p9", "prompt": "hi", "deployment": SECOND_DEPLOYMENT, "parameters": {"temperature": 0.2}}
    )
    assert older.status == "succeeded"  # the gpt-4.1-class deployment takes it


async def test_the_empty_output_trap_is_a_failure_that_says_what_to_raise(world: FakeWorld) -> None:
    params = {"max_completion_tokens": 200, "reasoning_effort": "high"}
    result = await run(world, {"id": "t1", "prompt": "Prove it.", "parameters": params})
    assert result.status == "failed" and result.error is not None and result.error.code == "output_budget_exhausted"
    assert "all 200 completion tokens (200 on reasoning)" in result.error.message
    assert result.finish_reason == "length" and result.usage is not None and result.usage.reasoning_tokens == 200
