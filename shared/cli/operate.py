"""The operator's commands: ``status`` (queue depths, head ages, recent results, what the worker-only
container holds) and ``replay`` (poisoned jobs back to the jobs queue), over ``shared.operations``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from shared.cli._run import EXIT_CODES, EXIT_OK, UsageError, adder

if TYPE_CHECKING:
    from shared.operations import Operations, ReplayReport, Status, WorkerStore


def _operations() -> Operations:
    # Imported when a command runs, after --settings is in the environment (as the producer's client).
    from shared.operations import Operations

    return Operations.from_settings()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add status and replay, each with an ``Operations``."""
    add = adder(subparsers, _operations)
    status = add(
        "status",
        "Show the jobs queue and its poison queue (depth, age of the message at the head), the results "
        "of the last minutes by status and error code, and the jobs staged for the batch lane, its batches "
        "and the jobs waiting to retry.",
        _status,
        _check_status,
    )
    status.add_argument("--minutes", type=int, default=60, help="results stored in the last N minutes (default 60)")
    status.add_argument(
        "--limit", type=int, default=1000, help="failed results whose body is read for its code (default 1000)"
    )
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.epilog = (
        "'messages' is the queue's approximate count (invisible messages included); 'oldest' is the age\n"
        "of the message at the head of the queue (the first visible one). A result's status is read from\n"
        "its blob metadata; only failed results are downloaded, for their error code. The worker-only\n"
        "container (STAGING_CONTAINER) is listed once: staged jobs (jobs/), batches (batches/, each read for\n"
        "its state: 'submitted' ones are out), jobs waiting to retry (retries/).\n\n" + EXIT_CODES
    )

    replay = add(
        "replay",
        "Move poisoned jobs from <queue>-poison back to the jobs queue (never one that already succeeded).",
        _replay,
        _check_replay,
    )
    replay.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")
    replay.add_argument("--code", help="only jobs whose failed result has this error code (e.g. transient_exhausted)")
    replay.add_argument("--limit", type=int, metavar="N", help="replay at most N messages")
    replay.add_argument(
        "--include-invalid", action="store_true", help="also replay messages that are not valid jobs (default: left)"
    )
    replay.add_argument(
        "--drop-succeeded", action="store_true", help="delete poison messages whose job already succeeded"
    )
    replay.add_argument(
        "--include-no-id",
        action="store_true",
        help="also replay jobs without an id (whether they succeeded cannot be told: default left)",
    )
    replay.add_argument("--json", action="store_true", help="print one JSON document")
    replay.epilog = (
        "Each message is sent to the jobs queue, then deleted from the poison queue (a crash in between\n"
        "duplicates it, which the worker's idempotency by job id absorbs); the job's new result replaces\n"
        "its failed one. Messages skipped stay in the poison queue, so running it again is safe. A dry run\n"
        "peeks, which shows at most the first 32 messages.\n\n" + EXIT_CODES
    )


def _check_status(args: argparse.Namespace) -> None:
    if args.minutes < 1:
        raise UsageError("--minutes must be at least 1")
    if args.limit < 0:
        raise UsageError("--limit must not be negative")


async def _status(args: argparse.Namespace, operations: Operations) -> int:
    status = await operations.status(minutes=args.minutes, limit=args.limit)
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        print(render_status(status))
    return EXIT_OK


def age(seconds: float | None) -> str:
    """``45s``, ``3m 05s``, ``2h 04m``, ``3d 02h``; ``-`` for none."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    for unit, size, smaller, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if whole >= size:
            return f"{whole // size}{unit} {whole % size // small_size:02d}{smaller}"
    return f"{whole}s"


def render_status(status: Status) -> str:
    width = max(len("queue"), len(status.poison.name))
    lines = [f"{'queue':<{width}}  {'messages':>8}  oldest (head)"]
    for queue in (status.queue, status.poison):
        count = str(queue.messages) if queue.exists else "missing"
        lines.append(f"{queue.name:<{width}}  {count:>8}  {age(queue.oldest_seconds)}")
    results = status.results
    lines += ["", f"results in the last {results.minutes} min: {results.total}"]
    rows = [(name, "-", count) for name, count in results.by_status.items() if name != "failed"]
    rows += [("failed", code, count) for code, count in results.failed_by_code.items()]
    if results.unread:
        rows.append(("failed", "(not read: --limit)", results.unread))
    if rows:
        code_width = max(len("code"), *(len(code) for _, code, _ in rows))
        lines.append(f"{'status':<9}  {'code':<{code_width}}  {'count':>6}")
        lines += [f"{name:<9}  {code:<{code_width}}  {count:>6}" for name, code, count in rows]
    return "\n".join([*lines, "", *render_worker_store(status.worker)])


def render_worker_store(store: WorkerStore) -> list[str]:
    """The worker-only container's lines: staged jobs, batches, retries (or why they are not shown)."""
    head = f"worker-only container {store.name}:"
    if not store.exists:
        return [f"{head} missing (nothing staged or waiting yet)"]
    if store.refused:
        return [f"{head} not readable: {store.refused}"]
    oldest = f" (oldest {age(store.oldest_staged_seconds)})" if store.staged_jobs else ""
    preparing = sum(store.batches_by_state.values()) - store.open_batches
    return [
        head,
        f"  staged for the batch lane  {store.staged_jobs}{oldest}",
        f"  open batches               {store.open_batches} (and {preparing} being submitted)",
        f"  waiting to retry           {store.waiting_retries}",
        f"  on background responses    {store.waiting_background} (of those waiting)",
    ]


def _check_replay(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")


async def _replay(args: argparse.Namespace, operations: Operations) -> int:
    from shared.operations import ReplayRules

    rules = ReplayRules(
        code=args.code,
        include_invalid=args.include_invalid,
        drop_succeeded=args.drop_succeeded,
        include_unnamed=args.include_no_id,
    )
    report = await operations.replay(rules, dry_run=args.dry_run, limit=args.limit)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for line in render_replay(report):
            print(line)
    print(replay_summary(report), file=sys.stderr)
    return EXIT_OK


def render_replay(report: ReplayReport) -> list[str]:
    """One line per poison message looked at: action, job id, why."""
    verbs = {"replayed": "would-replay", "dropped": "would-drop", "skipped": "skip"} if report.dry_run else {}
    width = max((len(item.job_id or "-") for item in report.items), default=1)
    return [
        f"{verbs.get(item.action, item.action):<12}  {item.job_id or '-':<{width}}  {item.reason}"
        for item in report.items
    ]


def replay_summary(report: ReplayReport) -> str:
    replayed, dropped, skipped = (report.count(action) for action in ("replayed", "dropped", "skipped"))
    if report.dry_run:
        more = f"; {report.not_shown} more not shown (a peek shows 32)" if report.not_shown else ""
        return (
            f"dry run, nothing changed: would replay {replayed} to {report.queue}, drop {dropped}, "
            f"leave {skipped} in {report.poison}{more}"
        )
    return f"replayed {replayed} to {report.queue}, dropped {dropped}, left {skipped} in {report.poison}"
