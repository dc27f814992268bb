"""An emulator with the deployments the Responses API and service-tier tests need (fixtures ``emu``, ``sdk``, made
available to this directory by its conftest; started by emulator_fixtures.py's ``start_emulator``), driven through
the real openai SDK (``AsyncOpenAI`` on ``<emulator>/openai/v1/`` with an async bearer-token provider as
``api_key``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response

from emulators.tokens import Principal
from tests.emulators.emulator_fixtures import Emulator, StartEmulator

REASONING = "gpt-5.4-mini"  # chat and Responses, reasoning rules
CLASSIC = "gpt-4.1-mini"  # chat and Responses, classic rules
CODEX = "coder"  # runs gpt-5.1-codex: Responses only
FLEX = "gpt-5.6-luna"  # takes service_tier flex
GRANTED = Principal(object_id="9a7e0000-0000-4000-8000-0000000000e5", name="responses-app")
PROJECT = "https://ai.azure.com/.default"
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


@pytest.fixture
async def emu(start_emulator: StartEmulator) -> Emulator:
    """An emulator with the deployments above, in the test's loop."""
    deployments = {REASONING: None, CLASSIC: None, CODEX: "gpt-5.1-codex", FLEX: None}
    return await start_emulator({"deployments": deployments, **QUICK_BACKGROUND}, GRANTED)


@pytest.fixture
async def sdk(emu: Emulator) -> AsyncIterator[AsyncOpenAI]:
    """The v1 client on ``emu``."""
    async with emu.v1() as opened:
        yield opened
