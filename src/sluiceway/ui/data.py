"""Read-only queries on the run store for the dashboard.

The store (SQLite, or PostgreSQL: `core.store_db`) is opened read-only (SQLite `mode=ro`, a
read-only PostgreSQL session), one short connection per query, so the dashboard
never blocks or changes the runner's writes. `started_at` is compact ('20250115T020000') for
batch runs and ISO for stream runs: every query orders by `_STARTED`, its normalised form.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sluiceway.core.durations import parse_instant
from sluiceway.core.results import was_published
from sluiceway.core.runstore import RUN_METRICS
from sluiceway.core.store_db import (
    NOT_A_REPLAY,
    Dialect,
    StoreConnection,
    StoreLocation,
    as_location,
    connect,
    is_missing_table,
)

_STARTED = (
    "CASE WHEN substr(started_at, 5, 1) = '-' THEN substr(started_at, 1, 19) ELSE "
    "substr(started_at, 1, 4) || '-' || substr(started_at, 5, 2) || '-' || "
    "substr(started_at, 7, 2) || 'T' || substr(started_at, 10, 2) || ':' || "
    "substr(started_at, 12, 2) || ':' || substr(started_at, 14, 2) END"
)
_SAVED_ORDER: dict[Dialect, str] = {"sqlite": "rowid", "postgresql": "id"}
"""Of runs started in the same second, the one saved last is the newest (as `sluice runs`)."""
_SUMMARY_COLUMNS = (
    "run_id, pipeline, logical_date, status, started_at, finished_at, duration_s, rows_in, "
    "rows_written, rows_rejected, rows_deduplicated, rows_filtered, error"
)


@dataclass(frozen=True)
class RunRow:
    """One run as the dashboard lists it; `details` is only filled by `StoreReader.run`."""

    run_id: str
    pipeline: str
    logical_date: str
    status: str
    started_at: str
    finished_at: str | None
    duration_s: float | None
    rows_in: int | None
    rows_written: int | None
    rows_rejected: int | None
    rows_deduplicated: int | None
    rows_filtered: int | None
    error: str | None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def written(self) -> int | None:
        """The rows published: None for a run that staged rows but wrote none (it failed
        before its commit); a run listed without its details counts as published."""
        if self.status == "running" or not self.details:
            return self.rows_written
        return self.rows_written if was_published(self.status, self.details) else None

    @property
    def shown_status(self) -> str:
        return f"{self.status} (replay)" if self.details.get("replay") else self.status

    @property
    def started(self) -> datetime | None:
        """`started_at` as an aware UTC datetime (None when unreadable)."""
        return parse_instant(self.started_at)

    @property
    def finished(self) -> datetime | None:
        """`finished_at` as an aware UTC datetime (None when unknown)."""
        return parse_instant(self.finished_at)


@dataclass(frozen=True)
class PipelineState:
    """The latest run and the latest successful run of one pipeline."""

    pipeline: str
    runs: int
    last: RunRow | None
    last_success: RunRow | None
    newest_data: RunRow | None = None
    """The successful run of the newest logical date (a backfill of an old date is not)."""

    @property
    def data_time(self) -> datetime | None:
        """How recent the published data is, as the freshness monitor judges a table by
        its newest date partition: the end of the newest logical date that succeeded, or
        when that run finished, whichever is earlier."""
        run = self.newest_data
        if run is None:
            return None
        finished = run.finished or run.started
        try:
            day_end = datetime.combine(
                date.fromisoformat(run.logical_date), time(), tzinfo=UTC
            ) + timedelta(days=1)
        except ValueError:
            return finished
        return min(t for t in (finished, day_end) if t is not None)


class StoreReader:
    """Read-only access to the run store; an absent store (or one no run wrote tables in
    yet, on PostgreSQL) reads as empty.

    Args:
        path: the run store: its SQLite file, or a location.
    """

    def __init__(self, path: StoreLocation | Path) -> None:
        self.location = as_location(path)
        self.path = self.location.path

    @contextmanager
    def _connect(self) -> Iterator[StoreConnection | None]:
        if not self.location.exists():
            yield None
            return
        with connect(self.location, read_only=True, timeout=10) as con:
            yield con

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._connect() as con:
            if con is None:
                return []
            try:
                return con.execute(sql, params).fetchall()
            except Exception as exc:
                if con.dialect == "postgresql" and is_missing_table(exc):
                    return []
                raise

    def pipeline_states(self) -> dict[str, PipelineState]:
        """Every pipeline in the store → its run count, latest run and latest success."""
        counts = {r["pipeline"]: r["n"] for r in self._rows(_COUNTS)}
        saved = _SAVED_ORDER[self.location.dialect]
        last = {r["pipeline"]: _run(r) for r in self._rows(_LATEST.format(where="", saved=saved))}
        ok = {
            r["pipeline"]: _run(r)
            for r in self._rows(
                _LATEST.format(where=f"WHERE status = 'succeeded' AND {NOT_A_REPLAY}", saved=saved)
            )
        }
        newest = {
            r["pipeline"]: _run(r)
            for r in self._rows(
                _NEWEST_DATE.format(
                    where=f"WHERE status = 'succeeded' AND {NOT_A_REPLAY}", saved=saved
                )
            )
        }
        return {
            name: PipelineState(name, counts[name], last.get(name), ok.get(name), newest.get(name))
            for name in counts
        }

    def runs(self, pipeline: str, *, offset: int, limit: int) -> tuple[list[RunRow], int]:
        """One page of a pipeline's runs, newest first, and the pipeline's run count."""
        rows = self._rows(
            f"SELECT {_SUMMARY_COLUMNS}, details FROM runs WHERE pipeline = ? "
            f"ORDER BY {_STARTED} DESC, {_SAVED_ORDER[self.location.dialect]} DESC "
            "LIMIT ? OFFSET ?",
            (pipeline, limit, offset),
        )
        total = self._rows("SELECT COUNT(*) AS n FROM runs WHERE pipeline = ?", (pipeline,))
        return [_run(r, details=_details(r)) for r in rows], int(total[0]["n"]) if total else 0

    def run(self, run_id: str) -> RunRow | None:
        """A run by its exact id, with its details."""
        rows = self._rows(
            f"SELECT {_SUMMARY_COLUMNS}, details FROM runs WHERE run_id = ?", (run_id,)
        )
        if not rows:
            return None
        return _run(rows[0], details=_details(rows[0]))

    def check_names(self, pipeline: str) -> dict[str, str]:
        """check_id → name, from the pipeline's latest run that recorded checks."""
        rows = self._rows(
            f"SELECT details FROM runs WHERE pipeline = ? AND details LIKE '%check_id%' "
            f"ORDER BY {_STARTED} DESC LIMIT 1",
            (pipeline,),
        )
        checks = json.loads(rows[0]["details"]).get("checks", []) if rows else []
        return {c["check_id"]: c.get("name") or c.get("check") or c["check_id"] for c in checks}

    def metric_series(
        self, pipeline: str, *, limit: int = 5000
    ) -> dict[tuple[str, str], dict[str, float]]:
        """(check_id, metric) → logical_date → the latest value, from the newest `limit`
        points of the pipeline's metric history (`RUN_METRICS` for run-level counts)."""
        rows = self._rows(
            "SELECT check_id, metric, logical_date, value FROM metrics WHERE pipeline = ? "
            "ORDER BY logical_date DESC, recorded_at DESC LIMIT ?",
            (pipeline, limit),
        )
        series: dict[tuple[str, str], dict[str, float]] = {}
        for row in rows:
            points = series.setdefault((row["check_id"], row["metric"]), {})
            points.setdefault(row["logical_date"], float(row["value"]))
        return series

    def check_verdicts(self, pipeline: str, *, limit: int = 5000) -> dict[str, dict[str, bool]]:
        """check_id → logical_date → whether the check failed that date (its latest run's
        verdict: a failed check's metric points are flagged), from the same points as
        `metric_series`."""
        rows = self._rows(
            "SELECT check_id, logical_date, flagged FROM metrics WHERE pipeline = ? AND "
            "metric = 'observed_value' ORDER BY logical_date DESC, recorded_at DESC LIMIT ?",
            (pipeline, limit),
        )
        verdicts: dict[str, dict[str, bool]] = {}
        for row in rows:
            verdicts.setdefault(row["check_id"], {}).setdefault(
                row["logical_date"], bool(row["flagged"])
            )
        return verdicts


RUN_SERIES = RUN_METRICS
_COUNTS = "SELECT pipeline, COUNT(*) AS n FROM runs GROUP BY pipeline"
_NEWEST_DATE = (
    f"SELECT {_SUMMARY_COLUMNS} FROM (SELECT {_SUMMARY_COLUMNS}, ROW_NUMBER() OVER "
    f"(PARTITION BY pipeline ORDER BY logical_date DESC, {_STARTED} DESC, {{saved}} DESC) AS n "
    "FROM runs {where}) AS newest WHERE n = 1"
)
_LATEST = (
    f"SELECT {_SUMMARY_COLUMNS} FROM (SELECT {_SUMMARY_COLUMNS}, ROW_NUMBER() OVER "
    f"(PARTITION BY pipeline ORDER BY {_STARTED} DESC, {{saved}} DESC) AS n FROM runs {{where}}) "
    "AS latest WHERE n = 1"
)


def _details(row: Any) -> dict[str, Any]:
    details = json.loads(row["details"] or "{}")
    return details if isinstance(details, dict) else {}


def _run(row: Any, *, details: dict[str, Any] | None = None) -> RunRow:
    data = {k: row[k] for k in row.keys() if k != "details"}  # noqa: SIM118 (Row iterates values)
    return RunRow(**data, details=details or {})
