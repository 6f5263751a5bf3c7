"""Review of the quality engine: anomaly history, drift baselines, GE import, reports."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from sluiceway.checks.anomaly import AnomalyConfig
from sluiceway.checks.base import CheckEnv, CheckResult
from sluiceway.checks.drift import DriftConfig
from sluiceway.checks.gx_import import convert_suite
from sluiceway.checks.profile import compute_profile, save_profile
from sluiceway.checks.table import evaluate_checks
from sluiceway.core import results as results_module
from sluiceway.core.accounting import RowAccounting
from sluiceway.core.anomaly import AnomalyRule, current_observation, judge, observation
from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline
from sluiceway.core.runstore import RunStore
from sluiceway.engines.duckdb import DuckDBEngine
from sluiceway.observability.report import build_report

FIRST_DAY = date(2025, 2, 1)
CONTRACT = {"columns": {"order_id": {"type": "string"}, "amount": {"type": "double"}}}


def run_day(base: Path, spec: dict[str, Any], day: date, amounts: list[float]) -> RunResult:
    folder = base / "in" / day.isoformat()
    folder.mkdir(parents=True)
    lines = [f"{day:%Y%m%d}-{i},{amount}" for i, amount in enumerate(amounts)]
    (folder / "orders.csv").write_text("order_id,amount\n" + "".join(f"{x}\n" for x in lines))
    source = {"type": "files", "path": f"in/{day.isoformat()}/", "contract": CONTRACT}
    full = {"version": 1, "pipeline": "orders", **spec, "sources": {"orders": source}}
    full["sinks"] = [{"type": "delta", "path": "lake/orders", "mode": "append"}]
    options = RunOptions(logical_date=day, base_dir=base, state_dir=base / ".sluice")
    return run_pipeline(pipeline_from_dict(full), options)


# --- anomaly: two tiers of one metric --------------------------------------------------------


def test_a_warn_tier_and_an_error_tier_of_one_metric_keep_one_point_per_date(
    tmp_path: Path,
) -> None:
    """A common setup: warn at a low threshold, block at a high one. Both tiers must not
    double the history (one point per pipeline, check, metric and logical date)."""
    spec = {
        "checks": [
            {"anomaly": {"metric": "row_count", "threshold": 3, "severity": "warn"}},
            {"anomaly": {"metric": "row_count", "threshold": 6}},
        ]
    }
    results = [
        run_day(tmp_path, spec, FIRST_DAY + timedelta(days=i), [1.0] * (50 + i % 3))
        for i in range(5)
    ]
    store = RunStore(tmp_path / ".sluice" / "runs.db")

    for check in results[-1].checks:
        points = store.metric_history("orders", check.check_id, "observed_value")
        dates = [p.logical_date for p in points]
        assert len(dates) == len(set(dates)), f"{check.name}: {dates}"
    # five runs are five earlier points at most: a min_history of 7 is not reached yet
    assert "Not judged" in results[-1].checks[0].message


# --- anomaly: hour_of_day on a pipeline run every hour ---------------------------------------


def test_hour_of_day_seasonality_has_history_for_a_pipeline_run_every_hour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline run at 10:00 and 11:00 UTC every day for 8 days, its points written as the
    runner writes them (`RunResult.metric_points` then `RunStore.save_metrics`). The 10:00 run
    of day 9 must find the 8 earlier 10:00 points; today the 11:00 run of each date replaces
    the 10:00 one, so hour_of_day never has history and the check never judges."""
    store = RunStore(tmp_path / "runs.db")
    check = CheckResult(
        check_id="hourly",
        name="anomaly(row_count)",
        check="anomaly",
        column=None,
        severity="error",
        success=True,
        observed_value=0.0,
        unexpected_count=None,
        unexpected_percent=None,
        rows_checked=0,
        message="",
    )
    for day_number in range(8):
        day = FIRST_DAY + timedelta(days=day_number)
        for hour, value in ((10, 100.0 + day_number % 3), (11, 500.0 + day_number % 3)):
            frozen = datetime(day.year, day.month, day.day, hour, 5, tzinfo=UTC)
            monkeypatch.setattr(results_module, "datetime", _frozen_datetime(frozen))
            result = RunResult(
                run_id=f"{day}-{hour}",
                pipeline="orders",
                logical_date=day,
                status="succeeded",
                accounting=RowAccounting(),
                checks=[replace(check, observed_value=value)],
            )
            store.save_metrics(result.metric_points())
    monkeypatch.undo()
    tested_day = FIRST_DAY + timedelta(days=8)
    now = datetime(tested_day.year, tested_day.month, tested_day.day, 10, 5, tzinfo=UTC)
    points = store.metric_history("orders", "hourly", "observed_value", before=str(tested_day))
    history = [
        observation(p.value, p.logical_date, p.recorded_at, is_flagged=p.flagged) for p in points
    ]
    rule = AnomalyRule(seasonality="hour_of_day", min_history=7)

    verdict = judge(current_observation(101.0, tested_day, now=now), history, rule)

    assert verdict.status == "normal", verdict.reason


def _frozen_datetime(frozen: datetime) -> type[datetime]:
    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return frozen

    return Frozen


# --- drift: a day without input must not become the baseline ---------------------------------


def test_a_day_without_input_does_not_become_the_drift_baseline(tmp_path: Path) -> None:
    spec = {"checks": [{"drift": {"column": "amount", "severity": "warn"}}]}
    low = [float(i % 10) for i in range(200)]
    high = [float(100 + i % 10) for i in range(200)]

    run_day(tmp_path, spec, FIRST_DAY, low)
    empty = run_day(tmp_path, spec, FIRST_DAY + timedelta(days=1), [])
    shifted = run_day(tmp_path, spec, FIRST_DAY + timedelta(days=2), high)

    assert empty.status != "failed", empty.error
    [check] = shifted.checks
    assert check.status == "failed", check.message
    assert f"baseline profile of {FIRST_DAY}" in check.message


# --- import-gx: GE regexes match anywhere in the value ----------------------------------------

GE_REGEXES = [
    ("^N/A$|@", "bob@example.com"),  # "N/A" or anything with an @
    ("^ORD-|-LEGACY$", "ORD-17"),  # a prefix or a suffix
    ("^ORD-|-LEGACY$", "X-LEGACY"),
    ("^abc|xyz", "123xyz"),
    ("error", "line one\nan error on line two"),  # a multi-line text value
]


@pytest.mark.parametrize(("pattern", "value"), GE_REGEXES)
def test_an_imported_match_regex_passes_every_value_ge_passes(pattern: str, value: str) -> None:
    assert re.search(pattern, value)  # what GE does: a match anywhere in the value
    suite = {
        "name": "s",
        "expectations": [
            {
                "type": "expect_column_values_to_match_regex",
                "kwargs": {"column": "v", "regex": pattern},
            }
        ],
    }
    [check] = convert_suite(suite).checks
    engine = DuckDBEngine()
    try:
        table = engine.register_arrow("t", pa.table({"v": [value]}))
        [result] = evaluate_checks(engine, table, [check])
    finally:
        engine.close()

    assert result.status == "passed", (check.regex, result.message)  # type: ignore[attr-defined]


def test_the_trend_page_charts_each_tier_of_one_metric(tmp_path: Path) -> None:
    spec = {
        "checks": [
            {
                "anomaly": {
                    "metric": "row_count",
                    "threshold": 3,
                    "severity": "warn",
                    "name": "rc_warn",
                }
            },
            {"anomaly": {"metric": "row_count", "threshold": 6, "name": "rc_block"}},
        ]
    }
    for i in range(2):
        run_day(tmp_path, spec, FIRST_DAY + timedelta(days=i), [1.0] * 20)

    summary = build_report(tmp_path / ".sluice", tmp_path / "site")

    [trends] = summary.trend_pages
    page = trends.read_text(encoding="utf-8")
    assert ">rc_warn</h2>" in page
    assert ">rc_block</h2>" in page


# --- drift: PSI against a baseline whose values tie at its maximum ---------------------------


@pytest.mark.parametrize(
    ("baseline", "current"),
    [
        ([5.0] * 500, [6.0] * 500),  # a constant column moves to another constant
        (
            [float(i % 4) for i in range(400)] + [100.0] * 600,
            [float(i % 4) for i in range(400)] + [900.0] * 600,
        ),  # capped at 100, then 900
    ],
    ids=["constant", "ties_at_max"],
)
def test_binned_psi_sees_values_moving_above_the_baselines_maximum(
    tmp_path: Path, baseline: list[float], current: list[float]
) -> None:
    engine = DuckDBEngine()
    try:
        base = engine.register_arrow("base", pa.table({"x": baseline}))
        save_profile(tmp_path, "shop", "staged", compute_profile(engine, base), FIRST_DAY)
        now = engine.register_arrow("now", pa.table({"x": current}))
        env = CheckEnv(
            pipeline="shop", logical_date=FIRST_DAY + timedelta(days=1), state_dir=tmp_path
        )
        [result] = evaluate_checks(engine, now, [DriftConfig(column="x", method="psi")], env)
    finally:
        engine.close()

    assert result.status == "failed", result.message


# --- anomaly: a window that can never hold min_history points ----------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"window": 5},  # 5 points, 7 needed
        {"window": 30, "window_unit": "days", "seasonality": "day_of_week"},  # 4 Mondays in 30 days
    ],
    ids=["points", "days_by_weekday"],
)
def test_an_anomaly_window_that_cannot_reach_min_history_is_rejected(
    fields: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError, match="min_history"):
        AnomalyConfig(metric="row_count", **fields)
