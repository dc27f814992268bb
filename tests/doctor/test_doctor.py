"""`python -m shared doctor`: one test per pitfall, through the real SDKs against the local Azure.

Each asserts the exit code, each check's status and ``reason`` (the stable code scripts match on)
and the key facts of the fix a person acts on (role, principal, command, setting): not whole
sentences, so rewording a message does not break them."""

from __future__ import annotations

import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from emulators import az as az_standin
from emulators import managed_identity as identity
from emulators.azurite import Azurite
from emulators.stack import services
from emulators.stack.services import DEPLOYMENT, SECOND_DEPLOYMENT
from emulators.tokens import TokenIssuer
from shared.constants import (
    BLOB_OWNER_ROLE,
    COGNITIVE_SERVICES_SCOPE,
    OPENAI_USER_ROLE,
    QUEUE_CONTRIBUTOR_ROLE,
    STORAGE_CONNECTION,
)
from shared.doctor import Options, run_doctor
from tests.conftest import AzureCli, IdentityEndpoint, OpenAIEmulator, ungranted
from tests.doctor.conftest import Doctor, openai_settings, prepare_storage

ALL_CHECKS = ["settings", "credential", "scope", "openai", "storage", "storage-access", "environment", "keys"]


# --- Healthy ------------------------------------------------------------------------------------------


def test_healthy_through_managed_identity(doctor: Doctor, mi_settings: dict[str, str]) -> None:
    result = doctor(mi_settings, "--json")
    assert result.code == 0, result.out
    assert list(result.checks) == ALL_CHECKS
    assert set(result.status().values()) == {"ok"}, result.out
    assert result.reasons() == {}  # every check: reason "ok"
    credential = result["credential"]["detail"]
    assert credential.startswith("ManagedIdentityCredential (")
    for fact in ("App Service/Functions identity endpoint", "system-assigned", identity.SYSTEM_ASSIGNED.object_id):
        assert fact in credential
    # why each credential before it did not serve, in the SDK's words
    assert "EnvironmentCredential authentication unavailable" in credential
    assert "WorkloadIdentityCredential:" in credential
    assert "https://cognitiveservices.azure.com" in result["scope"]["detail"]
    # the model that answered, and what a reasoning model means for jobs
    served = result["openai"]["detail"]
    assert "model gpt-5.4-mini-2026-03-17, a reasoning model (16 reasoning tokens in the probe)" in served
    assert "max_completion_tokens" in served and "temperature" in served
    assert f"{STORAGE_CONNECTION}__queueServiceUri=https://" in result["storage"]["detail"]
    assert "_doctor/<uuid>" in result["storage-access"]["detail"]
    assert all(c["fix"] is None for c in result.checks.values())
    assert "eyJ" not in result.out + result.err  # no token (a JWT starts with eyJ), ever


def test_healthy_through_azure_cli(doctor: Doctor, dev_settings: dict[str, str], aoai: OpenAIEmulator) -> None:
    result = doctor(dev_settings)  # the table people read
    assert result.code == 0, result.out
    lines = result.out.splitlines()
    assert [line[:1] for line in lines if line[:1] in "✓✗!-" and line.strip()] == ["✓"] * len(ALL_CHECKS)
    credential = next(line for line in lines if line.startswith("✓ Credential"))
    assert "AzureCliCredential" in credential and az_standin.DEFAULT_USER.name in credential
    assert "AZURE_TOKEN_CREDENTIALS=dev" in result.out  # the narrowed chain is named
    assert "Azurite development account" in result.out
    assert "0 failed, 0 warning(s), 8 ok, 0 skipped" in result.out
    assert aoai.stats()["principals"] == [az_standin.DEFAULT_USER.object_id]


# --- Pitfalls -----------------------------------------------------------------------------------------


def test_an_older_model_is_named_without_the_reasoning_rules(doctor: Doctor, mi_settings: dict[str, str]) -> None:
    result = doctor({**mi_settings, "AZURE_OPENAI_DEPLOYMENT": SECOND_DEPLOYMENT}, "--json")
    assert result.code == 0, result.out
    served = result["openai"]["detail"]
    assert served.endswith("; model gpt-4.1-mini-2025-04-14") and "reasoning" not in served


def test_wrong_scope(doctor: Doctor, mi_settings: dict[str, str]) -> None:
    result = doctor(mi_settings, "--json", "--scope", "https://storage.azure.com/.default")
    assert result.code == 1
    # the token's audience is wrong, and the service says the same thing in its 401
    assert result.reasons() == {"scope": "wrong_audience", "openai": "wrong_audience"}
    assert result.status()["scope"] == result.status()["openai"] == "fail"
    assert "https://storage.azure.com" in result["scope"]["detail"]
    assert COGNITIVE_SERVICES_SCOPE in result["scope"]["fix"]
    assert "audience is incorrect" in result["openai"]["detail"]  # the service's own words
    assert COGNITIVE_SERVICES_SCOPE in result["openai"]["fix"]


def test_missing_role(doctor: Doctor, mi_settings: dict[str, str], managed_identity: IdentityEndpoint) -> None:
    principal = ungranted(managed_identity)
    resource = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/aoai-x"
    env = {**mi_settings, "AZURE_CLIENT_ID": managed_identity.ungranted_client_id}
    result = doctor(env, "--json", "--openai-resource-id", resource)
    assert result.code == 1
    assert result.reasons() == {"openai": "role_missing"}  # storage works: Azurite has no RBAC
    assert managed_identity.ungranted_client_id in result["credential"]["detail"]
    assert "user-assigned" in result["credential"]["detail"]
    openai_check = result["openai"]
    assert openai_check["status"] == "fail"
    for fact in ("PermissionDenied", principal.object_id, principal.app_id, OPENAI_USER_ROLE, "--wait"):
        assert fact in openai_check["detail"]
    fix = openai_check["fix"]
    assert fix.startswith("az role assignment create ")
    for fact in (f"--assignee {principal.object_id}", f'--role "{OPENAI_USER_ROLE}"', f"--scope {resource}"):
        assert fact in fix


def test_missing_role_placeholder_scope_in_table(
    doctor: Doctor, mi_settings: dict[str, str], managed_identity: IdentityEndpoint
) -> None:
    env = {**mi_settings, "AZURE_CLIENT_ID": managed_identity.ungranted_client_id}
    result = doctor(env)
    assert result.code == 1
    oid = ungranted(managed_identity).object_id
    assert "✗ Azure OpenAI" in result.out
    fix = next(line.strip() for line in result.out.splitlines() if "fix: az role assignment create" in line)
    for fact in (f"--assignee {oid}", OPENAI_USER_ROLE, '--scope "<OpenAI resource id>"'):
        assert fact in fix


def test_role_granted_with_delay_and_wait(
    doctor: Doctor, mi_settings: dict[str, str], managed_identity: IdentityEndpoint, aoai: OpenAIEmulator
) -> None:
    principal = ungranted(managed_identity)
    aoai.grant(principal.object_id, delay_seconds=600)  # assigned, not in effect for the doctor's first try
    try:
        env = {**mi_settings, "AZURE_CLIENT_ID": managed_identity.ungranted_client_id}
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(doctor, env, "--json", "--wait", "60")
            deadline = time.monotonic() + 60
            while not any(r.code == "PermissionDenied" for r in aoai.requests()):  # the first try, refused
                assert not running.done() and time.monotonic() < deadline, "the doctor never asked the model"
                time.sleep(0.05)
            aoai.grant(principal.object_id, delay_seconds=1)  # the assignment propagates now
            result = running.result(timeout=120)
    finally:
        aoai.revoke(principal.object_id)
    assert result.code == 0, result.out
    assert result["openai"]["status"] == "ok"
    assert result.reasons() == {"openai": "ok_after_wait"}
    # one line per retry on stderr (not a terminal): attempt, delay, time left
    assert "PermissionDenied (attempt 1)" in result.err
    assert "5 s, 60 s left" in result.err
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
    assert checks["openai"].reason == "role_missing_after_wait"
    assert "2 s of --wait" in checks["openai"].detail
    assert checks["openai"].fix is not None
    assert f"--assignee {ungranted(managed_identity).object_id}" in checks["openai"].fix
    frames = terminal.getvalue().split("\r")  # one live line, redrawn each second
    assert "PermissionDenied (attempt 1)" in frames[1]
    assert "retrying in   2 s" in frames[1]
    assert "retrying in   1 s" in frames[2]


def test_azure_cli_logged_out(doctor: Doctor, dev_settings: dict[str, str], azure_cli: AzureCli) -> None:
    azure_cli.logout()
    result = doctor(dev_settings, "--json")
    assert result.code == 1
    assert result.reasons() == {
        "credential": "az_not_logged_in",
        "scope": "no_token",
        "openai": "no_token",
        "storage": "development_storage",
        "environment": "see_credential",  # not a container: nothing more to explain
    }
    assert result.status() == {
        **dict.fromkeys(ALL_CHECKS, "ok"),
        "credential": "fail",
        "scope": "skip",
        "openai": "skip",
    }  # storage access still works: the connection string needs no token
    credential = result["credential"]
    assert "AzureCliCredential: unavailable:" in credential["detail"]
    assert "az login" in credential["detail"]  # the CLI's own message
    assert "`az login`" in credential["fix"]
    assert result["scope"]["fix"] is None


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
    assert result["credential"]["reason"] == result["environment"]["reason"] == "container_without_credential"
    assert result["credential"]["status"] == result["environment"]["status"] == "fail"
    credential = result["credential"]
    # every credential of the full chain, with how it ended
    for name in ("EnvironmentCredential", "WorkloadIdentityCredential", "ManagedIdentityCredential"):
        assert f"{name}: unavailable:" in credential["detail"]
    assert "AzureCliCredential: unavailable: Azure CLI not found" in credential["detail"]
    assert "Environment" in credential["fix"]  # points at the check that has the options
    environment = result["environment"]
    assert environment["detail"].startswith("a container, Azure CLI not installed")
    for option in (
        "AZURE_FEDERATED_TOKEN_FILE",
        "$HOME/.azure:/root/.azure",
        "AZURE_TOKEN_CREDENTIALS=AzureCliCredential",
    ):
        assert option in environment["detail"]
    for fact in ("docker run", "$HOME/.azure:/root/.azure", "AZURE_FEDERATED_TOKEN_FILE"):
        assert fact in environment["fix"]


def test_api_key_present_is_a_warning(doctor: Doctor, mi_settings: dict[str, str], aoai: OpenAIEmulator) -> None:
    secret = "0123456789abcdef0123456789abcdef"
    result = doctor({**mi_settings, "AZURE_OPENAI_API_KEY": secret}, "--json")
    assert result.code == 0  # warnings do not fail
    assert result.reasons() == {"keys": "key_in_settings"}
    keys = result["keys"]
    assert keys["status"] == "warn"
    assert "AZURE_OPENAI_API_KEY" in keys["detail"]
    assert keys["fix"].startswith("remove AZURE_OPENAI_API_KEY")
    assert "app settings" in keys["fix"]  # a managed-identity environment: these are app settings
    assert result["openai"]["status"] == "ok"  # the key really is ignored: a token was sent
    assert aoai.stats()["by_status"] == {"200": 1}
    assert secret not in result.out and secret not in result.err


def test_api_key_in_table_uses_warning_mark(doctor: Doctor, dev_settings: dict[str, str]) -> None:
    result = doctor({**dev_settings, "AZURE_OPENAI_API_KEY": "not-a-real-key"})
    assert result.code == 0
    warning = next(line for line in result.out.splitlines() if line.startswith("! "))
    assert "Keys in settings" in warning and "AZURE_OPENAI_API_KEY" in warning
    assert "not-a-real-key" not in result.out


@pytest.mark.usefixtures("managed_identity")
def test_azurite_account_key_in_azure_style_settings(
    doctor: Doctor, aoai: OpenAIEmulator, names: dict[str, str], azurite: Azurite
) -> None:
    env = {**openai_settings(aoai, names), **azurite.settings()}  # a managed identity, yet a key
    result = doctor(env, "--json")
    assert result.code == 1
    assert result.reasons() == {"storage": "development_storage_in_azure", "storage-access": "storage_settings_failed"}
    storage = result["storage"]
    assert storage["status"] == "fail"
    assert "IDENTITY_ENDPOINT" in storage["detail"]  # why the settings look like Azure
    for fact in (
        f"remove {STORAGE_CONNECTION}",
        f"{STORAGE_CONNECTION}__accountName",
        BLOB_OWNER_ROLE,
        QUEUE_CONTRIBUTOR_ROLE,
    ):
        assert fact in storage["fix"]
    assert result["storage-access"]["status"] == "skip"


@pytest.mark.usefixtures("managed_identity")
def test_real_account_key_with_azure_flag(doctor: Doctor, aoai: OpenAIEmulator, names: dict[str, str]) -> None:
    key = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0wMDAwMDAwMDAwMDAwMDAwMDA="
    connection = (
        f"DefaultEndpointsProtocol=https;AccountName=contosojobs;AccountKey={key};EndpointSuffix=core.windows.net"
    )
    result = doctor({**openai_settings(aoai, names), STORAGE_CONNECTION: connection}, "--json", "--azure")
    assert result.code == 1
    assert result.reasons() == {"storage": "storage_account_key", "storage-access": "storage_settings_failed"}
    storage = result["storage"]
    assert "AccountKey=" in storage["detail"] and "contosojobs" in storage["detail"]
    for fact in (f"{STORAGE_CONNECTION}__accountName=contosojobs", BLOB_OWNER_ROLE, QUEUE_CONTRIBUTOR_ROLE, "rotate"):
        assert fact in storage["fix"]
    # never probed (it would leave this machine), never printed
    assert result["storage-access"]["status"] == "skip"
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
        STORAGE_CONNECTION: "",
        f"{STORAGE_CONNECTION}__credential": "managedidentity",
        "AZURE_TOKEN_CREDENTIALS": "dev",
    }
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    for name in values:
        monkeypatch.delenv(name, raising=False)  # only the file provides them (AZURE_TOKEN_CREDENTIALS too)
    result = doctor({}, "--json")
    assert result.code == 1
    assert result.reasons() == {
        "storage": "managed_identity_credential_locally",
        "storage-access": "storage_settings_failed",
    }
    assert result["settings"]["detail"].startswith("local.settings.json + environment")  # the file was read
    assert result["credential"]["status"] == "ok"  # the developer's az login
    fix = result["storage"]["fix"]
    assert fix.startswith(f"remove {STORAGE_CONNECTION}__credential")
    assert "local.settings.json" in fix
    assert f"{STORAGE_CONNECTION}__credential" not in os.environ  # the file's values were applied only for the run


# --- More ways it breaks ------------------------------------------------------------------------------


def test_deployment_not_found(doctor: Doctor, dev_settings: dict[str, str]) -> None:
    result = doctor({**dev_settings, "AZURE_OPENAI_DEPLOYMENT": "gpt-does-not-exist"}, "--json")
    assert result.code == 1
    assert result["openai"]["reason"] == "deployment_not_found"
    assert "gpt-does-not-exist" in result["openai"]["detail"]
    fix = result["openai"]["fix"]
    assert "AZURE_OPENAI_DEPLOYMENT" in fix
    assert "az cognitiveservices account deployment list" in fix


def test_endpoint_unreachable(doctor: Doctor, dev_settings: dict[str, str]) -> None:
    result = doctor({**dev_settings, "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9"}, "--json")
    assert result.code == 1
    assert result["openai"]["reason"] == "unreachable"
    assert "http://127.0.0.1:9" in result["openai"]["detail"]
    assert "AZURE_OPENAI_ENDPOINT" in result["openai"]["fix"]


def test_missing_setting_skips_what_needs_it(
    doctor: Doctor, dev_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    env = {k: v for k, v in dev_settings.items() if k != "AZURE_OPENAI_ENDPOINT"}
    result = doctor(env, "--json")
    assert result.code == 1
    assert result.reasons() == {
        "settings": "settings_invalid",
        "openai": "settings_failed",
        "storage": "development_storage",
        "storage-access": "settings_failed",
    }
    assert result.status()["settings"] == "fail"
    assert result.status()["openai"] == result.status()["storage-access"] == "skip"
    fix = result["settings"]["fix"]
    assert fix.startswith("set AZURE_OPENAI_ENDPOINT")
    assert "app settings" in fix  # no settings file: the environment is where to set it
    assert result["openai"]["fix"] is None


def test_a_container_clash_is_named_before_any_probe(doctor: Doctor, dev_settings: dict[str, str]) -> None:
    # The worker-only container set to the results container: producers, who read results, could read
    # the worker's retry state. The settings check names both settings and nothing is probed.
    result = doctor({**dev_settings, "STAGING_CONTAINER": dev_settings["RESULTS_CONTAINER"]}, "--json")
    assert result.code == 1
    assert result["settings"]["reason"] == "container_clash"
    assert "RESULTS_CONTAINER" in result["settings"]["detail"]
    assert "STAGING_CONTAINER" in result["settings"]["detail"]
    assert result["settings"]["fix"].startswith("set STAGING_CONTAINER (or RESULTS_CONTAINER)")
    assert result.reasons()["storage-access"] == result.reasons()["openai"] == "settings_failed"


def test_regional_endpoint_is_refused_before_any_call(doctor: Doctor, dev_settings: dict[str, str]) -> None:
    endpoint = "https://eastus.api.cognitive.microsoft.com"
    result = doctor({**dev_settings, "AZURE_OPENAI_ENDPOINT": endpoint}, "--json")  # never dialled: guarded
    assert result.code == 1
    assert result["settings"]["reason"] == "regional_endpoint"
    assert endpoint in result["settings"]["detail"]
    assert "AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com" in result["settings"]["fix"]
    assert result["openai"]["status"] == "skip"
    assert result["openai"]["reason"] == "settings_failed"


def test_unknown_token_credentials_value(doctor: Doctor, dev_settings: dict[str, str]) -> None:
    result = doctor({**dev_settings, "AZURE_TOKEN_CREDENTIALS": "laptop"}, "--json")
    assert result.code == 1
    assert result["credential"]["reason"] == "token_credentials_invalid"
    assert "'laptop'" in result["credential"]["detail"]
    fix = result["credential"]["fix"]
    for value in ("AZURE_TOKEN_CREDENTIALS", "dev", "ManagedIdentityCredential"):
        assert value in fix


def test_client_id_of_no_attached_identity(doctor: Doctor, mi_settings: dict[str, str]) -> None:
    client_id = "11111111-2222-4333-8444-555555555555"
    result = doctor({**mi_settings, "AZURE_CLIENT_ID": client_id}, "--json")
    assert result.code == 1
    assert result.reasons() == {
        "credential": "client_id_not_attached",
        "scope": "no_token",
        "openai": "no_token",
        "storage-access": "no_token",
        "environment": "see_credential",
    }
    credential = result["credential"]
    assert "ManagedIdentityCredential: failed: " in credential["detail"]  # not just unavailable: the chain stops
    assert "No managed identity matches the requested client_id" in credential["detail"]  # the SDK's words
    assert f"AZURE_CLIENT_ID={client_id}" in credential["fix"]
    assert result["storage-access"]["status"] == "skip"


def test_storage_role_missing_names_the_role(
    doctor: Doctor, dev_settings: dict[str, str], forbidden_storage: str
) -> None:
    # Storage answers 403 AuthorizationPermissionMismatch, as Azure does to a principal without a data role.
    outcome = doctor({**dev_settings, STORAGE_CONNECTION: forbidden_storage}, "--json")
    assert outcome.code == 1
    access = outcome["storage-access"]
    assert access["status"] == "fail"
    assert access["reason"] == "storage_role_missing"
    assert "AuthorizationPermissionMismatch" in access["detail"]
    assert az_standin.DEFAULT_USER.object_id in access["detail"]
    fix = access["fix"]
    assert fix.startswith("az role assignment create")
    for fact in (f"--assignee {az_standin.DEFAULT_USER.object_id}", QUEUE_CONTRIBUTOR_ROLE, "az storage account show"):
        assert fact in fix


def test_every_pool_entry_is_probed_and_the_one_lacking_the_role_is_named(
    doctor: Doctor, mi_settings: dict[str, str], aoai: OpenAIEmulator, issuer: TokenIssuer
) -> None:
    with services.start_openai_emulator(issuer, grants=[]) as west:  # a second region, no role granted there
        pool = [
            {"name": "chat", "endpoint": aoai.endpoint, "deployment": DEPLOYMENT, "priority": 1},
            {"name": "chat", "endpoint": west.endpoint, "deployment": DEPLOYMENT, "priority": 2},
        ]
        settings = {**mi_settings, "AZURE_OPENAI_POOL": json.dumps(pool), "AZURE_OPENAI_DEPLOYMENT": "chat"}
        refused = doctor(settings, "--json")
        assert refused.code != 0 and refused.reasons()["openai"] == "role_missing", refused.out
        detail = refused["openai"]["detail"]
        assert detail.startswith("AZURE_OPENAI_POOL entry 2 of 2:") and west.endpoint in detail
        assert OPENAI_USER_ROLE in detail
        west.grant(identity.SYSTEM_ASSIGNED.object_id)
        healthy = doctor(settings, "--json")
        assert healthy.status()["openai"] == "ok", healthy.out
        assert aoai.endpoint in healthy["openai"]["detail"] and west.endpoint in healthy["openai"]["detail"]
