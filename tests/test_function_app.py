"""The app indexes the way the Python worker indexes it."""

from __future__ import annotations

import json

import pytest

import function_app


def test_indexing_yields_the_queue_and_timer_triggers() -> None:
    functions = function_app.app.get_functions()
    assert [f.get_function_name() for f in functions] == ["process_job", "sample_queues"]
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
    ]


def test_importing_the_app_creates_no_clients() -> None:
    from shared import connections

    assert connections._runtime is None  # clients are made on first invocation, on the worker's loop


async def test_the_timer_does_nothing_with_telemetry_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import connections, telemetry

    for name in (telemetry.AZURE_MONITOR_SETTING, telemetry.OTLP_ENDPOINT):
        monkeypatch.delenv(name, raising=False)
    assert telemetry.current() is telemetry.OFF
    await function_app.sample_queues(None)  # type: ignore[arg-type]  # the timer's request is unused
    assert connections._runtime is None  # no clients made, no storage call
