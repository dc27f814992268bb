"""The batch lane from the producer side: the clients' ``lane``, the CLI's ``--lane`` (one job and
``--file``) and the TypeScript example's ``--lane``; validation is the live lane's, plus what the
batch endpoint cannot take."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from shared.cli.jobs import read_jobs_file
from shared.errors import InvalidJobError
from shared.jobs import Job
from shared.producer import JobsClient as BlockingJobsClient
from shared.producer import prepare_job
from shared.producer.aio import JobsClient
from tests.producer.helpers import cli, peek_bodies
from tests.producer.test_typescript import node


def test_a_lane_is_given_to_jobs_that_name_none() -> None:
    assert prepare_job({"prompt": "a"}).lane == "live"
    assert prepare_job({"prompt": "a"}, lane="batch").lane == "batch"
    assert prepare_job(Job(prompt="a"), lane="batch").lane == "batch"
    assert prepare_job({"prompt": "a", "lane": "batch"}).lane == "batch"
    assert prepare_job({"prompt": "a", "lane": "batch"}, lane="batch").lane == "batch"
    with pytest.raises(InvalidJobError) as refused:
        prepare_job({"prompt": "a", "lane": "live"}, lane="batch", index=3)
    assert (refused.value.code, refused.value.field, refused.value.index) == ("lane_conflict", "lane", 3)


@pytest.mark.parametrize(
    ("job", "code"),
    [
        ({"prompt": "a", "lane": "bulk"}, "wrong_type"),
        ({"prompt": "a", "lane": "batch", "parameters": {"stream": True}}, "batch_parameter_not_allowed"),
        ({"prompt": "a", "lane": "live", "parameters": {"stream": True}}, "parameter_not_allowed"),
        ({"prompt": "a", "lane": "batch", "parameters": {"logit_bias": {}}}, "parameter_not_allowed"),
        ({"prompt": "", "lane": "batch"}, "empty_prompt"),  # everything else exactly as the live lane
    ],
)
def test_batch_jobs_are_validated_as_live_ones_plus_what_batch_cannot_take(job: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidJobError) as refused:
        prepare_job(job)
    assert refused.value.code == code, refused.value
    if code == "batch_parameter_not_allowed":
        assert "stream" in str(refused.value) and "batch" in str(refused.value)


def test_a_jobs_file_takes_the_lane_without_changing_its_ids(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"prompt": "one"}\n{"prompt": "two", "lane": "batch"}\n{"id": "own", "prompt": "three"}\n')
    live, batch = read_jobs_file(path), read_jobs_file(path, lane="batch")
    assert [job.id for job in live] == [job.id for job in batch]  # a rerun with --lane resumes the same ids
    assert [job.lane for job in live] == ["live", "batch", "live"]
    assert [job.lane for job in batch] == ["batch"] * 3
    path.write_text('{"prompt": "one", "lane": "live"}\n')
    with pytest.raises(InvalidJobError, match="line 1") as refused:
        read_jobs_file(path, lane="batch")
    assert refused.value.code == "lane_conflict"


async def test_clients_and_cli_send_the_lane(local_dev_settings: dict[str, str], jobs_for: Any, tmp_path: Path) -> None:
    jobs = await jobs_for(local_dev_settings)
    async with JobsClient.from_settings(local_dev_settings) as client:
        await client.submit({"id": "async-one", "prompt": "a"}, lane="batch")
        await client.submit_many([{"id": f"async-{i}", "prompt": "b"} for i in range(2)], lane="batch")

    def send_blocking() -> None:  # the blocking client refuses to run inside this test's event loop
        with BlockingJobsClient.from_settings(local_dev_settings) as blocking:
            blocking.submit({"id": "sync-one", "prompt": "c"}, lane="batch")
            blocking.submit_many([{"id": "sync-many", "prompt": "d"}], lane="batch")

    await asyncio.to_thread(send_blocking)
    sent = await cli(local_dev_settings, "submit", "e", "--id", "cli-one", "--lane", "batch")
    assert (sent.code, sent.stdout) == (0, "cli-one\n"), sent
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"id": "cli-file", "prompt": "f"}\n')
    sent = await cli(local_dev_settings, "submit", "--file", str(path), "--lane", "batch")
    assert sent.code == 0, sent
    refused = await cli(local_dev_settings, "submit", "g", "--lane", "batch", "--param", "stream=true")
    assert refused.code == 2 and "batch lane" in refused.stderr, refused
    bodies = {body["id"]: body for body in await peek_bodies(jobs)}
    ids = {"async-one", "async-0", "async-1", "sync-one", "sync-many", "cli-one", "cli-file"}
    assert set(bodies) == ids
    assert {body["lane"] for body in bodies.values()} == {"batch"}


@pytest.mark.e2e  # Node.js
async def test_typescript_example_sends_the_lane(keyless_settings: dict[str, str], jobs_for: Any) -> None:
    jobs = await jobs_for(keyless_settings)
    env = {**os.environ, **keyless_settings}
    sent = node(env, "Bulk from TypeScript", "--id", "ts-batch", "--lane", "batch", "--no-wait")
    assert (sent.returncode, sent.stdout) == (0, "ts-batch\n"), sent.stderr
    wrong = node(env, "x", "--lane", "bulk", "--no-wait")
    assert wrong.returncode == 2 and "--lane is live or batch" in wrong.stderr, wrong.stderr
    bodies = await peek_bodies(jobs)
    assert [(body["id"], body["lane"]) for body in bodies] == [("ts-batch", "batch")]
    assert json.loads(json.dumps(bodies[0]))["prompt"] == "Bulk from TypeScript"
