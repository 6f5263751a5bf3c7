"""The `postgres` source: a table or a query, in full or incrementally by a cursor column.

Rows stream as Arrow record batches through the ADBC PostgreSQL driver (binary COPY) and
DuckDB ingests the stream batch by batch, so a table never sits in Python memory whole.

Incremental mode reads the rows whose cursor is at or after the last committed high-water
mark minus `lag`: `>=` re-reads the rows that tie with the mark (a row committed later with
the same cursor value is not lost), and the rows of one read are deduplicated on the primary
key, keeping the highest cursor. The high-water mark (the greatest cursor read) is the
position, committed by the sink with the data.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any, Literal, Self

import adbc_driver_manager
import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from sluiceway.connectors import postgres as pgc
from sluiceway.core import registry
from sluiceway.core.context import (
    PARSE_REJECT_SCHEMA,
    ROW_FILE,
    ROW_NUMBER,
    RunContext,
    Shape,
    SourceRead,
)
from sluiceway.core.durations import parse_duration
from sluiceway.core.spec import SourceConfig
from sluiceway.engines.duckdb import quote_ident, quote_literal
from sluiceway.errors import ConfigError, SourceError, StepError

PG_TYPE = b"POSTGRESQL:type"
PG_TYPMOD = b"POSTGRESQL:typmod"
TEMPORAL_TYPES = frozenset({"timestamptz", "timestamp", "date"})
NUMERIC_TYPES = frozenset({"int2", "int4", "int8", "numeric", "float4", "float8"})
DUCKDB_MAX_DECIMAL = 38


class PostgresSourceConfig(SourceConfig, pgc.PostgresConnection):
    """A PostgreSQL table or query, read in full or incrementally by a cursor column."""

    type: Literal["postgres"] = Field("postgres", description="A PostgreSQL table or query.")
    table: str | None = Field(None, description="The table to read: 'schema.table' or 'table'.")
    query: str | None = Field(
        None, description="A SELECT to read instead of a table (one statement, no ';')."
    )
    mode: Literal["full", "incremental"] = Field(
        "full", description="full: every row each run; incremental: rows at or after the cursor."
    )
    cursor: str | None = Field(
        None, description="Column that grows with each change (updated_at, id); incremental."
    )
    lag: str | int | float | None = Field(
        None,
        description="Re-read this much before the last cursor: a duration ('5m') for "
        "timestamp/date cursors, a number for numeric ones. Covers late commits.",
    )
    primary_key: list[str] = Field(
        default_factory=list,
        description="Columns identifying a row; required for incremental (dedup of a read).",
    )
    chunk_bytes: int = Field(
        16 << 20,
        ge=4096,
        description="Approximate size of each Arrow record batch streamed from the server.",
    )

    @field_validator("table")
    @classmethod
    def _check_table(cls, value: str | None) -> str | None:
        if value is not None:
            pgc.split_table(value)
        return value

    @field_validator("lag")
    @classmethod
    def _check_lag(cls, value: str | float | None) -> str | float | None:
        if isinstance(value, str):
            parse_duration(value, what="lag", allow_zero=True)
        elif value is not None and value < 0:
            raise ValueError(f"lag {value} must not be negative")
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> Self:
        if (self.table is None) == (self.query is None):
            raise ValueError("set exactly one of table ('schema.table') or query (a SELECT)")
        if self.mode == "incremental" and not (self.cursor and self.primary_key):
            raise ValueError(
                "mode: incremental needs cursor (e.g. cursor: updated_at) and primary_key "
                "(e.g. primary_key: [id])"
            )
        if self.mode == "full" and (self.cursor or self.lag is not None):
            raise ValueError("cursor and lag only apply to mode: incremental")
        return self

    def label(self) -> str:
        """Where a row came from, for __sw_file: 'postgres:public.orders' / 'postgres:query'."""
        return f"postgres:{self.table}" if self.table else "postgres:query"


class PostgresSource:
    """Reads a `PostgresSourceConfig` into one DuckDB table."""

    def __init__(self, config: PostgresSourceConfig) -> None:
        self.config = config

    def read(
        self,
        ctx: RunContext,
        name: str,
        *,
        position: dict[str, Any] | None,
        shape: Shape | None = None,
    ) -> SourceRead:
        """Read the table or query (in incremental mode, the rows from the position on).

        A full read applies `shape` (the contract's flagging query) in the statement that
        loads the rows, so the contract costs no pass of its own over them. An incremental
        read loads the rows as PostgreSQL typed them and leaves the contract to the runner:
        its deduplication on the primary key and its high-water mark read the cursor in its
        own type, whatever the contract casts it to (or leaves out).

        Raises:
            TransientError: the server cannot be reached.
            ConfigError: a credential variable is unset, the login is refused, or the lag
                does not fit the cursor's type.
            SourceError: the table, query or cursor is wrong, or a value cannot be loaded.
        """
        since = self._since(position)
        sql = self._select(since)
        table = ctx.engine.new_name(f"src_{name}")
        if self.config.mode == "incremental":
            shape = None
        with pgc.connect(self.config, role=f"source {name}") as conn:
            schema = self._load(ctx, conn, name, sql, table, shape)
        deduplicated = self._dedup(ctx, table)
        rows = ctx.engine.count(table)
        if deduplicated:
            ctx.events.emit("progress", stage=f"{name}: {deduplicated} repeated key(s) dropped")
        return SourceRead(
            table=table,
            rows_in=rows,
            parse_rejects=PARSE_REJECT_SCHEMA.empty_table(),
            position=self._position(ctx, table, schema, since),
            typed=True,
            fingerprint=self._fingerprint(ctx, table, sql, rows),
            is_shaped=shape is not None,
        )

    def _since(self, position: dict[str, Any] | None) -> dict[str, str] | None:
        """The committed high-water mark to read from, or None (read everything).

        Raises:
            ConfigError: the committed mark belongs to another cursor column.
        """
        if self.config.mode != "incremental" or not position or "last_value" not in position:
            return None
        if position.get("cursor") != self.config.cursor:
            raise ConfigError(
                f"the committed position of this source tracks cursor '{position.get('cursor')}', "
                f"the spec says '{self.config.cursor}': reading from the start by the new "
                "cursor would load every row again. Restore the cursor, or write to a new "
                "table to start over"
            )
        return {"last_value": str(position["last_value"]), "type": str(position["type"])}

    def _select(self, since: dict[str, str] | None) -> str:
        cfg = self.config
        base = f"SELECT * FROM {pgc.qualified(cfg.table)}" if cfg.table else _single(cfg.query)
        if since is None:
            return base
        assert cfg.cursor is not None
        bound = _lower_bound(since["last_value"], since["type"], cfg.lag, cfg.cursor)
        if cfg.table:
            return f"{base} WHERE {pgc.quote_pg_ident(cfg.cursor)} >= {bound}"
        return (
            f"SELECT * FROM ({base}) AS sw_q WHERE sw_q.{pgc.quote_pg_ident(cfg.cursor)} >= {bound}"
        )

    def _load(
        self, ctx: RunContext, conn: Any, name: str, sql: str, table: str, shape: Shape | None
    ) -> pa.Schema:
        """Stream the query's rows into DuckDB table `table`, through `shape` when given;
        returns the Arrow schema."""
        money_scale = _money_scale(conn)
        cursor = conn.cursor()
        cursor.adbc_statement.set_options(
            **{"adbc.postgresql.batch_size_hint_bytes": str(self.config.chunk_bytes)}
        )
        try:
            cursor.execute(sql)
            reader = cursor.fetch_record_batch()
        except adbc_driver_manager.Error as exc:
            raise self._error(name, exc, "run the query") from None
        stream = _NumberedStream(reader, ctx, name)
        columns = [_duck_select(field, money_scale) for field in reader.schema]
        self._check_named_columns(name, reader.schema.names)
        view = f"__pg_{table}"
        ctx.engine.con.register(view, stream.reader())
        select = (
            f"SELECT {', '.join(columns)}, {quote_literal(self.config.label())} AS {ROW_FILE}, "
            f"{ROW_NUMBER} FROM {quote_ident(view)}"
        )
        if shape is not None:
            select = shape(f"({select})", [*reader.schema.names, ROW_FILE, ROW_NUMBER])
        try:
            ctx.engine.create_table(table, select, purpose=f"load postgres source {name}")
        except StepError as exc:
            if stream.failure is not None:
                raise self._error(name, stream.failure, "stream the rows") from None
            raise SourceError(
                f"postgres source {name}: cannot load the rows into DuckDB: {exc.message}",
                context={"source": name},
            ) from exc
        finally:
            ctx.engine.con.unregister(view)
        return reader.schema

    def _check_named_columns(self, name: str, columns: list[str]) -> None:
        named = {"cursor": [self.config.cursor] if self.config.cursor else []}
        named["primary_key"] = self.config.primary_key
        for setting, wanted in named.items():
            missing = [c for c in wanted if c not in columns]
            if missing:
                raise SourceError(
                    f"postgres source {name}: {setting} column(s) {missing} are not among the "
                    f"columns {columns}; fix {setting} in the spec.",
                    context={"source": name},
                )

    def _error(self, name: str, exc: BaseException, action: str) -> SourceError:
        message = pgc.driver_message(exc, self.config)
        what = f"table {self.config.table}" if self.config.table else "its query"
        return SourceError(
            f"postgres source {name}: could not {action} on {what} ({self.config.where()}): "
            f"{message}. Check the table/query and cursor columns in the spec.",
            context={"source": name, "sqlstate": pgc.sqlstate(exc)},
        )

    def _dedup(self, ctx: RunContext, table: str) -> int:
        """Keep one row per primary key (the highest cursor); returns the rows dropped."""
        keys = self.config.primary_key
        if self.config.mode != "incremental" or not keys:
            return 0
        key_list = ", ".join(quote_ident(k) for k in keys)
        total, distinct = ctx.engine.fetch_one(
            f"SELECT (SELECT count(*) FROM {quote_ident(table)}), "
            f"(SELECT count(*) FROM (SELECT DISTINCT {key_list} FROM {quote_ident(table)}))",
            purpose="count repeated primary keys",
        )
        if total == distinct:
            return 0
        assert self.config.cursor is not None
        ctx.engine.create_table(
            table,
            f"SELECT * FROM {quote_ident(table)} QUALIFY row_number() OVER (PARTITION BY "
            f"{key_list} ORDER BY {quote_ident(self.config.cursor)} DESC NULLS LAST, "
            f"{ROW_NUMBER} DESC) = 1",
            purpose="deduplicate on the primary key",
        )
        return int(total) - int(distinct)

    def _position(
        self, ctx: RunContext, table: str, schema: pa.Schema, since: dict[str, str] | None
    ) -> dict[str, Any]:
        """The high-water mark: the greatest cursor read (never below the previous one)."""
        cursor = self.config.cursor
        if self.config.mode != "incremental" or cursor is None:
            return {}
        pg_type = _pg_type(schema.field(cursor))
        duck_type = dict(ctx.engine.columns(table))[cursor]
        previous = (
            f" UNION ALL SELECT CAST({quote_literal(since['last_value'])} AS {duck_type})"
            if since
            else ""
        )
        # A numeric without precision arrives as exact text: ordered as text, 9 > 12; as a
        # double, 2^53 + 1 = 2^53. DECIMAL(38,10) orders 28 integer digits exactly, and leaves
        # out what it cannot hold (NaN, which would else mark past every number).
        greatest = (
            "arg_max(c, TRY_CAST(c AS DECIMAL(38, 10)))"
            if pg_type == "numeric" and duck_type == "VARCHAR"
            else "max(c)"
        )
        (mark,) = ctx.engine.fetch_one(
            f"SELECT {greatest}::VARCHAR FROM (SELECT {quote_ident(cursor)} AS c "
            f"FROM {quote_ident(table)}{previous})",
            purpose="high-water mark",
        )
        if mark is None:
            return {}
        return {"cursor": cursor, "last_value": mark, "type": pg_type}

    @staticmethod
    def _fingerprint(ctx: RunContext, table: str, sql: str, rows: int) -> str:
        """The query and a hash of every value read: same rows → same fingerprint. Only the
        row's own columns count: not its number, nor the contract's flags when shaped."""
        columns = [c for c, _ in ctx.engine.columns(table) if not c.startswith("__sw_")]
        content = "0"
        if columns and rows:
            (content,) = ctx.engine.fetch_one(
                f"SELECT sum(hash({', '.join(quote_ident(c) for c in columns)}))::VARCHAR "
                f"FROM {quote_ident(table)}",
                purpose="fingerprint the rows read",
            )
        blob = f"{sql}|{rows}|{content}"
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


class _NumberedStream:
    """The driver's record batches with a row number column, a progress event per batch,
    and the driver's exception kept (DuckDB would only see a generic error)."""

    def __init__(self, reader: pa.RecordBatchReader, ctx: RunContext, name: str) -> None:
        self.source = reader
        self.ctx = ctx
        self.name = name
        self.failure: BaseException | None = None
        self.schema = pa.schema([*reader.schema, pa.field(ROW_NUMBER, pa.int64())])

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self._batches())

    def _batches(self) -> Iterator[pa.RecordBatch]:
        done = 0
        try:
            for batch in self.source:
                numbers = pa.array(np.arange(done + 1, done + 1 + batch.num_rows, dtype=np.int64))
                done += batch.num_rows
                yield pa.RecordBatch.from_arrays([*batch.columns, numbers], schema=self.schema)
                self.ctx.events.emit(
                    "progress", stage=f"reading {self.name}", done=done, unit="rows"
                )
        except Exception as exc:
            self.failure = exc
            raise


def _money_scale(conn: Any) -> int:
    """The fractional digits of `money` on this server (its lc_monetary: 2 mostly, 0 for
    yen): the driver hands money over as whole units of the smallest fraction."""
    cursor = conn.cursor()
    try:
        cursor.execute("SELECT scale(1::money::numeric)")
        row = cursor.fetchone()
    except adbc_driver_manager.Error:
        return 2
    finally:
        cursor.close()
    return int(row[0]) if row and row[0] is not None else 2


def _duck_select(field: pa.Field, money_scale: int = 2) -> str:
    """The DuckDB expression loading one column: NUMERIC(p,s) arrives as exact text and
    becomes DECIMAL(p,s), money arrives as whole units of its smallest fraction and becomes
    DECIMAL(19, scale); everything else keeps the driver's Arrow type."""
    column = quote_ident(field.name)
    if _pg_type(field) == "money":
        exact = f"CAST({column} AS DECIMAL(19, 0))"
        shifted = f"{exact} * {10**-money_scale:.{money_scale}f}" if money_scale else exact
        return f"CAST({shifted} AS DECIMAL(19, {money_scale})) AS {column}"
    if _pg_type(field) != "numeric":
        return column
    precision, scale = _numeric_typmod(field)
    if precision is None or precision > DUCKDB_MAX_DECIMAL:
        return column  # unconstrained NUMERIC stays exact text; the contract can type it
    return f"CAST({column} AS DECIMAL({precision}, {scale})) AS {column}"


def _numeric_typmod(field: pa.Field) -> tuple[int | None, int]:
    raw = (field.metadata or {}).get(PG_TYPMOD)
    typmod = int(raw) if raw else -1
    if typmod < 4:
        return None, 0
    precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
    if scale > precision:  # a negative scale (PostgreSQL 15) is stored as 11-bit two's complement
        return None, 0
    return precision, scale


def _pg_type(field: pa.Field) -> str:
    return (field.metadata or {}).get(PG_TYPE, b"").decode()


def _lower_bound(last_value: str, pg_type: str, lag: str | float | None, cursor: str) -> str:
    """SQL for `last_value - lag`, typed as the cursor column."""
    value = f"CAST({pgc.quote_pg_literal(last_value)} AS {pg_type})"
    if lag is None or lag == 0:
        return value
    if isinstance(lag, str):
        if pg_type not in TEMPORAL_TYPES:
            raise ConfigError(
                f"lag '{lag}' is a duration but cursor '{cursor}' is {pg_type}: give a number "
                "(lag: 100) for a numeric cursor"
            )
        seconds = parse_duration(lag, what="lag", allow_zero=True).total_seconds()
        return f"({value} - INTERVAL '{seconds} seconds')"
    if pg_type not in NUMERIC_TYPES:
        raise ConfigError(
            f"lag {lag} is a number but cursor '{cursor}' is {pg_type}: give a duration "
            "(lag: 5m) for a timestamp or date cursor"
        )
    return f"({value} - {lag!r})"


def _single(query: str | None) -> str:
    """The spec's query as one statement (a trailing ';' is dropped)."""
    assert query is not None
    text = re.sub(r";\s*$", "", query.strip())
    return text


registry.register("source", "postgres", PostgresSourceConfig, PostgresSource)
