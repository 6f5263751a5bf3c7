"""The run store: one row per run with its accounting and check results, and the metric
history: one point per pipeline, check, metric, logical date and hour of day. SQLite in WAL
mode by default, PostgreSQL by URL (`core.store_db`).

The lake is the ledger; this store is an index of runs for humans and tools (`sluice runs`,
`sluice show`) and the training data of anomaly checks. One writer per process, short
transactions.
"""

from __future__ import annotations

import builtins
import json
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sluiceway.core.store_db import (
    Dialect,
    StoreConnection,
    StoreLocation,
    as_location,
    connect,
    ensure_schema,
    json_text,
    resolve_location,
    store_json,
    upsert_sql,
)
from sluiceway.core.store_schema import RUNS_SCHEMA

_SAVED_ORDER: dict[Dialect, str] = {"sqlite": "rowid", "postgresql": "id"}
"""The column that orders runs saved in the same second: the last saved is the highest."""
_PREFIX_MATCH: dict[Dialect, str] = {
    "sqlite": "run_id LIKE ? ESCAPE '\\'",
    "postgresql": "run_id ILIKE ? ESCAPE '\\'",
}
"""A run id prefix (a `like_prefix` pattern), case-insensitive on both (SQLite's LIKE is)."""
_LIKE_SPECIAL = re.compile(r"([\\%_])")
_HOUR_OF_DAY: dict[Dialect, str] = {
    "sqlite": "CAST(strftime('%H', recorded_at) AS INTEGER)",
    "postgresql": "CAST(EXTRACT(HOUR FROM recorded_at::timestamptz) AS INTEGER)",
}
"""The UTC hour of `recorded_at` (the PostgreSQL session runs in UTC)."""

_SERIALIZE_SERIES: dict[Dialect, str | None] = {
    "sqlite": None,
    "postgresql": "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.metrics:' || ?))",
}
"""Serializes `save_metrics` of one pipeline: its delete-then-insert must not interleave with
another writer's (SQLite's write lock already does; PostgreSQL reads committed data)."""

_ADDED_METRIC_COLUMNS = {"flagged": "INTEGER NOT NULL DEFAULT 0"}
"""Columns of `metrics` added after its first version → their DDL, for `_migrate`."""

RUN_METRICS = "__run__"
"""The `check_id` of run-level metrics (rows_in, rows_written, ..., duration_s)."""

_METRIC_COLUMNS = (
    "run_id",
    "pipeline",
    "dataset",
    "check_id",
    "metric",
    "logical_date",
    "value",
    "recorded_at",
    "flagged",
)


@dataclass
class RunRecord:
    """One run as the store keeps it. `details` holds checks, sinks, per-source counts."""

    run_id: str
    pipeline: str
    logical_date: str
    status: str
    started_at: str
    finished_at: str | None = None
    duration_s: float | None = None
    spec_hash: str | None = None
    run_key: str | None = None
    rows_in: int | None = None
    rows_written: int | None = None
    rows_rejected: int | None = None
    rows_deduplicated: int | None = None
    rows_filtered: int | None = None
    rows_warned: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class MetricPoint:
    """One number a run measured: a check's metric, or a run-level count (`RUN_METRICS`).

    `dataset` is the table the number is about ('staged' for the audited result, or a sink's
    table); `logical_date` is an ISO date, `recorded_at` an ISO UTC timestamp. `flagged` is
    True when the check that measured it failed on it (an anomaly check's anomaly): anomaly
    checks do not train on flagged points.
    """

    run_id: str
    pipeline: str
    dataset: str
    check_id: str
    metric: str
    logical_date: str
    value: float
    recorded_at: str
    flagged: bool = False


@dataclass(frozen=True)
class StreamBatchRecord:
    """One committed micro-batch of a stream run: its counts, latencies and the lag after it.

    `batch` is the batch sequence (the version of its Delta app transactions);
    `already_committed` counts redelivered messages recognised as committed and only acked;
    `e2e_*` are seconds from the broker's enqueue time to the commit.
    """

    run_id: str
    pipeline: str
    batch: int
    committed_at: str
    events_in: int
    written: int
    rejected: int
    deduplicated: int
    already_committed: int
    batch_latency_s: float
    e2e_p50_s: float | None = None
    e2e_p99_s: float | None = None
    lag: int | None = None
    table_version: int | None = None


def open_run_store(
    state_dir: Path,
    *,
    run_store: str | None = None,
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunStore:
    """The run store of a state folder: $SLUICE_RUN_STORE, else `run_store` (the project's
    setting, relative to `root`), else `<state_dir>/runs.db` (see `store_db.resolve_location`).

    Raises:
        ConfigError: an unusable URL, or a PostgreSQL server that cannot be reached.
    """
    location = resolve_location(state_dir, run_store=run_store, root=root, environ=environ)
    return RunStore(location)


class RunStore:
    """The store of runs, on SQLite or PostgreSQL.

    Args:
        target: a `StoreLocation`, a SQLite file (its folder is created) or a PostgreSQL URL.

    Raises:
        ConfigError: a PostgreSQL server that cannot be reached.
    """

    def __init__(self, target: StoreLocation | str | Path) -> None:
        self.location = as_location(target)
        self.dialect: Dialect = self.location.dialect
        self.path = self.location.path
        ensure_schema(self.location, RUNS_SCHEMA, name="runs")
        if self.dialect == "sqlite":
            with self._connect() as con:
                _migrate(con.raw)

    @contextmanager
    def _connect(self) -> Iterator[StoreConnection]:
        with connect(self.location) as con:
            yield con

    def save(self, record: RunRecord) -> None:
        """Insert or replace a run."""
        data = asdict(record)
        data["details"] = store_json(record.details)
        sql = upsert_sql(self.dialect, "runs", list(data), key=("run_id",), bump="id")
        with self._connect() as con:
            con.execute(sql, list(data.values()))

    def save_batch(self, batch: StreamBatchRecord) -> None:
        """Record one committed micro-batch of a stream run (a retried batch replaces)."""
        data = asdict(batch)
        sql = upsert_sql(self.dialect, "stream_batches", list(data), key=("pipeline", "batch"))
        with self._connect() as con:
            con.execute(sql, list(data.values()))

    def stream_batches(
        self, pipeline: str, *, run_id: str | None = None, limit: int = 1000
    ) -> builtins.list[StreamBatchRecord]:
        """The most recent committed batches of a stream pipeline, oldest first."""
        sql = "SELECT * FROM stream_batches WHERE pipeline = ?"
        params: tuple[Any, ...] = (pipeline,)
        if run_id is not None:
            sql += " AND run_id = ?"
            params += (run_id,)
        sql += " ORDER BY batch DESC LIMIT ?"
        with self._connect() as con:
            rows = con.execute(sql, (*params, limit)).fetchall()
        return [StreamBatchRecord(**dict(row)) for row in reversed(rows)]

    def mark_interrupted(self, pipeline: str, *, mode: str) -> builtins.list[str]:
        """Mark the `running` runs of `pipeline` in `mode` as `interrupted` (a process that
        died without finishing them); returns their ids. Call it only when no other process
        can be running them (one stream runner per pipeline)."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT run_id FROM runs WHERE pipeline = ? AND status = 'running' "
                f"AND {json_text(self.dialect, 'details', 'mode')} = ?",
                (pipeline, mode),
            ).fetchall()
            ids = [row["run_id"] for row in rows]
            con.executemany(
                "UPDATE runs SET status = 'interrupted', error = 'the process stopped without "
                "finishing the run (killed or crashed); its committed batches are in the table' "
                "WHERE run_id = ?",
                [(i,) for i in ids],
            )
        return ids

    def get(self, run_id: str) -> RunRecord | None:
        """A run by its exact id, else by a unique prefix of it (`%` and `_` match only
        themselves)."""
        with self._connect() as con:
            rows = con.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchall()
            if not rows:
                rows = con.execute(
                    f"SELECT * FROM runs WHERE {_PREFIX_MATCH[self.dialect]} LIMIT 2",
                    (like_prefix(run_id),),
                ).fetchall()
        return _record(rows[0]) if len(rows) == 1 else None

    def list(self, *, pipeline: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The newest runs first."""
        sql = (
            "SELECT * FROM runs"
            + (" WHERE pipeline = ?" if pipeline else "")
            + " ORDER BY replace(replace(started_at, '-', ''), ':', '') DESC, "
            + f"{_SAVED_ORDER[self.dialect]} DESC LIMIT ?"
        )
        params: tuple[Any, ...] = (pipeline, limit) if pipeline else (limit,)
        with self._connect() as con:
            return [_record(r) for r in con.execute(sql, params).fetchall()]

    def save_metrics(self, rows: Sequence[MetricPoint]) -> None:
        """Store a run's metrics in one transaction, keeping one point per date and hour.

        Copies of one point in `rows` (two checks of one series, e.g. a warn tier and an
        error tier of one metric) are merged into one, flagged when any copy is. A point
        replaces any stored point with the same (pipeline, logical_date, check_id, metric)
        recorded in the same hour of day (UTC): a rerun of a date in that hour overwrites it
        instead of adding a duplicate, while a pipeline run every hour keeps one point per
        hour for `hour_of_day` seasonality. A rerun in another hour adds a point; anomaly
        checks train on the latest point of each date (`core.anomaly.training_set`).
        """
        points = _merge_copies(rows)
        keys = [
            (r.pipeline, r.logical_date, r.check_id, r.metric, _hour_of_day(r.recorded_at))
            for r in points
        ]
        marks = ", ".join("?" for _ in _METRIC_COLUMNS)
        serialize = _SERIALIZE_SERIES[self.dialect]
        with self._connect() as con:
            if serialize:
                for pipeline in sorted({r.pipeline for r in points}):
                    con.execute(serialize, (pipeline,))
            con.executemany(
                "DELETE FROM metrics WHERE pipeline = ? AND logical_date = ? AND check_id = ? "
                f"AND metric = ? AND {_HOUR_OF_DAY[self.dialect]} = ?",
                keys,
            )
            con.executemany(
                f"INSERT INTO metrics ({', '.join(_METRIC_COLUMNS)}) VALUES ({marks})",
                [(*(getattr(r, c) for c in _METRIC_COLUMNS[:-1]), int(r.flagged)) for r in points],
            )

    def metric_history(
        self,
        pipeline: str,
        check_id: str,
        metric: str,
        *,
        before: str | None = None,
        limit: int = 1000,
    ) -> builtins.list[MetricPoint]:
        """The points of one series, oldest first.

        Args:
            pipeline: the pipeline name.
            check_id: a check's fingerprint, or `RUN_METRICS`.
            metric: e.g. 'observed_value' or 'rows_written'.
            before: an ISO date; only points of earlier dates are returned (the training
                window of a check tested on that date).
            limit: at most this many points: the most recent ones.

        Returns:
            The points ordered by logical_date, then recorded_at, ascending; a date run in
            several hours has one point per hour.
        """
        sql = (
            f"SELECT {', '.join(_METRIC_COLUMNS)} FROM metrics "
            "WHERE pipeline = ? AND check_id = ? AND metric = ?"
            + (" AND logical_date < ?" if before is not None else "")
            + " ORDER BY logical_date DESC, recorded_at DESC LIMIT ?"
        )
        params: tuple[Any, ...] = (pipeline, check_id, metric)
        params += (before, limit) if before is not None else (limit,)
        with self._connect() as con:
            rows = con.execute(sql, params).fetchall()
        return [_point(r) for r in reversed(rows)]

    def prune_metrics(self, *, keep_days: int) -> int:
        """Delete points whose logical_date is more than `keep_days` days before today (UTC).

        Returns:
            The number of points deleted.
        """
        cutoff = (datetime.now(UTC).date() - timedelta(days=keep_days)).isoformat()
        with self._connect() as con:
            return con.execute("DELETE FROM metrics WHERE logical_date < ?", (cutoff,)).rowcount


def like_prefix(text: str) -> str:
    """A LIKE pattern (with `ESCAPE '\\'`) matching the strings that start with `text`."""
    return _LIKE_SPECIAL.sub(r"\\\1", text) + "%"


def _merge_copies(rows: Sequence[MetricPoint]) -> list[MetricPoint]:
    """One point per (pipeline, dataset, check_id, metric, logical_date, hour): the last
    copy's value, flagged when any copy is."""
    merged: dict[tuple[str, str, str, str, str, int], MetricPoint] = {}
    for row in rows:
        hour = _hour_of_day(row.recorded_at)
        key = (row.pipeline, row.dataset, row.check_id, row.metric, row.logical_date, hour)
        earlier = merged.get(key)
        merged[key] = replace(row, flagged=row.flagged or (earlier is not None and earlier.flagged))
    return list(merged.values())


def _hour_of_day(recorded_at: str) -> int:
    """The UTC hour of an ISO timestamp (naive = UTC)."""
    instant = datetime.fromisoformat(recorded_at)
    if instant.tzinfo is not None:
        instant = instant.astimezone(UTC)
    return instant.hour


def _migrate(con: sqlite3.Connection) -> None:
    """Bring a database created by an earlier version up to `_SCHEMA`: add the columns it
    lacks (another process may add one at the same time)."""
    columns = {row["name"] for row in con.execute("PRAGMA table_info(metrics)")}
    for column, ddl in _ADDED_METRIC_COLUMNS.items():
        if column in columns:
            continue
        try:
            con.execute(f"ALTER TABLE metrics ADD COLUMN {column} {ddl}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise


def _point(row: Any) -> MetricPoint:
    data = dict(row)
    data["flagged"] = bool(data["flagged"])
    return MetricPoint(**data)


def _record(row: Any) -> RunRecord:
    data = {k: v for k, v in dict(row).items() if k in _RUN_FIELDS}
    data["details"] = json.loads(data["details"] or "{}")
    return RunRecord(**data)


_RUN_FIELDS = frozenset(RunRecord.__dataclass_fields__)
