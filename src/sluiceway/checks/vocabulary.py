"""The table-check vocabulary: one frozen config model per check.

Each check has a short YAML key (`not_null`) and, where one exists, the Great Expectations
name it answers to as well (`expect_column_values_to_not_be_null`), so GE suites carry over.
`severity` (error | warn), `mostly` and `name` come from `CheckConfig`.

Column-value checks follow GE: NULLs are not judged by `between`, `in_set`, `regex` and
`unique` (they are neither expected nor unexpected); `not_null` and `completeness` are the
checks about NULLs.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar

from pydantic import Field, model_validator

from sluiceway.core.spec import CheckConfig

Bound = int | float | str | datetime | date
SetValue = str | int | float | bool


class TableCheckConfig(CheckConfig):
    """Base of the built-in table checks; `ge_name` is the Great Expectations alias."""

    ge_name: ClassVar[str | None] = None


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
        _forbid_mostly(self, "the row count is one number, not a fraction of rows")
        return self


class CompletenessConfig(ColumnCheckConfig):
    """At least `min` of the rows have a non-NULL `column` (Soda's completeness)."""

    key: ClassVar[str] = "completeness"

    min: float = Field(ge=0, le=1, description="Smallest allowed ratio of non-NULL values (0..1).")

    @model_validator(mode="after")
    def _no_mostly(self) -> CompletenessConfig:
        _forbid_mostly(self, "'min' already is the required ratio")
        return self


CHECK_CONFIGS: tuple[type[TableCheckConfig], ...] = (
    NotNullConfig,
    BetweenConfig,
    InSetConfig,
    UniqueConfig,
    RegexConfig,
    RowCountBetweenConfig,
    CompletenessConfig,
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


def _forbid_mostly(config: CheckConfig, why: str) -> None:
    if config.mostly is not None:
        raise ValueError(f"'{config.key}' takes no 'mostly': {why}")
