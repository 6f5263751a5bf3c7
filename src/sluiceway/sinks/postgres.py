"""The `postgres` sink: upsert (or append) into a table, positions in the same transaction.

One write is one transaction: the rows are COPied (binary, through ADBC) into a temporary
staging table, then `INSERT ... SELECT` moves them into the target (`ON CONFLICT (keys) DO
UPDATE` for upsert), and a row in `<schema>._sluice_commits` records the idempotency key
and the source positions. Any failure rolls all of it back. The commits table is the
ledger, as a Delta table's history is for the delta sink:

- `committed_positions` folds the positions of this pipeline's commits to this table,
  oldest first;
- `is_committed` is true for an `append` sink whose table already holds the key, so the
  same inputs never land twice; an `upsert` always writes (a rerun converges).

Writers of the same table and pipeline are serialized by a transaction-scoped advisory lock.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, Self

import adbc_driver_manager
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from sluiceway.connectors import postgres as pgc
from sluiceway.core import registry
from sluiceway.core.context import RunContext, WriteRequest, WriteResult
from sluiceway.core.spec import SinkConfig
from sluiceway.core.storage import merge_positions
from sluiceway.engines.duckdb import redact_row_values
from sluiceway.errors import SinkError, SluicewayError

PostgresMode = Literal["upsert", "append"]
COMMITS_TABLE = "_sluice_commits"

_COMMITS_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    id bigserial PRIMARY KEY,
    target text NOT NULL,
    pipeline text NOT NULL,
    app_id text NOT NULL,
    version bigint NOT NULL,
    positions jsonb NOT NULL,
    metadata jsonb NOT NULL,
    rows_written bigint NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
)"""


class PostgresSinkConfig(SinkConfig, pgc.PostgresConnection):
    """A PostgreSQL table, upserted on keys or appended to."""

    type: Literal["postgres"] = Field("postgres", description="The sink plug-in: postgres.")
    table: str = Field(description="Target table: 'schema.table' or 'table' (schema public).")
    mode: PostgresMode = Field(
        "upsert",
        description="upsert: insert or update on keys; append: insert once per idempotency key.",
    )
    keys: list[str] = Field(
        default_factory=list, description="Columns identifying a row; required for upsert."
    )
    create_table: bool = Field(
        True, description="Create the table (types from the data, keys as primary key) if missing."
    )

    @field_validator("table")
    @classmethod
    def _check_table(cls, value: str) -> str:
        pgc.split_table(value)
        return value

    @model_validator(mode="after")
    def _check_keys(self) -> Self:
        if self.mode == "upsert" and not self.keys:
            raise ValueError("mode: upsert needs keys, the columns that identify a row")
        return self

    def schema_and_name(self) -> tuple[str, str]:
        parts = pgc.split_table(self.table)
        return (parts[0], parts[1]) if len(parts) == 2 else ("public", parts[0])


class PostgresSink:
    """Writes audited rows to a PostgreSQL table, in one transaction with the positions.

    Args:
        config: the validated sink config.
    """

    def __init__(self, config: PostgresSinkConfig) -> None:
        self.config = config
        schema, name = config.schema_and_name()
        self.target = f"{schema}.{name}"
        self.target_sql = f"{pgc.quote_pg_ident(schema)}.{pgc.quote_pg_ident(name)}"
        self.commits_sql = f"{pgc.quote_pg_ident(schema)}.{pgc.quote_pg_ident(COMMITS_TABLE)}"

    def __repr__(self) -> str:
        return f"PostgresSink(table={self.target!r}, mode={self.config.mode!r})"

    @property
    def uri(self) -> str:
        return f"postgres:{self.target}"

    def write(self, ctx: RunContext, request: WriteRequest) -> WriteResult:
        """Commit `request.data` and its positions in one transaction (or nothing, for an
        append whose idempotency key is committed, or a stream batch already committed).

        Raises:
            SinkError: the server refused the rows (constraint, type, missing unique index
                for the keys), or the keys are missing, NULL or repeated in the data.
            TransientError: the server cannot be reached.
        """
        try:
            return self._write(ctx, request)
        except SinkError as exc:
            if exc.context.get("sqlstate") != "22003":
                raise
            too_big = self._out_of_range(ctx, request.data)
            if not too_big:
                raise
            raise SinkError(
                f"{exc.message} The value(s) that do not fit are in column(s) "
                f"{', '.join(too_big)} (the server does not say which): widen the column(s) "
                "or round / cap the values in a step.",
                context=exc.context,
            ) from None

    def _out_of_range(self, ctx: RunContext, data: pa.Table) -> list[str]:
        """The numeric and integer columns of the table that some value of `data` cannot
        fit: 10^(precision-scale) and more, or beyond the integer type's range."""
        rows = self._query_rows(
            ctx,
            "SELECT column_name, data_type, numeric_precision, numeric_scale "
            "FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
            list(self.config.schema_and_name()),
        )
        limits = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}
        found = []
        for name, data_type, precision, scale in rows:
            kind = data[name].type if name in data.column_names else None
            numeric = kind is not None and (
                pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
            )
            if not numeric:
                continue
            if data_type == "numeric" and precision is not None:
                limit = 10 ** (int(precision) - int(scale or 0))
            elif data_type in limits:
                limit = limits[data_type]
            else:
                continue
            largest = pc.max(pc.abs(data[name])).as_py()
            if largest is not None and largest >= limit:
                found.append(name)
        return found

    def _write(self, ctx: RunContext, request: WriteRequest) -> WriteResult:
        data = request.data
        self._check_keys(data)
        positions = _positions_json(request.positions)
        redact = bool(ctx.pipeline.pii)
        with self._transaction(ctx, "write to", redact=redact) as cur:
            self._lock(cur, ctx.pipeline.pipeline)
            if self._already_written(cur, ctx.pipeline.pipeline, request):
                return WriteResult(uri=self.uri, rows_written=0, skipped=True)
            if not self._exists(cur):
                self._create(cur, data.schema)
            written = self._merge_rows(cur, data) if data.num_rows else 0
            commit_id = self._record(cur, ctx, request, positions, written)
        return WriteResult(uri=self.uri, rows_written=written, version=commit_id)

    def is_committed(self, ctx: RunContext, idempotency_key: str) -> bool:
        """True when an append of `idempotency_key` is already in the table."""
        if self.config.mode != "append":
            return False
        rows = self._ledger(
            ctx,
            f"SELECT 1 FROM {self.commits_sql} WHERE target = $1 AND pipeline = $2 "
            "AND app_id = $3 LIMIT 1",
            [self.target, ctx.pipeline.pipeline, idempotency_key],
        )
        return bool(rows)

    def transaction_version(self, ctx: RunContext, key: str) -> int | None:
        """The greatest version committed for the transaction `key` (a stream partition)."""
        rows = self._ledger(
            ctx,
            f"SELECT max(version) FROM {self.commits_sql} WHERE target = $1 AND pipeline = $2 "
            "AND app_id = $3",
            [self.target, ctx.pipeline.pipeline, key],
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def committed_positions(self, ctx: RunContext) -> dict[str, Any]:
        """Positions of this pipeline's commits to this table, merged oldest to newest."""
        rows = self._ledger(
            ctx,
            f"SELECT positions::text FROM {self.commits_sql} "
            "WHERE target = $1 AND pipeline = $2 ORDER BY id",
            [self.target, ctx.pipeline.pipeline],
        )
        positions: dict[str, Any] = {}
        for (raw,) in rows:
            positions = merge_positions(positions, json.loads(raw))
        return positions

    # --- the transaction -------------------------------------------------------------------

    @contextmanager
    def _transaction(self, ctx: RunContext, action: str, *, redact: bool = False) -> Iterator[Any]:
        """A cursor in one transaction, committed on success and rolled back on any error."""
        with pgc.connect(self.config, role=f"sink {self.target}") as conn:
            cur = conn.cursor()
            try:
                yield cur
                conn.commit()
            except SluicewayError:
                conn.rollback()
                raise
            except adbc_driver_manager.Error as exc:
                conn.rollback()
                raise self._error(action, exc, redact) from None

    def _error(self, action: str, exc: BaseException, redact: bool) -> SinkError:
        message = pgc.driver_message(exc, self.config)
        if redact:
            message = redact_row_values(message)
        state = pgc.sqlstate(exc)
        return SinkError(
            f"postgres sink {self.target} ({self.config.where()}): could not {action} the "
            f"table, nothing was written (the transaction rolled back): {message}. "
            f"{_HINTS.get(state or '', _DEFAULT_HINT)}",
            context={"sink": "postgres", "table": self.target, "sqlstate": state},
        )

    def _ledger(self, ctx: RunContext, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Rows of a query on the commits table; none when it does not exist yet."""
        with self._transaction(ctx, "read the commits of") as cur:
            cur.execute("SELECT to_regclass($1) IS NOT NULL", [self.commits_sql])
            (exists,) = cur.fetchone()
            if not exists:
                return []
            cur.execute(sql, params)
            return list(cur.fetchall())

    def _query_rows(self, ctx: RunContext, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Rows of a query, in a transaction of its own."""
        with self._transaction(ctx, "read the columns of") as cur:
            cur.execute(sql, params)
            return [tuple(row) for row in cur.fetchall()]

    def _lock(self, cur: Any, pipeline: str) -> None:
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", [f"sluice:{self.target}:{pipeline}"]
        )
        cur.fetchall()
        if self.config.create_table:
            schema_name, _ = self.config.schema_and_name()
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {pgc.quote_pg_ident(schema_name)}")
        cur.execute(_COMMITS_DDL.format(table=self.commits_sql))

    def _already_written(self, cur: Any, pipeline: str, request: WriteRequest) -> bool:
        if request.transactions:
            for key, version in request.transactions:
                cur.execute(
                    f"SELECT 1 FROM {self.commits_sql} WHERE target = $1 AND pipeline = $2 "
                    "AND app_id = $3 AND version >= $4 LIMIT 1",
                    [self.target, pipeline, key, version],
                )
                if cur.fetchall():
                    return True
            return False
        if self.config.mode != "append":
            return False
        cur.execute(
            f"SELECT 1 FROM {self.commits_sql} WHERE target = $1 AND pipeline = $2 "
            "AND app_id = $3 LIMIT 1",
            [self.target, pipeline, request.idempotency_key],
        )
        return bool(cur.fetchall())

    def _exists(self, cur: Any) -> bool:
        cur.execute("SELECT to_regclass($1) IS NOT NULL", [self.target_sql])
        (exists,) = cur.fetchone()
        return bool(exists)

    def _create(self, cur: Any, schema: pa.Schema) -> None:
        if not self.config.create_table:
            raise SinkError(
                f"postgres sink {self.target}: the table does not exist and create_table is "
                "false; create it, or set create_table: true.",
                context={"sink": "postgres", "table": self.target},
            )
        columns = [f"{pgc.quote_pg_ident(f.name)} {pg_type_of(f.type)}" for f in schema]
        if self.config.keys:
            keys = ", ".join(pgc.quote_pg_ident(k) for k in self.config.keys)
            columns.append(f"PRIMARY KEY ({keys})")
        cur.execute(f"CREATE TABLE {self.target_sql} ({', '.join(columns)})")

    def _merge_rows(self, cur: Any, data: pa.Table) -> int:
        """COPY `data` into a staging table, then insert (or upsert) it into the target."""
        stage = f"sw_stage_{uuid.uuid4().hex[:12]}"
        cur.adbc_ingest(stage, _portable(data), mode="create", temporary=True)
        types = self._target_types(cur)
        missing = [c for c in data.column_names if c not in types]
        if missing:
            raise SinkError(
                f"postgres sink {self.target}: column(s) {missing} of the data are not in the "
                f"table (columns: {sorted(types)}); add them to the table (ALTER TABLE ... ADD "
                "COLUMN) or drop them in a step.",
                context={"sink": "postgres", "table": self.target},
            )
        names = [pgc.quote_pg_ident(c) for c in data.column_names]
        values = [
            f"CAST(s.{n} AS {types[c]})" for n, c in zip(names, data.column_names, strict=True)
        ]
        sql = (
            f"INSERT INTO {self.target_sql} ({', '.join(names)}) "
            f"SELECT {', '.join(values)} FROM {pgc.quote_pg_ident(stage)} AS s"
        )
        if self.config.mode == "upsert":
            sql += self._on_conflict(data.column_names)
        cur.execute(sql)
        written = cur.rowcount
        cur.execute(f"DROP TABLE {pgc.quote_pg_ident(stage)}")
        return int(written) if written is not None and written >= 0 else data.num_rows

    def _on_conflict(self, columns: list[str]) -> str:
        keys = ", ".join(pgc.quote_pg_ident(k) for k in self.config.keys)
        updates = [
            f"{pgc.quote_pg_ident(c)} = EXCLUDED.{pgc.quote_pg_ident(c)}"
            for c in columns
            if c not in self.config.keys
        ]
        if not updates:
            return f" ON CONFLICT ({keys}) DO NOTHING"
        return f" ON CONFLICT ({keys}) DO UPDATE SET {', '.join(updates)}"

    def _target_types(self, cur: Any) -> dict[str, str]:
        cur.execute(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
            [self.target_sql],
        )
        return {str(name): str(kind) for name, kind in cur.fetchall()}

    def _record(
        self,
        cur: Any,
        ctx: RunContext,
        request: WriteRequest,
        positions: str,
        written: int,
    ) -> int:
        transactions = request.transactions or ((request.idempotency_key, 1),)
        commit_id = 0
        for key, version in transactions:
            cur.execute(
                f"INSERT INTO {self.commits_sql} (target, pipeline, app_id, version, positions, "
                "metadata, rows_written) VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7) "
                "RETURNING id",
                [
                    self.target,
                    ctx.pipeline.pipeline,
                    key,
                    version,
                    positions,
                    json.dumps(request.metadata, sort_keys=True),
                    written,
                ],
            )
            (commit_id,) = cur.fetchone()
        return int(commit_id)

    def _check_keys(self, data: pa.Table) -> None:
        keys = self.config.keys
        if self.config.mode != "upsert":
            return
        problem = _key_problem(data, keys)
        if problem:
            raise SinkError(
                f"postgres sink {self.target}: {problem}",
                context={"sink": "postgres", "table": self.target},
            )


def _key_problem(data: pa.Table, keys: list[str]) -> str | None:
    missing = [k for k in keys if k not in data.column_names]
    if missing:
        return (
            f"key column(s) {missing} are not in the data (columns: {data.column_names}); "
            "fix keys or add the column in a step."
        )
    if data.num_rows == 0:
        return None
    nulls = sum(data[k].null_count for k in keys)
    if nulls:
        return (
            f"{nulls} NULL value(s) in the keys {keys}; a NULL key cannot be upserted. Reject "
            "them with a not_null contract or check on the key columns."
        )
    counts = data.select(keys).group_by(keys).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts["count_all"], 1))
    if repeated.num_rows:
        return (
            f"{repeated.num_rows} key(s) repeat on {keys}; an upsert needs one row per key. "
            "Add a dedup step on these keys."
        )
    return None


def _positions_json(positions: dict[str, Any]) -> str:
    try:
        return json.dumps(positions, sort_keys=True)
    except TypeError as exc:
        raise SinkError(
            f"Source positions must be JSON values to be committed: {exc}. "
            "Store cursors as strings or numbers in SourceRead.position.",
            context={"sink": "postgres"},
        ) from exc


_SCALAR_TYPES: dict[pa.DataType, str] = {
    pa.bool_(): "boolean",
    pa.int8(): "smallint",
    pa.int16(): "smallint",
    pa.int32(): "integer",
    pa.int64(): "bigint",
    pa.uint8(): "smallint",
    pa.uint16(): "integer",
    pa.uint32(): "bigint",
    pa.uint64(): "numeric(20, 0)",
    pa.float16(): "real",
    pa.float32(): "real",
    pa.float64(): "double precision",
    pa.string(): "text",
    pa.large_string(): "text",
    pa.string_view(): "text",
    pa.binary(): "bytea",
    pa.large_binary(): "bytea",
    pa.date32(): "date",
    pa.date64(): "date",
    pa.month_day_nano_interval(): "interval",
}

_TYPE_RULES: tuple[tuple[Callable[[pa.DataType], bool], Callable[[Any], str]], ...] = (
    (pa.types.is_timestamp, lambda t: "timestamptz" if t.tz else "timestamp"),
    (pa.types.is_decimal, lambda t: f"numeric({t.precision}, {t.scale})"),
    (pa.types.is_time, lambda t: "time"),
    (pa.types.is_duration, lambda t: "interval"),
    (pa.types.is_fixed_size_binary, lambda t: "bytea"),
    (
        lambda t: pa.types.is_list(t) or pa.types.is_large_list(t),
        lambda t: f"{pg_type_of(t.value_type)}[]",
    ),
    (pa.types.is_dictionary, lambda t: pg_type_of(t.value_type)),
    (lambda t: pa.types.is_struct(t) or pa.types.is_map(t), lambda t: "jsonb"),
)


def pg_type_of(arrow_type: pa.DataType) -> str:
    """The PostgreSQL column type for an Arrow type (JSON extension → jsonb).

    Raises:
        SinkError: the type has no PostgreSQL counterpart.
    """
    if isinstance(arrow_type, pa.ExtensionType):
        if arrow_type.extension_name == "arrow.json":
            return "jsonb"
        if arrow_type.extension_name == "arrow.uuid":
            return "uuid"
        return pg_type_of(arrow_type.storage_type)
    if arrow_type in _SCALAR_TYPES:
        return _SCALAR_TYPES[arrow_type]
    for matches, render in _TYPE_RULES:
        if matches(arrow_type):
            return render(arrow_type)
    raise SinkError(
        f"postgres sink: no PostgreSQL type for Arrow type {arrow_type}; cast the column in "
        "a step (e.g. to VARCHAR)."
    )


def _portable(data: pa.Table) -> pa.Table:
    """`data` with struct and map columns as JSON text (COPY has no composite type for them)."""
    columns = []
    for column, field in zip(data.columns, data.schema, strict=True):
        if pa.types.is_struct(field.type) or pa.types.is_map(field.type):
            texts = [None if v is None else json.dumps(v, default=str) for v in column.to_pylist()]
            columns.append(pa.array(texts, pa.string()))
        else:
            columns.append(column)
    return pa.table(columns, names=data.column_names)


_HINTS = {
    "42P10": "Upsert needs a primary key or unique index on exactly the keys: "
    "CREATE UNIQUE INDEX ON <table> (<keys>).",
    "23505": "A unique constraint other than the keys was violated; check the table's indexes.",
    "23502": "A NOT NULL column received NULL; fix the data or the column.",
    "23514": "A CHECK constraint failed; fix the rows or reject them with a contract rule.",
    "42804": "A column's type does not match the table's; cast it in a step.",
    "22P02": "A value does not parse as the table's column type; cast it in a step.",
}
_DEFAULT_HINT = "Check the table's columns, types and constraints against the data."


registry.register("sink", "postgres", PostgresSinkConfig, PostgresSink)
