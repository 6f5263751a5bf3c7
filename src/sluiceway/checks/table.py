"""Table checks, audited on the staged data before it is published (write–audit–publish).

Every check compiles to a few named SQL aggregates; `evaluate_checks` fuses the aggregates of
all checks of a table into one query (one scan) and reads each check's result back from it.
When that query fails (a bad regex, a missing column, a type that does not compare), the
checks run one by one so only the broken one reports status 'error'.

Results carry counts, ratios and the configured thresholds only — never a value of a row —
so they can go to logs, metrics and reports even when the table holds PII.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, Literal

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
from sluiceway.core.spec import CheckConfig, Severity
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident, quote_literal
from sluiceway.errors import StepError

Status = Literal["passed", "failed", "error"]

_ROWS = "__rows"
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one table check on one table.

    `observed_value` is an aggregate (a ratio or a row count); `unexpected_percent` is the
    share of judged values that were unexpected. `error` is set when the check itself could
    not be evaluated.
    """

    check_id: str
    name: str
    check: str
    column: str | None
    severity: Severity
    success: bool
    observed_value: float | int | None
    unexpected_count: int | None
    unexpected_percent: float | None
    rows_checked: int
    message: str
    error: str | None = None

    @property
    def status(self) -> Status:
        """'error' when the check could not run, else 'passed' or 'failed'."""
        if self.error is not None:
            return "error"
        return "passed" if self.success else "failed"

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data, `status` included."""
        return {**asdict(self), "status": self.status}


@dataclass(frozen=True)
class Outcome:
    """What a check concluded from its aggregates."""

    success: bool
    observed_value: float | int | None
    unexpected_count: int | None
    unexpected_percent: float | None
    message: str


def check_id(config: CheckConfig) -> str:
    """A stable fingerprint of what a check measures and against which thresholds.

    `name` and `severity` are left out: renaming a check or demoting it to a warning keeps
    its metric history.
    """
    params = config.model_dump(mode="json", exclude_defaults=True, exclude={"name", "severity"})
    blob = json.dumps({"check": config.key, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class TableCheck:
    """One check compiled for a table: its aggregates in, its `CheckResult` out."""

    def __init__(self, config: CheckConfig) -> None:
        self.config = config

    @property
    def column(self) -> str | None:
        """The column the check looks at, if any."""
        column = getattr(self.config, "column", None)
        return column if isinstance(column, str) else None

    @property
    def name(self) -> str:
        """The configured name, else `key(column)` or `key`."""
        if self.config.name:
            return self.config.name
        return f"{self.config.key}({self.column})" if self.column else self.config.key

    def aggregates(self) -> dict[str, str]:
        """Alias → SQL aggregate over the table; the row count is always there as `rows`."""
        return {}

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        """The verdict from the aggregate `values` (by alias) and the table's row count."""
        raise NotImplementedError

    def result(self, values: dict[str, Any], rows: int) -> CheckResult:
        """The `CheckResult` built from the aggregate values."""
        outcome = self.outcome(values, rows)
        return self._build(
            success=outcome.success,
            observed_value=outcome.observed_value,
            unexpected_count=outcome.unexpected_count,
            unexpected_percent=outcome.unexpected_percent,
            rows_checked=rows,
            message=outcome.message,
        )

    def error(self, table: str, reason: str) -> CheckResult:
        """A result with status 'error': the check could not be evaluated."""
        return self._build(
            success=False,
            observed_value=None,
            unexpected_count=None,
            unexpected_percent=None,
            rows_checked=0,
            message=f"{self.name} could not be evaluated on table '{table}': {reason}",
            error=reason,
        )

    def _build(self, **fields: Any) -> CheckResult:
        return CheckResult(
            check_id=check_id(self.config),
            name=self.name,
            check=self.config.key,
            column=self.column,
            severity=self.config.severity,
            **fields,
        )


class ColumnValuesCheck(TableCheck):
    """A check that judges values of one column; subclasses say which are unexpected."""

    subject = "non-NULL values"
    verdict = "were not"

    def predicate(self) -> str:
        """What each value is expected to be, e.g. 'to be unique'."""
        raise NotImplementedError

    def unexpected_sql(self, column: str) -> str:
        """An SQL condition true for an unexpected value (NULL for a NULL value)."""
        raise NotImplementedError

    def aggregates(self) -> dict[str, str]:
        column = quote_ident(self._column)
        return {
            "judged": f"count({column})",
            "unexpected": f"count(*) FILTER (WHERE {self.unexpected_sql(column)})",
        }

    def counts(self, values: dict[str, Any], rows: int) -> tuple[int, int]:
        """(unexpected, judged) from the aggregates."""
        return int(values["unexpected"]), int(values["judged"])

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        unexpected, judged = self.counts(values, rows)
        required = 1.0 if self.config.mostly is None else self.config.mostly
        quantifier = "all" if required >= 1 else f"at least {_pct(required)} of the"
        expected = (
            f"Expected {quantifier} {self.subject} of column '{self._column}' {self.predicate()}"
        )
        if judged == 0:
            return Outcome(True, None, 0, None, f"{expected}; there were none to judge.")
        share = unexpected / judged
        return Outcome(
            success=_at_least(1 - share, required),
            observed_value=1 - share,
            unexpected_count=unexpected,
            unexpected_percent=share * 100,
            message=f"{expected}; {unexpected} of {judged} ({share:.2%}) {self.verdict}.",
        )

    @property
    def _column(self) -> str:
        assert self.column is not None, f"{self.config.key} has no column"
        return self.column


class NotNullCheck(ColumnValuesCheck):
    """`not_null`: NULLs are the unexpected values, judged over all rows."""

    subject = "values"
    verdict = "were NULL"

    def predicate(self) -> str:
        return "to be non-NULL"

    def aggregates(self) -> dict[str, str]:
        return {"non_null": f"count({quote_ident(self._column)})"}

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
        message = f"Expected {_range(low, high)} rows; found {rows}."
        return Outcome(success, rows, None, None, message)


class CompletenessCheck(TableCheck):
    """`completeness`: the ratio of non-NULL values of the column is at least `min`."""

    config: CompletenessConfig

    def aggregates(self) -> dict[str, str]:
        return {"non_null": f"count({quote_ident(str(self.column))})"}

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        expected = (
            f"Expected at least {_pct(self.config.min)} of the values of column "
            f"'{self.column}' to be non-NULL"
        )
        if rows == 0:
            return Outcome(True, None, 0, None, f"{expected}; the table is empty.")
        nulls = rows - int(values["non_null"])
        ratio = 1 - nulls / rows
        return Outcome(
            success=_at_least(ratio, self.config.min),
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
}


def compile_check(config: CheckConfig) -> TableCheck:
    """The `TableCheck` for a config: a built-in one, else the registered implementation."""
    impl = IMPLEMENTATIONS.get(type(config))
    if impl is not None:
        return impl(config)
    plugin = registry.lookup("check", config.key)
    if plugin is None:
        raise StepError(f"No table check is registered as '{config.key}'.")
    check = plugin.impl(config)
    assert isinstance(check, TableCheck), f"check '{config.key}' must build a TableCheck"
    return check


def evaluate_checks(
    engine: DuckDBEngine, table: str, checks: Sequence[CheckConfig]
) -> list[CheckResult]:
    """Evaluate every check on `table` in one fused aggregate query (one scan).

    Args:
        engine: the engine holding `table`.
        table: the staged table or view to audit.
        checks: the table checks of the dataset.

    Returns:
        One result per check, in order. If the fused query fails, each check runs on its own
        and only the broken ones report status 'error' with the reason.
    """
    compiled = [compile_check(config) for config in checks]
    if not compiled:
        return []
    try:
        return _run_fused(engine, table, compiled)
    except StepError:
        return _run_one_by_one(engine, table, compiled)


def blocking_failures(results: Sequence[CheckResult]) -> list[CheckResult]:
    """The results that block publishing: severity 'error' with status 'failed' or 'error'."""
    return [r for r in results if r.severity == "error" and r.status != "passed"]


def sql_literal(value: Any) -> str:
    """An SQL literal for a configured threshold or allowed value."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"CAST('{value!r}' AS DOUBLE)"
    if isinstance(value, datetime):
        return f"TIMESTAMP {quote_literal(value.isoformat(sep=' '))}"
    if isinstance(value, date):
        return f"DATE {quote_literal(value.isoformat())}"
    return quote_literal(str(value))


def _run_fused(engine: DuckDBEngine, table: str, checks: Sequence[TableCheck]) -> list[CheckResult]:
    selects = {_ROWS: "count(*)"}
    per_check = [check.aggregates() for check in checks]
    for i, aggregates in enumerate(per_check):
        selects.update({f"c{i}_{alias}": sql for alias, sql in aggregates.items()})
    columns = ", ".join(f"{sql} AS {quote_ident(alias)}" for alias, sql in selects.items())
    row = engine.fetch_one(
        f"SELECT {columns} FROM {quote_ident(table)}", purpose=f"table checks on {table}"
    )
    values = dict(zip(selects, row, strict=True))
    rows = int(values[_ROWS])
    return [
        check.result({alias: values[f"c{i}_{alias}"] for alias in aggregates}, rows)
        for i, (check, aggregates) in enumerate(zip(checks, per_check, strict=True))
    ]


def _run_one_by_one(
    engine: DuckDBEngine, table: str, checks: Sequence[TableCheck]
) -> list[CheckResult]:
    known = _columns(engine, table)
    results = []
    for check in checks:
        missing = _missing_column(check, table, known)
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
    return f"column '{column}' not found in table '{table}'.{hint} Columns: {', '.join(known)}."


def _safe_reason(exc: StepError) -> str:
    """The engine's reason, first line only, with quoted strings blanked.

    DuckDB quotes the offending value in conversion errors ("Could not convert string
    'alice@example.com' to INT32"); that value may be PII.
    """
    text = str(exc.__cause__ or exc.message).strip().splitlines()[0]
    return re.sub(r"'(?:[^']|'')*'", "'…'", text)


def _at_least(ratio: float, required: float) -> bool:
    return ratio >= required - _TOLERANCE


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def _range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def _register_builtins() -> None:
    for config, impl in IMPLEMENTATIONS.items():
        aliases = (config.ge_name,) if config.ge_name else ()
        registry.register("check", config.key, config, impl, aliases=aliases)


_register_builtins()
