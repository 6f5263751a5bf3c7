"""The machinery every table check shares: results, outcomes and the `TableCheck` base.

A check compiles to named SQL aggregates over the table (`aggregates_on`) and reads its verdict
back from their values (`outcome`); `table.evaluate_checks` fuses the aggregates of all checks
into one query. A check that compares a row with its neighbours adds window columns
(`window_columns`), which the fused query computes in a subquery its aggregates read from.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sluiceway.core.spec import CheckConfig, Severity
from sluiceway.engines.duckdb import quote_ident, quote_literal

if TYPE_CHECKING:
    from sluiceway.core.runstore import MetricPoint

Status = Literal["passed", "failed", "error"]

TOLERANCE = 1e-9
SAMPLE_SIZE = 20
SAMPLE_VALUE_CHARS = 200
ROW_POSITION = "__sw_position"


_NOT_A_THRESHOLD = {"column", "severity", "name", "on_fail", "description"}


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
    threshold: dict[str, Any] | None = None
    """The numeric settings the check holds the table to (`min_value`, `max_value`,
    `mostly`, ...), for alerts and reports."""

    @property
    def status(self) -> Status:
        """'error' when the check could not run, else 'passed' or 'failed'."""
        if self.error is not None:
            return "error"
        return "passed" if self.success else "failed"

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data, `status` included."""
        return {**asdict(self), "status": self.status}


History = Callable[[str, str], "list[MetricPoint]"]


@dataclass(frozen=True)
class CheckEnv:
    """What a check may know beyond its table: the run it audits and where its past is.

    Attributes:
        pipeline: the pipeline's name ('' outside a pipeline).
        dataset: the audited dataset's name in the metric history.
        logical_date: the run's logical date.
        logical_time: the instant freshness is measured against: now for a run of today,
            else the end of the logical date (UTC).
        history: (check_id, metric) → the points recorded for that series by earlier runs of
            earlier logical dates, oldest first; None when there is no run store.
        state_dir: the `.sluice` folder (stored profiles live there); None outside a pipeline.
        tables: other tables a check may name (a pipeline's sources) → engine table name.
        base_dir: the folder relative file paths in checks resolve against (the spec's
            folder); None: the working directory.
        pii_columns: the columns the pipeline masks; None: unknown (outside a pipeline).
    """

    pipeline: str = ""
    dataset: str = "staged"
    logical_date: date | None = None
    logical_time: datetime | None = None
    history: History | None = None
    state_dir: Path | None = None
    tables: Mapping[str, str] = field(default_factory=dict)
    base_dir: Path | None = None
    pii_columns: frozenset[str] | None = None

    def as_of(self) -> datetime:
        """`logical_time`, else now (UTC)."""
        return self.logical_time or datetime.now(UTC)


def logical_time_of(logical_date: date, now: datetime | None = None) -> datetime:
    """The instant a run of `logical_date` measures freshness against: `now` when the date is
    today (UTC) or later, else the end of that day (midnight after it, UTC)."""
    now = now or datetime.now(UTC)
    if logical_date >= now.date():
        return now
    return datetime.combine(logical_date, datetime.min.time(), UTC) + timedelta(days=1)


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

    `name`, `severity` and `on_fail` are left out: renaming a check, demoting it to a warning
    or routing its failing rows keeps its metric history. So are the fields a config lists in
    `fingerprint_excludes` (an anomaly check's threshold and training window: tuning them
    must not throw its history away).
    """
    exclude = {"name", "severity", "on_fail", *getattr(config, "fingerprint_excludes", ())}
    params = config.model_dump(mode="json", exclude_defaults=True, exclude=exclude)
    blob = json.dumps({"check": config.key, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class NotEvaluable(Exception):
    """Raised by `TableCheck.outcome` when the values show the check cannot judge this table
    (e.g. a freshness check on a text column); the check reports status 'error'."""


class TableCheck:
    """One check compiled for a table: its aggregates in, its `CheckResult` out."""

    def __init__(self, config: CheckConfig, env: CheckEnv | None = None) -> None:
        self.config = config
        self.env = env or CheckEnv()

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

    def aggregates_on(self, table: str) -> dict[str, str]:
        """The aggregates over `table`; those that need its name (its columns) override this."""
        return self.aggregates()

    def row_condition(self) -> str | None:
        """An SQL condition true for a row this check finds unexpected, when it judges rows
        one by one (what `on_fail: dead_letter` routes); None for a check about the table as
        a whole (an aggregate, a uniqueness or an order check)."""
        return None

    def window_columns(self) -> dict[str, str]:
        """Column name → SQL window expression the aggregates read as a column.

        The expressions may order by `ROW_POSITION`, the row's position in the table's order.
        Name the columns with `window_name` so that checks never clash.
        """
        return {}

    def window_name(self, alias: str) -> str:
        """A window column name of this check's own (identical checks share it)."""
        return f"__sw_{check_id(self.config)}_{alias}"

    def cannot_run(self) -> str | None:
        """Why the check cannot be evaluated at all (e.g. an unknown other table), else None."""
        return None

    def missing_other_column(self, columns_of: Callable[[str], list[str]]) -> str | None:
        """Why a column the check reads from another table is not there, else None.

        Asked only after the check's query failed, to name the cause (an engine binds a
        column missing from a subquery's table to confusing effect).

        Args:
            columns_of: the column names of what a query reads FROM (SQL such as
                `extra.other_table` gives).
        """
        return None

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        """The verdict from the aggregate `values` (by alias) and the table's row count.

        Raises:
            NotEvaluable: the values show the check cannot judge this table.
        """
        raise NotImplementedError

    def unexpected_sample_sql(self, table: str) -> str | None:
        """A query for up to `SAMPLE_SIZE` distinct unexpected values of the column, as text.

        None for a check with no single column's values to show (an aggregate, a row count).
        """
        return None

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
            threshold=self.threshold(),
            **fields,
        )

    def threshold(self) -> dict[str, Any] | None:
        """The config's numeric settings that bound the check (`min_value`, `mostly`, ...;
        None when it has none). Texts and lists (value sets, patterns) are left out: they
        may spell the very values a result must never carry."""
        said = self.config.model_dump(exclude=_NOT_A_THRESHOLD, exclude_none=True, mode="json")
        bounds = {
            k: v for k, v in said.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        return bounds or None


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

    def row_condition(self) -> str | None:
        if self.window_columns():
            return None
        try:
            return f"coalesce({self.unexpected_sql(quote_ident(self._column))}, FALSE)"
        except NotImplementedError:
            return None

    def aggregates(self) -> dict[str, str]:
        column = quote_ident(self._column)
        return {
            "judged": f"count({column})",
            "unexpected": f"count(*) FILTER (WHERE {self.unexpected_sql(column)})",
        }

    def unexpected_sample_sql(self, table: str) -> str | None:
        column = quote_ident(self._column)
        return sample_query(table, column, where=self.unexpected_sql(column))

    def counts(self, values: dict[str, Any], rows: int) -> tuple[int, int]:
        """(unexpected, judged) from the aggregates."""
        return int(values["unexpected"]), int(values["judged"])

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        unexpected, judged = self.counts(values, rows)
        required = 1.0 if self.config.mostly is None else self.config.mostly
        quantifier = "all" if required >= 1 else f"at least {pct(required)} of the"
        expected = (
            f"Expected {quantifier} {self.subject} of {self.judged_text()} {self.predicate()}"
        )
        if judged == 0:
            return Outcome(True, None, 0, None, f"{expected}; there were none to judge.")
        share = unexpected / judged
        return Outcome(
            success=at_least(1 - share, required),
            observed_value=1 - share,
            unexpected_count=unexpected,
            unexpected_percent=share * 100,
            message=f"{expected}; {unexpected} of {judged} ({share:.2%}) {self.verdict}.",
        )

    def judged_text(self) -> str:
        """What is judged, for messages: `column 'email'` unless a check says otherwise."""
        return f"column '{self._column}'"

    @property
    def _column(self) -> str:
        assert self.column is not None, f"{self.config.key} has no column"
        return self.column


def sql_literal(value: Any) -> str:
    """An SQL literal for a configured threshold or allowed value; a datetime with a zone
    is a TIMESTAMPTZ (an instant), one without a TIMESTAMP."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"CAST('{value!r}' AS DOUBLE)"
    if isinstance(value, datetime):
        kind = "TIMESTAMP" if value.tzinfo is None else "TIMESTAMPTZ"
        return f"{kind} {quote_literal(value.isoformat(sep=' '))}"
    if isinstance(value, date):
        return f"DATE {quote_literal(value.isoformat())}"
    return quote_literal(str(value))


def sample_query(
    table: str,
    column: str,
    *,
    where: str,
    having: str | None = None,
    windows: Mapping[str, str] | None = None,
) -> str:
    """Distinct values of the quoted `column` of `table` where `where` holds, as text, sorted,
    at most `SAMPLE_SIZE` of them; `having` filters the groups (e.g. repeats only); `where`
    may read the `windows` columns (see `table_relation`)."""
    group = f" GROUP BY {column} HAVING {having}" if having else ""
    return (
        f"SELECT DISTINCT CAST({column} AS VARCHAR) AS value "
        f"FROM {table_relation(table, windows or {})} "
        f"WHERE {where}{group} ORDER BY value LIMIT {SAMPLE_SIZE}"
    )


def table_relation(table: str, windows: Mapping[str, str]) -> str:
    """What a check query reads FROM: `table` itself, or with `windows` (name → window
    expression) a subquery that adds them as columns.

    Rows are numbered in the table's order by `row_number() OVER ()` in the scan's own
    subquery: DuckDB runs that as a streaming window, which keeps the scan's insertion order
    (preserve_insertion_order, on by default), whatever the number of threads.
    """
    if not windows:
        return quote_ident(table)
    numbered = f"SELECT *, row_number() OVER () AS {ROW_POSITION} FROM {quote_ident(table)}"
    added = ", ".join(f"{sql} AS {quote_ident(name)}" for name, sql in windows.items())
    return f"(SELECT *, {added} FROM ({numbered})) AS {quote_ident(table)}"


def at_least(ratio: float, required: float) -> bool:
    return ratio >= required - TOLERANCE


def pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def bound_range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f"at least {low}" if low is not None else f"at most {high}"
