"""results.json and the markdown table (results.md) the README quotes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.batch_lane import describe as describe_batch_lane


def _met(flag: bool) -> str:
    return "met" if flag else "**missed**"


def markdown(report: dict[str, Any]) -> str:
    meta, t, cpu, tok = report["meta"], report["throughput"], report["cpu"], report["tokens"]
    cold, rate, goals = report["cold_start"], report["rate_limit"], report["targets"]
    m = meta["machine"]
    a, s, c = t["async"], t["sync_baseline"], t["sync_cold_provider"]
    hj = t["host_json"]
    mi, az = cpu["managed_identity"], cpu["azure_cli"]
    counts = cpu["profile"]["counts"]
    imp, first = cold["imports"], cold["first_result"]
    mi_tok = tok["managed_identity"]
    first_detail = (
        f" ({first['spawn_to_listening_s']:.2f} s to listening)" if first["spawn_to_listening_s"] is not None else ""
    )
    rows = [
        (
            "1",
            f"Throughput per process, async worker ({t['latency_s'] * 1000:.0f} ms model, "
            f"cap {hj['batchSize']} + {hj['newBatchThreshold']} = {hj['concurrency']})",
            f"{a['jobs_per_s']:.1f} jobs/s = **{a['ratio_to_ideal']:.2f}** of ideal {t['ideal_jobs_per_s']:.0f}/s; "
            f"{a['mean_in_flight']:.1f} of {hj['concurrency']} in flight (fill {a['fill']:.2f}), "
            f"job time = {a['latency_share']:.2f} model latency",
            ">= 0.9",
            _met(goals["throughput"]["met"]),
        ),
        (
            "1",
            f"… sync baseline ({s['slots']} threads, same jobs, same run)",
            f"{s['jobs_per_s']:.1f} jobs/s = {s['ratio_to_ideal']:.2f} of its {s['ideal_jobs_per_s']:.0f}/s, "
            f"{s['jobs_per_s'] / t['ideal_jobs_per_s']:.2f} of {t['ideal_jobs_per_s']:.0f}/s; "
            f"async does **{t['async_over_sync']:.1f}x**",
            "",
            "",
        ),
        (
            "1",
            f"… cold sync token provider under the pool ({c['threads']} threads)",
            f"{c['token_requests']['cognitive_services']} Azure OpenAI token requests "
            f"(warm: {s['token_requests']['cognitive_services']}; async: {a['token_requests']['cognitive_services']})",
            "",
            "",
        ),
        (
            "2",
            "Worker CPU per job (0 ms model, managed identity + keyless HTTPS storage)",
            f"{mi['cpu_s_per_job'] * 1000:.1f} ms CPU/job (az + keyed storage: {az['cpu_s_per_job'] * 1000:.1f} ms); "
            f"Azurite {mi['elsewhere']['azurite_cpu_ms_per_job']:.1f} ms/job; start-up {mi['startup_cpu_s']:.2f} s; "
            f"profile: {counts['tls_handshakes_per_job']:.2f} TLS handshakes and "
            f"{counts['thread_pool_submits_per_job']:.1f} thread hand-offs per job (profile.txt)",
            "",
            "",
        ),
        (
            "3",
            f"Token requests per 1,000 jobs (one process, {mi_tok['jobs']} / {tok['azure_cli']['jobs']} jobs)",
            f"managed identity: **{mi_tok['token_requests']['cognitive_services']}** Azure OpenAI "
            f"(+{mi_tok['token_requests']['storage']} storage); az: **{tok['azure_cli']['az_runs']}** az run(s)",
            "1 per process",
            _met(goals["token_requests"]["met"]),
        ),
        (
            "4",
            f"Import `function_app` vs its dependencies (median of {imp['runs_each']}, interleaved)",
            f"**{imp['ratio']:.3f}** ({imp['median_s']['function_app']:.2f} s vs "
            f"{imp['median_s']['dependencies']:.2f} s; net of interpreter {imp['ratio_net_of_interpreter']:.3f})",
            "<= 1.10",
            _met(goals["imports"]["met"]),
        ),
        (
            "4",
            "Host process start → first result blob (1 job queued, 0 ms model)",
            f"{first['seconds_to_first_result']:.2f} s{first_detail}",
            "",
            "",
        ),
        (
            "5",
            f"Under a token limit ({rate['limit_tokens_per_window']} tokens / {rate['window_s']:.0f} s window, "
            f"demand {rate['demand_over_limit']:.1f}x)",
            f"**{rate['fraction_of_limit']:.2f}** of the limit; {rate['throttled_429']} 429s; "
            f"**{rate['failed_jobs']}** failed of {rate['jobs']}; {rate['requeued_jobs']} re-enqueued",
            ">= 0.9, 0 failed",
            _met(goals["rate_limit"]["met"]),
        ),
    ]
    if "batch_lane" in report:  # runs before it had the batch lane have no such section
        lane = report["batch_lane"]
        rows.append(
            (
                "6",
                f"Batch lane, {lane['jobs']:,} jobs vs the same {lane['jobs']:,} live (batch done in "
                f"{lane['processing_s']:g} s, collected every {lane['collect_every_s']:g} s)",
                describe_batch_lane(lane),
                "",
                "",
            )
        )
    settings = ", ".join(f"{k}={v}" for k, v in rate["worker_settings"].items())
    head = (
        f"Benchmark run {meta['date']} on {m['nproc']} CPUs ({m['cpu_model'] or 'unknown CPU'}), "
        f"Python {m['python']}, scale `{meta['scale']['name']}`, load average at start "
        f"{m['loadavg_at_start'][0]}; took {meta['duration_s']:.0f} s. "
        "Every figure is a ratio or count from this one run.\n"
    )
    table = ["| # | figure | result | target | |", "|---|---|---|---|---|"]
    table += [f"| {n} | {fig} | {res} | {tgt} | {met} |" for n, fig, res, tgt, met in rows]
    foot = f"\nRate-limit run worker settings: {settings}.\n"
    return head + "\n" + "\n".join(table) + "\n" + foot


def write_outputs(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    (out_dir / "results.md").write_text(markdown(report))
