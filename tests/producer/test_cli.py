"""``python -m shared submit|result|wait|watch`` as a person or script runs them.

``cli`` runs the command in this process (same parser, same code, no interpreter start-up);
``cli_process`` runs it as its own process where that is the point: loading a settings file
into its own environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emulators.aoai import answer_for
from emulators.stack.services import DEPLOYMENT, OpenAIEmulator
from shared.__main__ import main
from tests.producer.helpers import cli, cli_process


def answer(prompt: str) -> str:
    return answer_for([{"role": "user", "content": prompt}], DEPLOYMENT)


async def test_cli_round_trip_keyless(
    keyless_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator, tmp_path: Path
) -> None:
    settings = keyless_settings
    replies = settings["REPLY_QUEUES_ALLOWED"]
    await jobs_for(settings)  # creates the jobs queue
    host = start_host(settings)

    waited = await cli(settings, "submit", "Hello from the CLI", "--id", "cli-1", "--reply-to", replies, "--wait")
    assert waited.code == 0, (waited, host.log()[-2000:])
    assert waited.stdout == answer("Hello from the CLI") + "\n"
    assert "submitted job cli-1" in waited.stderr

    sent = await cli(settings, "submit", "Second one", "--param", "reasoning_effort=low", "--metadata", "team=search")
    assert sent.code == 0, sent
    second = sent.stdout.strip()
    assert len(second) == 32  # the generated id is all a script needs to capture

    both = await cli(settings, "wait", "cli-1", second, "--timeout", "60")
    assert both.code == 0, both
    assert both.stdout.splitlines() == ["cli-1 succeeded", f"{second} succeeded"]

    shown = await cli(settings, "result", second, "--json")
    assert shown.code == 0, shown
    result = json.loads(shown.stdout)
    assert (result["status"], result["output"], result["metadata"]) == (
        "succeeded",
        answer("Second one"),
        {"team": "search"},
    )

    watched = await cli(settings, "watch", "--queue", replies, "--max", "1", "--timeout", "30")
    assert watched.code == 0, watched
    assert watched.stdout == f"cli-1 succeeded {settings['RESULTS_CONTAINER']}/cli-1.json\n"
    drained = await cli(settings, "watch", "--queue", replies, "--once")  # the notice was deleted once shown
    assert (drained.code, drained.stdout) == (0, "")

    # A file with --wait: exit 1 when a job fails, every result printed as a JSON line.
    path = tmp_path / "two.jsonl"
    path.write_text('{"id": "f-ok", "prompt": "Fine"}\n{"id": "f-bad", "prompt": "x", "deployment": "not-allowed"}\n')
    both_files = await cli(settings, "submit", "--file", str(path), "--wait", "--json", "--timeout", "60")
    assert both_files.code == 1, both_files
    by_id = {r["id"]: r for r in map(json.loads, both_files.stdout.splitlines())}
    assert by_id["f-ok"]["output"] == answer("Fine")
    assert by_id["f-bad"]["error"]["code"] == "deployment_not_allowed"
    assert "1 succeeded, 1 failed" in both_files.stderr
    failed = await cli(settings, "result", "f-bad")
    assert failed.code == 1 and failed.stderr.startswith("job f-bad failed: deployment_not_allowed: ")
    assert aoai.stats()["completions"] == 3


async def test_bulk_submit_shows_progress_and_resumes(
    local_dev_settings: dict[str, str], jobs_for: Any, tmp_path: Path
) -> None:
    jobs = await jobs_for(local_dev_settings)
    path = tmp_path / "jobs.jsonl"
    lines: list[dict[str, Any]] = [{"prompt": f"Bulk question {i}?"} for i in range(990)]
    lines += [{"id": f"named-{i}", "prompt": "Same text", "parameters": {"seed": i}} for i in range(5)]
    lines += [{"prompt": "Repeated line"}] * 5  # identical lines stay distinct jobs
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")

    first = await cli(local_dev_settings, "submit", "--file", str(path))
    assert first.code == 0, first
    assert "1000/1000 100%" in first.stderr and "jobs/s" in first.stderr and "ETA" in first.stderr
    assert "sent 1000 new job(s), skipped 0 already sent" in first.stderr
    assert await jobs.message_count() == 1000
    state = path.with_name("jobs.jsonl.submitted")
    assert len(set(state.read_text().split())) == 1000

    again = await cli(local_dev_settings, "submit", "--file", str(path))
    assert again.code == 0, again
    assert "sent 0 new job(s), skipped 1000 already sent" in again.stderr
    assert await jobs.message_count() == 1000

    # An interrupted run: only what the state file does not list goes out on the next run.
    state.write_text("\n".join(state.read_text().split()[:700]) + "\n")
    resumed = await cli(local_dev_settings, "submit", "--file", str(path))
    assert "sent 300 new job(s), skipped 700 already sent" in resumed.stderr, resumed
    assert await jobs.message_count() == 1300
    assert len(set(state.read_text().split())) == 1000


async def test_invalid_input_exits_2_and_sends_nothing(
    local_dev_settings: dict[str, str], jobs_for: Any, tmp_path: Path
) -> None:
    jobs = await jobs_for(local_dev_settings)
    bad = await cli(local_dev_settings, "submit", "hi", "--param", "temperature=3")
    assert bad.code == 2
    expected = "error: parameters.temperature: Input should be less than or equal to 2 (the range Azure OpenAI takes)"
    assert bad.stderr == expected + "\n"

    path = tmp_path / "jobs.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": "ok too"}\n{"prompt": "x", "deployment": "no spaces allowed"}\n')
    from_file = await cli(local_dev_settings, "submit", "--file", str(path))
    assert from_file.code == 2
    assert f"{path} line 3: deployment" in from_file.stderr and len(from_file.stderr.splitlines()) == 1
    assert not path.with_name("jobs.jsonl.submitted").exists()

    assert (await cli(local_dev_settings, "submit")).code == 2  # no prompt
    assert (await cli(local_dev_settings, "submit", "--file", str(path), "also a prompt")).code == 2
    assert await jobs.message_count() == 0


async def test_config_permission_and_missing_results_exit_codes(
    local_dev_settings: dict[str, str], forbidden_storage: str, tmp_path: Path
) -> None:
    denied = {**local_dev_settings, "AzureWebJobsStorage": forbidden_storage}
    sending = await cli(denied, "submit", "hello")
    assert sending.code == 3
    assert "'Storage Queue Data Message Sender' role" in sending.stderr and len(sending.stderr.splitlines()) == 1
    reading = await cli(denied, "result", "some-job")
    assert reading.code == 3 and "'Storage Blob Data Reader' role" in reading.stderr

    unconfigured = {**local_dev_settings, "AzureWebJobsStorage": ""}
    missing = await cli(unconfigured, "result", "x")
    assert missing.code == 3 and "AzureWebJobsStorage__accountName" in missing.stderr

    # The same settings from a local.settings.json file instead of the environment.
    settings_file = tmp_path / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": local_dev_settings}))
    overridden = cli_process(unconfigured, "result", "not-there", "--settings", str(settings_file))
    assert overridden.code == 3  # a variable already set (even empty) wins over the file, as with Core Tools
    no_env = {"PATH": local_dev_settings["PATH"]}
    not_yet = cli_process(no_env, "result", "not-there", "--settings", str(settings_file))
    assert not_yet.code == 4 and "no result for job not-there yet" in not_yet.stderr

    timed_out = await cli(local_dev_settings, "wait", "w-1", "w-2", "--timeout", "0.5")
    assert timed_out.code == 4 and "w-1, w-2" in timed_out.stderr


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("submit", "result", "wait", "watch"):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "exit codes:" in text and "3  configuration, sign-in or permission problem" in text
