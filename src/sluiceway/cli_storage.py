"""`sluice optimize`, `vacuum`, `history` and `restore`: storage operations on a pipeline's
Delta tables (a sink's table, or the dead-letter table with `--dead-letter`).

The table is found the way the runner finds it: a sink's `path` relative to the spec's
folder (or s3:// with the sink's `storage_options`), the dead-letter table from
`dead_letter:` or the state folder.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from deltalake import CommitProperties, DeltaTable
from rich import box
from rich.markup import escape
from rich.table import Table

from sluiceway.core.loader import load_spec
from sluiceway.core.replay import dead_letter_table
from sluiceway.core.runner import RunOptions
from sluiceway.core.spec import Pipeline
from sluiceway.core.storage import delta_storage_options, storage_errors
from sluiceway.errors import ConfigError, SluicewayError, SpecError

DEFAULT_RETENTION_HOURS = 168.0
RETENTION_KEY = "delta.deletedFileRetentionDuration"
_INTERVAL = re.compile(r"^\s*(?:interval\s+)?(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*$", re.IGNORECASE)
_HOURS_PER_UNIT = {
    "nanosecond": 1 / 3.6e12,
    "microsecond": 1 / 3.6e9,
    "millisecond": 1 / 3.6e6,
    "second": 1 / 3600,
    "minute": 1 / 60,
    "hour": 1.0,
    "day": 24.0,
    "week": 168.0,
}
_ROW_METRICS = ("num_added_rows", "num_output_rows")
_T = TypeVar("_T")
# Minimum widths keep whole run ids and dates (for `sluice show` / restore) in narrow terminals.
_HISTORY_COLUMNS = {
    "version": 3,
    "timestamp": len("2025-01-15T00:00:00.000Z"),
    "operation": 6,
    "run_id": len("20250115T000000-0123abcd"),
    "logical_date": len("2025-01-15"),
    "rows": 4,
}


@dataclass(frozen=True)
class TableTarget:
    """A Delta table of a pipeline: where it is and how to reach it."""

    label: str
    uri: str
    spec_options: dict[str, str]
    zorder_by: tuple[str, ...] = ()

    def open(self) -> DeltaTable:
        """The table at its latest version.

        Raises:
            ConfigError: there is no Delta table at the URI yet.
            SinkError: the storage refused the read.
        """
        options = delta_storage_options(self.uri, self.spec_options)
        with self.errors("open"):
            if not DeltaTable.is_deltatable(self.uri, storage_options=options):
                raise ConfigError(
                    f"{self.label}: no Delta table at {self.uri} yet; run the pipeline first "
                    "(`sluice run SPEC`), or check the path in the spec."
                )
            return DeltaTable(self.uri, storage_options=options)

    def errors(self, action: str, advice: str = "") -> Any:
        """Storage failures inside the block become a SinkError naming this table."""
        return storage_errors(
            f"Could not {action} {self.label} ({self.uri})",
            self.spec_options,
            advice=advice or "Check the path and storage_options (endpoint, region, credentials).",
            context={"table": self.label},
        )


def resolve_target(
    pipeline: Pipeline,
    base_dir: Path,
    *,
    sink_index: int | None = None,
    is_dead_letter: bool = False,
    state_dir: Path | None = None,
) -> TableTarget:
    """The Delta table a storage command works on.

    Args:
        pipeline: the validated spec.
        base_dir: the spec's folder (relative paths resolve against it).
        sink_index: index in `sinks` (default: the first delta sink).
        is_dead_letter: the dead-letter table instead of a sink.
        state_dir: the state folder (default dead-letter location).

    Raises:
        ConfigError: the index is out of range, the sink is not a delta sink, or the
            spec has no delta sink.
    """
    if is_dead_letter:
        if sink_index is not None:
            raise ConfigError("--sink and --dead-letter exclude each other; pass one of them.")
        table = dead_letter_table(pipeline, RunOptions(base_dir=base_dir, state_dir=state_dir))
        options = pipeline.dead_letter.storage_options if pipeline.dead_letter else {}
        return TableTarget("the dead-letter table", table.uri, dict(options))
    index = _sink_index(pipeline, sink_index)
    config: Any = pipeline.sinks[index]
    path = config.path
    uri = path if "://" in path else str((base_dir / Path(path).expanduser()).resolve())
    zorder = tuple(getattr(config, "zorder_by", None) or ())
    return TableTarget(f"sinks[{index}]", uri, dict(config.storage_options), zorder)


def _sink_index(pipeline: Pipeline, wanted: int | None) -> int:
    deltas = [i for i, sink in enumerate(pipeline.sinks) if sink.type == "delta"]
    if wanted is None:
        if not deltas:
            kinds = [sink.type for sink in pipeline.sinks]
            raise ConfigError(
                f"pipeline '{pipeline.pipeline}' has no delta sink (sinks: {kinds}); "
                "storage commands work on Delta tables only (or --dead-letter)."
            )
        return deltas[0]
    if not 0 <= wanted < len(pipeline.sinks):
        raise ConfigError(
            f"--sink {wanted}: the spec has {len(pipeline.sinks)} sink(s), numbered from 0; "
            f"delta sinks: {deltas}."
        )
    if wanted not in deltas:
        raise ConfigError(
            f"--sink {wanted} is a '{pipeline.sinks[wanted].type}' sink, not a Delta table; "
            f"delta sinks: {deltas}."
        )
    return wanted


@dataclass(frozen=True)
class OptimizeOutcome:
    """What an optimize did."""

    files_before: int
    files_after: int
    version: int
    zorder_by: tuple[str, ...]


def optimize_table(target: TableTarget, *, zorder_by: tuple[str, ...] = ()) -> OptimizeOutcome:
    """Compact the table's small files, or Z-order them by `zorder_by` when given.

    Raises:
        ConfigError: a Z-order column is not in the table, or is a partition column.
        SinkError: the storage refused the rewrite.
    """
    table = target.open()
    columns = [field.name for field in table.schema().fields]
    unknown = [c for c in zorder_by if c not in columns]
    if unknown:
        raise ConfigError(
            f"--zorder {', '.join(unknown)}: not a column of {target.label} (columns: {columns})."
        )
    partitioned = [c for c in zorder_by if c in table.metadata().partition_columns]
    if partitioned:
        raise ConfigError(
            f"--zorder {', '.join(partitioned)}: partition column(s) of {target.label}; a "
            "partition holds one value of them already. Z-order by other columns."
        )
    before = len(table.file_uris())
    with target.errors("optimize"):
        if zorder_by:
            metadata = {"sluice.zorder_by": json.dumps(list(zorder_by))}
            table.optimize.z_order(
                list(zorder_by), commit_properties=CommitProperties(custom_metadata=metadata)
            )
        else:
            table.optimize.compact()
        table.update_incremental()
    return OptimizeOutcome(before, len(table.file_uris()), table.version(), zorder_by)


def minimum_retention_hours(table: DeltaTable) -> float:
    """The table's `delta.deletedFileRetentionDuration` in hours (168 when unset)."""
    raw = table.metadata().configuration.get(RETENTION_KEY)
    if not raw:
        return DEFAULT_RETENTION_HOURS
    match = _INTERVAL.match(raw)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _HOURS_PER_UNIT:
        return DEFAULT_RETENTION_HOURS
    return float(match.group(1)) * _HOURS_PER_UNIT[unit]


def vacuum_table(
    target: TableTarget,
    *,
    retention_hours: float | None = None,
    is_dry_run: bool = False,
    allow_short_retention: bool = False,
) -> list[str]:
    """Delete (or with `is_dry_run`, list) the files no version within the retention needs.

    Raises:
        ConfigError: `retention_hours` is below the table's retention and
            `allow_short_retention` is not set.
        SinkError: the storage refused the deletes.
    """
    table = target.open()
    minimum = minimum_retention_hours(table)
    if retention_hours is not None and retention_hours < minimum and not allow_short_retention:
        raise ConfigError(
            f"--retention-hours {retention_hours:g} is below the retention of {target.label} "
            f"({minimum:g} h, {RETENTION_KEY} or the default): files still needed by time "
            "travel, `sluice restore` or a reader on an older version would be deleted. Use "
            f"--retention-hours {minimum:g} or more, or add --force if you accept that."
        )
    with target.errors("vacuum"):
        return table.vacuum(
            retention_hours=None if retention_hours is None else _whole_hours(retention_hours),
            dry_run=is_dry_run,
            enforce_retention_duration=not allow_short_retention,
        )


def _whole_hours(hours: float) -> int:
    # delta-rs takes whole hours; rounding up never deletes more than asked.
    return int(-(-hours // 1))


def history_rows(target: TableTarget, *, limit: int | None = None) -> list[dict[str, Any]]:
    """The table's commits, newest first: version, timestamp, operation, run id, logical
    date and rows, from the commit metadata."""
    table = target.open()
    with target.errors("read the history of"):
        commits = table.history(limit)
    return [_history_row(commit) for commit in commits]


def _history_row(commit: dict[str, Any]) -> dict[str, Any]:
    stamp = commit.get("timestamp")
    moment = None
    if stamp is not None:
        moment = datetime.fromtimestamp(stamp / 1000, UTC).isoformat(timespec="milliseconds")
        moment = moment.replace("+00:00", "Z")
    return {
        "version": commit.get("version"),
        "timestamp": moment,
        "operation": commit.get("operation"),
        "run_id": commit.get("sluice.run_id"),
        "logical_date": commit.get("sluice.logical_date"),
        "rows": _rows_of(commit),
    }


def _rows_of(commit: dict[str, Any]) -> int | None:
    accounting = commit.get("sluice.accounting")
    if accounting:
        written = json.loads(accounting).get("rows_written")
        if written is not None:
            return int(written)
    metrics = commit.get("operationMetrics") or {}
    return next((int(metrics[k]) for k in _ROW_METRICS if metrics.get(k) is not None), None)


def restore_table(
    target: TableTarget, *, version: int | None = None, timestamp: str | None = None
) -> int:
    """Restore the table to `version` or to the version current at `timestamp`; returns the
    new version (a restore is a commit: the history keeps what it undid).

    Raises:
        ConfigError: neither or both of version and timestamp, or a bad timestamp.
        SinkError: the version is not in the history or its files were vacuumed.
    """
    if (version is None) == (timestamp is None):
        raise ConfigError("pass exactly one of --version V or --timestamp ISO to restore.")
    pin: int | datetime
    if timestamp is not None:
        from sluiceway.sources.delta import parse_timestamp

        try:
            pin = parse_timestamp(timestamp)
        except ValueError as exc:
            raise ConfigError(f"--timestamp: {exc}") from None
    else:
        assert version is not None
        pin = version
    table = target.open()
    latest = table.version()
    if isinstance(pin, int) and not 0 <= pin < latest:
        raise ConfigError(
            f"--version {pin}: {target.label} has versions 0 to {latest} and {latest} is "
            f"current; restore to an older one (see `sluice history`)."
        )
    advice = (
        "The version must be in the table's history (see `sluice history`) and its files "
        "must not have been vacuumed."
    )
    with target.errors(f"restore to {pin}", advice):
        table.restore(pin, commit_properties=_restore_metadata(pin))
        table.update_incremental()
        return table.version()


def _restore_metadata(pin: int | datetime) -> CommitProperties:
    restored = pin.isoformat() if isinstance(pin, datetime) else str(pin)
    return CommitProperties(custom_metadata={"sluice.restored_to": restored})


# The commands.


def _cli() -> Any:
    from sluiceway import cli

    return cli


def _fail(message: str) -> NoReturn:
    _cli().err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(1)


def _target(
    spec: str, sink: int | None, is_dead_letter: bool, state_dir: str | None
) -> TableTarget:
    cli = _cli()
    try:
        pipeline = load_spec(spec)
    except SpecError as exc:
        cli._print_problems(spec, exc)
        sys.exit(1)
    try:
        return resolve_target(
            pipeline,
            Path(spec).resolve().parent,
            sink_index=sink,
            is_dead_letter=is_dead_letter,
            state_dir=cli._state_dir(state_dir),
        )
    except SluicewayError as exc:
        _fail(exc.message)


def _guarded(action: Callable[[], _T]) -> _T:
    try:
        return action()
    except SluicewayError as exc:
        _fail(exc.message)


def _table_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """SPEC and the options that pick the table, shared by every storage command."""
    decorators = [
        click.argument("spec", type=click.Path(exists=True, dir_okay=False)),
        click.option(
            "--sink",
            type=click.IntRange(min=0),
            help="Index of the sink in `sinks` (from 0; default: the first delta sink).",
        ),
        click.option(
            "--dead-letter", "is_dead_letter", is_flag=True, help="The dead-letter table instead."
        ),
        click.option(
            "--state-dir",
            help="The state folder, for the default dead-letter table "
            "(default: $SLUICE_HOME or ./.sluice).",
        ),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


@click.command()
@_table_options
@click.option(
    "--zorder",
    "zorder",
    multiple=True,
    help="Z-order by this column (repeat for several; default: the sink's zorder_by, "
    "else plain compaction).",
)
def optimize(
    spec: str,
    sink: int | None,
    is_dead_letter: bool,
    state_dir: str | None,
    zorder: tuple[str, ...],
) -> None:
    """Compact a table's small files (or Z-order them); prints the file count before/after."""
    target = _target(spec, sink, is_dead_letter, state_dir)
    columns = zorder or target.zorder_by
    outcome = _guarded(lambda: optimize_table(target, zorder_by=columns))
    how = f"Z-ordered by {', '.join(columns)}" if columns else "compacted"
    _cli().console.print(
        f"{target.label} {how}: {outcome.files_before} file(s) before, "
        f"{outcome.files_after} after (version {outcome.version}); {target.uri}",
        soft_wrap=True,
        markup=False,
    )


@click.command()
@_table_options
@click.option(
    "--retention-hours",
    type=click.FloatRange(min=0),
    help="Keep files removed less than this long ago (default: the table's retention, 168 h).",
)
@click.option("--dry-run", is_flag=True, help="List the files that would be deleted; delete none.")
@click.option("--force", is_flag=True, help="Allow a retention below the table's.")
def vacuum(
    spec: str,
    sink: int | None,
    is_dead_letter: bool,
    state_dir: str | None,
    retention_hours: float | None,
    dry_run: bool,
    force: bool,
) -> None:
    """Delete data files no table version within the retention needs."""
    target = _target(spec, sink, is_dead_letter, state_dir)
    files = _guarded(
        lambda: vacuum_table(
            target,
            retention_hours=retention_hours,
            is_dry_run=dry_run,
            allow_short_retention=force,
        )
    )
    console = _cli().console
    for file in files:
        console.print(f"  {file}", soft_wrap=True, markup=False)
    verb = "would be deleted (dry run)" if dry_run else "deleted"
    console.print(
        f"{target.label}: {len(files)} file(s) {verb}; {target.uri}", soft_wrap=True, markup=False
    )


@click.command()
@_table_options
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def history(
    spec: str,
    sink: int | None,
    is_dead_letter: bool,
    state_dir: str | None,
    limit: int,
    fmt: str,
) -> None:
    """A table's commits, newest first: version, time, operation, run, logical date, rows."""
    target = _target(spec, sink, is_dead_letter, state_dir)
    rows = _guarded(lambda: history_rows(target, limit=limit))
    if fmt == "json":
        print(json.dumps(rows))
        return
    out = Table(title=escape(f"{target.label}: {target.uri}"), header_style="bold", box=box.SIMPLE)
    for column, width in _HISTORY_COLUMNS.items():
        out.add_column(
            column,
            min_width=width,
            overflow="fold",
            justify="right" if column in ("version", "rows") else "left",
        )
    for row in rows:
        out.add_row(*("" if value is None else str(value) for value in row.values()))
    _cli().console.print(out, soft_wrap=True)


@click.command()
@_table_options
@click.option("--version", "version", type=click.IntRange(min=0), help="The version to go back to.")
@click.option("--timestamp", help="Go back to the version current at this ISO 8601 time (UTC).")
def restore(
    spec: str,
    sink: int | None,
    is_dead_letter: bool,
    state_dir: str | None,
    version: int | None,
    timestamp: str | None,
) -> None:
    """Restore a table to an older version (time travel); prints the new version."""
    target = _target(spec, sink, is_dead_letter, state_dir)
    new_version = _guarded(lambda: restore_table(target, version=version, timestamp=timestamp))
    to = f"version {version}" if version is not None else f"the version at {timestamp}"
    _cli().console.print(
        f"{target.label} restored to {to}: new version {new_version}; {target.uri}",
        soft_wrap=True,
        markup=False,
    )


COMMANDS = (optimize, vacuum, history, restore)

__all__ = [
    "COMMANDS",
    "TableTarget",
    "history_rows",
    "minimum_retention_hours",
    "optimize_table",
    "resolve_target",
    "restore_table",
    "vacuum_table",
]
