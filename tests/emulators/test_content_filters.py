"""Issue 22 item 6: the content filter on both APIs as Azure reports it (facts-api-surface.md section 5), through the
real openai SDK: a blocked prompt is a 400 ``content_filter`` (chat: the singular ``content_filter_result`` in
``innererror``; Responses: ``content_filters`` in the error), a cut answer keeps its partial text (chat:
``finish_reason: "content_filter"``; Responses: ``incomplete`` with reason ``content_filter``), with the categories
and severities the knobs set. The chat route's own filter tests are in test_openai_emulator.py."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tests.emulators.emulator_fixtures import HELLO, Emulator
from tests.emulators.responses_fixtures import CLASSIC, REASONING, until


async def test_a_blocked_prompt_is_a_content_filter_400(emu: Emulator, sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await sdk.responses.create(model=REASONING, input="please TRIGGER_PROMPT_FILTER now")
    caught = raised.value
    assert caught.code == "content_filter"
    body: Any = caught.body
    assert body["type"] == "invalid_request_error" and "innererror" not in body
    (entry,) = body["content_filters"]
    assert (entry["blocked"], entry["source_type"]) == (True, "prompt")
    assert entry["content_filter_results"]["hate"] == {"filtered": True, "severity": "high"}
    assert emu.stats()["responses"]["created"] == 0


async def test_a_cut_answer_is_incomplete_with_its_partial_text(sdk: AsyncOpenAI) -> None:
    response = await sdk.responses.create(model=CLASSIC, input="say TRIGGER_OUTPUT_FILTER")
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "content_filter"
    assert response.output_text == f"[{CLASSIC}] say "
    prompt, completion = (response.model_extra or {})["content_filters"]
    assert (prompt["blocked"], completion["blocked"], completion["source_type"]) == (False, True, "completion")
    assert completion["content_filter_results"]["hate"] == {"filtered": True, "severity": "high"}
    assert set(completion["content_filter_offsets"]) == {"start_offset", "end_offset", "check_offset"}
    background = await sdk.responses.create(model=CLASSIC, input="say TRIGGER_OUTPUT_FILTER", background=True)
    done = await until(sdk, background.id)
    assert done.status == "incomplete" and done.output_text == response.output_text


async def test_the_flagged_category_and_severity_are_knobs_on_both_apis(emu: Emulator, sdk: AsyncOpenAI) -> None:
    emu.configure(filter_category="violence", filter_severity="medium")
    flagged = {"filtered": True, "severity": "medium"}
    completion = await sdk.chat.completions.create(
        model=CLASSIC,
        messages=[{"role": "user", "content": "TRIGGER_OUTPUT_FILTER first"}],
    )
    choice = completion.choices[0]
    assert (choice.finish_reason, choice.message.content) == ("content_filter", f"[{CLASSIC}] ")
    assert (choice.model_extra or {})["content_filter_results"]["violence"] == flagged
    with pytest.raises(openai.BadRequestError) as chat:
        await sdk.chat.completions.create(
            model=CLASSIC, messages=[{"role": "user", "content": "TRIGGER_PROMPT_FILTER"}]
        )
    inner: Any = chat.value.body
    assert inner["innererror"]["content_filter_result"]["violence"] == flagged
    assert inner["innererror"]["content_filter_result"]["hate"] == {"filtered": False, "severity": "safe"}
    with pytest.raises(openai.BadRequestError) as responses:
        await sdk.responses.create(model=REASONING, input="TRIGGER_PROMPT_FILTER")
    body: Any = responses.value.body
    assert body["content_filters"][0]["content_filter_results"]["violence"] == flagged
    cut = await sdk.responses.create(model=CLASSIC, input="TRIGGER_OUTPUT_FILTER")
    assert (cut.model_extra or {})["content_filters"][1]["content_filter_results"]["violence"] == flagged


async def test_a_chat_prompt_block_bills_nothing_and_a_cut_answer_bills_its_tokens(
    emu: Emulator, sdk: AsyncOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError):
        await sdk.chat.completions.create(
            model=CLASSIC, messages=[{"role": "user", "content": "TRIGGER_PROMPT_FILTER"}]
        )
    assert emu.stats()["completion_tokens"] == 0
    cut = await sdk.chat.completions.create(
        model=CLASSIC, messages=[*HELLO[:1], {"role": "user", "content": "TRIGGER_OUTPUT_FILTER"}]
    )
    assert cut.usage is not None and emu.stats()["completion_tokens"] == cut.usage.completion_tokens > 0
