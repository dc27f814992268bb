"""The emulator as a Foundry project endpoint (``/api/projects/<p>/openai/v1``): the same deployments, reached
through the worker's own client factory, for ai.azure.com tokens only (its 401 names that audience)."""

from __future__ import annotations

import openai
import pytest
from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

from emulators.aoai import answer_for
from shared.connections import create_openai_client
from shared.constants import AI_FOUNDRY_SCOPE, COGNITIVE_SERVICES_SCOPE
from shared.settings import Settings
from tests.conftest import DEPLOYMENT, IdentityEndpoint, OpenAIEmulator

MESSAGES = [{"role": "user", "content": "Which audience does a project take?"}]


async def chat(endpoint: str, scope: str) -> str:
    settings = Settings.from_env({"AZURE_OPENAI_ENDPOINT": endpoint, "AZURE_OPENAI_DEPLOYMENT": DEPLOYMENT})
    async with DefaultAzureCredential() as credential:
        client = create_openai_client(settings, get_bearer_token_provider(credential, scope), max_retries=0)
        async with client:
            completion = await client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)  # type: ignore[arg-type]
    return completion.choices[0].message.content or ""


async def test_a_project_route_answers_ai_azure_com_tokens(
    aoai: OpenAIEmulator, managed_identity: IdentityEndpoint
) -> None:
    project = f"{aoai.endpoint}/api/projects/proj-1"
    assert await chat(project, AI_FOUNDRY_SCOPE) == answer_for(MESSAGES, DEPLOYMENT)
    assert await chat(f"{project}/openai/v1/", AI_FOUNDRY_SCOPE) == answer_for(MESSAGES, DEPLOYMENT)  # as copied
    stats = aoai.stats()
    assert stats["completions"] == 2
    assert stats["by_route"] == {"POST /api/projects/{project}/openai/v1/chat/completions": 2}
    assert managed_identity.tokens_issued("https://ai.azure.com") >= 1


async def test_a_project_route_refuses_the_classic_audience_naming_its_own(
    aoai: OpenAIEmulator, managed_identity: IdentityEndpoint
) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await chat(f"{aoai.endpoint}/api/projects/proj-1", COGNITIVE_SERVICES_SCOPE)
    assert "audience is incorrect (https://ai.azure.com)" in str(caught.value)
    assert caught.value.response.headers.get("apim-request-id")  # a data-plane answer like any other
    # The resource's own route is unchanged: it names its audience to an ai.azure.com token.
    with pytest.raises(openai.AuthenticationError) as classic:
        await chat(aoai.endpoint, AI_FOUNDRY_SCOPE)
    assert "audience is incorrect (https://cognitiveservices.azure.com)" in str(classic.value)
    assert aoai.stats()["completions"] == 0
