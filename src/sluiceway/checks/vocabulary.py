"""The table-check vocabulary: one frozen config model per check.

Each check has a short YAML key (`not_null`) and, where one exists, the Great Expectations
name it answers to as well (`expect_column_values_to_not_be_null`), so GE suites carry over.
`severity` (error | warn), `mostly` and `name` come from `CheckConfig`.

Column-value checks follow GE: NULLs are not judged by `between`, `in_set`, `regex`,
`unique` and the other value checks (they are neither expected nor unexpected); `not_null`,
`is_null` and `completeness` are the checks about NULLs.

The checks that reach beyond one table's values (`row_count_equal_other_table`,
`values_exist_in`, `of_type`, `in_type_list`, `freshness`) keep their configs beside their
implementations in `extra`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from sluiceway.core.spec import CheckConfig, Model

Bound = int | float | str | datetime | date
SetValue = str | int | float | bool


class TableCheckConfig(CheckConfig):
    """Base of the built-in table checks; `ge_name` is the Great Expectations alias,
    `also_known_as` other names the check answers to, and `no_mostly` says why a check that
    judges one number (not a fraction of rows) takes no `mostly`."""

    ge_name: ClassVar[str | None] = None
    also_known_as: ClassVar[tuple[str, ...]] = ()
    no_mostly: ClassVar[str | None] = None

    @model_validator(mode="after")
    def _mostly_applies(self) -> TableCheckConfig:
        if self.no_mostly is not None:
            forbid_mostly(self, self.no_mostly)
        return self


class ColumnCheckConfig(TableCheckConfig):
    """A check about the values of one column."""

    column: str = Field(min_length=1, description="The column the check looks at.")


class NotNullConfig(ColumnCheckConfig):
    """Every value of `column` is non-NULL (or at least `mostly` of them)."""

    key: ClassVar[str] = "not_null"
    ge_name: ClassVar[str | None] = "expect_column_values_to_not_be_null"
    shorthand: ClassVar[str | None] = "column"


class BetweenConfig(ColumnCheckConfig):
    """Non-NULL values of `column` lie between `min_value` and `max_value`."""

    key: ClassVar[str] = "between"
    ge_name: ClassVar[str | None] = "expect_column_values_to_be_between"

    min_value: Bound | None = Field(None, description="Lower bound (None: no lower bound).")
    max_value: Bound | None = Field(None, description="Upper bound (None: no upper bound).")
    strict_min: bool = Field(False, description="True: a value equal to min_value is unexpected.")
    strict_max: bool = Field(False, description="True: a value equal to max_value is unexpected.")

    @model_validator(mode="after")
    def _has_a_bound(self) -> BetweenConfig:
        _require_ordered_bounds(self.min_value, self.max_value)
        return self


class InSetConfig(ColumnCheckConfig):
    """Non-NULL values of `column` are among `value_set`."""

    key: ClassVar[str] = "in_set"
    ge_name: ClassVar[str | None] = "expect_column_values_to_be_in_set"

    value_set: list[SetValue] = Field(min_length=1, description="The allowed values.")


class UniqueConfig(ColumnCheckConfig):
    """No non-NULL value of `column` occurs twice; each repeat beyond the first is unexpected."""

    key: ClassVar[str] = "unique"
    ge_name: ClassVar[str | None] = "expect_column_values_to_be_unique"
    shorthand: ClassVar[str | None] = "column"


class RegexConfig(ColumnCheckConfig):
    """Non-NULL values of `column` (as text) match `regex` as a whole.

    Unlike Great Expectations, which accepts a match anywhere in the value, the whole value
    must match (as in a contract's `regex`): a GE pattern `abc` becomes `.*abc.*`.
    """

    key: ClassVar[str] = "regex"
    ge_name: ClassVar[str | None] = "expect_column_values_to_match_regex"

    regex: str = Field(description="RE2 regular expression the whole value must match.")


class RowCountBetweenConfig(TableCheckConfig):
    """The table has between `min_value` and `max_value` rows (inclusive)."""

    key: ClassVar[str] = "row_count_between"
    ge_name: ClassVar[str | None] = "expect_table_row_count_to_be_between"

    min_value: int | None = Field(None, ge=0, description="Fewest rows allowed (None: no minimum).")
    max_value: int | None = Field(None, ge=0, description="Most rows allowed (None: no maximum).")

    @model_validator(mode="after")
    def _has_a_bound_and_no_mostly(self) -> RowCountBetweenConfig:
        _require_ordered_bounds(self.min_value, self.max_value)
        forbid_mostly(self, "the row count is one number, not a fraction of rows")
        return self


class CompletenessConfig(ColumnCheckConfig):
    """At least `min` of the rows have a non-NULL `column` (Soda's completeness)."""

    key: ClassVar[str] = "completeness"

    min: float = Field(ge=0, le=1, description="Smallest allowed ratio of non-NULL values (0..1).")

    no_mostly: ClassVar[str | None] = "'min' already is the required ratio"


class IsNullConfig(ColumnCheckConfig):
    """Every value of `column` is NULL (or at least `mostly` of them)."""

    key: ClassVar[str] = "is_null"
    ge_name: ClassVar[str | None] = "expect_column_values_to_be_null"
    shorthand: ClassVar[str | None] = "column"


class NotInSetConfig(ColumnCheckConfig):
    """No non-NULL value of `column` is among `value_set`."""

    key: ClassVar[str] = "not_in_set"
    ge_name: ClassVar[str | None] = "expect_column_values_to_not_be_in_set"

    value_set: list[SetValue] = Field(min_length=1, description="The forbidden values.")


class LengthBetweenConfig(ColumnCheckConfig):
    """Non-NULL values of `column`, as text, have between `min_value` and `max_value` characters."""

    key: ClassVar[str] = "length_between"
    ge_name: ClassVar[str | None] = "expect_column_value_lengths_to_be_between"

    min_value: int | None = Field(None, ge=0, description="Fewest characters (None: no minimum).")
    max_value: int | None = Field(None, ge=0, description="Most characters (None: no maximum).")

    @model_validator(mode="after")
    def _has_a_bound(self) -> LengthBetweenConfig:
        _require_ordered_bounds(self.min_value, self.max_value)
        return self


class NotRegexConfig(ColumnCheckConfig):
    """No non-NULL value of `column` (as text) matches `regex` as a whole.

    As with `regex`, the whole value must match to count: a GE pattern `abc` becomes `.*abc.*`.
    """

    key: ClassVar[str] = "not_regex"
    ge_name: ClassVar[str | None] = "expect_column_values_to_not_match_regex"

    regex: str = Field(description="RE2 regular expression no whole value may match.")


class StrftimeFormatConfig(ColumnCheckConfig):
    """Non-NULL values of `column`, as text, parse with `strftime_format` (DuckDB strptime)."""

    key: ClassVar[str] = "strftime_format"
    ge_name: ClassVar[str | None] = "expect_column_values_to_match_strftime_format"

    strftime_format: str = Field(min_length=1, description="The format, e.g. '%Y-%m-%d'.")


class JsonParseableConfig(ColumnCheckConfig):
    """Non-NULL values of `column`, as text, are valid JSON."""

    key: ClassVar[str] = "json_parseable"
    ge_name: ClassVar[str | None] = "expect_column_values_to_be_json_parseable"
    shorthand: ClassVar[str | None] = "column"


class CompoundUniqueConfig(TableCheckConfig):
    """No combination of `column_list` values occurs twice; rows all NULL there are not judged."""

    key: ClassVar[str] = "compound_unique"
    ge_name: ClassVar[str | None] = "expect_compound_columns_to_be_unique"

    column_list: list[str] = Field(min_length=2, description="The columns that form the key.")


class PairGreaterConfig(TableCheckConfig):
    """`column_a` is greater than `column_b` in every row (rows NULL in both are not judged)."""

    key: ClassVar[str] = "pair_greater"
    ge_name: ClassVar[str | None] = "expect_column_pair_values_a_to_be_greater_than_b"

    column_a: str = Field(alias="column_A", min_length=1, description="The greater column.")
    column_b: str = Field(alias="column_B", min_length=1, description="The smaller column.")
    or_equal: bool = Field(False, description="True: equal values are expected too.")


class PairEqualConfig(TableCheckConfig):
    """`column_a` equals `column_b` in every row (rows NULL in both are not judged)."""

    key: ClassVar[str] = "pair_equal"
    ge_name: ClassVar[str | None] = "expect_column_pair_values_to_be_equal"

    column_a: str = Field(alias="column_A", min_length=1, description="The first column.")
    column_b: str = Field(alias="column_B", min_length=1, description="The second column.")


class MulticolumnSumConfig(TableCheckConfig):
    """In every row the `column_list` values add up to `sum_total` (NULLs count as 0).

    Rows NULL in every listed column are not judged.
    """

    key: ClassVar[str] = "multicolumn_sum"
    ge_name: ClassVar[str | None] = "expect_multicolumn_sum_to_equal"

    column_list: list[str] = Field(min_length=2, description="The columns to add up per row.")
    sum_total: int | float = Field(description="The total every row must add up to.")


class ColumnsMatchSetConfig(TableCheckConfig):
    """The table's column names equal `column_set` (or include it, without `exact_match`)."""

    key: ClassVar[str] = "columns_match_set"
    ge_name: ClassVar[str | None] = "expect_table_columns_to_match_set"

    column_set: list[str] = Field(min_length=1, description="The expected column names.")
    exact_match: bool = Field(True, description="False: other columns may exist too.")

    no_mostly: ClassVar[str | None] = "the table's columns are judged as a whole"


class ColumnsMatchListConfig(TableCheckConfig):
    """The table's column names are `column_list`, in that order."""

    key: ClassVar[str] = "columns_match_list"
    ge_name: ClassVar[str | None] = "expect_table_columns_to_match_ordered_list"

    column_list: list[str] = Field(min_length=1, description="The expected columns, in order.")

    no_mostly: ClassVar[str | None] = "the table's columns are judged as a whole"


class SqlPredicateConfig(TableCheckConfig):
    """Every row satisfies the SQL `predicate`; rows where it is false are unexpected."""

    key: ClassVar[str] = "sql_predicate"

    name: str = Field(min_length=1, description="A name for the check in results and reports.")
    predicate: str = Field(min_length=1, description="SQL condition over one row, e.g. 'a < b'.")

    @field_validator("predicate")
    @classmethod
    def _one_expression(cls, value: str) -> str:
        return _one_sql_expression(value)


class AggregateBetweenConfig(ColumnCheckConfig):
    """An aggregate of the non-NULL values of `column` lies between the bounds; no `mostly`."""

    min_value: int | float | None = Field(None, description="Lower bound (None: no lower bound).")
    max_value: int | float | None = Field(None, description="Upper bound (None: no upper bound).")
    strict_min: bool = Field(False, description="True: an aggregate equal to min_value fails.")
    strict_max: bool = Field(False, description="True: an aggregate equal to max_value fails.")

    @model_validator(mode="after")
    def _bounds_and_no_mostly(self) -> AggregateBetweenConfig:
        _require_ordered_bounds(self.min_value, self.max_value)
        forbid_mostly(self, "the aggregate is one number, not a fraction of rows")
        return self


class MeanBetweenConfig(AggregateBetweenConfig):
    """The mean of `column` lies between the bounds."""

    key: ClassVar[str] = "mean_between"
    ge_name: ClassVar[str | None] = "expect_column_mean_to_be_between"


class MedianBetweenConfig(AggregateBetweenConfig):
    """The median of `column` lies between the bounds."""

    key: ClassVar[str] = "median_between"
    ge_name: ClassVar[str | None] = "expect_column_median_to_be_between"


class StdevBetweenConfig(AggregateBetweenConfig):
    """The sample standard deviation of `column` lies between the bounds."""

    key: ClassVar[str] = "stdev_between"
    ge_name: ClassVar[str | None] = "expect_column_stdev_to_be_between"


class MinBetweenConfig(AggregateBetweenConfig):
    """The smallest value of `column` lies between the bounds."""

    key: ClassVar[str] = "min_between"
    ge_name: ClassVar[str | None] = "expect_column_min_to_be_between"


class MaxBetweenConfig(AggregateBetweenConfig):
    """The largest value of `column` lies between the bounds."""

    key: ClassVar[str] = "max_between"
    ge_name: ClassVar[str | None] = "expect_column_max_to_be_between"


class SumBetweenConfig(AggregateBetweenConfig):
    """The sum of `column` lies between the bounds."""

    key: ClassVar[str] = "sum_between"
    ge_name: ClassVar[str | None] = "expect_column_sum_to_be_between"


class DistinctCountBetweenConfig(AggregateBetweenConfig):
    """The number of distinct non-NULL values of `column` lies between the bounds."""

    key: ClassVar[str] = "distinct_count_between"
    ge_name: ClassVar[str | None] = "expect_column_unique_value_count_to_be_between"


class UniqueProportionBetweenConfig(AggregateBetweenConfig):
    """Distinct non-NULL values over non-NULL values of `column` lies between the bounds."""

    key: ClassVar[str] = "unique_proportion_between"
    ge_name: ClassVar[str | None] = "expect_column_proportion_of_unique_values_to_be_between"


class SqlMetricConfig(TableCheckConfig):
    """The SQL aggregate `expression` over the table lies between the bounds; no `mostly`."""

    key: ClassVar[str] = "sql_metric"

    name: str = Field(min_length=1, description="A name for the check in results and reports.")
    expression: str = Field(min_length=1, description="SQL aggregate, e.g. 'sum(a) / count(*)'.")
    min_value: int | float | None = Field(None, description="Lower bound (None: no lower bound).")
    max_value: int | float | None = Field(None, description="Upper bound (None: no upper bound).")

    @field_validator("expression")
    @classmethod
    def _one_expression(cls, value: str) -> str:
        return _one_sql_expression(value)

    @model_validator(mode="after")
    def _bounds_and_no_mostly(self) -> SqlMetricConfig:
        _require_ordered_bounds(self.min_value, self.max_value)
        forbid_mostly(self, "the metric is one number, not a fraction of rows")
        return self


class DateutilParseableConfig(ColumnCheckConfig):
    """Non-NULL values of `column`, as text, parse as a date or a date and time.

    The accepted forms are listed in `column_values.DATE_FORMATS` and in
    docs/quality/checks.md; unlike Python's dateutil, a bare time or a free-text date is not.
    """

    key: ClassVar[str] = "dateutil_parseable"
    ge_name: ClassVar[str | None] = "expect_column_values_to_be_dateutil_parseable"
    shorthand: ClassVar[str | None] = "column"


class MonotonicConfig(ColumnCheckConfig):
    """Non-NULL values of `column` never go back compared with the previous non-NULL value."""

    strictly: bool = Field(
        False, description="True: a value equal to the previous one is unexpected."
    )
    order_by: str | None = Field(
        None,
        min_length=1,
        description="Column that orders the rows (ties and NULLs keep table order); "
        "None: the table's row order.",
    )


class IncreasingConfig(MonotonicConfig):
    """Each non-NULL value of `column` is at least the previous non-NULL value."""

    key: ClassVar[str] = "increasing"
    ge_name: ClassVar[str | None] = "expect_column_values_to_be_increasing"


class DecreasingConfig(MonotonicConfig):
    """Each non-NULL value of `column` is at most the previous non-NULL value."""

    key: ClassVar[str] = "decreasing"
    ge_name: ClassVar[str | None] = "expect_column_values_to_be_decreasing"


class QuantileRanges(Model):
    """Quantiles of a column and the range each must lie in."""

    quantiles: list[float] = Field(
        min_length=1, description="The quantiles to compute, each between 0 and 1."
    )
    value_ranges: list[list[float | int | None]] = Field(
        min_length=1,
        description="[min, max] per quantile, in the same order; None: that side is open.",
    )

    @model_validator(mode="after")
    def _one_range_per_quantile(self) -> QuantileRanges:
        if any(not 0 <= q <= 1 for q in self.quantiles):
            raise ValueError("quantiles must lie between 0 and 1")
        if len(self.value_ranges) != len(self.quantiles):
            raise ValueError(
                f"value_ranges has {len(self.value_ranges)} ranges for "
                f"{len(self.quantiles)} quantiles; give one [min, max] per quantile"
            )
        for low_high in self.value_ranges:
            if len(low_high) != 2:
                raise ValueError(f"each value range is [min, max]; got {low_high!r}")
            low, high = low_high
            if low is not None and high is not None and low > high:
                raise ValueError(f"value range {low_high!r} has min greater than max")
        return self


class QuantilesBetweenConfig(ColumnCheckConfig):
    """Each listed quantile of the non-NULL values of `column` lies in its range; no `mostly`.

    Quantiles are exact and discrete (a value of the column, `quantile_disc`), as with
    Great Expectations on SQL databases.
    """

    key: ClassVar[str] = "quantiles_between"
    ge_name: ClassVar[str | None] = "expect_column_quantile_values_to_be_between"

    quantile_ranges: QuantileRanges = Field(
        description="{quantiles: [0.25, 0.5, ...], value_ranges: [[min, max], ...]}."
    )

    no_mostly: ClassVar[str | None] = (
        "quantiles are numbers of the whole column, not a fraction of rows"
    )


class MostCommonValueInSetConfig(ColumnCheckConfig):
    """The most common non-NULL value of `column` is in `value_set`; no `mostly`."""

    key: ClassVar[str] = "most_common_value_in_set"
    ge_name: ClassVar[str | None] = "expect_column_most_common_value_to_be_in_set"

    value_set: list[SetValue] = Field(min_length=1, description="The allowed most common values.")
    ties_okay: bool = Field(
        False,
        description="True: passes when one of the values tied for most common is in the set; "
        "False: there must be one most common value, and it must be in the set.",
    )

    no_mostly: ClassVar[str | None] = "the most common value is one value, not a fraction of rows"


CHECK_CONFIGS: tuple[type[TableCheckConfig], ...] = (
    NotNullConfig,
    BetweenConfig,
    InSetConfig,
    UniqueConfig,
    RegexConfig,
    RowCountBetweenConfig,
    CompletenessConfig,
    IsNullConfig,
    NotInSetConfig,
    LengthBetweenConfig,
    NotRegexConfig,
    MeanBetweenConfig,
    MedianBetweenConfig,
    StdevBetweenConfig,
    MinBetweenConfig,
    MaxBetweenConfig,
    SumBetweenConfig,
    DistinctCountBetweenConfig,
    UniqueProportionBetweenConfig,
    StrftimeFormatConfig,
    JsonParseableConfig,
    CompoundUniqueConfig,
    PairGreaterConfig,
    PairEqualConfig,
    MulticolumnSumConfig,
    ColumnsMatchSetConfig,
    ColumnsMatchListConfig,
    SqlPredicateConfig,
    SqlMetricConfig,
    DateutilParseableConfig,
    IncreasingConfig,
    DecreasingConfig,
    QuantilesBetweenConfig,
    MostCommonValueInSetConfig,
)


def _require_ordered_bounds(low: Any, high: Any) -> None:
    if low is None and high is None:
        raise ValueError("set min_value, max_value or both")
    try:
        reversed_bounds = low is not None and high is not None and low > high
    except TypeError:
        return
    if reversed_bounds:
        raise ValueError(f"min_value {low!r} is greater than max_value {high!r}")


def forbid_mostly(config: CheckConfig, why: str) -> None:
    """Reject `mostly` on a check that judges one number, not a fraction of rows (`why`)."""
    if config.mostly is not None:
        raise ValueError(f"'{config.key}' takes no 'mostly': {why}")


def _one_sql_expression(value: str) -> str:
    if ";" in value:
        raise ValueError("must be one SQL expression, without ';'")
    return value
