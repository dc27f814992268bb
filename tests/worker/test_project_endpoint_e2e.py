"""A worker configured for a Foundry project endpoint (the emulator's ``/api/projects/<p>`` route, which takes only
ai.azure.com tokens): with AZURE_OPENAI_TOKEN_SCOPE set it gets answers; with the default scope each job fails at
once, ``token_rejected``, naming the scope to set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emulators.aoai import answer_for
from emulators.stack.services import DEPLOYMENT, IdentityEndpoint, OpenAIEmulator
from emulators.stack.workers import WorkerHost
from shared.constants import AI_FOUNDRY_SCOPE, COGNITIVE_SERVICES_SCOPE

PROMPT = "What does a Foundry project endpoint accept?"


async def run_one(
    settings: dict[str, str], jobs_for: Any, start_host: Callable[..., WorkerHost], aoai: OpenAIEmulator
) -> dict[str, Any]:
    settings = {**settings, "AZURE_OPENAI_ENDPOINT": f"{aoai.endpoint}/api/projects/proj-1"}
    jobs = await jobs_for(settings)
    await jobs.send({"id": "project-1", "prompt": PROMPT})
    host = start_host(settings)
    result = (await jobs.wait_for(1, host=host))["project-1"]
    assert await jobs.queue_drained(host=host)  # an answer or a final failure: nothing retried, nothing poisoned
    assert await jobs.poison_count() == 0
    return result


async def test_a_project_endpoint_answers_with_the_ai_azure_com_scope(
    keyless_settings: dict[str, str],
    jobs_for: Any,
    start_host: Any,
    aoai: OpenAIEmulator,
    managed_identity: IdentityEndpoint,
) -> None:
    issued = managed_identity.tokens_issued("https://ai.azure.com")
    result = await run_one(
        {**keyless_settings, "AZURE_OPENAI_TOKEN_SCOPE": AI_FOUNDRY_SCOPE}, jobs_for, start_host, aoai
    )
    assert result["status"] == "succeeded", result
    assert result["output"] == answer_for([{"role": "user", "content": PROMPT}], DEPLOYMENT)
    assert managed_identity.tokens_issued("https://ai.azure.com") == issued + 1
    assert aoai.stats()["by_route"] == {"POST /api/projects/{project}/openai/v1/chat/completions": 1}


async def test_the_default_scope_on_a_project_endpoint_fails_naming_the_scope_to_set(
    keyless_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    result = await run_one(keyless_settings, jobs_for, start_host, aoai)
    assert result["status"] == "failed" and result["error"]["code"] == "token_rejected", result
    message = result["error"]["message"]
    assert f"Set AZURE_OPENAI_TOKEN_SCOPE={AI_FOUNDRY_SCOPE}." in message
    assert f"asks for the scope {COGNITIVE_SERVICES_SCOPE}" in message
    assert "audience is incorrect (https://ai.azure.com)" in message  # the service's own words
    assert aoai.stats()["completions"] == 0
