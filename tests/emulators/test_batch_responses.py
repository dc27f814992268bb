"""Issue 22 item 6: Global Batch lines for ``/v1/responses`` (facts-api-surface.md section 6), answered with the
live Responses route's body as Global Batch writes it (``service_tier`` default, ``content_filters`` null, ``store``
true), read back through the real openai SDK; a file mixing the APIs is refused as any url mismatch is."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from emulators.aoai import answer_for
from emulators.stack.services import OpenAIEmulator
from emulators.tokens import TokenIssuer
from tests.emulators.responses_fixtures import validated
from tests.emulators.test_batch_emulator import BATCH, client_for, finished, lines_of, request, submit

CODEX_BATCH = "codex-batch"  # a Global Batch deployment of a Responses-only model


def response_line(custom_id: str, model: str = BATCH, text: str = "", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/responses",
        "body": {"model": model, "instructions": "Be brief.", "input": text or f"Task {custom_id}", **body},
    }


@pytest.fixture
async def batches(aoai: OpenAIEmulator, issuer: TokenIssuer) -> AsyncIterator[AsyncOpenAI]:
    aoai.add_batch_deployment(BATCH)
    aoai.add_batch_deployment(CODEX_BATCH, model="gpt-5.1-codex")
    aoai.configure_batches(processing_seconds=0, file_processing_seconds=0, shuffle_seed=None)
    async with client_for(aoai, issuer) as sdk:
        yield sdk


async def test_responses_lines_get_responses_bodies(aoai: OpenAIEmulator, batches: AsyncOpenAI) -> None:
    lines = [
        response_line("plain"),
        response_line("summary", reasoning={"effort": "low", "summary": "concise"}, store=False),
        response_line("cut", text="TRIGGER_OUTPUT_FILTER"),
        response_line("blocked", text="TRIGGER_PROMPT_FILTER"),
        response_line("unknown", extra="x"),
    ]
    batch = await finished(batches, (await submit(batches, lines, endpoint="/v1/responses")).id)
    assert batch.status == "completed" and batch.endpoint == "/v1/responses"
    output = {line["custom_id"]: line["response"] for line in await lines_of(batches, batch.output_file_id)}
    errors = {line["custom_id"]: line["response"] for line in await lines_of(batches, batch.error_file_id)}
    assert list(output) == ["plain", "summary", "cut"] and list(errors) == ["blocked", "unknown"]
    for answer in output.values():
        body = answer["body"]
        assert (body["service_tier"], body["content_filters"], body["store"], body["background"]) == (
            "default",
            None,
            True,
            False,
        )
        assert validated(body).id.startswith("resp_")
    plain = validated(output["plain"]["body"])
    assert plain.output_text == answer_for([{"role": "user", "content": "Task plain"}], BATCH)
    summary = validated(output["summary"]["body"])
    assert [part.text for part in summary.output[0].summary] == ["[concise summary] Answering: Task summary"]  # type: ignore[union-attr]
    cut = output["cut"]["body"]
    assert (cut["status"], cut["incomplete_details"]) == ("incomplete", {"reason": "content_filter"})
    assert errors["blocked"]["status_code"] == 400 and errors["blocked"]["body"]["error"]["code"] == "content_filter"
    assert errors["unknown"]["body"]["error"]["code"] == "unknown_parameter"
    assert batch.usage is not None and batch.usage.output_tokens_details.reasoning_tokens > 0
    assert aoai.stats()["responses"]["created"] == 0  # batch lines are not live responses


async def test_a_batch_line_equals_the_live_response_but_for_its_batch_fields(batches: AsyncOpenAI) -> None:
    line = response_line("same", max_output_tokens=300, reasoning={"effort": "low"})
    batch = await finished(batches, (await submit(batches, [line])).id)  # endpoint /chat/completions: any file
    (answered,) = await lines_of(batches, batch.output_file_id)
    body = answered["response"]["body"]
    live = json.loads((await batches.responses.with_raw_response.create(**line["body"])).text)
    per_call = ("id", "created_at", "completed_at", "content_filters", "output")
    assert {k: v for k, v in body.items() if k not in per_call} == {k: v for k, v in live.items() if k not in per_call}
    assert [item["type"] for item in body["output"]] == [item["type"] for item in live["output"]]
    assert body["output"][-1]["content"] == live["output"][-1]["content"]


async def test_a_file_mixing_the_apis_is_refused(batches: AsyncOpenAI) -> None:
    mixed = [request("a"), response_line("b")]
    batch = await finished(batches, (await submit(batches, mixed)).id)
    assert batch.status == "failed" and batch.errors is not None
    assert (batch.errors.data[0].code, batch.errors.data[0].line) == ("url_mismatch", 2)


async def test_responses_only_models_refuse_chat_lines_and_answer_responses_lines(batches: AsyncOpenAI) -> None:
    chat = await finished(batches, (await submit(batches, [request("chat", CODEX_BATCH)])).id)
    (refused,) = await lines_of(batches, chat.error_file_id)
    assert refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["code"] == "OperationNotSupported"
    responses = await finished(batches, (await submit(batches, [response_line("r", CODEX_BATCH)])).id)
    (answered,) = await lines_of(batches, responses.output_file_id)
    assert answered["response"]["body"]["output"][-1]["content"][0]["text"] == f"[{CODEX_BATCH}] Task r"
