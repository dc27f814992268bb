"""One fixture chain for the tests that start the Azure OpenAI emulator in their own event loop: the session's token
issuer (tests/conftest.py, one RSA key per worker) -> ``start_emulator`` (a factory taking a module's config) ->
``Emulator``, whose clients are the real openai SDK's (``v1()``: ``AsyncOpenAI`` with an async bearer-token provider
as ``api_key``; ``azure()``: ``AsyncAzureOpenAI`` with ``azure_ad_token_provider``). tests/emulators/conftest.py makes
the fixtures available; each test module keeps only its own config and principal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI

from emulators.aoai import EmulatorConfig, Running, start
from emulators.tokens import Principal, TokenIssuer

COGNITIVE = "https://cognitiveservices.azure.com/.default"
API_VERSION = "2024-10-21"
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]


def provider(token: str) -> Callable[[], Awaitable[str]]:
    """An async token provider that hands out ``token``: what the SDK calls before each request."""

    async def get_token() -> str:
        return token

    return get_token


@dataclass
class Emulator:
    running: Running
    issuer: TokenIssuer
    principal: Principal  # granted by the config; whose tokens the clients send unless told otherwise

    @property
    def url(self) -> str:
        return self.running.url

    def token(self, principal: Principal | None = None, audience: str = COGNITIVE, **kwargs: Any) -> str:
        return self.issuer.mint(audience=audience, principal=principal or self.principal, **kwargs)[0]

    def provider(self, audience: str = COGNITIVE) -> Callable[[], Awaitable[str]]:
        return provider(self.token(audience=audience))

    def v1(self, **kwargs: Any) -> AsyncOpenAI:
        """The documented v1 client: ``model`` is the deployment, ``api_key`` an async token provider."""
        kwargs.setdefault("max_retries", 0)
        return AsyncOpenAI(base_url=f"{self.url}/openai/v1/", api_key=self.provider(), **kwargs)

    def azure(self, token: str | None = None, api_version: str = API_VERSION, **kwargs: Any) -> AsyncAzureOpenAI:
        """The legacy deployments route; ``token`` (default: one for ``principal``) unless an ``api_key`` is given."""
        kwargs.setdefault("max_retries", 0)
        if "api_key" not in kwargs:
            kwargs["azure_ad_token_provider"] = provider(token or self.token())
        return AsyncAzureOpenAI(azure_endpoint=self.url, api_version=api_version, **kwargs)

    def configure(self, **changes: Any) -> None:
        self.running.state.update_config(**changes)

    def update_deployment(self, name: str, **changes: Any) -> None:
        self.running.state.update_deployment(name, **changes)

    def stats(self) -> dict[str, Any]:
        return self.running.state.stats()


class StartEmulator(Protocol):
    async def __call__(self, config: dict[str, Any], principal: Principal) -> Emulator: ...


@pytest.fixture
async def start_emulator(issuer: TokenIssuer) -> AsyncIterator[StartEmulator]:
    """Starts an emulator with ``config`` (``EmulatorConfig`` fields) granting ``principal``, in the test's loop;
    each is stopped when the test ends."""
    started: list[Running] = []

    async def starting(config: dict[str, Any], principal: Principal) -> Emulator:
        validated = EmulatorConfig.model_validate({"grants": [principal.object_id], **config})
        running = await start(validated, public_pem=issuer.public_pem)
        started.append(running)
        return Emulator(running, issuer, principal)

    yield starting
    for running in reversed(started):
        await running.stop()
