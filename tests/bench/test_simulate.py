"""The virtual-clock simulation (bench/simulate.py) at a small K: seconds of wall time, a fixed seed, so its
sanity holds deterministically. The targets themselves are ratios the bench reports, not asserted here."""

from __future__ import annotations

import asyncio

import pytest

from bench import virtual
from bench.simulate import Setup, simulate
from bench.simulate_table import table

SMALL = Setup(8)


def test_the_virtual_clock_jumps_instead_of_sleeping() -> None:
    async def main() -> float:
        await asyncio.sleep(3_600)
        return asyncio.get_running_loop().time()

    assert virtual.run(main()) == 3_600


def test_a_loop_where_nothing_can_wake_is_reported() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(virtual.Deadlock):
        virtual.run(main())


@pytest.mark.parametrize("shared", [False, True])
def test_every_job_is_served_and_the_limit_is_used(shared: bool) -> None:
    figures = simulate(Setup(**{**SMALL.__dict__, "shared": shared}))
    assert figures["failed_jobs"] == 0
    assert figures["throttled_per_job"] < 0.5
    assert 0.8 < figures["fraction_of_limit"] <= 1.0
    assert figures["late_joiners"] == 1 and figures["late_joiners_at_fair_share"] == 1
    assert (figures["store_ops"] > 0) == shared


def test_a_store_down_for_a_while_loses_no_job() -> None:
    figures = simulate(Setup(**{**SMALL.__dict__, "shared": True, "store_down": (5.0, 40.0)}))
    assert figures["store_failures"] > 0
    assert figures["fallbacks"] >= 1  # an instance's WARNING, counted, not printed
    assert figures["failed_jobs"] == 0
    row = table([figures]).splitlines()[-1]
    assert "| shared budget | down 5-40 s |" in row


def test_a_flaky_store_loses_no_job() -> None:
    figures = simulate(Setup(**{**SMALL.__dict__, "shared": True, "store_faults": 0.3}))
    assert figures["store_failures"] > 0
    assert figures["failed_jobs"] == 0
