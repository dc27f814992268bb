"""The batch lane's lines for a Responses batch deployment (``BATCH_API=responses``), as pure logic: the request
line is the live lane's Responses request on ``/v1/responses``, a job that API or the lane cannot take is refused
before staging (and, staged before ``BATCH_API`` changed, when its line is built), and output lines with Responses
bodies become the live lane's ``Answer``: success, the content filter's cut, incomplete, failed, still running,
a blocked prompt with its categories. Also the chat lines' filter outcomes, now read through the same path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared import worker
from shared.batch import RESPONSES_URL, parse_answer, request_line
from shared.errors import ConfigurationError
from shared.jobs import Job
from shared.messages import JobRefused, parse_job
from shared.settings import Settings

BASE = {"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "d"}
RESPONSES_LANE = {**BASE, "BATCH_DEPLOYMENT": "codex-batch", "BATCH_API": "responses"}


def batch_job(**fields: Any) -> Job:
    return parse_job(json.dumps({"id": "r1", "prompt": "Write a haiku.", "lane": "batch", **fields}).encode())


def test_a_responses_line_maps_the_job_as_the_live_lane_does() -> None:
    schema = {"name": "place", "schema": {"type": "object"}, "strict": True}
    job = batch_job(
        system="Be brief.",
        reasoning_summary="concise",
        metadata={"ticket": 7},
        parameters={
            "max_tokens": 500,
            "reasoning_effort": "low",
            "verbosity": "low",
            "response_format": {"type": "json_schema", "json_schema": schema},
        },
    )
    line = request_line(job, "codex-batch", "responses")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    parsed = json.loads(line)
    assert (parsed["custom_id"], parsed["method"], parsed["url"]) == ("r1", "POST", RESPONSES_URL)
    assert parsed["body"] == {
        "model": "codex-batch",
        "input": "Write a haiku.",
        "instructions": "Be brief.",
        "store": False,  # as live: nothing reads a batch response back by id
        "max_output_tokens": 500,
        "reasoning": {"effort": "low", "summary": "concise"},
        "text": {"verbosity": "low", "format": {"type": "json_schema", **schema}},
    }
    assert "background" not in parsed["body"] and "service_tier" not in parsed["body"]
    messages = batch_job(
        prompt=None, messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    )
    assert json.loads(request_line(messages, "b", "responses"))["body"]["input"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
    ]
    assert json.loads(request_line(batch_job(), "b"))["url"] == "/chat/completions"  # BATCH_API chat: as before


@pytest.mark.parametrize(
    ("settings", "fields", "code"),
    [
        (RESPONSES_LANE, {"api": "chat"}, "api_mismatch"),
        (RESPONSES_LANE, {"background": True}, "batch_parameter_not_allowed"),
        (RESPONSES_LANE, {"parameters": {"seed": 3}}, "unsupported_parameter"),
        (
            {**RESPONSES_LANE, "BATCH_API": "chat", "BATCH_DEPLOYMENT": "mini-batch"},
            {"api": "responses"},
            "api_mismatch",
        ),
        (
            {**RESPONSES_LANE, "BATCH_API": "chat", "BATCH_DEPLOYMENT": "mini-batch"},
            {"reasoning_summary": "auto"},
            "api_mismatch",
        ),
    ],
)
def test_a_job_the_batch_deployments_api_cannot_take_is_refused_before_staging(
    settings: dict[str, str], fields: dict[str, Any], code: str
) -> None:
    job = batch_job(**fields)
    with pytest.raises(JobRefused) as refused:
        worker.check_allowed(job, Settings.from_env(settings))
    assert refused.value.code == code
    assert ("BATCH_API" in refused.value.message) == (code == "api_mismatch")


def test_a_job_staged_before_batch_api_changed_is_refused_when_its_line_is_built() -> None:
    asks_responses = batch_job(api="responses", reasoning_summary="auto")
    worker.check_allowed(asks_responses, Settings.from_env(RESPONSES_LANE))  # staged while the lane spoke Responses
    assert json.loads(request_line(asks_responses, "codex-batch", "responses"))["url"] == RESPONSES_URL
    with pytest.raises(JobRefused, match="BATCH_API=chat") as refused:
        request_line(asks_responses, "mini-batch", "chat")
    assert refused.value.code == "api_mismatch"
    with pytest.raises(JobRefused) as seed:
        request_line(batch_job(parameters={"seed": 1}), "codex-batch", "responses")  # staged under chat
    assert seed.value.code == "unsupported_parameter"


def test_batch_api_setting() -> None:
    assert Settings.from_env(BASE).batch_api == "chat"
    assert Settings.from_env(RESPONSES_LANE).batch_api == "responses"
    with pytest.raises(ConfigurationError, match="BATCH_API is 'soap'"):
        Settings.from_env({**RESPONSES_LANE, "BATCH_API": "soap"})
    with pytest.raises(ConfigurationError, match="BATCH_API=responses"):  # Azure refuses chat for the model
        Settings.from_env({**BASE, "BATCH_DEPLOYMENT": "gpt-5.1-codex", "BATCH_API": "chat"})


def response(status: str = "completed", text: str | None = "An answer.", **fields: Any) -> dict[str, Any]:
    """A Responses body as Global Batch writes it (facts section 6: tier default, content_filters null, store true)."""
    output: list[dict[str, Any]] = [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Thought briefly."}]}
    ]
    if text is not None:
        content = [{"type": "output_text", "text": text, "annotations": []}]
        output.append({"type": "message", "id": "msg_1", "role": "assistant", "status": status, "content": content})
    return {
        "id": "resp_abc",
        "object": "response",
        "created_at": 1.0,
        "model": "gpt-5.1-codex-2025-11-13",
        "status": status,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "service_tier": "default",
        "store": True,
        "background": False,
        "content_filters": None,
        "usage": {
            "input_tokens": 12,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 80,
            "output_tokens_details": {"reasoning_tokens": 64},
            "total_tokens": 92,
        },
        **fields,
    }


def line(body: dict[str, Any], status: int = 200, custom_id: str = "r1") -> str:
    return json.dumps({"custom_id": custom_id, "response": {"status_code": status, "body": body}, "error": None})


def test_a_responses_output_line_is_the_live_lanes_answer() -> None:
    outcome = parse_answer(line(response()), "responses")
    answer = outcome.answer
    assert outcome.error is None and answer is not None and answer.error is None
    assert (answer.api, answer.output, answer.finish_reason, answer.status) == (
        "responses",
        "An answer.",
        "stop",
        "completed",
    )
    assert (answer.response_id, answer.service_tier, answer.reasoning_summary) == (
        "resp_abc",
        "default",
        "Thought briefly.",
    )
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.reasoning_tokens) == (12, 64)


def test_responses_outcomes_that_are_not_a_success_end_failed_as_live() -> None:
    cut = parse_answer(
        line(response("incomplete", "Partial", incomplete_details={"reason": "content_filter"})), "responses"
    ).answer
    assert cut is not None and cut.error is not None and cut.error.code == "content_filter"
    assert (cut.output, cut.filtered_output, cut.finish_reason) == ("Partial", True, "content_filter")
    trap = parse_answer(
        line(response("incomplete", None, incomplete_details={"reason": "max_output_tokens"})), "responses"
    ).answer
    assert trap is not None and trap.error is not None and trap.error.code == "output_budget_exhausted"
    long = parse_answer(
        line(response("incomplete", "Most of it", incomplete_details={"reason": "max_output_tokens"})), "responses"
    ).answer
    assert long is not None and long.error is None and long.finish_reason == "length"  # text kept, as live
    failed = parse_answer(
        line(response("failed", None, error={"code": "server_error", "message": "Boom."})), "responses"
    ).answer
    assert failed is not None and failed.error is not None and failed.error.code == "response_failed"
    assert "server_error: Boom." in failed.error.message
    running = parse_answer(line(response("in_progress", None)), "responses")
    assert running.answer is None and running.error is not None and running.error.code == "invalid_response"
    assert "still in_progress" in running.error.message


def test_a_body_of_the_other_api_is_an_unreadable_answer_not_a_success() -> None:
    chat_body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi"}}],
    }
    odd = [(chat_body, "responses"), (response(), "chat"), ({**chat_body, "choices": []}, "chat")]
    odd += [({**response(), "output": [{"type": "message", "content": 5}]}, "responses")]  # built leniently, then read
    for body, api in odd:
        outcome = parse_answer(line(body), api)  # type: ignore[arg-type]
        assert outcome.answer is None and outcome.error is not None and outcome.error.code == "invalid_response"


def test_blocked_prompts_keep_their_categories_on_both_apis() -> None:
    responses_400 = {
        "error": {
            "code": "content_filter",
            "type": "invalid_request_error",
            "message": "The response was filtered.",
            "content_filters": [
                {
                    "blocked": True,
                    "source_type": "prompt",
                    "content_filter_results": {"hate": {"filtered": True, "severity": "high"}},
                }
            ],
        }
    }
    chat_400 = {
        "error": {
            "code": "content_filter",
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content policy.",
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {"jailbreak": {"filtered": True, "detected": True}},
            },
        }
    }
    for body, api, category in ((responses_400, "responses", "hate"), (chat_400, "chat", "jailbreak")):
        outcome = parse_answer(line(body, 400), api)  # type: ignore[arg-type]
        error = outcome.error
        assert outcome.answer is None and error is not None and error.code == "content_filter"
        assert error.content_filter is not None
        assert [(f.source, f.category) for f in error.content_filter] == [("prompt", category)]
        assert category in error.message


def test_a_chat_answer_cut_by_the_filter_fails_as_live_and_keeps_its_text() -> None:
    cut = {
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "content_filter",
                "message": {"role": "assistant", "content": "Part"},
                "content_filter_results": {"violence": {"filtered": True, "severity": "medium"}},
            }
        ],
    }
    answer = parse_answer(line(cut)).answer
    assert answer is not None and answer.error is not None and answer.error.code == "content_filter"
    assert (answer.api, answer.output, answer.filtered_output) == ("chat", "Part", True)
    assert answer.error.content_filter is not None and answer.error.content_filter[0].category == "violence"
