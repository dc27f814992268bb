"""Issue 13 item 4: several resources and deployments with their own limits and headers, a switch that takes one
deployment down for a while (503, stall, dropped connection), and the reported rate-limit quirks, all through the
real openai SDK against emulators started by ``emulators.stack.services.start_openai_emulator``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI
from pydantic import ValidationError

from emulators.aoai import EmulatorConfig, Outage, estimate_request_tokens
from emulators.stack.services import OpenAIEmulator, start_openai_emulator
from emulators.tokens import Principal, TokenIssuer
from tests.emulators.emulator_fixtures import API_VERSION, COGNITIVE, HELLO, provider

GRANTED = Principal(object_id="9a7e0000-0000-4000-8000-0000000000d4", name="failover-app")
MAX_TOKENS = 20
ESTIMATE = estimate_request_tokens({"messages": HELLO, "max_tokens": MAX_TOKENS})
# Two deployments of one model on one resource, each with its own limits.
DEPLOYMENTS = {
    "small": {"model": "gpt-4.1-mini", "rpm": 2, "tpm": 10_000},
    "large": {"model": "gpt-4.1-mini", "rpm": 5, "tpm": 50_000},
}
RECOVERY_DEADLINE = 30.0  # seconds to wait for an ended outage to be visible; polled, never a wall-clock bound


@pytest.fixture
def region(issuer: TokenIssuer) -> Iterator[OpenAIEmulator]:
    with start_openai_emulator(issuer, deployments=[], grants=[GRANTED.object_id]) as emulator:
        emulator.configure(deployments=DEPLOYMENTS)
        yield emulator


def azure(emulator: OpenAIEmulator, issuer: TokenIssuer, **kwargs: Any) -> AsyncAzureOpenAI:
    token = provider(issuer.mint(audience=COGNITIVE, principal=GRANTED)[0])
    kwargs.setdefault("max_retries", 0)
    return AsyncAzureOpenAI(
        azure_endpoint=emulator.endpoint, api_version=API_VERSION, azure_ad_token_provider=token, **kwargs
    )


async def raw_chat(client: AsyncAzureOpenAI, deployment: str) -> Any:
    """A 200's raw response (``.headers``, ``.parse()``)."""
    return await client.chat.completions.with_raw_response.create(
        model=deployment, messages=HELLO, max_tokens=MAX_TOKENS
    )


async def until_answered(call: Callable[[], Awaitable[Any]], deadline: float) -> tuple[Any, int]:
    """Call until it succeeds (an outage ended); returns (result, failures seen). Fails past ``deadline``."""
    failures = 0
    while True:
        try:
            return await call(), failures
        except (openai.APIStatusError, openai.APIConnectionError):
            failures += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def until_counted(emulator: OpenAIEmulator, status: str, deadline: float) -> dict[str, Any]:
    while (stats := emulator.stats())["by_status"].get(status, 0) == 0:
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.05)
    return stats


# --- Deployments and resources are independent ------------------------------------------------------------


async def test_deployments_have_their_own_windows_and_headers(region: OpenAIEmulator, issuer: TokenIssuer) -> None:
    async with azure(region, issuer) as client:
        small = [await raw_chat(client, "small") for _ in range(2)]
        with pytest.raises(openai.RateLimitError) as caught:
            await raw_chat(client, "small")
        large = await raw_chat(client, "large")  # the other deployment's window is untouched
    assert [r.headers["x-ratelimit-remaining-requests"] for r in small] == ["1", "0"]
    assert small[-1].headers["x-ratelimit-limit-requests"] == "2"
    assert small[-1].headers["x-ratelimit-limit-tokens"] == "10000"
    assert small[-1].headers["x-ratelimit-remaining-tokens"] == str(10_000 - 2 * ESTIMATE)
    throttled = caught.value.response.headers
    assert throttled["x-ratelimit-remaining-requests"] == "0"  # the 429 charged nothing
    assert throttled["x-ratelimit-remaining-tokens"] == str(10_000 - 2 * ESTIMATE)
    assert int(throttled["retry-after"]) >= 1
    assert large.headers["x-ratelimit-limit-requests"] == "5"
    assert large.headers["x-ratelimit-limit-tokens"] == "50000"
    assert large.headers["x-ratelimit-remaining-requests"] == "4"
    assert large.headers["x-ratelimit-remaining-tokens"] == str(50_000 - ESTIMATE)
    assert region.stats()["by_deployment"] == {"small": 3, "large": 1}


async def test_two_resources_are_independent(issuer: TokenIssuer) -> None:
    # Two regions, each its own resource with the same deployment name and limits.
    settings: dict[str, Any] = {"deployments": ["gpt-4.1-mini"], "grants": [GRANTED.object_id], "rpm": 1}
    with start_openai_emulator(issuer, **settings) as east, start_openai_emulator(issuer, **settings) as west:
        assert east.endpoint != west.endpoint
        async with azure(east, issuer) as to_east, azure(west, issuer) as to_west:
            await raw_chat(to_east, "gpt-4.1-mini")
            with pytest.raises(openai.RateLimitError):
                await raw_chat(to_east, "gpt-4.1-mini")
            answered = await raw_chat(to_west, "gpt-4.1-mini")  # east's quota is not west's
            assert answered.headers["x-ratelimit-remaining-requests"] == "0"

            east.fail_deployment("gpt-4.1-mini", 600)
            with pytest.raises(openai.InternalServerError):
                await raw_chat(to_east, "gpt-4.1-mini")
            west.configure(rpm=None)
            await raw_chat(to_west, "gpt-4.1-mini")  # west is not down

        assert east.stats()["by_status"] == {"200": 1, "429": 1, "503": 1}
        assert west.stats()["by_status"] == {"200": 2}


# --- Outages ------------------------------------------------------------------------------------------------


async def test_503_outage_fails_then_recovers_without_spending_quota(
    region: OpenAIEmulator, issuer: TokenIssuer
) -> None:
    region.fail_deployment("small", 1.0)
    deadline = time.monotonic() + RECOVERY_DEADLINE
    async with azure(region, issuer) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await raw_chat(client, "small")
        await raw_chat(client, "large")  # only the one deployment is down
        recovered, failures = await until_answered(lambda: raw_chat(client, "small"), deadline)
    assert caught.value.status_code == 503
    assert caught.value.code == "ServiceUnavailable"
    assert caught.value.body == {
        "code": "ServiceUnavailable",
        "message": "The service is temporarily unable to process your request. Try again later.",
    }
    down = caught.value.response.headers
    assert down["x-ratelimit-remaining-requests"] == "2"  # rate headers present, nothing charged
    assert down["x-request-id"]
    # Only the recovered request was charged; every 503 before it was free.
    assert recovered.headers["x-ratelimit-remaining-requests"] == "1"
    assert recovered.headers["x-ratelimit-remaining-tokens"] == str(10_000 - ESTIMATE)
    assert recovered.parse().choices[0].message.content
    assert region.stats()["by_status"] == {"503": 1 + failures, "200": 2}
    assert region.stats()["completions"] == 2


async def test_timeout_outage_is_an_sdk_timeout(region: OpenAIEmulator, issuer: TokenIssuer) -> None:
    region.fail_deployment("small", 1.0, mode="timeout")
    deadline = time.monotonic() + RECOVERY_DEADLINE
    async with azure(region, issuer, timeout=0.2) as client:
        with pytest.raises(openai.APITimeoutError):
            await raw_chat(client, "small")
    async with azure(region, issuer) as client:
        recovered, _ = await until_answered(lambda: raw_chat(client, "small"), deadline)
    assert recovered.headers["x-ratelimit-remaining-requests"] == "1"  # the stalled requests were not charged
    # The stalled request ends (closed, unanswered) when the outage does, and is counted then.
    stats = await until_counted(region, "dropped", deadline)
    assert stats["by_status"]["200"] == 1


async def test_connection_drop_outage_is_a_connection_error(region: OpenAIEmulator, issuer: TokenIssuer) -> None:
    region.fail_deployment("large", 600, mode="connection_drop")
    async with azure(region, issuer) as client:
        with pytest.raises(openai.APIConnectionError) as caught:
            await raw_chat(client, "large")
        assert not isinstance(caught.value, openai.APITimeoutError)
        region.restore_deployment("large")  # ends it early
        answered = await raw_chat(client, "large")
    assert answered.headers["x-ratelimit-remaining-requests"] == "4"
    assert region.stats()["by_status"] == {"dropped": 1, "200": 1}


async def test_sdk_retries_through_a_short_outage(region: OpenAIEmulator, issuer: TokenIssuer) -> None:
    # The SDK's own backoff (0.5 s, 1 s, 2 s ... x jitter) outlasts a 0.3 s outage within a few retries.
    region.fail_deployment("large", 0.3)
    async with azure(region, issuer, max_retries=5) as client:
        answered = await raw_chat(client, "large")
    assert answered.parse().choices[0].message.content
    assert region.stats()["by_status"]["200"] == 1


async def test_outage_on_the_v1_route(region: OpenAIEmulator, issuer: TokenIssuer) -> None:
    token = issuer.mint(audience=COGNITIVE, principal=GRANTED)[0]
    region.fail_deployment("small", 600)
    async with AsyncOpenAI(base_url=f"{region.endpoint}/openai/v1/", api_key=token, max_retries=0) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="small", messages=HELLO, max_tokens=MAX_TOKENS)
        answered = await client.chat.completions.create(model="large", messages=HELLO, max_tokens=MAX_TOKENS)
    assert caught.value.status_code == 503
    assert answered.choices[0].message.content


async def test_an_ended_outage_is_inert(region: OpenAIEmulator, issuer: TokenIssuer) -> None:
    region.update_deployment("small", outage={"mode": "timeout", "until": time.time() - 1})
    async with azure(region, issuer, timeout=5) as client:
        await raw_chat(client, "small")
    assert region.stats()["by_status"] == {"200": 1}


def test_outage_settings_are_validated() -> None:
    config = EmulatorConfig.model_validate({"deployments": {"a": {"model": "m", "outage": {"until": 1.5}}}})
    assert config.deployments["a"].outage == Outage(mode="503", until=1.5)
    with pytest.raises(ValidationError):
        EmulatorConfig.model_validate({"deployments": {"a": {"model": "m", "outage": {"mode": "504", "until": 1}}}})
    with pytest.raises(ValidationError):
        EmulatorConfig.model_validate({"deployments": {"a": {"model": "m", "outage": {"mode": "503"}}}})


async def test_outage_through_the_control_api(region: OpenAIEmulator, issuer: TokenIssuer) -> None:
    url = region.endpoint
    async with aiohttp.ClientSession() as http:
        # The whole map through PATCH /_emulator/config (validated against EmulatorConfig)...
        deployments = {**DEPLOYMENTS, "small": {**DEPLOYMENTS["small"], "outage": {"until": time.time() + 600}}}
        async with http.patch(f"{url}/_emulator/config", json={"deployments": deployments}) as response:
            assert response.status == 200
            assert (await response.json())["deployments"]["small"]["outage"]["mode"] == "503"
        bad = {"small": {**DEPLOYMENTS["small"], "outage": {"mode": "teapot", "until": 1}}}
        async with http.patch(f"{url}/_emulator/config", json={"deployments": bad}) as response:
            assert response.status == 400
        # ...or one deployment's fields through PATCH /_emulator/deployments/{name}.
        outage = {"mode": "connection_drop", "until": time.time() + 600}
        async with http.patch(f"{url}/_emulator/deployments/large", json={"outage": outage}) as response:
            assert response.status == 200
            assert (await response.json())["rpm"] == 5  # the other fields stay
        async with http.patch(f"{url}/_emulator/deployments/nowhere", json={"outage": None}) as response:
            assert response.status == 404
        async with http.patch(f"{url}/_emulator/deployments/large", json={"rpm": 0}) as response:
            assert response.status == 400
    async with azure(region, issuer) as client:
        with pytest.raises(openai.InternalServerError):
            await raw_chat(client, "small")
        with pytest.raises(openai.APIConnectionError):
            await raw_chat(client, "large")
    assert region.stats()["by_status"] == {"503": 1, "dropped": 1}


# --- Quirks ----------------------------------------------------------------------------------------------


async def test_unreported_rate_headers_quirk(region: OpenAIEmulator, issuer: TokenIssuer) -> None:
    region.update_deployment("small", rpm=1, unreported_rate_headers=True)
    async with azure(region, issuer) as client:
        answered = await raw_chat(client, "small")
        with pytest.raises(openai.RateLimitError) as caught:  # the limit is still enforced, just not reported
            await raw_chat(client, "small")
        other = await raw_chat(client, "large")
    for headers in (answered.headers, caught.value.response.headers):
        for unit in ("requests", "tokens"):
            assert headers[f"x-ratelimit-limit-{unit}"] == "-1"
            assert headers[f"x-ratelimit-remaining-{unit}"] == "-1"
            assert headers[f"x-ratelimit-reset-{unit}"] == "0"
    assert "retry-after-ms" in caught.value.response.headers  # the other flag is separate
    assert other.headers["x-ratelimit-limit-requests"] == "5"  # per deployment: the other one reports as usual


async def test_429_without_retry_after_quirk(region: OpenAIEmulator, issuer: TokenIssuer) -> None:
    region.update_deployment("small", rpm=1, omit_retry_after=True)
    region.update_deployment("large", rpm=1)
    async with azure(region, issuer) as client:
        await raw_chat(client, "small")
        await raw_chat(client, "large")
        with pytest.raises(openai.RateLimitError) as quirky:
            await raw_chat(client, "small")
        with pytest.raises(openai.RateLimitError) as usual:
            await raw_chat(client, "large")
    headers = quirky.value.response.headers
    assert "retry-after" not in headers
    assert "retry-after-ms" not in headers
    assert headers["x-ratelimit-remaining-requests"] == "0"  # the rate headers stay accurate
    assert "Please retry after" in str(quirky.value)  # only the message still says when
    assert "retry-after-ms" in usual.value.response.headers
