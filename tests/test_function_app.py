"""The app indexes the way the Python worker indexes it."""

from __future__ import annotations

import json
import os

import pytest

import function_app


def test_indexing_yields_the_queue_and_timer_triggers() -> None:
    functions = function_app.app.get_functions()
    names = ["process_job", "sample_queues", "submit_batches", "collect_batches"]
    assert [f.get_function_name() for f in functions] == names
    bindings = [[json.loads(raw) for raw in function.get_raw_bindings()] for function in functions]
    assert bindings == [
        [
            {
                "direction": "IN",
                "type": "queueTrigger",
                "name": "msg",
                "queueName": "%JOBS_QUEUE%",
                "connection": "AzureWebJobsStorage",
            }
        ],
        [
            {
                "direction": "IN",
                "type": "timerTrigger",
                "name": "timer",
                "schedule": "0 */1 * * * *",  # every minute, one instance at a time
                "runOnStartup": False,
            }
        ],
        *(
            [
                {
                    "direction": "IN",
                    "type": "timerTrigger",
                    "name": "timer",
                    "schedule": f"%{setting}%",  # the batch lane's timers, from app settings
                    "runOnStartup": False,
                }
            ]
            for setting in ("BATCH_SUBMIT_SCHEDULE", "BATCH_COLLECT_SCHEDULE")
        ),
    ]


def test_the_batch_timers_have_defaults_for_hosts_that_resolve_from_the_environment() -> None:
    from shared import batch

    assert batch.SCHEDULE_DEFAULTS == {
        "BATCH_SUBMIT_SCHEDULE": "0 */5 * * * *",
        "BATCH_COLLECT_SCHEDULE": "30 * * * * *",
    }
    for setting in batch.SCHEDULE_DEFAULTS:
        assert os.environ[setting]  # set on import unless the environment had its own


async def test_the_batch_timers_run_with_the_lane_off_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Emptying BATCH_DEPLOYMENT must not strand what the lane holds: the timers still collect the batches
    out and end the staged jobs (tests/worker/test_batch_lane.py runs that against Azurite and the emulator)."""
    from shared import batch

    ran: list[str] = []

    async def submit() -> None:
        ran.append("submit")

    async def collect() -> None:
        ran.append("collect")

    monkeypatch.delenv("BATCH_DEPLOYMENT", raising=False)
    monkeypatch.setattr(batch, "submit", submit)
    monkeypatch.setattr(batch, "collect", collect)
    await function_app.submit_batches(None)  # type: ignore[arg-type]  # the timer's request is unused
    await function_app.collect_batches(None)  # type: ignore[arg-type]
    assert ran == ["submit", "collect"]


def test_importing_the_app_creates_no_clients() -> None:
    from shared import connections

    assert connections._runtime is None  # clients are made on first invocation, on the worker's loop


async def test_the_timer_does_nothing_with_telemetry_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import connections, telemetry
    from shared.settings import AZURE_MONITOR_SETTING, OTLP_ENDPOINT

    for name in (AZURE_MONITOR_SETTING, OTLP_ENDPOINT):
        monkeypatch.delenv(name, raising=False)
    assert telemetry.current() is telemetry.OFF
    await function_app.sample_queues(None)  # type: ignore[arg-type]  # the timer's request is unused
    assert connections._runtime is None  # no clients made, no storage call
