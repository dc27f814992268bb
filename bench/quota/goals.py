"""The targets of figures 5-8, judged on the sections a report has.

Part of ``bench.quota``.
"""

from __future__ import annotations

from typing import Any

from bench.quota.scaling import scaleout_target


def _kept_full(target: str, figure: dict[str, Any], fraction: str) -> dict[str, Any]:
    """Figures 5 and 7's target: >= 0.9 of the limit(s) used (``figure[fraction]``), 0 failed jobs."""
    used, failed = figure[fraction], figure["failed_jobs"]
    return {"target": target, "value": {fraction: used, "failed_jobs": failed}, "met": used >= 0.9 and failed == 0}


def targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Figure 5's and issue 13's targets for the sections this report has."""
    goals: dict[str, dict[str, Any]] = {}
    if "rate_limit" in report:
        goals["rate_limit"] = _kept_full(
            ">= 0.9 of the token limit used, 0 failed jobs (one process: the scale-out's K = 1 run)",
            report["rate_limit"],
            "fraction_of_limit",
        )
    if "scaleout" in report:
        goals["scaleout"] = scaleout_target(report["scaleout"]["runs"])
    if "pool" in report:
        goals["pool"] = _kept_full(">= 0.9 of L1 + L2, 0 failed", report["pool"], "fraction_of_sum")
    if "outage" in report:
        o = report["outage"]
        names = ("only_deployment_down", "primary_down_with_secondary", "only_deployment_down_long")
        runs = {k: o[k] for k in names if o.get(k) is not None}
        longer = {
            "primary_down_with_secondary": ", primary down with a healthy secondary (long_outage_s)",
            "only_deployment_down_long": ", only deployment down long_outage_s",
        }
        also = "".join(text for k, text in longer.items() if k in runs)
        goals["outage"] = {
            "target": f"0 failed, 0 poisoned: only deployment down (outage_s){also}",
            "value": {k: {"failed_jobs": r["failed_jobs"], "poisoned": r["poisoned"]} for k, r in runs.items()},
            "met": all(r["failed_jobs"] == 0 and r["poisoned"] == 0 for r in runs.values()),
        }
    return goals
