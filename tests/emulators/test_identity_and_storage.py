"""The managed-identity endpoint, the az stand-in and keyless Azurite, through the real SDKs."""

from __future__ import annotations

import asyncio
import socket

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import CredentialUnavailableError
from azure.identity.aio import AzureCliCredential, DefaultAzureCredential, ManagedIdentityCredential
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient
from pytest_socket import SocketConnectBlockedError

from emulators import netguard
from emulators.azurite import Azurite
from emulators.tokens import unverified_claims
from tests.conftest import AzureCli, IdentityEndpoint

STORAGE = "https://storage.azure.com/.default"
COGNITIVE = "https://cognitiveservices.azure.com/.default"


async def test_managed_identity_token_has_entra_v1_shape(managed_identity: IdentityEndpoint) -> None:
    async with ManagedIdentityCredential() as credential:
        token = await credential.get_token(COGNITIVE)
    claims = unverified_claims(token.token)
    assert claims["aud"] == "https://cognitiveservices.azure.com"
    assert claims["iss"].startswith("https://sts.windows.net/")
    assert {"oid", "tid", "appid", "nbf", "iat", "exp"} <= claims.keys()
    assert token.expires_on - claims["iat"] >= 3600


async def test_user_assigned_identity_is_selected_by_client_id(managed_identity: IdentityEndpoint) -> None:
    async with ManagedIdentityCredential(client_id=managed_identity.ungranted_client_id) as credential:
        token = await credential.get_token(COGNITIVE)
    assert unverified_claims(token.token)["appid"] == managed_identity.ungranted_client_id


async def test_wrong_identity_header_is_reported_by_the_sdk(
    managed_identity: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")
    async with ManagedIdentityCredential() as credential:
        with pytest.raises(ClientAuthenticationError, match="X-IDENTITY-HEADER"):
            await credential.get_token(COGNITIVE)


async def test_cli_standin_serves_azure_cli_credential(azure_cli: AzureCli) -> None:
    async with AzureCliCredential() as credential:
        token = await credential.get_token(COGNITIVE)
    claims = unverified_claims(token.token)
    assert claims["aud"] == "https://cognitiveservices.azure.com"
    assert claims["upn"] == "dev@contoso.example"
    assert azure_cli.invocations() == 1


async def test_cli_logged_out_says_run_az_login(azure_cli: AzureCli) -> None:
    azure_cli.logout()
    async with AzureCliCredential() as credential:
        with pytest.raises(CredentialUnavailableError, match="az login"):
            await credential.get_token(COGNITIVE)


async def test_keyless_storage_round_trip(
    azurite_keyless: Azurite, managed_identity: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in azurite_keyless.settings().items():
        monkeypatch.setenv(name, value)
    async with DefaultAzureCredential() as credential:
        async with QueueServiceClient(azurite_keyless.service_url("queue"), credential=credential) as queues:
            queue = queues.get_queue_client("keyless-roundtrip")
            await queue.create_queue()
            await queue.send_message("hello without a key")
            received = [m async for m in queue.receive_messages()]
            assert [m.content for m in received] == ["hello without a key"]
            await queue.delete_message(received[0])
        async with BlobServiceClient(azurite_keyless.service_url("blob"), credential=credential) as blobs:
            container = blobs.get_container_client("keyless-roundtrip")
            await container.create_container()
            await container.upload_blob("a.json", b'{"ok": true}')
            download = await container.download_blob("a.json")
            assert await download.readall() == b'{"ok": true}'
    assert managed_identity.tokens_issued("https://storage.azure.com") >= 1


class _FixedToken:
    """A credential that returns one pre-minted token (to show Azurite's audience check)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self._token, 2**31)

    async def close(self) -> None:
        return None


async def test_keyless_storage_rejects_wrong_audience(azurite_keyless: Azurite, issuer, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from emulators.managed_identity import SYSTEM_ASSIGNED

    for name, value in azurite_keyless.settings().items():
        monkeypatch.setenv(name, value)
    token, _ = issuer.mint(audience=COGNITIVE, principal=SYSTEM_ASSIGNED)
    async with QueueServiceClient(azurite_keyless.service_url("queue"), credential=_FixedToken(token)) as queues:
        with pytest.raises(HttpResponseError) as caught:
            await queues.get_queue_client("wrong-audience").create_queue()
    assert caught.value.status_code == 403
    assert caught.value.error_code == "AuthenticationFailed"


async def test_plain_azurite_connection_string(azurite: Azurite) -> None:
    async with QueueServiceClient.from_connection_string(azurite.connection_string) as queues:
        queue = queues.get_queue_client("plain-roundtrip")
        await queue.create_queue()
        await queue.send_message("x")
        assert (await queue.get_queue_properties()).approximate_message_count == 1


def test_guard_refuses_non_loopback_connections() -> None:
    with pytest.raises(Exception, match=r"network guard|Blocked|not allowed|allowed") as caught:
        socket.create_connection(("169.254.169.254", 80), timeout=0.2)
    assert not isinstance(caught.value, TimeoutError)


def test_pytest_socket_allows_only_loopback_in_this_process() -> None:
    # The second layer, on its own: pytest-socket's --allow-hosts (pyproject addopts) refuses the connect before the
    # audit hook sees it. Under `make test` this runs in an xdist worker, which takes the options from the run.
    blocked = pytest.raises(SocketConnectBlockedError)
    with socket.socket() as sock, pytest.warns(UserWarning, match="tried to use socket"), blocked:
        sock.connect(("169.254.169.254", 80))


def test_guard_refuses_non_loopback_name_lookups() -> None:
    with pytest.raises(netguard.NetworkGuardError):
        socket.getaddrinfo("login.microsoftonline.com", 443)


def test_guard_lets_loopback_through() -> None:
    assert netguard.is_loopback("127.0.0.1") and netguard.is_loopback("::1") and netguard.is_loopback("localhost")
    assert not netguard.is_loopback("169.254.169.254") and not netguard.is_loopback("10.0.0.1")


async def test_default_credential_never_probes_imds_without_identity_env() -> None:
    # No managed-identity environment, no az on PATH: the chain must fail locally, not dial out. retry_total=0: the
    # IMDS client's backoff against the refused loopback port (about 4 s) would only repeat the same refused connect.
    async with DefaultAzureCredential(exclude_cli_credential=True, retry_total=0) as credential:
        with pytest.raises(ClientAuthenticationError):
            await asyncio.wait_for(credential.get_token(COGNITIVE), 20)
