"""The SQL of the Prometheus metrics (`observability.metrics`), per run store dialect.

SQLite keeps the statements the metrics always used (`json_each`, `TOTAL`, `strftime`);
PostgreSQL reads the same JSON text as `jsonb` and gets the same numbers: sums of nothing are
0, attempts count from 1, `finished_at` is compact ('20250115T093000') for batch runs and ISO
for stream runs and both parse as UTC (the store's sessions run in UTC).
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.core.store_db import NOT_A_REPLAY, Dialect, json_text

_ISO_FINISHED = (
    "CASE WHEN finished_at GLOB '[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9]*' "
    "THEN substr(finished_at, 1, 4) || '-' || substr(finished_at, 5, 2) || '-' || "
    "substr(finished_at, 7, 2) || ' ' || substr(finished_at, 10, 2) || ':' || "
    "substr(finished_at, 12, 2) || ':' || substr(finished_at, 14, 2) ELSE finished_at END"
)
"""`finished_at` as SQLite reads time: batch runs store `20250115T093000`, stream runs ISO."""


def _pg_array(column: str, field: str) -> str:
    """The elements of a JSON array field, none when the field is missing or not an array."""
    value = f"({column}::jsonb -> '{field}')"
    return f"jsonb_array_elements(CASE WHEN jsonb_typeof({value}) = 'array' THEN {value} ELSE '[]'::jsonb END)"


_SQLITE: dict[str, str] = {
    "tables": "SELECT name FROM sqlite_master",
    "last_success": (
        f"SELECT pipeline, MAX(CAST(strftime('%s', {_ISO_FINISHED}) AS INTEGER)) FROM runs "
        f"WHERE status = 'succeeded' AND finished_at IS NOT NULL AND {NOT_A_REPLAY} "
        "GROUP BY pipeline"
    ),
    "checks": (
        "SELECT r.pipeline, json_extract(c.value, '$.name'), json_extract(c.value, '$.severity'), "
        "json_extract(c.value, '$.status'), COUNT(*) "
        "FROM runs AS r, json_each(r.details, '$.checks') AS c "
        "WHERE r.status != 'running' AND json_valid(r.details) GROUP BY 1, 2, 3, 4"
    ),
    "run_retries": (
        "SELECT pipeline, TOTAL(CASE WHEN json_valid(details) "
        "THEN MAX(COALESCE(json_extract(details, '$.attempt'), 1) - 1, 0) END) "
        "FROM runs WHERE status != 'running' GROUP BY 1 ORDER BY 1"
    ),
    "step_retries": (
        "SELECT r.pipeline, 'steps[' || json_extract(s.value, '$.index') || '].' || "
        "json_extract(s.value, '$.step'), TOTAL(json_extract(s.value, '$.attempts') - 1) "
        "FROM runs AS r, json_each(r.details, '$.steps') AS s "
        "WHERE r.status != 'running' AND json_valid(r.details) "
        "AND json_extract(s.value, '$.attempts') IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
    ),
}

_SQLITE["step_durations"] = (
    "(SELECT r.pipeline AS pipeline, json_extract(s.value, '$.duration_s') AS duration_s "
    "FROM runs AS r, json_each(r.details, '$.steps') AS s "
    "WHERE r.status != 'running' AND json_valid(r.details) "
    "AND json_extract(s.value, '$.duration_s') IS NOT NULL) AS step_runs"
)
_SQLITE["bytes_written"] = (
    "SELECT pipeline, TOTAL(CASE WHEN status = 'succeeded' AND json_valid(details) "
    "THEN json_extract(details, '$.bytes_written') END) FROM runs GROUP BY 1 ORDER BY 1"
)

_POSTGRESQL: dict[str, str] = {
    "tables": (
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    ),
    "last_success": (
        "SELECT pipeline, MAX(floor(EXTRACT(EPOCH FROM finished_at::timestamptz))) FROM runs "
        f"WHERE status = 'succeeded' AND finished_at IS NOT NULL AND {NOT_A_REPLAY} "
        "GROUP BY pipeline"
    ),
    "checks": (
        "SELECT r.pipeline, c.value ->> 'name', c.value ->> 'severity', c.value ->> 'status', "
        f"COUNT(*) FROM runs AS r, {_pg_array('r.details', 'checks')} AS c(value) "
        "WHERE r.status != 'running' GROUP BY 1, 2, 3, 4"
    ),
    "run_retries": (
        "SELECT pipeline, COALESCE(SUM(GREATEST("
        "COALESCE((details::jsonb ->> 'attempt')::numeric, 1) - 1, 0)), 0) "
        "FROM runs WHERE status != 'running' GROUP BY 1 ORDER BY 1"
    ),
    "step_retries": (
        "SELECT r.pipeline, 'steps[' || (s.value ->> 'index') || '].' || (s.value ->> 'step'), "
        "COALESCE(SUM((s.value ->> 'attempts')::numeric - 1), 0) "
        f"FROM runs AS r, {_pg_array('r.details', 'steps')} AS s(value) "
        "WHERE r.status != 'running' AND s.value ->> 'attempts' IS NOT NULL "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    ),
}

_POSTGRESQL["step_durations"] = (
    "(SELECT r.pipeline AS pipeline, (s.value ->> 'duration_s')::double precision AS duration_s "
    f"FROM runs AS r, {_pg_array('r.details', 'steps')} AS s(value) "
    "WHERE r.status != 'running' AND s.value ->> 'duration_s' IS NOT NULL) AS step_runs"
)
_POSTGRESQL["bytes_written"] = (
    "SELECT pipeline, COALESCE(SUM(CASE WHEN status = 'succeeded' "
    "THEN (details::jsonb ->> 'bytes_written')::numeric END), 0) FROM runs GROUP BY 1 ORDER BY 1"
)

QUERIES: dict[Dialect, dict[str, str]] = {"sqlite": _SQLITE, "postgresql": _POSTGRESQL}
"""Statement name → SQL, per dialect."""


def counted_rows(dialect: Dialect) -> str:
    """Runs whose rows reached the sinks: a failed batch run publishes nothing (its rerun
    counts them), while a stream run commits batch by batch, whatever its end."""
    return f"status = 'succeeded' OR {json_text(dialect, 'details', 'mode')} = 'stream'"


_BUCKETS: dict[Dialect, Callable[[str, float], str]] = {
    "sqlite": lambda column, bound: f"SUM({column} <= {bound!r})",
    "postgresql": lambda column, bound: f"SUM(CASE WHEN {column} <= {bound!r} THEN 1 ELSE 0 END)",
}
_TOTAL: dict[Dialect, Callable[[str], str]] = {
    "sqlite": lambda column: f"TOTAL({column})",
    "postgresql": lambda column: f"COALESCE(SUM({column}), 0)",
}


def histogram_sql(dialect: Dialect, source: str, column: str, bounds: tuple[float, ...]) -> str:
    """Per pipeline: the count, the sum and the cumulative bucket counts of `column` over
    `source` (a table and its WHERE clause)."""
    buckets = ", ".join(_BUCKETS[dialect](column, bound) for bound in bounds)
    return (
        f"SELECT pipeline, COUNT({column}), {_TOTAL[dialect](column)}, {buckets} "
        f"FROM {source} GROUP BY pipeline ORDER BY pipeline"
    )
