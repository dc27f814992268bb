"""Issue 11 item 3: a deployment's model decides its rules (GPT-5 family / o-series reasoning versus gpt-4.1-class),
driven through the real openai SDK on the v1 route (``AsyncOpenAI`` with an async bearer-token provider as
``api_key``) and the legacy deployments route (``AsyncAzureOpenAI``)."""

from __future__ import annotations

import re
from typing import Any

import openai
import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI

from emulators import aoai
from emulators.aoai import (
    KNOWN_MODELS,
    REASONING_TOKENS,
    EmulatorConfig,
    answer_for,
    count_prompt_tokens,
    count_text_tokens,
    is_reasoning_model,
)
from emulators.aoai.rates import UNLIMITED_REPORTED, duration
from emulators.tokens import Principal
from tests.emulators.emulator_fixtures import HELLO, Emulator, StartEmulator

REASONING = "gpt-5.4-mini"
CLASSIC = "gpt-4.1-mini"
RENAMED_REASONING = "support-bot"  # any name: its model (gpt-5-mini) makes it a reasoning deployment
LOOKALIKE = "gpt-5-lookalike"  # named like GPT-5, runs gpt-4.1-mini: classic rules
GRANTED = Principal(object_id="9a7e0000-0000-4000-8000-0000000000c3", name="reasoning-app")
PROMPT = count_prompt_tokens(HELLO)
RATE_HEADERS = [
    f"x-ratelimit-{kind}-{unit}" for kind in ("limit", "remaining", "reset") for unit in ("requests", "tokens")
]
GO_DURATION = re.compile(r"^(0s|\d+ms|(\d+h)?(\d+m)?\d+(\.\d+)?s)$")


@pytest.fixture
async def emulator(start_emulator: StartEmulator) -> Emulator:
    deployments = {
        REASONING: None,
        CLASSIC: None,
        RENAMED_REASONING: KNOWN_MODELS["gpt-5-mini"],
        LOOKALIKE: KNOWN_MODELS[CLASSIC],
    }
    return await start_emulator({"deployments": deployments}, GRANTED)


async def create(client: AsyncOpenAI | AsyncAzureOpenAI, model: str = REASONING, **kwargs: Any) -> Any:
    """A chat completion with its raw response: (completion, headers)."""
    kwargs.setdefault("messages", HELLO)
    raw = await client.chat.completions.with_raw_response.create(model=model, **kwargs)
    return raw.parse(), raw.headers


async def refused(client: AsyncOpenAI | AsyncAzureOpenAI, model: str = REASONING, **kwargs: Any) -> Any:
    kwargs.setdefault("messages", HELLO)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=model, **kwargs)
    return caught.value


def error_body(code: str, param: str, message: str) -> dict[str, Any]:
    return {"message": message, "type": "invalid_request_error", "param": param, "code": code}


# --- Which model follows which rules --------------------------------------------------------------------------


def test_todays_models_and_their_family() -> None:
    assert KNOWN_MODELS["gpt-5.4-mini"] == "gpt-5.4-mini-2026-03-17"
    assert KNOWN_MODELS["gpt-5.4-nano"] == "gpt-5.4-nano-2026-03-17"
    assert KNOWN_MODELS["gpt-5-mini"] == "gpt-5-mini-2025-08-07"
    assert KNOWN_MODELS["gpt-4.1-mini"] == "gpt-4.1-mini-2025-04-14"
    assert KNOWN_MODELS["gpt-4o-mini"] == "gpt-4o-mini-2024-07-18"
    assert "o4-mini" in KNOWN_MODELS
    assert aoai.is_reasoning_model is is_reasoning_model
    for model in ("gpt-5.4-mini-2026-03-17", "gpt-5-mini", "GPT-5.5", "o1", "o3-mini", "o4-mini-2025-04-16"):
        assert is_reasoning_model(model), model
    for model in ("gpt-4.1-mini-2025-04-14", "gpt-4o-mini-2024-07-18", "gpt-4o", "my-model", "omni", "gpt-35-turbo"):
        assert not is_reasoning_model(model), model


def test_default_deployment_list_is_unchanged() -> None:
    assert EmulatorConfig().deployments["gpt-4o-mini"].model == "gpt-4o-mini-2024-07-18"


# --- Refused parameters: Azure's exact bodies, as the SDK surfaces them ------------------------------------------


@pytest.mark.parametrize(
    ("param", "value", "code", "message"),
    [
        (
            "max_tokens",
            100,
            "unsupported_parameter",
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' "
            "instead.",
        ),
        *[
            (
                name,
                value,
                "unsupported_value",
                f"Unsupported value: '{name}' does not support {shown} with this model. Only the default (1) value is "
                "supported.",
            )
            for name, value, shown in [
                ("temperature", 0, "0"),
                ("temperature", 0.0, "0"),
                ("temperature", 0.5, "0.5"),
                ("temperature", 2, "2"),
                ("top_p", 0.9, "0.9"),
                ("top_p", 0, "0"),
            ]
        ],
        *[
            (name, value, "unsupported_parameter", f"Unsupported parameter: '{name}' is not supported with this model.")
            for name, value in [
                ("stop", ["\n"]),
                ("stop", "END"),
                ("logit_bias", {"50256": -100}),
                ("presence_penalty", 0.5),
                ("frequency_penalty", 0.0),
                ("logprobs", True),
                ("top_logprobs", 2),
            ]
        ],
    ],
)
async def test_reasoning_model_refuses_parameter(
    emulator: Emulator, param: str, value: Any, code: str, message: str
) -> None:
    async with emulator.v1() as client:
        error = await refused(client, **{param: value})
    assert (error.status_code, error.code, error.param) == (400, code, param)
    assert error.body == error_body(code, param, message)
    assert error.response.json() == {"error": error_body(code, param, message)}  # Azure's wrapping
    headers = error.response.headers  # refused before admission: nothing charged, the headers still sent
    assert headers["x-ratelimit-remaining-tokens"] == headers["x-ratelimit-limit-tokens"]
    assert emulator.stats()["completions"] == 0


async def test_default_temperature_and_top_p_are_accepted(emulator: Emulator) -> None:
    async with emulator.v1() as client:
        completion, _ = await create(client, temperature=1, top_p=1.0, max_completion_tokens=1000)
    assert completion.choices[0].message.content == answer_for(HELLO, REASONING)


async def test_max_tokens_refused_on_gpt_5_but_accepted_on_gpt_4_1(emulator: Emulator) -> None:
    async with emulator.v1() as client:
        error = await refused(client, max_tokens=2)
        classic, _ = await create(client, CLASSIC, max_tokens=2, temperature=0, stop=["zzz"], presence_penalty=0.1)
        budgeted, _ = await create(client, CLASSIC, max_completion_tokens=1000)
    assert (error.code, error.param) == ("unsupported_parameter", "max_tokens")
    full = answer_for(HELLO, CLASSIC)
    assert (classic.choices[0].message.content, classic.choices[0].finish_reason) == (full[:8], "length")
    assert classic.model == "gpt-4.1-mini-2025-04-14"
    usage = budgeted.usage
    assert usage.completion_tokens == count_text_tokens(full)
    assert usage.completion_tokens_details.reasoning_tokens == 0
    assert usage.prompt_tokens_details.cached_tokens == 0


async def test_the_model_not_the_deployment_name_decides(emulator: Emulator) -> None:
    async with emulator.v1() as client:
        error = await refused(client, RENAMED_REASONING, max_tokens=10)
        completion, _ = await create(client, LOOKALIKE, max_tokens=10, temperature=0.2)
    assert (error.code, error.param) == ("unsupported_parameter", "max_tokens")
    assert completion.model == "gpt-4.1-mini-2025-04-14"
    assert completion.usage.completion_tokens_details.reasoning_tokens == 0


async def test_reasoning_effort_and_verbosity_values(emulator: Emulator) -> None:
    efforts = "'none', 'minimal', 'low', 'medium', 'high', and 'xhigh'"
    async with emulator.v1() as client:
        on_classic = await refused(client, CLASSIC, reasoning_effort="low")
        unknown = await refused(client, reasoning_effort="max")
        loud = await refused(client, verbosity="loud")
        terse_classic = await refused(client, CLASSIC, verbosity="low")
        terse, _ = await create(client, verbosity="low", reasoning_effort="minimal")
        medium_classic, _ = await create(client, CLASSIC, verbosity="medium")
    assert on_classic.body == error_body(
        "unsupported_parameter",
        "reasoning_effort",
        "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
    )
    assert unknown.body == error_body(
        "invalid_value", "reasoning_effort", f"Invalid value: 'max'. Supported values are: {efforts}."
    )
    assert loud.body == error_body(
        "invalid_value", "verbosity", "Invalid value: 'loud'. Supported values are: 'low', 'medium', and 'high'."
    )
    assert terse_classic.body == error_body(
        "unsupported_value",
        "verbosity",
        "Unsupported value: 'verbosity' does not support 'low' with this model. Supported values are: 'medium'.",
    )
    assert terse.usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS["minimal"]
    assert medium_classic.choices[0].message.content == answer_for(HELLO, CLASSIC)


# --- Reasoning tokens and the empty-output trap ------------------------------------------------------------------


async def test_small_budget_and_high_effort_is_the_empty_output_trap(emulator: Emulator) -> None:
    async with emulator.v1() as client:
        completion, _ = await create(client, max_completion_tokens=500, reasoning_effort="high")
    choice = completion.choices[0]
    assert (choice.message.content, choice.finish_reason) == ("", "length")  # HTTP 200 all the same
    usage = completion.usage
    assert usage.completion_tokens_details.reasoning_tokens == 500  # the whole budget went on reasoning
    assert usage.completion_tokens == 500
    assert usage.total_tokens == PROMPT + 500
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert emulator.stats()["reasoning_tokens"] == 500


async def test_enough_budget_answers_after_reasoning(emulator: Emulator) -> None:
    full = answer_for(HELLO, REASONING)
    async with emulator.v1() as client:
        generous, _ = await create(client, max_completion_tokens=4000, reasoning_effort="high")
        tight, _ = await create(client, max_completion_tokens=REASONING_TOKENS["low"] + 2, reasoning_effort="low")
        default, _ = await create(client)
    assert (generous.choices[0].message.content, generous.choices[0].finish_reason) == (full, "stop")
    assert generous.model == "gpt-5.4-mini-2026-03-17"
    assert generous.usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS["high"] == 1024
    assert generous.usage.completion_tokens == count_text_tokens(full) + 1024
    # What reasoning leaves of the budget is the answer's: 2 tokens = 8 characters.
    assert (tight.choices[0].message.content, tight.choices[0].finish_reason) == (full[:8], "length")
    assert tight.usage.completion_tokens == REASONING_TOKENS["low"] + 2
    assert default.usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS["medium"]  # the default
    assert default.choices[0].message.content == full
    assert emulator.stats()["reasoning_tokens"] == 1024 + 64 + 256


@pytest.mark.parametrize("effort", list(REASONING_TOKENS))
async def test_each_effort_spends_its_documented_tokens(emulator: Emulator, effort: str) -> None:
    async with emulator.v1() as client:
        completion, _ = await create(client, reasoning_effort=effort)
    assert completion.usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS[effort]


# --- The legacy route and Entra ------------------------------------------------------------------------------------


async def test_legacy_deployments_route_follows_the_same_rules(emulator: Emulator) -> None:
    async with emulator.azure(api_version="2025-04-01-preview") as client:
        error = await refused(client, max_tokens=100)
        trap, _ = await create(client, max_completion_tokens=10, reasoning_effort="medium")
        answered, headers = await create(client, max_completion_tokens=1000, reasoning_effort="low")
        classic, _ = await create(client, CLASSIC, max_tokens=100, temperature=0)
    assert error.body == error_body(
        "unsupported_parameter",
        "max_tokens",
        "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
    )
    assert (trap.choices[0].message.content, trap.choices[0].finish_reason) == ("", "length")
    assert answered.choices[0].message.content == answer_for(HELLO, REASONING)
    assert answered.usage.completion_tokens_details.reasoning_tokens == 64
    assert all(name in headers for name in RATE_HEADERS)
    assert classic.choices[0].message.content == answer_for(HELLO, CLASSIC)


async def test_api_key_is_still_refused_on_the_v1_route(emulator: Emulator) -> None:
    base_url = f"{emulator.url}/openai/v1/"
    headers = {"api-key": "0123456789abcdef"}
    async with AsyncOpenAI(base_url=base_url, api_key="unused", default_headers=headers, max_retries=0) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await client.chat.completions.create(model=REASONING, messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.code == "AuthenticationTypeDisabled"


# --- Admission and the rate-limit headers --------------------------------------------------------------------------


async def test_rate_limit_headers_on_every_response_and_decreasing(emulator: Emulator) -> None:
    emulator.configure(deployments={REASONING: {"model": KNOWN_MODELS[REASONING], "tpm": 10_000, "rpm": 5}})
    budget = 1000
    seen: list[Any] = []
    async with emulator.v1() as client:
        for _ in range(3):
            seen.append((await create(client, max_completion_tokens=budget))[1])
        error = await refused(client, max_tokens=1)
    for headers in [*seen, error.response.headers]:
        assert all(name in headers for name in RATE_HEADERS), headers
        assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-limit-tokens"]) == ("5", "10000")
        assert GO_DURATION.match(headers["x-ratelimit-reset-requests"]), headers["x-ratelimit-reset-requests"]
        assert GO_DURATION.match(headers["x-ratelimit-reset-tokens"]), headers["x-ratelimit-reset-tokens"]
    requests = [int(h["x-ratelimit-remaining-requests"]) for h in seen]
    tokens = [int(h["x-ratelimit-remaining-tokens"]) for h in seen]
    assert requests == [4, 3, 2]
    assert tokens == [10_000 - n * (PROMPT + budget) for n in (1, 2, 3)]  # charged the budget, not the usage
    # A window with charges in it is back to its initial state within the window (60 s): "<=1m0s", not "0s".
    assert seen[-1]["x-ratelimit-reset-tokens"] != "0s"
    assert re.match(r"^(1m0s|\d+(\.\d+)?s)$", seen[-1]["x-ratelimit-reset-tokens"])


async def test_unlimited_deployment_reports_the_documented_ceiling(emulator: Emulator) -> None:
    async with emulator.v1() as client:
        _, headers = await create(client, CLASSIC, max_tokens=10)
    assert headers["x-ratelimit-limit-requests"] == headers["x-ratelimit-limit-tokens"] == str(UNLIMITED_REPORTED)
    assert int(headers["x-ratelimit-remaining-requests"]) == UNLIMITED_REPORTED - 1
    assert int(headers["x-ratelimit-remaining-tokens"]) == UNLIMITED_REPORTED - (PROMPT + 10)


async def test_admission_charges_max_completion_tokens(emulator: Emulator) -> None:
    tpm = 3000
    emulator.configure(deployments={REASONING: {"model": KNOWN_MODELS[REASONING], "tpm": tpm}})
    async with emulator.v1() as client:
        completion, headers = await create(client, max_completion_tokens=2000, reasoning_effort="low")
        left = int(headers["x-ratelimit-remaining-tokens"])
        assert left == tpm - (PROMPT + 2000)  # the budget is charged, though far fewer tokens were used
        assert completion.usage.total_tokens < PROMPT + 2000
        with pytest.raises(openai.RateLimitError) as caught:
            await create(client, max_completion_tokens=left - PROMPT + 1, reasoning_effort="none")
        fits, _ = await create(client, max_completion_tokens=left - PROMPT, reasoning_effort="none")
    assert caught.value.code == "429"
    assert "exceeded token rate limit" in str(caught.value)
    throttled = caught.value.response.headers
    assert int(throttled["retry-after"]) >= 1
    assert throttled["x-ratelimit-remaining-tokens"] == str(left)  # a refused request is not charged
    assert all(name in throttled for name in RATE_HEADERS)
    assert fits.choices[0].message.content == answer_for(HELLO, REASONING)
    assert emulator.stats()["by_status"] == {"200": 2, "429": 1}


def test_reset_durations_are_written_like_openai() -> None:
    assert [duration(s) for s in (0, -1, 0.0004, 0.25, 1, 6, 8.64, 60, 61.5, 3723.5)] == [
        "0s",
        "0s",
        "1ms",
        "250ms",
        "1s",
        "6s",
        "8.64s",
        "1m0s",
        "1m1.5s",
        "1h2m3.5s",
    ]
