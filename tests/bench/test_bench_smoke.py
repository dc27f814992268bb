"""`make bench` at a tiny scale: every scenario's code path once, on the suite's local Azure.

Asserts that the report has every key and that the counts add up. It never asserts a time or a
rate: those are what the full bench measures, on a quiet machine.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.report import markdown, write_outputs
from bench.scenarios import SMOKE, run_all
from emulators.azurite import Azurite
from emulators.stack.environment import REPO
from emulators.stack.services import IdentityEndpoint, LocalAzure, OpenAIEmulator
from emulators.tokens import TokenIssuer

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
    "rate_limit": {
        "window_s",
        "limit_tokens_per_window",
        "fraction_of_limit",
        "throttled_429",
        "failed_jobs",
        "requeued_jobs",
        "worker_settings",
        "jobs",
        "results",
    },
    "targets": {"throughput", "token_requests", "imports", "rate_limit"},
    "batch_lane": {"jobs", "results", "model_api_calls", "batch_calls_by_kind", "tokens", "billed_batch_over_live"},
}
RUN_KEYS = {"jobs", "results", "succeeded", "failed", "poisoned", "jobs_per_s", "ratio_to_ideal", "mean_in_flight"}


async def test_bench_smoke(
    issuer: TokenIssuer,
    identity_endpoint: IdentityEndpoint,
    aoai: OpenAIEmulator,
    azurite_keyless: Azurite,
    azurite: Azurite,
    tmp_path: Path,
) -> None:
    stack = LocalAzure(issuer, identity_endpoint, aoai, azurite_keyless, azurite, tmp_path)
    out = tmp_path / "out"
    report = await run_all(stack, SMOKE, out, tmp_path / "logs")
    write_outputs(report, out)

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

    rate = report["rate_limit"]
    assert rate["results"] == rate["jobs"] > 0
    assert rate["failed_jobs"] == 0
    assert rate["limit_tokens_per_window"] >= 2 * rate["tokens_charged_per_request"]

    assert set(report["targets"]) == KEYS["targets"]
    assert all(isinstance(goal["met"], bool) for goal in report["targets"].values())
    table = markdown(report)
    assert table.count("\n| ") == 10  # header + 9 figures
