"""End to end through the local host and the real openai SDK: the Responses API beside chat, background jobs,
service tiers with the flex fallback, and content-filter outcomes (docs/responses.md).

The emulator serves ``coder`` as gpt-5.1-codex (Responses only: chat gets Azure's 400 OperationNotSupported) and
two gpt-5.6-luna deployments that take flex, each with its own flex capacity gap.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from emulators.aoai import answer_for
from emulators.stack.services import DEPLOYMENT, SECOND_DEPLOYMENT, OpenAIEmulator
from emulators.stack.workers import Jobs, wait_until
from shared.operations import Operations

CODER = "coder"  # gpt-5.1-codex: Responses only


def emulate(aoai: OpenAIEmulator, **extra: Any) -> None:
    """The session's two deployments plus ``coder`` and ``extra`` (name -> deployment fields)."""
    aoai.configure(deployments={DEPLOYMENT: None, SECOND_DEPLOYMENT: None, CODER: {"model": "gpt-5.1-codex"}, **extra})


def pool(settings: dict[str, str], *entries: dict[str, Any]) -> dict[str, str]:
    endpoint = settings["AZURE_OPENAI_ENDPOINT"]
    listed = [{"endpoint": endpoint, **entry} for entry in entries]
    return {
        **settings,
        "AZURE_OPENAI_POOL": json.dumps(listed),
        "AZURE_OPENAI_DEPLOYMENT": entries[0].get("name", entries[0]["deployment"]),
    }


def calls(aoai: OpenAIEmulator, deployment: str, route: str = "") -> list[tuple[str, str | None]]:
    """(status, error code) of each request naming ``deployment`` (on routes containing ``route``)."""
    return [(r.status, r.code) for r in aoai.requests(deployment) if route in r.route]


def findings(result: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(f["source"], f["category"], f.get("severity")) for f in result["error"]["content_filter"]]


async def test_responses_deployments_answer_jobs_and_filters_fail_with_categories_on_both_apis(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    emulate(aoai, **{"big-reasoner": {"model": "gpt-5-pro"}})
    settings = pool(
        local_dev_settings,
        {"deployment": DEPLOYMENT},
        {"deployment": CODER, "api": "responses"},
        {"deployment": "big-reasoner"},  # misconfigured (its name hides its model): the model refuses chat
    )
    jobs: Jobs = await jobs_for(settings)
    chat_job = {"id": "chat", "prompt": "Plain chat?", "system": "Be brief."}
    await jobs.send(
        chat_job,
        {"id": "resp", "prompt": "Write a haiku.", "deployment": CODER, "system": "Be brief.", "metadata": {"n": 1}},
        {"id": "summary", "prompt": "Think.", "deployment": CODER, "reasoning_summary": "concise"},
        {"id": "cut-resp", "prompt": "say TRIGGER_OUTPUT_FILTER", "deployment": CODER},
        {"id": "blocked-resp", "prompt": "TRIGGER_PROMPT_FILTER now", "deployment": CODER},
        {"id": "cut-chat", "prompt": "say TRIGGER_OUTPUT_FILTER"},
        {"id": "blocked-chat", "prompt": "TRIGGER_PROMPT_FILTER now"},
        {"id": "wrong-api", "prompt": "hi", "api": "responses"},  # DEPLOYMENT is declared chat
        {"id": "as-chat", "prompt": "hi", "deployment": "big-reasoner"},
    )
    host = start_host(settings)
    results = await jobs.wait_for(9, host=host)
    assert await jobs.queue_drained(host=host)

    chat = results["chat"]  # as before, plus the API and tier it went through
    assert (chat["status"], chat["finish_reason"], chat["api"]) == ("succeeded", "stop", "chat")
    expected = answer_for(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Plain chat?"}], DEPLOYMENT
    )
    assert chat["output"] == expected and "response_id" not in chat

    resp = results["resp"]
    assert (resp["status"], resp["api"], resp["deployment"], resp["finish_reason"]) == (
        "succeeded",
        "responses",
        CODER,
        "stop",
    )
    assert resp["output"] and resp["response_id"].startswith("resp_") and resp["metadata"] == {"n": 1}
    assert resp["usage"]["total_tokens"] > 0 and resp["service_tier"] == "default"
    assert "reasoning_summary" not in resp
    assert results["summary"]["reasoning_summary"].startswith("[concise summary]")

    for name, source in (("cut-resp", "completion"), ("cut-chat", "completion"), ("blocked-resp", "prompt"),
                         ("blocked-chat", "prompt")):  # fmt: skip
        filtered = results[name]
        assert (filtered["status"], filtered["error"]["code"]) == ("failed", "content_filter"), filtered
        assert findings(filtered) == [(source, "hate", "high")], filtered
        assert "hate (high)" in filtered["error"]["message"]
    for cut in ("cut-resp", "cut-chat"):  # the partial text is kept, flagged; never a success
        assert results[cut]["finish_reason"] == "content_filter"
        assert results[cut].get("output_filtered") is (True if results[cut].get("output") else None)

    assert results["wrong-api"]["error"]["code"] == "api_mismatch"
    assert results["as-chat"]["error"]["code"] == "responses_only"
    assert '"api": "responses"' in results["as-chat"]["error"]["message"]
    assert calls(aoai, "big-reasoner") == [("400", "OperationNotSupported")]  # once: no retry
    assert len(calls(aoai, CODER, "responses")) == 4 and not calls(aoai, CODER, "chat")
    assert len(calls(aoai, DEPLOYMENT)) == 3  # chat, cut-chat, blocked-chat: wrong-api never sent
    assert "haiku" not in host.log() and "Plain chat" not in host.log()  # prompts never reach the INFO log


async def test_background_jobs_survive_a_host_restart_are_stored_once_and_bounded(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    emulate(aoai)
    aoai.configure(background_queued_seconds=1, background_seconds=5)
    settings = {
        **pool(local_dev_settings, {"deployment": CODER, "api": "responses", "background": True}),
        "BACKGROUND_POLL_SECONDS": "1",
        "BACKGROUND_POLL_MAX_SECONDS": "2",
        "BACKGROUND_MAX_SECONDS": "9",
    }
    jobs: Jobs = await jobs_for(settings)
    await jobs.send(
        {"id": "thinker", "prompt": "Think long."},  # background by the deployment's default
        {"id": "stuck", "prompt": "TRIGGER_BACKGROUND_STUCK please"},
        {"id": "broken", "prompt": "TRIGGER_BACKGROUND_FAIL please"},
        {"id": "sync", "prompt": "Quick one.", "background": False},  # the job says otherwise
    )
    # A message the killed host had taken comes back after its visibility, as in Azure: short here.
    first = start_host(settings, receive_visibility=5)

    async def waiting_on_background() -> int | None:
        async with Operations.from_settings(settings) as operations:
            status = await operations.status()
        ready = status.worker.waiting_background == 3 and await jobs.result("sync") is not None
        return status.worker.waiting_background if ready else None

    # Killed once the synchronous job is answered (a host killed during its call would redo the call: the
    # documented window) and the three background ones wait on their responses.
    what = "3 jobs waiting on background responses and the sync one answered"
    assert await wait_until(waiting_on_background, what=what, host=first) == 3
    first.kill()  # mid-think: the responses run on in the service, the jobs wait in the retry store
    assert len(calls(aoai, CODER, "responses")) >= 4

    second = start_host(settings)
    results = await jobs.wait_for(4, host=second, timeout=60)
    assert await jobs.queue_drained(host=second)

    thinker = results["thinker"]
    assert (thinker["status"], thinker["api"], thinker["finish_reason"]) == ("succeeded", "responses", "stop")
    assert thinker["output"] and thinker["response_id"].startswith("resp_")
    assert thinker["timings"]["model_seconds"] >= 5  # from the start of the response to its end
    assert results["sync"]["status"] == "succeeded" and results["sync"]["response_id"] != thinker["response_id"]
    assert results["broken"]["error"]["code"] == "response_failed"
    stuck = results["stuck"]["error"]
    assert stuck["code"] == "background_timeout" and "BACKGROUND_MAX_SECONDS 9" in stuck["message"]
    creates = [r for r in aoai.requests(CODER) if r.method == "POST" and r.route.endswith("/responses")]
    assert len(creates) == 4  # one response per job, the restart included: none started twice
    cancels = [r for r in aoai.requests(CODER) if r.route.endswith("/cancel")]
    assert len(cancels) == 1  # the stuck one, at its bound
    async with Operations.from_settings(settings) as operations:
        assert (await operations.status()).worker.waiting_retries == 0  # released with the results


async def test_flex_falls_back_before_the_deadline_and_waits_out_a_short_capacity_gap(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    now = time.time()
    emulate(
        aoai,
        **{
            "luna-long": {"model": "gpt-5.6-luna", "flex_unavailable_until": now + 600},
            "luna-short": {"model": "gpt-5.6-luna", "flex_unavailable_until": now + 4},
        },
    )
    settings = pool(
        local_dev_settings,
        {"deployment": "luna-long", "service_tier": "flex"},
        {"deployment": "luna-short", "api": "responses"},
    )
    jobs: Jobs = await jobs_for(settings)  # AZURE_OPENAI_TIMEOUT_SECONDS 10: the window ends 10 s before the deadline
    deadline = datetime.now(UTC) + timedelta(seconds=16)
    await jobs.send(
        {"id": "deadline", "prompt": "Soon, please.", "deadline": deadline.isoformat()},  # flex: the deployment's
        {"id": "patient", "prompt": "Whenever.", "deployment": "luna-short", "service_tier": "flex"},
    )
    host = start_host(settings)
    results = await jobs.wait_for(2, host=host, timeout=60)
    assert await jobs.queue_drained(host=host)

    fell_back = results["deadline"]
    assert (fell_back["status"], fell_back["service_tier"], fell_back["api"]) == ("succeeded", "default", "chat")
    assert datetime.fromisoformat(fell_back["timings"]["finished_at"]) < deadline
    assert calls(aoai, "luna-long") == [("429", "ResourceUnavailable"), ("200", None)]
    waited = results["patient"]
    assert (waited["status"], waited["service_tier"], waited["api"]) == ("succeeded", "flex", "responses")
    assert calls(aoai, "luna-short")[0] == ("429", "ResourceUnavailable") and calls(aoai, "luna-short")[-1] == (
        "200",
        None,
    )
    assert "re-enqueued (flex_unavailable" in host.log()
