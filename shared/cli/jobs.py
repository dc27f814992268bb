"""The producer's commands: ``submit`` (one job, or a JSONL file, resumable), ``result``, ``wait``
and ``watch``, over the async ``shared.producer.aio.JobsClient``."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from shared.cli._run import EXIT_CODES, EXIT_JOB_FAILED, EXIT_OK, EXIT_TIMEOUT, UsageError, adder
from shared.errors import InvalidJobError, WaitTimeoutError

if TYPE_CHECKING:
    from shared.jobs import Job, Lane, Result
    from shared.producer import SubmitProgress
    from shared.producer.aio import JobsClient


def _jobs_client() -> JobsClient:
    # Imported after the settings are in the environment: aiohttp reads SSL_CERT_FILE on import.
    from shared.producer.aio import JobsClient

    return JobsClient.from_settings()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add submit, result, wait and watch, each with the producer's client."""
    add = adder(subparsers, _jobs_client)
    submit = add("submit", "Send a job (or every job in a JSONL file) to the jobs queue.", _submit, _check_submit)
    submit.add_argument("prompt", nargs="?", help="the prompt text (or use --file)")
    submit.add_argument("--file", type=Path, help="JSONL file, one job object per line; resumable (see below)")
    submit.add_argument("--system", help="system message")
    submit.add_argument("--deployment", help="model deployment (default: the worker's)")
    submit.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model parameter, repeatable; VALUE is JSON if it parses (temperature=0.2, stop=END)",
    )
    submit.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="echoed into the result")
    submit.add_argument("--id", help="job id (default: a new uuid; with --file: each line's id or a hash of it)")
    submit.add_argument("--reply-to", metavar="QUEUE", help="queue to receive a notice when the result is stored")
    submit.add_argument(
        "--lane",
        choices=("live", "batch"),
        help="batch: through Azure OpenAI Global Batch, half price, within 24 h (with --file: lines naming none)",
    )
    submit.add_argument(
        "--traceparent",
        metavar="W3C",
        help='W3C trace context for the job to continue, e.g. --traceparent "$TRACEPARENT" (default: none)',
    )
    submit.add_argument("--wait", action="store_true", help="wait for the result(s) and print them")
    submit.add_argument("--timeout", type=float, default=300.0, help="seconds to --wait (default 300)")
    submit.add_argument("--json", action="store_true", help="with --wait: print whole results as JSON lines")
    submit.add_argument("--concurrency", type=int, default=16, help="sends in flight with --file (default 16)")
    submit.epilog = (
        "--file: every line is validated before anything is sent. A line without an id gets one derived\n"
        "from its content; ids sent are appended to FILE.submitted, so running the same command again\n"
        "sends only what is not there yet.\n\n" + EXIT_CODES
    )

    result = add("result", "Print a job's result.", _result)
    result.add_argument("id")
    result.add_argument("--json", action="store_true", help="print the whole result as JSON")

    wait = add("wait", "Wait for jobs' results and print them.", _wait)
    wait.add_argument("ids", nargs="+", metavar="ID")
    wait.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    wait.add_argument("--json", action="store_true", help="print whole results as JSON lines")

    watch = add("watch", "Follow a reply queue and print each notice (deleting it).", _watch)
    watch.add_argument("--queue", required=True, metavar="REPLY_QUEUE", help="a queue jobs name as reply_to")
    watch.add_argument("--once", action="store_true", help="print what is there now, then stop")
    watch.add_argument("--max", type=int, metavar="N", help="stop after N notices")
    watch.add_argument("--timeout", type=float, help="stop after this many seconds (exit 4 if --max not reached)")
    watch.add_argument("--json", action="store_true", help="print notices as JSON lines")


def _pairs(items: list[str], option: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw  # not JSON: a plain string
    return out


# out=None prints to sys.stdout as it is at the call (a default of sys.stdout would be the one at import).
def _print_result(result: Result, as_json: bool, out: TextIO | None = None) -> int:
    if as_json:
        print(result.model_dump_json(exclude_none=True), file=out)
    elif result.status == "succeeded":
        text = result.output if result.output is not None else json.dumps(result.output_json)
        print(text, file=out)
    if result.status == "failed":
        error = result.error
        print(
            f"job {result.id} failed: {error.code if error else '?'}: {error.message if error else ''}", file=sys.stderr
        )
        return EXIT_JOB_FAILED
    return EXIT_OK


def _print_results(results: dict[str, Result], as_json: bool) -> int:
    """One result: its output. Several: one line each (id, status, error) unless --json."""
    if len(results) == 1 or as_json:
        codes = [_print_result(result, as_json) for result in results.values()]
        return max(codes, default=EXIT_OK)
    code = EXIT_OK
    for job_id, result in results.items():
        error = f" {result.error.code}: {result.error.message}" if result.error else ""
        print(f"{job_id} {result.status}{error}")
        if result.status == "failed":
            code = EXIT_JOB_FAILED
    return code


# ---- commands ----


def _check_submit(args: argparse.Namespace) -> None:
    """Build and validate the job(s) to send into ``args.jobs``."""
    from shared.producer import prepare_job

    if args.file is not None:
        job_options = (args.id, args.system, args.deployment, args.param, args.metadata, args.traceparent)
        if args.prompt is not None or any(job_options):
            raise UsageError("--file takes its jobs from the file: give no prompt, --id, --system or job options")
        args.jobs = read_jobs_file(args.file, lane=args.lane)
        return
    if args.prompt is None:
        raise UsageError('give a prompt (submit "text") or --file jobs.jsonl')
    job: dict[str, Any] = {"prompt": args.prompt}
    for field in ("id", "system", "deployment", "reply_to", "traceparent"):
        if getattr(args, field):
            job[field] = getattr(args, field)
    if args.param:
        job["parameters"] = _pairs(args.param, "--param")
    if args.metadata:
        job["metadata"] = _pairs(args.metadata, "--metadata")
    args.jobs = [prepare_job(job, lane=args.lane)]


async def _submit(args: argparse.Namespace, client: JobsClient) -> int:
    if args.file is not None:
        return await _submit_file(args, client)
    job_id = await client.submit(args.jobs[0])
    if not args.wait:
        print(job_id)
        return EXIT_OK
    print(f"submitted job {job_id}; waiting up to {args.timeout:g} s", file=sys.stderr)
    results = await _wait_printing_partial(client, [job_id], args.timeout, args.json)
    return _print_results(results, args.json)


def line_id(canonical: str, occurrence: int) -> str:
    """A stable id for a JSONL line without one: its content plus which repeat of that content it is,
    so a rerun (even with lines reordered or appended) maps every line to the same id."""
    return hashlib.sha256(f"{occurrence}\n{canonical}".encode()).hexdigest()[:32]


def read_jobs_file(path: Path, lane: Lane | None = None) -> list[Job]:
    """Every job in a JSONL file, validated, each with an id (and ``lane`` if it names none; the id
    derived for a line without one does not depend on it); InvalidJobError names the line."""
    from shared.producer import prepare_job

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidJobError(f"{path} is not UTF-8 (byte {exc.start})", field=None, code="invalid_utf8") from exc
    jobs: list[Job] = []
    repeats: Counter[str] = Counter()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise InvalidJobError(f"{where}: not JSON ({exc})", field=None, code="invalid_json") from exc
        if not isinstance(value, dict):
            raise InvalidJobError(f"{where}: a job is a JSON object", field=None, code="invalid_job")
        if value.get("id") is None:
            canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            value["id"] = line_id(canonical, repeats[canonical])
            repeats[canonical] += 1
        try:
            jobs.append(prepare_job(value, lane=lane))
        except InvalidJobError as exc:
            raise InvalidJobError(f"{where}: {exc.message}", field=exc.field, code=exc.code, index=number) from exc
    return jobs


def _read_state(path: Path) -> set[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    return {line.strip() for line in text.splitlines() if line.strip()}


async def _submit_file(args: argparse.Namespace, client: JobsClient) -> int:
    path: Path = args.file
    jobs: list[Job] = args.jobs
    ids = list(dict.fromkeys(job.id for job in jobs if job.id))
    state_path = path.with_name(path.name + ".submitted")
    already = _read_state(state_path)
    unique = {job.id: job for job in reversed(jobs)}  # first occurrence of a repeated explicit id wins
    to_send = [unique[job_id] for job_id in ids if job_id not in already]
    skipped = len(ids) - len(to_send)
    if to_send:
        bar = ProgressBar(len(to_send), sys.stderr)
        with state_path.open("a", encoding="utf-8") as state:

            def sent(progress: SubmitProgress) -> None:
                # Recorded as each job lands, so an interrupted run resumes where it stopped.
                state.write(progress.id + "\n")
                state.flush()
                bar.update(progress)

            try:
                await client.submit_many(to_send, concurrency=args.concurrency, progress=sent)
            finally:
                bar.close()
    print(
        f"sent {len(to_send)} new job(s), skipped {skipped} already sent (state: {state_path})",
        file=sys.stderr,
    )
    if not args.wait:
        return EXIT_OK
    results = await _wait_printing_partial(client, ids, args.timeout, True, quiet=True)
    failed = [r.id for r in results.values() if r.status == "failed"]
    print(f"{len(results) - len(failed)} succeeded, {len(failed)} failed", file=sys.stderr)
    if args.json:
        for result in results.values():
            print(result.model_dump_json(exclude_none=True))
    return EXIT_JOB_FAILED if failed else EXIT_OK


async def _wait_printing_partial(
    client: JobsClient, ids: list[str], timeout: float, as_json: bool, *, quiet: bool = False
) -> dict[str, Result]:
    """Wait; on timeout print what did arrive before the error is reported."""
    try:
        return await client.wait(ids, timeout)
    except WaitTimeoutError as exc:
        if exc.results and not quiet:
            _print_results(exc.results, as_json)
        raise


async def _result(args: argparse.Namespace, client: JobsClient) -> int:
    result = await client.get_result(args.id)
    if result is None:
        print(
            f"no result for job {args.id} yet (queued, running, or the id is wrong): "
            f"wait for it with `python -m shared wait {args.id}`",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    return _print_result(result, args.json)


async def _wait(args: argparse.Namespace, client: JobsClient) -> int:
    results = await _wait_printing_partial(client, args.ids, args.timeout, args.json)
    return _print_results(results, args.json)


async def _watch(args: argparse.Namespace, client: JobsClient) -> int:
    if args.max is not None and args.max < 1:
        raise UsageError("--max must be at least 1")
    seen = 0
    async for notice in client.notices(args.queue, max_notices=args.max, once=args.once, timeout=args.timeout):
        seen += 1
        if args.json:
            print(notice.model_dump_json(exclude_none=True), flush=True)
        else:
            code = f" {notice.error_code}" if notice.error_code else ""
            print(f"{notice.id} {notice.status}{code} {notice.result_container}/{notice.result_blob}", flush=True)
    if args.max is not None and seen < args.max and not args.once:
        print(f"timed out after {args.timeout:g} s with {seen} of {args.max} notice(s)", file=sys.stderr)
        return EXIT_TIMEOUT
    return EXIT_OK


class ProgressBar:
    """``[#####.....] 500/1000  50%  812 jobs/s  ETA 0:01`` on stderr.

    On a terminal it redraws in place at most ten times a second; otherwise (logs, CI) it prints
    a line at every tenth of the way, so the output stays short.
    """

    def __init__(self, total: int, stream: TextIO, label: str = "submitting") -> None:
        self.total = total
        self.stream = stream
        self.label = label
        self.tty = stream.isatty()
        self._last_draw = 0.0
        self._last_step = -1

    def update(self, progress: SubmitProgress) -> None:
        now = time.monotonic()
        finished = progress.done >= progress.total
        if self.tty:
            if finished or now - self._last_draw >= 0.1:
                self._last_draw = now
                self.stream.write("\r" + self.render(progress))
                self.stream.flush()
            return
        step = progress.done * 10 // max(progress.total, 1)
        if step != self._last_step:
            self._last_step = step
            self.stream.write(self.render(progress) + "\n")
            self.stream.flush()

    def render(self, progress: SubmitProgress) -> str:
        width = 30
        filled = width * progress.done // max(progress.total, 1)
        eta = progress.eta
        eta_text = "--:--" if eta is None else f"{int(eta) // 60}:{int(eta) % 60:02d}"
        return (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {progress.done}/{progress.total} "
            f"{100 * progress.done // max(progress.total, 1):3d}%  {progress.rate:.0f} jobs/s  ETA {eta_text}"
        )

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
