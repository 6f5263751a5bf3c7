"""Anomaly detection on synthetic histories with known anomalies (`core.anomaly`)."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from sluiceway.core.anomaly import (
    AnomalyRule,
    Direction,
    Observation,
    current_observation,
    judge,
    observation,
    relative_change,
    robust_zscore,
    training_set,
)
from sluiceway.core.runstore import MetricPoint, RunStore

START = date(2025, 1, 6)  # a Monday
NOISE = [0, 2, -2, 1, -1, 3, -3, 0, 2, -2, 1, -1, 0, 4, -4, 1, -1, 2, -2, 0]


def daily(
    values: list[float], *, start: date = START, flagged: frozenset[int] | set[int] = frozenset()
) -> list[Observation]:
    """One observation per day from `start`; the indexes in `flagged` are flagged."""
    return [
        observation(v, (start + timedelta(days=i)).isoformat(), is_flagged=i in flagged)
        for i, v in enumerate(values)
    ]


def day_after(history: list[Observation], value: float) -> Observation:
    return current_observation(value, history[-1].logical.date() + timedelta(days=1))


def around(center: float, days: int = 20) -> list[float]:
    return [center + NOISE[i % len(NOISE)] for i in range(days)]


# --- spikes and drops ----------------------------------------------------------------------


def test_a_spike_in_a_noisy_series_is_an_anomaly_above_the_upper_bound() -> None:
    history = daily(around(100))

    verdict = judge(day_after(history, 150), history, AnomalyRule())

    assert verdict.status == "anomaly"
    assert verdict.score is not None and verdict.score > 3.5
    assert verdict.median == 100
    assert verdict.upper is not None and 100 < verdict.upper < 150
    assert verdict.training_size == 20


def test_a_value_inside_the_noise_is_normal_with_bounds_around_the_median() -> None:
    history = daily(around(100))

    verdict = judge(day_after(history, 103), history, AnomalyRule())

    assert verdict.status == "normal"
    assert not verdict.is_anomaly
    assert verdict.lower is not None and verdict.upper is not None
    assert verdict.lower < 103 < verdict.upper
    assert verdict.lower < 100 < verdict.upper


def test_a_drop_is_an_anomaly_with_a_negative_score() -> None:
    history = daily(around(100))

    verdict = judge(day_after(history, 40), history, AnomalyRule())

    assert verdict.is_anomaly
    assert verdict.score is not None and verdict.score < -3.5


def test_the_robust_zscore_is_0_6745_times_the_distance_over_the_mad() -> None:
    score, median, scale, basis = robust_zscore(20.0, [1.0, 2.0, 3.0, 4.0, 5.0])

    # median 3, absolute deviations 2 1 0 1 2 -> MAD 1
    assert median == 3.0
    assert score == pytest.approx(0.6745 * (20 - 3) / 1)
    assert scale == pytest.approx(1 / 0.6745)
    assert basis == "MAD"


@pytest.mark.parametrize(
    ("direction", "value", "expected"),
    [
        ("up", 150, "anomaly"),
        ("up", 40, "normal"),
        ("down", 40, "anomaly"),
        ("down", 150, "normal"),
        ("both", 40, "anomaly"),
    ],
)
def test_direction_limits_anomalies_to_rises_or_drops(
    direction: Direction, value: float, expected: str
) -> None:
    history = daily(around(100))

    verdict = judge(day_after(history, value), history, AnomalyRule(direction=direction))

    assert verdict.status == expected
    assert (verdict.lower is None) == (direction == "up")
    assert (verdict.upper is None) == (direction == "down")


def test_a_higher_threshold_tolerates_a_larger_deviation() -> None:
    history = daily(around(100))
    tested = day_after(history, 110)

    assert judge(tested, history, AnomalyRule(threshold=3.5)).is_anomaly
    assert not judge(tested, history, AnomalyRule(threshold=8)).is_anomaly


# --- MAD = 0 -------------------------------------------------------------------------------


def test_mad_zero_falls_back_to_the_scaled_mean_absolute_deviation() -> None:
    # 8 of 10 values equal the median: MAD 0; mean absolute deviation (10 + 10) / 10 = 2
    history = daily([100.0] * 8 + [90.0, 110.0])

    score, median, scale, basis = robust_zscore(110.0, [p.value for p in history])
    assert (median, basis) == (100.0, "mean absolute deviation")
    assert scale == pytest.approx(2 * math.sqrt(math.pi / 2))
    assert score == pytest.approx(10 / (2 * 1.2533), rel=1e-3)

    assert judge(day_after(history, 110), history, AnomalyRule()).is_anomaly
    assert not judge(day_after(history, 105), history, AnomalyRule()).is_anomaly


def test_a_constant_history_accepts_the_same_value_and_flags_any_other() -> None:
    history = daily([42.0] * 10)

    same = judge(day_after(history, 42.0), history, AnomalyRule())
    other = judge(day_after(history, 42.5), history, AnomalyRule())

    assert (same.status, same.score, same.mad) == ("normal", 0.0, 0.0)
    assert other.status == "anomaly"
    assert other.score == math.inf
    assert (other.lower, other.upper) == (42.0, 42.0)
    assert "only that value is normal" in other.reason


# --- minimum history and the training window ------------------------------------------------


def test_too_short_a_history_is_insufficient_never_an_anomaly() -> None:
    history = daily([100.0, 101.0, 99.0])

    verdict = judge(day_after(history, 1_000_000.0), history, AnomalyRule(min_history=7))

    assert verdict.status == "insufficient_history"
    assert not verdict.is_anomaly
    assert verdict.training_size == 3
    assert verdict.score is None
    assert "3 usable earlier point(s), 7 needed" in verdict.reason


def test_the_tested_date_and_later_dates_are_never_trained_on() -> None:
    history = daily(around(100, days=10))
    tested = current_observation(500.0, history[4].logical.date())

    training = training_set(tested, history, AnomalyRule())

    assert [p.logical.date() for p in training] == [p.logical.date() for p in history[:4]]


def test_a_window_in_points_keeps_the_last_usable_points() -> None:
    history = daily(around(100, days=20), flagged={19})

    training = training_set(day_after(history, 100), history, AnomalyRule(window=5))

    assert training == history[14:19]


def test_a_window_in_days_keeps_the_points_of_the_last_days() -> None:
    history = daily(around(100, days=20))
    tested = day_after(history, 100)  # START + 20 days

    training = training_set(tested, history, AnomalyRule(window=7, window_unit="days"))

    assert [p.logical.date() for p in training] == [
        START + timedelta(days=d) for d in range(13, 20)
    ]


def test_a_level_far_in_the_past_does_not_count_with_a_short_window() -> None:
    history = daily(around(1000) + around(100, days=10))
    tested = day_after(history, 104)

    assert judge(tested, history, AnomalyRule(window=30)).is_anomaly
    assert not judge(tested, history, AnomalyRule(window=10)).is_anomaly


# --- several runs of one date -----------------------------------------------------------------


def runs_of(
    day: int, *values_and_hours: tuple[float, int], flagged: bool = False
) -> list[Observation]:
    """Points of the logical date START + `day`, each recorded at its hour of that date; the
    last one flagged when `flagged`."""
    logical = START + timedelta(days=day)
    night = datetime.combine(logical, datetime.min.time(), UTC)
    points = [
        observation(value, logical.isoformat(), (night + timedelta(hours=hour)).isoformat())
        for value, hour in values_and_hours
    ]
    if flagged:
        points[-1] = replace(points[-1], is_flagged=True)
    return points


def test_a_date_run_again_in_another_hour_is_trained_on_once_with_its_latest_value() -> None:
    history = [
        point
        for day, value in enumerate(around(100, days=10))
        for point in runs_of(day, (value, 14), (5000.0, 2))  # the 02:00 run is stale by 14:00
    ]
    tested = current_observation(100.0, START + timedelta(days=10))

    training = training_set(tested, history, AnomalyRule())

    assert [p.value for p in training] == around(100, days=10)
    assert judge(tested, history, AnomalyRule()).status == "normal"


def test_a_date_whose_latest_run_is_flagged_is_left_out_not_replaced_by_an_earlier_run() -> None:
    history = [p for day in range(8) for p in runs_of(day, (100.0 + day % 3, 9))]
    history += runs_of(8, (100.0, 9), (900.0, 15), flagged=True)
    tested = current_observation(100.0, START + timedelta(days=9))

    training = training_set(tested, history, AnomalyRule())

    assert [p.logical.date() for p in training] == [START + timedelta(days=d) for d in range(8)]


# --- flagged points --------------------------------------------------------------------------


def test_flagged_points_are_not_trained_on_so_a_second_spike_is_still_caught() -> None:
    values = [*around(100, days=12), 500.0, 500.0, 500.0, 500.0]
    flagged = daily(values, flagged={12, 13, 14, 15})
    unflagged = daily(values)
    rule = AnomalyRule(window=7)

    caught = judge(day_after(flagged, 500.0), flagged, rule)
    missed = judge(day_after(unflagged, 500.0), unflagged, rule)

    assert caught.is_anomaly
    assert caught.training_size == 7
    assert caught.median is not None and caught.median < 110
    assert not missed.is_anomaly  # trained on the spikes, 500 looks normal


def test_relative_change_from_the_previous_point_skips_a_flagged_previous_point() -> None:
    values = [*around(100, days=10), 300.0]
    rule = AnomalyRule(method="relative_change", max_relative_change=0.5, min_history=3)

    flagged = daily(values, flagged={10})
    unflagged = daily(values)

    assert judge(day_after(flagged, 300.0), flagged, rule).is_anomaly
    assert not judge(day_after(unflagged, 300.0), unflagged, rule).is_anomaly


# --- relative change -------------------------------------------------------------------------


def test_relative_change_compares_with_the_previous_point_and_gives_its_bounds() -> None:
    history = daily([100.0, 100.0, 80.0])
    rule = AnomalyRule(method="relative_change", max_relative_change=0.5, min_history=3)

    up = judge(day_after(history, 130.0), history, rule)  # +62.5% from 80
    flat = judge(day_after(history, 110.0), history, rule)  # +37.5% from 80

    assert up.is_anomaly
    assert up.score == pytest.approx(0.625)
    assert (up.lower, up.upper) == (40.0, 120.0)
    assert not flat.is_anomaly


def test_relative_change_can_compare_with_the_training_median() -> None:
    history = daily([100.0, 100.0, 100.0, 40.0])
    rule = AnomalyRule(method="relative_change", compare_to="median", min_history=3)

    verdict = judge(day_after(history, 120.0), history, rule)

    assert verdict.status == "normal"  # +20% from the median 100, +200% from the previous 40
    assert verdict.score == pytest.approx(0.2)


def test_relative_change_from_zero_is_infinite_unless_the_value_is_zero_too() -> None:
    assert relative_change(0.0, 0.0) == 0.0
    assert relative_change(5.0, 0.0) == math.inf
    assert relative_change(-5.0, 0.0) == -math.inf
    assert relative_change(75.0, -50.0) == pytest.approx(2.5)


# --- seasonality -----------------------------------------------------------------------------


def weekly(weeks: int) -> list[Observation]:
    """Mondays near 300, other days near 100: `weeks` weeks from Monday START."""
    values = [(300.0 if i % 7 == 0 else 100.0) + NOISE[i % len(NOISE)] for i in range(weeks * 7)]
    return daily(values)


def test_a_monday_normal_for_mondays_is_flagged_only_without_seasonality() -> None:
    history = weekly(8)
    monday = day_after(history, 305.0)
    assert monday.logical.weekday() == 0

    seasonal = judge(monday, history, AnomalyRule(seasonality="day_of_week"))
    flat = judge(monday, history, AnomalyRule(window=60))

    assert seasonal.status == "normal"
    assert seasonal.training_size == 8
    assert seasonal.median is not None and 290 < seasonal.median < 310
    assert flat.status == "anomaly"


def test_a_tuesday_at_the_monday_level_is_an_anomaly_with_day_of_week_seasonality() -> None:
    history = weekly(8) + daily([300.0], start=START + timedelta(days=56))  # a Monday
    tuesday = day_after(history, 300.0)
    assert tuesday.logical.weekday() == 1

    assert judge(tuesday, history, AnomalyRule(seasonality="day_of_week")).is_anomaly


def test_day_of_week_needs_min_history_points_of_the_same_weekday() -> None:
    history = weekly(3)  # 21 points, 3 Mondays

    verdict = judge(day_after(history, 305.0), history, AnomalyRule(seasonality="day_of_week"))

    assert (verdict.status, verdict.training_size) == ("insufficient_history", 3)


def test_hour_of_day_trains_on_points_recorded_at_the_same_hour() -> None:
    history = []
    for day in range(10):
        logical = (START + timedelta(days=day)).isoformat()
        night = datetime.combine(START + timedelta(days=day), datetime.min.time(), UTC)
        history.append(
            observation(10.0 + day % 3, logical, (night + timedelta(hours=2)).isoformat())
        )
        history.append(
            observation(1000.0 + day % 3, logical, (night + timedelta(hours=14)).isoformat())
        )
    tomorrow = START + timedelta(days=10)
    at_two = datetime.combine(tomorrow, datetime.min.time(), UTC) + timedelta(hours=2)
    rule = AnomalyRule(seasonality="hour_of_day")

    small_at_two = judge(current_observation(11.0, tomorrow, now=at_two), history, rule)
    large_at_two = judge(current_observation(1001.0, tomorrow, now=at_two), history, rule)

    assert (small_at_two.status, small_at_two.training_size) == ("normal", 10)
    assert large_at_two.is_anomaly


def test_a_point_whose_logical_date_has_a_time_is_bucketed_by_that_time() -> None:
    timed = observation(1.0, "2025-01-06T03:00:00", "2025-01-07T14:00:00+00:00")
    dated = observation(1.0, "2025-01-06", "2025-01-07T14:00:00+00:00")

    assert (timed.has_time, timed.clock.hour) == (True, 3)
    assert (dated.has_time, dated.clock.hour) == (False, 14)
    assert dated.logical == datetime(2025, 1, 6, tzinfo=UTC)


# --- the run store keeps the flags -----------------------------------------------------------

SCHEMA_BEFORE_FLAGS = """
CREATE TABLE metrics (
    run_id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    dataset TEXT NOT NULL,
    check_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    logical_date TEXT NOT NULL,
    value REAL NOT NULL,
    recorded_at TEXT NOT NULL
);
"""


def stored_point(logical_date: str, value: float, *, flagged: bool = False) -> MetricPoint:
    return MetricPoint(
        run_id=f"run-{logical_date}",
        pipeline="orders",
        dataset="staged",
        check_id="abc123",
        metric="observed_value",
        logical_date=logical_date,
        value=value,
        recorded_at="2025-01-20T00:00:00+00:00",
        flagged=flagged,
    )


def test_the_store_reads_back_which_points_are_flagged(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.save_metrics(
        [stored_point("2025-01-01", 10.0), stored_point("2025-01-02", 99.0, flagged=True)]
    )

    history = store.metric_history("orders", "abc123", "observed_value")

    assert [(p.value, p.flagged) for p in history] == [(10.0, False), (99.0, True)]


def test_a_database_created_before_flags_is_migrated_keeping_its_points(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with sqlite3.connect(path) as con:
        con.executescript(SCHEMA_BEFORE_FLAGS)
        con.execute(
            "INSERT INTO metrics VALUES ('r0', 'orders', 'staged', 'abc123', 'observed_value', "
            "'2025-01-01', 10.0, '2025-01-02T00:00:00+00:00')"
        )
    con.close()

    store = RunStore(path)
    store.save_metrics([stored_point("2025-01-02", 99.0, flagged=True)])
    RunStore(path)  # opening a migrated database again changes nothing

    history = store.metric_history("orders", "abc123", "observed_value")
    assert [(p.run_id, p.value, p.flagged) for p in history] == [
        ("r0", 10.0, False),
        ("run-2025-01-02", 99.0, True),
    ]


def test_copies_of_one_point_in_a_run_are_stored_once_flagged_when_any_copy_is(
    tmp_path: Path,
) -> None:
    """Two checks of one series (a warn tier and an error tier of one metric) report the same
    point; only the warn tier judged it an anomaly."""
    store = RunStore(tmp_path / "runs.db")
    store.save_metrics(
        [stored_point("2025-01-02", 40.0, flagged=True), stored_point("2025-01-02", 40.0)]
    )

    history = store.metric_history("orders", "abc123", "observed_value")

    assert [(p.logical_date, p.value, p.flagged) for p in history] == [("2025-01-02", 40.0, True)]


def test_a_rerun_in_the_same_hour_replaces_a_point_and_in_another_hour_adds_one(
    tmp_path: Path,
) -> None:
    store = RunStore(tmp_path / "runs.db")
    at = "2025-01-02T{}:00+00:00".format
    first = replace(stored_point("2025-01-02", 1.0), run_id="first", recorded_at=at("10:05"))
    same_hour = replace(first, run_id="same-hour", value=2.0, recorded_at=at("10:55"))
    next_hour = replace(first, run_id="next-hour", value=3.0, recorded_at=at("11:05"))

    store.save_metrics([first])
    store.save_metrics([same_hour])
    store.save_metrics([next_hour])

    history = store.metric_history("orders", "abc123", "observed_value")
    assert [(p.run_id, p.value) for p in history] == [("same-hour", 2.0), ("next-hour", 3.0)]
