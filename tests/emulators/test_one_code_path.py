"""Issue 2's promises, through the exact client code the worker runs in Azure and on a laptop:
``AsyncOpenAI(base_url=<endpoint>/openai/v1/, api_key=get_bearer_token_provider(DefaultAzureCredential(), scope))``
(``shared.connections.create_openai_client``)."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest
from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

from emulators.aoai import answer_for
from shared.connections import create_openai_client
from shared.settings import Settings
from tests.conftest import DEPLOYMENT, AzureCli, IdentityEndpoint, OpenAIEmulator, ungranted

SCOPE = "https://cognitiveservices.azure.com/.default"
MESSAGES = [{"role": "user", "content": "What is keyless auth?"}]


def v1_client(endpoint: str, credential: DefaultAzureCredential, *, scope: str, max_retries: int) -> openai.AsyncOpenAI:
    """The worker's own client factory (v1 endpoint, the token provider as api_key)."""
    settings = Settings.from_env({"AZURE_OPENAI_ENDPOINT": endpoint, "AZURE_OPENAI_DEPLOYMENT": DEPLOYMENT})
    return create_openai_client(settings, get_bearer_token_provider(credential, scope), max_retries=max_retries)


async def chat(endpoint: str, *, scope: str = SCOPE, max_retries: int = 0, **credential_kwargs: object) -> str:
    """The worker's client construction, verbatim; only the environment decides the identity."""
    async with DefaultAzureCredential(**credential_kwargs) as credential:
        client = v1_client(endpoint, credential, scope=scope, max_retries=max_retries)
        async with client:
            completion = await client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)  # type: ignore[arg-type]
    return completion.choices[0].message.content or ""


async def test_managed_identity_path(aoai: OpenAIEmulator, managed_identity: IdentityEndpoint) -> None:
    assert await chat(aoai.endpoint) == answer_for(MESSAGES, DEPLOYMENT)
    assert aoai.stats()["principals"] == [managed_identity.state.system.object_id]  # type: ignore[union-attr]


async def test_azure_cli_path(aoai: OpenAIEmulator, azure_cli: AzureCli) -> None:
    assert await chat(aoai.endpoint) == answer_for(MESSAGES, DEPLOYMENT)
    assert azure_cli.invocations() == 1


async def test_wrong_scope_names_the_expected_audience(
    aoai: OpenAIEmulator, managed_identity: IdentityEndpoint
) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await chat(aoai.endpoint, scope="https://storage.azure.com/.default")
    assert "audience is incorrect (https://cognitiveservices.azure.com)" in str(caught.value)


async def test_missing_role_is_permission_denied(aoai: OpenAIEmulator, managed_identity: IdentityEndpoint) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await chat(aoai.endpoint, managed_identity_client_id=managed_identity.ungranted_client_id)
    assert caught.value.code == "PermissionDenied"


async def test_role_granted_with_delay_fails_then_succeeds(
    aoai: OpenAIEmulator, managed_identity: IdentityEndpoint
) -> None:
    principal = ungranted(managed_identity)
    client_id = managed_identity.ungranted_client_id
    aoai.grant(principal.object_id, delay_seconds=600)  # assigned, and pending for the whole first call
    try:
        with pytest.raises(openai.AuthenticationError):
            await chat(aoai.endpoint, managed_identity_client_id=client_id)
        effective_at = aoai.grant(principal.object_id, delay_seconds=1)  # now propagated in a second
        deadline = time.monotonic() + 30
        while True:  # a new credential and token each time, as a restarted worker would have
            try:
                answer = await chat(aoai.endpoint, managed_identity_client_id=client_id)
                break
            except openai.AuthenticationError:
                assert time.monotonic() < deadline, "the grant never took effect"
                await asyncio.sleep(0.2)
        assert answer == answer_for(MESSAGES, DEPLOYMENT)
    finally:
        aoai.revoke(principal.object_id)
    # What the emulator recorded: refused (no role) until the grant took effect, answered after it.
    *refused, answered = aoai.requests()
    assert refused and all((r.status, r.code) == ("401", "PermissionDenied") for r in refused)
    assert all(r.began < effective_at for r in refused)
    assert (answered.status, answered.ended >= effective_at) == ("200", True)


async def _concurrent_calls(endpoint: str, n: int) -> list[str]:
    async with DefaultAzureCredential() as credential:
        client = v1_client(endpoint, credential, scope=SCOPE, max_retries=0)
        async with client:
            completions = await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model=DEPLOYMENT,
                        messages=[{"role": "user", "content": f"question {i}"}],
                    )
                    for i in range(n)
                )
            )
    return [c.choices[0].message.content or "" for c in completions]


async def test_one_token_for_24_concurrent_calls_managed_identity(
    aoai: OpenAIEmulator, managed_identity: IdentityEndpoint
) -> None:
    before = managed_identity.tokens_issued()
    answers = await _concurrent_calls(aoai.endpoint, 24)
    assert len(set(answers)) == 24
    assert managed_identity.tokens_issued() - before == 1
    assert aoai.stats()["distinct_tokens"] == 1


async def test_one_az_run_for_24_concurrent_calls(aoai: OpenAIEmulator, azure_cli: AzureCli) -> None:
    answers = await _concurrent_calls(aoai.endpoint, 24)
    assert len(answers) == 24
    assert azure_cli.invocations() == 1


async def test_rate_limit_429_then_sdk_retries_succeed(
    aoai: OpenAIEmulator, managed_identity: IdentityEndpoint
) -> None:
    # Room for one request per 2-second window: the second call is throttled with a short
    # retry-after-ms, which the SDK honours and then succeeds.
    aoai.configure(rpm=1, rate_window_seconds=2)
    assert await chat(aoai.endpoint)
    async with DefaultAzureCredential() as credential:
        client = v1_client(aoai.endpoint, credential, scope=SCOPE, max_retries=0)
        async with client:
            with pytest.raises(openai.RateLimitError) as caught:
                await client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)  # type: ignore[arg-type]
    headers = caught.value.response.headers
    assert float(headers["retry-after-ms"]) > 0 and "x-ratelimit-remaining-requests" in headers
    assert await chat(aoai.endpoint, max_retries=3) == answer_for(MESSAGES, DEPLOYMENT)
    assert aoai.stats()["throttled"] >= 2


async def test_a_token_provider_given_to_azure_openai_as_api_key_is_refused(
    aoai: OpenAIEmulator, managed_identity: IdentityEndpoint
) -> None:
    # The trap the v1 client avoids: AsyncAzureOpenAI sends a callable api_key as an `api-key`
    # header, which Azure OpenAI with local auth disabled refuses.
    async with DefaultAzureCredential() as credential:
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=aoai.endpoint,
            api_version="2024-10-21",
            api_key=get_bearer_token_provider(credential, SCOPE),
            max_retries=0,
        )
        async with client:
            with pytest.raises(openai.PermissionDeniedError) as caught:
                await client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.code == "AuthenticationTypeDisabled"
