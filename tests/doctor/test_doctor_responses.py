"""`python -m shared doctor` and the Responses API: each deployment is probed through the API it declares, and a
deployment whose model takes the Responses API only but is declared chat is named with the setting to change,
whether its name gives it away (settings refuse it before any call) or hides it (Azure's 400
``OperationNotSupported``, from the emulator as Azure sends it). Through the real SDK against the local Azure."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx2
import openai
import pytest

from emulators.aoai.models import model_for
from emulators.stack.services import DEPLOYMENTS
from shared.connections import create_openai_client
from shared.doctor.model import OPENAI, Context, Options
from shared.doctor.openai_probe import _declared_chat, _openai_failed
from shared.doctor.probes import refuses_chat
from shared.settings import Settings
from tests.conftest import DEPLOYMENT, IdentityEndpoint, OpenAIEmulator, ungranted
from tests.doctor.conftest import Doctor

RESPONSES_ROUTE = "POST /openai/v1/responses"
CHAT_ROUTE = "POST /openai/v1/chat/completions"
HIDDEN = "reasoner"  # a deployment name that says nothing of its Responses-only model


def with_deployments(aoai: OpenAIEmulator, **models: str) -> None:
    """The emulator's usual deployments plus ``name=model`` (the aoai fixture restores them afterwards)."""
    usual = {name: {"model": model_for(name)} for name in DEPLOYMENTS}
    aoai.configure(deployments={**usual, **{name: {"model": model} for name, model in models.items()}})


def routes(aoai: OpenAIEmulator) -> dict[str, int]:
    by_route: dict[str, int] = aoai.stats()["by_route"]
    return by_route


# --- Probed through the declared API ----------------------------------------------------------------------


def test_a_responses_deployment_is_probed_with_a_minimal_stateless_responses_call(
    doctor: Doctor, dev_settings: dict[str, str], aoai: OpenAIEmulator
) -> None:
    with_deployments(aoai, **{"gpt-5-pro": "gpt-5-pro-2025-10-06"})
    env = {**dev_settings, "AZURE_OPENAI_DEPLOYMENT": "gpt-5-pro", "AZURE_OPENAI_API": "responses"}
    result = doctor(env, "--json")
    assert result.code == 0, result.out
    served = result["openai"]
    assert (served["status"], served["reason"]) == ("ok", "ok")
    assert "deployment gpt-5-pro answered" in served["detail"]
    assert "through the Responses API, model gpt-5-pro-2025-10-06, a reasoning model" in served["detail"]
    assert "max_output_tokens" in served["detail"]
    assert routes(aoai).get(RESPONSES_ROUTE) == 1 and CHAT_ROUTE not in routes(aoai)
    made = aoai.stats()["responses"]
    assert (made["created"], made["stored"], made["background"]) == (1, 0, 0)  # store=False: nothing kept


def test_a_pool_is_probed_entry_by_entry_each_through_its_api(
    doctor: Doctor, dev_settings: dict[str, str], aoai: OpenAIEmulator
) -> None:
    with_deployments(aoai, **{"gpt-5.1-codex": "gpt-5.1-codex-2025-11-13"})
    pool = [
        {"endpoint": aoai.endpoint, "deployment": DEPLOYMENT},
        {"endpoint": aoai.endpoint, "deployment": "gpt-5.1-codex", "api": "responses", "background": True},
    ]
    result = doctor({**dev_settings, "AZURE_OPENAI_POOL": json.dumps(pool)}, "--json")
    assert result.code == 0, result.out
    detail = result["openai"]["detail"]
    assert detail.startswith("every deployment of AZURE_OPENAI_POOL (2):")
    chat_line, responses_line = detail.splitlines()[1:]
    assert f"deployment {DEPLOYMENT} answered" in chat_line and "Responses API" not in chat_line
    assert "deployment gpt-5.1-codex answered" in responses_line
    assert "through the Responses API, model gpt-5.1-codex-2025-11-13" in responses_line
    # One call each, through its own API: the background default does not make the probe a background one.
    assert routes(aoai).get(RESPONSES_ROUTE) == 1 and routes(aoai).get(CHAT_ROUTE) == 1
    assert aoai.stats()["responses"]["background"] == 0


def test_every_allowed_deployment_of_the_endpoint_is_probed(
    doctor: Doctor, dev_settings: dict[str, str], aoai: OpenAIEmulator
) -> None:
    with_deployments(aoai, **{HIDDEN: "gpt-5.1-codex-2025-11-13"})
    env = {**dev_settings, "AZURE_OPENAI_ALLOWED_DEPLOYMENTS": f"{DEPLOYMENT},{HIDDEN}"}
    result = doctor(env, "--json")
    assert result.code == 1
    failed = result["openai"]
    assert (failed["status"], failed["reason"]) == ("fail", "responses_only")
    assert failed["detail"].startswith("AZURE_OPENAI_ALLOWED_DEPLOYMENTS entry 2 of 2:")


def test_wait_retries_a_denied_responses_probe_through_the_responses_api(
    doctor: Doctor, mi_settings: dict[str, str], managed_identity: IdentityEndpoint, aoai: OpenAIEmulator
) -> None:
    with_deployments(aoai, **{"gpt-5-pro": "gpt-5-pro-2025-10-06"})
    principal = ungranted(managed_identity)
    aoai.grant(principal.object_id, delay_seconds=2)  # assigned, in effect only for the retry (5 s later)
    try:
        env = {
            **mi_settings,
            "AZURE_CLIENT_ID": managed_identity.ungranted_client_id,
            "AZURE_OPENAI_DEPLOYMENT": "gpt-5-pro",
            "AZURE_OPENAI_API": "responses",
        }
        result = doctor(env, "--json", "--wait", "30")
    finally:
        aoai.revoke(principal.object_id)
    assert result.code == 0, result.out
    assert result.reasons() == {"openai": "ok_after_wait"}
    assert "through the Responses API, model gpt-5-pro-2025-10-06" in result["openai"]["detail"]
    assert "PermissionDenied (attempt 1)" in result.err
    assert routes(aoai).get(RESPONSES_ROUTE) == 2 and CHAT_ROUTE not in routes(aoai)  # denied, then served


# --- A Responses-only model declared chat ------------------------------------------------------------------


def test_a_hidden_responses_only_model_declared_chat_is_named_with_the_setting(
    doctor: Doctor, dev_settings: dict[str, str], aoai: OpenAIEmulator
) -> None:
    with_deployments(aoai, **{HIDDEN: "gpt-5.1-codex-2025-11-13"})
    result = doctor({**dev_settings, "AZURE_OPENAI_DEPLOYMENT": HIDDEN}, "--json")
    assert result.code == 1
    assert result.reasons() == {"openai": "responses_only", "storage": "development_storage"}
    failed = result["openai"]
    assert failed["status"] == "fail"
    detail = failed["detail"]
    assert detail.startswith(f"400 OperationNotSupported from {aoai.endpoint}, deployment {HIDDEN}:")
    assert "The chatCompletion operation does not work with the specified model, gpt-5.1-codex" in detail  # Azure's
    assert "declared chat" in detail and "responses_only" in detail
    # The fix is confirmed: the same deployment answered the Responses API.
    assert "a Responses call to it answered: model gpt-5.1-codex-2025-11-13" in detail
    assert failed["fix"].startswith("set AZURE_OPENAI_API=responses")
    assert "AZURE_OPENAI_POOL" in failed["fix"]  # how to mix the two APIs
    assert routes(aoai).get(CHAT_ROUTE) == 1 and routes(aoai).get(RESPONSES_ROUTE) == 1  # once each, no retries


def test_a_hidden_responses_only_pool_entry_names_the_entry(
    doctor: Doctor, dev_settings: dict[str, str], aoai: OpenAIEmulator
) -> None:
    with_deployments(aoai, **{HIDDEN: "gpt-5-pro-2025-10-06"})
    pool = [
        {"endpoint": aoai.endpoint, "deployment": DEPLOYMENT},
        {"endpoint": aoai.endpoint, "deployment": HIDDEN, "api": "chat"},
    ]
    result = doctor({**dev_settings, "AZURE_OPENAI_POOL": json.dumps(pool)}, "--json")
    assert result.code == 1
    failed = result["openai"]
    assert failed["reason"] == "responses_only"
    assert failed["detail"].startswith("AZURE_OPENAI_POOL entry 2 of 2: 400 OperationNotSupported")
    assert failed["fix"].startswith(f'add "api": "responses" to the AZURE_OPENAI_POOL entry of deployment {HIDDEN} on ')
    assert aoai.endpoint in failed["fix"] and "azd env set AZURE_OPENAI_API responses" in failed["fix"]


@pytest.mark.parametrize("pooled", [False, True])
def test_a_responses_only_name_declared_chat_is_a_clear_settings_failure(
    doctor: Doctor, dev_settings: dict[str, str], aoai: OpenAIEmulator, pooled: bool
) -> None:
    # Settings refuse it at load, so the worker would not start: the doctor says why and what to set, and calls
    # nothing (the probe needs settings).
    if pooled:
        pool = [
            {"endpoint": aoai.endpoint, "deployment": DEPLOYMENT},
            {"endpoint": aoai.endpoint, "deployment": "o3-pro"},
        ]
        env = {**dev_settings, "AZURE_OPENAI_POOL": json.dumps(pool)}
    else:
        env = {**dev_settings, "AZURE_OPENAI_DEPLOYMENT": "o3-pro"}
    result = doctor(env, "--json")
    assert result.code == 1
    settings = result["settings"]
    assert (settings["status"], settings["reason"]) == ("fail", "responses_only")
    assert "deployment o3-pro is named like a model Azure serves through the Responses API only" in settings["detail"]
    assert ("AZURE_OPENAI_POOL entry" if pooled else "AZURE_OPENAI_API is chat") in settings["detail"]
    fix = settings["fix"]
    assert fix.startswith("in the app settings (environment): ")
    if pooled:
        assert 'add "api": "responses" to the AZURE_OPENAI_POOL entry of deployment o3-pro' in fix
    else:
        assert "set AZURE_OPENAI_API=responses" in fix
    assert result.reasons()["openai"] == "settings_failed"
    assert not any(route.startswith("POST /openai") for route in routes(aoai))


def test_another_settings_failure_keeps_the_generic_fix(doctor: Doctor, dev_settings: dict[str, str]) -> None:
    # A background default on a chat deployment is refused by the same validator, for another reason.
    result = doctor({**dev_settings, "AZURE_OPENAI_BACKGROUND": "true"}, "--json")
    assert result.code == 1
    assert result["settings"]["reason"] == "settings_invalid"
    assert result["settings"]["fix"].startswith("set AZURE_OPENAI_API")


# --- Rules the local Azure cannot reach ---------------------------------------------------------------------


def status_error(cls: type[openai.APIStatusError], status: int, body: dict[str, Any]) -> openai.APIStatusError:
    request = httpx2.Request("POST", "https://aoai-x.openai.azure.com/openai/v1/chat/completions")
    return cls(f"Error code: {status} - {body}", response=httpx2.Response(status, request=request), body=body)


def test_openais_404_wording_counts_as_responses_only_too() -> None:
    # OpenAI answers 404 "only supported in v1/responses"; whether Azure v1 ever does is unconfirmed (facts §3).
    openais = {"message": "This model is only supported in v1/responses and not in v1/chat/completions.",
               "type": "invalid_request_error", "code": None}  # fmt: skip
    assert refuses_chat(status_error(openai.NotFoundError, 404, openais))
    azures = {"code": "OperationNotSupported", "message": "The chatCompletion operation does not work with ..."}
    assert refuses_chat(status_error(openai.BadRequestError, 400, azures))
    other = {"code": "unsupported_parameter", "message": "Unsupported parameter: 'max_tokens'."}
    assert not refuses_chat(status_error(openai.BadRequestError, 400, other))
    assert not refuses_chat(status_error(openai.NotFoundError, 404, {"code": "DeploymentNotFound", "message": "x"}))


def settings_for(deployment: str = "d") -> Settings:
    return Settings.from_env(
        {"AZURE_OPENAI_ENDPOINT": "https://aoai-x.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": deployment}
    )


def test_a_responses_probe_refused_says_what_to_check_for_that_api() -> None:
    ctx = Context(env={}, options=Options(), source="environment", claims={"oid": "0bad"})
    refused = status_error(openai.BadRequestError, 400, {"code": "invalid_value", "message": "no"})
    check = _openai_failed(ctx, settings_for(), refused, "here", api="responses")
    assert (check.status, check.reason) == ("warn", "probe_refused")
    assert check.fix is not None and "takes the Responses API" in check.fix
    missing = status_error(openai.NotFoundError, 404, {"code": "404", "message": "Resource not found"})
    check = _openai_failed(ctx, settings_for(), missing, "here", api="responses")
    assert check.reason == "endpoint_not_found" and "/openai/v1/responses:" in check.detail


async def test_when_the_responses_call_fails_too_the_detail_says_so() -> None:
    # The worker's own client on a port nothing listens on: the confirming Responses call cannot connect.
    refusal = status_error(openai.BadRequestError, 400, {"code": "OperationNotSupported", "message": "no chat"})
    settings = Settings.from_env({"AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9", "AZURE_OPENAI_DEPLOYMENT": HIDDEN})

    async def token() -> str:
        return "not-a-token"  # never sent: nothing answers

    async with create_openai_client(dataclasses.replace(settings, openai_timeout=5.0), token, max_retries=0) as client:
        check = await _declared_chat(settings, client, refusal, "here", pooled=False)
    assert (check.check, check.status, check.reason) == (OPENAI.id, "fail", "responses_only")
    assert "a Responses call to it failed too (APIConnectionError" in check.detail
    assert check.fix is not None and check.fix.startswith("set AZURE_OPENAI_API=responses")
