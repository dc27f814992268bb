"""An emulator with the deployments the Responses API and service-tier tests need (fixtures ``emu``, ``sdk``, made
available to this directory by its conftest), driven through the real openai SDK (``AsyncOpenAI`` on
``<emulator>/openai/v1/`` with an async bearer-token provider as ``api_key``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response

from emulators.aoai import EmulatorConfig, Running, start
from emulators.tokens import Principal, TokenIssuer

REASONING = "gpt-5.4-mini"  # chat and Responses, reasoning rules
CLASSIC = "gpt-4.1-mini"  # chat and Responses, classic rules
CODEX = "coder"  # runs gpt-5.1-codex: Responses only
FLEX = "gpt-5.6-luna"  # takes service_tier flex
GRANTED = Principal(object_id="9a7e0000-0000-4000-8000-0000000000e5", name="responses-app")
COGNITIVE = "https://cognitiveservices.azure.com/.default"
PROJECT = "https://ai.azure.com/.default"
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
# Short background durations, so lifecycle tests take a fraction of a second per stage.
QUICK_BACKGROUND = {"background_queued_seconds": 0.3, "background_seconds": 0.6}
TERMINAL = {"completed", "failed", "incomplete", "cancelled"}


async def until(sdk: AsyncOpenAI, response_id: str, statuses: set[str] = TERMINAL, deadline: float = 10) -> Response:
    """Poll as a worker would until the response reaches one of ``statuses``."""
    ends = time.monotonic() + deadline
    while (response := await sdk.responses.retrieve(response_id)).status not in statuses:
        assert time.monotonic() < ends, response
        await asyncio.sleep(0.05)
    return response


def validated(body: dict[str, Any]) -> Response:
    """``body`` validated field by field against the SDK's ``Response`` (the SDK itself parses leniently). The one
    field the SDK's type requires that Azure's documented usage lacks (``input_tokens_details.cache_write_tokens``,
    facts-api-surface.md section 1) is filled in first; nothing else is forgiven."""
    usage = body.get("usage")
    if isinstance(usage, dict):
        details = {"cache_write_tokens": 0, **usage["input_tokens_details"]}
        body = {**body, "usage": {**usage, "input_tokens_details": details}}
    return Response.model_validate(body)


@pytest.fixture(scope="module")
def emu_issuer(tmp_path_factory: pytest.TempPathFactory) -> TokenIssuer:
    directory: Path = tmp_path_factory.mktemp("responses-emulator-keys")
    return TokenIssuer(directory)


@dataclass
class Emulator:
    running: Running
    issuer: TokenIssuer

    @property
    def url(self) -> str:
        return self.running.url

    def token(self, audience: str = COGNITIVE) -> str:
        return self.issuer.mint(audience=audience, principal=GRANTED)[0]

    def provider(self, audience: str = COGNITIVE) -> Callable[[], Awaitable[str]]:
        token = self.token(audience)

        async def get_token() -> str:
            return token

        return get_token

    def v1(self, **kwargs: Any) -> AsyncOpenAI:
        """The documented v1 client: ``model`` is the deployment, ``api_key`` an async token provider."""
        kwargs.setdefault("max_retries", 0)
        return AsyncOpenAI(base_url=f"{self.url}/openai/v1/", api_key=self.provider(), **kwargs)

    def configure(self, **changes: Any) -> None:
        self.running.state.update_config(**changes)

    def update_deployment(self, name: str, **changes: Any) -> None:
        self.running.state.update_deployment(name, **changes)

    def stats(self) -> dict[str, Any]:
        return self.running.state.stats()


@pytest.fixture
async def emu(emu_issuer: TokenIssuer) -> AsyncIterator[Emulator]:
    """An emulator with the deployments above, in the test's loop."""
    deployments = {REASONING: None, CLASSIC: None, CODEX: "gpt-5.1-codex", FLEX: None}
    config = EmulatorConfig.model_validate(
        {"deployments": deployments, "grants": [GRANTED.object_id], **QUICK_BACKGROUND}
    )
    running = await start(config, public_pem=emu_issuer.public_pem)
    yield Emulator(running, emu_issuer)
    await running.stop()


@pytest.fixture
async def sdk(emu: Emulator) -> AsyncIterator[AsyncOpenAI]:
    """The v1 client on ``emu``."""
    async with emu.v1() as opened:
        yield opened
