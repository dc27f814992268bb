"""The app indexes the way the Python worker indexes it."""

from __future__ import annotations

import json

import function_app


def test_indexing_yields_the_queue_trigger() -> None:
    functions = function_app.app.get_functions()
    assert [f.get_function_name() for f in functions] == ["process_job"]
    bindings = [json.loads(raw) for raw in functions[0].get_raw_bindings()]
    assert bindings == [
        {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "msg",
            "queueName": "%JOBS_QUEUE%",
            "connection": "AzureWebJobsStorage",
        }
    ]


def test_importing_the_app_creates_no_clients() -> None:
    from shared import connections

    assert connections._runtime is None  # clients are made on first invocation, on the worker's loop
