"""The run store: SQLite in WAL mode, one row per run with its accounting and check results.

The lake is the ledger; this store is an index of runs for humans and tools (`sluice runs`,
`sluice show`). One writer per process, short transactions.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    logical_date TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    duration_s REAL,
    spec_hash TEXT,
    run_key TEXT,
    rows_in INTEGER,
    rows_written INTEGER,
    rows_rejected INTEGER,
    rows_deduplicated INTEGER,
    rows_filtered INTEGER,
    rows_warned INTEGER,
    details TEXT NOT NULL DEFAULT '{}',
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline, started_at);
"""


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


class RunStore:
    """SQLite-backed store of runs.

    Args:
        path: the database file; its folder is created.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30)
        con.row_factory = sqlite3.Row
        try:
            with con:
                yield con
        finally:
            con.close()

    def save(self, record: RunRecord) -> None:
        """Insert or replace a run."""
        data = asdict(record)
        data["details"] = json.dumps(record.details, default=str, sort_keys=True)
        columns = ", ".join(data)
        marks = ", ".join(f":{k}" for k in data)
        with self._connect() as con:
            con.execute(f"INSERT OR REPLACE INTO runs ({columns}) VALUES ({marks})", data)

    def get(self, run_id: str) -> RunRecord | None:
        """A run by id, or by a unique prefix of it."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT * FROM runs WHERE run_id LIKE ? || '%' LIMIT 2", (run_id,)
            ).fetchall()
        return _record(rows[0]) if len(rows) == 1 else None

    def list(self, *, pipeline: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The newest runs first."""
        sql = (
            "SELECT * FROM runs"
            + (" WHERE pipeline = ?" if pipeline else "")
            + " ORDER BY started_at DESC LIMIT ?"
        )
        params: tuple[Any, ...] = (pipeline, limit) if pipeline else (limit,)
        with self._connect() as con:
            return [_record(r) for r in con.execute(sql, params).fetchall()]


def _record(row: sqlite3.Row) -> RunRecord:
    data = dict(row)
    data["details"] = json.loads(data["details"] or "{}")
    return RunRecord(**data)
