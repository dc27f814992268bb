"""The batch lane's pure logic, no storage or network: request lines (the live lane's request, on the
batch deployment), the plan of request files within the service's limits, reading output and error
lines, manifest records and the settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from shared import worker
from shared.batch import MAX_FILE_BYTES, Manifest, parse_answer, plan_files, request_line
from shared.batch.collector import as_batch, batch_seconds
from shared.batch.files import Recent
from shared.batch.lines import Planned, job_tokens
from shared.batch.records import new_manifest_id, staged_blob
from shared.errors import ConfigurationError
from shared.jobs import Job, Result, Timings
from shared.messages import parse_job
from shared.pacing import DEFAULT_OUTPUT_BUDGET, estimate_tokens
from shared.settings import Settings
from tests.worker.fakes import FakeModel, fake_world

JOBS = [
    {"id": "p", "prompt": "Plain"},
    {
        "id": "m",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi ✓"}, {"role": "assistant", "content": "Yo"}],
    },
    {"id": "t", "prompt": "Old budget", "parameters": {"max_tokens": 50, "reasoning_effort": "low", "seed": 3}},
    {
        "id": "j",
        "prompt": "JSON",
        "parameters": {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
    },
]


@pytest.mark.parametrize("raw", JOBS, ids=[job["id"] for job in JOBS])
async def test_a_request_line_is_the_live_request_on_the_batch_deployment(raw: dict[str, Any]) -> None:
    job = parse_job(json.dumps({**raw, "lane": "batch"}).encode())
    world = fake_world()
    await worker.call_model(world.runtime, job)  # what the live lane sends, through the fake model
    (live,) = world.model.calls
    line = request_line(job, "batch-deployment")
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and not line.startswith(b"\xef\xbb\xbf")
    parsed = json.loads(line)
    assert (parsed["custom_id"], parsed["method"], parsed["url"]) == (raw["id"], "POST", "/chat/completions")
    assert parsed["body"] == {**live, "model": "batch-deployment"}
    assert "✓".encode() in line or raw["id"] != "m"  # UTF-8 as is, not \\u escapes


def test_files_are_planned_within_every_limit_in_order() -> None:
    jobs = [Planned(f"j{i}", 10, 100) for i in range(7)]
    assert plan_files(jobs, max_requests=3, max_bytes=1000) == [["j0", "j1", "j2"], ["j3", "j4", "j5"], ["j6"]]
    assert plan_files(jobs, max_requests=100, max_bytes=25) == [["j0", "j1"], ["j2", "j3"], ["j4", "j5"], ["j6"]]
    big = [Planned("big", 50, 1), Planned("small", 1, 1)]
    assert plan_files(big, max_requests=10, max_bytes=40) == [["big"], ["small"]]
    # Estimated enqueued tokens bound a file too (a job over the bound alone still gets a file of its own).
    assert plan_files(jobs, max_requests=100, max_tokens=250) == [["j0", "j1"], ["j2", "j3"], ["j4", "j5"], ["j6"]]
    heavy = [Planned("a", 1, 30), Planned("huge", 1, 500), Planned("b", 1, 30)]
    assert plan_files(heavy, max_requests=100, max_tokens=100) == [["a"], ["huge"], ["b"]]
    assert plan_files([], max_requests=10) == []
    assert MAX_FILE_BYTES == 200_000_000


def test_a_jobs_tokens_are_the_live_lanes_admission_estimate() -> None:
    job = Job.model_validate({"id": "t", "prompt": "x" * 400, "parameters": {"max_tokens": 50}})
    assert job_tokens(job) == estimate_tokens(job.chat_messages(), 50) == (3 + 100) + 3 + 50
    assert job_tokens(Job.model_validate({"id": "u", "prompt": "hi"})) == (3 + 1) + 3 + DEFAULT_OUTPUT_BUDGET


def completion(content: str | None = "Hello", finish: str = "stop", reasoning: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-5.4-mini-2026-03-17",
        "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": 3 + reasoning,
            "total_tokens": 10 + reasoning,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    }


def test_output_and_error_lines_say_what_became_of_each_job() -> None:
    ok = parse_answer(json.dumps({"custom_id": "a", "response": {"status_code": 200, "body": completion()}}))
    assert ok.answer is not None and (ok.answer.api, ok.answer.output, ok.error) == ("chat", "Hello", None)
    refused = {"error": {"code": "unsupported_parameter", "message": "Unsupported parameter: 'stop'."}}
    line = {"custom_id": "b", "response": {"status_code": 400, "body": refused}, "error": None}
    failed = parse_answer(json.dumps(line))
    assert failed.error is not None and failed.error.code == "unsupported_parameter"
    assert "HTTP 400" in failed.error.message and "'stop'" in failed.error.message
    server = parse_answer(json.dumps({"custom_id": "c", "response": None, "error": {"code": "server_error"}}))
    assert server.error is not None and server.error.code == "server_error"
    for code in ("batch_expired", "batch_cancelled"):
        unrun = parse_answer(json.dumps({"custom_id": "d", "response": None, "error": {"code": code, "message": "."}}))
        assert (unrun.not_run, unrun.error, unrun.answer) == (code, None, None)
    odd = parse_answer(json.dumps({"custom_id": "e", "error": {"code": "we/ird code!" * 10}}))
    assert odd.error is not None and odd.error.code == "we_ird_code_" * 5 + "we_i"  # safe characters, 64 at most
    unreadable = parse_answer(json.dumps({"custom_id": "f", "response": {"status_code": 200, "body": {"x": 1}}}))
    assert unreadable.error is not None and unreadable.error.code == "invalid_response"


@pytest.mark.parametrize(
    "line",
    [
        b"[]",
        b"not json",
        json.dumps({"custom_id": "../escape", "response": {"status_code": 200, "body": completion()}}).encode(),
        json.dumps({"custom_id": 5, "error": {"code": "x"}}).encode(),
        json.dumps({"custom_id": "ok", "response": {"status_code": 500}}).encode(),
    ],
)
def test_a_line_that_is_not_an_answer_is_refused_before_its_id_is_used(line: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # json's, pydantic's and ours alike
        parse_answer(line)


def test_manifest_and_staged_names_are_checked() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    manifest_id = new_manifest_id(now)
    manifest = Manifest(id=manifest_id, deployment="d", state="claiming", job_ids=["a", "b"], created_at=now)
    assert manifest.blob == f"batches/{manifest_id}.json" and manifest.file_name == f"{manifest_id}.jsonl"
    assert manifest_id.startswith("20261130T120000Z-")
    with pytest.raises(ValidationError):
        Manifest(id="../x", deployment="d", state="claiming", job_ids=[], created_at=now)
    with pytest.raises(ValidationError):
        Manifest(id=manifest_id, deployment="d", state="claiming", job_ids=["a/b"], created_at=now)
    assert staged_blob("job-1") == "jobs/job-1.json"
    with pytest.raises(ValueError, match="not a job id"):
        staged_blob("../results/x")


def test_a_batch_result_is_the_live_result_with_its_lane_deployment_and_time_in_batch() -> None:
    started = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    live = Result(
        id="a", status="succeeded", deployment="gpt-5.4-mini", timings=Timings(started_at=started, finished_at=started)
    )
    batch = FakeBatch(created_at=100, completed_at=160)
    stored = as_batch(live, deployment="gpt-5.4-mini-batch", batch=batch)  # type: ignore[arg-type]
    assert (stored.lane, stored.deployment, stored.timings.batch_seconds) == ("batch", "gpt-5.4-mini-batch", 60.0)
    assert stored.model_dump(exclude={"lane", "deployment", "timings"}) == live.model_dump(
        exclude={"lane", "deployment", "timings"}
    )
    assert batch_seconds(None) is None
    assert batch_seconds(FakeBatch(created_at=100, expired_at=400)) == 300.0  # type: ignore[arg-type]


class FakeBatch:
    def __init__(self, created_at: int, **ended: int) -> None:
        self.created_at = created_at
        self.completed_at = ended.get("completed_at")
        self.expired_at = ended.get("expired_at")
        self.cancelled_at = ended.get("cancelled_at")
        self.failed_at = ended.get("failed_at")


BASE = {"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "d"}


def test_batch_settings() -> None:
    off = Settings.from_env(BASE)
    assert (off.batch_deployment, off.staging_container, off.batch_on_failure) == ("", "staging", "restage")
    assert (off.batch_max_requests_per_file, off.batch_max_tokens_per_file) == (50_000, 100_000_000)
    on = Settings.from_env(
        {
            **BASE,
            "BATCH_DEPLOYMENT": "gpt-5.4-mini-batch",
            "STAGING_CONTAINER": "my-staging",
            "BATCH_ON_FAILURE": "live",
            "BATCH_MAX_REQUESTS_PER_FILE": "100000",
            "BATCH_MAX_TOKENS_PER_FILE": "30000",
        }
    )
    assert (on.batch_deployment, on.staging_container, on.batch_on_failure) == (
        "gpt-5.4-mini-batch",
        "my-staging",
        "live",
    )
    assert (on.batch_max_requests_per_file, on.batch_max_tokens_per_file) == (100_000, 30_000)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("BATCH_ON_FAILURE", "drop"),
        ("BATCH_MAX_REQUESTS_PER_FILE", "100001"),
        ("BATCH_MAX_REQUESTS_PER_FILE", "0"),
        ("BATCH_MAX_TOKENS_PER_FILE", "0"),
        ("BATCH_MAX_TOKENS_PER_FILE", "many"),
        ("STAGING_CONTAINER", "Bad_Name"),
        ("BATCH_DEPLOYMENT", "a/b"),
    ],
)
def test_bad_batch_settings_name_the_setting(setting: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=setting):
        Settings.from_env({**BASE, setting: value})


async def test_the_fake_models_request_matches_a_batch_jobs_line_for_a_job_object() -> None:
    job = Job(id="obj", prompt="From an object", lane="batch")
    world = fake_world()
    model: FakeModel = world.model
    await worker.call_model(world.runtime, job)
    assert json.loads(request_line(job, "b"))["body"] == {**model.calls[0], "model": "b"}


def test_a_listing_is_cut_short_only_once_it_shows_itself_newest_first() -> None:
    newest_first = Recent(since=100)
    assert [newest_first.past(t) for t in (200, 150, 99)] == [False, False, True]
    oldest_first = Recent(since=100)  # read whole: the upload or batch looked for may come last
    assert [oldest_first.past(t) for t in (50, 99, 150, 200, 10)] == [False] * 5
    assert Recent(since=100).past(5) is False  # one item says nothing of the order
