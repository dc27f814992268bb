"""Issue 22 item 6: ``service_tier`` on both APIs as Azure serves it (facts-api-surface.md section 4): the tier used
is echoed, the ``x-ms-service-tier`` header overrides the body, flex only on the flex models, and a flex capacity
gap answers a 429 whose code tells it apart from the quota's; the tiers share one quota and the stats count tokens
by tier (the bench's flex cost ratio)."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from emulators.aoai import supports_flex
from tests.emulators.emulator_fixtures import HELLO, Emulator
from tests.emulators.responses_fixtures import CLASSIC, FLEX, REASONING

FLEX_MESSAGE = (
    "Flex processing capacity is temporarily unavailable for this deployment. Retry later or resend with "
    "service_tier 'default'."
)


async def tier_of_chat(sdk: AsyncOpenAI, model: str = REASONING, **kwargs: Any) -> str | None:
    raw = await sdk.chat.completions.with_raw_response.create(model=model, messages=HELLO, **kwargs)  # type: ignore[arg-type]
    completion = ChatCompletion.model_validate(json.loads(raw.text))  # field by field, not the SDK's lenient parse
    assert completion.service_tier == raw.parse().service_tier
    return completion.service_tier


async def tier_of_response(sdk: AsyncOpenAI, model: str = REASONING, **kwargs: Any) -> str | None:
    return (await sdk.responses.create(model=model, input="Hello there", **kwargs)).service_tier


def test_the_catalogue_knows_the_flex_models() -> None:
    for model in ("gpt-5.6-sol", "gpt-5.6-luna", "gpt-5.6-terra-2026-07-09", "gpt-6-astra-2026-09-03"):
        assert supports_flex(model), model
    for model in ("gpt-5.6-sol-2026-01-01", "gpt-5.4-mini", "gpt-4.1", "gpt-6-sol"):
        assert not supports_flex(model), model


@pytest.mark.parametrize("tier_of", [tier_of_chat, tier_of_response])
async def test_the_tier_used_is_echoed_and_the_header_wins(emu: Emulator, sdk: AsyncOpenAI, tier_of: Any) -> None:
    assert await tier_of(sdk) == "default"  # nothing asked: the deployment's tier
    assert await tier_of(sdk, service_tier="auto") == "default"
    assert await tier_of(sdk, service_tier="priority") == "priority"
    assert await tier_of(sdk, FLEX, service_tier="flex") == "flex"
    header = {"x-ms-service-tier": "auto"}  # auto in the header means priority
    assert await tier_of(sdk, service_tier="default", extra_headers=header) == "priority"
    assert await tier_of(sdk, FLEX, service_tier="priority", extra_headers={"x-ms-service-tier": "flex"}) == "flex"
    emu.update_deployment(REASONING, service_tier="priority")  # a priority deployment
    assert await tier_of(sdk) == "priority"
    assert await tier_of(sdk, service_tier="default") == "default"  # asked explicitly: Standard


@pytest.mark.parametrize("tier_of", [tier_of_chat, tier_of_response])
async def test_bad_tiers_are_refused_without_fallback(emu: Emulator, sdk: AsyncOpenAI, tier_of: Any) -> None:
    with pytest.raises(openai.BadRequestError) as body:
        await tier_of(sdk, service_tier="scale")
    assert (body.value.code, body.value.param) == ("invalid_value", "service_tier")
    with pytest.raises(openai.BadRequestError) as header:
        await tier_of(sdk, extra_headers={"x-ms-service-tier": "fast"})
    assert (header.value.code, header.value.param) == ("invalid_value", "x-ms-service-tier")
    with pytest.raises(openai.BadRequestError) as flex:
        await tier_of(sdk, CLASSIC, service_tier="flex")
    assert (flex.value.code, flex.value.param) == ("unsupported_value", "service_tier")
    assert flex.value.body == {
        "message": "Flex processing is not supported for the model 'gpt-4.1-mini-2025-04-14' of this deployment. "
        "Resend without service_tier 'flex'.",
        "type": "invalid_request_error",
        "param": "service_tier",
        "code": "unsupported_value",
    }
    assert emu.stats()["by_tier"] == {}  # nothing served, nothing billed


@pytest.mark.parametrize("tier_of", [tier_of_chat, tier_of_response])
async def test_a_flex_capacity_gap_is_a_429_apart_from_the_quota(emu: Emulator, sdk: AsyncOpenAI, tier_of: Any) -> None:
    emu.update_deployment(FLEX, flex_unavailable_until=time.time() + 3600, rpm=2)
    with pytest.raises(openai.RateLimitError) as gap:
        await tier_of(sdk, FLEX, service_tier="flex")
    assert gap.value.code == "ResourceUnavailable"
    assert gap.value.response.json() == {"error": {"code": "ResourceUnavailable", "message": FLEX_MESSAGE}}
    headers = gap.value.response.headers
    assert "retry-after" not in headers and "retry-after-ms" not in headers
    assert headers["x-ratelimit-remaining-requests"] == "2"  # not charged to the quota
    assert await tier_of(sdk, FLEX, service_tier="default") == "default"  # the fallback the caller chooses
    assert await tier_of(sdk, FLEX) == "default"
    with pytest.raises(openai.RateLimitError) as quota:
        await tier_of(sdk, FLEX, service_tier="default")
    assert quota.value.code == "429" and quota.value.response.headers["retry-after-ms"]
    stats = emu.stats()
    assert (stats["flex_unavailable"], stats["throttled"]) == (1, 1)
    assert "flex" not in stats["by_tier"]  # the flex 429 is not billed
    emu.update_deployment(FLEX, flex_unavailable_until=time.time() - 1, rpm=None)  # the gap is over
    assert await tier_of(sdk, FLEX, service_tier="flex") == "flex"


async def test_tokens_by_tier_give_the_flex_cost_ratio(emu: Emulator, sdk: AsyncOpenAI) -> None:
    for tier in ("default", "flex", "priority"):
        await sdk.responses.create(model=FLEX, input="Same prompt", service_tier=tier)
        await sdk.chat.completions.create(model=FLEX, messages=HELLO, service_tier=tier)  # type: ignore[arg-type]
    by_tier = emu.stats()["by_tier"]
    assert {tier: counts["answers"] for tier, counts in by_tier.items()} == {"default": 2, "flex": 2, "priority": 2}
    assert by_tier["flex"]["prompt_tokens"] == by_tier["default"]["prompt_tokens"] > 0
    assert by_tier["flex"]["completion_tokens"] == by_tier["default"]["completion_tokens"] > 0
    assert (by_tier["default"]["price"], by_tier["flex"]["price"], by_tier["priority"]["price"]) == (1.0, 0.5, 2.0)


async def test_the_knobs_over_the_control_api(emu: Emulator, sdk: AsyncOpenAI) -> None:
    async with aiohttp.ClientSession() as http:
        gap = {"flex_unavailable_until": time.time() + 60, "service_tier": "priority"}
        async with http.patch(f"{emu.url}/_emulator/deployments/{FLEX}", json=gap) as answer:
            assert answer.status == 200 and (await answer.json())["service_tier"] == "priority"
        async with http.patch(f"{emu.url}/_emulator/deployments/{FLEX}", json={"service_tier": "flex"}) as answer:
            assert answer.status == 400  # a deployment's own tier is default or priority
        async with http.patch(f"{emu.url}/_emulator/config", json={"background_seconds": -1}) as answer:
            assert answer.status == 400
        async with http.patch(f"{emu.url}/_emulator/config", json={"filter_category": "jokes"}) as answer:
            assert answer.status == 400
    assert await tier_of_chat(sdk, FLEX) == "priority"
    with pytest.raises(openai.RateLimitError) as caught:
        await tier_of_response(sdk, FLEX, service_tier="flex")
    assert caught.value.code == "ResourceUnavailable"
