"""Figures 1-4 of ``make bench`` and the run order (figures 5-8 are bench/quota/'s, 9 bench/batch_lane.py's).

Every figure is a ratio or a count taken within one run (both sides of a comparison in the same
run), because the machine is shared and absolute times are noise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import SECTIONS, harness, quota
from bench.batch_lane import BATCH_JOBS, batch_lane
from bench.config import Bench, Scale
from bench.harness import Worker, enqueue, fetch_results, job_body, producer_jobs, start_worker
from bench.responses import responses_figure
from bench.sync_baseline import thread_count
from emulators.stack.environment import REPO, child_environment
from emulators.stack.services import COGNITIVE, STORAGE, AzureCli, LocalAzure, unique_names
from emulators.stack.workers import wait_until

DEPENDENCIES = (
    "azure.functions",
    "azure.identity.aio",
    "azure.storage.blob.aio",
    "azure.storage.queue.aio",
    "openai",
    "pydantic",
)
LISTENING = harness.LISTENING
IDLE = {"<method 'poll' of 'select.epoll' objects>", "<method 'select' of 'select.epoll' objects>"}


def _tokens(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Token requests the managed-identity endpoint answered between two snapshots."""
    return {
        "cognitive_services": after.get(COGNITIVE, 0) - before.get(COGNITIVE, 0),
        "storage": after.get(STORAGE, 0) - before.get(STORAGE, 0),
    }


def _errors(worker: Worker) -> int:
    return harness.errors_logged(worker)


# --- 1. Throughput per process ------------------------------------------------------------------


async def throughput_run(
    b: Bench, label: str, *, module: str = "emulators.functions_host", slots: int
) -> dict[str, Any]:
    """Queue ``throughput_jobs`` first, start one worker, let it drain the queue.

    The steady-state window skips host.json's cap of completions at each end; ``slots`` is what
    can actually wait on the model at once (the cap, or the sync pool's threads).
    """
    n, latency = b.scale.throughput_jobs, b.scale.latency_ms / 1000
    names = unique_names(label)
    settings = b.stack.managed_identity_settings(names)
    b.stack.configure_model(latency_ms=b.scale.latency_ms)
    jobs = producer_jobs(settings, b.stack.issuer)
    try:
        await enqueue(jobs, [job_body(i) for i in range(n)])
        tokens_before = b.stack.identity_issued()
        worker = start_worker(settings, b.log_path(label), module=module)
        try:
            await harness.wait_for_log(worker, LISTENING, 60, label)
            meter = harness.CpuMeter({"worker": worker.pid, "azurite": b.stack.storage.process.pid})
            meter.begin()
            drained = await harness.wait_drained(jobs, worker.host, b.scale.timeout_s, b.scale.poll_s)
            cpu = meter.end(n)
        except BaseException:
            worker.stop()
            raise
        results, poison, _ = await asyncio.gather(fetch_results(jobs), jobs.poison_count(), worker.stopped())
    finally:
        await jobs.close()
    steady = harness.steady_state(results, skip=b.options.concurrency)
    ideal = slots / latency
    return {
        "jobs": n,
        "results": len(results),
        **harness.statuses(results),
        "poisoned": poison,
        "drained": drained,
        "errors_logged": _errors(worker),
        "slots": slots,
        "ideal_jobs_per_s": ideal,
        "jobs_per_s": steady["jobs_per_s"],
        "ratio_to_ideal": steady["jobs_per_s"] / ideal,
        "steady_window_s": steady["window_s"],
        "jobs_in_window": steady["jobs_in_window"],
        "mean_in_flight": steady["mean_in_flight"],
        "fill": steady["mean_in_flight"] / slots,
        "mean_job_s": steady["mean_job_s"],
        "latency_share": latency / steady["mean_job_s"] if steady["mean_job_s"] else 0.0,
        "mean_model_call_s": steady["mean_model_s"],
        "cpu": cpu,
        "model_requests": b.stack.model_stats()["requests"],
        "token_requests": _tokens(b.stack.identity_issued(), tokens_before),
    }


async def cold_sync_provider(b: Bench) -> dict[str, Any]:
    """A cold sync provider under the thread pool: token requests made by the first invocations."""
    names = unique_names("sync-cold")
    settings = b.stack.managed_identity_settings(names)
    b.stack.configure_model(latency_ms=b.scale.latency_ms)
    jobs = producer_jobs(settings, b.stack.issuer)
    try:
        await enqueue(jobs, [job_body(i) for i in range(b.scale.cold_sync_jobs)])
        tokens_before = b.stack.identity_issued()
        worker = start_worker(settings, b.log_path("sync-cold"), module="bench.sync_baseline", args=("--cold",))
        try:
            drained = await harness.wait_drained(jobs, worker.host, b.scale.timeout_s, b.scale.poll_s)
        except BaseException:
            worker.stop()
            raise
        results, _ = await asyncio.gather(fetch_results(jobs), worker.stopped())
    finally:
        await jobs.close()
    return {
        "jobs": b.scale.cold_sync_jobs,
        "results": len(results),
        "drained": drained,
        "threads": thread_count(),
        "token_requests": _tokens(b.stack.identity_issued(), tokens_before),
    }


async def throughput(b: Bench) -> dict[str, Any]:
    cap = b.options.concurrency
    async_run = await throughput_run(b, "async", slots=cap)
    sync_run = await throughput_run(b, "sync", module="bench.sync_baseline", slots=thread_count())
    cold = await cold_sync_provider(b)
    return {
        "latency_s": b.scale.latency_ms / 1000,
        "host_json": {
            "batchSize": b.options.batch_size,
            "newBatchThreshold": b.options.threshold,
            "concurrency": cap,
        },
        "ideal_jobs_per_s": cap / (b.scale.latency_ms / 1000),
        "async": async_run,
        "sync_baseline": sync_run,
        "async_over_sync": async_run["jobs_per_s"] / sync_run["jobs_per_s"] if sync_run["jobs_per_s"] else 0.0,
        "sync_cold_provider": cold,
    }


# --- 2 + 3. CPU per job and token requests -----------------------------------------------------------


async def loaded_run(
    b: Bench,
    label: str,
    settings: dict[str, str],
    n: int,
    *,
    module: str = "emulators.functions_host",
    args: tuple[str, ...] = (),
) -> tuple[dict[str, Any], Worker]:
    """Start a worker on an empty queue, note its CPU once idle, then send ``n`` jobs and drain.

    CPU per job is (CPU after - CPU before the jobs) / n: start-up and imports are excluded.
    """
    b.stack.configure_model(latency_ms=0)
    jobs = producer_jobs(settings, b.stack.issuer)
    try:
        await enqueue(jobs, [])
        tokens_before = b.stack.identity_issued()
        worker = start_worker(settings, b.log_path(label), module=module, args=args)
        try:
            await harness.wait_for_log(worker, LISTENING, 60, label)
            await asyncio.sleep(b.scale.poll_s)
            cpu_idle = worker.cpu_seconds()
            storage = b.stack.storage if settings.get("AzureWebJobsStorage") is None else b.stack.dev_storage
            meter = harness.CpuMeter({"azurite": storage.process.pid})
            meter.begin()
            sent_at = time.monotonic()
            await enqueue(jobs, [job_body(i) for i in range(n)])
            drained = await harness.wait_drained(jobs, worker.host, b.scale.timeout_s, b.scale.poll_s)
            elapsed = time.monotonic() - sent_at
            cpu_done = worker.cpu_seconds()
            others = meter.end(n)
        except BaseException:
            worker.stop()
            raise
        # Counts only: the statuses from one listing, not every document downloaded.
        results, poison, _ = await asyncio.gather(harness.stored_statuses(jobs), jobs.poison_count(), worker.stopped())
    finally:
        await jobs.close()
    return {
        "jobs": n,
        "results": len(results),
        **harness.statuses(results),
        "poisoned": poison,
        "drained": drained,
        "errors_logged": _errors(worker),
        "startup_cpu_s": cpu_idle,
        "cpu_s": cpu_done - cpu_idle,
        "cpu_s_per_job": (cpu_done - cpu_idle) / n,
        "cpu_utilisation": (cpu_done - cpu_idle) / elapsed if elapsed else 0.0,
        "elsewhere": others,  # Azurite, this process (emulators + the producer), the machine
        "model_requests": b.stack.model_stats()["requests"],
        "token_requests": _tokens(b.stack.identity_issued(), tokens_before),
    }, worker


def _package(filename: str, function: str) -> str:
    """Group a profile entry by who owns the code: a package, a stdlib module, or this repo's folder."""
    if filename == "~":  # C code: "<method 'poll' of 'select.epoll' objects>" / "<built-in method x.y>"
        if function.startswith("<method '") and " of '" in function:
            name, owner = function.removeprefix("<method '").split("' of '", 1)
            return f"C: {owner.split(chr(39))[0]}.{name}"
        return "C: " + function.removeprefix("<built-in method ").removesuffix(">")
    if "site-packages/" in filename:
        parts = filename.split("site-packages/", 1)[1].split("/")
        depth = 2 if parts[0] == "azure" and len(parts) > 2 else 1
        return ".".join(p.removesuffix(".py") for p in parts[:depth])
    if filename.startswith(str(REPO)):
        return "repo: " + Path(filename).relative_to(REPO).parts[0].removesuffix(".py")
    if "/lib/python3" in filename:
        rest = filename.split("/lib/python3", 1)[1].split("/", 1)[1]
        return "stdlib: " + rest.split("/")[0].removesuffix(".py")
    return filename


def _calls(entries: dict[Any, Any], file_suffix: str, function: str) -> int:
    return sum(v[1] for (f, _, fn), v in entries.items() if f.endswith(file_suffix) and fn == function)


def _calls_from(entries: dict[Any, Any], file_suffix: str, function: str, caller_suffix: str) -> int:
    total = 0
    for (f, _, fn), value in entries.items():
        if f.endswith(file_suffix) and fn == function:
            total += sum(c[1] for (cf, _, _), c in value[4].items() if cf.endswith(caller_suffix))
    return total


def profile_counts(entries: dict[Any, Any], jobs: int) -> dict[str, Any]:
    """Per-job counts that explain costs: TLS handshakes and thread-pool hand-offs (call counts are exact)."""
    handshakes = _calls(entries, "asyncio/sslproto.py", "_start_handshake")
    submits = _calls(entries, "concurrent/futures/thread.py", "submit")
    # What runs in the pool is not profiled (other threads); who handed it over is.
    netrc = _calls_from(entries, "asyncio/base_events.py", "run_in_executor", "aiohttp/client.py")
    proxy = _calls_from(entries, "asyncio/threads.py", "to_thread", "aiohttp/client.py")
    return {
        "jobs": jobs,
        "tls_handshakes": handshakes,
        "tls_handshakes_per_job": handshakes / jobs,
        "thread_pool_submits": submits,
        "thread_pool_submits_per_job": submits / jobs,
        "aiohttp_netrc_lookups": netrc,
        "aiohttp_env_proxy_lookups": proxy,
    }


def summarise_profile(profile: Path, text_out: Path, jobs: int, top: int = 15) -> dict[str, Any]:
    stats = pstats.Stats(str(profile))
    entries = stats.stats  # type: ignore[attr-defined]
    counts = profile_counts(entries, jobs)
    idle = sum(v[2] for (f, _, fn), v in entries.items() if f == "~" and fn in IDLE)
    busy = {k: v for k, v in entries.items() if not (k[0] == "~" and k[2] in IDLE)}
    total = sum(tt for (_, _, tt, _, _) in busy.values()) or 1e-9
    rows = sorted(busy.items(), key=lambda kv: kv[1][2], reverse=True)
    groups: dict[str, float] = defaultdict(float)
    for (filename, _, function), (_, _, tt, _, _) in busy.items():
        groups[_package(filename, function)] += tt
    top_rows = []
    for (filename, line, function), (_, ncalls, tt, ct, _) in rows[:top]:
        where = f"{Path(filename).name}:{line}" if filename != "~" else "built-in"
        top_rows.append(
            {
                "function": function,
                "where": where,
                "owner": _package(filename, function),
                "calls": ncalls,
                "own_s": tt,
                "share": tt / total,
                "cumulative_s": ct,
            }
        )
    top_groups = sorted(groups.items(), key=lambda kv: kv[1], reverse=True)[:12]
    lines = [
        f"Profile of the local queue host running function_app.py over {jobs} jobs at 0 ms model latency",
        "(cProfile on the event-loop thread, switched on after the imports; bench/profiled_host.py).",
        f"Event-loop thread: {total:.2f} s busy, {idle:.2f} s waiting for I/O in select.epoll.poll (left out below).",
        f"Busy time per job: {total / jobs * 1000:.1f} ms (cProfile's own overhead included: compare with the",
        "unprofiled CPU per job in results.json). Own time = in the function itself, not in what it calls.",
        "",
        f"Top {top} functions by own time:",
        f"{'own s':>8} {'share':>6} {'calls':>9}  function (where) [owner]",
    ]
    for r in top_rows:
        lines.append(
            f"{r['own_s']:8.3f} {r['share']:6.1%} {r['calls']:9d}  {r['function']} ({r['where']}) [{r['owner']}]"
        )
    lines += ["", "Own time by owner (package / stdlib module / repo folder / C function):"]
    for name, tt in top_groups:
        lines.append(f"{tt:8.3f} {tt / total:6.1%}  {name}")
    repo = {k.removeprefix("repo: "): v for k, v in groups.items() if k.startswith("repo: ")}
    lines.append(
        f"This repo's own code: {sum(repo.values()) / total:.1%} ("
        + ", ".join(f"{k} {v / total:.1%}" for k, v in sorted(repo.items(), key=lambda kv: -kv[1]))
        + ")."
    )
    lines += [
        "",
        f"Counts for {jobs} jobs (exact call counts):",
        f"  TLS handshakes: {counts['tls_handshakes']} ({counts['tls_handshakes_per_job']:.2f} per job)",
        f"  thread-pool hand-offs: {counts['thread_pool_submits']}"
        f" ({counts['thread_pool_submits_per_job']:.1f} per job;"
        f" aiohttp ~/.netrc look-ups {counts['aiohttp_netrc_lookups']}, proxy-variable look-ups"
        f" {counts['aiohttp_env_proxy_lookups']})",
        "",
        "The hand-offs run in the asyncio default executor's threads, which cProfile does not see: their CPU",
        "is in the process's CPU per job but not in the table above.",
    ]
    text_out.write_text("\n".join(lines) + "\n")
    return {
        "counts": counts,
        "busy_s": total,
        "idle_s": idle,
        "top_functions": top_rows,
        "by_owner": [{"owner": k, "own_s": v, "share": v / total} for k, v in top_groups],
        "repo_share": {k.removeprefix("repo: "): v / total for k, v in groups.items() if k.startswith("repo: ")},
    }


async def cpu_and_tokens(b: Bench) -> dict[str, Any]:
    # Managed identity (as in Azure): CPU per job and token requests, one run.
    mi_settings = b.stack.managed_identity_settings(unique_names("cpu-mi"))
    mi, _ = await loaded_run(b, "cpu-mi", mi_settings, b.scale.cpu_jobs)
    mi_tokens = mi["token_requests"]
    # The developer's az login: token requests are az runs.
    cli = AzureCli.sign_in(b.logs / "az-config")
    az_settings = b.stack.azure_cli_settings(unique_names("cpu-az"), cli)
    az, _ = await loaded_run(b, "cpu-az", az_settings, b.scale.az_jobs)
    az_runs = cli.invocations()
    # The profile: a separate run (cProfile slows the process down).
    profile_path = b.logs / "host.prof"
    pr_settings = b.stack.managed_identity_settings(unique_names("profile"))
    prof, _ = await loaded_run(
        b,
        "profile",
        pr_settings,
        b.scale.profile_jobs,
        module="bench.profiled_host",
        args=("--profile-out", str(profile_path)),
    )
    profile = summarise_profile(profile_path, b.out_dir / "profile.txt", prof["jobs"])
    return {
        "cpu": {"latency_s": 0.0, "managed_identity": mi, "azure_cli": az, "profile_run": prof, "profile": profile},
        "tokens": {
            "managed_identity": {
                "jobs": mi["jobs"],
                "processes": 1,
                "token_requests": mi_tokens,
                "cognitive_per_1000_jobs": mi_tokens["cognitive_services"] * 1000 / mi["jobs"],
                "storage_per_1000_jobs": mi_tokens["storage"] * 1000 / mi["jobs"],
            },
            "azure_cli": {
                "jobs": az["jobs"],
                "processes": 1,
                "az_runs": az_runs,
                "az_runs_per_1000_jobs": az_runs * 1000 / az["jobs"],
            },
        },
    }


# --- 4. Cold start ----------------------------------------------------------------------------------


def _import_seconds(code: str, env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True)
    return time.perf_counter() - began


def _importtime(code: str, env: dict[str, str]) -> dict[str, tuple[int, int]]:
    """module -> (self microseconds, cumulative microseconds) from ``python -X importtime``."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], cwd=REPO, env=env, check=True, capture_output=True, text=True
    )
    found: dict[str, tuple[int, int]] = {}
    for line in run.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            own, cumulative, name = line.removeprefix("import time:").split("|")
            found[name.strip()] = (int(own), int(cumulative))
    return found


def import_times(b: Bench) -> dict[str, Any]:
    env = child_environment({}, guarded=False)
    codes = {
        "function_app": "import function_app",
        "dependencies": "import " + ", ".join(DEPENDENCIES),
        "interpreter": "pass",
    }
    times: dict[str, list[float]] = {k: [] for k in codes}
    order = list(codes)
    for i in range(b.scale.import_runs):  # interleaved, the order rotating each round
        for key in order[i % len(order) :] + order[: i % len(order)]:
            times[key].append(_import_seconds(codes[key], env))
    med = {k: statistics.median(v) for k, v in times.items()}
    # The breakdown only names modules and their share within the app's own run: both at once is fine.
    with ThreadPoolExecutor(2) as pool:
        app_future = pool.submit(_importtime, codes["function_app"], env)
        deps_future = pool.submit(_importtime, codes["dependencies"], env)
        app_only, deps_only = app_future.result(), deps_future.result()
    added = {m: v for m, v in app_only.items() if m not in deps_only}
    added_self_us = sum(own for own, _ in added.values())
    app_total_us = sum(own for own, _ in app_only.values())
    heaviest = sorted(added.items(), key=lambda kv: kv[1][0], reverse=True)[:10]
    return {
        "runs_each": b.scale.import_runs,
        "median_s": med,
        "ratio": med["function_app"] / med["dependencies"],
        "ratio_net_of_interpreter": (med["function_app"] - med["interpreter"])
        / max(med["dependencies"] - med["interpreter"], 1e-9),
        "importtime_added_share": added_self_us / app_total_us if app_total_us else 0.0,
        "importtime_added_modules": len(added),
        "importtime_heaviest_added": [{"module": m, "self_ms": own / 1000} for m, (own, _) in heaviest],
    }


async def first_result(b: Bench) -> dict[str, Any]:
    """Host subprocess start -> first result blob, with one job waiting and no model latency."""
    names = unique_names("first")
    settings = b.stack.managed_identity_settings(names)
    b.stack.configure_model(latency_ms=0)
    jobs = producer_jobs(settings, b.stack.issuer)
    body = job_body(0)
    try:
        await enqueue(jobs, [body])
        worker = start_worker(settings, b.log_path("first"))
        try:
            result = await wait_until(
                lambda: jobs.result(body["id"]), what="the first result", host=worker.host, timeout=60, interval=0.05
            )
            seen_at = time.time()
        finally:
            worker.stop()
    finally:
        await jobs.close()
    listening = harness.log_time(worker.host.log(), LISTENING)
    finished = harness.finished_at(result)
    return {
        "seconds_to_first_result": seen_at - worker.spawned_at,
        "spawn_to_listening_s": (listening - worker.spawned_at) if listening else None,
        "listening_to_result_written_s": (finished - listening) if listening else None,
        "model_latency_s": 0.0,
    }


async def cold_start(b: Bench) -> dict[str, Any]:
    imports = await asyncio.to_thread(import_times, b)
    return {"imports": imports, "first_result": await first_result(b)}


# --- Everything ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return {
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": sys.platform,
        "cpu_model": model,
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with the figure it is judged on and whether this run met it (for the sections run)."""
    goals: dict[str, dict[str, Any]] = {}
    if "throughput" in report:
        ratio = report["throughput"]["async"]["ratio_to_ideal"]
        goals["throughput"] = {
            "target": "async jobs/s >= 0.9 x (batchSize + newBatchThreshold) / latency",
            "value": ratio,
            "met": ratio >= 0.9,
        }
    if "tokens" in report:
        mi_cog = report["tokens"]["managed_identity"]["token_requests"]["cognitive_services"]
        az_runs = report["tokens"]["azure_cli"]["az_runs"]
        goals["token_requests"] = {
            "target": "1 Azure OpenAI token request per process per token lifetime (MI and az)",
            "value": {"managed_identity": mi_cog, "azure_cli": az_runs},
            "met": mi_cog == 1 and az_runs == 1,
        }
    if "cold_start" in report:
        ratio = report["cold_start"]["imports"]["ratio"]
        goals["imports"] = {
            "target": "import function_app <= 1.10 x import of its dependencies",
            "value": ratio,
            "met": ratio <= 1.10,
        }
    return {**goals, **quota.targets(report)}


# Sections that run, one after the other, once figure 8 only waits out its re-enqueue delays (about 100 s
# at full scale, the machine otherwise idle): the pool, whose token limit holds it back, not the machine,
# then figure 9, counts only. Neither touches figure 8's resources, and figure 8's remaining figures (its
# failed and poisoned jobs, p95 and recovery tail) are seconds of re-enqueue delay.
BESIDE_OUTAGE = ("pool", "batch_lane")


async def run_all(
    stack: LocalAzure,
    scale: Scale,
    out_dir: Path,
    logs: Path,
    only: Sequence[str] | None = None,
    *,
    long_outage: bool = False,
    all_scales: bool = False,
    shared_budget: bool = False,
    long_outage_alone: bool = False,
) -> dict[str, Any]:
    """Every section of SECTIONS in order, or those in ``only``; the outage section's long run if ``long_outage``
    (and the only deployment's if ``long_outage_alone``), every K of the scale-out if ``all_scales``, the
    quota runs' workers on one shared budget if ``shared_budget``. With the outage, BESIDE_OUTAGE's sections
    run during its wait."""
    began = time.monotonic()
    b = Bench(stack, scale, out_dir, logs, long_outage, all_scales, shared_budget, long_outage_alone)
    chosen = [name for name in SECTIONS if only is None or name in only]
    report: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d"),
            "scale": asdict(scale),
            "machine": machine(),
            "sections": chosen,
            "long_outage": long_outage,
            "all_scales": all_scales,
            "shared_budget": shared_budget,
            "long_outage_alone": long_outage_alone,
        }
    }
    sections: dict[str, float] = {}

    async def timed(name: str, work: Awaitable[dict[str, Any]], *, keys: bool = False) -> None:
        """Run one section into ``report[name]`` (or, with ``keys``, into the report keys it returns)."""
        mark = time.monotonic()
        found = await work
        report.update(found if keys else {name: found})
        sections[name] = round(time.monotonic() - mark, 1)
        print(f"bench: {name} done in {sections[name]:.0f} s", flush=True)

    steps: dict[str, Callable[[], Awaitable[None]]] = {
        "throughput": lambda: timed("throughput", throughput(b)),
        "cpu_and_tokens": lambda: timed("cpu_and_tokens", cpu_and_tokens(b), keys=True),  # figures 2 and 3
        "cold_start": lambda: timed("cold_start", cold_start(b)),
        "scaleout": lambda: timed("scaleout", quota.scaleout(b), keys=True),  # figures 6 and 5 (its K = 1)
        "pool": lambda: timed("pool", quota.pool(b)),
        "outage": lambda: timed("outage", quota.outage(b)),
        "batch_lane": lambda: timed("batch_lane", batch_lane(stack, BATCH_JOBS[scale.name])),
        "responses": lambda: timed("responses", responses_figure(stack, scale.name, logs)),  # figure 10
    }
    beside = [name for name in chosen if name in BESIDE_OUTAGE] if "outage" in chosen else []
    if beside:
        quiet = asyncio.Event()

        async def after_quiet() -> None:
            await quiet.wait()
            for name in beside:
                await steps[name]()

        async def outage_and_beside() -> None:
            await asyncio.gather(timed("outage", quota.outage(b, quiet)), after_quiet())

        steps["outage"] = outage_and_beside
    for name in [name for name in chosen if name not in beside]:
        await steps[name]()
    report["targets"] = targets(report)
    report["meta"]["duration_s"] = time.monotonic() - began
    report["meta"]["section_seconds"] = sections
    return report
