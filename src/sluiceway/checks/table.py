"""Table checks, audited on the staged data before it is published (write–audit–publish).

Every check compiles to a few named SQL aggregates; `evaluate_checks` fuses the aggregates of
all checks of a table into one query (one scan) and reads each check's result back from it.
When that query fails (a bad regex, a missing column, a type that does not compare), the
checks run one by one so only the broken one reports status 'error'.

The shared machinery is in `base`; the first seven checks live here, the rest of the Great
Expectations vocabulary in `column_values` (row-level) and `aggregates` (one number per table),
and the checks that look beyond the table's values (other tables, types, freshness) in
`extra`. Checks that compare a row with the previous one add window columns; the fused query
then reads from a subquery that computes them, still in one statement.

Results carry counts, ratios, the configured thresholds and aggregates of a column (a
minimum, a median, a sum: of masked values for a masked column) — never a value of a row read
as such, nor one quoted by an engine error — so they can go to logs, metrics and reports even
when the table holds PII.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sluiceway.checks.aggregates import IMPLEMENTATIONS as AGGREGATE_CHECKS
from sluiceway.checks.base import (
    SAMPLE_VALUE_CHARS,
    CheckEnv,
    CheckResult,
    ColumnValuesCheck,
    NotEvaluable,
    Outcome,
    Status,
    TableCheck,
    at_least,
    bound_range,
    check_id,
    pct,
    sample_query,
    sql_literal,
    table_relation,
)
from sluiceway.checks.column_values import IMPLEMENTATIONS as COLUMN_VALUE_CHECKS
from sluiceway.checks.extra import IMPLEMENTATIONS as EXTRA_CHECKS
from sluiceway.checks.vocabulary import (
    BetweenConfig,
    CompletenessConfig,
    InSetConfig,
    NotNullConfig,
    RegexConfig,
    RowCountBetweenConfig,
    TableCheckConfig,
    UniqueConfig,
)
from sluiceway.core import registry
from sluiceway.core.spec import CheckConfig
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident, quote_literal, redact_row_values
from sluiceway.errors import StepError

__all__ = [
    "IMPLEMENTATIONS",
    "CheckEnv",
    "CheckResult",
    "Outcome",
    "Status",
    "TableCheck",
    "blocking_failures",
    "check_id",
    "compile_check",
    "evaluate_checks",
    "sample_unexpected",
    "sql_literal",
]

_ROWS = "__rows"


class NotNullCheck(ColumnValuesCheck):
    """`not_null`: NULLs are the unexpected values, judged over all rows."""

    subject = "values"
    verdict = "were NULL"

    def row_condition(self) -> str | None:
        return f"{quote_ident(self._column)} IS NULL"

    def predicate(self) -> str:
        return "to be non-NULL"

    def aggregates(self) -> dict[str, str]:
        return {"non_null": f"count({quote_ident(self._column)})"}

    def unexpected_sample_sql(self, table: str) -> str | None:
        return None

    def counts(self, values: dict[str, Any], rows: int) -> tuple[int, int]:
        return rows - int(values["non_null"]), rows


class UniqueCheck(ColumnValuesCheck):
    """`unique`: every repeat of a non-NULL value beyond its first is unexpected."""

    verdict = "were repeats of an earlier value"

    def predicate(self) -> str:
        return "to be unique"

    def aggregates(self) -> dict[str, str]:
        column = quote_ident(self._column)
        return {"judged": f"count({column})", "distinct": f"count(DISTINCT {column})"}

    def unexpected_sample_sql(self, table: str) -> str | None:
        column = quote_ident(self._column)
        return sample_query(table, column, where=f"{column} IS NOT NULL", having="count(*) > 1")

    def counts(self, values: dict[str, Any], rows: int) -> tuple[int, int]:
        judged = int(values["judged"])
        return judged - int(values["distinct"]), judged


class BetweenCheck(ColumnValuesCheck):
    """`between`: non-NULL values within the bounds."""

    config: BetweenConfig

    def predicate(self) -> str:
        return "to be " + " and ".join(f"{op} {value!r}" for op, value in self._bounds())

    def unexpected_sql(self, column: str) -> str:
        inside = " AND ".join(f"{column} {op} {sql_literal(value)}" for op, value in self._bounds())
        return f"NOT ({inside})"

    def _bounds(self) -> list[tuple[str, Any]]:
        c = self.config
        bounds = []
        if c.min_value is not None:
            bounds.append((">" if c.strict_min else ">=", c.min_value))
        if c.max_value is not None:
            bounds.append(("<" if c.strict_max else "<=", c.max_value))
        return bounds


class InSetCheck(ColumnValuesCheck):
    """`in_set`: non-NULL values among the allowed ones."""

    config: InSetConfig

    def predicate(self) -> str:
        return f"to be in the set of {len(self.config.value_set)} allowed values"

    def unexpected_sql(self, column: str) -> str:
        allowed = ", ".join(sql_literal(v) for v in self.config.value_set)
        return f"NOT ({column} IN ({allowed}))"


class RegexCheck(ColumnValuesCheck):
    """`regex`: non-NULL values, as text, match the whole regular expression."""

    config: RegexConfig

    def predicate(self) -> str:
        return f"to match the regex {self.config.regex!r}"

    def unexpected_sql(self, column: str) -> str:
        pattern = quote_literal(self.config.regex)
        return f"NOT regexp_full_match(CAST({column} AS VARCHAR), {pattern})"


class RowCountBetweenCheck(TableCheck):
    """`row_count_between`: the table's row count within the bounds (no `mostly`)."""

    config: RowCountBetweenConfig

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        low, high = self.config.min_value, self.config.max_value
        success = (low is None or rows >= low) and (high is None or rows <= high)
        message = f"Expected {bound_range(low, high)} rows; found {rows}."
        return Outcome(success, rows, None, None, message)


class CompletenessCheck(TableCheck):
    """`completeness`: the ratio of non-NULL values of the column is at least `min`."""

    config: CompletenessConfig

    def aggregates(self) -> dict[str, str]:
        return {"non_null": f"count({quote_ident(str(self.column))})"}

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        expected = (
            f"Expected at least {pct(self.config.min)} of the values of column "
            f"'{self.column}' to be non-NULL"
        )
        if rows == 0:
            return Outcome(True, None, 0, None, f"{expected}; the table is empty.")
        nulls = rows - int(values["non_null"])
        ratio = 1 - nulls / rows
        return Outcome(
            success=at_least(ratio, self.config.min),
            observed_value=ratio,
            unexpected_count=nulls,
            unexpected_percent=nulls / rows * 100,
            message=f"{expected}; {ratio:.2%} were ({nulls} of {rows} NULL).",
        )


IMPLEMENTATIONS: dict[type[TableCheckConfig], type[TableCheck]] = {
    NotNullConfig: NotNullCheck,
    BetweenConfig: BetweenCheck,
    InSetConfig: InSetCheck,
    UniqueConfig: UniqueCheck,
    RegexConfig: RegexCheck,
    RowCountBetweenConfig: RowCountBetweenCheck,
    CompletenessConfig: CompletenessCheck,
    **COLUMN_VALUE_CHECKS,
    **AGGREGATE_CHECKS,
    **EXTRA_CHECKS,
}


def compile_check(config: CheckConfig, env: CheckEnv | None = None) -> TableCheck:
    """The `TableCheck` for a config: a built-in one, else the registered implementation."""
    impl = IMPLEMENTATIONS.get(type(config)) if isinstance(config, TableCheckConfig) else None
    if impl is not None:
        return impl(config, env)
    plugin = registry.lookup("check", config.key)
    if plugin is None:
        raise StepError(f"No table check is registered as '{config.key}'.")
    check = plugin.impl(config, env)
    assert isinstance(check, TableCheck), f"check '{config.key}' must build a TableCheck"
    return check


def evaluate_checks(
    engine: DuckDBEngine,
    table: str,
    checks: Sequence[CheckConfig],
    env: CheckEnv | None = None,
) -> list[CheckResult]:
    """Evaluate every check on `table` in one fused aggregate query (one scan).

    Args:
        engine: the engine holding `table`.
        table: the staged table or view to audit.
        checks: the table checks of the dataset.
        env: the run the checks audit (logical time, metric history, other tables).

    Returns:
        One result per check, in order. If the fused query fails, each check runs on its own
        and only the broken ones report status 'error' with the reason.
    """
    compiled = [compile_check(config, env) for config in checks]
    if not compiled:
        return []
    try:
        return _run_fused(engine, table, compiled)
    except StepError:
        return _run_one_by_one(engine, table, compiled)


def sample_unexpected(
    engine: DuckDBEngine,
    table: str,
    checks: Sequence[CheckConfig],
    results: Sequence[CheckResult],
    env: CheckEnv | None = None,
) -> list[list[str]]:
    """A few distinct unexpected values of each failed column-value check, as text.

    One small query per failed check that can show values; passing checks cost nothing.
    `table` is the staged table, so PII columns hold masked values only.

    Returns:
        One list per check, in order: empty unless the check failed and judges a column's
        values; each value capped at `SAMPLE_VALUE_CHARS` characters.
    """
    return [
        _sample(engine, table, compile_check(config, env)) if result.status == "failed" else []
        for config, result in zip(checks, results, strict=True)
    ]


def _sample(engine: DuckDBEngine, table: str, check: TableCheck) -> list[str]:
    sql = check.unexpected_sample_sql(table)
    if sql is None:
        return []
    values = engine.fetch_arrow(sql, purpose=f"sample unexpected values of {check.name}")
    return [str(value)[:SAMPLE_VALUE_CHARS] for value in values.column(0).to_pylist()]


def blocking_failures(results: Sequence[CheckResult]) -> list[CheckResult]:
    """The results that block publishing: severity 'error' with status 'failed' or 'error'."""
    return [r for r in results if r.severity == "error" and r.status != "passed"]


def _run_fused(engine: DuckDBEngine, table: str, checks: Sequence[TableCheck]) -> list[CheckResult]:
    blocked = {i: reason for i, c in enumerate(checks) if (reason := c.cannot_run()) is not None}
    live = [(i, c) for i, c in enumerate(checks) if i not in blocked]
    selects = {_ROWS: "count(*)"}
    windows: dict[str, str] = {}
    per_check = {i: check.aggregates_on(table) for i, check in live}
    for i, check in live:
        selects.update({f"c{i}_{alias}": sql for alias, sql in per_check[i].items()})
        windows.update(check.window_columns())
    values: dict[str, Any] = {}
    if live:
        columns = ", ".join(f"{sql} AS {quote_ident(alias)}" for alias, sql in selects.items())
        row = engine.fetch_one(
            f"SELECT {columns} FROM {table_relation(table, windows)}",
            purpose=f"table checks on {table}",
        )
        values = dict(zip(selects, row, strict=True))
    results = []
    for i, check in enumerate(checks):
        if i in blocked:
            results.append(check.error(table, blocked[i]))
            continue
        own = {alias: values[f"c{i}_{alias}"] for alias in per_check[i]}
        results.append(_result(check, table, own, int(values[_ROWS])))
    return results


def _result(check: TableCheck, table: str, values: dict[str, Any], rows: int) -> CheckResult:
    try:
        return check.result(values, rows)
    except NotEvaluable as exc:
        return check.error(table, str(exc))


def _run_one_by_one(
    engine: DuckDBEngine, table: str, checks: Sequence[TableCheck]
) -> list[CheckResult]:
    known = _columns(engine, table)
    results = []
    for check in checks:
        missing = _missing_column(check, table, known) or _missing_other_column(engine, check)
        if missing:
            results.append(check.error(table, missing))
            continue
        try:
            results.extend(_run_fused(engine, table, [check]))
        except StepError as exc:
            results.append(check.error(table, _safe_reason(exc)))
    return results


def _columns(engine: DuckDBEngine, table: str) -> list[str] | None:
    try:
        return [name for name, _ in engine.columns(table)]
    except StepError:
        return None


def _missing_column(check: TableCheck, table: str, known: list[str] | None) -> str | None:
    column = check.column
    if column is None or known is None or column.lower() in {k.lower() for k in known}:
        return None
    hint = registry.did_you_mean(column, known)
    # A run's staged result has an internal name (sw_staged_8) that means nothing to a user.
    where = "the checked result" if table.startswith("sw_") else f"table '{table}'"
    return f"column '{column}' not found in {where}.{hint} Columns: {', '.join(known)}."


def _missing_other_column(engine: DuckDBEngine, check: TableCheck) -> str | None:
    def columns_of(source: str) -> list[str]:
        return engine.columns_of(f"SELECT * FROM {source}")

    try:
        return check.missing_other_column(columns_of)
    except StepError:
        return None


def _safe_reason(exc: StepError) -> str:
    """The engine's reason, first line only, without the values of rows it quotes.

    DuckDB names the offending value in data errors ("Could not convert string
    'alice@example.com' to INT32", "Overflow in addition of INT32 (2000000123 + …)"); that
    value may be PII. See `redact_row_values`.
    """
    return redact_row_values(str(exc.__cause__ or exc.message).strip().splitlines()[0])


def _register_builtins() -> None:
    for config, impl in IMPLEMENTATIONS.items():
        aliases = ((config.ge_name,) if config.ge_name else ()) + config.also_known_as
        registry.register("check", config.key, config, impl, aliases=aliases)


_register_builtins()
