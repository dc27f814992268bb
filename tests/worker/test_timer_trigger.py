"""Timer triggers in the local host (emulators/functions_host.py): the NCRONTAB subset, the
listener's schedule, and a timer-only app run by the host process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emulators.functions_host import Schedule, TimerFunction, TimerListener
from emulators.stack.environment import REPO
from emulators.stack.workers import wait_until

MOMENT = datetime(2026, 11, 30, 23, 59, 58, 500_000, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("expression", "first", "second"),
    [
        ("0 */1 * * * *", "2026-12-01 00:00:00", "2026-12-01 00:01:00"),  # the app's sampler
        ("* * * * * *", "2026-11-30 23:59:59", "2026-12-01 00:00:00"),
        ("*/15 * * * * *", "2026-12-01 00:00:00", "2026-12-01 00:00:15"),
        ("5/20 * * * * *", "2026-12-01 00:00:05", "2026-12-01 00:00:25"),
        ("0 30 9 * * MON-FRI", "2026-12-01 09:30:00", "2026-12-02 09:30:00"),
        ("0 0 12 * * 0", "2026-12-06 12:00:00", "2026-12-13 12:00:00"),  # Sunday
        ("0 0 12 * * 7", "2026-12-06 12:00:00", "2026-12-13 12:00:00"),  # Sunday again
        ("0 0 0 29 FEB *", "2028-02-29 00:00:00", "2032-02-29 00:00:00"),
        ("0 15,45 8-9 * * *", "2026-12-01 08:15:00", "2026-12-01 08:45:00"),
    ],
)
def test_next_occurrences(expression: str, first: str, second: str) -> None:
    schedule = Schedule.parse(expression)
    one = schedule.next_after(MOMENT)
    two = schedule.next_after(one)
    assert (one.strftime("%Y-%m-%d %H:%M:%S"), two.strftime("%Y-%m-%d %H:%M:%S")) == (first, second)
    assert one.tzinfo is UTC


@pytest.mark.parametrize(
    ("expression", "complaint"),
    [
        ("0 */5 * * *", "six NCRONTAB fields"),
        ("00:05:00", "six NCRONTAB fields"),  # TimeSpan (App Service plans only)
        ("0 0 0 1 * MON", "not both"),
        ("61 * * * * *", "0-59"),
        ("0 0 5-2 * * *", "low to high"),
        ("*/0 * * * * *", "step"),
        ("x * * * * *", "not a number"),
    ],
)
def test_what_the_subset_refuses(expression: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        Schedule.parse(expression)


def test_the_app_indexes_its_sampler() -> None:
    # In a fresh interpreter: an app's get_functions() may be called once per process.
    code = (
        "import json\n"
        "from pathlib import Path\n"
        "from emulators.functions_host import index_functions\n"
        "queues, timers = index_functions(Path('.'))\n"
        "print(json.dumps([[q.name, q.queue_name] for q in queues]"
        " + [[t.name, t.schedule.expression, t.run_on_startup, t.arg_name] for t in timers]))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "JOBS_QUEUE": "jobs"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [
        ["process_job", "jobs"],
        ["sample_queues", "0 */1 * * * *", False, "timer"],
        ["submit_batches", "0 */5 * * * *", False, "timer"],  # the batch lane's, on their defaults here
        ["collect_batches", "30 * * * * *", False, "timer"],
    ]


async def test_the_listener_runs_on_schedule_one_at_a_time_and_survives_failures() -> None:
    calls: list[Any] = []

    async def tick(timer: Any) -> None:
        calls.append(timer)
        if len(calls) == 2:
            raise RuntimeError("a failed run is logged; the schedule goes on")

    function = TimerFunction("tick", Schedule.parse("* * * * * *"), run_on_startup=True, arg_name="timer", call=tick)
    listener = TimerListener(function)
    running = asyncio.create_task(listener.run())

    async def three() -> bool:
        return len(calls) >= 3

    await wait_until(three, what="three timer runs", timeout=10, interval=0.05)
    listener.stopping.set()
    await asyncio.wait_for(running, 5)
    first, second = calls[0], calls[1]
    assert first.past_due is False and set(first.schedule_status) == {"Last", "Next", "LastUpdated"}
    assert datetime.fromisoformat(second.schedule_status["Next"]) > datetime.fromisoformat(
        second.schedule_status["Last"]
    )
    assert listener.invocations == len(calls)


async def test_the_host_runs_a_timer_only_app(tmp_path: Path, start_host: Any) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "host.json").write_text((REPO / "host.json").read_text())
    (app_dir / "function_app.py").write_text(
        "import os\n"
        "import azure.functions as func\n\n"
        "app = func.FunctionApp()\n\n\n"
        '@app.timer_trigger(arg_name="timer", schedule="%TICK_SCHEDULE%", run_on_startup=True)\n'
        "def tick(timer: func.TimerRequest) -> None:\n"
        '    with open(os.environ["TICKS_FILE"], "a") as ticks:\n'
        '        ticks.write(f"{timer.past_due}\\n")\n'
    )
    ticks = tmp_path / "ticks.txt"
    host = start_host({"TICKS_FILE": str(ticks), "TICK_SCHEDULE": "* * * * * *"}, app_dir=app_dir)

    async def two() -> bool:
        return ticks.exists() and len(ticks.read_text().splitlines()) >= 2

    await wait_until(two, what="two ticks", host=host, timeout=20, interval=0.1)
    assert "tick: timer on schedule '* * * * * *' (UTC)" in host.log()
    host.stop()
    assert host.process.returncode == 0, host.tail()


async def test_a_stop_does_not_wait_for_the_next_occurrence() -> None:
    calls: list[Any] = []

    async def tick(timer: Any) -> None:
        calls.append(timer)

    yearly = Schedule.parse("0 0 0 1 1 *")  # next occurrence months away
    listener = TimerListener(TimerFunction("yearly", yearly, run_on_startup=True, arg_name="timer", call=tick))
    running = asyncio.create_task(listener.run())

    async def started() -> bool:
        return len(calls) == 1

    await wait_until(started, what="the run on startup", timeout=10, interval=0.05)
    listener.stopping.set()
    await asyncio.wait_for(running, 5)  # waiting for January would time out here
    assert len(calls) == 1
