"""``public_access_disabled``: storage or Azure OpenAI refusing this network (infra's ``vnetEnabled``).

With private networking on, both accounts have public network access off, so the doctor run from a
laptop (or the app, when its VNet integration or private DNS is wrong) gets a 403 that is about the
network, not the role: storage answers ``AuthorizationFailure`` (a missing data role is
``AuthorizationPermissionMismatch``), Azure OpenAI a 403 whose message says public access is
disabled or the network/firewall rules refuse it. Decided from the error alone, so no network here.
"""

from __future__ import annotations

import httpx2
import openai
import pytest
from azure.core.exceptions import HttpResponseError

from shared.constants import QUEUE_CONTRIBUTOR_ROLE, STORAGE_CONNECTION
from shared.doctor.model import Context, Options
from shared.doctor.openai_probe import _openai_failed
from shared.doctor.storage import _storage_failed
from shared.settings import Settings
from shared.storage_clients import StorageEndpoints

OID = "5a1e0000-0000-4000-8000-00000000f002"
ACCOUNT = "stabc123"
ENDPOINT = "https://oai-abc123.openai.azure.com"
WHERE = f"{ENDPOINT}, deployment d"
SETTINGS = Settings.from_env({"AZURE_OPENAI_ENDPOINT": ENDPOINT, "AZURE_OPENAI_DEPLOYMENT": "d"})
STORAGE = {
    f"{STORAGE_CONNECTION}__queueServiceUri": f"https://{ACCOUNT}.queue.core.windows.net",
    f"{STORAGE_CONNECTION}__blobServiceUri": f"https://{ACCOUNT}.blob.core.windows.net",
}


def context(*, azure: bool = False) -> Context:
    ctx = Context(
        env={"DOCTOR_ASSUME_CONTAINER": "0", **STORAGE},
        options=Options(azure=azure),
        source="environment",
        claims={"oid": OID, "aud": "https://cognitiveservices.azure.com", "tid": "t"},
    )
    ctx.settings = SETTINGS
    ctx.storage = StorageEndpoints.from_settings(env=STORAGE)
    return ctx


def storage_error(code: str, message: str) -> HttpResponseError:
    """A storage 403 as the SDK raises it: status 403 and the x-ms-error-code as ``error_code``."""
    error = HttpResponseError(message=f"{message}\nErrorCode:{code}")
    error.status_code = 403
    error.error_code = code  # type: ignore[attr-defined]  # set by the storage SDK's error handling
    return error


def openai_403(message: str, code: str | None = "403") -> openai.PermissionDeniedError:
    request = httpx2.Request("POST", f"{ENDPOINT}/openai/v1/chat/completions")
    body = {"code": code, "message": message}
    return openai.PermissionDeniedError(
        f"Error code: 403 - {body}", response=httpx2.Response(403, request=request), body=body
    )


# --- Storage ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["queue", "blob"])
def test_storage_authorization_failure_is_the_network_not_the_role(step: str) -> None:
    check = _storage_failed(
        context(),
        storage_error("AuthorizationFailure", "This request is not authorized to perform this operation."),
        step,
    )
    assert (check.status, check.reason) == ("fail", "public_access_disabled")
    assert "403 AuthorizationFailure" in check.detail and "public network access is disabled" in check.detail
    assert "private endpoint" in check.detail and "privatelink" in check.detail
    assert check.fix is not None
    # The way in from here, then the way back: exact commands naming the account, in order.
    commands = [
        f"az storage account update -n {ACCOUNT} --public-network-access Enabled --default-action Deny",
        f"az storage account network-rule add --account-name {ACCOUNT} --ip-address <your public IP>",
        f"az storage account network-rule remove --account-name {ACCOUNT} --ip-address <your public IP>",
        f"az storage account update -n {ACCOUNT} --public-network-access Disabled",
    ]
    positions = [check.fix.index(command) for command in commands]
    assert positions == sorted(positions)
    assert "inside the VNet" in check.fix


def test_storage_authorization_failure_in_azure_points_at_the_vnet_integration_and_dns() -> None:
    check = _storage_failed(context(azure=True), storage_error("AuthorizationFailure", "not authorized"), "queue")
    assert check.reason == "public_access_disabled"
    assert check.fix is not None
    assert "virtualNetworkSubnetId" in check.fix and "privatelink.blob/queue/table" in check.fix
    assert "network-rule add" not in check.fix  # the app does not allow-list itself


def test_storage_permission_mismatch_is_still_the_role() -> None:
    error = storage_error("AuthorizationPermissionMismatch", "not authorized using this permission")
    check = _storage_failed(context(), error, "queue")
    assert check.reason == "storage_role_missing"
    assert check.fix is not None and QUEUE_CONTRIBUTOR_ROLE in check.fix


# --- Azure OpenAI -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "Public access is disabled. Please configure private endpoint.",
        "Access denied due to Virtual Network/Firewall rules.",
        "Traffic is not from an approved private endpoint.",
    ],
)
def test_openai_403_for_the_network_is_public_access_disabled(message: str) -> None:
    check = _openai_failed(context(), SETTINGS, openai_403(message), WHERE)
    assert (check.status, check.reason) == ("fail", "public_access_disabled")
    assert message in check.detail  # the service's own words
    assert "privatelink.openai.azure.com" in check.detail
    assert check.fix is not None
    show = "$(az cognitiveservices account show --name oai-abc123 --resource-group <resource-group> --query id -o tsv)"
    rule = "-g <resource-group> -n oai-abc123 --ip-address <your public IP>"
    commands = [
        f"az resource update --ids {show} --set properties.publicNetworkAccess=Enabled",
        f"az cognitiveservices account network-rule add {rule}",
        f"az cognitiveservices account network-rule remove {rule}",
        f"az resource update --ids {show} --set properties.publicNetworkAccess=Disabled",
    ]
    positions = [check.fix.index(command) for command in commands]
    assert positions == sorted(positions)


def test_openai_403_for_the_network_uses_the_resource_id_given() -> None:
    ctx = context()
    ctx.options = Options(openai_resource_id="/subscriptions/s/resourceGroups/rg/providers/x/accounts/oai-abc123")
    check = _openai_failed(ctx, SETTINGS, openai_403("Public access is disabled."), WHERE)
    assert check.fix is not None
    assert "az resource update --ids /subscriptions/s/resourceGroups/rg/providers/x/accounts/oai-abc123 " in check.fix


def test_openai_403_for_the_network_in_azure_points_at_the_private_endpoint_dns() -> None:
    check = _openai_failed(context(azure=True), SETTINGS, openai_403("Public access is disabled."), WHERE)
    assert check.reason == "public_access_disabled"
    assert check.fix is not None
    assert "privatelink.openai.azure.com" in check.fix and "privatelink.cognitiveservices.azure.com" in check.fix
    assert "network-rule" not in check.fix


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (openai_403("Principal does not have access to API/Operation.", code="PermissionDenied"), "role_missing"),
        (openai_403("Access token is missing, invalid, or expired."), "token_rejected"),
    ],
)
def test_other_openai_403s_keep_their_reasons(error: openai.PermissionDeniedError, reason: str) -> None:
    assert _openai_failed(context(), SETTINGS, error, WHERE).reason == reason
