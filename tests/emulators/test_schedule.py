"""The local host's NCRONTAB schedules at the edges where croniter, left to read the fields as written, differs
or has differed (its bug #246: ``59/15``): ``Schedule`` hands it the values NCRONTAB selects. The common cases
are in tests/worker/test_timer_trigger.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from emulators.functions_host import Schedule

MOMENT = datetime(2026, 11, 30, 23, 59, 58, 500_000, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("expression", "first", "second"),
    [
        ("0 0 7-7 * * *", "2026-12-01 07:00:00", "2026-12-02 07:00:00"),  # croniter: every hour ("the whole cycle")
        ("0 0 1-1/3 * * *", "2026-12-01 01:00:00", "2026-12-02 01:00:00"),  # croniter: every third hour
        ("0 0 12 * * 7/5", "2026-12-06 12:00:00", "2026-12-13 12:00:00"),  # 7 to 7: Sunday (croniter: Fri, Sun)
        ("0 0 12 * * 5-7", "2026-12-04 12:00:00", "2026-12-05 12:00:00"),  # Friday to Sunday
        ("59/15 * * * * *", "2026-11-30 23:59:59", "2026-12-01 00:00:59"),  # 59 to 59: second 59 only
    ],
)
def test_ncrontab_not_croniter_reads_the_fields(expression: str, first: str, second: str) -> None:
    schedule = Schedule.parse(expression)
    one = schedule.next_after(MOMENT)
    two = schedule.next_after(one)
    assert (one.strftime("%Y-%m-%d %H:%M:%S"), two.strftime("%Y-%m-%d %H:%M:%S")) == (first, second)


def test_a_wrapped_range_is_refused_not_wrapped() -> None:
    with pytest.raises(ValueError, match="low to high"):
        Schedule.parse("0 0 22-2 * * *")  # croniter: 22, 23, 0, 1, 2


def test_a_schedule_that_never_fires_is_refused_when_parsed() -> None:
    with pytest.raises(ValueError, match="never fires"):
        Schedule.parse("0 0 0 30 FEB *")


def test_the_expression_is_kept_as_written() -> None:
    schedule = Schedule.parse("0 */5 * * * MON-FRI")
    assert schedule.expression == "0 */5 * * * MON-FRI"
    assert schedule.cron == "0 0,5,10,15,20,25,30,35,40,45,50,55 * * * 1,2,3,4,5"
