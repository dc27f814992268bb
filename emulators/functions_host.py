"""A local queue- and timer-trigger host for machines without Azure Functions Core Tools.

It runs the app, not a copy of its logic: it indexes ``function_app.py`` with
``azure.functions`` (``get_functions()`` and the raw binding JSON, as the Python worker
does), resolves ``%SETTING%`` expressions and connections from the environment and
``local.settings.json``, and drives every queue trigger with the Storage Queues
extension's semantics read from ``host.json``:

- up to ``batchSize`` messages per fetch, a new fetch once in-flight drops to
  ``newBatchThreshold`` (so concurrency is batchSize + newBatchThreshold);
- messages are received invisible for 10 minutes and kept invisible while the function runs;
- success deletes; failure makes the message visible again after ``visibilityTimeout``;
  at ``maxDequeueCount`` the message is copied to ``<queue>-poison`` and deleted;
- ``messageEncoding`` base64 (a message that does not decode goes straight to poison) or none;
- polling backs off exponentially up to ``maxPollingInterval`` while a queue is empty;
- the function gets an ``azure.functions.queue.QueueMessage`` with ``dequeue_count`` and times.

Timer triggers run on their six-field NCRONTAB schedule (``Schedule``: the subset an app of this
size needs, seconds first; ``croniter`` finds the occurrences), in UTC, one invocation at a time,
and with ``runOnStartup`` once at start; a failed invocation is logged and the schedule goes on
(the real host does not retry timers either). One local process is the whole app, so the timer's
singleton lock across instances has nothing to do.

Run: ``python -m emulators.functions_host [--app-dir .]``; stop with SIGINT/SIGTERM (it lets
running invocations finish).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import importlib
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueMessage as StoredMessage
from azure.storage.queue.aio import QueueClient, QueueServiceClient
from croniter import CroniterError, croniter

from emulators.signals import run_until_signalled
from shared.settings import apply_local_settings
from shared.storage_clients import StorageEndpoints, create_credential

logger = logging.getLogger("emulators.functions_host")

MIN_POLL = 0.1


def parse_timespan(value: str | int | float) -> float:
    """host.json timespans ("00:00:10", "1.02:00:00") -> seconds."""
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(r"(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)", value.strip())
    if not match:
        raise ValueError(f"not a timespan: {value!r}")
    days, hours, minutes, seconds = match.groups()
    return timedelta(
        days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=float(seconds)
    ).total_seconds()


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` in host.json, with the extension's defaults."""

    batch_size: int = 16
    new_batch_threshold: int | None = None
    max_polling_interval: float = 2.0  # the extension's local default (1 minute in Azure)
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"
    # Not a host.json setting: how long a received message stays invisible (the extension
    # uses 10 minutes and renews it while the function runs). Shortened only by tests that
    # kill the host and want the next one to see the orphaned messages sooner.
    receive_visibility: float = 600.0

    @classmethod
    def from_host_json(cls, path: Path, **overrides: Any) -> QueueOptions:
        queues = json.loads(path.read_text()).get("extensions", {}).get("queues", {})
        options = cls(
            batch_size=int(queues.get("batchSize", 16)),
            new_batch_threshold=int(queues["newBatchThreshold"]) if "newBatchThreshold" in queues else None,
            max_polling_interval=parse_timespan(queues.get("maxPollingInterval", 2.0)),
            visibility_timeout=parse_timespan(queues.get("visibilityTimeout", 0)),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            message_encoding=str(queues.get("messageEncoding", "base64")).lower(),
            **overrides,
        )
        if not 1 <= options.batch_size <= 32:
            raise ValueError("host.json extensions.queues.batchSize must be 1-32")
        if options.message_encoding not in ("base64", "none"):
            raise ValueError("host.json extensions.queues.messageEncoding must be base64 or none")
        return options

    @property
    def threshold(self) -> int:
        # Default newBatchThreshold: batchSize/2 x processor count.
        return (
            self.new_batch_threshold
            if self.new_batch_threshold is not None
            else (self.batch_size // 2) * (os.cpu_count() or 1)
        )

    @property
    def concurrency(self) -> int:
        return self.batch_size + self.threshold


@dataclass
class QueueFunction:
    name: str
    queue_name: str
    connection: str
    arg_name: str
    call: Callable[..., Any]


@dataclass(frozen=True)
class Schedule:
    """A six-field NCRONTAB expression, ``{second} {minute} {hour} {day} {month} {day-of-week}``, seconds first.

    Each field takes ``*``, a number, a range ``a-b``, a step ``*/n``, ``a/n`` or ``a-b/n``, and
    comma-separated lists of those; months also JAN-DEC, days of the week 0-6 (0 and 7 are Sunday)
    or SUN-SAT. Not supported (refused with a clear error): restricting both the day of the month
    and the day of the week, and the TimeSpan form (``00:05:00``) of App Service plans.

    ``parse`` reads each field as NCRONTAB does and hands ``croniter`` the values it selects, listed
    (``cron``); croniter finds the occurrences. Not the fields as written: croniter reads an equal range
    (``7-7``) as the whole cycle, and a wrapped one (``5-2``) or a stepped 7 (``7/5``) otherwise too.
    """

    expression: str
    cron: str  # the same schedule as croniter reads it, seconds first

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        fields = expression.split()
        if len(fields) != 6:
            raise ValueError(
                f"timer schedule {expression!r}: expected six NCRONTAB fields "
                "({second} {minute} {hour} {day} {month} {day-of-week})"
            )
        second, minute, hour, day, month, weekday = fields
        if day not in ("*", "?") and weekday not in ("*", "?"):
            raise ValueError(f"timer schedule {expression!r}: restrict the day of the month or of the week, not both")
        schedule = cls(
            expression,
            " ".join(
                (
                    _cron_field(second, 0, 59),
                    _cron_field(minute, 0, 59),
                    _cron_field(hour, 0, 23),
                    _cron_field(day, 1, 31),
                    _cron_field(month, 1, 12, _MONTHS),
                    _cron_field(weekday, 0, 7, _WEEKDAYS, modulo=7),
                )
            ),
        )
        try:  # a date that never comes (30 FEB) is refused here, not at the first wait for it
            schedule.next_after(datetime.now(UTC))
        except CroniterError as exc:
            raise ValueError(f"timer schedule {expression!r} never fires: {exc}") from exc
        return schedule

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (whole seconds, in ``moment``'s time zone)."""
        # Leap days recur within 8 years: a schedule with no occurrence in 8 years has none.
        found = croniter(self.cron, moment, ret_type=datetime, second_at_beginning=True, max_years_between_matches=8)
        return found.get_next(datetime)


_MONTHS = {
    name: i + 1
    for i, name in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"))
}
_WEEKDAYS = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}


def _cron_field(text: str, low: int, high: int, names: Mapping[str, int] | None = None, modulo: int = 0) -> str:
    """One NCRONTAB field as croniter should read it: ``*``, or the values it selects, listed."""

    def number(token: str) -> int:
        value = (names or {}).get(token.upper())
        if value is None and not token.isdigit():
            raise ValueError(f"timer schedule field {text!r}: {token!r} is not a number")
        return int(token) if value is None else value

    if text in ("*", "?"):
        return "*"
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else 0
        if step_text and step < 1:
            raise ValueError(f"timer schedule field {text!r}: the step must be a whole number from 1")
        if base in ("*", "?"):
            first, last = low, high
        elif "-" in base:
            first, last = (number(token) for token in base.split("-", 1))
        else:
            first = number(base)
            last = high if step_text else first
        if not low <= first <= last <= high:
            raise ValueError(f"timer schedule field {text!r}: values must be {low}-{high}, ranges low to high")
        values.update(value % modulo if modulo else value for value in range(first, last + 1, step or 1))
    return ",".join(str(value) for value in sorted(values))


def load_local_settings(path: Path) -> None:
    """Export ``local.settings.json`` Values as Core Tools does; variables already set win."""
    if path.exists():
        apply_local_settings(path)


def resolve(expression: str, env: Mapping[str, str]) -> str:
    """Resolve ``%SETTING%`` binding expressions; a missing setting is an indexing error."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise LookupError(f"binding expression %{name}% refers to app setting {name}, which is not set")
        return env[name]

    return re.sub(r"%([^%]+)%", lookup, expression)


@dataclass
class TimerFunction:
    name: str
    schedule: Schedule
    run_on_startup: bool
    arg_name: str
    call: Callable[..., Any]


def index_app(app_dir: Path, module: str = "function_app") -> list[QueueFunction]:
    """The app's queue-triggered functions (see ``index_functions``)."""
    return index_functions(app_dir, module)[0]


def index_functions(app_dir: Path, module: str = "function_app") -> tuple[list[QueueFunction], list[TimerFunction]]:
    """Index the v2 app the way the Python worker does: get_functions() and raw bindings."""
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    app_module = importlib.import_module(module)
    apps = [v for v in vars(app_module).values() if isinstance(v, func.FunctionApp)]
    if len(apps) != 1:
        raise LookupError(f"{module}.py must define exactly one azure.functions.FunctionApp")
    queues, timers = [], []
    for function in apps[0].get_functions():
        name = function.get_function_name()
        for raw in function.get_raw_bindings():
            binding = json.loads(raw)
            if binding["type"] == "queueTrigger":
                queues.append(
                    QueueFunction(
                        name=name or binding["name"],
                        queue_name=resolve(binding["queueName"], os.environ),
                        connection=binding.get("connection") or "AzureWebJobsStorage",
                        arg_name=binding["name"],
                        call=function.get_user_function(),
                    )
                )
            elif binding["type"] == "timerTrigger":
                timers.append(
                    TimerFunction(
                        name=name or binding["name"],
                        schedule=Schedule.parse(resolve(binding["schedule"], os.environ)),
                        run_on_startup=bool(binding.get("runOnStartup", False)),
                        arg_name=binding["name"],
                        call=function.get_user_function(),
                    )
                )
    return queues, timers


class QueueListener:
    """Drives one queue-triggered function."""

    def __init__(self, function: QueueFunction, service: QueueServiceClient, options: QueueOptions) -> None:
        self.function = function
        self.options = options
        self.queue: QueueClient = service.get_queue_client(function.queue_name)
        self.poison: QueueClient = service.get_queue_client(f"{function.queue_name}-poison")
        self.in_flight: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self.invocations = 0

    async def run(self) -> None:
        for queue in (self.queue, self.poison):
            with contextlib.suppress(ResourceExistsError):
                await queue.create_queue()
        delay = MIN_POLL
        while not self.stopping.is_set():
            # Fetch a new batch only once in-flight work drops to the threshold.
            if len(self.in_flight) > self.options.threshold:
                await asyncio.wait(self.in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            room = min(self.options.batch_size, 32)
            messages = await self._receive(room)
            for message in messages:
                task = asyncio.create_task(self._process(message))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)
            if messages:
                delay = MIN_POLL
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, self.options.max_polling_interval)
        if self.in_flight:
            await asyncio.wait(self.in_flight)

    async def _receive(self, count: int) -> list[StoredMessage]:
        try:
            pager = self.queue.receive_messages(
                messages_per_page=count, visibility_timeout=int(self.options.receive_visibility)
            )
            return await _first_page(pager, count)
        except Exception:
            logger.exception("receiving from %s failed; will poll again", self.function.queue_name)
            return []

    async def _process(self, stored: StoredMessage) -> None:
        if stored.dequeue_count is not None and stored.dequeue_count > self.options.max_dequeue_count:
            await self._poison(stored, "dequeue count already past maxDequeueCount")
            return
        try:
            body = self._decode(stored.content)
        except ValueError as exc:
            await self._poison(stored, str(exc))
            return
        message = QueueMessage(  # type: ignore[no-untyped-call]  # azure.functions is untyped here
            id=stored.id,
            body=body,
            dequeue_count=stored.dequeue_count,
            expiration_time=stored.expires_on,
            insertion_time=stored.inserted_on,
            time_next_visible=stored.next_visible_on,
            pop_receipt=stored.pop_receipt,
        )
        keeper = asyncio.create_task(self._keep_invisible(stored))
        self.invocations += 1
        try:
            result = self.function.call(**{self.function.arg_name: message})
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            keeper.cancel()
            await self._failed(stored, exc)
            return
        keeper.cancel()
        with contextlib.suppress(ResourceNotFoundError):
            await self.queue.delete_message(stored.id, stored.pop_receipt)

    def _decode(self, content: Any) -> bytes:
        text = content if isinstance(content, str) else bytes(content).decode()
        if self.options.message_encoding == "none":
            return text.encode()
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("message is not valid base64 (host.json messageEncoding is base64)") from exc

    async def _keep_invisible(self, stored: StoredMessage) -> None:
        # The host renews visibility while a function runs so a long job is not handed out twice.
        while True:
            await asyncio.sleep(self.options.receive_visibility / 2)
            receipt = await self.queue.update_message(
                stored.id, stored.pop_receipt, visibility_timeout=int(self.options.receive_visibility)
            )
            stored.pop_receipt = receipt.pop_receipt

    async def _failed(self, stored: StoredMessage, exc: Exception) -> None:
        count = stored.dequeue_count or 1
        logger.error(
            "%s failed on message %s (dequeue count %d): %s: %s",
            self.function.name, stored.id, count, type(exc).__name__, exc,
        )  # fmt: skip
        if count >= self.options.max_dequeue_count:
            await self._poison(stored, f"failed {count} times")
            return
        with contextlib.suppress(ResourceNotFoundError):
            await self.queue.update_message(
                stored.id, stored.pop_receipt, visibility_timeout=int(self.options.visibility_timeout)
            )

    async def _poison(self, stored: StoredMessage, why: str) -> None:
        logger.warning("message %s moved to %s: %s", stored.id, self.poison.queue_name, why)
        await self.poison.send_message(stored.content)
        with contextlib.suppress(ResourceNotFoundError):
            await self.queue.delete_message(stored.id, stored.pop_receipt)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TimerListener:
    """Drives one timer-triggered function: one invocation at a time, on its schedule."""

    def __init__(self, function: TimerFunction, clock: Callable[[], datetime] = _utc_now) -> None:
        self.function = function
        self.clock = clock
        self.stopping = asyncio.Event()
        self.invocations = 0
        self.last: datetime | None = None

    async def run(self) -> None:
        if self.function.run_on_startup and not self.stopping.is_set():
            await self._invoke(self.clock(), past_due=False)
        while not self.stopping.is_set():
            due = self.function.schedule.next_after(self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), max((due - self.clock()).total_seconds(), 0.0))
            if self.stopping.is_set():
                break
            await self._invoke(due, past_due=(self.clock() - due).total_seconds() > 1.0)

    async def _invoke(self, due: datetime, *, past_due: bool) -> None:
        upcoming = self.function.schedule.next_after(due)
        request = TimerRequest(
            past_due=past_due,
            schedule_status={
                "Last": (self.last or due).isoformat(),
                "Next": upcoming.isoformat(),
                "LastUpdated": due.isoformat(),
            },
            schedule={"AdjustForDST": True},
        )
        self.invocations += 1
        self.last = due
        try:
            result = self.function.call(**{self.function.arg_name: request})
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # the host logs a failed timer invocation and waits for the next occurrence
            logger.error(
                "%s failed (timer, due %s): %s: %s", self.function.name, due.isoformat(), type(exc).__name__, exc
            )


async def _first_page(pager: Any, count: int) -> list[StoredMessage]:
    """One receive call's worth of messages (the pager would otherwise keep dequeuing)."""
    messages: list[StoredMessage] = []
    async for page in pager.by_page():
        async for message in page:
            messages.append(message)
        break
    return messages[:count]


async def serve(
    app_dir: Path,
    *,
    settings_file: Path | None = None,
    stop: asyncio.Event | None = None,
    receive_visibility: float = 600.0,
) -> None:
    """Index the app and run every queue and timer trigger until ``stop`` is set."""
    load_local_settings(settings_file or app_dir / "local.settings.json")
    os.environ["AzureWebJobsScriptRoot"] = str(app_dir)  # noqa: SIM112  # the host's own name for the app folder
    options = QueueOptions.from_host_json(app_dir / "host.json", receive_visibility=receive_visibility)
    functions, timer_functions = index_functions(app_dir)
    if not functions and not timer_functions:
        raise LookupError("function_app.py has no queue- or timer-triggered functions")
    # The host's own identity for its queues (the app makes its own, as in Azure).
    credential = create_credential()
    services = {f.connection: StorageEndpoints.from_settings(f.connection).queue_service(credential) for f in functions}
    listeners = [QueueListener(f, services[f.connection], options) for f in functions]
    timers = [TimerListener(f) for f in timer_functions]
    for timer in timers:
        logger.info("%s: timer on schedule %r (UTC)", timer.function.name, timer.function.schedule.expression)
    for listener in listeners:
        logger.info(
            "%s: listening on queue %s (concurrency %d, encoding %s)",
            listener.function.name, listener.function.queue_name, options.concurrency, options.message_encoding,
        )  # fmt: skip
    stop = stop or asyncio.Event()

    async def relay_stop() -> None:
        await stop.wait()
        for listener in listeners:
            listener.stopping.set()
        for timer in timers:
            timer.stopping.set()

    relay = asyncio.create_task(relay_stop())
    try:
        await asyncio.gather(*(listener.run() for listener in listeners), *(timer.run() for timer in timers))
    finally:
        relay.cancel()
        for service in services.values():
            await service.close()
        await credential.close()
        # The real host just ends the process; closing the app's clients keeps the log clean.
        if (connections := sys.modules.get("shared.connections")) is not None:
            await connections.close_runtime()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulators.functions_host", description=__doc__.split("\n\n")[0])
    parser.add_argument("--app-dir", default=".", type=Path, help="folder with function_app.py and host.json")
    parser.add_argument("--settings", type=Path, help="local.settings.json to load (default: the app's)")
    parser.add_argument(
        "--receive-visibility", type=float, default=600.0, help="seconds a received message stays invisible"
    )
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    # Every logger at this level, as Microsoft's worker forwards them: the app sets its SDKs' levels itself.
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    run_until_signalled(
        lambda stop: serve(
            args.app_dir.resolve(), settings_file=args.settings, stop=stop, receive_visibility=args.receive_visibility
        )
    )


if __name__ == "__main__":
    main()
