"""The SQL of the HTML report (`observability.report`), per run store dialect.

SQLite keeps the statements the report always used (`json_each`, `rowid`); PostgreSQL reads
the same JSON text as `jsonb`, and its `id` column stands for the rowid: of runs started in
the same second, the one the store saved last is the newest.
"""

from __future__ import annotations

from sluiceway.core.store_db import NOT_A_REPLAY, Dialect

_PUBLISHED: dict[Dialect, str] = {
    "sqlite": "status IN ('succeeded', 'running') OR coalesce(json_array_length(details, "
    "'$.sinks'), 0) > 0 OR json_extract(details, '$.mode') = 'stream'",
    "postgresql": "status IN ('succeeded', 'running') OR (details::jsonb -> 'sinks') <> "
    "'[]'::jsonb OR details::jsonb ->> 'mode' = 'stream'",
}
"""A run whose rows reached a sink (see `core.results.was_published`): the rows a failed
run staged are not written."""


def _counts(dialect: Dialect) -> str:
    return f"""run_id, pipeline, logical_date, status, duration_s, rows_in,
    CASE WHEN {_PUBLISHED[dialect]} THEN rows_written END AS rows_written,
    rows_rejected, rows_deduplicated,"""


_PG_CHECKS = "(details::jsonb -> 'checks')"
_PG_CHECK_ARRAY = (
    f"CASE WHEN jsonb_typeof({_PG_CHECKS}) = 'array' THEN {_PG_CHECKS} ELSE '[]'::jsonb END"
)

SUMMARY_COLUMNS: dict[Dialect, str] = {
    "sqlite": f"""{_counts("sqlite")}
    (SELECT count(*) FROM json_each(details, '$.checks')
      WHERE json_extract(value, '$.status') = 'passed') AS checks_passed,
    coalesce(json_array_length(details, '$.checks'), 0) AS checks_total""",
    "postgresql": f"""{_counts("postgresql")}
    (SELECT count(*) FROM jsonb_array_elements({_PG_CHECK_ARRAY}) AS c(value)
      WHERE c.value ->> 'status' = 'passed') AS checks_passed,
    jsonb_array_length({_PG_CHECK_ARRAY}) AS checks_total""",
}
"""The columns of a `RunSummary`, checks counted in SQL (no results file is opened)."""

_STARTED = "replace(replace(started_at, '-', ''), ':', '')"
"""`started_at` as compact text ('20250115T020000'): batch runs store it compact, stream runs
ISO, and the two spellings do not sort together."""
NEWEST_FIRST: dict[Dialect, str] = {
    "sqlite": f"ORDER BY {_STARTED} DESC, rowid DESC",
    "postgresql": f"ORDER BY {_STARTED} DESC, id DESC",
}
"""started_at has one-second resolution; of runs started in the same second, the one the
store saved last (the highest rowid / id) is the newest."""

CHECK_POINTS: dict[Dialect, str] = {
    "sqlite": f"""
WITH recent AS (SELECT run_id, logical_date, started_at, details FROM runs
                WHERE pipeline = ? AND {NOT_A_REPLAY} {NEWEST_FIRST["sqlite"]} LIMIT ?)
SELECT recent.run_id, json_extract(c.value, '$.check_id'), json_extract(c.value, '$.name'),
       json_extract(c.value, '$.check'), json_extract(c.value, '$.column'),
       json_extract(c.value, '$.status'), json_extract(c.value, '$.observed_value')
FROM recent, json_each(recent.details, '$.checks') AS c
""",
    "postgresql": f"""
WITH recent AS (SELECT run_id, logical_date, started_at, id, details FROM runs
                WHERE pipeline = ? AND {NOT_A_REPLAY} {NEWEST_FIRST["postgresql"]} LIMIT ?)
SELECT recent.run_id, c.value ->> 'check_id', c.value ->> 'name', c.value ->> 'check',
       c.value ->> 'column', c.value ->> 'status', c.value -> 'observed_value'
FROM recent, jsonb_array_elements(
    CASE WHEN jsonb_typeof(recent.details::jsonb -> 'checks') = 'array'
    THEN recent.details::jsonb -> 'checks' ELSE '[]'::jsonb END) AS c(value)
""",
}
"""Every check of the most recent runs of a pipeline: run, id, name, check, column, status,
observed value (a JSON number stays a number)."""
