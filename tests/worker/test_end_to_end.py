"""Enqueue, run the local queue host on function_app.py, assert the stored results."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from emulators.aoai import answer_for
from emulators.stack.services import DEPLOYMENT, SECOND_DEPLOYMENT, OpenAIEmulator, ungranted
from emulators.stack.workers import Jobs, WorkerHost, wait_until
from tests.worker_fixtures import app_that_gives_up_fast


def job(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"job-{i:03d}", "prompt": f"Question number {i}?", **extra}


def expected_output(body: dict[str, Any], deployment: str = DEPLOYMENT) -> str:
    messages = ([{"role": "system", "content": body["system"]}] if "system" in body else []) + [
        {"role": "user", "content": body["prompt"]}
    ]
    return answer_for(messages, deployment)


async def run_fifty(jobs: Jobs, start_host: Callable[..., WorkerHost], aoai: OpenAIEmulator) -> None:
    bodies = [job(i, metadata={"n": i}) for i in range(50)]
    bodies[7]["deployment"] = SECOND_DEPLOYMENT
    bodies[8] = {"id": "job-008", "messages": [{"role": "user", "content": "Chat form"}], "system": "Be brief."}
    await jobs.send(*bodies)
    host = start_host(jobs.settings)
    results = await jobs.wait_for(50, host=host)
    assert len(results) == 50
    for body in bodies:
        result = results[body["id"]]
        assert result["status"] == "succeeded", result
        if "prompt" in body:
            assert result["output"] == expected_output(body, body.get("deployment", DEPLOYMENT))
        assert result["deployment"] == body.get("deployment", DEPLOYMENT)
        assert result.get("metadata") == body.get("metadata")
        assert result["finish_reason"] == "stop"
        assert result["usage"]["total_tokens"] > 0
    assert results["job-008"]["output"] == answer_for(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Chat form"}], DEPLOYMENT
    )
    assert aoai.stats()["completions"] == 50
    assert await jobs.queue_drained(host=host)
    assert "Question number" not in host.log()  # prompts never reach the INFO log


async def test_keyless_end_to_end(keyless_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: Any) -> None:
    await run_fifty(await jobs_for(keyless_settings), start_host, aoai)


async def test_local_dev_end_to_end(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: Any, azure_cli: Any
) -> None:
    await run_fifty(await jobs_for(local_dev_settings), start_host, aoai)
    assert azure_cli.invocations() == 1  # one az run for the whole process: the token is cached


async def test_redelivered_job_calls_the_model_once(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    jobs = await jobs_for(local_dev_settings)
    body = job(1)
    await jobs.send(body, body)  # two deliveries at once
    host = start_host(jobs.settings)
    await jobs.wait_for(1, host=host)
    assert await jobs.queue_drained(host=host)
    await jobs.send(body)  # and one later
    assert await jobs.queue_drained(host=host)
    results = await jobs.results()
    assert list(results) == ["job-001"]
    assert aoai.stats()["completions"] == 1


BAD_INPUTS: dict[str, str | bytes] = {
    "invalid_json": "this is not json",
    "invalid_job": "[1, 2, 3]",
    "empty_prompt": json.dumps({"id": "bad-empty", "prompt": ""}),
    "prompt_or_messages": json.dumps({"id": "bad-both", "prompt": "a", "messages": [{"role": "user", "content": "b"}]}),
    "prompt_too_large": json.dumps({"id": "bad-large", "prompt": "x" * 5000}),
    "deployment_not_allowed": json.dumps({"id": "bad-deployment", "prompt": "a", "deployment": "gpt-5-huge"}),
    "invalid_id": json.dumps({"id": "../etc/passwd", "prompt": "a"}),
    "reply_to_not_allowed": json.dumps({"id": "bad-reply", "prompt": "a", "reply_to": "someone-elses-queue"}),
    "parameter_not_allowed": json.dumps({"id": "bad-param", "prompt": "a", "parameters": {"logit_bias": {"1": 5}}}),
    "wrong_type": json.dumps({"id": "bad-type", "prompt": 42}),
    "invalid_utf8": base64.b64encode(b'{"prompt": "\xff\xfe"}').decode(),
    "invalid_json_b64": base64.b64encode(b"\x00garbage\x01 not json at all").decode(),
}


async def test_bad_input_becomes_failed_results(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    settings = {**local_dev_settings, "MAX_PROMPT_CHARS": "1000"}
    jobs = await jobs_for(settings)
    message_ids = await jobs.send(*BAD_INPUTS.values())
    host = start_host(settings)
    results = await jobs.wait_for(len(BAD_INPUTS), host=host)
    assert len(results) == len(BAD_INPUTS)
    by_key = dict(zip(BAD_INPUTS, message_ids, strict=True))
    for key, message_id in by_key.items():
        result_id = (
            message_id
            if key in ("invalid_json", "invalid_job", "invalid_id", "invalid_utf8", "invalid_json_b64")
            else json.loads(BAD_INPUTS[key])["id"]
        )
        result = results[result_id]
        assert result["status"] == "failed"
        assert result["error"]["code"] == key.removesuffix("_b64"), result
        assert result["error"]["message"]
    assert await jobs.queue_drained(host=host)
    assert await jobs.poison_count() == 0
    assert aoai.stats()["requests"] == 0
    assert "Traceback" not in host.log()


async def test_content_filter_and_unknown_deployment_fail_without_retry(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    settings = {**local_dev_settings, "AZURE_OPENAI_ALLOWED_DEPLOYMENTS": f"{DEPLOYMENT},not-deployed"}
    jobs = await jobs_for(settings)
    await jobs.send(
        {"id": "filtered", "prompt": "please TRIGGER_PROMPT_FILTER now"},
        {"id": "nodeploy", "prompt": "hi", "deployment": "not-deployed"},
    )
    host = start_host(settings)
    results = await jobs.wait_for(2, host=host)
    assert results["filtered"]["error"]["code"] == "content_filter"
    assert results["nodeploy"]["error"]["code"] == "deployment_not_found"
    assert await jobs.queue_drained(host=host)
    assert aoai.stats()["requests"] == 2  # no retries
    assert await jobs.poison_count() == 0


async def test_faults_lose_and_duplicate_nothing(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    aoai.configure(fault_500=0.04, fault_503=0.03, fault_drop=0.03, fault_seed=7)
    jobs = await jobs_for(local_dev_settings)
    bodies = [job(i) for i in range(200)]
    await jobs.send(*bodies)
    host = start_host(jobs.settings)
    results = await jobs.wait_for(200, host=host, timeout=180)
    assert len(results) == 200
    assert all(r["status"] == "succeeded" for r in results.values())
    assert all(results[b["id"]]["output"] == expected_output(b) for b in bodies)
    stats = aoai.stats()
    assert stats["completions"] == 200  # each job answered exactly once
    assert stats["by_status"].get("500", 0) + stats["by_status"].get("503", 0) > 0
    assert await jobs.poison_count() == 0


@pytest.mark.slow(seconds=7)
async def test_long_throttle_requeues_and_finishes(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    # Azure advertises a wait longer than the SDK honours (150 s > 120 s), so the SDK gives up
    # at once; the worker re-enqueues with the wait capped by THROTTLE_MAX_DELAY_SECONDS. Pacing off: the gate
    # would otherwise keep the burst under the limit (no 429 at all) or wait the hold out in itself.
    aoai.configure(rpm=10, rate_window_seconds=2, retry_after_override_seconds=150)
    settings = {
        **local_dev_settings,
        "THROTTLE_MAX_DELAY_SECONDS": "2",
        "THROTTLE_MAX_ATTEMPTS": "20",
        "MODEL_ADMISSION_WAIT_SECONDS": "0",
    }
    jobs = await jobs_for(settings)
    await jobs.send(*(job(i) for i in range(30)))
    host = start_host(settings)
    results = await jobs.wait_for(30, host=host, timeout=120)
    assert len(results) == 30
    assert all(r["status"] == "succeeded" for r in results.values()), results
    stats = aoai.stats()
    assert stats["throttled"] > 0
    assert stats["requests"] < 3 * 30
    assert await jobs.poison_count() == 0


async def notices(jobs: Jobs, reply_queue: str) -> list[str]:
    """Every notice on the reply queue (ids, duplicates kept), consumed."""
    queue = jobs.queues.get_queue_client(reply_queue)
    ids: list[str] = []
    while batch := [m async for m in queue.receive_messages(max_messages=32, visibility_timeout=60)]:
        for received in batch:
            ids.append(json.loads(received.content)["id"])
            await queue.delete_message(received)
    return ids


@pytest.mark.slow(seconds=8)
async def test_killed_host_loses_nothing(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    aoai.configure(latency_ms=400)
    jobs = await jobs_for(local_dev_settings)
    replies = jobs.settings["REPLY_QUEUES_ALLOWED"]
    await jobs.send(*(job(i, reply_to=replies) for i in range(60)))
    first = start_host(jobs.settings, receive_visibility=4)
    await jobs.wait_for(5, host=first, interval=0.1)
    first.kill()  # mid-batch: some results stored, some notices maybe not yet sent
    done_before = len(await jobs.results())
    assert done_before < 60
    second = start_host(jobs.settings, receive_visibility=4)
    results = await jobs.wait_for(60, host=second, timeout=90)
    assert len(results) == 60
    assert all(r["status"] == "succeeded" for r in results.values())
    assert await jobs.queue_drained(host=second)
    sent = await notices(jobs, replies)
    assert set(sent) == set(results), f"notices lost for {sorted(set(results) - set(sent))}"  # at least once each


async def test_notices_survive_a_deleted_reply_queue_and_failed_results_can_be_resent(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator
) -> None:
    jobs = await jobs_for(local_dev_settings)
    replies = jobs.settings["REPLY_QUEUES_ALLOWED"]
    host = start_host(jobs.settings)
    await jobs.send(job(1, reply_to=replies))
    await jobs.wait_for(1, host=host)
    assert await notices(jobs, replies) == ["job-001"]
    await jobs.queues.get_queue_client(replies).delete_queue()  # between two jobs
    await jobs.send(job(2, reply_to=replies), {**job(3), "prompt": ""})
    await jobs.wait_for(3, host=host)
    assert await notices(jobs, replies) == ["job-002"]  # the worker made the queue again

    assert (await jobs.result("job-003") or {}).get("status") == "failed"  # empty_prompt
    await jobs.send(job(3))  # corrected, same id
    await wait_until(
        lambda: _status(jobs, "job-003", "succeeded"), host=host, what="the corrected job-003 to replace its failure"
    )
    assert aoai.stats()["completions"] == 3
    await jobs.send(job(1))  # a succeeded id sent again: consumed, no model call
    assert await jobs.queue_drained(host=host)
    assert aoai.stats()["completions"] == 3


async def _status(jobs: Jobs, job_id: str, status: str) -> bool:
    return (await jobs.result(job_id) or {}).get("status") == status


async def test_role_propagation_is_waited_out(
    keyless_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator, identity_endpoint: Any
) -> None:
    principal = ungranted(identity_endpoint)
    settings = {**keyless_settings, "AZURE_CLIENT_ID": identity_endpoint.ungranted_client_id}
    aoai.grant(principal.object_id, delay_seconds=600)  # assigned, not yet in effect (however slow the host start)
    try:
        jobs = await jobs_for(settings)
        await jobs.send(job(1))
        host = start_host(settings)

        async def refused() -> bool:
            return any(r.code == "PermissionDenied" for r in aoai.requests())

        await wait_until(refused, what="the first call refused for want of the role", host=host)
        aoai.grant(principal.object_id, delay_seconds=1)  # the assignment propagates now
        results = await jobs.wait_for(1, host=host)
        assert results["job-001"]["status"] == "succeeded", host.tail()
        assert results["job-001"]["attempts"] >= 2
        assert aoai.stats()["by_status"]["401"] >= 1
    finally:
        aoai.revoke(principal.object_id)


async def test_missing_role_fails_with_the_fix(
    keyless_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator, identity_endpoint: Any
) -> None:
    principal = ungranted(identity_endpoint)
    settings = {
        **keyless_settings,
        "AZURE_CLIENT_ID": identity_endpoint.ungranted_client_id,
        "PERMISSION_RETRY_SECONDS": "3",
    }
    jobs = await jobs_for(settings)
    await jobs.send(job(1))
    host = start_host(settings)
    results = await jobs.wait_for(1, host=host)
    error = results["job-001"]["error"]
    assert error["code"] == "permission_denied", host.tail()
    assert principal.object_id in error["message"]
    assert "Cognitive Services OpenAI User" in error["message"]
    assert await jobs.poison_count() == 0


async def test_last_attempt_records_failure_then_poisons(
    local_dev_settings: dict[str, str],
    jobs_for: Any,
    start_host: Any,
    aoai: OpenAIEmulator,
    tmp_path: Path,
) -> None:
    app = app_that_gives_up_fast(tmp_path)
    aoai.configure(fault_500=1.0)
    # No waiting out the outage on the queue: straight to the host's retries, then the poison queue.
    settings = {**local_dev_settings, "AZURE_OPENAI_MAX_RETRIES": "0", "MODEL_OUTAGE_TOLERANCE_SECONDS": "0"}
    jobs = await jobs_for(settings)
    await jobs.send(job(1))
    host = start_host(settings, app_dir=app)
    results = await jobs.wait_for(1, host=host)
    assert results["job-001"]["error"]["code"] == "transient_exhausted", host.tail()
    assert results["job-001"]["attempts"] == 2
    poisoned = await wait_until(jobs.poison_count, what="the message on the poison queue", host=host, timeout=30)
    assert poisoned == 1
    assert aoai.stats()["by_status"]["500"] == 2
