"""`make bench` at a tiny scale: every scenario's code path once, on the suite's local Azure.

Asserts that the report has every key and that the counts add up. It never asserts a time or a
rate: those are what the full bench measures, on a quiet machine. The first test runs figures 1-4 and 9;
the scale-out (figure 6, whose K = 1 run is figure 5 too), the pool and the outages (bench/quota/) each
get their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import SECTIONS
from bench.config import SMOKE
from bench.report import markdown, write_outputs
from bench.scenarios import BESIDE_OUTAGE, run_all
from emulators.stack.environment import REPO
from emulators.stack.services import LocalAzure

KEYS = {
    "meta": {"date", "scale", "machine", "duration_s", "section_seconds"},
    "throughput": {
        "latency_s",
        "host_json",
        "ideal_jobs_per_s",
        "async",
        "sync_baseline",
        "async_over_sync",
        "sync_cold_provider",
    },
    "cpu": {"latency_s", "managed_identity", "azure_cli", "profile_run", "profile"},
    "tokens": {"managed_identity", "azure_cli"},
    "cold_start": {"imports", "first_result"},
    "targets": {"throughput", "token_requests", "imports"},
    "batch_lane": {"jobs", "results", "model_api_calls", "batch_calls_by_kind", "tokens", "billed_batch_over_live"},
}
RUN_KEYS = {"jobs", "results", "succeeded", "failed", "poisoned", "jobs_per_s", "ratio_to_ideal", "mean_in_flight"}
ORIGINAL = ("throughput", "cpu_and_tokens", "cold_start", "batch_lane")
RATE_KEYS = {  # figure 5, from the scale-out's K = 1 run
    "run",
    "window_s",
    "limit_tokens_per_window",
    "tokens_charged_per_request",
    "demand_over_limit",
    "fraction_of_limit",
    "throttled_429",
    "failed_jobs",
    "requeued_jobs",
    "worker_settings",
    "jobs",
    "results",
}
# Every issue-13 run (one K of the scale-out, the pool, each outage run) reports these.
QUOTA_RUN_KEYS = {
    "jobs",
    "results",
    "succeeded",
    "failed",
    "poisoned",
    "missing",
    "failed_jobs",
    "failure_codes",
    "requeued_jobs",
    "requeued_fraction",
    "requeues_logged",
    "budget_fallbacks_logged",
    "drained",
    "errors_logged",
    "processes",
    "loadavg_1m_at_start",
    "machine_busy_fraction",
    "phase_s",
    "model_requests",
    "model_requests_per_job",
    "throttled_429",
    "throttled_per_job",
    "unavailable_503",
    "completions",
    "storage_requests_per_job",
    "storage",
}


@pytest.mark.slow(seconds=25)
@pytest.mark.timeout(300)  # CPU-bound: on a busy 2-core machine, beside other workers, it can take minutes
async def test_bench_smoke(stack: LocalAzure, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = await run_all(stack, SMOKE, out, tmp_path / "logs", ORIGINAL)
    write_outputs(report, out)
    assert report["meta"]["sections"] == list(ORIGINAL)

    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(report))
    for section, keys in KEYS.items():
        assert keys <= set(report[section]), (section, keys - set(report[section]))
    assert {"nproc", "python"} <= set(report["meta"]["machine"])

    t = report["throughput"]
    queues = json.loads((REPO / "host.json").read_text())["extensions"]["queues"]
    assert t["host_json"] == {
        "batchSize": queues["batchSize"],
        "newBatchThreshold": queues["newBatchThreshold"],
        "concurrency": queues["batchSize"] + queues["newBatchThreshold"],
    }
    for name in ("async", "sync_baseline"):
        run = t[name]
        assert set(run) >= RUN_KEYS, name
        assert run["results"] == run["succeeded"] == run["jobs"] == SMOKE.throughput_jobs, (name, run)
        assert run["failed"] == run["poisoned"] == 0, (name, run)
        assert run["model_requests"] == run["jobs"], (name, run)
        assert run["errors_logged"] == 0, (name, run)  # e.g. an unclosed credential's session at stop
    # One Azure OpenAI token per process: the async provider locks; the warmed sync one was fetched up front.
    assert t["async"]["token_requests"]["cognitive_services"] == 1
    assert t["sync_baseline"]["token_requests"]["cognitive_services"] == 1
    cold = t["sync_cold_provider"]
    assert cold["results"] == cold["jobs"]
    assert 1 <= cold["token_requests"]["cognitive_services"] <= cold["threads"]

    cpu = report["cpu"]
    for name in ("managed_identity", "azure_cli", "profile_run"):
        assert cpu[name]["results"] == cpu[name]["succeeded"] == cpu[name]["jobs"], (name, cpu[name])
        assert cpu[name]["cpu_s_per_job"] > 0
    assert 0 < len(cpu["profile"]["top_functions"]) <= 15
    assert cpu["profile"]["counts"]["jobs"] == SMOKE.profile_jobs
    assert "Top 15 functions" in (out / "profile.txt").read_text()

    tokens = report["tokens"]
    assert tokens["managed_identity"]["token_requests"]["cognitive_services"] == 1
    assert tokens["azure_cli"]["az_runs"] == 1

    imports = report["cold_start"]["imports"]
    assert set(imports["median_s"]) == {"function_app", "dependencies", "interpreter"}
    assert imports["ratio"] > 0
    assert report["cold_start"]["first_result"]["seconds_to_first_result"] > 0

    assert set(report["targets"]) == KEYS["targets"]
    assert all(isinstance(goal["met"], bool) for goal in report["targets"].values())
    table = markdown(report)
    assert table.count("\n| ") == 9  # header + 8 rows (figures 1-4 and 9)


# --- Issue 13: scale-out, pool, outages ------------------------------------------------------------


async def _run_one(
    section: str,
    stack: LocalAzure,
    tmp_path: Path,
    *,
    long_outage: bool = False,
    all_scales: bool = False,
    shared_budget: bool = False,
    long_outage_alone: bool = False,
    also: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Run one section; ``also``: the other figures it reports (the scale-out's K = 1 run is figure 5)."""
    out = tmp_path / "out"
    flags = {
        "long_outage": long_outage,
        "all_scales": all_scales,
        "shared_budget": shared_budget,
        "long_outage_alone": long_outage_alone,
    }
    report = await run_all(stack, SMOKE, out, tmp_path / "logs", [section], **flags)
    write_outputs(report, out)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(report))
    assert report["meta"]["sections"] == [section]
    assert {k: report["meta"][k] for k in flags} == flags
    assert set(report) == {"meta", section, "targets", *also}
    assert set(report["targets"]) == {section, *also}
    assert isinstance(report["targets"][section]["met"], bool)
    table = markdown(report)
    assert f"(only {section})" in table
    return report


def _consistent(run: dict[str, Any], *, faults: bool = False) -> None:
    """The counts of one run add up (none of them is a time or a rate)."""
    assert set(run) >= QUOTA_RUN_KEYS, QUOTA_RUN_KEYS - set(run)
    assert run["results"] + run["missing"] == run["jobs"] > 0, run
    assert run["succeeded"] + run["failed"] == run["results"], run
    assert run["failed_jobs"] == run["failed"] + run["poisoned"] + run["missing"], run
    assert sum(run["failure_codes"].values()) == run["failed"], run
    assert 0 <= run["requeued_jobs"] <= run["results"], run
    assert run["requeued_fraction"] == run["requeued_jobs"] / run["jobs"], run
    assert run["model_requests_per_job"] == run["model_requests"] / run["jobs"], run
    assert run["throttled_per_job"] == run["throttled_429"] / run["jobs"], run
    # Each request the emulator answered is a completion, a 429 or (an outage) a 503, and each success had one.
    assert run["model_requests"] == run["completions"] + run["throttled_429"] + run["unavailable_503"], run
    assert run["completions"] >= run["succeeded"], run
    if not faults:
        assert run["unavailable_503"] == 0, run
    assert run["drained"] and run["errors_logged"] == 0, run
    assert set(run["phase_s"]) == {"workers_listening", "results_read_workers_stopped"}, run  # reported, not judged
    _storage_counted(run)


def _storage_counted(run: dict[str, Any]) -> None:
    """Every worker process wrote its storage counts; each result is at least one request of the worker's own
    (its blob), and the host polled the queue (its requests are counted apart, never as the worker's)."""
    storage = run["storage"]
    assert storage["counted_processes"] == storage["processes"] == run["processes"], storage
    assert storage["worker_requests"] == sum(storage["worker_by_operation"].values()), storage
    assert storage["host_requests"] == sum(storage["host_by_operation"].values()), storage
    assert storage["worker_requests"] >= run["results"], storage
    assert storage["worker_by_operation"].get("blob PUT blob", 0) >= run["results"], storage
    assert storage["host_by_operation"].get("queue GET messages", 0) >= 1, storage  # the trigger's dequeues
    assert "queue GET messages" not in storage["worker_by_operation"], storage
    assert run["storage_requests_per_job"] == storage["worker_requests"] / run["jobs"], storage


def test_sections_listed_once() -> None:
    assert len(set(SECTIONS)) == len(SECTIONS)
    assert set(ORIGINAL) | {"scaleout", "pool", "outage", "responses"} == set(SECTIONS)


def _scaleout(report: dict[str, Any], ran: list[int]) -> None:
    """Figure 6's runs (those in ``ran``) add up, and figure 5 is its K = 1 run."""
    a = report["scaleout"]
    assert a["worker_settings"]["MODEL_ADMISSION_WAIT_SECONDS"] == str(SMOKE.admission_wait_s)
    assert (
        a["limit_tokens_per_window"] * 2 <= a["demand_tokens_per_window_per_process"] + a["tokens_charged_per_request"]
    )
    assert [run["processes"] for run in a["runs"]] == ran
    assert sorted(ran + a["not_run"]) == sorted(SMOKE.scaleout_processes)
    for run in a["runs"]:
        _consistent(run)
        assert run["jobs"] == SMOKE.scaleout_jobs
        assert run["failed_jobs"] == 0, run
        assert (
            run["ideal_drain_s"]
            == run["jobs"] * a["tokens_charged_per_request"] * a["window_s"] / a["limit_tokens_per_window"]
        )
        assert run["drain_over_ideal"] == run["drain_s"] / run["ideal_drain_s"]
        assert 0 < run["measured_requests"] <= run["succeeded"]
    judged = report["targets"]["scaleout"]["value"]
    assert set(judged) == {str(max(SMOKE.scaleout_processes))}  # no K >= 8 at smoke scale: the largest

    # Figure 5: the same run as K = 1, not a run of its own.
    rate, one = report["rate_limit"], a["runs"][0]
    assert set(rate) >= RATE_KEYS, RATE_KEYS - set(rate)
    assert rate["run"] == "scaleout K = 1" and one["processes"] == 1
    shared = ("jobs", "results", "failed_jobs", "requeued_jobs", "throttled_429", "fraction_of_limit")
    assert {k: rate[k] for k in shared} == {k: one[k] for k in shared}
    assert rate["limit_tokens_per_window"] == a["limit_tokens_per_window"]
    assert rate["limit_tokens_per_window"] >= 2 * rate["tokens_charged_per_request"]
    assert rate["results"] == rate["jobs"] > 0 and rate["failed_jobs"] == 0, rate
    assert rate["worker_settings"] == a["worker_settings"]

    table = markdown(report)
    # header, figure 5, a row per K (run or not); the quota table's header and a row per K run
    assert table.count("\n| ") == 2 + len(SMOKE.scaleout_processes) + 1 + len(ran)
    for k in ran:
        assert f"| scale-out K = {k} | " in table
    assert "| 5 | Under a token limit, one process" in table
    assert f"**K = 1** processes ({SMOKE.latency_ms:.0f} ms model; figure 5's run)" in table
    for k in a["not_run"]:
        assert f"| … K = {k} | not run: pass `--all-scales`" in table


@pytest.mark.slow(seconds=7)
async def test_bench_smoke_scaleout(stack: LocalAzure, tmp_path: Path) -> None:
    # As make bench runs it: the K that no target judges (and that is not figure 5) are left out, and say so.
    report = await _run_one("scaleout", stack, tmp_path, also=frozenset({"rate_limit"}))
    ran = [k for k in SMOKE.scaleout_processes if k not in SMOKE.scaleout_extra]
    assert report["scaleout"]["not_run"] == list(SMOKE.scaleout_extra) != []
    _scaleout(report, ran)


@pytest.mark.slow(seconds=7)
async def test_bench_smoke_scaleout_all_scales(stack: LocalAzure, tmp_path: Path) -> None:
    report = await _run_one("scaleout", stack, tmp_path, all_scales=True, also=frozenset({"rate_limit"}))
    assert report["scaleout"]["not_run"] == []
    _scaleout(report, list(SMOKE.scaleout_processes))
    assert "--all-scales" not in markdown(report)


@pytest.mark.slow(seconds=7)
async def test_bench_smoke_scaleout_shared_budget(stack: LocalAzure, tmp_path: Path) -> None:
    # --shared-budget: every worker books the deployment's tokens in the ledger blob, in the worker-only
    # container the bench creates as the infrastructure does (a missing one would have them fall back).
    report = await _run_one("scaleout", stack, tmp_path, shared_budget=True, also=frozenset({"rate_limit"}))
    _scaleout(report, [k for k in SMOKE.scaleout_processes if k not in SMOKE.scaleout_extra])
    assert report["scaleout"]["worker_settings"]["PACING_SHARED_BUDGET"] == "true"
    for run in report["scaleout"]["runs"]:
        assert run["budget_fallbacks_logged"] == 0, run
        # Each result is one blob written; the ledger's bookings are the writes beyond those.
        assert run["storage"]["worker_by_operation"]["blob PUT blob"] > run["results"], run["storage"]
    assert "(shipped defaults but PACING_SHARED_BUDGET): " in markdown(report)


async def test_bench_smoke_pool(stack: LocalAzure, tmp_path: Path) -> None:
    report = await _run_one("pool", stack, tmp_path)
    p = report["pool"]
    _consistent(p)
    for name, resource in p["by_resource"].items():
        assert resource["model_requests"] >= resource["completions"] >= p["served_by"].get(name, 0), (name, p)
    assert p["jobs"] == SMOKE.pool_jobs and p["failed_jobs"] == 0, p
    limits = p["limits_tokens_per_window"]
    assert set(limits) == set(p["by_resource"]) == {"primary", "secondary"}
    assert limits["primary"] + limits["secondary"] == p["sum_tokens_per_window"]
    assert limits["primary"] > limits["secondary"] >= 2 * p["tokens_charged_per_request"]
    assert [(e["name"], e["priority"]) for e in p["pool"]] == [("primary", 1), ("secondary", 2)]
    assert {e["endpoint"] for e in p["pool"]} == {r["endpoint"] for r in p["by_resource"].values()}
    assert len({e["endpoint"] for e in p["pool"]}) == 2  # two resources, two ports
    assert sum(p["served_by"].values()) == p["results"]
    assert p["fraction_of_sum"] >= 0
    assert markdown(report).count("\n| ") == 4  # header + 1 row; the quota table's header + 1 row
    assert p["drain_over_ideal"] == p["drain_s"] / p["ideal_drain_s"]


@pytest.mark.slow(seconds=15)
async def test_bench_smoke_outage(stack: LocalAzure, tmp_path: Path) -> None:
    report = await _run_one("outage", stack, tmp_path, long_outage=True, long_outage_alone=True)
    assert report["meta"]["long_outage"] is True
    o = report["outage"]
    assert o["worker_settings"]["MODEL_OUTAGE_TOLERANCE_SECONDS"] == str(SMOKE.outage_tolerance_s)
    assert "PACING_SHARED_BUDGET" not in o["worker_settings"]  # the shipped default: off
    calm, hit, pooled = o["without_outage"], o["only_deployment_down"], o["primary_down_with_secondary"]
    alone = o["only_deployment_down_long"]
    _consistent(calm)
    _consistent(hit, faults=True)
    _consistent(pooled, faults=True)
    _consistent(alone, faults=True)
    assert alone["unavailable_503"] > 0 and alone["outage"]["seconds"] == SMOKE.long_outage_s, alone
    assert pooled["by_resource"]["secondary"]["unavailable_503"] == 0, pooled
    assert calm["jobs"] == hit["jobs"] > 0  # the same arrivals with and without the outage
    assert "outage" not in calm
    assert hit["outage"]["seconds"] == SMOKE.outage_s
    assert pooled["outage"]["seconds"] == SMOKE.long_outage_s
    for run in (hit, pooled, alone):
        assert set(run["outage"]) == {
            "seconds",
            "after_first_send_s",
            "last_result_after_end_s",
            "throttled_429_in_minute_after_end",
            "throttled_per_job_in_minute_after_end",
        }, run
        assert 0 <= run["outage"]["throttled_429_in_minute_after_end"] <= run["throttled_429"], run
    for run in (calm, hit, pooled, alone):
        assert 0 <= run["job_s_p50"] <= run["job_s_p95"] <= run["job_s_max"], run
        # Arrivals at a rate: the ideal is the last arrival served at once (one model call after it).
        assert run["ideal_drain_s"] >= (run["jobs"] - 1) / run["arrival_jobs_per_s"] * 0.9, run
        assert run["drain_over_ideal"] == run["drain_s"] / run["ideal_drain_s"], run
    # Outages shorter than the host's own redelivery covers: nothing may be lost, with or without a pool.
    assert hit["failed_jobs"] == hit["poisoned"] == 0, hit
    assert pooled["failed_jobs"] == pooled["poisoned"] == 0, pooled
    assert alone["failed_jobs"] == alone["poisoned"] == 0, alone
    assert set(report["targets"]["outage"]["value"]) == {
        "only_deployment_down",
        "primary_down_with_secondary",
        "only_deployment_down_long",
    }
    assert sum(pooled["served_by"].values()) == pooled["results"]
    assert o["p95_over_without"] == hit["job_s_p95"] / calm["job_s_p95"]
    table = markdown(report)
    assert table.count("\n| ") == 4 + 5  # header + 3 rows; the quota table's header + 4 runs
    assert f"| only deployment down {SMOKE.outage_s:.0f} s | " in table
    assert f"| only deployment down {SMOKE.long_outage_s:.0f} s | " in table
    assert "not run" not in table
    # Without --long-outage-alone, its figure-8 row says so and the quota table has no row for it.
    without = markdown({**report, "outage": {**o, "only_deployment_down_long": None}})
    assert "| 8 | Only deployment down 3 s (no pool) | not run: pass `--long-outage-alone`" in without
    assert f"| only deployment down {SMOKE.long_outage_s:.0f} s | " not in without
    assert f"| primary down {SMOKE.long_outage_s:.0f} s | " in table
    assert "primary down with a healthy secondary" in report["targets"]["outage"]["target"]


@pytest.mark.slow(seconds=15)
async def test_bench_smoke_default_outage_with_the_pool_and_batch_lane_beside_it(
    stack: LocalAzure, tmp_path: Path
) -> None:
    # As make bench runs them: no long outage (its row says so, not figures), the pool then figure 9 once
    # figure 8 only waits.
    sections = ["pool", "outage", "batch_lane"]
    report = await run_all(stack, SMOKE, tmp_path / "out", tmp_path / "logs", sections)
    assert report["meta"]["long_outage"] is False
    assert set(report["meta"]["section_seconds"]) == set(sections)
    assert set(BESIDE_OUTAGE) == {"pool", "batch_lane"}
    _consistent(report["pool"])
    assert report["pool"]["failed_jobs"] == 0
    o, lane = report["outage"], report["batch_lane"]
    assert o["primary_down_with_secondary"] is None and o["only_deployment_down_long"] is None
    _consistent(o["without_outage"])
    _consistent(o["only_deployment_down"], faults=True)
    assert set(report["targets"]["outage"]["value"]) == {"only_deployment_down"}
    assert KEYS["batch_lane"] <= set(lane)
    assert lane["results"] == lane["jobs"] == lane["model_api_calls"]["live_lane"]
    table = markdown(report)
    # header, the pool, 3 outage rows (two say "not run"), the batch lane; quota header + 3 runs
    assert table.count("\n| ") == 6 + 4
    assert "| not run: pass `--long-outage` " in table
    assert "| not run: pass `--long-outage-alone` " in table


# --- Storage requests per job (bench.counted_host, bench.storage_ops): the pure parts -----------------------


def test_storage_requests_are_named_by_service_and_what_they_name() -> None:
    from bench.counted_host import operation

    base = "https://127.0.0.1:10001/devstoreaccount1"
    assert operation("queue", "GET", f"{base}/jobs/messages?numofmessages=4") == "queue GET messages"
    assert operation("queue", "DELETE", f"{base}/jobs/messages/abc?popreceipt=x") == "queue DELETE message"
    assert operation("queue", "PUT", f"{base}/jobs") == "queue PUT queue"
    assert operation("blob", "PUT", f"{base}/results/a/b.json") == "blob PUT blob"
    assert operation("blob", "GET", f"{base}/results?restype=container&comp=list") == "blob GET container?comp=list"
    assert operation("table", "POST", f"{base}/budget") == "table POST table"


def test_storage_hosts_come_from_identity_based_settings_and_connection_strings() -> None:
    from bench.counted_host import storage_hosts

    keyless = {
        "AzureWebJobsStorage__queueServiceUri": "https://127.0.0.1:10001/devstoreaccount1",
        "AzureWebJobsStorage__blobServiceUri": "https://127.0.0.1:10000/devstoreaccount1",
        "IDENTITY_ENDPOINT": "http://127.0.0.1:4000/msi/token",
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x;IngestionEndpoint=https://127.0.0.1:9/",
    }
    assert storage_hosts(keyless) == {"127.0.0.1:10001": "queue", "127.0.0.1:10000": "blob"}
    keyed = {
        "AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=k;"
        "BlobEndpoint=http://127.0.0.1:20000/a;QueueEndpoint=http://127.0.0.1:20001/a;"
    }
    assert storage_hosts(keyed) == {"127.0.0.1:20000": "blob", "127.0.0.1:20001": "queue"}


async def test_a_request_is_the_workers_when_app_code_made_it_even_from_a_task_it_started() -> None:
    import asyncio

    from bench.counted_host import StorageCounter, made_by_app

    counter = StorageCounter({"127.0.0.1:1": "queue"}, clock=lambda: 100.04)
    app: dict[str, Any] = {"__name__": "shared.fake", "made_by_app": made_by_app, "asyncio": asyncio}
    exec(  # noqa: S102  # a function whose module is the app's, as shared.* code is
        "async def in_app():\n    return made_by_app()\n"
        "async def starts_task():\n    return await asyncio.create_task(in_app())\n",
        app,
    )
    assert await app["in_app"]() is True
    assert await app["starts_task"]() is True
    assert made_by_app() is False  # the bench's (the host's) own code
    counter.record("GET", "https://127.0.0.1:1/acct/jobs/messages", by_app=False)
    counter.record("POST", "https://127.0.0.1:1/acct/jobs/messages", by_app=True)
    counter.record("GET", "http://127.0.0.1:2/msi/token", by_app=True)  # not storage: not counted
    assert counter.to_json() == [[100.0, "host", "queue GET messages", 1], [100.0, "worker", "queue POST messages", 1]]


def test_storage_summary_keeps_the_runs_window_and_says_which_processes_counted(tmp_path: Path) -> None:
    from bench.storage_ops import summary

    counted = tmp_path / "worker-0.json"
    counted.write_text(
        json.dumps(
            [
                [99.8, "worker", "blob PUT container", 1],  # start-up, before the first send
                [100.0, "worker", "blob PUT blob", 2],
                [100.0, "host", "queue GET messages", 3],
                [150.3, "worker", "blob GET blob", 4],
                [151.0, "host", "queue GET messages", 9],  # polling an empty queue after the drain
            ]
        )
    )
    found = summary([counted, tmp_path / "killed.json"], jobs=2, since=100.05, until=150.5)
    assert found["counted_processes"] == 1 and found["processes"] == 2
    assert found["worker_by_operation"] == {"blob PUT blob": 2, "blob GET blob": 4}
    assert found["host_by_operation"] == {"queue GET messages": 3}
    assert found["worker_requests_per_job"] == 3.0 and found["host_requests_per_job"] == 1.5
