"""Row-level checks of the Great Expectations vocabulary: each counts its unexpected rows.

Like the checks in `table`, each compiles to `count(...) FILTER (...)` aggregates that join the
one fused query; `mostly` applies to the share of judged rows.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sluiceway.checks.base import (
    ROW_POSITION,
    ColumnValuesCheck,
    TableCheck,
    sample_query,
    sql_literal,
)
from sluiceway.checks.vocabulary import (
    CompoundUniqueConfig,
    DateutilParseableConfig,
    DecreasingConfig,
    IncreasingConfig,
    IsNullConfig,
    JsonParseableConfig,
    LengthBetweenConfig,
    MonotonicConfig,
    MulticolumnSumConfig,
    NotInSetConfig,
    NotRegexConfig,
    PairEqualConfig,
    PairGreaterConfig,
    SqlPredicateConfig,
    StrftimeFormatConfig,
    TableCheckConfig,
)
from sluiceway.engines.duckdb import quote_ident, quote_literal

# The forms `dateutil_parseable` accepts beyond DuckDB's own casts (ISO 8601 and its
# relatives, see docs/quality/checks.md). Month names are English, in any letter case.
DATE_FORMATS: tuple[str, ...] = (
    "%d.%m.%Y",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%m/%d/%Y",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%d/%m/%Y",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d-%m-%Y",
    "%Y%m%d",
    "%b %d %Y",
    "%b %d, %Y",
    "%b %d %Y %H:%M:%S",
    "%B %d %Y",
    "%B %d, %Y",
    "%d %b %Y",
    "%d %b %Y %H:%M",
    "%d %b %Y %H:%M:%S",
    "%d %B %Y",
    "%d %B %Y %H:%M",
    "%d-%b-%Y",
    "%a %b %d %H:%M:%S %Y",
)
# Kept apart and tried one by one: given in a list, even on its own, a zoned format makes
# DuckDB (seen on 2.0.1) roll an impossible day over into the next month ('Fri, 31 Feb 2024
# 10:00:00 +0000' became 2 March; in one list with the formats above, '31.02.2024' did).
# The list of the formats above does not: each impossible date there was checked.
ZONED_DATE_FORMATS: tuple[str, ...] = ("%a, %d %b %Y %H:%M:%S %z",)


def _text(column: str) -> str:
    return f"CAST({column} AS VARCHAR)"


def user_sql(expression: str) -> str:
    """A configured SQL expression, parenthesised on its own lines so a `--` comment ends there."""
    return f"(\n{expression}\n)"


class IsNullCheck(ColumnValuesCheck):
    """`is_null`: non-NULL values are the unexpected ones, judged over all rows."""

    subject = "values"
    verdict = "were not NULL"

    def row_condition(self) -> str | None:
        return f"{quote_ident(self._column)} IS NOT NULL"

    def predicate(self) -> str:
        return "to be NULL"

    def aggregates(self) -> dict[str, str]:
        return {"non_null": f"count({quote_ident(self._column)})"}

    def unexpected_sample_sql(self, table: str) -> str | None:
        column = quote_ident(self._column)
        return sample_query(table, column, where=f"{column} IS NOT NULL")

    def counts(self, values: dict[str, Any], rows: int) -> tuple[int, int]:
        return int(values["non_null"]), rows


class NotInSetCheck(ColumnValuesCheck):
    """`not_in_set`: non-NULL values outside the forbidden ones."""

    config: NotInSetConfig
    verdict = "were in the set"

    def predicate(self) -> str:
        return f"to be outside the set of {len(self.config.value_set)} forbidden values"

    def unexpected_sql(self, column: str) -> str:
        forbidden = ", ".join(sql_literal(v) for v in self.config.value_set)
        return f"{column} IN ({forbidden})"


class LengthBetweenCheck(ColumnValuesCheck):
    """`length_between`: the length of each non-NULL value, as text, within the bounds."""

    config: LengthBetweenConfig

    def predicate(self) -> str:
        low, high = self.config.min_value, self.config.max_value
        bounds = [f">= {low}" if low is not None else "", f"<= {high}" if high is not None else ""]
        return "to have a length " + " and ".join(b for b in bounds if b)

    def unexpected_sql(self, column: str) -> str:
        length = f"length({_text(column)})"
        low, high = self.config.min_value, self.config.max_value
        outside = [
            f"{length} < {low}" if low is not None else "",
            f"{length} > {high}" if high is not None else "",
        ]
        return " OR ".join(o for o in outside if o)


class NotRegexCheck(ColumnValuesCheck):
    """`not_regex`: non-NULL values, as text, do not match the whole regular expression."""

    config: NotRegexConfig
    verdict = "matched"

    def predicate(self) -> str:
        return f"not to match the regex {self.config.regex!r}"

    def unexpected_sql(self, column: str) -> str:
        return f"regexp_full_match({_text(column)}, {quote_literal(self.config.regex)})"


class StrftimeFormatCheck(ColumnValuesCheck):
    """`strftime_format`: non-NULL values, as text, parse with the format."""

    config: StrftimeFormatConfig
    verdict = "did not parse"

    def predicate(self) -> str:
        return f"to match the strftime format {self.config.strftime_format!r}"

    def unexpected_sql(self, column: str) -> str:
        parsed = f"try_strptime({_text(column)}, {quote_literal(self.config.strftime_format)})"
        return f"{column} IS NOT NULL AND {parsed} IS NULL"


class JsonParseableCheck(ColumnValuesCheck):
    """`json_parseable`: non-NULL values, as text, are valid JSON."""

    verdict = "were not valid JSON"

    def predicate(self) -> str:
        return "to be parseable as JSON"

    def unexpected_sql(self, column: str) -> str:
        return f"NOT json_valid({_text(column)})"


class DateutilParseableCheck(ColumnValuesCheck):
    """`dateutil_parseable`: non-NULL values, as text, parse as a date or date and time."""

    verdict = "did not parse as dates"

    def predicate(self) -> str:
        return "to parse as a date or date and time"

    def unexpected_sql(self, column: str) -> str:
        text = _text(column)
        formats = ", ".join(quote_literal(f) for f in DATE_FORMATS)
        parsed = [
            f"try_cast({text} AS TIMESTAMPTZ)",
            f"try_cast({text} AS DATE)",
            f"try_strptime({text}, [{formats}])",
            *(f"try_strptime({text}, {quote_literal(f)})" for f in ZONED_DATE_FORMATS),
        ]
        return f"{column} IS NOT NULL AND " + " AND ".join(f"{p} IS NULL" for p in parsed)


class MonotonicCheck(ColumnValuesCheck):
    """`increasing` / `decreasing`: a value that goes back compared with the previous non-NULL
    value (by `order_by`, ties and NULLs in table order) is unexpected; the first is not."""

    config: MonotonicConfig
    verdict = "were out of order"
    went_back: ClassVar[dict[str, tuple[str, str]]] = {
        "increasing": ("<", "<="),
        "decreasing": (">", ">="),
    }

    def predicate(self) -> str:
        strictly = "strictly " if self.config.strictly else ""
        order = f"ordered by '{self.config.order_by}'" if self.config.order_by else "in table order"
        return f"to be {strictly}{self.config.key} ({order})"

    def window_columns(self) -> dict[str, str]:
        order = f"{quote_ident(self.config.order_by)}, " if self.config.order_by else ""
        previous = f"lag({quote_ident(self._column)} IGNORE NULLS)"
        return {self.window_name("previous"): f"{previous} OVER (ORDER BY {order}{ROW_POSITION})"}

    def unexpected_sql(self, column: str) -> str:
        loose, strict = self.went_back[self.config.key]
        op = strict if self.config.strictly else loose
        return f"{column} {op} {quote_ident(self.window_name('previous'))}"

    def unexpected_sample_sql(self, table: str) -> str | None:
        column = quote_ident(self._column)
        return sample_query(
            table, column, where=self.unexpected_sql(column), windows=self.window_columns()
        )


class RowsCheck(ColumnValuesCheck):
    """A check judging rows over several columns: `judged_sql` picks the rows it judges."""

    subject = "rows"

    def judged_sql(self) -> str:
        """An SQL condition true for a row the check judges."""
        raise NotImplementedError

    def unexpected_row_sql(self) -> str:
        """An SQL condition true for an unexpected row among the judged ones."""
        raise NotImplementedError

    def row_condition(self) -> str | None:
        try:
            return f"coalesce(({self.judged_sql()}) AND ({self.unexpected_row_sql()}), FALSE)"
        except NotImplementedError:
            return None

    def aggregates(self) -> dict[str, str]:
        judged = self.judged_sql()
        return {
            "judged": f"count(*) FILTER (WHERE {judged})",
            "unexpected": f"count(*) FILTER (WHERE ({judged}) AND ({self.unexpected_row_sql()}))",
        }

    def unexpected_sample_sql(self, table: str) -> str | None:
        return None

    def _columns_text(self, columns: list[str]) -> str:
        return "columns " + ", ".join(f"'{c}'" for c in columns)

    def _any_non_null(self, columns: list[str]) -> str:
        return " OR ".join(f"{quote_ident(c)} IS NOT NULL" for c in columns)


class CompoundUniqueCheck(RowsCheck):
    """`compound_unique`: each repeat of a combination beyond its first is unexpected."""

    config: CompoundUniqueConfig
    verdict = "were repeats of an earlier combination"

    def predicate(self) -> str:
        return "to be unique together"

    def judged_text(self) -> str:
        return self._columns_text(self.config.column_list)

    def judged_sql(self) -> str:
        return self._any_non_null(self.config.column_list)

    def aggregates(self) -> dict[str, str]:
        judged = self.judged_sql()
        key = ", ".join(quote_ident(c) for c in self.config.column_list)
        return {
            "judged": f"count(*) FILTER (WHERE {judged})",
            "distinct": f"count(DISTINCT ({key})) FILTER (WHERE {judged})",
        }

    def counts(self, values: dict[str, Any], rows: int) -> tuple[int, int]:
        judged = int(values["judged"])
        return judged - int(values["distinct"]), judged


class PairGreaterCheck(RowsCheck):
    """`pair_greater`: column_a > column_b (or >=); a row with one NULL is unexpected."""

    config: PairGreaterConfig
    verdict = "were not"

    def predicate(self) -> str:
        op = ">=" if self.config.or_equal else ">"
        return f"to satisfy '{self.config.column_a}' {op} '{self.config.column_b}'"

    def judged_text(self) -> str:
        return self._columns_text([self.config.column_a, self.config.column_b])

    def judged_sql(self) -> str:
        return self._any_non_null([self.config.column_a, self.config.column_b])

    def unexpected_row_sql(self) -> str:
        op = ">=" if self.config.or_equal else ">"
        a, b = quote_ident(self.config.column_a), quote_ident(self.config.column_b)
        return f"NOT coalesce({a} {op} {b}, FALSE)"


class PairEqualCheck(RowsCheck):
    """`pair_equal`: column_a equals column_b; a row with one NULL is unexpected."""

    config: PairEqualConfig
    verdict = "were not"

    def predicate(self) -> str:
        return f"to have '{self.config.column_a}' equal to '{self.config.column_b}'"

    def judged_text(self) -> str:
        return self._columns_text([self.config.column_a, self.config.column_b])

    def judged_sql(self) -> str:
        return self._any_non_null([self.config.column_a, self.config.column_b])

    def unexpected_row_sql(self) -> str:
        a, b = quote_ident(self.config.column_a), quote_ident(self.config.column_b)
        return f"{a} IS DISTINCT FROM {b}"


class MulticolumnSumCheck(RowsCheck):
    """`multicolumn_sum`: the per-row sum of the columns (NULL as 0) equals `sum_total`."""

    config: MulticolumnSumConfig
    verdict = "did not"

    def predicate(self) -> str:
        return f"to add up to {self.config.sum_total!r}"

    def judged_text(self) -> str:
        return self._columns_text(self.config.column_list)

    def judged_sql(self) -> str:
        return self._any_non_null(self.config.column_list)

    def unexpected_row_sql(self) -> str:
        # list_sum adds in a wide type (HUGEINT for integers, DECIMAL(38, s) for decimals),
        # where `a + b` of two INTEGERs overflows, and skips NULLs (NULL counts as 0).
        columns = ", ".join(quote_ident(c) for c in self.config.column_list)
        return f"list_sum([{columns}]) <> {sql_literal(self.config.sum_total)}"


class SqlPredicateCheck(RowsCheck):
    """`sql_predicate`: rows where the predicate is false are unexpected (NULL: not judged)."""

    config: SqlPredicateConfig
    verdict = "were not"

    def predicate(self) -> str:
        return "to satisfy the predicate"

    def judged_text(self) -> str:
        return "the table"

    def judged_sql(self) -> str:
        return f"{user_sql(self.config.predicate)} IS NOT NULL"

    def unexpected_row_sql(self) -> str:
        return f"NOT {user_sql(self.config.predicate)}"


IMPLEMENTATIONS: dict[type[TableCheckConfig], type[TableCheck]] = {
    DateutilParseableConfig: DateutilParseableCheck,
    IncreasingConfig: MonotonicCheck,
    DecreasingConfig: MonotonicCheck,
    IsNullConfig: IsNullCheck,
    NotInSetConfig: NotInSetCheck,
    LengthBetweenConfig: LengthBetweenCheck,
    NotRegexConfig: NotRegexCheck,
    StrftimeFormatConfig: StrftimeFormatCheck,
    JsonParseableConfig: JsonParseableCheck,
    CompoundUniqueConfig: CompoundUniqueCheck,
    PairGreaterConfig: PairGreaterCheck,
    PairEqualConfig: PairEqualCheck,
    MulticolumnSumConfig: MulticolumnSumCheck,
    SqlPredicateConfig: SqlPredicateCheck,
}
