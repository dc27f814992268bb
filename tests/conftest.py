"""Session fixtures over the local Azure (emulators/stack): identity, az, Azurite, Azure OpenAI, on loopback.

Chain: environment -> token issuer -> stand-ins (one each per session, started only when a test
asks) -> per-test identity (managed identity or Azure CLI) and unique queue/container names ->
worker settings, storage clients and the host factory (tests/worker_fixtures.py).

A test that uses Azurite or a worker host is marked ``e2e`` here (``make test-fast`` skips them);
tests that start Node or ``make run`` without those fixtures carry the mark themselves.
"""

from __future__ import annotations

from emulators import netguard
from emulators.stack import environment

# Before anything imports aiohttp (pytest and its plugins do not): see trust_local_certificate.
CERT_DIR = environment.trust_local_certificate()
netguard.install()

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulators.azurite import Azurite
from emulators.stack import services
from emulators.stack.environment import REPO
from emulators.stack.services import DEPLOYMENT, AzureCli, IdentityEndpoint, OpenAIEmulator, ungranted
from emulators.tokens import TokenIssuer

# Tests in tests/doctor, tests/emulators and tests/producer import these from here.
__all__ = ["DEPLOYMENT", "REPO", "AzureCli", "IdentityEndpoint", "OpenAIEmulator", "ungranted"]

E2E_FIXTURES = {"azurite", "azurite_keyless", "start_host"}  # each starts Azurite or a host process


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker collects, in the same order
        items[:] = slow_first(items)


def slow_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """The ``slow`` tests first, longest first, each followed by a quick one; then the rest in their order.

    ``make test`` runs xdist with ``--dist load --maxschedchunk 1``: each worker is handed two tests at first, then
    one at a time as it finishes one. So each worker begins with one slow test (mostly waiting: an outage, a
    batch, the bench), later workers take the next slow ones, and the quick tests run beside them."""

    def seconds(item: pytest.Item) -> float:
        marker = item.get_closest_marker("slow")
        return float(marker.kwargs.get("seconds", 0)) if marker else 0.0

    slow = sorted((item for item in items if item.get_closest_marker("slow")), key=seconds, reverse=True)
    quick = [item for item in items if not item.get_closest_marker("slow")]
    ordered: list[pytest.Item] = []
    for item in slow:
        ordered += [item, *quick[:1]]
        quick = quick[1:]
    return ordered + quick


@pytest.fixture(scope="session", autouse=True)
def local_azure_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clean, loopback-only environment for the whole session."""
    directory = tmp_path_factory.mktemp("local-azure")
    with environment.isolated_environment(directory):
        yield directory


@pytest.fixture(scope="session")
def issuer(local_azure_dir: Path) -> TokenIssuer:
    return TokenIssuer(local_azure_dir)


@pytest.fixture(scope="session")
def identity_endpoint(issuer: TokenIssuer) -> Iterator[IdentityEndpoint]:
    with services.start_identity_endpoint(issuer) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def openai_server(issuer: TokenIssuer) -> Iterator[OpenAIEmulator]:
    with services.start_openai_emulator(issuer) as emulator:
        yield emulator


@pytest.fixture
def aoai(openai_server: OpenAIEmulator) -> Iterator[OpenAIEmulator]:
    """The session's emulator with fresh stats and rate windows, its config restored afterwards."""
    before = openai_server.reset()
    yield openai_server
    openai_server.reset(before)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Plain-HTTP Azurite with the development key (the local-dev path)."""
    with services.start_azurite(keyless=False) as instance:
        yield instance


@pytest.fixture(scope="session")
def azurite_keyless() -> Iterator[Azurite]:
    """HTTPS + OAuth Azurite: token credentials only, as in Azure."""
    with services.start_azurite(keyless=True, cert_dir=CERT_DIR) as instance:
        yield instance


@pytest.fixture(scope="session")
def forbidden_storage() -> Iterator[str]:
    """A connection string for a storage account that refuses everything with 403."""
    with services.start_forbidden_storage() as connection_string:
        yield connection_string


@pytest.fixture
def managed_identity(monkeypatch: pytest.MonkeyPatch, identity_endpoint: IdentityEndpoint) -> IdentityEndpoint:
    """Environment of a Function App with a system-assigned identity."""
    for name, value in identity_endpoint.env.items():
        monkeypatch.setenv(name, value)
    return identity_endpoint


@pytest.fixture
def azure_cli(monkeypatch: pytest.MonkeyPatch, local_azure_dir: Path) -> AzureCli:
    """Environment of a developer laptop: `az login` done, no managed identity."""
    cli = AzureCli.sign_in(local_azure_dir / f"az-{uuid.uuid4().hex[:8]}")
    for name, value in cli.env.items():
        monkeypatch.setenv(name, value)
    return cli


@pytest.fixture
def names() -> dict[str, str]:
    """Unique queue and container names so tests sharing one Azurite never see each other's data."""
    return services.unique_names()


@pytest.fixture
def stack(
    issuer: TokenIssuer,
    identity_endpoint: IdentityEndpoint,
    aoai: OpenAIEmulator,
    azurite_keyless: Azurite,
    azurite: Azurite,
    tmp_path: Path,
) -> services.LocalAzure:
    """The whole local Azure as ``make bench`` and ``make run`` hold it (the session's servers)."""
    return services.LocalAzure(issuer, identity_endpoint, aoai, azurite_keyless, azurite, tmp_path)
