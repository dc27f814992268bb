"""``python -m shared status`` and ``replay`` against Azurite through the real SDKs (and, at the end, the host)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContentSettings

from emulators.stack.services import OpenAIEmulator
from emulators.stack.workers import Jobs, wait_until
from shared.__main__ import main
from shared.jobs import ErrorInfo, Result, Timings
from shared.operations import Operations
from tests.producer.helpers import cli
from tests.worker_fixtures import app_that_gives_up_fast


async def put_result(jobs: Jobs, job_id: str, status: str, code: str | None = None) -> None:
    """A result as the worker stores it: ``<id>.json`` with its status in the blob metadata."""
    now = datetime.now(UTC)
    result = Result(
        id=job_id,
        status=status,  # type: ignore[arg-type]
        error=ErrorInfo(code=code, message=f"{code} happened") if code else None,
        output="fine" if status == "succeeded" else None,
        timings=Timings(started_at=now, finished_at=now),
    )
    container = jobs.results_container
    if not await container.exists():
        await container.create_container()
    await container.upload_blob(
        f"{job_id}.json",
        result.model_dump_json(exclude_none=True).encode(),
        overwrite=True,
        metadata={"status": status},
        content_settings=ContentSettings(content_type="application/json"),
    )


async def poison(jobs: Jobs, *bodies: dict[str, Any] | str) -> None:
    queue = jobs.poison
    with contextlib.suppress(ResourceExistsError):
        await queue.create_queue()
    for body in bodies:
        await queue.send_message(body if isinstance(body, str) else json.dumps(body))


async def contents(queue: Any) -> list[str]:
    return sorted(m.content for m in await queue.peek_messages(max_messages=32))


def job(job_id: str) -> dict[str, Any]:
    return {"id": job_id, "prompt": f"Prompt of {job_id}"}


async def test_status_counts_queues_and_recent_results(local_dev_settings: dict[str, str], jobs_for: Any) -> None:
    settings = local_dev_settings
    jobs = await jobs_for(settings)
    await jobs.send(job("q-1"), job("q-2"), job("q-3"))
    await poison(jobs, job("p-1"), job("p-2"))
    for i in range(4):
        await put_result(jobs, f"ok-{i}", "succeeded")
    await put_result(jobs, "bad-1", "failed", "transient_exhausted")
    await put_result(jobs, "bad-2", "failed", "transient_exhausted")
    await put_result(jobs, "bad-3", "failed", "content_filter")
    await jobs.results_container.upload_blob("retries/x.json", b"{}")  # the retry store is not a result
    await asyncio.sleep(1.1)  # so the head of each queue is at least a second old

    shown = await cli(settings, "status", "--json")
    assert shown.code == 0, shown
    document = json.loads(shown.stdout)
    queue, poisoned, results = document["queue"], document["poison"], document["results"]
    assert (queue["name"], queue["exists"], queue["messages"]) == (settings["JOBS_QUEUE"], True, 3)
    assert (poisoned["name"], poisoned["messages"]) == (settings["JOBS_QUEUE"] + "-poison", 2)
    assert 1 <= queue["oldest_seconds"] < 60 and 1 <= poisoned["oldest_seconds"] < 60
    assert results == {
        "minutes": 60,
        "total": 7,
        "by_status": {"succeeded": 4, "failed": 3},
        "failed_by_code": {"transient_exhausted": 2, "content_filter": 1},
        "unread": 0,
    }

    table = await cli(settings, "status")
    assert table.code == 0, table
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["queue", "messages", "oldest", "(head)"]
    assert lines[1].split()[:2] == [settings["JOBS_QUEUE"], "3"]
    assert lines[2].split()[:2] == [settings["JOBS_QUEUE"] + "-poison", "2"]
    assert "results in the last 60 min: 7" in table.stdout
    assert ["failed", "transient_exhausted", "2"] in [line.split() for line in lines]
    assert ["succeeded", "-", "4"] in [line.split() for line in lines]

    # --limit bounds the bodies read: the codes of the rest are reported as not read.
    limited = json.loads((await cli(settings, "status", "--json", "--limit", "1")).stdout)["results"]
    assert (limited["by_status"], sum(limited["failed_by_code"].values()), limited["unread"]) == (
        {"succeeded": 4, "failed": 3},
        1,
        2,
    )
    # The window: seen from ten minutes on, a one-minute window holds none of them.
    async with Operations.from_settings(settings) as operations:
        later = await operations.status(minutes=1, now=datetime.now(UTC) + timedelta(minutes=10))
    assert (later.results.total, later.queue.messages) == (0, 3)


async def test_status_of_an_untouched_deployment(local_dev_settings: dict[str, str]) -> None:
    shown = await cli(local_dev_settings, "status", "--json")
    assert shown.code == 0, shown
    document = json.loads(shown.stdout)
    assert (document["queue"]["exists"], document["poison"]["exists"], document["results"]["total"]) == (
        False,
        False,
        0,
    )
    assert "missing" in (await cli(local_dev_settings, "status")).stdout


async def test_replay_moves_failed_and_unfinished_jobs_and_nothing_else(
    local_dev_settings: dict[str, str], jobs_for: Any
) -> None:
    settings = local_dev_settings
    jobs = await jobs_for(settings)
    await put_result(jobs, "exhausted", "failed", "transient_exhausted")
    await put_result(jobs, "done", "succeeded")
    await put_result(jobs, "rejected", "failed", "model_rejected")
    await put_result(jobs, "big", "failed", "transient_exhausted")
    texts = {
        "exhausted": json.dumps(job("exhausted")),
        "done": json.dumps(job("done")),
        "unfinished": json.dumps(job("unfinished")),
        "rejected": json.dumps(job("rejected")),
        "invalid": "this is not JSON",
        # No id of its own: it may have succeeded under a message id the poison queue no longer has.
        "unnamed": json.dumps({"prompt": "who knows"}),
        # A claim-check reference whose payload the worker deleted with the failed result.
        "big": json.dumps({"id": "big", "payload": {"blob": "big.json"}}),
    }
    await poison(jobs, *texts.values())
    everything = sorted(texts.values())

    dry = await cli(settings, "replay", "--dry-run")
    assert dry.code == 0, dry
    actions = {line.split()[1]: line.split()[0] for line in dry.stdout.splitlines()}
    assert actions == {
        "exhausted": "would-replay",
        "unfinished": "would-replay",
        "rejected": "would-replay",
        "done": "skip",
        "-": "skip",
        "big": "skip",
    }, dry.stdout
    assert sum(line.split()[:2] == ["skip", "-"] for line in dry.stdout.splitlines()) == 2  # invalid, unnamed
    assert "--include-no-id replays it anyway" in dry.stdout
    assert "dry run, nothing changed: would replay 3" in dry.stderr
    assert await contents(jobs.poison) == everything
    assert await jobs.message_count() == 0

    only_exhausted = await cli(settings, "replay", "--code", "transient_exhausted", "--json")
    assert only_exhausted.code == 0, only_exhausted
    report = json.loads(only_exhausted.stdout)
    assert (report["replayed"], report["dropped"], report["skipped"]) == (1, 0, 6)
    by_job = {item["job_id"]: item for item in report["items"]}
    assert by_job["exhausted"]["action"] == "replayed"
    assert (
        by_job["big"]["reason"]
        == f"its payload blob {settings['PAYLOADS_CONTAINER']}/big.json is gone: submit the job again"
    )
    assert by_job["rejected"]["reason"] == "failed: model_rejected, not transient_exhausted"
    assert await contents(jobs.queue) == [texts["exhausted"]]  # the message text exactly as it was
    assert len(await contents(jobs.poison)) == 6  # the skipped ones are visible again at once

    one = await cli(settings, "replay", "--limit", "1", "--json")
    first = [item["job_id"] for item in json.loads(one.stdout)["items"] if item["action"] == "replayed"]
    assert len(first) == 1 and first[0] in ("unfinished", "rejected"), one
    rest = await cli(settings, "replay")
    assert rest.code == 0, rest
    assert (
        rest.stderr == f"replayed 1 to {settings['JOBS_QUEUE']}, dropped 0, left 4 in {settings['JOBS_QUEUE']}-poison\n"
    )
    assert await contents(jobs.queue) == sorted([texts["exhausted"], texts["unfinished"], texts["rejected"]])

    again = await cli(settings, "replay")  # safe to run twice: only the skipped ones are looked at again
    assert again.code == 0 and again.stderr.startswith("replayed 0 to "), again
    assert sorted(line.split()[1] for line in again.stdout.splitlines()) == ["-", "-", "big", "done"]

    # What the default leaves: the invalid message on request, the succeeded job's message dropped.
    cleanup = await cli(settings, "replay", "--include-invalid", "--include-no-id", "--drop-succeeded")
    assert cleanup.code == 0 and "replayed 2 to" in cleanup.stderr and "dropped 1, left 1" in cleanup.stderr
    assert await contents(jobs.poison) == [texts["big"]]
    assert {texts["invalid"], texts["unnamed"]} <= set(await contents(jobs.queue))
    assert (await jobs.result("done") or {}).get("status") == "succeeded"  # never touched


async def test_dry_run_says_what_a_peek_cannot_show(local_dev_settings: dict[str, str], jobs_for: Any) -> None:
    jobs = await jobs_for(local_dev_settings)
    await poison(jobs, *(job(f"many-{i:02d}") for i in range(35)))
    dry = await cli(local_dev_settings, "replay", "--dry-run")
    assert len(dry.stdout.splitlines()) == 32 and "; 3 more not shown (a peek shows 32)" in dry.stderr, dry
    limited = await cli(local_dev_settings, "replay", "--dry-run", "--limit", "5")
    assert len(limited.stdout.splitlines()) == 5 and "would replay 5 to" in limited.stderr, limited
    assert await jobs.poison_count() == 35 and await jobs.message_count() == 0


async def test_replay_and_status_errors_are_one_line(
    local_dev_settings: dict[str, str], forbidden_storage: str
) -> None:
    denied = {**local_dev_settings, "AzureWebJobsStorage": forbidden_storage}
    for command in ("status", "replay"):
        refused = await cli(denied, command)
        assert refused.code == 3, refused
        assert "role" in refused.stderr and len(refused.stderr.splitlines()) == 1, refused
    assert (await cli(local_dev_settings, "replay", "--limit", "0")).code == 2
    assert (await cli(local_dev_settings, "status", "--minutes", "0")).code == 2


def test_help_documents_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    for command, says in (("status", "head of the queue"), ("replay", "then deleted from the poison queue")):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert says in text and "exit codes:" in text


async def test_a_poisoned_job_is_replayed_and_succeeds(
    local_dev_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator, tmp_path: Path
) -> None:
    app = app_that_gives_up_fast(tmp_path)
    aoai.configure(fault_500=1.0)
    # No waiting out the outage on the queue: straight to the host's retries, then the poison queue.
    settings = {**local_dev_settings, "AZURE_OPENAI_MAX_RETRIES": "0", "MODEL_OUTAGE_TOLERANCE_SECONDS": "0"}
    jobs = await jobs_for(settings)
    await jobs.send(job("phoenix"))
    host = start_host(settings, app_dir=app)
    await wait_until(jobs.poison_count, what="the message on the poison queue", host=host, timeout=30)
    failed = await jobs.result("phoenix")
    assert failed is not None and failed["error"]["code"] == "transient_exhausted", host.tail()

    status = json.loads((await cli(settings, "status", "--json")).stdout)
    assert status["poison"]["messages"] == 1
    assert status["results"]["failed_by_code"] == {"transient_exhausted": 1}

    aoai.configure(fault_500=0.0)
    replayed = await cli(settings, "replay", "--code", "transient_exhausted")
    assert replayed.code == 0, replayed
    assert replayed.stdout.split()[:4] == ["replayed", "phoenix", "failed:", "transient_exhausted"]

    async def succeeded() -> dict[str, Any] | None:
        result = await jobs.result("phoenix")
        return result if result and result["status"] == "succeeded" else None

    result = await wait_until(succeeded, what="the replayed job's result", host=host, timeout=30)
    assert result["attempts"] == 1 and "error" not in result  # the failed result was replaced
    assert await jobs.poison_count() == 0
    again = await cli(settings, "replay")
    assert again.stdout == "" and again.stderr.startswith("replayed 0 to ")
    # The host logs as Microsoft's worker does (every logger at INFO): the app kept the SDKs quiet.
    log = host.log()
    assert "job id=phoenix status=succeeded" in log and "replaced its earlier failed result" in log
    assert "http_logging_policy" not in log and "Request URL" not in log, host.tail()
