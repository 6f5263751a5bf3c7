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

import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from sluiceway.errors import ConfigError

Dialect = Literal["sqlite", "postgresql"]
STORE_ENV = "SLUICE_RUN_STORE"
DEFAULT_SCHEMA = "sluice"
_PG_SCHEMES = ("postgresql", "postgres")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass(frozen=True)
class StoreLocation:
    """A run store: a SQLite file, or a PostgreSQL database and schema.

    Attributes:
        dialect: 'sqlite' or 'postgresql'.
        path: the SQLite file (None on PostgreSQL).
        url: the libpq URL without the `schema` parameter (None on SQLite).
        schema: the PostgreSQL schema of the tables.
    """

    dialect: Dialect
    path: Path | None = None
    url: str | None = None
    schema: str = DEFAULT_SCHEMA

    @property
    def label(self) -> str:
        """A printable name: the file, or the URL with its password replaced by ***."""
        if self.path is not None:
            return str(self.path)
        return f"{scrub_url(self.url or '')} (schema {self.schema})"

    def exists(self) -> bool:
        """False for a SQLite file not created yet; a server is asked only when queried."""
        return self.path.is_file() if self.path is not None else True

    def scrub(self, text: str) -> str:
        """`text` with this location's password (if any) replaced by ***."""
        password = urlsplit(self.url).password if self.url else None
        return text.replace(password, "***") if password else text


def scrub_url(url: str) -> str:
    """`url` with the password of its user part replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def parse_location(value: str, *, base: Path) -> StoreLocation:
    """A `run_store` value: a PostgreSQL URL, or a SQLite file (relative to `base`).

    Raises:
        ConfigError: a URL of another scheme, or a schema name that is not an identifier.
    """
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if not scheme:
        return StoreLocation("sqlite", path=(base / Path(value).expanduser()).resolve())
    if scheme not in _PG_SCHEMES:
        raise ConfigError(
            f"run store {scrub_url(value)!r} has scheme '{scheme}': use a file path or "
            "postgresql://user@host:5432/db?schema=sluice"
        )
    parts = urlsplit(value)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), DEFAULT_SCHEMA)
    if not _IDENTIFIER.fullmatch(schema):
        raise ConfigError(
            f"run store schema {schema!r} is not a plain identifier: use letters, digits and _"
        )
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    url = urlunsplit(parts._replace(scheme="postgresql", query=rest))
    return StoreLocation("postgresql", url=url, schema=schema)


def resolve_location(
    state_dir: Path,
    *,
    run_store: str | None = None,
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> StoreLocation:
    """Where the run store is: $SLUICE_RUN_STORE, else `run_store` (the project's setting,
    relative to `root`), else `<state_dir>/runs.db`.

    Raises:
        ConfigError: an unusable URL (see `parse_location`).
    """
    env = os.environ if environ is None else environ
    if env.get(STORE_ENV):
        return parse_location(env[STORE_ENV], base=Path.cwd())
    if run_store:
        return parse_location(run_store, base=root or Path.cwd())
    return StoreLocation("sqlite", path=(Path(state_dir) / "runs.db").resolve())


def as_location(target: StoreLocation | str | Path) -> StoreLocation:
    """A location from a location, a PostgreSQL URL or a SQLite path (existing callers)."""
    if isinstance(target, StoreLocation):
        return target
    return parse_location(str(target), base=Path.cwd())


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
        cursor.execute(pg_sql(sql), tuple(params))
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.dialect == "sqlite":
            self.raw.executemany(sql, rows)
            return
        if rows:
            self.raw.cursor().executemany(pg_sql(sql), [tuple(r) for r in rows])


_QUOTED_OR_MARK = re.compile(r"'(?:[^']|'')*'|\?|%")


def pg_sql(sql: str) -> str:
    """SQLite-style SQL for psycopg2: `?` outside string literals → `%s`, `%` → `%%`."""

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
            yield StoreConnection("postgresql", raw)
    finally:
        raw.close()


def _pg_connect(location: StoreLocation, *, read_only: bool, timeout: float) -> Any:
    psycopg2 = _pg()
    options = f"-c search_path={location.schema} -c timezone=UTC"
    if read_only:
        options += " -c default_transaction_read_only=on"
    try:
        raw = psycopg2.connect(location.url, options=options, connect_timeout=max(1, int(timeout)))
    except psycopg2.OperationalError as exc:
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

    SQLite runs the script in WAL mode on every call (cheap, as before); PostgreSQL creates
    the schema and tables once per process, under an advisory lock so that two processes
    starting together do not race.
    """
    if location.dialect == "sqlite":
        assert location.path is not None
        location.path.parent.mkdir(parents=True, exist_ok=True)
        with connect(location) as con:
            con.raw.execute("PRAGMA journal_mode=WAL")
            con.raw.executescript(ddl["sqlite"])
        return
    key = (location.url or "", location.schema, name)
    with _prepared_lock:
        if key in _prepared:
            return
        with connect(location) as con:
            cursor = con.raw.cursor()
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (location.schema,))
            cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (location.schema,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE SCHEMA "{location.schema}"')
            cursor.execute(ddl["postgresql"])
        _prepared.add(key)


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


_JSON_TEXT: dict[Dialect, Callable[[str, str], str]] = {
    "sqlite": lambda column, field: f"json_extract({column}, '$.{field}')",
    "postgresql": lambda column, field: f"({column}::jsonb ->> '{field}')",
}


def json_text(dialect: Dialect, column: str, field: str) -> str:
    """SQL reading top-level `field` of the JSON text in `column` (text on PostgreSQL)."""
    return _JSON_TEXT[dialect](column, field)


def url_with_schema(url: str, schema: str) -> str:
    """`url` with its `schema` parameter set (tests and docs build URLs with it)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"] + [("schema", schema)]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))
