"""`make run`'s sample helpers, as pure logic (emulators/samples.py, emulators/run.py): relative deadlines, which
samples a worker can run, the pool the samples' deployments get, and the notes the background and flex samples
print. `tests/test_make_run.py` runs them all for real."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from emulators import samples as sample_world
from emulators.run import runnable
from emulators.stack.environment import REPO
from shared.jobs import Job, Result, Timings
from shared.settings import Settings

SENT = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def test_a_relative_deadline_becomes_the_time_it_names_and_the_job_is_valid() -> None:
    body = json.loads((REPO / "samples" / "11-flex.json").read_text())
    sent = sample_world.prepared(body, SENT)
    assert datetime.fromisoformat(sent["deadline"]) == SENT + timedelta(seconds=75)
    assert Job.model_validate(sent).deadline == SENT + timedelta(seconds=75)  # what the producer client checks
    assert body["deadline"] == "+75s"  # the file's body is left as it was
    for unchanged in ({"prompt": "x"}, {"prompt": "x", "deadline": "2026-12-07T07:00:00Z"}, {"deadline": "+5m"}):
        assert sample_world.prepared(unchanged, SENT) == unchanged  # only "+<seconds>s" is relative


def test_every_sample_is_a_valid_job_once_prepared() -> None:
    for path in sorted((REPO / "samples").glob("*.json")):
        body = sample_world.prepared(json.loads(path.read_text()), SENT)
        if path.name != "05-invalid.json":  # refused on purpose, by the worker's allow-list, not the contract
            Job.model_validate(body)


def test_samples_naming_a_deployment_the_worker_lacks_are_left_out(tmp_path: Path, capsys: Any) -> None:
    paths = []
    for name, body in (
        ("a.json", {"prompt": "x"}),
        ("b.json", {"prompt": "x", "deployment": "gpt-5.1-codex"}),
        ("c.json", {"prompt": "x", "lane": "batch"}),
    ):
        (tmp_path / name).write_text(json.dumps(body))
        paths.append(tmp_path / name)
    assert runnable(paths, batch_answers_soon=True) == paths
    assert runnable(paths, batch_answers_soon=True, deployments=("gpt-5.1-codex",)) == paths
    assert runnable(paths, batch_answers_soon=False, deployments=("my-gpt",)) == [paths[0]]
    printed = capsys.readouterr().out
    assert (
        "b.json: left out (this worker has no deployment 'gpt-5.1-codex'" in printed and "c.json: left out" in printed
    )


def test_the_samples_pool_declares_the_responses_only_model_and_reads_as_settings() -> None:
    endpoint = "http://127.0.0.1:1"
    names = ("gpt-5.4-mini", sample_world.RESPONSES_DEPLOYMENT, sample_world.FLEX_DEPLOYMENT)
    settings = Settings.from_env(
        {"AZURE_OPENAI_DEPLOYMENT": "gpt-5.4-mini", **sample_world.worker_settings(endpoint, names)}
    )
    assert {entry.deployment: entry.api for entry in settings.pool} == {
        "gpt-5.4-mini": "chat",
        "gpt-5.1-codex": "responses",
        "gpt-5.6-luna": "chat",
    }
    assert (settings.background_poll_seconds, settings.background_poll_max_seconds) == (2, 4)
    gap = sample_world.flex_gap(60)["flex_unavailable_until"] - datetime.now(UTC).timestamp()
    assert 55 < gap <= 60


def result(job_id: str, finished_after: float, **fields: Any) -> Result:
    finished = SENT + timedelta(seconds=finished_after)
    return Result(id=job_id, status="succeeded", timings=Timings(started_at=SENT, finished_at=finished), **fields)


def test_notes_say_what_the_background_and_flex_samples_showed() -> None:
    deadline = (SENT + timedelta(seconds=75)).isoformat()
    answered: list[tuple[dict[str, Any], Result]] = [
        ({"background": True}, result("bg", 24, response_id="resp_0123456789abcdef")),
        ({"service_tier": "flex", "deadline": deadline}, result("flex", 16, service_tier="default", attempts=3)),
        ({}, result("quick", 2)),
        ({}, result("late", 30)),  # after the background one: not "meanwhile"
        ({"background": True}, result("bg-refused", 1)),  # no response: refused before any, no note
    ]
    assert sample_world.notes(answered, SENT) == [
        "bg: background response resp_0123456… answered 24 s after it was sent; meanwhile 3 other samples were "
        "answered, and no worker slot waited for it (the job waited as a delayed queue message)",
        "flex: asked for flex, found no flex capacity, waited for it (delivery 3) and fell back to the default tier "
        "59 s before its deadline",
    ]
    served = sample_world.notes(
        [({"service_tier": "flex", "deadline": deadline}, result("f", 5, service_tier="flex"))], SENT
    )
    assert served == ["f: asked for flex and was served on flex (delivery 1), 70 s before its deadline"]
