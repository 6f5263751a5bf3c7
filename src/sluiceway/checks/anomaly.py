"""`anomaly`: a metric of the table judged against its own history (`core.anomaly`).

The metric (a row count, a null ratio, a mean, a freshness, an SQL aggregate) is one
expression of the fused query and the check's `observed_value`; the runner stores it in the
metric history after the run, flagged when the check failed, and the next runs train on the
unflagged points of earlier logical dates.

Messages show the value and the expected range only for counts, ratios and distinct counts:
a mean, median, minimum, maximum, sum, deviation, freshness or SQL metric can reveal a row's
own value, so for those the message gives the score and the side of the range only.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, model_validator

from sluiceway.checks.base import Outcome, TableCheck, check_id, sql_literal
from sluiceway.core import registry
from sluiceway.core.anomaly import (
    AnomalyRule,
    Baseline,
    Direction,
    Method,
    Observation,
    Seasonality,
    Verdict,
    WindowUnit,
    current_observation,
    judge,
    observation,
)
from sluiceway.core.spec import CheckConfig
from sluiceway.engines.duckdb import quote_ident

SQL_PREFIX = "sql:"


@dataclass(frozen=True)
class Metric:
    """A named metric: its SQL (`{c}` the quoted column, `{as_of}` the run's instant), whether
    it needs a column, and whether a message may show its value (counts and ratios only)."""

    sql: str
    needs_column: bool
    shows_value: bool
    label: str


METRICS: dict[str, Metric] = {
    "row_count": Metric("count(*)", False, True, "row count"),
    "null_count": Metric("count(*) - count({c})", True, True, "NULL count"),
    "null_ratio": Metric("(count(*) - count({c})) / nullif(count(*), 0)", True, True, "NULL ratio"),
    "mean": Metric("avg({c})", True, False, "mean"),
    "median": Metric("median({c})", True, False, "median"),
    "min": Metric("min({c})", True, False, "minimum"),
    "max": Metric("max({c})", True, False, "maximum"),
    "sum": Metric("sum({c})", True, False, "sum"),
    "stdev": Metric("stddev_samp({c})", True, False, "standard deviation"),
    "distinct_count": Metric("count(DISTINCT {c})", True, True, "distinct count"),
    "unique_ratio": Metric(
        "count(DISTINCT {c}) / nullif(count({c}), 0)", True, True, "unique ratio"
    ),
    "freshness_s": Metric(
        "epoch({as_of}) - epoch(max(CAST({c} AS TIMESTAMPTZ)))", True, False, "freshness (s)"
    ),
}
"""Metric name → its definition; `sql: <expression>` names a custom aggregate instead."""

_DETECTION_FIELDS: dict[str, Method] = {
    "threshold": "zscore",
    "max_relative_change": "relative_change",
    "compare_to": "relative_change",
}


class AnomalyConfig(CheckConfig):
    """A metric of the table is not an anomaly against its history of earlier logical dates."""

    key: ClassVar[str] = "anomaly"
    ge_name: ClassVar[str | None] = None
    shorthand: ClassVar[str | None] = "metric"
    # The series is the metric's identity: retuning a detector keeps its history, and tiers
    # of one metric (warn at 3, error at 6) share one series, one point per date
    # (`RunStore.save_metrics` merges their copies).
    fingerprint_excludes: ClassVar[tuple[str, ...]] = (
        "threshold",
        "max_relative_change",
        "compare_to",
        "direction",
        "window",
        "window_unit",
        "seasonality",
        "min_history",
    )

    metric: str = Field(
        min_length=1,
        description=(
            f"What is measured: {', '.join(METRICS)}; or 'sql: <aggregate>' for a custom SQL "
            "aggregate over the table, e.g. 'sql: sum(amount) / count(*)'."
        ),
    )
    column: str | None = Field(
        None, min_length=1, description="The column of a column metric (all but row_count, sql:)."
    )
    method: Method = Field(
        "zscore",
        description="zscore: robust z-score (median/MAD); relative_change: change from a baseline.",
    )
    threshold: float = Field(
        3.5, gt=0, description="zscore: largest robust z-score that is not an anomaly."
    )
    max_relative_change: float = Field(
        0.5, gt=0, description="relative_change: largest change (0.5 = 50%) that is not one."
    )
    compare_to: Baseline = Field(
        "previous",
        description="relative_change: the baseline, the previous training point or their median.",
    )
    direction: Direction = Field(
        "both", description="both | up (only rises are anomalies) | down (only drops)."
    )
    window: int = Field(30, ge=1, description="How much history to train on, in window_unit.")
    window_unit: WindowUnit = Field(
        "points", description="points: the last `window` usable points; days: the last days."
    )
    seasonality: Seasonality = Field(
        "none",
        description="none | day_of_week | hour_of_day: train only on points of the same bucket.",
    )
    min_history: int = Field(
        7, ge=1, description="Fewest training points to judge; fewer: the check passes."
    )

    @model_validator(mode="after")
    def _consistent(self) -> AnomalyConfig:
        if self.mostly is not None:
            raise ValueError("'anomaly' takes no 'mostly': the metric is one number per run")
        _check_metric(self.metric, self.column)
        for name, method in _DETECTION_FIELDS.items():
            if name in self.model_fields_set and self.method != method:
                raise ValueError(
                    f"'{name}' applies to method {method}, not {self.method}; remove it or set "
                    f"method: {method}"
                )
        _check_window_reaches_min_history(self)
        return self

    def rule(self) -> AnomalyRule:
        """The detection parameters for `core.anomaly.judge`."""
        return AnomalyRule(
            method=self.method,
            threshold=self.threshold,
            max_relative_change=self.max_relative_change,
            compare_to=self.compare_to,
            direction=self.direction,
            window=self.window,
            window_unit=self.window_unit,
            seasonality=self.seasonality,
            min_history=self.min_history,
        )


class AnomalyCheck(TableCheck):
    """`anomaly`: computes the metric in the fused query, judges it against the history of
    this check's `observed_value` (flagged points left out)."""

    config: AnomalyConfig

    @property
    def name(self) -> str:
        if self.config.name:
            return self.config.name
        what = "sql" if self._custom_sql() else self.config.metric
        return f"anomaly({what}({self.column}))" if self.column else f"anomaly({what})"

    def aggregates(self) -> dict[str, str]:
        return {"metric": f"CAST({self.metric_sql()} AS DOUBLE)"}

    def metric_sql(self) -> str:
        """The SQL aggregate of the metric."""
        custom = self._custom_sql()
        if custom is not None:
            return f"(\n{custom}\n)"
        metric = METRICS[self.config.metric]
        column = quote_ident(self.column) if self.column else ""
        return metric.sql.format(c=column, as_of=sql_literal(self.env.as_of()))

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        value = values["metric"]
        if value is None:
            message = f"Expected {self._subject()} to have a value; there was none to judge."
            return Outcome(False, None, None, None, message)
        verdict = judge(self._tested(float(value)), self._history(), self.config.rule())
        message = self._message(float(value), verdict)
        return Outcome(not verdict.is_anomaly, value, None, None, message)

    def _tested(self, value: float) -> Observation:
        logical = self.env.logical_date or self.env.as_of().date()
        return current_observation(value, logical)

    def _history(self) -> list[Observation]:
        if self.env.history is None:
            return []
        points = self.env.history(check_id(self.config), "observed_value")
        return [
            observation(p.value, p.logical_date, p.recorded_at, is_flagged=p.flagged)
            for p in points
        ]

    def _message(self, value: float, verdict: Verdict) -> str:
        subject, shows = self._subject(), self._shows_value()
        learned = f"{verdict.training_size} earlier point(s){self._bucket_text()}"
        if verdict.status == "insufficient_history":
            shown = f" (it was {_number(value)})" if shows else ""
            return (
                f"Not judged: {subject} needs {self.config.min_history} earlier point(s)"
                f"{self._bucket_text()} that were not anomalies; there are "
                f"{verdict.training_size}{shown}. The check passes until there are enough."
            )
        expected = _range_text(verdict) if shows else "within its usual range"
        status = f"an anomaly, {_side(value, verdict)}" if verdict.is_anomaly else "normal"
        found = f"it was {_number(value)}: {status}" if shows else f"it was {status}"
        return f"Expected {subject} {expected}, learned from {learned}; {found} ({verdict.reason})."

    def _subject(self) -> str:
        if self._custom_sql() is not None:
            return f"the SQL metric '{self.config.name or self._custom_sql()}'"
        label = METRICS[self.config.metric].label
        return f"the {label} of column '{self.column}'" if self.column else f"the {label}"

    def _shows_value(self) -> bool:
        return self._custom_sql() is None and METRICS[self.config.metric].shows_value

    def _bucket_text(self) -> str:
        tested = self._tested(0.0)
        if self.config.seasonality == "day_of_week":
            return f" of the same weekday ({calendar.day_name[tested.logical.weekday()]})"
        if self.config.seasonality == "hour_of_day":
            return f" of the same hour of day ({tested.clock.hour:02d}h UTC)"
        return ""

    def _custom_sql(self) -> str | None:
        metric = self.config.metric
        return metric[len(SQL_PREFIX) :].strip() if metric.startswith(SQL_PREFIX) else None


def _check_metric(metric: str, column: str | None) -> None:
    if metric.startswith(SQL_PREFIX):
        expression = metric[len(SQL_PREFIX) :].strip()
        if not expression or ";" in expression:
            raise ValueError(
                "metric 'sql:' needs one SQL aggregate expression without ';', "
                "e.g. 'sql: sum(amount) / count(*)'"
            )
        if column is not None:
            raise ValueError("an 'sql:' metric takes no 'column'; name columns in the expression")
        return
    known = METRICS.get(metric)
    if known is None:
        hint = registry.did_you_mean(metric, list(METRICS))
        raise ValueError(
            f"unknown metric '{metric}'.{hint} Known metrics: {', '.join(METRICS)}, "
            "or 'sql: <aggregate>'"
        )
    if known.needs_column and column is None:
        raise ValueError(f"metric '{metric}' needs a 'column'")
    if not known.needs_column and column is not None:
        raise ValueError(f"metric '{metric}' takes no 'column'")


def _check_window_reaches_min_history(config: AnomalyConfig) -> None:
    """A window that can never hold `min_history` training points would never judge."""
    days_per_point = 7 if config.seasonality == "day_of_week" else 1
    if config.window_unit == "points":
        most, needed = config.window, config.min_history
    else:
        most, needed = config.window // days_per_point, config.min_history * days_per_point
    if most >= config.min_history:
        return
    bucket = " of the same weekday" if days_per_point == 7 else ""
    lower = f" or min_history to at most {most}" if most >= 1 else ""
    raise ValueError(
        f"window {config.window} ({config.window_unit}) holds at most {most} point(s){bucket}, "
        f"fewer than min_history {config.min_history}: the check would never judge. "
        f"Set window to at least {needed}{lower}"
    )


def _range_text(verdict: Verdict) -> str:
    low, high = verdict.lower, verdict.upper
    if low is not None and high is not None:
        return f"between {_number(low)} and {_number(high)}"
    if high is not None:
        return f"at most {_number(high)}"
    return f"at least {_number(low)}" if low is not None else "within its usual range"


def _side(value: float, verdict: Verdict) -> str:
    if verdict.upper is not None and value > verdict.upper:
        return "above the expected range"
    if verdict.lower is not None and value < verdict.lower:
        return "below the expected range"
    if verdict.is_anomaly:
        return "different from the constant value of its history"
    return "within the expected range"


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


registry.register("check", AnomalyConfig.key, AnomalyConfig, AnomalyCheck)
