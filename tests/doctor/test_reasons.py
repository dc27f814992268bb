"""The doctor's ``reason`` codes: each is declared, documented, and given by the rule it names.

The rules here are the branches the end-to-end tests in test_doctor.py cannot reach with the local
Azure (a throttled deployment, a SAS, a chain narrowed away from the managed identity...): they are
decided from settings and errors alone, so they are checked without any network."""

from __future__ import annotations

import re
from pathlib import Path

import httpx2
import openai
import pytest

from shared.constants import OPENAI_USER_ROLE, STORAGE_CONNECTION
from shared.doctor import CHECKS, Options
from shared.doctor.credential import _credential_failed
from shared.doctor.environment import check_settings
from shared.doctor.model import COMMON_REASONS, OPENAI, Attempt, Context, one_line
from shared.doctor.openai_probe import _openai_failed
from shared.doctor.storage import check_storage
from shared.settings import Settings

TROUBLESHOOTING = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"
OID = "5a1e0000-0000-4000-8000-00000000f001"


def context(env: dict[str, str], *attempts: Attempt, azure: bool = False) -> Context:
    return Context(
        env={"DOCTOR_ASSUME_CONTAINER": "0", **env},
        options=Options(azure=azure),
        source="environment",
        attempts=list(attempts),
        claims={"oid": OID, "aud": "https://cognitiveservices.azure.com", "tid": "t"},
    )


# --- Declared and documented -------------------------------------------------------------------------


def documented_reasons() -> dict[str, set[str]]:
    """``reason -> check ids`` from the table under "## Reasons" in docs/troubleshooting.md."""
    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    section = re.search(r"^## Reasons.*?(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert section is not None, "docs/troubleshooting.md has no '## Reasons' section"
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", section.group(0), flags=re.MULTILINE)
    return {reason: set(re.findall(r"`([a-z-]+)`", checks)) or {"any"} for reason, checks in rows}


def test_every_reason_is_documented_with_its_checks() -> None:
    declared: dict[str, set[str]] = {reason: {"any"} for reason in COMMON_REASONS}
    for kind, _ in CHECKS:
        for reason in kind.reasons:
            declared.setdefault(reason, set()).add(kind.id)
    assert documented_reasons() == declared


def test_an_undeclared_reason_is_refused() -> None:
    with pytest.raises(ValueError, match="undeclared reason 'role_mising'"):
        OPENAI.fail("role_mising", "a typo scripts would never match")


def test_json_carries_the_reason() -> None:
    check = OPENAI.fail("role_missing", "detail", "fix")
    assert check.as_json() == {
        "check": "openai",
        "status": "fail",
        "reason": "role_missing",
        "detail": "detail",
        "fix": "fix",
    }


def test_one_line_drops_the_sdks_troubleshooting_links() -> None:
    message = (
        "ManagedIdentityCredential authentication unavailable.\n  Visit https://aka.ms/x to troubleshoot this issue."
    )
    assert one_line(message) == "ManagedIdentityCredential authentication unavailable."
    assert one_line(RuntimeError("x" * 400)).endswith("...")


# --- Credential: why no token -----------------------------------------------------------------------


CLI_LOGGED_OUT = Attempt("AzureCliCredential", "unavailable", "Please run 'az login' to set up an account")
CLI_MISSING = Attempt("AzureCliCredential", "unavailable", "Azure CLI not found on path")
MI_UNAVAILABLE = Attempt("ManagedIdentityCredential", "unavailable", "no response from the IMDS endpoint")
MI_FAILED = Attempt("ManagedIdentityCredential", "failed", "identity not found")


@pytest.mark.parametrize(
    ("env", "attempts", "reason", "fact"),
    [
        ({}, [MI_FAILED], "managed_identity_failed", "az functionapp identity assign"),
        ({"AZURE_CLIENT_ID": "c1"}, [MI_FAILED], "client_id_not_attached", "AZURE_CLIENT_ID=c1"),
        (
            {f"{STORAGE_CONNECTION}__clientId": "c2"},
            [MI_FAILED],
            "client_id_not_attached",
            f"{STORAGE_CONNECTION}__clientId=c2",
        ),
        ({}, [Attempt("AzureCliCredential", "failed", "boom")], "az_token_failed", "az login"),
        ({}, [Attempt("EnvironmentCredential", "failed", "refused")], "service_principal_refused", "AZURE_CLIENT_ID"),
        (
            {},
            [Attempt("AzurePowerShellCredential", "failed", "boom")],
            "credential_failed",
            "AzurePowerShellCredential",
        ),
        (
            {"IDENTITY_ENDPOINT": "http://127.0.0.1:1", "AZURE_TOKEN_CREDENTIALS": "dev"},
            [CLI_MISSING],
            "chain_excludes_managed_identity",
            "AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential",
        ),
        ({}, [MI_UNAVAILABLE, CLI_LOGGED_OUT], "az_not_logged_in", "az login"),
        (
            {"AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential"},
            [MI_UNAVAILABLE],
            "managed_identity_outside_azure",
            "AZURE_TOKEN_CREDENTIALS=dev",
        ),
        (
            {"DOCTOR_ASSUME_CONTAINER": "1"},
            [MI_UNAVAILABLE, CLI_MISSING],
            "container_without_credential",
            "Environment",
        ),
        ({"WEBSITE_SITE_NAME": "app"}, [MI_UNAVAILABLE], "no_managed_identity", "az functionapp identity assign"),
        ({}, [MI_UNAVAILABLE, CLI_MISSING], "az_not_installed", "az login"),
        ({}, [MI_UNAVAILABLE], "no_credential", "AZURE_TOKEN_CREDENTIALS=dev"),
    ],
)
def test_why_no_token(env: dict[str, str], attempts: list[Attempt], reason: str, fact: str) -> None:
    check = _credential_failed(context(env, *attempts), "")
    assert (check.status, check.reason) == ("fail", reason)
    assert check.fix is not None and fact in check.fix
    for attempt in attempts:  # every credential's own words are in the detail
        assert f"{attempt.credential}: {attempt.outcome}: {attempt.message}" in check.detail


# --- Settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("containers", "named"),
    [
        ({"STAGING_CONTAINER": "results"}, ("RESULTS_CONTAINER", "STAGING_CONTAINER")),
        ({"STAGING_CONTAINER": "job-payloads"}, ("PAYLOADS_CONTAINER", "STAGING_CONTAINER")),
        ({"PAYLOADS_CONTAINER": "results"}, ("RESULTS_CONTAINER", "PAYLOADS_CONTAINER")),
    ],
)
async def test_a_container_clash_names_both_settings_and_stops_the_probes(
    containers: dict[str, str], named: tuple[str, str]
) -> None:
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://aoai-x.openai.azure.com",
        "AZURE_OPENAI_DEPLOYMENT": "gpt-5.4-mini",
        "RESULTS_CONTAINER": "results",
        "PAYLOADS_CONTAINER": "job-payloads",
        **containers,
    }
    ctx = context(env)
    check = await check_settings(ctx)
    assert (check.status, check.reason) == ("fail", "container_clash")
    assert all(name in check.detail for name in named)
    assert check.fix is not None and check.fix.startswith(f"set {named[1]} (or {named[0]})")
    assert "the app settings" in check.fix  # no settings file: the environment is where to set it
    assert ctx.settings is None  # nothing that needs the settings probes a container


# --- Storage settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connection", "reason", "fact"),
    [
        (
            # A made-up SAS, split so the repository's secret scan does not stop at a test input.
            "DefaultEndpointsProtocol=https;AccountName=contosojobs;SharedAccessSignature=" + "sv=2024&sig=abc",
            "storage_sas",
            f"{STORAGE_CONNECTION}__accountName=contosojobs",
        ),
        (
            "DefaultEndpointsProtocol=https;AccountName=contosojobs;EndpointSuffix=core.windows.net",
            "connection_string_without_credential",
            f"{STORAGE_CONNECTION}__accountName",
        ),
    ],
)
async def test_storage_connection_strings(connection: str, reason: str, fact: str) -> None:
    ctx = context({STORAGE_CONNECTION: connection})
    check = await check_storage(ctx)
    assert (check.status, check.reason) == ("fail", reason)
    assert check.fix is not None and fact in check.fix
    assert ctx.storage_problem is not None  # storage access is then skipped, never probed
    assert "sig=abc" not in check.detail + check.fix


async def test_no_storage_settings() -> None:
    check = await check_storage(context({}))
    assert (check.status, check.reason) == ("fail", "storage_not_configured")
    assert check.fix is not None and f"{STORAGE_CONNECTION}__accountName" in check.fix


# --- Azure OpenAI: what each answer means ------------------------------------------------------------


def answer(error: type[openai.APIStatusError], status: int, code: str | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "https://aoai-x.openai.azure.com/openai/deployments/d/chat/completions")
    body = {"code": code, "message": f"the service says {status}"}
    return error(f"Error code: {status}", response=httpx2.Response(status, request=request), body=body)


SETTINGS = Settings.from_env(
    {"AZURE_OPENAI_ENDPOINT": "https://aoai-x.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "d"}
)


@pytest.mark.parametrize(
    ("error", "status", "reason", "fact"),
    [
        (answer(openai.AuthenticationError, 401, "PermissionDenied"), "fail", "role_missing", OPENAI_USER_ROLE),
        (answer(openai.PermissionDeniedError, 403, "AuthenticationTypeDisabled"), "fail", "api_key_sent", "api_key"),
        (answer(openai.AuthenticationError, 401), "fail", "token_rejected", "az login --tenant"),
        (answer(openai.NotFoundError, 404, "DeploymentNotFound"), "fail", "deployment_not_found", "deployment list"),
        (answer(openai.NotFoundError, 404), "fail", "endpoint_not_found", "no path"),
        (answer(openai.RateLimitError, 429), "warn", "throttled", "quota"),
        (
            answer(openai.BadRequestError, 400, "unsupported_parameter"),
            "warn",
            "probe_refused",
            "max_completion_tokens",
        ),
        (answer(openai.InternalServerError, 500), "fail", "service_error", "retry later"),
    ],
)
def test_openai_answers(error: openai.APIStatusError, status: str, reason: str, fact: str) -> None:
    check = _openai_failed(context({}), SETTINGS, error, "https://aoai-x.openai.azure.com, deployment d")
    assert (check.status, check.reason) == (status, reason)
    assert check.fix is not None and fact in check.fix
    assert f"the service says {error.status_code}" in check.detail  # the service's own message


def test_role_command_scopes_the_openai_resource() -> None:
    error = answer(openai.AuthenticationError, 401, "PermissionDenied")
    check = _openai_failed(context({}), SETTINGS, error, "where")
    assert check.fix is not None
    assert f"--assignee {OID}" in check.fix
    assert "az cognitiveservices account show --name aoai-x" in check.fix  # the resource, not the subscription
