"""AZURE_OPENAI_TOKEN_SCOPE without a network: the worker's token provider asks for it, a 401 naming another
audience says which scope to set (the worker's ``token_rejected`` and the doctor alike), and the doctor knows a
Foundry project endpoint takes only https://ai.azure.com. (tests/test_settings.py checks the setting itself.)"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx2
import openai
import pytest
from azure.core.credentials import AccessTokenInfo

from shared import connections
from shared.connections import Runtime
from shared.constants import AI_FOUNDRY_SCOPE, COGNITIVE_SERVICES_SCOPE, audiences_named
from shared.doctor import Options
from shared.doctor.credential import check_scope
from shared.doctor.model import Context
from shared.doctor.openai_probe import _openai_failed
from shared.policy import GiveUp, classify
from shared.settings import Settings

PROJECT = "https://res.services.ai.azure.com/api/projects/proj"
RESOURCE = "https://res.openai.azure.com"
# The 401 bodies as Azure words them: the classic resource's, a project endpoint's (as reported), and one
# that takes either audience (as reported for Foundry model inference).
CLASSIC_401 = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), "
    "or have expired."
)
PROJECT_401 = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect (https://ai.azure.com), or have expired."
)
EITHER_401 = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com/ or https://ai.azure.com/), or have expired."
)


def settings(endpoint: str = RESOURCE, **more: str) -> Settings:
    return Settings.from_env({"AZURE_OPENAI_ENDPOINT": endpoint, "AZURE_OPENAI_DEPLOYMENT": "d", **more})


def unauthorized(message: str, endpoint: str = RESOURCE) -> openai.AuthenticationError:
    request = httpx2.Request("POST", f"{endpoint}/openai/v1/chat/completions")
    body = {"statusCode": 401, "message": message}
    return openai.AuthenticationError(
        f"Error code: 401 - {body}", response=httpx2.Response(401, json=body, request=request), body=body
    )


def test_the_401s_name_their_audiences() -> None:
    assert audiences_named(CLASSIC_401) == ("https://cognitiveservices.azure.com",)
    assert audiences_named(PROJECT_401) == ("https://ai.azure.com",)
    assert audiences_named(EITHER_401) == ("https://cognitiveservices.azure.com", "https://ai.azure.com")
    assert audiences_named("Principal does not have access to API/Operation.") == ()


# --- The worker -------------------------------------------------------------------------------------


class ScopeRecorder:
    """An async credential that records the scopes it is asked for and serves a (meaningless) token."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.scopes.append(scopes)
        return AccessTokenInfo("not-a-jwt", 2**31)

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("scope", [None, AI_FOUNDRY_SCOPE])
async def test_the_worker_asks_its_credential_for_the_configured_scope(
    monkeypatch: pytest.MonkeyPatch, scope: str | None
) -> None:
    recorder = ScopeRecorder()
    monkeypatch.setattr(connections, "create_credential", lambda env=None: recorder)
    env = {
        "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9/api/projects/p",  # a closed loopback port: nothing answers
        "AZURE_OPENAI_DEPLOYMENT": "d",
        "AZURE_OPENAI_MAX_RETRIES": "0",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        **({"AZURE_OPENAI_TOKEN_SCOPE": scope} if scope else {}),
    }
    runtime = Runtime.from_env(env)
    try:
        with pytest.raises(openai.APIConnectionError):  # the token is asked for before the request is sent
            await runtime.openai.chat.completions.create(model="d", messages=[{"role": "user", "content": "hi"}])
    finally:
        await runtime.close()
    assert recorder.scopes == [(scope or COGNITIVE_SERVICES_SCOPE,)]


def runtime_with(scope: str | None = None, endpoint: str = RESOURCE) -> Any:
    more = {"AZURE_OPENAI_TOKEN_SCOPE": scope} if scope else {}
    return SimpleNamespace(identity={"oid": "1111-oid"}, settings=settings(endpoint, **more))


def test_a_project_endpoint_refusing_the_default_scope_names_the_one_to_set() -> None:
    verdict = classify(unauthorized(PROJECT_401, PROJECT), runtime_with(endpoint=PROJECT))
    assert isinstance(verdict, GiveUp) and verdict.code == "token_rejected"
    assert f"Set AZURE_OPENAI_TOKEN_SCOPE={AI_FOUNDRY_SCOPE}." in verdict.message
    assert f"asks for the scope {COGNITIVE_SERVICES_SCOPE}" in verdict.message


@pytest.mark.parametrize(
    ("message", "scope"), [(PROJECT_401, AI_FOUNDRY_SCOPE), (CLASSIC_401, None), (EITHER_401, None), ("nope", None)]
)
def test_a_token_of_an_accepted_audience_is_expired_or_from_another_tenant(message: str, scope: str | None) -> None:
    verdict = classify(unauthorized(message), runtime_with(scope))
    assert isinstance(verdict, GiveUp) and verdict.code == "token_rejected"
    assert f"issued for the scope {scope or COGNITIVE_SERVICES_SCOPE} (AZURE_OPENAI_TOKEN_SCOPE)" in verdict.message
    assert "Set AZURE_OPENAI_TOKEN_SCOPE" not in verdict.message


# --- The doctor -------------------------------------------------------------------------------------


def context(endpoint: str, audience: str, scope: str | None = None, flag: str | None = None) -> Context:
    env = {"AZURE_OPENAI_ENDPOINT": endpoint, "AZURE_OPENAI_DEPLOYMENT": "d"}
    env |= {"AZURE_OPENAI_TOKEN_SCOPE": scope} if scope else {}
    return Context(
        env=env,
        options=Options(scope=flag),
        source="environment",
        settings=Settings.from_env(env),
        served_by="ManagedIdentityCredential",
        claims={"oid": "1111-oid", "aud": audience, "tid": "t"},
    )


async def test_the_doctor_knows_a_project_endpoint_takes_only_ai_azure_com() -> None:
    check = await check_scope(context(PROJECT, "https://cognitiveservices.azure.com"))
    assert (check.status, check.reason) == ("fail", "wrong_audience")
    assert "Foundry project endpoint, which takes only https://ai.azure.com" in check.detail
    assert (
        check.fix
        == f"set AZURE_OPENAI_TOKEN_SCOPE={AI_FOUNDRY_SCOPE} in the app settings (now {COGNITIVE_SERVICES_SCOPE})"
    )
    healthy = await check_scope(context(PROJECT, "https://ai.azure.com", AI_FOUNDRY_SCOPE))
    assert healthy.status == "ok" and f"(scope {AI_FOUNDRY_SCOPE})" in healthy.detail


async def test_the_doctor_takes_the_configured_scope_as_the_apps() -> None:
    # Microsoft's v1 samples ask a resource endpoint for ai.azure.com tokens too: not a mistake to report.
    check = await check_scope(context(RESOURCE, "https://ai.azure.com", AI_FOUNDRY_SCOPE))
    assert check.status == "ok"
    flagged = await check_scope(
        context(RESOURCE, "https://storage.azure.com", flag="https://storage.azure.com/.default")
    )
    assert flagged.reason == "wrong_audience" and flagged.fix is not None
    assert flagged.fix.startswith(f"request the token with scope {COGNITIVE_SERVICES_SCOPE}, the app's")


@pytest.mark.parametrize(
    ("endpoint", "message", "audience", "reason", "fix"),
    [
        (PROJECT, PROJECT_401, "https://cognitiveservices.azure.com", "wrong_audience", f"={AI_FOUNDRY_SCOPE} "),
        (RESOURCE, CLASSIC_401, "https://ai.azure.com", "wrong_audience", f"={COGNITIVE_SERVICES_SCOPE} "),
        (RESOURCE, EITHER_401, "https://ai.azure.com", "token_rejected", "az login --tenant"),
        (RESOURCE, CLASSIC_401, "https://cognitiveservices.azure.com", "token_rejected", "az login --tenant"),
    ],
)
def test_the_doctor_reads_the_audience_from_the_401(
    endpoint: str, message: str, audience: str, reason: str, fix: str
) -> None:
    scope = f"{audience}/.default"
    ctx = context(endpoint, audience, scope if scope != COGNITIVE_SERVICES_SCOPE else None)
    check = _openai_failed(
        ctx, ctx.settings or settings(), unauthorized(message, endpoint), f"{endpoint}, deployment d"
    )
    assert (check.status, check.reason) == ("fail", reason)
    assert check.fix is not None and fix in check.fix
