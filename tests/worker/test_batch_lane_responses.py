"""The batch lane on a Responses batch deployment (``BATCH_API=responses``; issue 22 item 5), through the real SDKs
against keyless Azurite and the emulator's Files and Batches APIs: request lines go to ``/v1/responses`` with the
live lane's Responses mapping, the batch is created on that endpoint, and the output lines become the results the
live lane stores for the same jobs on the same deployment, filter and incomplete outcomes included."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio

from emulators.stack.services import DEPLOYMENT, SECOND_DEPLOYMENT, OpenAIEmulator
from emulators.stack.workers import Jobs
from shared import batch
from shared.batch import records
from shared.jobs import Job
from tests.worker.test_batch_lane import BatchWorld, _world

pytestmark = pytest.mark.e2e

CODEX_BATCH = "codex-batch"  # a Global Batch deployment of gpt-5.1-codex: Azure refuses chat for it


@pytest_asyncio.fixture
async def world(
    keyless_settings: dict[str, str], aoai: OpenAIEmulator, jobs_for: Callable[[dict[str, str]], Awaitable[Jobs]]
) -> AsyncIterator[BatchWorld]:
    """The batch lane on ``CODEX_BATCH``; live jobs may name it too (the emulator answers both lanes on it, as
    Azure would not), as a Responses pool entry, so the two lanes' results can be compared."""
    aoai.configure(deployments={DEPLOYMENT: None, SECOND_DEPLOYMENT: None})
    aoai.add_batch_deployment(CODEX_BATCH, model="gpt-5.1-codex")
    endpoint = keyless_settings["AZURE_OPENAI_ENDPOINT"]
    pool = [{"endpoint": endpoint, "deployment": DEPLOYMENT}, {"endpoint": endpoint, "deployment": CODEX_BATCH}]
    pool[1]["api"] = "responses"
    extra = {"BATCH_DEPLOYMENT": CODEX_BATCH, "BATCH_API": "responses", "AZURE_OPENAI_POOL": json.dumps(pool)}
    async for made in _world(keyless_settings, aoai, jobs_for, **extra):
        yield made


async def test_responses_batch_jobs_become_the_live_responses_results(world: BatchWorld) -> None:
    replies = world.settings["REPLY_QUEUES_ALLOWED"]
    schema = {"name": "place", "schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    inputs: list[dict[str, Any]] = [
        {"id": "plain", "prompt": "Why keyless?", "system": "Be brief.", "metadata": {"n": 1}, "reply_to": replies},
        {
            "id": "summary",
            "prompt": "Think.",
            "reasoning_summary": "concise",
            "parameters": {"reasoning_effort": "low"},
        },
        {"id": "chat", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
        {
            "id": "json",
            "prompt": "A city.",
            "parameters": {"response_format": {"type": "json_schema", "json_schema": schema}},
        },
        {"id": "cut", "prompt": "say TRIGGER_OUTPUT_FILTER"},
        {"id": "blocked", "prompt": "TRIGGER_PROMPT_FILTER now"},
        {"id": "trap", "prompt": "Prove it.", "parameters": {"reasoning_effort": "high", "max_completion_tokens": 200}},
    ]
    assert await world.deliver(*({**body, "lane": "batch"} for body in inputs)) == [None] * len(inputs)
    # Refused before staging, with no spend: what a Responses batch line cannot carry.
    wrong_api, background = await world.deliver(
        {"id": "wrong-api", "prompt": "hi", "api": "chat", "lane": "batch"},
        {"id": "bg", "prompt": "hi", "background": True, "lane": "batch"},
    )
    assert wrong_api is not None and wrong_api.error is not None and wrong_api.error.code == "api_mismatch"
    assert background is not None and background.error is not None
    assert background.error.code == "batch_parameter_not_allowed"
    assert set(await world.staged()) == {body["id"] for body in inputs}

    submitted = await world.submit()
    assert (submitted.claimed, len(submitted.submitted)) == (len(inputs), 1)
    (manifest,) = await world.manifests()
    assert manifest.api == "responses"
    created = await world.runtime.openai.batches.retrieve(submitted.submitted[0])
    assert created.endpoint == "/v1/responses"
    sent = (await world.runtime.openai.files.content(created.input_file_id)).text.splitlines()
    lines = [json.loads(line) for line in sent]
    assert {line["url"] for line in lines} == {"/v1/responses"}
    bodies = {line["custom_id"]: line["body"] for line in lines}
    assert bodies["plain"] == {
        "model": CODEX_BATCH,
        "input": "Why keyless?",
        "instructions": "Be brief.",
        "store": False,
    }
    assert bodies["summary"]["reasoning"] == {"effort": "low", "summary": "concise"}
    assert world.aoai.stats()["responses"]["created"] == 0  # no live response: the batch answers them

    collected = await world.collect()
    assert (collected.collected, collected.written, collected.unreadable_lines) == (submitted.submitted, 7, 0)
    assert await world.staged() == {} and await world.manifests() == []

    live = await world.deliver(*({**body, "id": f"{body['id']}-live", "deployment": CODEX_BATCH} for body in inputs))
    assert all(result is not None for result in live)
    results = await world.jobs.results()
    compared = ("status", "output", "output_json", "finish_reason", "usage", "model", "metadata", "api")
    compared += ("reasoning_summary", "output_filtered", "service_tier")
    for body in inputs:
        batched, alive = results[body["id"]], results[f"{body['id']}-live"]
        assert {k: batched.get(k) for k in compared} == {k: alive.get(k) for k in compared}, body["id"]
        assert (batched.get("error") or {}).get("code") == (alive.get("error") or {}).get("code"), body["id"]
        assert (batched["lane"], batched["deployment"]) == ("batch", CODEX_BATCH)
        if body["id"] != "blocked":  # refused before any response: no answer, as live
            assert batched["api"] == "responses" and batched["response_id"].startswith("resp_")
            assert batched["response_id"] != alive["response_id"]
    assert results["plain"]["status"] == "succeeded" and results["plain"]["output"] == f"[{CODEX_BATCH}] Why keyless?"
    assert results["summary"]["reasoning_summary"].startswith("[concise summary]")
    assert results["json"]["output_json"] == {}
    cut, blocked = results["cut"], results["blocked"]
    assert (cut["status"], cut["error"]["code"], cut["output"], cut["output_filtered"]) == (
        "failed",
        "content_filter",
        f"[{CODEX_BATCH}] say ",
        True,
    )
    assert (blocked["status"], blocked["error"]["code"]) == ("failed", "content_filter")
    assert [(f["source"], f["category"]) for f in blocked["error"]["content_filter"]] == [("prompt", "hate")]
    assert results["trap"]["error"]["code"] == "output_budget_exhausted"
    notices = [json.loads(m.content) async for m in world.jobs.queues.get_queue_client(replies).receive_messages()]
    assert sorted((n["id"], n["status"]) for n in notices) == [("plain", "succeeded"), ("plain-live", "succeeded")]
    assert await world.submit() == batch.SubmitReport() and await world.collect() == batch.CollectReport()


async def test_a_job_staged_for_chat_lines_fails_alone_once_the_lane_speaks_responses(world: BatchWorld) -> None:
    """``BATCH_API`` changed while jobs waited: a staged job the Responses API cannot take (``seed``) fails alone
    when its line is built; the others go out in the batch."""
    container = await records.ensure_staging(world.runtime)
    seeded = Job.model_validate(
        {"id": "seeded", "prompt": "Same each time.", "lane": "batch", "parameters": {"seed": 4}}
    )
    staged = records.StagedJob(job=seeded, staged_at=datetime.now(UTC))
    assert await records.put_staged(container, staged, 100)  # as the queue trigger staged it under BATCH_API=chat
    assert await world.deliver({"id": "fine", "prompt": "Fine.", "lane": "batch"}) == [None]
    submitted = await world.submit()
    assert (submitted.failed_jobs, len(submitted.submitted)) == (1, 1)
    (manifest,) = await world.manifests()
    assert manifest.job_ids == ["fine"]
    assert (await world.collect()).written == 1
    results = await world.jobs.results()
    assert (results["seeded"]["status"], results["seeded"]["error"]["code"]) == ("failed", "unsupported_parameter")
    assert results["seeded"]["lane"] == "batch" and results["fine"]["status"] == "succeeded"
