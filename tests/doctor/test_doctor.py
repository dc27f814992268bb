"""`python -m shared doctor`: one test per pitfall, through the real SDKs against the local Azure.

Each asserts the diagnosis (the words a person acts on) and the exit code."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from emulators import az as az_standin
from emulators import managed_identity as identity
from emulators.azurite import Azurite
from shared.constants import COGNITIVE_SERVICES_SCOPE
from shared.doctor import Options, run_doctor
from tests.conftest import AzureCli, IdentityEndpoint, OpenAIEmulator, ungranted
from tests.doctor.conftest import Doctor, openai_settings, prepare_storage

ROLE = "Cognitive Services OpenAI User"
ALL_CHECKS = ["settings", "credential", "scope", "openai", "storage", "storage-access", "environment", "keys"]


# --- Healthy ------------------------------------------------------------------------------------------


def test_healthy_through_managed_identity(doctor: Doctor, mi_settings: dict[str, str]) -> None:
    result = doctor(mi_settings, "--json")
    assert result.code == 0, result.out
    assert list(result.checks) == ALL_CHECKS
    assert set(result.status().values()) == {"ok"}, result.out
    credential = result["credential"]["detail"]
    assert credential.startswith(
        "ManagedIdentityCredential (App Service/Functions identity endpoint, system-assigned) served a token for app "
    )
    assert f"oid {identity.SYSTEM_ASSIGNED.object_id}, tid " in credential
    assert "before it, EnvironmentCredential: EnvironmentCredential authentication unavailable" in credential
    assert "before it, WorkloadIdentityCredential:" in credential
    assert result["scope"]["detail"].startswith("token audience https://cognitiveservices.azure.com")
    assert "answered a 1-token completion" in result["openai"]["detail"]
    assert result["storage"]["detail"].startswith("identity-based: AzureWebJobsStorage__queueServiceUri=https://")
    assert "send+delete ok" in result["storage-access"]["detail"]
    assert "write+read+delete of _doctor/<uuid> ok" in result["storage-access"]["detail"]
    assert all(c["fix"] is None for c in result.checks.values())
    assert "eyJ" not in result.out + result.err  # no token (a JWT starts with eyJ), ever


def test_healthy_through_azure_cli(doctor: Doctor, dev_settings: dict[str, str], aoai: OpenAIEmulator) -> None:
    result = doctor(dev_settings)  # the table people read
    assert result.code == 0, result.out
    lines = result.out.splitlines()
    assert [line[:1] for line in lines if line[:1] in "✓✗!-" and line.strip()] == ["✓"] * len(ALL_CHECKS)
    assert f"✓ Credential        AzureCliCredential served a token for user {az_standin.DEFAULT_USER.name}" in (
        result.out
    )
    assert "chain (AZURE_TOKEN_CREDENTIALS=dev): SharedTokenCacheCredential > VisualStudioCodeCredential > " in (
        result.out
    )
    assert "Azurite development account (fine locally" in result.out
    assert "0 failed, 0 warning(s), 8 ok, 0 skipped" in result.out
    assert aoai.stats()["principals"] == [az_standin.DEFAULT_USER.object_id]


# --- Pitfalls -----------------------------------------------------------------------------------------


def test_wrong_scope(doctor: Doctor, mi_settings: dict[str, str]) -> None:
    result = doctor(mi_settings, "--json", "--scope", "https://storage.azure.com/.default")
    assert result.code == 1
    scope = result["scope"]
    assert scope["status"] == "fail"
    assert scope["detail"].startswith("token audience is https://storage.azure.com from scope https://storage.azure")
    assert "Azure OpenAI accepts only https://cognitiveservices.azure.com" in scope["detail"]
    assert scope["fix"] == (
        f"request the token with scope {COGNITIVE_SERVICES_SCOPE} (shared.connections.COGNITIVE_SERVICES_SCOPE)"
    )
    # ... and the service says the same thing, in its words
    assert result["openai"]["status"] == "fail"
    assert result["openai"]["detail"].startswith("401 from ")
    assert "audience is incorrect (https://cognitiveservices.azure.com)" in result["openai"]["detail"]
    assert (
        "the token's audience is https://storage.azure.com, not https://cognitiveservices.azure.com (see Scope)"
        in (result["openai"]["detail"])
    )
    assert result["credential"]["status"] == "ok"


def test_missing_role(doctor: Doctor, mi_settings: dict[str, str], managed_identity: IdentityEndpoint) -> None:
    principal = ungranted(managed_identity)
    resource = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/aoai-x"
    env = {**mi_settings, "AZURE_CLIENT_ID": managed_identity.ungranted_client_id}
    result = doctor(env, "--json", "--openai-resource-id", resource)
    assert result.code == 1
    assert (
        f"user-assigned, client id {managed_identity.ungranted_client_id} from AZURE_CLIENT_ID"
        in (result["credential"]["detail"])
    )
    openai_check = result["openai"]
    assert openai_check["status"] == "fail"
    assert openai_check["detail"].startswith("401 PermissionDenied from ")
    assert "Principal does not have access to API/Operation." in openai_check["detail"]
    assert (
        f"principal {principal.object_id} (app {principal.app_id}) lacks the '{ROLE}' role" in (openai_check["detail"])
    )
    assert "up to ~10 minutes" in openai_check["detail"]
    assert "rerun with --wait" in openai_check["detail"]
    assert openai_check["fix"] == (
        f'az role assignment create --assignee {principal.object_id} --role "{ROLE}" --scope {resource}'
    )
    others = {k: v for k, v in result.status().items() if k != "openai"}
    assert set(others.values()) == {"ok"}  # storage works: Azurite has no RBAC, only the role is missing


def test_missing_role_placeholder_scope_in_table(
    doctor: Doctor, mi_settings: dict[str, str], managed_identity: IdentityEndpoint
) -> None:
    env = {**mi_settings, "AZURE_CLIENT_ID": managed_identity.ungranted_client_id}
    result = doctor(env)
    assert result.code == 1
    oid = ungranted(managed_identity).object_id
    assert "✗ Azure OpenAI" in result.out
    assert f'fix: az role assignment create --assignee {oid} --role "{ROLE}" --scope "<OpenAI resource id>"' in (
        result.out
    )


def test_role_granted_with_delay_and_wait(
    doctor: Doctor, mi_settings: dict[str, str], managed_identity: IdentityEndpoint, aoai: OpenAIEmulator
) -> None:
    principal = ungranted(managed_identity)
    aoai.grant(principal.object_id, delay_seconds=5)
    try:
        env = {**mi_settings, "AZURE_CLIENT_ID": managed_identity.ungranted_client_id}
        result = doctor(env, "--json", "--wait", "60")
    finally:
        aoai.revoke(principal.object_id)
    assert result.code == 0, result.out
    assert result["openai"]["status"] == "ok"
    assert "answered after the role took effect" in result["openai"]["detail"]
    assert "PermissionDenied (attempt 1): the role may still be propagating; retrying in 5 s, 60 s left" in (result.err)
    assert "the role is in effect" in result.err
    assert aoai.stats()["by_status"]["401"] >= 1  # it really was denied first


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_wait_counts_down_on_a_terminal_and_gives_up(
    mi_settings: dict[str, str], managed_identity: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AZURE_CLIENT_ID", managed_identity.ungranted_client_id)
    for name, value in mi_settings.items():
        monkeypatch.setenv(name, value)
    terminal = Terminal()
    checks = {c.check: c for c in run_doctor(Options(wait=2), stderr=terminal)}
    assert checks["openai"].status == "fail"
    assert "still denied after 2 s of --wait" in checks["openai"].detail
    assert checks["openai"].fix is not None and checks["openai"].fix.startswith("az role assignment create --assignee ")
    frames = terminal.getvalue().split("\r")
    assert "PermissionDenied (attempt 1): the role may still be propagating; retrying in   2 s" in frames[1]
    assert "retrying in   1 s" in frames[2]


def test_azure_cli_logged_out(doctor: Doctor, dev_settings: dict[str, str], azure_cli: AzureCli) -> None:
    azure_cli.logout()
    result = doctor(dev_settings, "--json")
    assert result.code == 1
    credential = result["credential"]
    assert credential["status"] == "fail"
    assert "AzureCliCredential: unavailable: Please run 'az login' to set up an account" in credential["detail"]
    assert credential["fix"].startswith("run `az login`")
    assert result["scope"] == {
        "check": "scope",
        "status": "skip",
        "detail": "no token to inspect (Credential failed)",
        "fix": None,
    }
    assert result["openai"]["status"] == "skip"
    assert result["storage-access"]["status"] == "ok"  # the connection string needs no token
    assert result["environment"]["status"] == "ok"  # not a container: nothing more to explain


def test_container_without_any_credential(
    doctor: Doctor, aoai: OpenAIEmulator, names: dict[str, str], azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No managed-identity environment, no az on PATH, the full chain (IMDS is the suite's closed
    # loopback port, so DefaultAzureCredential's probe stays on this machine).
    settings = {**openai_settings(aoai, names), **azurite.settings()}
    prepare_storage(settings)
    assert "IDENTITY_ENDPOINT" not in os.environ and "AZURE_TOKEN_CREDENTIALS" not in os.environ
    monkeypatch.setenv("PATH", "/nonexistent")
    result = doctor({**settings, "DOCTOR_ASSUME_CONTAINER": "1"}, "--json")
    assert result.code == 1
    credential = result["credential"]
    assert credential["status"] == "fail"
    for line in (
        "EnvironmentCredential: unavailable: EnvironmentCredential authentication unavailable.",
        "WorkloadIdentityCredential: unavailable:",
        "ManagedIdentityCredential: unavailable: ManagedIdentityCredential authentication unavailable, no response",
        "AzureCliCredential: unavailable: Azure CLI not found on path",
    ):
        assert line in credential["detail"]
    assert credential["fix"] == "a container has no az login and no managed identity: see Environment below"
    environment = result["environment"]
    assert environment["status"] == "fail"
    assert environment["detail"].startswith("a container, Azure CLI not installed, and no credential works")
    assert "AZURE_FEDERATED_TOKEN_FILE" in environment["detail"]
    assert "-v $HOME/.azure:/root/.azure" in environment["detail"]
    assert 'docker run -v "$HOME/.azure:/root/.azure"' in environment["fix"]


def test_api_key_present_is_a_warning(doctor: Doctor, mi_settings: dict[str, str], aoai: OpenAIEmulator) -> None:
    secret = "0123456789abcdef0123456789abcdef"
    result = doctor({**mi_settings, "AZURE_OPENAI_API_KEY": secret}, "--json")
    assert result.code == 0  # warnings do not fail
    keys = result["keys"]
    assert keys["status"] == "warn"
    assert "AZURE_OPENAI_API_KEY is set: ignored" in keys["detail"]
    assert keys["fix"].startswith("remove AZURE_OPENAI_API_KEY from the app settings")
    assert result["openai"]["status"] == "ok"  # the key really is ignored: a token was sent
    assert aoai.stats()["by_status"] == {"200": 1}
    assert secret not in result.out and secret not in result.err


def test_api_key_in_table_uses_warning_mark(doctor: Doctor, dev_settings: dict[str, str]) -> None:
    result = doctor({**dev_settings, "AZURE_OPENAI_API_KEY": "not-a-real-key"})
    assert result.code == 0
    assert "! Keys in settings  AZURE_OPENAI_API_KEY is set: ignored" in result.out
    assert "not-a-real-key" not in result.out


@pytest.mark.usefixtures("managed_identity")
def test_azurite_account_key_in_azure_style_settings(
    doctor: Doctor, aoai: OpenAIEmulator, names: dict[str, str], azurite: Azurite
) -> None:
    env = {**openai_settings(aoai, names), **azurite.settings()}  # a managed identity, yet a key
    result = doctor(env, "--json")
    assert result.code == 1
    storage = result["storage"]
    assert storage["status"] == "fail"
    assert "Azurite development account connection string (an account key)" in storage["detail"]
    assert "look like Azure (IDENTITY_ENDPOINT set)" in storage["detail"]
    assert storage["fix"].startswith("in Azure remove AzureWebJobsStorage and set AzureWebJobsStorage__accountName")
    assert result["storage-access"]["status"] == "skip"


@pytest.mark.usefixtures("managed_identity")
def test_real_account_key_with_azure_flag(doctor: Doctor, aoai: OpenAIEmulator, names: dict[str, str]) -> None:
    key = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0wMDAwMDAwMDAwMDAwMDAwMDA="
    connection = (
        f"DefaultEndpointsProtocol=https;AccountName=contosojobs;AccountKey={key};EndpointSuffix=core.windows.net"
    )
    result = doctor({**openai_settings(aoai, names), "AzureWebJobsStorage": connection}, "--json", "--azure")
    assert result.code == 1
    storage = result["storage"]
    assert storage["detail"] == (
        "AzureWebJobsStorage is a connection string with an account key (AccountKey=) for account contosojobs: "
        "no keys anywhere"
    )
    assert "AzureWebJobsStorage__accountName=contosojobs" in storage["fix"]
    assert "rotate the key" in storage["fix"]
    # never probed (it would leave this machine), never printed
    assert result["storage-access"]["detail"] == "not probed: the storage settings must be fixed first"
    assert key not in result.out


def test_storage_credential_managedidentity_set_locally(
    doctor: Doctor,
    aoai: OpenAIEmulator,
    names: dict[str, str],
    azurite_keyless: Azurite,
    azure_cli: AzureCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Through local.settings.json, the way a developer gets there (default: ./local.settings.json).
    values = {
        **openai_settings(aoai, names),
        **azurite_keyless.settings(),
        "AzureWebJobsStorage": "",
        "AzureWebJobsStorage__credential": "managedidentity",
        "AZURE_TOKEN_CREDENTIALS": "dev",
    }
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    for name in values:
        monkeypatch.delenv(name, raising=False)  # only the file provides them (AZURE_TOKEN_CREDENTIALS too)
    result = doctor({}, "--json")
    assert result.code == 1
    assert result["settings"]["detail"].startswith("local.settings.json + environment: endpoint ")
    assert result["credential"]["status"] == "ok"  # the developer's az login
    storage = result["storage"]
    assert storage["status"] == "fail"
    assert "AzureWebJobsStorage__credential=managedidentity is set but this is a local run" in storage["detail"]
    assert storage["fix"] == (
        "remove AzureWebJobsStorage__credential from local.settings.json (keep it in Azure app settings only)"
    )
    assert result["storage-access"]["status"] == "skip"
    assert "AzureWebJobsStorage__credential" not in os.environ  # the file's values were applied only for the run


# --- More ways it breaks ------------------------------------------------------------------------------


def test_deployment_not_found(doctor: Doctor, dev_settings: dict[str, str]) -> None:
    result = doctor({**dev_settings, "AZURE_OPENAI_DEPLOYMENT": "gpt-does-not-exist"}, "--json")
    assert result.code == 1
    assert result["openai"]["detail"].startswith(
        "404 DeploymentNotFound: no deployment named 'gpt-does-not-exist' on http://127.0.0.1:"
    )
    assert result["openai"]["fix"].startswith("set AZURE_OPENAI_DEPLOYMENT to a deployment name")


def test_endpoint_unreachable(doctor: Doctor, dev_settings: dict[str, str]) -> None:
    result = doctor({**dev_settings, "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9"}, "--json")
    assert result.code == 1
    assert result["openai"]["detail"].startswith("cannot reach http://127.0.0.1:9: ")
    assert result["openai"]["fix"].startswith("check AZURE_OPENAI_ENDPOINT")


def test_missing_setting_skips_what_needs_it(
    doctor: Doctor, dev_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    env = {k: v for k, v in dev_settings.items() if k != "AZURE_OPENAI_ENDPOINT"}
    result = doctor(env, "--json")
    assert result.code == 1
    assert result["settings"]["status"] == "fail"
    assert result["settings"]["fix"] == "set AZURE_OPENAI_ENDPOINT in the app settings (environment)"
    assert result["openai"] == {
        "check": "openai",
        "status": "skip",
        "detail": "settings are incomplete (Settings failed)",
        "fix": None,
    }


def test_regional_endpoint_is_refused_before_any_call(doctor: Doctor, dev_settings: dict[str, str]) -> None:
    endpoint = "https://eastus.api.cognitive.microsoft.com"
    result = doctor({**dev_settings, "AZURE_OPENAI_ENDPOINT": endpoint}, "--json")  # never dialled: guarded
    assert result.code == 1
    assert result["settings"]["detail"].startswith(f"AZURE_OPENAI_ENDPOINT={endpoint} is a regional endpoint")
    assert result["settings"]["fix"].startswith("set AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com")
    assert result["openai"]["status"] == "skip"


def test_unknown_token_credentials_value(doctor: Doctor, dev_settings: dict[str, str]) -> None:
    result = doctor({**dev_settings, "AZURE_TOKEN_CREDENTIALS": "laptop"}, "--json")
    assert result.code == 1
    assert result["credential"]["detail"].startswith(
        "DefaultAzureCredential refused AZURE_TOKEN_CREDENTIALS='laptop': Invalid value for AZURE_TOKEN_CREDENTIALS"
    )
    assert result["credential"]["fix"].startswith("set AZURE_TOKEN_CREDENTIALS to dev (laptop)")


def test_client_id_of_no_attached_identity(doctor: Doctor, mi_settings: dict[str, str]) -> None:
    client_id = "11111111-2222-4333-8444-555555555555"
    result = doctor({**mi_settings, "AZURE_CLIENT_ID": client_id}, "--json")
    assert result.code == 1
    credential = result["credential"]
    assert "ManagedIdentityCredential: failed: " in credential["detail"]  # not just unavailable: the chain stops
    assert "No managed identity matches the requested client_id" in credential["detail"]
    assert credential["fix"] == (
        f"AZURE_CLIENT_ID={client_id} is not a user-assigned identity attached to this app: attach it, or fix/unset "
        "AZURE_CLIENT_ID"
    )
    assert result["storage-access"]["detail"] == "identity-based storage needs a token (Credential failed)"


def test_storage_role_missing_names_the_role(
    doctor: Doctor, dev_settings: dict[str, str], forbidden_storage: str
) -> None:
    # Storage answers 403 AuthorizationPermissionMismatch, as Azure does to a principal without a data role.
    outcome = doctor({**dev_settings, "AzureWebJobsStorage": forbidden_storage}, "--json")
    assert outcome.code == 1
    access = outcome["storage-access"]
    assert access["status"] == "fail"
    assert "AuthorizationPermissionMismatch" in access["detail"]
    assert "Storage Queue Data" in access["detail"] + access["fix"]
    assert "az role assignment create" in access["fix"]
