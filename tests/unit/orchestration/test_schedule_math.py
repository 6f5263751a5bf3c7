"""Cron slots in a schedule's time zone, daylight-saving days, and catch-up policies."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sluiceway.core.spec_meta import Schedule
from sluiceway.orchestration.schedule_math import (
    logical_date_of,
    slots_between,
    slots_to_run,
    zone_of,
)

PARIS = ZoneInfo("Europe/Paris")
GRACE = timedelta(minutes=1)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_daily_slots_after_the_start_up_to_and_including_the_end() -> None:
    slots = slots_between("0 2 * * *", ZoneInfo("UTC"), utc(2025, 1, 15, 2), utc(2025, 1, 18, 2))

    assert [s.isoformat() for s in slots] == [
        "2025-01-16T02:00:00+00:00",
        "2025-01-17T02:00:00+00:00",
        "2025-01-18T02:00:00+00:00",
    ]


def test_slots_are_wall_clock_times_of_the_schedule_zone() -> None:
    slots = slots_between("0 2 * * *", PARIS, utc(2025, 1, 15, 12), utc(2025, 1, 17, 12))

    assert [s.astimezone(UTC).hour for s in slots] == [1, 1]
    assert [logical_date_of(s) for s in slots] == [date(2025, 1, 16), date(2025, 1, 17)]


def test_logical_date_is_the_date_in_the_schedule_zone_not_in_utc() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    slots = slots_between("30 1 * * *", tokyo, utc(2025, 1, 15, 0), utc(2025, 1, 16, 0))

    assert slots[0].astimezone(UTC) == utc(2025, 1, 15, 16, 30)
    assert logical_date_of(slots[0]) == date(2025, 1, 16)


def test_a_time_skipped_by_spring_forward_runs_once_at_the_next_valid_time() -> None:
    slots = slots_between("30 2 * * *", PARIS, utc(2025, 3, 29, 12), utc(2025, 3, 31, 12))

    assert [s.isoformat() for s in slots] == [
        "2025-03-30T03:00:00+02:00",
        "2025-03-31T02:30:00+02:00",
    ]


def test_a_time_repeated_by_fall_back_runs_once_at_its_first_occurrence() -> None:
    slots = slots_between("0 2 * * *", PARIS, utc(2025, 10, 24, 12), utc(2025, 10, 27, 12))

    assert [logical_date_of(s) for s in slots] == [
        date(2025, 10, 25),
        date(2025, 10, 26),
        date(2025, 10, 27),
    ]
    assert slots[1].utcoffset() == timedelta(hours=2)


def test_hourly_slots_on_the_fall_back_day_count_the_repeated_hour_once() -> None:
    start = datetime(2025, 10, 26, 0, 30, tzinfo=PARIS)
    slots = slots_between("0 * * * *", PARIS, start, datetime(2025, 10, 26, 4, 30, tzinfo=UTC))

    assert [s.strftime("%H:%M%z") for s in slots] == [
        "01:00+0200",
        "02:00+0200",
        "03:00+0100",
        "04:00+0100",
        "05:00+0100",
    ]


def test_an_end_before_the_start_gives_no_slot() -> None:
    assert slots_between("0 2 * * *", PARIS, utc(2025, 1, 2), utc(2025, 1, 1)) == []


def test_a_long_downtime_is_bounded_to_the_newest_slots() -> None:
    slots = slots_between("* * * * *", ZoneInfo("UTC"), utc(2025, 1, 1), utc(2025, 1, 3), limit=10)

    assert len(slots) == 10
    assert slots[-1] == utc(2025, 1, 3)


MISSED = [utc(2025, 1, 16, 2), utc(2025, 1, 17, 2), utc(2025, 1, 18, 2)]


@pytest.mark.parametrize(
    ("catchup", "now", "expected"),
    [
        ("all", utc(2025, 1, 18, 12), MISSED),
        ("latest", utc(2025, 1, 18, 12), MISSED[-1:]),
        ("none", utc(2025, 1, 18, 12), []),
        ("none", utc(2025, 1, 18, 2, 0, 30), MISSED[-1:]),
    ],
)
def test_catchup_policy_picks_the_missed_slots_it_runs(
    catchup: str, now: datetime, expected: list[datetime]
) -> None:
    assert slots_to_run(MISSED, catchup, now=now, grace=GRACE) == expected  # type: ignore[arg-type]


def test_the_schedule_zone_wins_over_the_project_default() -> None:
    own = Schedule(cron="0 2 * * *", timezone="Asia/Tokyo")
    plain = Schedule(cron="0 2 * * *")

    assert str(zone_of(own, "Europe/Paris")) == "Asia/Tokyo"
    assert str(zone_of(plain, "Europe/Paris")) == "Europe/Paris"
