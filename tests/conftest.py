"""Session fixtures: the local Azure (identity, az, Azurite, Azure OpenAI emulator) on loopback.

Chain: environment -> token issuer -> stand-ins (one each per session) -> per-test
environments (managed identity or Azure CLI) and per-test unique queue/container names.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from emulators.azurite import make_certificate

# aiohttp (under azure-core's async transport) builds its verifying SSL context once, at
# import, from SSL_CERT_FILE: the keyless Azurite's certificate must be trusted before that.
assert "aiohttp" not in sys.modules, "conftest must trust the test certificate before aiohttp is imported"
CERT_DIR = Path(tempfile.mkdtemp(prefix="local-azure-tls-"))
_, _, CA_BUNDLE = make_certificate(CERT_DIR)
os.environ["SSL_CERT_FILE"] = os.environ["REQUESTS_CA_BUNDLE"] = str(CA_BUNDLE)

from aiohttp import web

from emulators import aoai as openai_emulator
from emulators import az as az_standin
from emulators import azurite as azurite_launcher
from emulators import managed_identity as identity
from emulators import netguard
from emulators._server import Running, ServerThread, serve
from emulators.tokens import Principal, TokenIssuer
from shared.constants import azurite_connection_string

netguard.install()

REPO = Path(__file__).resolve().parent.parent
DEPLOYMENT = "gpt-4o-mini"
SECOND_DEPLOYMENT = "gpt-4o"
UNGRANTED_CLIENT_ID = "0c1d0000-0000-4000-8000-00000000c0de"

# Variables that would send credentials to login.microsoftonline.com or change which
# credential answers; the suite sets what each test needs itself.
SCRUBBED = [
    "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME", "AZURE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_OPENAI_API_KEY", "OPENAI_API_KEY",
    "AzureWebJobsStorage", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
]  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def local_azure_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clean, loopback-only environment for the whole session."""
    directory = tmp_path_factory.mktemp("local-azure")
    patch = pytest.MonkeyPatch()
    for name in SCRUBBED:
        patch.delenv(name, raising=False)
    patch.setenv("LOCAL_AZURE_DIR", str(directory))
    patch.setenv("AZURE_CONFIG_DIR", str(directory / "az"))
    patch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
    # Redirects IMDS to a closed loopback port, which also makes DefaultAzureCredential skip
    # its 169.254.169.254 probe: a test that forgets to pick an identity fails, locally.
    patch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9")
    yield directory
    patch.undo()


@pytest.fixture(scope="session")
def issuer(local_azure_dir: Path) -> TokenIssuer:
    return TokenIssuer(local_azure_dir)


@dataclass
class IdentityEndpoint:
    server: ServerThread
    running: Running
    ungranted_client_id: str

    @property
    def env(self) -> dict[str, str]:
        return identity.environment(self.running)

    @property
    def state(self) -> identity.IdentityState:
        return self.running.app[identity.STATE]

    def tokens_issued(self, resource: str = "https://cognitiveservices.azure.com") -> int:
        return self.server.call(lambda app: app[identity.STATE].issued[resource])


@pytest.fixture(scope="session")
def identity_endpoint(issuer: TokenIssuer) -> Iterator[IdentityEndpoint]:
    state = identity.IdentityState(issuer=issuer, header=uuid.uuid4().hex)
    state.add_user_assigned(UNGRANTED_CLIENT_ID, name="uami-without-role")
    server = ServerThread(lambda: identity.start(state), "identity-endpoint")
    with server as running:
        yield IdentityEndpoint(server, running, UNGRANTED_CLIENT_ID)


@dataclass
class OpenAIEmulator:
    server: ServerThread
    running: Running

    @property
    def endpoint(self) -> str:
        return self.running.url

    def stats(self) -> dict[str, Any]:
        return self.server.call(lambda app: app[openai_emulator.STATE].stats())

    def configure(self, **changes: Any) -> None:
        self.server.call(lambda app: app[openai_emulator.STATE].update_config(**changes))

    def grant(self, principal_id: str, delay_seconds: float = 0) -> None:
        self.server.call(lambda app: app[openai_emulator.STATE].grant(principal_id, delay_seconds))

    def revoke(self, principal_id: str) -> None:
        self.server.call(lambda app: app[openai_emulator.STATE].revoke(principal_id))


@pytest.fixture(scope="session")
def openai_server(issuer: TokenIssuer) -> Iterator[OpenAIEmulator]:
    config = openai_emulator.EmulatorConfig(
        deployments=[DEPLOYMENT, SECOND_DEPLOYMENT],
        grants=[identity.SYSTEM_ASSIGNED.object_id, az_standin.DEFAULT_USER.object_id],
    )
    server = ServerThread(lambda: openai_emulator.start(config, public_pem=issuer.public_pem), "openai-emulator")
    with server as running:
        yield OpenAIEmulator(server, running)


@pytest.fixture
def aoai(openai_server: OpenAIEmulator) -> Iterator[OpenAIEmulator]:
    """The session's emulator with this test's config changes undone afterwards."""

    def fresh(app: Any) -> Any:
        state = app[openai_emulator.STATE]
        state.reset_stats()
        state.windows.clear()  # rate-limit history from earlier tests must not throttle this one
        return state.config.model_copy(deep=True)

    before = openai_server.server.call(fresh)
    yield openai_server
    openai_server.server.call(lambda app: app[openai_emulator.STATE].replace_config(before))


@pytest.fixture(scope="session")
def azurite() -> Iterator[azurite_launcher.Azurite]:
    """Plain-HTTP Azurite with the development key (the local-dev path)."""
    instance = azurite_launcher.start(keyless=False)
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def azurite_keyless() -> Iterator[azurite_launcher.Azurite]:
    """HTTPS + OAuth Azurite: token credentials only, as in Azure."""
    instance = azurite_launcher.start(keyless=True, cert_dir=CERT_DIR)
    yield instance
    instance.stop()


@pytest.fixture
def managed_identity(monkeypatch: pytest.MonkeyPatch, identity_endpoint: IdentityEndpoint) -> IdentityEndpoint:
    """Environment of a Function App with a system-assigned identity."""
    for name, value in identity_endpoint.env.items():
        monkeypatch.setenv(name, value)
    return identity_endpoint


@dataclass
class AzureCli:
    config_dir: Path

    def invocations(self) -> int:
        return az_standin.invocations()

    def logout(self) -> None:
        az_standin.logout()


@pytest.fixture
def azure_cli(monkeypatch: pytest.MonkeyPatch, local_azure_dir: Path) -> AzureCli:
    """Environment of a developer laptop: `az login` done, no managed identity."""
    config_dir = local_azure_dir / f"az-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("PATH", f"{REPO / 'emulators' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("AZ_STANDIN_PYTHON", sys.executable)
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "dev")
    az_standin.login()
    return AzureCli(config_dir)


@pytest.fixture
def names() -> dict[str, str]:
    """Unique queue and container names so tests sharing one Azurite never see each other's data."""
    suffix = uuid.uuid4().hex[:10]
    return {
        "JOBS_QUEUE": f"jobs-{suffix}",
        "RESULTS_CONTAINER": f"results-{suffix}",
        "PAYLOADS_CONTAINER": f"payloads-{suffix}",
        "REPLY_QUEUES_ALLOWED": f"replies-{suffix}",
    }


def ungranted(identity_endpoint: IdentityEndpoint) -> Principal:
    return identity_endpoint.state.user_assigned[identity_endpoint.ungranted_client_id]


def _forbidden_app() -> web.Application:
    """Answers every storage call as Azure does when the caller lacks a data-plane role."""

    async def refuse(request: web.Request) -> web.Response:
        body = (
            '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationPermissionMismatch</Code>'
            "<Message>This request is not authorized to perform this operation using this permission.</Message>"
            "</Error>"
        )
        return web.Response(
            status=403,
            text=body,
            content_type="application/xml",
            headers={"x-ms-error-code": "AuthorizationPermissionMismatch", "x-ms-request-id": "test"},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    return app


@pytest.fixture(scope="session")
def forbidden_storage() -> Iterator[str]:
    """A connection string for a storage account that refuses everything with 403."""

    async def start() -> Running:
        return await serve(_forbidden_app())

    with ServerThread(start, "forbidden-storage") as running:
        url = f"{running.url}/devstoreaccount1"
        yield azurite_connection_string(url, url, url)
