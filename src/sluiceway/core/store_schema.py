"""The run store's tables, per dialect: the runs, their metric history and stream batches
(`core.runstore`), leases and store metadata (`core.leases`), schedule claims and ticks
(`orchestration.schedule_state`).

SQLite keeps the statements it always had. PostgreSQL gets the same tables with its types
(DOUBLE PRECISION, BIGINT), an `id` serial on `runs` (SQLite's rowid: of two runs started in
the same second, the one saved last sorts first), and byte-order text (`COLLATE "C"`) so that
timestamps stored as text compare as they do on SQLite. JSON stays TEXT; queries cast it.
"""

from __future__ import annotations

from sluiceway.core.store_db import Dialect

_SQLITE_RUNS = """
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
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    dataset TEXT NOT NULL,
    check_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    logical_date TEXT NOT NULL,
    value REAL NOT NULL,
    recorded_at TEXT NOT NULL,
    flagged INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS metrics_by_series
    ON metrics (pipeline, check_id, metric, logical_date);
CREATE TABLE IF NOT EXISTS stream_batches (
    run_id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    batch INTEGER NOT NULL,
    committed_at TEXT NOT NULL,
    events_in INTEGER NOT NULL,
    written INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    deduplicated INTEGER NOT NULL,
    already_committed INTEGER NOT NULL,
    batch_latency_s REAL NOT NULL,
    e2e_p50_s REAL,
    e2e_p99_s REAL,
    lag INTEGER,
    table_version INTEGER,
    PRIMARY KEY (pipeline, batch)
);
"""
_TEXT = 'TEXT COLLATE "C"'
"""PostgreSQL text compares byte by byte, as SQLite does (timestamps sort as text)."""
_PG_RUNS = f"""
CREATE TABLE IF NOT EXISTS runs (
    id BIGSERIAL UNIQUE,
    run_id {_TEXT} PRIMARY KEY,
    pipeline {_TEXT} NOT NULL,
    logical_date {_TEXT} NOT NULL,
    status {_TEXT} NOT NULL,
    started_at {_TEXT} NOT NULL,
    finished_at {_TEXT},
    duration_s DOUBLE PRECISION,
    spec_hash {_TEXT},
    run_key {_TEXT},
    rows_in BIGINT,
    rows_written BIGINT,
    rows_rejected BIGINT,
    rows_deduplicated BIGINT,
    rows_filtered BIGINT,
    rows_warned BIGINT,
    details TEXT NOT NULL DEFAULT '{{}}',
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline, started_at);
CREATE TABLE IF NOT EXISTS metrics (
    run_id {_TEXT} NOT NULL,
    pipeline {_TEXT} NOT NULL,
    dataset {_TEXT} NOT NULL,
    check_id {_TEXT} NOT NULL,
    metric {_TEXT} NOT NULL,
    logical_date {_TEXT} NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    recorded_at {_TEXT} NOT NULL,
    flagged INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS metrics_by_series
    ON metrics (pipeline, check_id, metric, logical_date);
CREATE TABLE IF NOT EXISTS stream_batches (
    run_id {_TEXT} NOT NULL,
    pipeline {_TEXT} NOT NULL,
    batch BIGINT NOT NULL,
    committed_at {_TEXT} NOT NULL,
    events_in BIGINT NOT NULL,
    written BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    deduplicated BIGINT NOT NULL,
    already_committed BIGINT NOT NULL,
    batch_latency_s DOUBLE PRECISION NOT NULL,
    e2e_p50_s DOUBLE PRECISION,
    e2e_p99_s DOUBLE PRECISION,
    lag BIGINT,
    table_version BIGINT,
    PRIMARY KEY (pipeline, batch)
);
"""
RUNS_SCHEMA: dict[Dialect, str] = {"sqlite": _SQLITE_RUNS, "postgresql": _PG_RUNS}

_SQLITE_LEASES = """
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_PG_LEASES = f"""
CREATE TABLE IF NOT EXISTS leases (
    run_id {_TEXT} PRIMARY KEY,
    pipeline {_TEXT} NOT NULL,
    holder {_TEXT} NOT NULL,
    expires_at {_TEXT} NOT NULL
);
CREATE TABLE IF NOT EXISTS store_meta (key {_TEXT} PRIMARY KEY, value {_TEXT} NOT NULL);
"""
LEASES_SCHEMA: dict[Dialect, str] = {"sqlite": _SQLITE_LEASES, "postgresql": _PG_LEASES}

_SQLITE_SCHEDULE = """
CREATE TABLE IF NOT EXISTS schedule_claims (
    pipeline TEXT NOT NULL,
    logical_date TEXT NOT NULL,
    claimed_at TEXT NOT NULL,
    run_id TEXT,
    scheduled_for TEXT,
    status TEXT NOT NULL DEFAULT 'claimed',
    finished_at TEXT,
    PRIMARY KEY (pipeline, logical_date)
);
CREATE TABLE IF NOT EXISTS schedule_ticks (
    pipeline TEXT PRIMARY KEY,
    last_tick TEXT NOT NULL
);
"""
_PG_SCHEDULE = f"""
CREATE TABLE IF NOT EXISTS schedule_claims (
    pipeline {_TEXT} NOT NULL,
    logical_date {_TEXT} NOT NULL,
    claimed_at {_TEXT} NOT NULL,
    run_id {_TEXT},
    scheduled_for {_TEXT},
    status {_TEXT} NOT NULL DEFAULT 'claimed',
    finished_at {_TEXT},
    PRIMARY KEY (pipeline, logical_date)
);
CREATE TABLE IF NOT EXISTS schedule_ticks (
    pipeline {_TEXT} PRIMARY KEY,
    last_tick {_TEXT} NOT NULL
);
"""
SCHEDULE_SCHEMA: dict[Dialect, str] = {"sqlite": _SQLITE_SCHEDULE, "postgresql": _PG_SCHEDULE}
