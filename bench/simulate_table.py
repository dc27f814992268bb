"""``make simulate``: issue 23's simulation (``bench.simulate``) at K = 16, 64 and 256, today's per-instance gate
next to the shared budget, and the shared budget with its store failing; the table of the live runs' figures."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.simulate import Setup, compare, simulate

COLUMNS = (
    ("K", "instances", "{}"),
    ("gate", "shared_budget", "{}"),
    ("store", "store", "{}"),
    ("drain ÷ ideal", "drain_over_ideal", "{:.2f}"),
    ("429s per job", "throttled_per_job", "{:.3f}"),
    ("share of limit", "fraction_of_limit", "{:.3f}"),
    ("re-enqueued", "requeued_jobs", "{}"),
    ("failed", "failed_jobs", "{}"),
    ("store ops per job", "store_ops_per_job", "{:.2f}"),
    ("fell back", "fallbacks", "{}"),
    ("late joiner to fair share (windows, max)", "late_joiner_windows_to_fair_share_max", "{:.2f}"),
)


def table(rows: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table, one row per run."""
    lines = ["| " + " | ".join(title for title, _, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = []
        for _, key, form in COLUMNS:
            value = row[key]
            if key == "shared_budget":
                value = "shared budget" if value else "per instance"
            cells.append("never" if value is None else form.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``make simulate``: today's gate and the shared budget at K = 16, 64 and 256; prints the table and writes
    it to bench/simulation.md (and every figure to bench/simulation.json), or with ``--out`` elsewhere."""
    parser = argparse.ArgumentParser(prog="python -m bench.simulate_table", description=__doc__)
    parser.add_argument("--instances", default="16,64,256", help="comma-separated K (default 16,64,256)")
    parser.add_argument("--window", type=float, default=10.0, help="the rate window in seconds (the bench's: 10)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="where the files go")
    args = parser.parse_args(argv)
    scale = args.window / 10  # as many windows of work, late joins and leaves as at the bench's window
    changes = {"window": args.window, "late_at": 2 * args.window, "leave_at": 4 * args.window}
    changes["jobs_per_instance"] = round(Setup(1).jobs_per_instance * scale)
    ks = [int(k) for k in args.instances.split(",")]
    rows = [row for k in ks for row in compare(k, **changes)]
    # The store failing: down for two windows mid-run, then flaky (every instance falls back to its own gate
    # while it fails; no job may be lost).
    failing = Setup(ks[min(1, len(ks) - 1)], shared=True, **changes)
    rows.append(simulate(replace(failing, store_down=(1.5 * args.window, 3.5 * args.window))))
    rows.append(simulate(replace(failing, store_faults=0.05)))
    setup = Setup(16, **changes)
    note = (
        f"Virtual clock, seed {setup.seed}; {setup.jobs_per_instance} jobs per instance of mixed size, "
        f"{setup.concurrency} at a time per instance; window {setup.window:.0f} s; the limit half of one instance's "
        f"demand per 16 instances; 1/8 of the instances join at {setup.late_at:.0f} s, 1/8 leave at "
        f"{setup.leave_at:.0f} s; store round trip {setup.store_latency * 1000:.0f} ms (bench/simulate.py)."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "simulation.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "simulation.md").write_text(f"{table(rows)}\n\n{note}\n")
    print(table(rows))
    print(note)


if __name__ == "__main__":
    main()
