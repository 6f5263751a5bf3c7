"""Where the run store lives, and one way to talk to it on SQLite or PostgreSQL.

The store is SQLite at `<state_dir>/runs.db` unless $SLUICE_RUN_STORE or the project's
`run_store:` names another file or a PostgreSQL URL
(`postgresql://user@host:5432/db?schema=sluice`; tables live in `schema`, default `sluice`,
created if missing). Every module writes its SQL once with `?` placeholders; on PostgreSQL
`StoreConnection` rewrites the placeholders, and the few statements that differ (upserts,
JSON access, DDL) come from per-dialect tables: `upsert_sql`, `json_text` and the `ddl`
mapping each module hands to `ensure_schema`. No ORM: no new dependency, the same SQL on
both, and SQLite keeps its exact statements.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sluiceway.core.store_location import (
    DEFAULT_SCHEMA,
    STORE_ENV,
    Dialect,
    StoreLocation,
    as_location,
    parse_location,
    resolve_location,
    scrub_url,
)
from sluiceway.errors import ConfigError

__all__ = [
    "DEFAULT_SCHEMA",
    "STORE_ENV",
    "Dialect",
    "StoreConnection",
    "StoreLocation",
    "as_location",
    "connect",
    "ensure_schema",
    "parse_location",
    "resolve_location",
    "scrub_url",
]


class StoreConnection:
    """One connection to the store; `execute` takes SQLite-style `?` SQL on both dialects.

    Rows read by key (`row["run_id"]`), by position, and convert with `dict(row)`.
    """

    def __init__(self, dialect: Dialect, raw: Any) -> None:
        self.dialect: Dialect = dialect
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.dialect == "sqlite":
            return self.raw.execute(sql, tuple(params))
        cursor = self.raw.cursor(cursor_factory=_pg().extras.DictCursor)
        cursor.execute(pg_sql(sql), pg_params(params))
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.dialect == "sqlite":
            self.raw.executemany(sql, rows)
            return
        if rows:
            rows_pg = [pg_params(r) for r in rows]
            _pg().extras.execute_batch(self.raw.cursor(), pg_sql(sql), rows_pg, page_size=500)


_NUL_STANDIN = "\ufffd"
"""PostgreSQL text cannot hold NUL (U+0000): it is stored as U+FFFD, the replacement mark."""


def pg_params(params: Sequence[Any]) -> tuple[Any, ...]:
    """Parameters for PostgreSQL: NUL characters in text become U+FFFD (text cannot hold
    them; SQLite stores them as given)."""
    return tuple(
        p.replace("\x00", _NUL_STANDIN) if isinstance(p, str) and "\x00" in p else p for p in params
    )


NOT_A_REPLAY = "details NOT LIKE '%\"replay\": true%'"
"""SQL: the run is not a `sluice replay` of dead letters (`store_json` writes the flag as
`"replay": true`). A replay is a run, but not a load of its date: trends, freshness and the
last success leave it out."""


def store_json(value: Any) -> str:
    """`value` as JSON text every reader of the store accepts (SQLite `json_extract`,
    PostgreSQL `::jsonb`): NaN and ±Infinity become null, NUL characters U+FFFD; objects JSON
    cannot hold become their `str`. Keys are sorted."""
    return json.dumps(_json_safe(value), default=str, sort_keys=True)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.replace("\x00", _NUL_STANDIN)
    if isinstance(value, Mapping):
        return {_json_safe(k) if isinstance(k, str) else k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


_QUOTED_OR_MARK = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|\?|%", re.DOTALL
)


def pg_sql(sql: str) -> str:
    """SQLite-style SQL for psycopg2: `?` outside string literals, quoted identifiers and
    comments → `%s`; every `%` → `%%`."""

    def swap(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "?":
            return "%s"
        return text.replace("%", "%%")

    return _QUOTED_OR_MARK.sub(swap, sql)


def _pg() -> Any:
    try:
        import psycopg2
        import psycopg2.extras
    except ImportError as exc:  # pragma: no cover - a main dependency
        raise ConfigError(
            f"a PostgreSQL run store needs psycopg2 ({exc}): pip install psycopg2-binary"
        ) from exc
    return psycopg2


def db_errors() -> tuple[type[Exception], ...]:
    """The exceptions a store query may raise (SQLite's and, when installed, psycopg2's)."""
    try:
        import psycopg2
    except ImportError:  # pragma: no cover
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg2.Error)


def is_missing_table(exc: Exception) -> bool:
    """True when `exc` says a store table does not exist (a store never written to)."""
    return "no such table" in str(exc) or getattr(exc, "pgcode", None) == "42P01"


@contextmanager
def connect(
    location: StoreLocation, *, read_only: bool = False, timeout: float = 30
) -> Iterator[StoreConnection]:
    """A connection in one transaction (committed on success, rolled back on error), closed
    at the end. Read-only: SQLite `mode=ro`, PostgreSQL `default_transaction_read_only`.
    PostgreSQL sessions run in UTC and in the location's schema.

    Raises:
        ConfigError: the PostgreSQL server cannot be reached (the message has no password).
    """
    if location.dialect == "sqlite":
        assert location.path is not None
        if read_only:
            uri = f"{location.path.resolve().as_uri()}?mode=ro"
            raw = sqlite3.connect(uri, uri=True, timeout=timeout)
        else:
            raw = sqlite3.connect(location.path, timeout=timeout)
        raw.row_factory = sqlite3.Row
        try:
            with raw:
                yield StoreConnection("sqlite", raw)
        finally:
            raw.close()
        return
    raw = _pg_connect(location, read_only=read_only, timeout=timeout)
    try:
        with raw:
            raw.cursor().execute("SET TIME ZONE 'UTC'")
            yield StoreConnection("postgresql", raw)
    finally:
        raw.close()


def _pg_options(location: StoreLocation, *, read_only: bool) -> str:
    """The URL's own `options`, then the store's: the schema (quoted: its case is kept) and
    UTC, which come last so that they win (`connect` sets UTC again: libpq applies $PGTZ
    after these)."""
    given = _pg().extensions.parse_dsn(location.url or "").get("options", "")
    options = f'{given} -c search_path="{location.schema}" -c timezone=UTC'.strip()
    if read_only:
        options += " -c default_transaction_read_only=on"
    return options


def _pg_connect(location: StoreLocation, *, read_only: bool, timeout: float) -> Any:
    psycopg2 = _pg()
    try:
        options = _pg_options(location, read_only=read_only)
        raw = psycopg2.connect(location.url, options=options, connect_timeout=max(1, int(timeout)))
    except (psycopg2.OperationalError, psycopg2.ProgrammingError) as exc:
        raise ConfigError(
            f"cannot connect to the run store {location.label}: "
            f"{location.scrub(str(exc)).strip()}; check the URL in ${STORE_ENV} or the "
            "project's run_store, and that the server is running"
        ) from None
    ext = psycopg2.extensions
    as_float = ext.new_type(ext.DECIMAL.values, "SLUICE_DEC2FLOAT", _to_float)
    ext.register_type(as_float, raw)
    return raw


def _to_float(value: str | None, _cursor: Any) -> float | None:
    return float(value) if value is not None else None


_prepared: set[tuple[str, str, str]] = set()
_prepared_lock = threading.Lock()


def ensure_schema(location: StoreLocation, ddl: Mapping[Dialect, str], *, name: str) -> None:
    """Create the tables of one module (`ddl` per dialect) if missing.

    SQLite runs the script in WAL mode on every call (cheap, as before); PostgreSQL checks
    once per process, and creates the schema and tables only when one is missing (a role
    that may only read an existing store needs no CREATE privilege), under an advisory lock
    so that two processes starting together do not race.
    """
    if location.dialect == "sqlite":
        assert location.path is not None
        location.path.parent.mkdir(parents=True, exist_ok=True)
        with connect(location) as con:
            con.raw.execute("PRAGMA journal_mode=WAL")
            con.raw.executescript(ddl["sqlite"])
        return
    key = (location.url or "", location.schema, name)
    tables = _CREATED_TABLE.findall(ddl["postgresql"])
    with _prepared_lock:
        if key in _prepared:
            return
        with connect(location) as con:
            cursor = con.raw.cursor()
            if not _pg_has_tables(cursor, location.schema, tables):
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (location.schema,))
                cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (location.schema,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE SCHEMA "{location.schema}"')
                cursor.execute(ddl["postgresql"])
        _prepared.add(key)


_CREATED_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)")


def _pg_has_tables(cursor: Any, schema: str, tables: Sequence[str]) -> bool:
    cursor.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = ANY(%s)",
        (schema, list(tables)),
    )
    return bool(cursor.fetchone()[0] == len(tables))


def _sqlite_upsert(table: str, columns: Sequence[str], key: Sequence[str], bump: str) -> str:
    marks = ", ".join("?" for _ in columns)
    return f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({marks})"


def _pg_upsert(table: str, columns: Sequence[str], key: Sequence[str], bump: str) -> str:
    marks = ", ".join("?" for _ in columns)
    updates = [f"{c} = excluded.{c}" for c in columns if c not in key]
    if bump:
        updates.append(f"{bump} = DEFAULT")
    action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
        f"ON CONFLICT ({', '.join(key)}) {action}"
    )


def _sqlite_insert_new(table: str, columns: Sequence[str], key: Sequence[str], bump: str) -> str:
    marks = ", ".join("?" for _ in columns)
    return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({marks})"


def _pg_insert_new(table: str, columns: Sequence[str], key: Sequence[str], bump: str) -> str:
    marks = ", ".join("?" for _ in columns)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
        f"ON CONFLICT ({', '.join(key)}) DO NOTHING"
    )


_Builder = Callable[[str, Sequence[str], Sequence[str], str], str]
_UPSERT: dict[Dialect, _Builder] = {"sqlite": _sqlite_upsert, "postgresql": _pg_upsert}
_INSERT_NEW: dict[Dialect, _Builder] = {"sqlite": _sqlite_insert_new, "postgresql": _pg_insert_new}


def upsert_sql(
    dialect: Dialect, table: str, columns: Sequence[str], *, key: Sequence[str], bump: str = ""
) -> str:
    """Insert a row, replacing the row with the same `key` (SQLite `INSERT OR REPLACE`).

    Args:
        dialect: the store's dialect.
        table: the table.
        columns: the columns given, in the order of the parameters.
        key: the primary key columns.
        bump: on PostgreSQL, a serial column reset to its next value on replace (SQLite's
            replace gives the row a new rowid: "saved last" stays "highest id").
    """
    return _UPSERT[dialect](table, columns, key, bump)


def insert_new_sql(
    dialect: Dialect, table: str, columns: Sequence[str], *, key: Sequence[str]
) -> str:
    """Insert a row unless one with the same `key` exists (SQLite `INSERT OR IGNORE`)."""
    return _INSERT_NEW[dialect](table, columns, key, "")


_NON_JSON_NUMBERS = ("-Infinity", "Infinity", "NaN")
"""What Python's json.dumps wrote for non-finite floats before `store_json`."""


def _sqlite_json_text(column: str, key: str) -> str:
    lenient = column
    for token in _NON_JSON_NUMBERS:
        lenient = f"replace({lenient}, '{token}', 'null')"
    return (
        f"CASE WHEN json_valid({column}) THEN json_extract({column}, '$.{key}') "
        f"WHEN json_valid({lenient}) THEN json_extract({lenient}, '$.{key}') END"
    )


_JSON_TEXT: dict[Dialect, Callable[[str, str], str]] = {
    "sqlite": _sqlite_json_text,
    "postgresql": lambda column, key: f"({column}::jsonb ->> '{key}')",
}


def json_text(dialect: Dialect, column: str, field: str) -> str:
    """SQL reading top-level `field` of the JSON text in `column` (text on PostgreSQL).

    On SQLite, the NaN and Infinity that earlier versions wrote read as null, and text that
    is not JSON reads as NULL; on PostgreSQL every row was written by `store_json`."""
    return _JSON_TEXT[dialect](column, field)
