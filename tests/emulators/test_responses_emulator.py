"""Issue 22 item 6: the emulator's Responses API (create, retrieve, cancel, delete; background mode; Responses-only
models; content filters), through the real openai SDK: every answer parses into ``openai.types.responses.Response``
and every refusal surfaces as the SDK's typed exception with Azure's ``code`` and ``body``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response

from emulators.aoai import count_prompt_tokens, is_responses_only
from tests.emulators.emulator_fixtures import HELLO, Emulator
from tests.emulators.responses_fixtures import CLASSIC, CODEX, GRANTED, PROJECT, REASONING, TERMINAL, until, validated

PROMPT = "Hello there"
ANSWER = f"[{REASONING}] {PROMPT}"


def error_body(code: str, param: str | None, message: str) -> dict[str, Any]:
    return {"message": message, "type": "invalid_request_error", "param": param, "code": code}


async def refused(client: AsyncOpenAI, **kwargs: Any) -> openai.BadRequestError:
    kwargs.setdefault("model", REASONING)
    kwargs.setdefault("input", PROMPT)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(**kwargs)
    return caught.value


# --- Create, retrieve, delete ---------------------------------------------------------------------------------


async def test_a_response_parses_into_the_sdk_types(emu: Emulator, sdk: AsyncOpenAI) -> None:
    raw = await sdk.responses.with_raw_response.create(
        model=REASONING, input=PROMPT, instructions="Be brief.", reasoning={"effort": "low", "summary": "auto"}
    )
    response = raw.parse()
    assert isinstance(response, Response)
    assert validated(json.loads(raw.text)).output_text == response.output_text == ANSWER
    assert response.id.startswith("resp_") and response.object == "response"
    assert (response.status, response.error, response.incomplete_details) == ("completed", None, None)
    assert response.output_text == ANSWER
    assert response.model == "gpt-5.4-mini-2026-03-17"
    assert (response.service_tier, response.background, response.store) == ("default", False, True)
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert [part.text for part in reasoning.summary] == [f"[auto summary] Answering: {PROMPT}"]
    assert message.type == "message" and message.role == "assistant"
    assert response.reasoning is not None and response.reasoning.effort == "low"
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens == count_prompt_tokens(HELLO)  # the instructions are read as a developer turn
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 64  # REASONING_TOKENS["low"]
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    filters = (response.model_extra or {})["content_filters"]
    assert [(f["source_type"], f["blocked"]) for f in filters] == [("prompt", False), ("completion", False)]
    assert filters[1]["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    assert int(raw.headers["x-ratelimit-remaining-requests"]) > 0 and raw.headers["apim-request-id"]
    stats = emu.stats()
    assert stats["responses"]["created"] == 1 and stats["completions"] == 0  # completions: chat's only
    assert stats["by_tier"]["default"]["completion_tokens"] == usage.output_tokens


async def test_messages_json_schema_and_a_classic_model(sdk: AsyncOpenAI) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    response = await sdk.responses.create(
        model=CLASSIC,
        input=[
            {"role": "developer", "content": "Answer in JSON."},
            {"role": "user", "content": [{"type": "input_text", "text": "What now?"}]},
        ],
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
        temperature=0.2,
        metadata={"job": "j-1"},
    )
    assert json.loads(response.output_text) == {"answer": f"[{CLASSIC}] What now?"}
    assert [item.type for item in response.output] == ["message"]  # no reasoning item on a classic model
    assert response.temperature == 0.2 and response.metadata == {"job": "j-1"}
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"


async def test_retrieve_then_delete_then_not_found(emu: Emulator, sdk: AsyncOpenAI) -> None:
    created = await sdk.responses.create(model=REASONING, input=PROMPT)
    again = await sdk.responses.retrieve(created.id)
    assert again.model_dump() == created.model_dump()
    assert await sdk.responses.delete(created.id) is None
    for call in (sdk.responses.retrieve, sdk.responses.delete, sdk.responses.cancel):
        with pytest.raises(openai.NotFoundError) as caught:
            await call(created.id)
        assert caught.value.code == "NotFound"
        assert caught.value.body == {
            "code": "NotFound",
            "message": f"Response with id '{created.id}' not found.",
            "param": None,
            "type": "invalid_request_error",
        }
    counts = emu.stats()["responses"]
    assert (counts["created"], counts["retrieves"], counts["deletes"], counts["stored"]) == (1, 1, 1, 0)


async def test_reset_responses_forgets_them(emu: Emulator, sdk: AsyncOpenAI) -> None:
    created = await sdk.responses.create(model=REASONING, input=PROMPT, background=True)
    emu.running.state.reset_responses()
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(created.id)


async def test_a_stateless_response_is_not_kept(sdk: AsyncOpenAI) -> None:
    created = await sdk.responses.create(model=REASONING, input=PROMPT, store=False)
    assert (created.store, created.output_text) == (False, ANSWER)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(created.id)


async def test_a_budget_the_reasoning_spends_is_incomplete(sdk: AsyncOpenAI) -> None:
    response = await sdk.responses.create(model=REASONING, input=PROMPT, max_output_tokens=100)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == ""  # 256 medium-effort reasoning tokens ate all 100
    assert response.usage is not None and response.usage.output_tokens == 100


# --- The request, checked strictly ------------------------------------------------------------------------------


async def test_unknown_and_malformed_fields_are_refused(sdk: AsyncOpenAI) -> None:
    unknown = await refused(sdk, extra_body={"tools_choice": "auto"})
    assert unknown.body == error_body("unknown_parameter", "tools_choice", "Unknown parameter: 'tools_choice'.")
    role = await refused(sdk, input=[{"role": "robot", "content": "hi"}])
    assert (role.code, role.param) == ("invalid_value", "input[0].role")
    budget = await refused(sdk, max_output_tokens=5)
    assert budget.body == error_body(
        "integer_below_min_value",
        "max_output_tokens",
        "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got 5 instead.",
    )
    typed = await refused(sdk, extra_body={"store": "yes"})
    assert (typed.code, typed.param) == ("invalid_type", "store")
    summary = await refused(sdk, reasoning={"summary": "verbose"})
    assert (summary.code, summary.param) == ("invalid_value", "reasoning.summary")
    form = await refused(sdk, text={"format": {"type": "xml"}})
    assert (form.code, form.param) == ("invalid_value", "text.format")
    empty = await refused(sdk, input=[])
    assert (empty.code, empty.param) == ("empty_array", "input")


async def test_metadata_limits(sdk: AsyncOpenAI) -> None:
    many = await refused(sdk, metadata={f"k{i}": "v" for i in range(17)})
    assert (many.code, many.param) == ("object_above_max_properties", "metadata")
    assert (await sdk.responses.create(model=REASONING, input=PROMPT, metadata={"k" * 64: "v" * 512})).id
    long_key = await refused(sdk, metadata={"k" * 65: "v"})
    assert (long_key.code, long_key.param) == ("string_above_max_length", "metadata")
    long_value = await refused(sdk, metadata={"k": "v" * 513})
    assert (long_value.code, long_value.param) == ("string_above_max_length", "metadata.k")


async def test_reasoning_models_refuse_sampling_as_chat_does(sdk: AsyncOpenAI) -> None:
    responses = await refused(sdk, temperature=0.2)
    with pytest.raises(openai.BadRequestError) as chat:
        await sdk.chat.completions.create(model=REASONING, messages=HELLO, temperature=0.2)  # type: ignore[arg-type]
    assert responses.body == chat.value.body
    assert (responses.code, responses.param) == ("unsupported_value", "temperature")
    top_p = await refused(sdk, top_p=0.5)
    assert (top_p.code, top_p.param) == ("unsupported_value", "top_p")
    effort = await refused(sdk, reasoning={"effort": "extreme"})
    assert (effort.code, effort.param) == ("invalid_value", "reasoning.effort")
    assert str((effort.body or {})["message"]).startswith(
        "Invalid value: 'extreme'. Supported values are: 'none', 'minimal'"
    )
    classic = await refused(sdk, model=CLASSIC, reasoning={"effort": "low"})
    assert classic.body == error_body(
        "unsupported_parameter",
        "reasoning.effort",
        "Unsupported parameter: 'reasoning.effort' is not supported with this model.",
    )


async def test_background_needs_store(sdk: AsyncOpenAI) -> None:
    stateless = await refused(sdk, background=True, store=False)
    assert (stateless.code, stateless.param) == ("invalid_value", "store")
    assert "store" in stateless.message


# --- Responses-only models --------------------------------------------------------------------------------------


def test_the_catalogue_knows_the_responses_only_models() -> None:
    for model in ("gpt-5.1-codex", "gpt-5.1-codex-max", "gpt-5-pro", "o3-pro", "codex-mini", "gpt-5.4-pro"):
        assert is_responses_only(model), model
    for model in ("gpt-5.5-pro", "GPT-5.3-Codex-2026-02-01", "gpt-5.4-codex"):  # the family rule
        assert is_responses_only(model), model
    for model in ("gpt-5.4-mini", "gpt-5.4", "o3", "gpt-4.1", "o1-pro", "gpt-5.6-sol", "my-codex-bot"):
        assert not is_responses_only(model), model


async def test_chat_on_a_responses_only_model_is_refused_as_azure_does(emu: Emulator, sdk: AsyncOpenAI) -> None:
    message = (
        "The chatCompletion operation does not work with the specified model, gpt-5.1-codex. Please choose a "
        "different model and try again. You can learn more about which models can be used with each operation "
        "here: https://go.microsoft.com/fwlink/?linkid=2197993 ."
    )
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(model=CODEX, messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.code == "OperationNotSupported"
    assert caught.value.response.json() == {"error": {"code": "OperationNotSupported", "message": message}}
    async with emu.azure(api_version="2025-04-01-preview") as legacy:
        with pytest.raises(openai.BadRequestError) as again:
            await legacy.chat.completions.create(model=CODEX, messages=HELLO)  # type: ignore[arg-type]
    assert again.value.code == "OperationNotSupported"
    response = await sdk.responses.create(model=CODEX, input=PROMPT)
    assert response.output_text == f"[{CODEX}] {PROMPT}"
    assert emu.stats()["completions"] == 0


async def test_the_project_route_serves_responses_to_ai_azure_tokens(emu: Emulator) -> None:
    base = f"{emu.url}/api/projects/demo/openai/v1/"
    async with AsyncOpenAI(base_url=base, api_key=emu.provider(PROJECT), max_retries=0) as project:
        created = await project.responses.create(model=REASONING, input=PROMPT)
        assert (await project.responses.retrieve(created.id)).output_text == ANSWER
    async with AsyncOpenAI(base_url=base, api_key=emu.provider(), max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.responses.create(model=REASONING, input=PROMPT)
        with pytest.raises(openai.AuthenticationError):
            await wrong.responses.retrieve(created.id)


# --- Background mode ----------------------------------------------------------------------------------------------


async def test_background_lifecycle_queued_in_progress_completed(emu: Emulator, sdk: AsyncOpenAI) -> None:
    raw = await sdk.responses.with_raw_response.create(model=REASONING, input=PROMPT, background=True)
    created = validated(json.loads(raw.text))
    assert (created.status, created.output, created.usage, created.background) == ("queued", [], None, True)
    seen, polls = [created.status], 1
    while (polled := await sdk.responses.retrieve(created.id)).status not in TERMINAL:
        polls += 1
        if polled.status != seen[-1]:
            seen.append(polled.status)
        assert polled.output == [] and polled.usage is None
        await asyncio.sleep(0.05)
    assert [*seen, polled.status] == ["queued", "in_progress", "completed"]
    assert polled.output_text == ANSWER and polled.usage is not None
    assert polled.completed_at is not None and polled.completed_at >= polled.created_at
    # Billed once, when seen finished, however often it is polled afterwards.
    again = await sdk.responses.retrieve(created.id)
    assert again.model_dump() == polled.model_dump()
    stats = emu.stats()
    assert stats["completion_tokens"] == polled.usage.output_tokens
    counts = stats["responses"]
    assert (counts["created"], counts["background"], counts["cancels"]) == (1, 1, 0)
    assert counts["retrieves"] == polls + 1 >= 3
    assert counts["by_tier"]["default"]["retrieves"] == counts["retrieves"]


async def test_background_survives_a_new_client(emu: Emulator) -> None:
    async with emu.v1() as first:
        created = await first.responses.create(model=REASONING, input=PROMPT, background=True)
    async with emu.v1() as second:  # a restarted worker: a new client, the same id
        done = await until(second, created.id, TERMINAL)
    assert (done.status, done.output_text) == ("completed", ANSWER)


async def test_background_failure_trigger_ends_failed(emu: Emulator, sdk: AsyncOpenAI) -> None:
    created = await sdk.responses.create(model=REASONING, input="TRIGGER_BACKGROUND_FAIL please", background=True)
    await until(sdk, created.id, TERMINAL)
    failed = validated(json.loads((await sdk.responses.with_raw_response.retrieve(created.id)).text))
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "server_error" and failed.error.message
    assert (failed.output, failed.usage) == ([], None)
    assert emu.stats()["completion_tokens"] == 0  # a failed response bills nothing


async def test_a_stuck_response_never_finishes_until_cancelled(emu: Emulator, sdk: AsyncOpenAI) -> None:
    created = await sdk.responses.create(model=REASONING, input="TRIGGER_BACKGROUND_STUCK", background=True)
    await asyncio.sleep(1.2)  # twice the configured queued + in-progress time
    assert (await sdk.responses.retrieve(created.id)).status == "in_progress"
    cancelled = validated(json.loads((await sdk.responses.with_raw_response.cancel(created.id)).text))
    assert (cancelled.status, cancelled.output, cancelled.usage) == ("cancelled", [], None)
    again = await sdk.responses.cancel(created.id)  # idempotent: the final object again
    assert again.model_dump() == cancelled.model_dump()
    assert (await sdk.responses.retrieve(created.id)).status == "cancelled"
    stats = emu.stats()
    assert stats["responses"]["cancels"] == 2 and stats["completion_tokens"] == 0


async def test_cancelling_a_finished_response_changes_nothing(sdk: AsyncOpenAI) -> None:
    created = await sdk.responses.create(model=REASONING, input=PROMPT, background=True)
    done = await until(sdk, created.id, TERMINAL)
    assert (await sdk.responses.cancel(created.id)).model_dump() == done.model_dump()
    queued = await sdk.responses.create(model=REASONING, input=PROMPT, background=True)
    assert (await sdk.responses.cancel(queued.id)).status == "cancelled"  # still queued: cancelled
    await asyncio.sleep(1.0)
    assert (await sdk.responses.retrieve(queued.id)).status == "cancelled"  # its schedule no longer matters


async def test_only_background_responses_can_be_cancelled(sdk: AsyncOpenAI) -> None:
    created = await sdk.responses.create(model=REASONING, input=PROMPT)
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.responses.cancel(created.id)
    assert caught.value.code == "invalid_request" and "background" in caught.value.message


async def test_background_charges_the_quota_once_at_create(emu: Emulator, sdk: AsyncOpenAI) -> None:
    emu.configure(rpm=2)
    created = await sdk.responses.create(model=REASONING, input=PROMPT, background=True)
    for _ in range(5):  # polls spend no quota
        raw = await sdk.responses.with_raw_response.retrieve(created.id)
        assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    await until(sdk, created.id, TERMINAL)
    await sdk.responses.create(model=REASONING, input=PROMPT)  # the second of two
    with pytest.raises(openai.RateLimitError) as caught:
        await sdk.chat.completions.create(model=REASONING, messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.code == "429"  # one quota per deployment across both APIs
    with pytest.raises(openai.RateLimitError) as responses:
        await sdk.responses.create(model=REASONING, input=PROMPT)
    assert "Responses_Create" in responses.value.message


# --- The same gate as chat: auth, deployments, outages, faults ------------------------------------------------------


async def test_auth_and_deployment_checks_as_on_chat(emu: Emulator, sdk: AsyncOpenAI) -> None:
    created = await sdk.responses.create(model=REASONING, input=PROMPT, background=True)
    keyed = AsyncOpenAI(base_url=f"{emu.url}/openai/v1/", api_key="a-key", max_retries=0)
    async with keyed:
        with pytest.raises(openai.AuthenticationError) as bad_token:
            await keyed.responses.create(model=REASONING, input=PROMPT)
        with pytest.raises(openai.AuthenticationError):
            await keyed.responses.retrieve(created.id)  # a stored response is no easier to read
    assert bad_token.value.code is None  # Azure's 401 body has no "error" key
    emu.running.state.revoke(GRANTED.object_id)
    for call in (sdk.responses.retrieve, sdk.responses.cancel, sdk.responses.delete):
        with pytest.raises(openai.AuthenticationError) as no_role:
            await call(created.id)
        assert no_role.value.code == "PermissionDenied"
    emu.running.state.grant(GRANTED.object_id)
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.responses.create(model="no-such-deployment", input=PROMPT)
    assert missing.value.code == "DeploymentNotFound"
    with pytest.raises(openai.BadRequestError) as no_model:
        await sdk.responses.create(input=PROMPT, extra_body={"model": None})  # type: ignore[call-overload]
    assert no_model.value.param == "model"
    assert (await sdk.responses.retrieve(created.id)).id == created.id


async def test_outages_and_faults_on_create_and_polls(emu: Emulator, sdk: AsyncOpenAI) -> None:
    created = await sdk.responses.create(model=REASONING, input=PROMPT, background=True)
    emu.running.state.fail_deployment(REASONING, 60)
    with pytest.raises(openai.InternalServerError) as down:
        await sdk.responses.create(model=REASONING, input=PROMPT)
    assert (down.value.status_code, down.value.code) == (503, "ServiceUnavailable")
    assert (await sdk.responses.retrieve(created.id)).id == created.id  # stored responses outlive an outage
    emu.update_deployment(REASONING, outage=None)
    emu.configure(fault_500=1.0)
    with pytest.raises(openai.InternalServerError) as create_fault:
        await sdk.responses.create(model=REASONING, input=PROMPT)
    with pytest.raises(openai.InternalServerError) as poll_fault:  # a poll may fail as any call may
        await sdk.responses.retrieve(created.id)
    assert create_fault.value.code == poll_fault.value.code == "InternalServerError"
    emu.configure(fault_500=0.0, fault_drop=1.0)
    with pytest.raises(openai.APIConnectionError):
        await sdk.responses.create(model=REASONING, input=PROMPT)
    emu.configure(fault_drop=0.0)
    assert (await until(sdk, created.id)).status == "completed"
    stats = emu.stats()
    assert stats["responses"]["created"] == 1  # none of the failed creates made a response
    assert stats["by_status"]["503"] == 1 and stats["by_status"]["dropped"] == 1


async def test_requests_are_recorded_per_route(emu: Emulator, sdk: AsyncOpenAI) -> None:
    created = await sdk.responses.create(model=REASONING, input=PROMPT, background=True)
    await sdk.responses.retrieve(created.id)
    await sdk.responses.cancel(created.id)
    await sdk.responses.delete(created.id)
    recorded = [(r.method, r.route, r.deployment, r.status) for r in emu.running.state.requests]
    assert recorded == [
        ("POST", "/openai/v1/responses", REASONING, "200"),
        ("GET", "/openai/v1/responses/{response_id}", REASONING, "200"),
        ("POST", "/openai/v1/responses/{response_id}/cancel", REASONING, "200"),
        ("DELETE", "/openai/v1/responses/{response_id}", REASONING, "200"),
    ]
