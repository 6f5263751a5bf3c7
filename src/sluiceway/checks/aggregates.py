"""Checks on one number (or list) per table: column aggregates, SQL metrics, the column names.

Each compiles to one expression of the fused query. `observed_value` carries the aggregate;
messages state the bounds and which side of them it fell on, and show the number itself only
for counts and ratios — a mean, median, minimum or maximum can be a row's own value.
"""

from __future__ import annotations

from typing import Any

from sluiceway.checks.base import Outcome, TableCheck, sql_literal
from sluiceway.checks.column_values import user_sql
from sluiceway.checks.vocabulary import (
    AggregateBetweenConfig,
    ColumnsMatchListConfig,
    ColumnsMatchSetConfig,
    DistinctCountBetweenConfig,
    MaxBetweenConfig,
    MeanBetweenConfig,
    MedianBetweenConfig,
    MinBetweenConfig,
    MostCommonValueInSetConfig,
    QuantilesBetweenConfig,
    SqlMetricConfig,
    StdevBetweenConfig,
    SumBetweenConfig,
    TableCheckConfig,
    UniqueProportionBetweenConfig,
)
from sluiceway.engines.duckdb import quote_ident, quote_literal

AGGREGATES: dict[str, str] = {
    "mean_between": "avg({c})",
    "median_between": "median({c})",
    "stdev_between": "stddev_samp({c})",
    "min_between": "min({c})",
    "max_between": "max({c})",
    "sum_between": "sum({c})",
    "distinct_count_between": "count(DISTINCT {c})",
    "unique_proportion_between": "count(DISTINCT {c}) / nullif(count({c}), 0)",
}
REVEALS_NO_ROW_VALUE = frozenset({"distinct_count_between", "unique_proportion_between"})


class BoundedMetricCheck(TableCheck):
    """A check that one number, `metric`, lies within `min_value`..`max_value`."""

    config: AggregateBetweenConfig | SqlMetricConfig

    def shows_value(self) -> bool:
        """True when the number is a count or ratio, never a row's own value."""
        return False

    def metric_sql(self) -> str:
        """The SQL aggregate whose value is judged."""
        raise NotImplementedError

    def subject(self) -> str:
        """What the number is, for messages."""
        raise NotImplementedError

    def aggregates(self) -> dict[str, str]:
        return {"metric": f"CAST({self.metric_sql()} AS DOUBLE)"}

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        metric = values["metric"]
        expected = f"Expected {self.subject()} to be {self._bounds_text()}"
        if metric is None:
            return Outcome(False, None, None, None, f"{expected}; there was no value to judge.")
        side = self._side(float(metric))
        shown = f" ({metric:g})" if self.shows_value() else ""
        message = f"{expected}; it was {side}{shown}."
        return Outcome(side == "within the bounds", metric, None, None, message)

    def _bounds(self) -> list[tuple[str, float]]:
        c = self.config
        strict_min = getattr(c, "strict_min", False)
        strict_max = getattr(c, "strict_max", False)
        bounds = []
        if c.min_value is not None:
            bounds.append((">" if strict_min else ">=", c.min_value))
        if c.max_value is not None:
            bounds.append(("<" if strict_max else "<=", c.max_value))
        return bounds

    def _bounds_text(self) -> str:
        return " and ".join(f"{op} {value!r}" for op, value in self._bounds())

    def _side(self, metric: float) -> str:
        holds = {">": metric.__gt__, ">=": metric.__ge__, "<": metric.__lt__, "<=": metric.__le__}
        for op, value in self._bounds():
            if not holds[op](value):
                return "below the minimum" if op.startswith(">") else "above the maximum"
        return "within the bounds"


class ColumnAggregateCheck(BoundedMetricCheck):
    """`mean_between`, `median_between`, … : an aggregate of the non-NULL values of a column."""

    config: AggregateBetweenConfig

    def shows_value(self) -> bool:
        return self.config.key in REVEALS_NO_ROW_VALUE

    def metric_sql(self) -> str:
        return AGGREGATES[self.config.key].format(c=quote_ident(self.config.column))

    def subject(self) -> str:
        what = self.config.key.removesuffix("_between").replace("_", " ")
        return f"the {what} of column '{self.config.column}'"


class SqlMetricCheck(BoundedMetricCheck):
    """`sql_metric`: a configured SQL aggregate over the table."""

    config: SqlMetricConfig

    def metric_sql(self) -> str:
        return user_sql(self.config.expression)

    def subject(self) -> str:
        return f"the metric '{self.config.name}'"


class QuantilesBetweenCheck(TableCheck):
    """`quantiles_between`: each quantile (discrete: a value of the column) within its range.

    `unexpected_count` is the number of quantiles outside their range; messages name the
    quantile and the side, never its value.
    """

    config: QuantilesBetweenConfig

    def aggregates(self) -> dict[str, str]:
        ranges = self.config.quantile_ranges
        quantiles = ", ".join(repr(float(q)) for q in ranges.quantiles)
        column = quote_ident(self.config.column)
        return {"quantiles": f"CAST(quantile_disc({column}, [{quantiles}]) AS DOUBLE[])"}

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        ranges = self.config.quantile_ranges
        expected = (
            f"Expected the {_quantile_names(ranges.quantiles)} quantiles of column "
            f"'{self.config.column}' to lie in their ranges"
        )
        observed = values["quantiles"]
        if observed is None:
            return Outcome(False, None, None, None, f"{expected}; there was no value to judge.")
        misses = [
            f"the {q:g} quantile was {side}"
            for q, value, bounds in zip(
                ranges.quantiles, observed, ranges.value_ranges, strict=True
            )
            if (side := _side_of(value, bounds[0], bounds[1]))
        ]
        if not misses:
            return Outcome(True, None, 0, None, f"{expected}; they did.")
        return Outcome(False, None, len(misses), None, f"{expected}; {', '.join(misses)}.")


def _quantile_names(quantiles: list[float]) -> str:
    return ", ".join(f"{q:g}" for q in quantiles)


def _side_of(value: float, low: float | None, high: float | None) -> str:
    if low is not None and value < low:
        return "below the minimum"
    if high is not None and value > high:
        return "above the maximum"
    return ""


class MostCommonValueInSetCheck(TableCheck):
    """`most_common_value_in_set`: the most common non-NULL value is in the set.

    The values tied for most common are found and compared with the set in SQL (a
    `histogram` of the column, in the same scan), so no value leaves the engine: results
    carry how many values tie and how many of them are in the set.
    """

    config: MostCommonValueInSetConfig

    def aggregates(self) -> dict[str, str]:
        counts = f"histogram({quote_ident(self.config.column)})"
        modes = f"list_filter(map_entries({counts}), lambda e: e.value = list_max(map_values({counts})))"
        allowed = ", ".join(sql_literal(v) for v in self.config.value_set)
        return {
            "modes": f"len({modes})",
            "in_set": f"len(list_filter({modes}, lambda m: m.key IN ({allowed})))",
            "top": f"list_max(map_values({counts}))",
        }

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        ties = "ties okay" if self.config.ties_okay else "no ties"
        expected = (
            f"Expected the most common value of column '{self.config.column}' to be in the set "
            f"of {len(self.config.value_set)} allowed values ({ties})"
        )
        if values["modes"] is None:
            return Outcome(False, None, None, None, f"{expected}; there was no value to judge.")
        modes, in_set, top = int(values["modes"]), int(values["in_set"]), int(values["top"])
        success = in_set > 0 if self.config.ties_okay else modes == 1 and in_set == 1
        found = (
            f"{modes} values tied for most common ({top} rows each), {in_set} of them in the set"
            if modes > 1
            else f"the most common value ({top} rows) was {'' if in_set else 'not '}in the set"
        )
        return Outcome(success, None, modes - in_set, None, f"{expected}; {found}.")


class TableColumnsCheck(TableCheck):
    """A check on the table's column names, read by a subquery of the fused query."""

    def aggregates_on(self, table: str) -> dict[str, str]:
        # The catalog lookup rides in the fused query, so no DESCRIBE statement is sent; a temp
        # table shadows a persistent one of the same name, as in name resolution.
        oid = (
            "SELECT table_oid FROM duckdb_columns() "
            f"WHERE table_name = {quote_literal(table)} "
            "ORDER BY database_name <> 'temp', schema_name <> 'main' LIMIT 1"
        )
        names = (
            "SELECT list(column_name ORDER BY column_index) FROM duckdb_columns() "
            f"WHERE table_oid = ({oid})"
        )
        return {"columns": f"({names})"}

    def verdict(self, actual: list[str]) -> tuple[bool, int, str]:
        """(success, number of mismatched columns, what was wrong) for the actual columns."""
        raise NotImplementedError

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        actual = [str(name) for name in values["columns"] or []]
        success, mismatched, detail = self.verdict(actual)
        message = f"Expected {self.expected_text()}; {detail}."
        return Outcome(success, len(actual), mismatched, None, message)

    def expected_text(self) -> str:
        """The expectation, for messages."""
        raise NotImplementedError


class ColumnsMatchSetCheck(TableColumnsCheck):
    """`columns_match_set`: the column names equal (or include) the set."""

    config: ColumnsMatchSetConfig

    def expected_text(self) -> str:
        how = "to be exactly" if self.config.exact_match else "to include"
        return f"the table's columns {how} {_names(self.config.column_set)}"

    def verdict(self, actual: list[str]) -> tuple[bool, int, str]:
        missing = [c for c in self.config.column_set if c not in actual]
        extra = [c for c in actual if c not in self.config.column_set]
        if not self.config.exact_match:
            extra = []
        problems = _listed("missing", missing) + _listed("unexpected", extra)
        return not problems, len(missing) + len(extra), "; ".join(problems) or "they were"


class ColumnsMatchListCheck(TableColumnsCheck):
    """`columns_match_list`: the column names, in order, equal the list."""

    config: ColumnsMatchListConfig

    def expected_text(self) -> str:
        return f"the table's columns to be, in order, {_names(self.config.column_list)}"

    def verdict(self, actual: list[str]) -> tuple[bool, int, str]:
        expected = self.config.column_list
        if actual == expected:
            return True, 0, "they were"
        wrong = sum(a != e for a, e in zip(actual, expected, strict=False))
        mismatched = wrong + abs(len(actual) - len(expected))
        return False, mismatched, f"found {_names(actual)} ({mismatched} out of place)"


def _names(columns: list[str]) -> str:
    return "[" + ", ".join(f"'{c}'" for c in columns) + "]"


def _listed(label: str, columns: list[str]) -> list[str]:
    return [f"{label}: {_names(columns)}"] if columns else []


IMPLEMENTATIONS: dict[type[TableCheckConfig], type[TableCheck]] = {
    MeanBetweenConfig: ColumnAggregateCheck,
    MedianBetweenConfig: ColumnAggregateCheck,
    StdevBetweenConfig: ColumnAggregateCheck,
    MinBetweenConfig: ColumnAggregateCheck,
    MaxBetweenConfig: ColumnAggregateCheck,
    SumBetweenConfig: ColumnAggregateCheck,
    DistinctCountBetweenConfig: ColumnAggregateCheck,
    UniqueProportionBetweenConfig: ColumnAggregateCheck,
    ColumnsMatchSetConfig: ColumnsMatchSetCheck,
    ColumnsMatchListConfig: ColumnsMatchListCheck,
    SqlMetricConfig: SqlMetricCheck,
    QuantilesBetweenConfig: QuantilesBetweenCheck,
    MostCommonValueInSetConfig: MostCommonValueInSetCheck,
}
