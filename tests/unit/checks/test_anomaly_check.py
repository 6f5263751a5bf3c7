"""The `anomaly` check on a DuckDB table, judged against a given metric history."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from sluiceway.checks import anomaly  # noqa: F401  (registers the check)
from sluiceway.checks.anomaly import AnomalyConfig
from sluiceway.checks.base import CheckEnv, CheckResult, check_id
from sluiceway.checks.table import blocking_failures, evaluate_checks
from sluiceway.checks.vocabulary import NotNullConfig
from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.runstore import MetricPoint
from sluiceway.core.spec import CheckConfig
from sluiceway.engines.duckdb import DuckDBEngine
from sluiceway.errors import SpecError

TESTED = date(2025, 3, 3)  # a Monday
AS_OF = datetime(2025, 3, 4, tzinfo=UTC)
ROWS = 100
NOISE = [0, 2, -2, 1, -1, 3, -3, 0, 2, -2]


def orders() -> pa.Table:
    """100 orders: 10 NULL amounts, amounts 1..90, the last order 2 hours before AS_OF."""
    placed = [AS_OF - timedelta(hours=2 + i) for i in range(ROWS)]
    return pa.table(
        {
            "order_id": list(range(ROWS)),
            "amount": [None] * 10 + [float(i) for i in range(1, 91)],
            "placed_at": placed,
        }
    )


@pytest.fixture
def engine() -> Iterator[DuckDBEngine]:
    eng = DuckDBEngine()
    eng.register_arrow("orders", orders())
    yield eng
    eng.close()


class History:
    """A metric history given as (days before TESTED, value, flagged); records what is asked."""

    def __init__(self, points: list[tuple[int, float, bool]]) -> None:
        self.points = points
        self.asked: list[tuple[str, str]] = []

    def __call__(self, series: str, metric: str) -> list[MetricPoint]:
        self.asked.append((series, metric))
        return [
            MetricPoint(
                run_id=f"run-{days}",
                pipeline="orders",
                dataset="staged",
                check_id=series,
                metric=metric,
                logical_date=(TESTED - timedelta(days=days)).isoformat(),
                value=value,
                recorded_at=(AS_OF - timedelta(days=days)).isoformat(),
                flagged=flagged,
            )
            for days, value, flagged in sorted(self.points, reverse=True)
        ]


def daily(center: float, days: int = 10) -> History:
    return History([(d, center + NOISE[d % len(NOISE)], False) for d in range(1, days + 1)])


def run(engine: DuckDBEngine, config: CheckConfig, history: History | None) -> CheckResult:
    env = CheckEnv(pipeline="orders", logical_date=TESTED, logical_time=AS_OF, history=history)
    (result,) = evaluate_checks(engine, "orders", [config], env)
    return result


def test_a_row_count_in_line_with_its_history_passes_and_says_the_range(
    engine: DuckDBEngine,
) -> None:
    config = AnomalyConfig(metric="row_count")
    history = daily(100)

    result = run(engine, config, history)

    assert result.status == "passed", result.message
    assert result.observed_value == ROWS
    assert history.asked == [(check_id(config), "observed_value")]
    assert "Expected the row count between" in result.message
    assert "learned from 10 earlier point(s)" in result.message
    assert "it was 100: normal (robust z-score 0.00, threshold 3.5)" in result.message


def test_a_row_count_spike_against_its_history_fails_above_the_range(
    engine: DuckDBEngine,
) -> None:
    result = run(engine, AnomalyConfig(metric="row_count"), daily(20))

    assert result.status == "failed"
    assert result.observed_value == ROWS
    assert "it was 100: an anomaly, above the expected range" in result.message
    assert "robust z-score" in result.message
    assert blocking_failures([result]) == [result]


def test_a_warn_anomaly_fails_without_blocking(engine: DuckDBEngine) -> None:
    result = run(engine, AnomalyConfig(metric="row_count", severity="warn"), daily(20))

    assert result.status == "failed"
    assert blocking_failures([result]) == []


def test_too_short_a_history_passes_and_says_how_many_points_are_missing(
    engine: DuckDBEngine,
) -> None:
    result = run(engine, AnomalyConfig(metric="row_count", min_history=5), daily(20, days=3))

    assert result.status == "passed"
    assert "needs 5 earlier point(s)" in result.message
    assert "there are 3" in result.message


def test_without_a_run_store_the_check_passes_as_insufficient_history(
    engine: DuckDBEngine,
) -> None:
    result = run(engine, AnomalyConfig(metric="row_count"), None)

    assert result.status == "passed"
    assert "there are 0" in result.message


def test_flagged_points_of_the_history_are_not_trained_on(engine: DuckDBEngine) -> None:
    normal = [(d, 20.0 + NOISE[d], False) for d in range(4, 10)]
    spikes = [(d, 100.0, True) for d in range(1, 4)]
    config = AnomalyConfig(metric="row_count", min_history=6, window=6)

    result = run(engine, config, History(normal + spikes))
    unflagged = run(engine, config, History(normal + [(d, v, False) for d, v, _ in spikes]))

    assert result.status == "failed"
    assert "learned from 6 earlier point(s)" in result.message
    assert unflagged.status == "passed"


@pytest.mark.parametrize(
    ("metric", "column", "expected"),
    [
        ("null_count", "amount", 10.0),
        ("null_ratio", "amount", 0.1),
        ("mean", "amount", 45.5),
        ("min", "amount", 1.0),
        ("max", "amount", 90.0),
        ("sum", "amount", 4095.0),
        ("distinct_count", "amount", 90.0),
        ("unique_ratio", "order_id", 1.0),
        ("freshness_s", "placed_at", 7200.0),
        ("sql: count(*) FILTER (WHERE amount > 45)", None, 45.0),
    ],
)
def test_each_metric_is_computed_in_the_fused_query(
    engine: DuckDBEngine, metric: str, column: str | None, expected: float
) -> None:
    result = run(engine, AnomalyConfig(metric=metric, column=column), History([]))

    assert result.status == "passed"
    assert result.observed_value == pytest.approx(expected)


def test_freshness_is_measured_against_the_runs_logical_time(engine: DuckDBEngine) -> None:
    config = AnomalyConfig(metric="freshness_s", column="placed_at")
    env = CheckEnv(logical_date=TESTED, logical_time=AS_OF + timedelta(hours=1))

    (result,) = evaluate_checks(engine, "orders", [config], env)

    assert result.observed_value == pytest.approx(3 * 3600)


def test_a_metric_that_can_reveal_a_row_value_is_not_shown_in_the_message(
    engine: DuckDBEngine,
) -> None:
    result = run(engine, AnomalyConfig(metric="max", column="amount"), daily(20))

    assert result.status == "failed"
    assert result.observed_value == 90.0
    assert "90" not in result.message
    assert "20" not in result.message.split("learned")[0]
    assert "the maximum of column 'amount' within its usual range" in result.message
    assert "above the expected range" in result.message


def test_day_of_week_seasonality_accepts_a_monday_level_on_a_monday(
    engine: DuckDBEngine,
) -> None:
    # Mondays (multiples of 7 days before the Monday tested) near 100 rows, other days near 20
    points = [(d, (100.0 if d % 7 == 0 else 20.0) + NOISE[d % 10], False) for d in range(1, 57)]
    seasonal = AnomalyConfig(metric="row_count", seasonality="day_of_week", window=60)
    flat = AnomalyConfig(metric="row_count", window=60)

    seasonal_result = run(engine, seasonal, History(points))
    flat_result = run(engine, flat, History(points))

    assert seasonal_result.status == "passed", seasonal_result.message
    assert "of the same weekday (Monday)" in seasonal_result.message
    assert "learned from 8 earlier point(s)" in seasonal_result.message
    assert flat_result.status == "failed"


def test_relative_change_fails_on_a_jump_from_the_previous_run(engine: DuckDBEngine) -> None:
    config = AnomalyConfig(
        metric="row_count", method="relative_change", max_relative_change=0.2, min_history=1
    )

    jumped = run(engine, config, History([(2, 100.0, False), (1, 60.0, False)]))
    steady = run(engine, config, History([(2, 60.0, False), (1, 95.0, False)]))

    assert jumped.status == "failed"
    assert "change +66.7% from the previous value, at most 20.0% allowed" in jumped.message
    assert "between 48 and 72" in jumped.message
    assert steady.status == "passed"


def test_the_anomaly_check_runs_fused_with_other_checks(engine: DuckDBEngine) -> None:
    checks: list[CheckConfig] = [
        NotNullConfig(column="amount"),
        AnomalyConfig(metric="null_count", column="amount"),
    ]
    env = CheckEnv(logical_date=TESTED, logical_time=AS_OF, history=daily(10))

    not_null, anomaly_result = evaluate_checks(engine, "orders", checks, env)

    assert (not_null.status, not_null.unexpected_count) == ("failed", 10)
    assert (anomaly_result.status, anomaly_result.observed_value) == ("passed", 10)


def test_a_missing_column_is_an_error_of_this_check_only(engine: DuckDBEngine) -> None:
    checks: list[CheckConfig] = [
        AnomalyConfig(metric="mean", column="amout"),
        AnomalyConfig(metric="row_count"),
    ]

    broken, fine = evaluate_checks(engine, "orders", checks, CheckEnv(history=daily(100)))

    assert broken.status == "error"
    assert "column 'amout' not found" in broken.message
    assert "Did you mean 'amount'?" in broken.message
    assert fine.status == "passed"


def test_an_empty_table_has_no_mean_to_judge_and_fails_saying_so(engine: DuckDBEngine) -> None:
    engine.register_arrow("empty", orders().slice(0, 0))
    config = AnomalyConfig(metric="mean", column="amount")
    env = CheckEnv(logical_date=TESTED, history=daily(45))

    (result,) = evaluate_checks(engine, "empty", [config], env)

    assert result.status == "failed"
    assert result.observed_value is None
    assert "there was none to judge" in result.message


def test_the_check_name_says_metric_and_column() -> None:
    env = CheckEnv()
    from sluiceway.checks.table import compile_check

    assert compile_check(AnomalyConfig(metric="row_count"), env).name == "anomaly(row_count)"
    named = compile_check(AnomalyConfig(metric="mean", column="amount"), env)
    assert named.name == "anomaly(mean(amount))"


# --- the spec --------------------------------------------------------------------------------


def spec_with(check: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "orders",
        "sources": {"orders": {"type": "files", "path": "in/"}},
        "checks": [check],
        "sinks": [{"type": "delta", "path": "lake/orders"}],
    }


def test_the_shorthand_names_the_metric() -> None:
    pipeline = pipeline_from_dict(spec_with({"anomaly": "row_count"}))

    (config,) = pipeline.checks
    assert isinstance(config, AnomalyConfig)
    assert (config.metric, config.method, config.threshold, config.min_history) == (
        "row_count",
        "zscore",
        3.5,
        7,
    )


def test_an_unknown_metric_is_reported_with_its_path_and_a_suggestion() -> None:
    with pytest.raises(SpecError) as caught:
        pipeline_from_dict(spec_with({"anomaly": {"metric": "row_cnt"}}))

    text = str(caught.value)
    assert "checks" in text and "anomaly" in text
    assert "unknown metric 'row_cnt'. Did you mean 'row_count'?" in text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"metric": "mean"}, "metric 'mean' needs a 'column'"),
        ({"metric": "row_count", "column": "a"}, "metric 'row_count' takes no 'column'"),
        ({"metric": "sql: "}, "needs one SQL aggregate expression"),
        ({"metric": "sql: count(*); DROP TABLE t"}, "without ';'"),
        ({"metric": "row_count", "max_relative_change": 0.3}, "applies to method relative_change"),
        ({"metric": "row_count", "method": "relative_change", "threshold": 3}, "method zscore"),
        ({"metric": "row_count", "mostly": 0.9}, "takes no 'mostly'"),
        ({"metric": "row_count", "window_unit": "weeks"}, "'points' or 'days'"),
    ],
)
def test_an_inconsistent_config_says_what_to_change(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AnomalyConfig.model_validate(fields)

    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"window": 5}, "window 5 (points) holds at most 5 point(s), fewer than min_history 7"),
        (
            {"window": 30, "window_unit": "days", "seasonality": "day_of_week"},
            "Set window to at least 49 or min_history to at most 4",
        ),
        (
            {"window": 6, "window_unit": "days", "seasonality": "day_of_week", "min_history": 1},
            "holds at most 0 point(s) of the same weekday",
        ),
        (
            {"window": 5, "window_unit": "days", "seasonality": "hour_of_day"},
            "Set window to at least 7 or min_history to at most 5",
        ),
    ],
)
def test_a_window_that_cannot_reach_min_history_says_the_window_needed(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        AnomalyConfig(metric="row_count", **fields)

    assert message in str(caught.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"window": 7},
        {"window": 7, "window_unit": "days", "seasonality": "hour_of_day"},
        {"window": 49, "window_unit": "days", "seasonality": "day_of_week"},
        {"window": 12, "seasonality": "day_of_week", "min_history": 4},
    ],
)
def test_a_window_that_can_hold_min_history_points_is_accepted(fields: dict[str, Any]) -> None:
    assert AnomalyConfig(metric="row_count", **fields).rule().window == fields["window"]
