"""The Azure OpenAI emulator, driven through the real openai SDK (AsyncAzureOpenAI and the v1 AsyncOpenAI route)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp
import httpx2
import openai
import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI

from emulators.aoai import (
    answer_for,
    count_prompt_tokens,
    count_text_tokens,
    estimate_request_tokens,
    fill_schema,
)
from emulators.tokens import Principal
from tests.emulators.emulator_fixtures import API_VERSION, HELLO, Emulator, StartEmulator

DEPLOYMENT = "gpt-4o-mini"
SECOND = "gpt-4o"
GRANTED = Principal(object_id="9a7e0000-0000-4000-8000-0000000000a1", name="granted-app")
UNGRANTED = Principal(object_id="9a7e0000-0000-4000-8000-0000000000b2", name="ungranted-app")
# A deployment's other fields (test_deployments_and_outages.py exercises them).
NO_OUTAGE_NO_QUIRKS = {
    "outage": None,
    "unreported_rate_headers": False,
    "omit_retry_after": False,
    "service_tier": "default",
    "flex_unavailable_until": None,
}


@pytest.fixture
async def emulator(start_emulator: StartEmulator) -> Emulator:
    return await start_emulator({"deployments": [DEPLOYMENT, SECOND]}, GRANTED)


async def chat(client: AsyncAzureOpenAI | AsyncOpenAI, model: str = DEPLOYMENT, **kwargs: Any) -> Any:
    kwargs.setdefault("messages", HELLO)
    return await client.chat.completions.create(model=model, **kwargs)


# --- Success paths -----------------------------------------------------------------------------------


async def test_success_content_is_answer_for(emulator: Emulator) -> None:
    async with emulator.azure() as client:
        raw = await client.chat.completions.with_raw_response.create(model=DEPLOYMENT, messages=HELLO)
    completion = raw.parse()
    assert completion.choices[0].message.content == answer_for(HELLO, DEPLOYMENT) == "[gpt-4o-mini] Hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-mini-2024-07-18"
    assert completion.id.startswith("chatcmpl-")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_prompt_tokens(HELLO) == (3 + 3) + (3 + 3) + 3
    assert completion.usage.completion_tokens == count_text_tokens(answer_for(HELLO, DEPLOYMENT))
    extra = completion.model_extra or {}
    assert extra["prompt_filter_results"][0]["content_filter_results"]["hate"] == {
        "filtered": False,
        "severity": "safe",
    }
    assert raw.headers["apim-request-id"] == raw.headers["x-request-id"]
    assert int(raw.headers["x-ratelimit-remaining-requests"]) > 0
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) > 0
    assert emulator.stats()["completions"] == 1


async def test_v1_route_takes_the_deployment_from_the_body(emulator: Emulator) -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}]}]
    async with AsyncOpenAI(base_url=f"{emulator.url}/openai/v1/", api_key=emulator.token(), max_retries=0) as client:
        completion = await chat(client, SECOND, messages=parts)
    assert completion.choices[0].message.content == answer_for(parts, SECOND) == "[gpt-4o] part one\ntwo"
    assert completion.model == "gpt-4o-2024-08-06"
    assert emulator.stats()["by_deployment"] == {SECOND: 1}


async def test_max_tokens_truncates_and_stop_cuts(emulator: Emulator) -> None:
    full = answer_for(HELLO, DEPLOYMENT)
    async with emulator.azure() as client:
        short = await chat(client, max_tokens=2)
        stopped = await chat(client, stop=["there"])
        modern = await chat(client, max_completion_tokens=1)
    assert (short.choices[0].message.content, short.choices[0].finish_reason) == (full[:8], "length")
    assert short.usage is not None
    assert short.usage.completion_tokens == 2
    assert (stopped.choices[0].message.content, stopped.choices[0].finish_reason) == ("[gpt-4o-mini] Hello ", "stop")
    assert modern.choices[0].message.content == full[:4]


async def test_json_object_and_json_schema_outputs_parse(emulator: Emulator) -> None:
    schema = {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "count": {"type": "integer"},
            "score": {"type": "number"},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "mood": {"type": "string", "enum": ["calm", "angry"]},
            "nested": {"type": "object", "properties": {"n": {"type": ["null", "integer"]}}, "required": ["n"]},
            "optional": {"type": "string"},
        },
        "required": ["summary", "count", "score", "ok", "tags", "mood", "nested"],
    }
    text = answer_for(HELLO, DEPLOYMENT)
    async with emulator.azure() as client:
        as_object = await chat(client, response_format={"type": "json_object"})
        as_schema = await chat(
            client, response_format={"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
        )
    assert json.loads(as_object.choices[0].message.content) == {"answer": text}
    expected = {"summary": text, "count": 0, "score": 0.0, "ok": False, "tags": [], "mood": "calm", "nested": {"n": 0}}
    assert json.loads(as_schema.choices[0].message.content) == expected == fill_schema(schema, text)


async def test_latency_is_applied_without_blocking(emulator: Emulator) -> None:
    state = emulator.running.state
    state.update_config(latency_ms=300)
    async with emulator.azure() as client:
        began = time.monotonic()
        await chat(client)
        assert time.monotonic() - began >= 0.3
        # A latency no test outlives: were it waited out on the loop's thread, the first call would hold the loop
        # and no other could even be admitted. All five are charged to the rate window, none is answered, and the
        # server still answers other requests meanwhile.
        state.update_config(latency_ms=3_600_000)
        calls = [asyncio.create_task(chat(client)) for _ in range(5)]
        while len(state.windows[DEPLOYMENT]) < 1 + 5:
            await asyncio.sleep(0.01)
        async with aiohttp.ClientSession() as session, session.get(f"{emulator.url}/_emulator/stats") as response:
            assert (await response.json())["completions"] == 1
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)  # the emulator's stop() ends the server side


# --- Authentication and authorization ------------------------------------------------------------------


async def test_wrong_audience_is_rejected_like_azure(emulator: Emulator) -> None:
    token = emulator.token(audience="https://storage.azure.com/.default")
    async with emulator.azure(token) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await chat(client)
    assert "audience is incorrect (https://cognitiveservices.azure.com)" in str(caught.value)
    assert caught.value.body == {
        "statusCode": 401,
        "message": "Unauthorized. Access token is missing, invalid, audience is incorrect "
        "(https://cognitiveservices.azure.com), or have expired.",
    }


async def test_expired_token_is_rejected(emulator: Emulator) -> None:
    token = emulator.token(lifetime=60, now=time.time() - 3600)
    async with emulator.azure(token) as client:
        with pytest.raises(openai.AuthenticationError, match="or have expired"):
            await chat(client)


async def test_api_key_is_rejected_because_local_auth_is_disabled(emulator: Emulator) -> None:
    async with emulator.azure(api_key="0123456789abcdef") as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await chat(client)
    assert caught.value.code == "AuthenticationTypeDisabled"
    assert "Key based authentication is disabled" in str(caught.value)


async def test_missing_role_is_permission_denied(emulator: Emulator) -> None:
    async with emulator.azure(emulator.token(UNGRANTED)) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await chat(client)
        assert caught.value.status_code == 401
        assert caught.value.code == "PermissionDenied"
        emulator.running.state.update_config(permission_denied_status=403)
        with pytest.raises(openai.PermissionDeniedError) as caught_403:
            await chat(client)
        assert caught_403.value.code == "PermissionDenied"
    assert emulator.stats()["completions"] == 0


async def test_role_grant_takes_effect_after_its_delay(emulator: Emulator) -> None:
    # Decided by what the emulator recorded, not by how fast the calls went: a grant ten minutes out is certainly
    # not in effect for the first call however slow the machine is; granted again with a 1 s delay, the role is
    # in effect from the instant the control answers with, and every call is answered by which side of it it fell.
    async with aiohttp.ClientSession() as session:

        async def grant(delay_seconds: float) -> float:
            body = {"principal_id": UNGRANTED.object_id, "delay_seconds": delay_seconds}
            async with session.post(f"{emulator.url}/_emulator/roles", json=body) as response:
                assert response.status == 201
                effective_at: float = (await response.json())["effective_at"]
                return effective_at

        await grant(600)
        async with emulator.azure(emulator.token(UNGRANTED)) as client:
            with pytest.raises(openai.AuthenticationError) as caught:
                await chat(client)
            assert caught.value.code == "PermissionDenied"
            asked = time.time()
            effective_at = await grant(1)
            assert asked + 1 <= effective_at <= time.time() + 1
            completion = await until_answered(client, deadline=time.monotonic() + 30)
    assert completion.choices[0].message.content == answer_for(HELLO, DEPLOYMENT)
    recorded = list(emulator.running.state.requests)
    assert [(r.status, r.code) for r in recorded[:-1]] == [("401", "PermissionDenied")] * (len(recorded) - 1)
    assert recorded[-1].status == "200"
    assert all(r.began < effective_at for r in recorded[:-1])  # each refusal came before the grant took effect
    assert recorded[-1].ended >= effective_at  # and the answer after it
    assert all(r.status == "200" for r in recorded if r.began >= effective_at)


async def until_answered(client: AsyncAzureOpenAI, *, deadline: float) -> Any:
    """Call until the role is in effect (PermissionDenied until then); fails past ``deadline``."""
    while True:
        try:
            return await chat(client)
        except openai.AuthenticationError:  # the recorded requests say which (PermissionDenied, asserted there)
            assert time.monotonic() < deadline, "the grant never took effect"
            await asyncio.sleep(0.05)


async def test_grant_any_admits_every_valid_token(emulator: Emulator) -> None:
    emulator.running.state.update_config(grant_any=True)
    async with emulator.azure(emulator.token(UNGRANTED)) as client:
        await chat(client)


async def test_stats_count_distinct_tokens_and_principals(emulator: Emulator) -> None:
    for token in (emulator.token(), emulator.token(), emulator.token(UNGRANTED)):
        async with emulator.azure(token) as client:
            for _ in range(2):
                with contextlib.suppress(openai.AuthenticationError):
                    await chat(client)
    stats = emulator.stats()
    assert (stats["distinct_tokens"], stats["distinct_principals"]) == (3, 2)
    assert stats["by_status"] == {"200": 4, "401": 2}
    assert stats["completions"] == 4


async def test_requests_are_recorded_with_their_times_and_answers(emulator: Emulator) -> None:
    before = time.time()
    async with emulator.azure() as granted, emulator.azure(emulator.token(UNGRANTED)) as ungranted:
        await chat(granted)
        with pytest.raises(openai.AuthenticationError):
            await chat(ungranted)
    after = time.time()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{emulator.url}/_emulator/requests") as response:
            recorded = await response.json()
        async with session.post(f"{emulator.url}/_emulator/stats/reset") as response:
            assert response.status == 200
        async with session.get(f"{emulator.url}/_emulator/requests") as response:
            assert await response.json() == []  # cleared with the stats
    route = "/openai/deployments/{deployment}/chat/completions"
    assert [(r["method"], r["route"], r["deployment"], r["status"], r["code"]) for r in recorded] == [
        ("POST", route, DEPLOYMENT, "200", None),
        ("POST", route, DEPLOYMENT, "401", "PermissionDenied"),
    ]
    first, second = recorded
    assert before <= first["began"] <= first["ended"] <= second["began"] <= second["ended"] <= after


# --- Request errors --------------------------------------------------------------------------------------


async def test_unknown_deployment_is_not_found(emulator: Emulator) -> None:
    async with emulator.azure() as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await chat(client, "gpt-5-nonexistent")
    assert caught.value.code == "DeploymentNotFound"


async def test_invalid_requests_are_bad_requests(emulator: Emulator) -> None:
    async with emulator.azure() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await chat(client, messages=[])
    assert caught.value.code == "BadRequest"
    assert caught.value.param == "messages"
    headers = {"Authorization": f"Bearer {emulator.token()}"}
    async with aiohttp.ClientSession() as session:
        url = f"{emulator.url}/openai/deployments/{DEPLOYMENT}/chat/completions"
        async with session.post(url, json={"messages": HELLO}, headers=headers) as response:
            # No api-version: Azure answers 404 "Resource not found" (not 400), as publicly reported.
            assert (response.status, await response.json()) == (
                404,
                {"error": {"code": "404", "message": "Resource not found"}},
            )
        async with session.post(url, params={"api-version": API_VERSION}, data=b"{", headers=headers) as response:
            assert response.status == 400
        other = f"{emulator.url}/openai/deployments/{DEPLOYMENT}/embeddings"
        async with session.post(other, params={"api-version": API_VERSION}, json={}, headers=headers) as response:
            assert (await response.json())["error"]["message"] == "Resource not found"


# --- Rate limits -------------------------------------------------------------------------------------------


async def test_token_limit_returns_429_with_retry_after(emulator: Emulator) -> None:
    estimate = estimate_request_tokens({"messages": HELLO, "max_tokens": 20})
    emulator.running.state.update_config(tpm=3 * estimate)
    async with emulator.azure() as client:
        for _ in range(3):
            raw = await client.chat.completions.with_raw_response.create(
                model=DEPLOYMENT, messages=HELLO, max_tokens=20
            )
        assert raw.headers["x-ratelimit-remaining-tokens"] == "0"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(1_000_000_000 - 3)  # no rpm set
        with pytest.raises(openai.RateLimitError) as caught:
            await chat(client, max_tokens=20)
    headers = caught.value.response.headers
    assert 59_000 < int(headers["retry-after-ms"]) <= 60_000  # the first charge leaves the window in ~60 s
    assert headers["retry-after"] == "60"
    assert caught.value.code == "429"
    assert "exceeded token rate limit" in str(caught.value)
    assert "Please retry after 60 seconds" in str(caught.value)
    assert f"API version {API_VERSION}" in str(caught.value)
    assert emulator.stats()["throttled"] == 1
    # A deployment has its own window.
    async with emulator.azure() as client:
        await chat(client, SECOND, max_tokens=20)


async def test_a_request_larger_than_the_token_limit_never_fits(emulator: Emulator) -> None:
    # No max_tokens: charged prompt + default_max_tokens (4096), which exceeds tpm=1000 even in an empty window.
    emulator.running.state.update_config(tpm=1000)
    async with emulator.azure() as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await chat(client)
        await chat(client, max_tokens=100)
    assert caught.value.response.headers["retry-after"] == "60"


async def test_request_limit_frees_up_and_the_sdk_retry_succeeds(emulator: Emulator) -> None:
    emulator.running.state.update_config(rpm=1, rate_window_seconds=1.0)
    answered: list[httpx2.Response] = []

    async def record(response: httpx2.Response) -> None:
        answered.append(response)

    http_client = openai.DefaultAsyncHttpxClient(event_hooks={"response": [record]})
    async with emulator.azure(max_retries=2, http_client=http_client) as client:
        began = time.monotonic()
        first = await chat(client)
        second = await chat(client)  # 429 (retry-after-ms <= 1000), the SDK waits that long and retries
        elapsed = time.monotonic() - began
    assert second.choices[0].message.content == first.choices[0].message.content
    assert [response.status_code for response in answered] == [200, 429, 200]
    throttled = answered[1].headers  # the wait asked for is what is left of the 1 s window, not a full minute
    assert throttled["retry-after"] == "1"
    assert 0 < int(throttled["retry-after-ms"]) <= 1000
    assert emulator.stats()["by_status"] == {"200": 2, "429": 1}
    assert elapsed > 0.9  # the SDK did wait for the window to free up


async def test_long_retry_after_makes_the_sdk_give_up_at_once(emulator: Emulator) -> None:
    # openai 3.57 _should_retry(): a Retry-After above MAX_RETRY_AFTER_DELAY (120 s) means no retry at all.
    emulator.running.state.update_config(rpm=1, retry_after_override_seconds=150)
    async with emulator.azure(max_retries=2) as client:
        await chat(client)
        with pytest.raises(openai.RateLimitError) as caught:
            await chat(client)
    assert caught.value.response.headers["retry-after"] == "150"
    assert caught.value.response.headers["retry-after-ms"] == "150000"
    assert "Please retry after 150 seconds" in str(caught.value)
    assert emulator.stats()["by_status"] == {"200": 1, "429": 1}  # one 429: no retries were made


# --- Faults ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "status"), [("fault_500", 500), ("fault_503", 503)])
async def test_server_errors(emulator: Emulator, fault: str, status: int) -> None:
    emulator.running.state.update_config(**{fault: 1.0})
    async with emulator.azure() as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await chat(client)
    assert caught.value.status_code == status
    assert emulator.stats()["by_status"] == {str(status): 1}


async def test_sdk_retries_server_errors(emulator: Emulator) -> None:
    emulator.running.state.update_config(fault_503=1.0)
    async with emulator.azure(max_retries=1) as client:
        with pytest.raises(openai.APIStatusError):
            await chat(client)  # backoff 0.5 s x jitter before the one retry
    assert emulator.stats()["by_status"] == {"503": 2}


async def test_dropped_connection_is_a_connection_error(emulator: Emulator) -> None:
    emulator.running.state.update_config(fault_drop=1.0)
    async with emulator.azure() as client:
        with pytest.raises(openai.APIConnectionError) as caught:
            await chat(client)
    assert not isinstance(caught.value, openai.APITimeoutError)
    assert emulator.stats()["by_status"] == {"dropped": 1}


async def test_stall_trips_the_client_timeout(emulator: Emulator) -> None:
    emulator.running.state.update_config(fault_stall=1.0)  # stall_seconds stays 3600: stop() must still be quick
    async with emulator.azure(timeout=0.3) as client:
        with pytest.raises(openai.APITimeoutError):
            await chat(client)


async def test_faults_are_reproducible_from_the_seed(emulator: Emulator) -> None:
    state = emulator.running.state
    state.update_config(fault_500=0.5, fault_seed=7)

    async def outcomes() -> list[bool]:
        results = []
        async with emulator.azure() as client:
            for _ in range(8):
                try:
                    await chat(client)
                    results.append(True)
                except openai.InternalServerError:
                    results.append(False)
        return results

    first = await outcomes()
    state.update_config(latency_ms=0)  # any config change restarts the sequence from fault_seed
    assert await outcomes() == first
    state.update_config(fault_seed=8)
    assert await outcomes() != first
    assert True in first
    assert False in first


# --- Content filter ----------------------------------------------------------------------------------------------


async def test_prompt_filter_is_a_bad_request(emulator: Emulator) -> None:
    messages = [{"role": "user", "content": "please TRIGGER_PROMPT_FILTER now"}]
    async with emulator.azure() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await chat(client, messages=messages)
    assert caught.value.code == "content_filter"
    assert caught.value.param == "prompt"
    body: Any = caught.value.body
    # Key for key as Azure sends it (facts-api-surface.md section 5): the singular content_filter_result.
    assert list(body) == ["message", "type", "param", "code", "status", "innererror"]
    assert (body["type"], body["status"]) == (None, 400)
    assert body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert body["innererror"]["content_filter_result"]["hate"] == {"filtered": True, "severity": "high"}
    assert body["innererror"]["content_filter_result"]["jailbreak"] == {"filtered": False, "detected": False}
    assert "content_filter_results" not in body["innererror"]
    assert emulator.stats()["completions"] == 0


async def test_output_filter_sets_finish_reason(emulator: Emulator) -> None:
    messages = [{"role": "user", "content": "say TRIGGER_OUTPUT_FILTER"}]
    async with emulator.azure() as client:
        completion = await chat(client, messages=messages)
    choice = completion.choices[0]
    # Generated, then cut where the filter hit: the partial text before it is what the client gets.
    assert (choice.finish_reason, choice.message.content) == ("content_filter", "[gpt-4o-mini] say ")
    results = (choice.model_extra or {})["content_filter_results"]
    assert results["hate"] == {"filtered": True, "severity": "high"}
    assert results["violence"] == {"filtered": False, "severity": "safe"}
    assert results["protected_material_text"] == {"filtered": False, "detected": False}
    prompt_results = (completion.model_extra or {})["prompt_filter_results"]
    assert prompt_results[0]["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    assert completion.usage is not None and completion.usage.completion_tokens > 0  # billed though withheld


# --- Control API -----------------------------------------------------------------------------------------------


async def test_control_api_round_trip(emulator: Emulator) -> None:
    base = f"{emulator.url}/_emulator"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/config") as response:
            config = await response.json()
        assert config["deployments"][DEPLOYMENT] == {
            "model": "gpt-4o-mini-2024-07-18",
            "tpm": None,
            "rpm": None,
            **NO_OUTAGE_NO_QUIRKS,
        }
        assert config["grants"] == {GRANTED.object_id: 0.0}

        changes = {"latency_ms": 5, "deployments": {"custom": {"model": "my-model", "rpm": 10}}}
        async with session.patch(f"{base}/config", json=changes) as response:
            assert response.status == 200
            assert (await response.json())["deployments"] == {
                "custom": {"model": "my-model", "tpm": None, "rpm": 10, **NO_OUTAGE_NO_QUIRKS}
            }
        async with session.patch(f"{base}/config", json={"fault_500": 2}) as response:
            assert response.status == 400
        async with session.patch(f"{base}/config", json={"no_such_option": 1}) as response:
            assert response.status == 400

        async with emulator.azure() as client:
            raw = await client.chat.completions.with_raw_response.create(model="custom", messages=HELLO)
            assert raw.parse().model == "my-model"
            assert raw.headers["x-ratelimit-remaining-requests"] == "9"

        async with session.get(f"{base}/stats") as response:
            stats = await response.json()
        assert stats["by_deployment"] == {"custom": 1}
        assert stats["principals"] == [GRANTED.object_id]
        async with session.post(f"{base}/stats/reset") as response:
            assert (await response.json())["requests"] == 0

        async with session.post(f"{base}/roles", json={"principal_id": UNGRANTED.object_id}) as response:
            assert response.status == 201
        assert emulator.running.state.has_role(UNGRANTED.object_id)
        async with session.delete(f"{base}/roles/{UNGRANTED.object_id}") as response:
            assert response.status == 204
        async with session.delete(f"{base}/roles/{UNGRANTED.object_id}") as response:
            assert response.status == 404
        assert not emulator.running.state.has_role(UNGRANTED.object_id)


def test_token_estimate_is_documented_arithmetic() -> None:
    messages = [{"role": "user", "content": "x" * 9}]
    assert count_prompt_tokens(messages) == 3 + 3 + 3  # ceil(9/4) = 3
    assert estimate_request_tokens({"messages": messages, "max_tokens": 10}) == 19
    assert estimate_request_tokens({"messages": messages, "max_completion_tokens": 5}) == 14
    assert estimate_request_tokens({"messages": messages}) == 9 + 4096


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    from emulators.aoai import main

    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    usage = capsys.readouterr().out
    for flag in ("--port", "--host", "--state-dir", "--grant", "--grant-any", "--deployment", "--latency-ms", "--tpm"):
        assert flag in usage
