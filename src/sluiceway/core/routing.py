"""Row routing: rows that fail a row-level check with `on_fail: dead_letter` leave the result.

All routing checks are judged in one pass over the steps' output, before masking, so the
values are judged as the steps produced them. Each row gets the list of the checks it
failed; rows with a non-empty list become dead letters (stage 'check', one error per failed
check) and the others go on to staging, masking, the audit and the sinks.

A routing check still reports a result: its counts are taken on the rows before routing, so
it says how many rows it sent away; it passes unless `mostly` is set and the share of failing
rows exceeds it (then its severity decides, as for any check).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from sluiceway.checks.base import TableCheck
from sluiceway.checks.table import (
    CheckEnv,
    CheckResult,
    compile_check,
    evaluate_checks,
)
from sluiceway.core.context import META_COLUMNS, ROW_ERRORS, ROW_FILE, ROW_NUMBER
from sluiceway.core.spec import CheckConfig
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident, quote_literal
from sluiceway.errors import StepError

FAILED = "__sw_failed"


def routing_checks(checks: Sequence[CheckConfig]) -> list[int]:
    """Indexes of the checks whose failing rows go to the dead-letter table."""
    return [i for i, c in enumerate(checks) if c.on_fail == "dead_letter"]


def routing_problems(checks: Sequence[CheckConfig]) -> list[tuple[int, str]]:
    """(index, message) for each `on_fail: dead_letter` on a check that cannot route rows."""
    problems = []
    for index in routing_checks(checks):
        config = checks[index]
        if compile_check(config).row_condition() is None:
            problems.append(
                (
                    index,
                    f"on_fail: dead_letter needs a check that judges rows one by one; "
                    f"'{config.key}' judges the table as a whole (an aggregate, a uniqueness "
                    "or an order check). Use on_fail: fail or warn, or a row-level check such "
                    "as not_null, between, in_set, regex or sql_predicate",
                )
            )
    return problems


@dataclass(frozen=True)
class Routed:
    """The outcome of routing: rows kept, rows sent away, the routing checks' results."""

    kept: str
    failed: str
    rows_before: int
    rows_routed: int
    results: dict[int, CheckResult]


def route_rows(
    engine: DuckDBEngine,
    table: str,
    checks: Sequence[CheckConfig],
    env: CheckEnv,
) -> Routed:
    """Split `table` by the routing checks of `checks` in one flagging pass.

    Returns:
        `kept`: a view of the rows that passed every routing check; `failed`: a table of the
        rows that failed one or more, with `__sw_errors` (rule, column, reason per failed
        check) and the bookkeeping columns; the routing checks' results by check index.
    """
    indexes = routing_checks(checks)
    structs = []
    present = {name for name, _ in engine.columns(table)}
    for index in indexes:
        check = compile_check(checks[index], env)
        _refuse_unroutable(engine, check, index, table, present)
        condition = check.row_condition()
        assert condition is not None, "routing_problems rejects these at load time"
        reason = quote_literal(f"failed check {check.name}")
        column = quote_literal(check.column) if check.column else "NULL"
        rule = quote_literal(f"check:{check.config.key}")
        structs.append(
            f"CASE WHEN {condition} THEN {{'rule': {rule}, 'column': {column}, "
            f"'reason': {reason}}} END"
        )
    errors = f"list_filter([{', '.join(structs)}], lambda e: e IS NOT NULL)"
    numbered = "" if ROW_NUMBER in present else f", row_number() OVER () AS {ROW_NUMBER}"
    flagged = engine.create_table(
        engine.new_name("routed"),
        f"SELECT *{numbered}, {errors} AS {FAILED} FROM {quote_ident(table)}",
        purpose="judge rows against the dead_letter checks",
    )
    rows_before, rows_routed = engine.fetch_one(
        f"SELECT count(*), count(*) FILTER (WHERE len({FAILED}) > 0) FROM {quote_ident(flagged)}",
        purpose="count routed rows",
    )
    results = evaluate_checks(engine, flagged, [checks[i] for i in indexes], env)
    kept = engine.create_view(
        engine.new_name("kept"),
        f"SELECT * EXCLUDE ({FAILED}) FROM {quote_ident(flagged)} WHERE len({FAILED}) = 0",
    )
    return Routed(
        kept=kept,
        failed=flagged,
        rows_before=int(rows_before),
        rows_routed=int(rows_routed),
        results={i: _routed_result(r, checks[i]) for i, r in zip(indexes, results, strict=True)},
    )


def _refuse_unroutable(
    engine: DuckDBEngine, check: TableCheck, index: int, table: str, present: set[str]
) -> None:
    """A routing check that cannot judge rows (a missing column here or in the other table)
    stops the run with what to fix: rows must never be kept or routed on a broken check."""
    problem = check.cannot_run()
    column = check.column
    if problem is None and column and column.lower() not in {c.lower() for c in present}:
        known = sorted(c for c in present if not c.startswith("__sw_"))
        problem = f"column '{column}' not found in the result (columns: {', '.join(known)})"
    if problem is None:
        problem = check.missing_other_column(
            lambda source: engine.columns_of(f"SELECT * FROM {source}")
        )
    if problem is not None:
        raise StepError(
            f"checks[{index}] {check.name} (on_fail: dead_letter) cannot judge the rows of "
            f"{table}: {problem}"
        )


def failed_rows_sql(routed: Routed, columns: Sequence[str], payload: str, raw: str) -> str:
    """The failed rows in the shape `rejects.contract_rejects_table` reads: file, row,
    errors, masked payload and clear raw payload (sealed later). A row is numbered by its
    source record when the steps kept the bookkeeping columns, else by its position in the
    steps' output."""
    file = ROW_FILE if ROW_FILE in columns else "NULL::VARCHAR"
    return (
        f"SELECT {file} AS {ROW_FILE}, {ROW_NUMBER}, {FAILED} AS {ROW_ERRORS}, "
        f"{payload} AS payload, {raw} AS raw FROM {quote_ident(routed.failed)} "
        f"WHERE len({FAILED}) > 0"
    )


def data_columns(columns: Sequence[str]) -> list[str]:
    """The columns of a routed row that are data (not bookkeeping)."""
    return [c for c in columns if c not in META_COLUMNS and c != FAILED]


def _routed_result(result: CheckResult, config: CheckConfig) -> CheckResult:
    if result.status == "error":
        return result
    routed = result.unexpected_count or 0
    success = result.success if config.mostly is not None else True
    note = f" {routed} row(s) went to the dead-letter table (on_fail: dead_letter)."
    return replace(result, success=success, message=result.message + note)
