"""Figure 10 (bench/responses.py) at the smoke scale through ``run_all``, on the suite's local Azure: the keys and
the counts (never a time: only that the background side holds a slot for less than the synchronous side, which
holds one for a whole think), and its pure parts: the poll count, the union of invocations, the tier cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.config import SMOKE
from bench.report import markdown, write_outputs
from bench.responses import SCALES, THINK_S, polls_at, tier_cost, union_s
from bench.scenarios import run_all
from emulators.stack.services import LocalAzure


def test_polls_for_a_five_minute_think_at_the_shipped_settings_equal_the_scaled_ones() -> None:
    assert polls_at(THINK_S, 5, 60) == 8  # 5, 15, 35, 75, 135, 195, 255, 315 s
    full = SCALES["full"]
    assert polls_at(full.think_s, *full.poll_s) == 8  # the same schedule, a fifth as long
    assert full.poll_s == (5 * full.scale, 60 * full.scale)
    assert polls_at(1, 5, 60) == 1 and polls_at(0, 5, 60) == 0


def test_instance_time_is_the_union_of_invocations_and_cost_is_tokens_times_price() -> None:
    second = 1_000_000_000
    assert union_s([(0, 2 * second), (1 * second, 3 * second), (5 * second, 6 * second)]) == 4.0
    assert union_s([]) == 0.0
    by_tier = {
        "flex": {"answers": 2, "prompt_tokens": 20, "completion_tokens": 180, "price": 0.5},
        "default": {"answers": 1, "prompt_tokens": 10, "completion_tokens": 90, "price": 1.0},
    }
    assert (tier_cost(by_tier, "flex"), tier_cost(by_tier, "default"), tier_cost(by_tier, "priority")) == (
        50.0,
        100.0,
        None,
    )


@pytest.mark.e2e
@pytest.mark.slow(seconds=20)
@pytest.mark.timeout(300)
async def test_background_jobs_hold_less_than_a_think_and_flex_costs_half(stack: LocalAzure, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = await run_all(stack, SMOKE, out, tmp_path / "logs", ["responses"])
    write_outputs(report, out)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(report))
    figure = report["responses"]
    n = figure["jobs_per_side"]
    assert figure["failed_jobs"] == [] and n == SCALES["smoke"].jobs
    sync, background = figure["sync"], figure["background"]
    assert (sync["jobs_seen"], background["jobs_seen"]) == (n, n)
    assert sync["invocations_per_job"] == 1  # one invocation holds the slot through the whole think
    assert sync["slot_s_per_job"] >= figure["think_s"] * 0.9
    assert background["invocations_per_job"] == figure["polls_per_job"] + 1  # the create, then each poll
    assert figure["polls_per_job"] >= 1 and figure["responses_created"] == 2 * n
    assert background["slot_s_per_job"] < sync["slot_s_per_job"]
    assert figure["projected"]["slot_ratio"] == pytest.approx(figure["slot_ratio"] * figure["scale"])
    assert figure["flex"]["served"] == {"default": n, "flex": n}
    assert figure["flex"]["tiers_in_results"] == {"flex": ["flex"], "std": ["default"]}
    assert figure["flex"]["cost_ratio"] == pytest.approx(0.5)  # the same tokens at half the price
    table = markdown(report)
    assert "| 10 | Responses API, 3 jobs thinking 5 min each" in table and "flex cost ÷ default **0.50**" in table
