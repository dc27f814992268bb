"""Unit tests of the API mapping (shared/apis.py), the tier choice (shared/tiers.py), the background poll
schedule and the content-filter findings: pure functions over the contract models and the SDK's own types."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from shared import apis, pacing, tiers
from shared.background import poll_delay
from shared.errors import ConfigurationError
from shared.jobs import BackgroundWait, Job, Redelivery
from shared.messages import JobRefused
from shared.policy import GiveUp, Requeue, RetryLater, classify, plan_retry
from shared.settings import PoolEntry, Settings

BASE = {"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "gpt-5.6-sol"}
NOW = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)


def settings(**extra: str) -> Settings:
    return Settings.from_env({**BASE, **extra})


def job(**fields: Any) -> Job:
    return Job.model_validate({"id": "j1", "prompt": "Why is the sky blue?", **fields})


# --- which API, and the request each one gets -------------------------------------------------------------


def test_the_same_job_maps_onto_the_responses_api() -> None:
    asked = job(
        system="Be brief.",
        reasoning_summary="concise",
        parameters={
            "max_tokens": 500,
            "reasoning_effort": "high",
            "verbosity": "low",
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
        },
    )
    assert apis.responses_request(asked, "flex", background=False) == {
        "input": "Why is the sky blue?",
        "instructions": "Be brief.",
        "store": False,  # stateless unless background mode needs it stored
        "service_tier": "flex",
        "max_output_tokens": 500,
        "reasoning": {"effort": "high", "summary": "concise"},
        "text": {"verbosity": "low", "format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}},
    }
    chat_form = job(prompt=None, messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    background = apis.responses_request(chat_form, None, background=True)
    assert background == {
        "input": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        "store": True,  # Azure refuses stateless background requests
        "background": True,
    }


def test_chat_requests_are_what_the_worker_always_sent_plus_a_tier_only_when_one_applies() -> None:
    asked = job(system="Be brief.", parameters={"max_tokens": 5, "temperature": 0.2})
    sent = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}],
        "max_completion_tokens": 5,
        "temperature": 0.2,
    }
    assert apis.chat_request(asked, None) == sent
    assert apis.chat_request(asked, "priority") == {**sent, "service_tier": "priority"}


def test_a_job_must_go_to_a_deployment_serving_the_api_it_needs() -> None:
    chat = settings()
    for fields in ({"api": "responses"}, {"background": True}, {"reasoning_summary": "auto"}):
        with pytest.raises(JobRefused) as refused:
            apis.check_api(job(**fields), chat)
        assert refused.value.code == "api_mismatch" and "AZURE_OPENAI_API" in refused.value.message
    responses = settings(AZURE_OPENAI_API="responses")
    with pytest.raises(JobRefused, match="chat API") as refused:
        apis.check_api(job(api="chat"), responses)
    apis.check_api(job(background=True, reasoning_summary="detailed"), responses)  # served: no refusal
    with pytest.raises(JobRefused) as refused:  # Chat Completions only
        apis.check_api(job(parameters={"seed": 1, "stop": "END"}), responses)
    assert refused.value.code == "unsupported_parameter" and "seed, stop" in refused.value.message
    with pytest.raises(ValueError, match="only in the Responses API"):  # the contract itself
        job(api="chat", reasoning_summary="auto")
    with pytest.raises(JobRefused, match="batch lane"):
        apis.check_api(job(lane="batch", api="responses"), responses)


def test_a_pool_serves_a_job_from_the_entries_declaring_its_api() -> None:
    pool = [
        {"endpoint": "https://a.openai.azure.com", "deployment": "gpt-5.6-sol", "name": "m"},
        {"endpoint": "https://b.openai.azure.com", "deployment": "gpt-5.6-sol", "name": "m", "api": "responses"},
    ]
    both = settings(AZURE_OPENAI_POOL=json.dumps(pool), AZURE_OPENAI_DEPLOYMENT="m")
    assert [e.endpoint for e in apis.usable_entries(job(api="responses"), both)] == ["https://b.openai.azure.com"]
    assert len(apis.usable_entries(job(), both)) == 2  # a job naming no API goes to either, as each serves


def test_a_responses_only_model_configured_for_chat_is_a_configuration_error_naming_the_fix() -> None:
    for model in ("gpt-5.1-codex", "gpt-5-pro", "gpt-5.4-pro", "codex-mini", "o3-pro", "gpt-5.3-codex"):
        with pytest.raises(ConfigurationError, match="AZURE_OPENAI_API") as wrong:
            settings(AZURE_OPENAI_DEPLOYMENT=model)
        assert "Responses-only" in str(wrong.value) and "responses" in str(wrong.value)
        assert settings(AZURE_OPENAI_DEPLOYMENT=model, AZURE_OPENAI_API="responses").pool[0].api == "responses"
    with pytest.raises(ValueError, match="background mode needs"):
        PoolEntry(endpoint="https://a.openai.azure.com", deployment="gpt-5.6-sol", background=True)
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_SERVICE_TIER"):
        settings(AZURE_OPENAI_SERVICE_TIER="fast")


def test_a_responses_only_model_refusing_chat_fails_with_the_fix() -> None:
    body = {"code": "OperationNotSupported", "message": "The chatCompletion operation does not work with ..."}
    verdict = classify(_status(openai.BadRequestError, 400, body), _RUNTIME, deployment="renamed-codex")
    assert isinstance(verdict, GiveUp) and verdict.code == "responses_only"
    assert "renamed-codex" in verdict.message and '"api": "responses"' in verdict.message


# --- one answer shape ----------------------------------------------------------------------------------------


def _response(status: str, **fields: Any) -> Response:
    return Response.model_validate(
        {
            "id": "resp_1",
            "object": "response",
            "created_at": 0,
            "model": "gpt-5.6-sol",
            "status": status,
            "output": [],
            "parallel_tool_calls": False,
            "tool_choice": "auto",
            "tools": [],
            **fields,
        }
    )


def _text(text: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    return {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": content}


USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
    "output_tokens": 30,
    "output_tokens_details": {"reasoning_tokens": 20},
    "total_tokens": 40,
}


def test_a_completed_response_reads_like_a_chat_answer() -> None:
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Rayleigh."}]}
    answer = apis.response_answer(
        _response("completed", output=[reasoning, _text("Scattering.")], usage=USAGE, service_tier="flex")
    )
    assert (answer.output, answer.finish_reason, answer.service_tier, answer.response_id) == (
        "Scattering.",
        "stop",
        "flex",
        "resp_1",
    )
    assert answer.reasoning_summary == "Rayleigh." and answer.error is None and not answer.pending
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (10, 30, 40)
    assert (answer.usage.reasoning_tokens, answer.usage.cached_tokens) == (20, 4)
    assert apis.response_answer(_response("queued", background=True)).pending


def test_responses_that_did_not_succeed_are_errors_with_the_services_reason() -> None:
    failed = apis.response_answer(_response("failed", error={"code": "server_error", "message": "boom"}))
    assert (
        failed.error is not None
        and failed.error.code == "response_failed"
        and "server_error: boom" in (failed.error.message)
    )
    cancelled = apis.response_answer(_response("cancelled"))
    assert cancelled.error is not None and cancelled.error.code == "response_cancelled"
    spent = apis.response_answer(
        _response("incomplete", incomplete_details={"reason": "max_output_tokens"}, usage=USAGE)
    )
    assert spent.error is not None and spent.error.code == "output_budget_exhausted"
    assert "20 on reasoning" in spent.error.message
    truncated = apis.response_answer(
        _response("incomplete", incomplete_details={"reason": "max_output_tokens"}, output=[_text("Part")])
    )
    assert truncated.error is None and truncated.finish_reason == "length"  # as a chat answer cut by the limit


FLAGGED = {"hate": {"filtered": True, "severity": "high"}, "violence": {"filtered": False, "severity": "safe"}}


def test_an_answer_cut_by_the_filter_fails_on_both_apis_with_categories_and_its_text_flagged() -> None:
    cut = apis.response_answer(
        _response(
            "incomplete",
            incomplete_details={"reason": "content_filter"},
            output=[_text("The first half")],
            content_filters=[
                {"blocked": False, "source_type": "prompt", "content_filter_results": {"hate": {"filtered": False}}},
                {"blocked": True, "source_type": "completion", "content_filter_results": FLAGGED},
            ],
        )
    )
    completion = ChatCompletion.model_validate(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4.1-mini",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "content_filter",
                    "message": {"role": "assistant", "content": "The first half"},
                    "content_filter_results": FLAGGED,
                }
            ],
        }
    )
    for answer in (cut, apis.chat_answer(completion)):
        assert answer.error is not None and answer.error.code == "content_filter"
        assert [(f.source, f.category, f.severity) for f in answer.error.content_filter or []] == [
            ("completion", "hate", "high")
        ]
        assert "hate (high)" in answer.error.message
        assert answer.output == "The first half" and answer.filtered_output and answer.finish_reason == "content_filter"


def test_a_blocked_prompt_reports_its_categories_on_both_apis() -> None:
    results = {"hate": {"filtered": False, "severity": "safe"}, "jailbreak": {"filtered": True, "detected": True}}
    chat = {
        "code": "content_filter",
        "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": results},
    }
    responses = {
        "code": "content_filter",
        "content_filters": [{"blocked": True, "source_type": "prompt", "content_filter_results": results}],
    }
    for body in (chat, responses):
        verdict = classify(_status(openai.BadRequestError, 400, body), _RUNTIME)
        assert isinstance(verdict, GiveUp) and verdict.code == "content_filter"
        error = verdict.error()
        assert error.content_filter is not None
        assert [(f.source, f.category, f.detected) for f in error.content_filter] == [("prompt", "jailbreak", True)]
        assert "jailbreak (detected)" in error.message


# --- tiers ---------------------------------------------------------------------------------------------------

FLEX = PoolEntry(endpoint="https://a.openai.azure.com", deployment="gpt-5.6-sol", service_tier="flex")


def test_the_flex_window_ends_before_the_deadline_by_the_call_timeout_or_after_the_max_wait() -> None:
    timed = settings(AZURE_OPENAI_TIMEOUT_SECONDS="60", FLEX_MAX_WAIT_SECONDS="300")
    deadline = NOW + timedelta(minutes=10)
    assert tiers.flex_window(job(deadline=deadline.isoformat()), timed, None, NOW).until == deadline - timedelta(
        seconds=60
    )
    assert tiers.flex_window(job(), timed, None, NOW).until == NOW + timedelta(seconds=300)
    waited = Redelivery(attempt=2, first_seen=NOW, reason="flex_unavailable", total=2, since=NOW, causes={})
    later = NOW + timedelta(seconds=100)
    assert tiers.flex_window(job(), timed, waited, later).until == NOW + timedelta(seconds=300)  # from the first
    spent = waited.model_copy(update={"total": timed.retry_max_attempts})
    assert tiers.flex_window(job(), timed, spent, later).until == later  # one more wait would fail the job


def test_flex_is_asked_while_its_window_is_open_then_the_default_tier() -> None:
    window = tiers.FlexWindow(NOW + timedelta(seconds=30))
    assert tiers.tier_for(job(), FLEX, window, NOW) == "flex"  # the deployment's default tier
    assert tiers.tier_for(job(service_tier="priority"), FLEX, window, NOW) == "priority"  # the job's wins
    assert tiers.tier_for(job(), FLEX, window, NOW + timedelta(seconds=30)) == "default"
    with pytest.raises(tiers.FlexUnavailable) as wait:
        tiers.after_refusal(job(), FLEX, None, window, NOW)
    assert wait.value.delay == tiers.FLEX_BACKOFF[0]
    with pytest.raises(tiers.FlexUnavailable) as wait:
        tiers.after_refusal(job(), FLEX, 120.0, window, NOW)
    assert wait.value.delay == 30  # never past the window
    assert tiers.after_refusal(job(), FLEX, None, window, NOW + timedelta(seconds=29.5)) == "default"


def test_a_flex_capacity_refusal_is_a_wait_not_a_throttle_and_holds_no_gate() -> None:
    verdict = classify(tiers.FlexUnavailable(12.0, "gpt-5.6-sol"), _RUNTIME)
    assert verdict == RetryLater("flex_unavailable", 12.0, verdict.message)  # type: ignore[union-attr]
    plan = plan_retry(verdict, None, settings(), now=NOW)  # type: ignore[arg-type]
    assert isinstance(plan, Requeue) and plan.delay == 12.0 and plan.redelivery.reason == "flex_unavailable"
    assert pacing.capacity_refusal("flex", "ResourceUnavailable")
    assert not pacing.capacity_refusal("flex", pacing.QUOTA_CODE)  # the quota's 429, on any tier, holds the gate
    assert not pacing.capacity_refusal("default", "ResourceUnavailable")


@pytest.mark.parametrize(("code", "held"), [("ResourceUnavailable", False), ("429", True)])
async def test_the_pacing_hook_holds_the_gate_for_a_quota_429_only(code: str, held: bool) -> None:
    pacer = pacing.Pacer()
    request = httpx2.Request(
        "POST", "https://a.openai.azure.com/openai/v1/responses", json={"model": "d", "service_tier": "flex"}
    )
    response = httpx2.Response(
        429, json={"error": {"code": code, "message": "no"}}, headers={"retry-after": "30"}, request=request
    )
    await pacer.on_response(response)
    gate = pacer.gate("https://a.openai.azure.com", "d")
    assert (gate.needed(1) > 0) is held


# --- background polls ------------------------------------------------------------------------------------------


def test_background_checks_back_off_to_the_cap_and_never_past_the_bound() -> None:
    bounded = settings(BACKGROUND_POLL_SECONDS="5", BACKGROUND_POLL_MAX_SECONDS="60", BACKGROUND_MAX_SECONDS="600")
    wait = BackgroundWait(response_id="resp_1", endpoint="https://a", deployment="d", started_at=NOW)
    delays = [poll_delay(wait.model_copy(update={"polls": n}), bounded, NOW) for n in range(6)]
    assert delays == [5, 10, 20, 40, 60, 60]
    assert poll_delay(wait, bounded, NOW + timedelta(seconds=598)) == 2  # checked (and cancelled) at the bound
    assert poll_delay(wait, bounded, NOW + timedelta(seconds=700)) == 1


# --- helpers ---------------------------------------------------------------------------------------------------

_RUNTIME: Any = SimpleNamespace(identity={"oid": "1111-oid"}, settings=settings())


def _status(cls: type[openai.APIStatusError], status: int, body: dict[str, Any]) -> openai.APIStatusError:
    request = httpx2.Request("POST", "https://res.openai.azure.com/openai/v1/chat/completions")
    response = httpx2.Response(status, json={"error": body}, request=request)
    return cls(body.get("message", "refused"), response=response, body=body)
