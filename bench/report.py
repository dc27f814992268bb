"""results.json and the markdown table (results.md) docs/bench.md quotes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import SECTIONS, quota
from bench.batch_lane import describe as describe_batch_lane
from bench.responses import rows as responses_rows


def _met(flag: bool) -> str:
    return "met" if flag else "**missed**"


Row = tuple[str, str, str, str, str]


def _throughput_rows(report: dict[str, Any]) -> list[Row]:
    t = report["throughput"]
    a, s, c = t["async"], t["sync_baseline"], t["sync_cold_provider"]
    hj = t["host_json"]
    return [
        (
            "1",
            f"Throughput per process, async worker ({t['latency_s'] * 1000:.0f} ms model, "
            f"cap {hj['batchSize']} + {hj['newBatchThreshold']} = {hj['concurrency']})",
            f"{a['jobs_per_s']:.1f} jobs/s = **{a['ratio_to_ideal']:.2f}** of ideal {t['ideal_jobs_per_s']:.0f}/s; "
            f"{a['mean_in_flight']:.1f} of {hj['concurrency']} in flight (fill {a['fill']:.2f}), "
            f"job time = {a['latency_share']:.2f} model latency",
            ">= 0.9",
            _met(report["targets"]["throughput"]["met"]),
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
    ]


def _cpu_rows(report: dict[str, Any]) -> list[Row]:
    cpu, tok = report["cpu"], report["tokens"]
    mi, az = cpu["managed_identity"], cpu["azure_cli"]
    counts = cpu["profile"]["counts"]
    mi_tok = tok["managed_identity"]
    return [
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
            _met(report["targets"]["token_requests"]["met"]),
        ),
    ]


def _cold_rows(report: dict[str, Any]) -> list[Row]:
    imp, first = report["cold_start"]["imports"], report["cold_start"]["first_result"]
    first_detail = (
        f" ({first['spawn_to_listening_s']:.2f} s to listening)" if first["spawn_to_listening_s"] is not None else ""
    )
    return [
        (
            "4",
            f"Import `function_app` vs its dependencies (median of {imp['runs_each']}, interleaved)",
            f"**{imp['ratio']:.3f}** ({imp['median_s']['function_app']:.2f} s vs "
            f"{imp['median_s']['dependencies']:.2f} s; net of interpreter {imp['ratio_net_of_interpreter']:.3f})",
            "<= 1.10",
            _met(report["targets"]["imports"]["met"]),
        ),
        (
            "4",
            "Host process start → first result blob (1 job queued, 0 ms model)",
            f"{first['seconds_to_first_result']:.2f} s{first_detail}",
            "",
            "",
        ),
    ]


def _rate_rows(report: dict[str, Any]) -> list[Row]:
    rate = report["rate_limit"]
    return [
        (
            "5",
            f"Under a token limit, one process ({rate['limit_tokens_per_window']} tokens / {rate['window_s']:.0f} s "
            f"window, demand {rate['demand_over_limit']:.1f}x; figure 6's K = 1 run)",
            f"**{rate['fraction_of_limit']:.2f}** of the limit; {rate['throttled_429']} 429s; "
            f"**{rate['failed_jobs']}** failed of {rate['jobs']}; {rate['requeued_jobs']} re-enqueued",
            ">= 0.9, 0 failed",
            _met(report["targets"]["rate_limit"]["met"]),
        )
    ]


ALL_SCALES = "not run: pass `--all-scales` (`make bench BENCH_ARGS=--all-scales`)"


def _scaleout_rows(report: dict[str, Any]) -> list[Row]:
    a = report["scaleout"]
    judged = set(report["targets"]["scaleout"]["value"])
    runs: dict[int, dict[str, Any] | None] = {run["processes"]: run for run in a["runs"]}
    runs.update({k: None for k in a.get("not_run", [])})
    rows: list[Row] = []
    for i, k in enumerate(sorted(runs)):
        run = runs[k]
        also = "figure 5's run" if k == 1 and "rate_limit" in report else ""
        figure = (
            f"Scale-out, **K = {k}** processes ({a['latency_s'] * 1000:.0f} ms model{'; ' + also if also else ''}) "
            f"drain {a['jobs']} jobs under one limit of {a['limit_tokens_per_window']} tokens / {a['window_s']:.0f} s "
            "(half one process's demand)"
            if i == 0
            else f"… K = {k}{f' ({also})' if also else ''}"
        )
        if run is None:
            rows.append(("6", figure, ALL_SCALES, "", ""))
            continue
        result = (
            f"**{run['fraction_of_limit']:.2f}** of the limit; **{run['throttled_per_job']:.2f}** 429s/job; "
            f"{run['model_requests_per_job']:.2f} requests/job; {run['requeued_jobs']} re-enqueued "
            f"(**{run['requeued_fraction']:.1%}**); drain **{run['drain_over_ideal']:.2f}** x ideal "
            f"({run['drain_s']:.0f} s vs {run['ideal_drain_s']:.0f} s); **{run['failed_jobs']}** failed; "
            f"load {run['loadavg_1m_at_start']}"
        )
        met = _met(quota.scaleout_meets(run)) if str(k) in judged else ""
        target = ">= 0.95, <= 0.1, <= 1 %, <= 1.1x, 0" if str(k) in judged else ""
        rows.append(("6", figure, result, target, met))
    return rows


def _pool_rows(report: dict[str, Any]) -> list[Row]:
    p = report["pool"]
    lim = p["limits_tokens_per_window"]
    shares = ", ".join(f"{name} {r['completions']}" for name, r in p["by_resource"].items())
    return [
        (
            "7",
            f"Pool of two resources (L1 = {lim['primary']} priority 1, L2 = {lim['secondary']} priority 2, "
            f"tokens / {p['window_s']:.0f} s), {p['jobs']} jobs",
            f"**{p['fraction_of_sum']:.2f}** of L1 + L2; answered by {shares}; {p['throttled_429']} 429s; "
            f"**{p['failed_jobs']}** failed",
            ">= 0.9, 0 failed",
            _met(report["targets"]["pool"]["met"]),
        )
    ]


def _failover_row(o: dict[str, Any], met: str) -> Row:
    pooled = o["primary_down_with_secondary"]
    figure = f"Primary down {o['long_outage_s']:.0f} s, healthy secondary in the pool"
    if pooled is None:
        return ("8", figure, "not run: pass `--long-outage` (`make bench BENCH_ARGS=--long-outage`)", "", "")
    served = ", ".join(f"{name} {count}" for name, count in sorted(pooled["served_by"].items()))
    return (
        "8",
        f"{figure}, {pooled['jobs']} jobs at {pooled['arrival_jobs_per_s']:g}/s",
        f"**{pooled['failed_jobs']}** failed, **{pooled['poisoned']}** poisoned; "
        f"p95 job {pooled['job_s_p95']:.1f} s; {pooled['by_resource']['primary']['unavailable_503']} 503s "
        f"from the primary; served by {served}",
        "0 failed, 0 poisoned",
        met,
    )


def _alone_row(o: dict[str, Any], met: str) -> Row:
    alone = o.get("only_deployment_down_long")
    figure = f"Only deployment down {o['long_outage_s']:.0f} s (no pool)"
    if alone is None:
        flag = "--long-outage-alone"
        return ("8", figure, f"not run: pass `{flag}` (`make bench BENCH_ARGS={flag}`)", "", "")
    return (
        "8",
        f"{figure}, {alone['jobs']} jobs at {alone['arrival_jobs_per_s']:g}/s",
        f"**{alone['failed_jobs']}** failed, **{alone['poisoned']}** poisoned; p95 job {alone['job_s_p95']:.1f} s; "
        f"last result {alone['outage']['last_result_after_end_s']:.0f} s after it ended; "
        f"{alone['unavailable_503']} 503s",
        "0 failed, 0 poisoned",
        met,
    )


def _outage_rows(report: dict[str, Any]) -> list[Row]:
    o = report["outage"]
    calm, hit = o["without_outage"], o["only_deployment_down"]
    met = _met(report["targets"]["outage"]["met"])
    return [
        (
            "8",
            f"Only deployment down (503) {o['outage_s']:.0f} s mid-run, {hit['jobs']} jobs at "
            f"{hit['arrival_jobs_per_s']:g}/s",
            f"**{hit['failed_jobs']}** failed, **{hit['poisoned']}** poisoned; p95 job {hit['job_s_p95']:.1f} s vs "
            f"{calm['job_s_p95']:.1f} s without the outage (**{o['p95_over_without']:.1f}x**, same run); "
            f"last result {hit['outage']['last_result_after_end_s']:.0f} s after it ended; "
            f"{hit['unavailable_503']} 503s",
            "0 failed, 0 poisoned",
            met,
        ),
        _failover_row(o, met),
        _alone_row(o, met),
    ]


def _batch_rows(report: dict[str, Any]) -> list[Row]:
    lane = report["batch_lane"]
    return [
        (
            "9",
            f"Batch lane, {lane['jobs']:,} jobs vs the same {lane['jobs']:,} live (batch done in "
            f"{lane['processing_s']:g} s, collected every {lane['collect_every_s']:g} s)",
            describe_batch_lane(lane),
            "",
            "",
        )
    ]


ROWS = (
    ("throughput", _throughput_rows),
    ("cpu", _cpu_rows),
    ("cold_start", _cold_rows),
    ("rate_limit", _rate_rows),
    ("scaleout", _scaleout_rows),
    ("pool", _pool_rows),
    ("outage", _outage_rows),
    ("batch_lane", _batch_rows),
    ("responses", responses_rows),
)


NA = "—"
QUOTA_HEAD = (
    "| quota run | drain ÷ ideal | 429s per job | share of the limit | re-enqueued | storage requests per job "
    "(worker; host) | recovery → last result |"
)


def _quota_row(name: str, run: dict[str, Any], share: float | None) -> str:
    """One run of the scale-out, pool or outage sections, in the quota table's columns."""
    outage = run.get("outage")
    recovery = (
        f"{outage['last_result_after_end_s']:.0f} s ({outage['throttled_per_job_in_minute_after_end']:.2f} 429s/job "
        "in the minute after)"
        if outage
        else NA
    )
    storage = run["storage"]
    counted = (
        ""
        if storage["counted_processes"] == storage["processes"]
        else (f", {storage['counted_processes']} of {storage['processes']} processes counted")
    )
    cells = (
        name,
        f"{run['drain_over_ideal']:.2f}",
        f"{run['throttled_per_job']:.2f}",
        NA if share is None else f"{share:.2f}",
        f"{run['requeued_jobs']} of {run['jobs']}",
        f"{storage['worker_requests_per_job']:.1f}; {storage['host_requests_per_job']:.1f}{counted}",
        recovery,
    )
    return "| " + " | ".join(cells) + " |"


def quota_table(report: dict[str, Any]) -> str:
    """Issue 23's figures for every scale-out, pool and outage run of the report, one row each ("" if none)."""
    rows = []
    if "scaleout" in report:
        rows += [
            _quota_row(f"scale-out K = {r['processes']}", r, r["fraction_of_limit"]) for r in report["scaleout"]["runs"]
        ]
    if "pool" in report:
        rows.append(_quota_row("pool of two", report["pool"], report["pool"]["fraction_of_sum"]))
    if "outage" in report:
        o = report["outage"]
        rows.append(_quota_row("arrivals, no outage", o["without_outage"], None))
        rows.append(_quota_row(f"only deployment down {o['outage_s']:.0f} s", o["only_deployment_down"], None))
        if o["primary_down_with_secondary"] is not None:
            rows.append(_quota_row(f"primary down {o['long_outage_s']:.0f} s", o["primary_down_with_secondary"], None))
        if o.get("only_deployment_down_long") is not None:
            name = f"only deployment down {o['long_outage_s']:.0f} s"
            rows.append(_quota_row(name, o["only_deployment_down_long"], None))
    if not rows:
        return ""
    separator = "|" + "---|" * QUOTA_HEAD.count(" |")
    return (
        "\nQuota figures (docs/sizing.md): drain ÷ ideal is against the limit (scale-out, pool) or the arrivals "
        "(outages); storage requests are the worker's own and the host's queue handling, from the first send to "
        "the drain; the share of the limit is measured over whole windows.\n\n"
        + "\n".join([QUOTA_HEAD, separator, *rows])
        + "\n"
    )


def markdown(report: dict[str, Any]) -> str:
    """The table: one or more rows per section the run has."""
    meta = report["meta"]
    m = meta["machine"]
    rows = [row for section, build in ROWS if section in report for row in build(report)]
    only = "" if set(meta.get("sections", SECTIONS)) == set(SECTIONS) else f" (only {', '.join(meta['sections'])})"
    head = (
        f"Benchmark run {meta['date']} on {m['nproc']} CPUs ({m['cpu_model'] or 'unknown CPU'}), "
        f"Python {m['python']}, scale `{meta['scale']['name']}`{only}, load average at start "
        f"{m['loadavg_at_start'][0]}; took {meta['duration_s']:.0f} s. "
        "Every figure is a ratio or count from this one run.\n"
    )
    table = ["| # | figure | result | target | |", "|---|---|---|---|---|"]
    table += [f"| {n} | {fig} | {res} | {tgt} | {met} |" for n, fig, res, tgt, met in rows]
    foot = ""
    issue13 = next((report[k]["worker_settings"] for k in ("scaleout", "pool", "outage") if k in report), None)
    if issue13 is not None:
        settings = ", ".join(f"{k}={v}" for k, v in issue13.items())
        # --shared-budget: the one setting of these that is not the shipped default (false)
        which = "shipped defaults but PACING_SHARED_BUDGET" if "PACING_SHARED_BUDGET" in issue13 else "shipped defaults"
        foot += f"\nRate-limit, scale-out, pool and outage runs (5-8) worker settings ({which}): {settings}.\n"
    return head + "\n" + "\n".join(table) + "\n" + foot + quota_table(report)


def write_outputs(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    (out_dir / "results.md").write_text(markdown(report))
