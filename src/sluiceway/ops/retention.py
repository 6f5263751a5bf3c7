"""`sluice retention`: delete the rows a pipeline's `compliance.retention` no longer allows.

Every Delta table of a pipeline is covered: each delta sink, the tiers of each delta sink
and the pipeline's rows of the dead-letter table. A row is dated by
`compliance.retention_column` (default: the table's first partition column; dead letters:
`logical_date`) and deleted when that date is older than as-of − retention. The deleted
files are then vacuumed with the table's own retention (time travel within it still works).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable

from sluiceway.cli_storage import TableTarget, resolve_target, vacuum_table
from sluiceway.core.durations import parse_duration
from sluiceway.core.spec import Pipeline
from sluiceway.engines.duckdb import quote_ident, quote_literal
from sluiceway.errors import ConfigError, SluicewayError

DEAD_LETTER_DATE = "logical_date"


@dataclass(frozen=True)
class GovernedTable:
    """One Delta table of a pipeline, and the rows of it the pipeline owns.

    Attributes:
        pipeline: the pipeline's name.
        target: where the table is and how to reach it.
        kind: 'sink', 'tier' or 'dead_letter'.
        owner_filter: for the shared dead-letter table, the partition of this pipeline.
        config: the sink's config, for tables that are not Delta tables (postgres).
    """

    pipeline: str
    target: TableTarget
    kind: str
    owner_filter: tuple[str, str] | None = None
    config: Any = None

    @property
    def label(self) -> str:
        return f"{self.pipeline} {self.target.label}"


@dataclass
class TableRetention:
    """What retention did (or would do) to one table."""

    table: GovernedTable
    column: str | None = None
    rows_deleted: int = 0
    files_vacuumed: int = 0
    problem: str | None = None


@dataclass
class PipelineRetention:
    """What retention did to one pipeline's tables."""

    pipeline: str
    retention: str
    cutoff: datetime
    tables: list[TableRetention] = field(default_factory=list)

    @property
    def rows_deleted(self) -> int:
        return sum(t.rows_deleted for t in self.tables)

    @property
    def is_ok(self) -> bool:
        return all(t.problem is None for t in self.tables)


def governed_tables(
    pipeline: Pipeline, base_dir: Path, state_dir: Path | None
) -> list[GovernedTable]:
    """Every Delta table of `pipeline`: delta sinks, their tiers, the dead-letter table.

    Args:
        pipeline: the validated spec.
        base_dir: the spec's folder (relative paths resolve against it).
        state_dir: the state folder (default dead-letter location).

    Returns:
        The tables, sinks first, the dead-letter table last.
    """
    tables: list[GovernedTable] = []
    for index, sink in enumerate(pipeline.sinks):
        if sink.type != "delta":
            continue
        target = resolve_target(pipeline, base_dir, sink_index=index)
        tables.append(GovernedTable(pipeline.pipeline, target, "sink"))
        for tier in getattr(sink, "tiers", None) or ():
            uri = tier.path if "://" in tier.path else str((base_dir / tier.path).resolve())
            label = f"sinks[{index}] tier {tier.name}"
            tier_target = TableTarget(label, uri, dict(tier.storage_options))
            tables.append(GovernedTable(pipeline.pipeline, tier_target, "tier"))
    dead = resolve_target(pipeline, base_dir, is_dead_letter=True, state_dir=state_dir)
    owner = ("pipeline", pipeline.pipeline)
    tables.append(GovernedTable(pipeline.pipeline, dead, "dead_letter", owner))
    return tables


def other_sinks(pipeline: Pipeline, handled: tuple[str, ...] = ("delta",)) -> list[str]:
    """The sinks of a type not in `handled`, as 'sinks[i] (type)'."""
    return [f"sinks[{i}] ({s.type})" for i, s in enumerate(pipeline.sinks) if s.type not in handled]


def open_table(target: TableTarget) -> DeltaTable | None:
    """The table, or None when it does not exist yet.

    Raises:
        SinkError: the storage refused the read.
    """
    try:
        return target.open()
    except ConfigError:
        return None


def retention_cutoff(retention: str, as_of: date) -> datetime:
    """The instant before which rows are too old: midnight UTC of `as_of` − `retention`.

    Raises:
        ConfigError: `retention` is not a duration.
    """
    try:
        span = parse_duration(retention, what="compliance.retention")
    except ValueError as exc:
        raise ConfigError(f"compliance.retention: {exc}") from None
    return datetime.combine(as_of, time(), UTC) - span


def apply_retention(
    pipeline: Pipeline,
    base_dir: Path,
    *,
    as_of: date,
    state_dir: Path | None,
    is_dry_run: bool = False,
) -> PipelineRetention | None:
    """Delete (or with `is_dry_run`, count) the rows older than the pipeline's retention in
    every table, then vacuum what was deleted.

    Returns:
        What was done per table; None when the pipeline declares no retention.

    Raises:
        ConfigError: the retention is not a duration.
    """
    compliance = pipeline.compliance
    if compliance is None or not compliance.retention:
        return None
    cutoff = retention_cutoff(compliance.retention, as_of)
    outcome = PipelineRetention(pipeline.pipeline, compliance.retention, cutoff)
    for table in governed_tables(pipeline, base_dir, state_dir):
        column = DEAD_LETTER_DATE if table.kind == "dead_letter" else compliance.retention_column
        outcome.tables.append(_retain(table, column, cutoff, is_dry_run))
    return outcome


def _retain(
    table: GovernedTable, column: str | None, cutoff: datetime, is_dry_run: bool
) -> TableRetention:
    result = TableRetention(table)
    try:
        delta = open_table(table.target)
        if delta is None:
            return result
        partitions = delta.metadata().partition_columns
        result.column = column or (partitions[0] if partitions else None)
        if result.column is None:
            result.problem = (
                "no retention column: the table has no partition column; set "
                "compliance.retention_column to a date or timestamp column"
            )
            return result
        _delete_old(delta, table, result, cutoff, is_dry_run)
    except SluicewayError as exc:
        result.problem = exc.message
    return result


def _delete_old(
    delta: DeltaTable,
    table: GovernedTable,
    result: TableRetention,
    cutoff: datetime,
    is_dry_run: bool,
) -> None:
    assert result.column is not None
    schema = delta.schema().to_arrow()
    names = list(schema.names)
    if result.column not in names:
        result.problem = f"column '{result.column}' is not in the table (columns: {names})"
        return
    kind = pa.schema(schema).field(result.column).type
    bound = _bound(kind, cutoff)
    old = ds.field(result.column) < pa.scalar(bound, type=kind)
    if table.owner_filter:
        old = old & (ds.field(table.owner_filter[0]) == table.owner_filter[1])
    dataset = delta.to_pyarrow_dataset()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        _check_iso_dates(dataset, result.column, old)
    result.rows_deleted = dataset.count_rows(filter=old)
    if is_dry_run or not result.rows_deleted:
        return
    metadata = {"sluice.retention_cutoff": cutoff.isoformat()}
    with table.target.errors("delete old rows from"):
        delta.delete(
            _predicate(result.column, bound, table.owner_filter),
            commit_properties=CommitProperties(custom_metadata=metadata),
        )
    result.files_vacuumed = len(vacuum_table(table.target))


def _bound(kind: pa.DataType, cutoff: datetime) -> Any:
    """The first value that is not too old, in the column's type."""
    if pa.types.is_date(kind):
        first = cutoff.date()
        return first if cutoff.time() == time() else first + timedelta(days=1)
    if pa.types.is_timestamp(kind):
        return cutoff if kind.tz else cutoff.replace(tzinfo=None)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return cutoff.date().isoformat() if cutoff.time() == time() else cutoff.isoformat()
    raise ConfigError(
        f"retention column type {kind} is not a date, timestamp or ISO date text; point "
        "compliance.retention_column at a date column"
    )


def _check_iso_dates(dataset: ds.Dataset, column: str, old: ds.Expression) -> None:
    """Refuse a text column whose old-looking values are not ISO dates: compared as text,
    '007' or 'abc' would sort before (or after) any date and be deleted (or kept) wrongly.

    Raises:
        ConfigError: a value the deletion would select is not an ISO date or timestamp.
    """
    values = dataset.to_table(columns=[column], filter=old)[column]
    for text in pc.unique(values.drop_null()).to_pylist():
        try:
            datetime.fromisoformat(text.strip())
        except ValueError:
            raise ConfigError(
                f"retention column '{column}' holds text that is not an ISO date "
                "(e.g. 2025-01-31); point compliance.retention_column at a date column"
            ) from None


def _predicate(column: str, bound: Any, owner: tuple[str, str] | None) -> str:
    # A text literal: delta-rs coerces it to the column's date or timestamp type.
    text = bound.isoformat() if isinstance(bound, date | datetime) else str(bound)
    if isinstance(bound, datetime) and bound.tzinfo is not None:
        text = bound.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
    predicate = f"{quote_ident(column)} < {quote_literal(text)}"
    if owner:
        predicate += f" AND {quote_ident(owner[0])} = {quote_literal(owner[1])}"
    return predicate


def table_rows(outcomes: Iterable[PipelineRetention]) -> list[dict[str, Any]]:
    """One flat row per table, for the report."""
    return [
        {
            "pipeline": o.pipeline,
            "table": t.table.target.label,
            "uri": t.table.target.uri,
            "column": t.column,
            "rows_deleted": t.rows_deleted,
            "files_vacuumed": t.files_vacuumed,
            "problem": t.problem,
        }
        for o in outcomes
        for t in o.tables
    ]
