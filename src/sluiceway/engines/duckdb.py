"""The DuckDB engine: where relations live and SQL runs.

One connection per run. Every statement goes through `execute`, which counts it (the
quality engine promises a bounded number of statements per dataset) and turns DuckDB
errors into sluiceway errors with the statement's purpose in the message.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from sluiceway.errors import StepError

# Masking puts keys and salts in SQL as hex blobs; DuckDB quotes values and SQL in messages.
_HEX_RUN = re.compile(r"[0-9A-Fa-f]{32,}")
_QUOTED_VALUE = re.compile(r"'(?:[^']|'')*'")
# Errors about the query or its files, not the data: they double-quote names and paths.
_QUERY_ERROR = re.compile(r"^(?:[^'\"\n]* failed: )?(?:Binder|Catalog|Parser|IO) Error:")
# In a data error a value may be quoted either way, hold quotes of its own ('"a": "b"'), or
# be a bare number: a quote is blanked up to the last of its kind on the line, and numbers
# apart from type names and their widths (INT32, DECIMAL(18,3)).
_ROW_VALUE = re.compile(
    r"(?P<type>\b[A-Z]+\(\d+(?:,\s*\d+)*\))"
    r"|(?P<quote>['\"]).*(?P=quote)"
    r"|(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w)"
)


def redact_row_values(message: str) -> str:
    """An engine error message without the values of rows it may quote.

    A data error ("Could not convert string 'alice@example.com' to INT32", "Malformed JSON
    ... Input: \"{...}\"", "Overflow in addition of INT32 (2000000123 + 2000000456)") loses
    every quoted text and bare number; an error about the query itself (Binder, Catalog,
    Parser) or a file it reads (IO) keeps its double-quoted names and paths and loses its
    single-quoted literals only.
    """
    if _QUERY_ERROR.match(message):
        return _QUOTED_VALUE.sub("'…'", message)
    return _ROW_VALUE.sub(_blank_value, message)


def _blank_value(match: re.Match[str]) -> str:
    if match["type"]:
        return match[0]
    quote = match["quote"]
    return f"{quote}…{quote}" if quote else "…"


def quote_ident(name: str) -> str:
    """Quote an SQL identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a string literal for DuckDB."""
    return "'" + value.replace("'", "''") + "'"


class DuckDBEngine:
    """A DuckDB connection with statement counting and named temp tables.

    Args:
        threads: worker threads DuckDB may use (None: DuckDB's default).
        memory_limit: e.g. '8GB' (None: DuckDB's default).
        redact_values: hide the values of rows in error messages (the data holds PII);
            see `redact_row_values`.
    """

    def __init__(
        self,
        *,
        threads: int | None = None,
        memory_limit: str | None = None,
        redact_values: bool = False,
    ) -> None:
        self.con = duckdb.connect(":memory:")
        self.redact_values = redact_values
        self.statements = 0
        self._names = itertools.count(1)
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET enable_progress_bar = false")
        self.con.execute("SET autoinstall_known_extensions = false")
        self.con.execute("SET autoload_known_extensions = false")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        if memory_limit:
            self.con.execute(f"SET memory_limit = {quote_literal(memory_limit)}")

    def execute(
        self, sql: str, params: Sequence[Any] | None = None, *, purpose: str = "query"
    ) -> duckdb.DuckDBPyConnection:
        """Run one statement; DuckDB errors become StepError naming the purpose."""
        self.statements += 1
        try:
            return self.con.execute(sql, params) if params else self.con.execute(sql)
        except duckdb.Error as exc:
            raise self._failure(purpose, exc, sql) from exc

    def _failure(self, purpose: str, exc: duckdb.Error, sql: str) -> StepError:
        """A StepError that never carries a secret (hex blobs) nor, when asked, a data value."""
        message = _HEX_RUN.sub("…", str(exc))
        if self.redact_values:
            message = redact_row_values(message)
        return StepError(
            f"{purpose} failed: {message}", context={"sql": _clip(_HEX_RUN.sub("…", sql))}
        )

    def run(self, sql: str, *, purpose: str = "statement") -> None:
        """Run a statement whose result is not needed (DDL, SET) and finish it."""
        self.execute(sql, purpose=purpose).fetchall()

    def fetch_arrow(self, sql: str, *, purpose: str = "query") -> pa.Table:
        """Run a query and return its result as an Arrow table."""
        self.statements += 1
        try:
            return self.con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise self._failure(purpose, exc, sql) from exc

    def fetch_reader(
        self, sql: str, *, batch_rows: int = 1_000_000, purpose: str = "query"
    ) -> pa.RecordBatchReader:
        """Run a query and stream its result as Arrow record batches."""
        self.statements += 1
        try:
            return self.con.sql(sql).to_arrow_reader(batch_rows)
        except duckdb.Error as exc:
            raise self._failure(purpose, exc, sql) from exc

    def fetch_one(self, sql: str, *, purpose: str = "query") -> tuple[Any, ...]:
        """Run a query that returns one row."""
        rows = self.execute(sql, purpose=purpose).fetchall()
        assert rows, f"{purpose} returned no row"
        return tuple(rows[0])

    def new_name(self, prefix: str) -> str:
        """A fresh temp table name: sw_<prefix>_<n>."""
        return f"sw_{prefix}_{next(self._names)}"

    def create_table(self, name: str, select_sql: str, *, purpose: str = "query") -> str:
        """Materialize `select_sql` as temp table `name`; returns the name."""
        self.run(
            f"CREATE OR REPLACE TEMP TABLE {quote_ident(name)} AS {select_sql}", purpose=purpose
        )
        return name

    def create_view(self, name: str, select_sql: str, *, purpose: str = "query") -> str:
        """Define temp view `name` over `select_sql`; returns the name."""
        self.run(
            f"CREATE OR REPLACE TEMP VIEW {quote_ident(name)} AS {select_sql}", purpose=purpose
        )
        return name

    def register_arrow(self, name: str, data: pa.Table) -> str:
        """Make an Arrow table queryable as a temp table `name`."""
        view = f"__arrow_{name}"
        self.con.register(view, data)
        try:
            return self.create_table(
                name, f"SELECT * FROM {quote_ident(view)}", purpose=f"load {name}"
            )
        finally:
            self.con.unregister(view)

    def drop(self, *names: str) -> None:
        """Drop temp tables or views by name; names that do not exist are ignored."""
        for name in names:
            kinds = self.execute(
                "SELECT table_type FROM information_schema.tables WHERE table_name = ?", [name]
            ).fetchall()
            for (kind,) in kinds:
                noun = "VIEW" if kind == "VIEW" else "TABLE"
                self.run(f"DROP {noun} IF EXISTS {quote_ident(name)}", purpose=f"drop {name}")

    def register_view(self, name: str, data: pa.Table) -> str:
        """Make an Arrow table queryable as `name` without copying it into DuckDB."""
        self.con.register(name, data)
        return name

    def unregister(self, name: str) -> None:
        """Forget an Arrow table made queryable by `register_view`."""
        self.con.unregister(name)

    def count(self, table: str) -> int:
        """Row count of a table or view."""
        return int(
            self.fetch_one(f"SELECT count(*) FROM {quote_ident(table)}", purpose=f"count {table}")[
                0
            ]
        )

    def columns_of(self, query: str) -> list[str]:
        """The column names a query would return (binds it, reads no row)."""
        rows = self.execute(f"DESCRIBE {query}", purpose="describe").fetchall()
        return [str(r[0]) for r in rows]

    def columns(self, table: str) -> list[tuple[str, str]]:
        """(name, DuckDB type) of every column of a table or view, in order."""
        rows = self.execute(
            f"DESCRIBE {quote_ident(table)}", purpose=f"describe {table}"
        ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def close(self) -> None:
        """Close the connection."""
        self.con.close()


def _clip(sql: str, limit: int = 500) -> str:
    return sql if len(sql) <= limit else sql[:limit] + " ..."
