"""The `postgres` source against a real PostgreSQL (start it with
`bash scripts/services/postgres.sh`): types, chunked streaming, incremental reads with ties
and lag, credentials, and a full incremental pipeline into Delta."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from deltalake import DeltaTable
from pydantic import ValidationError

from sluiceway.checks import contract as contract_mod
from sluiceway.core.context import RunContext
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.errors import ConfigError, SourceError, TransientError
from sluiceway.sources.postgres import PostgresSource, PostgresSourceConfig

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
START = "bash scripts/services/postgres.sh"


def source(**config: Any) -> PostgresSource:
    return PostgresSource(PostgresSourceConfig.model_validate({"type": "postgres", **PG, **config}))


def rows_of(ctx: RunContext, table: str, order: str = "__sw_row") -> list[dict[str, Any]]:
    data = ctx.engine.fetch_arrow(f'SELECT * FROM "{table}" ORDER BY {order}')
    return data.to_pylist()


# --- types ------------------------------------------------------------------------------------

TYPES_DDL = """CREATE TABLE {t} (
    id int PRIMARY KEY, price numeric(12, 3), big numeric(38, 10), free numeric,
    at_tz timestamptz, at_local timestamp, day date, doc json, docb jsonb,
    ints int[], words text[], flag boolean, raw bytea, ratio float8, small smallint,
    total bigint, name text
)"""
TYPES_ROW = """INSERT INTO {t} VALUES
    (1, 123456789.123, 1234567890123456789012345678.0123456789, 0.1000000000000000000000000001,
     '2024-01-02 03:04:05.123456+02', '2024-01-02 03:04:05.5', '2024-02-29',
     '{{"a": 1, "b": [true, null]}}', '{{"z": "é", "a": 2}}', '{{1,NULL,3}}', '{{"x y","z"}}',
     true, '\\x00ff10', 2.5, -7, 9007199254740993, 'Zoë'),
    (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL)"""


def test_every_postgres_type_arrives_with_a_faithful_duckdb_type(pg, schema, ctx) -> None:
    pg.execute(TYPES_DDL.format(t=f"{schema}.kinds"))
    pg.execute(TYPES_ROW.format(t=f"{schema}.kinds"))

    read = source(table=f"{schema}.kinds").read(ctx, "kinds", position=None)

    types = dict(ctx.engine.columns(read.table))
    assert types == {
        "id": "INTEGER",
        "price": "DECIMAL(12,3)",
        "big": "DECIMAL(38,10)",
        "free": "VARCHAR",
        "at_tz": "TIMESTAMP WITH TIME ZONE",
        "at_local": "TIMESTAMP",
        "day": "DATE",
        "doc": "JSON",
        "docb": "JSON",
        "ints": "INTEGER[]",
        "words": "VARCHAR[]",
        "flag": "BOOLEAN",
        "raw": "BLOB",
        "ratio": "DOUBLE",
        "small": "SMALLINT",
        "total": "BIGINT",
        "name": "VARCHAR",
        "__sw_file": "VARCHAR",
        "__sw_row": "BIGINT",
    }
    assert read.typed and read.rows_in == 2
    first, second = rows_of(ctx, read.table, order="id")
    assert first["price"] == Decimal("123456789.123")
    assert first["big"] == Decimal("1234567890123456789012345678.0123456789")
    assert first["free"] == "0.1000000000000000000000000001"
    assert first["at_tz"] == datetime(2024, 1, 2, 1, 4, 5, 123456, tzinfo=UTC)
    assert first["at_local"] == datetime(2024, 1, 2, 3, 4, 5, 500000)
    assert first["day"] == date(2024, 2, 29)
    assert json.loads(first["doc"]) == {"a": 1, "b": [True, None]}
    assert json.loads(first["docb"]) == {"z": "é", "a": 2}
    assert first["ints"] == [1, None, 3]
    assert first["words"] == ["x y", "z"]
    assert first["flag"] is True
    assert first["raw"] == b"\x00\xff\x10"
    assert (first["ratio"], first["small"], first["total"]) == (2.5, -7, 9007199254740993)
    assert first["name"] == "Zoë"
    assert first["__sw_file"] == f"postgres:{schema}.kinds"
    assert all(value is None for key, value in second.items() if not key.startswith(("id", "__")))


def test_timestamptz_values_are_utc_whatever_the_session_time_zone(
    pg, schema, ctx, monkeypatch
) -> None:
    pg.execute(f"CREATE TABLE {schema}.tz (at timestamptz)")
    pg.execute(f"INSERT INTO {schema}.tz VALUES ('2024-06-01 23:30:00-07')")
    monkeypatch.setenv("SW_TEST_PG_DSN", f"{PG_DSN} options='-c TimeZone=Asia/Tokyo'")

    read = PostgresSource(
        PostgresSourceConfig(type="postgres", dsn_env="SW_TEST_PG_DSN", table=f"{schema}.tz")
    ).read(ctx, "tz", position=None)

    (row,) = rows_of(ctx, read.table)
    assert row["at"] == datetime(2024, 6, 2, 6, 30, tzinfo=UTC)


# --- streaming --------------------------------------------------------------------------------


def test_rows_stream_into_duckdb_in_chunks_with_a_progress_event_per_chunk(pg, schema, ctx) -> None:
    pg.execute(
        f"CREATE TABLE {schema}.many AS SELECT g AS id, md5(g::text) AS word "
        "FROM generate_series(1, 50000) g"
    )

    read = source(table=f"{schema}.many", chunk_bytes=65536).read(ctx, "many", position=None)

    progress = [e.fields["done"] for e in ctx.events.history if e.name == "progress"]
    assert len(progress) > 5
    assert progress == sorted(progress) and progress[-1] == 50000
    assert read.rows_in == 50000
    numbers = ctx.engine.fetch_one(
        f'SELECT min(__sw_row), max(__sw_row), count(DISTINCT __sw_row), sum(id) FROM "{read.table}"'
    )
    assert numbers == (1, 50000, 50000, 50000 * 50001 // 2)


def test_a_query_source_reads_what_the_query_returns(pg, schema, ctx) -> None:
    pg.execute(f"CREATE TABLE {schema}.q AS SELECT g AS id FROM generate_series(1, 10) g")

    read = source(query=f"SELECT id, id * 2 AS twice FROM {schema}.q WHERE id > 7;").read(
        ctx, "q", position=None
    )

    assert [(r["id"], r["twice"]) for r in rows_of(ctx, read.table, "id")] == [
        (8, 16),
        (9, 18),
        (10, 20),
    ]
    assert rows_of(ctx, read.table)[0]["__sw_file"] == "postgres:query"


# --- incremental ------------------------------------------------------------------------------


def orders_table(pg: psycopg.Connection[Any], schema: str) -> str:
    table = f"{schema}.orders"
    pg.execute(
        f"CREATE TABLE {table} (id int PRIMARY KEY, qty int, updated_at timestamptz NOT NULL)"
    )
    pg.execute(
        f"INSERT INTO {table} VALUES (1, 10, '2024-01-01 10:00+00'), "
        "(2, 20, '2024-01-01 11:00+00'), (3, 30, '2024-01-01 12:00+00')"
    )
    return table


def test_incremental_reads_ties_new_and_updated_rows_from_the_high_water_mark(
    pg, schema, ctx
) -> None:
    table = orders_table(pg, schema)
    reader = source(table=table, mode="incremental", cursor="updated_at", primary_key=["id"])
    first = reader.read(ctx, "orders", position=None)
    assert first.rows_in == 3
    assert first.position == {
        "cursor": "updated_at",
        "last_value": "2024-01-01 12:00:00+00",
        "type": "timestamptz",
    }
    pg.execute(f"INSERT INTO {table} VALUES (4, 40, '2024-01-01 12:00+00')")  # ties the mark
    pg.execute(f"INSERT INTO {table} VALUES (5, 50, '2024-01-01 13:00+00')")
    pg.execute(f"UPDATE {table} SET qty = 11, updated_at = '2024-01-01 14:00+00' WHERE id = 1")

    second = reader.read(ctx, "orders", position=first.position)

    got = {r["id"]: r["qty"] for r in rows_of(ctx, second.table)}
    assert got == {1: 11, 3: 30, 4: 40, 5: 50}  # 3 and 4 tie the mark: re-read, never lost
    assert second.position["last_value"] == "2024-01-01 14:00:00+00"
    assert second.fingerprint != first.fingerprint


def test_a_duration_lag_rereads_rows_before_the_mark(pg, schema, ctx) -> None:
    table = orders_table(pg, schema)
    position = {
        "cursor": "updated_at",
        "last_value": "2024-01-01 12:00:00+00",
        "type": "timestamptz",
    }

    read = source(
        table=table, mode="incremental", cursor="updated_at", primary_key=["id"], lag="90m"
    ).read(ctx, "orders", position=position)

    assert sorted(r["id"] for r in rows_of(ctx, read.table)) == [2, 3]  # >= 10:30
    assert read.position["last_value"] == "2024-01-01 12:00:00+00"


def test_a_numeric_lag_rereads_ids_before_the_mark(pg, schema, ctx) -> None:
    table = orders_table(pg, schema)
    position = {"cursor": "id", "last_value": "3", "type": "int4"}

    read = source(table=table, mode="incremental", cursor="id", primary_key=["id"], lag=1).read(
        ctx, "orders", position=position
    )

    assert sorted(r["id"] for r in rows_of(ctx, read.table)) == [2, 3]


def test_the_high_water_mark_never_moves_back_when_only_lagged_rows_are_read(
    pg, schema, ctx
) -> None:
    table = orders_table(pg, schema)
    pg.execute(f"DELETE FROM {table} WHERE id = 3")
    position = {
        "cursor": "updated_at",
        "last_value": "2024-01-01 12:00:00+00",
        "type": "timestamptz",
    }

    read = source(
        table=table, mode="incremental", cursor="updated_at", primary_key=["id"], lag="2h"
    ).read(ctx, "orders", position=position)

    assert [r["id"] for r in rows_of(ctx, read.table)] == [1, 2]
    assert read.position["last_value"] == "2024-01-01 12:00:00+00"


def test_repeated_keys_of_one_read_keep_the_row_with_the_highest_cursor(pg, schema, ctx) -> None:
    table = orders_table(pg, schema)
    query = (
        f"SELECT id, qty, updated_at FROM {table} UNION ALL "
        f"SELECT id, qty + 100, updated_at + interval '1 minute' FROM {table} WHERE id = 2"
    )

    read = source(query=query, mode="incremental", cursor="updated_at", primary_key=["id"]).read(
        ctx, "orders", position=None
    )

    assert read.rows_in == 3
    assert {r["id"]: r["qty"] for r in rows_of(ctx, read.table)} == {1: 10, 2: 120, 3: 30}


def test_a_duration_lag_on_a_numeric_cursor_is_a_config_error(pg, schema, ctx) -> None:
    table = orders_table(pg, schema)
    position = {"cursor": "id", "last_value": "3", "type": "int4"}

    with pytest.raises(ConfigError, match="lag '5m' is a duration but cursor 'id' is int4"):
        source(table=table, mode="incremental", cursor="id", primary_key=["id"], lag="5m").read(
            ctx, "orders", position=position
        )


def test_full_mode_fingerprints_the_content_read(pg, schema, ctx) -> None:
    table = orders_table(pg, schema)
    reader = source(table=table)
    first = reader.read(ctx, "orders", position=None)
    same = reader.read(ctx, "orders", position=None)
    pg.execute(f"UPDATE {table} SET qty = 31 WHERE id = 3")
    changed = reader.read(ctx, "orders", position=None)

    assert first.fingerprint == same.fingerprint != changed.fingerprint
    assert first.position == {}


def test_incremental_needs_a_cursor_and_a_primary_key() -> None:
    with pytest.raises(ValidationError, match="needs cursor"):
        PostgresSourceConfig.model_validate(
            {"type": "postgres", "table": "t", "mode": "incremental", "cursor": "updated_at"}
        )
    with pytest.raises(ValidationError, match="exactly one of table"):
        PostgresSourceConfig.model_validate({"type": "postgres", "table": "t", "query": "SELECT 1"})
    with pytest.raises(ValidationError, match="dsn_env"):
        PostgresSourceConfig.model_validate(
            {"type": "postgres", "table": "t", "dsn_env": "PG_DSN", "host": "db"}
        )


# --- connections and errors -------------------------------------------------------------------


def test_a_dsn_from_the_environment_connects(pg, schema, ctx, monkeypatch) -> None:
    table = orders_table(pg, schema)
    monkeypatch.setenv("SW_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

    read = PostgresSource(
        PostgresSourceConfig(type="postgres", dsn_env="SW_TEST_PG_DSN", table=table)
    ).read(ctx, "orders", position=None)

    assert read.rows_in == 3


def test_an_unset_password_variable_is_a_config_error_naming_it(ctx) -> None:
    with pytest.raises(ConfigError, match=r"password_env names \$SW_TEST_UNSET_PW"):
        source(table="t", password_env="SW_TEST_UNSET_PW").read(ctx, "t", position=None)


def test_an_unreachable_server_is_transient_and_says_how_to_start_it(ctx, monkeypatch) -> None:
    monkeypatch.setenv("SW_TEST_PG_PW", "hunter2-secret")
    config = {**PG, "port": 1, "password_env": "SW_TEST_PG_PW"}

    with pytest.raises(TransientError) as raised:
        PostgresSource(PostgresSourceConfig(type="postgres", table="t", **config)).read(
            ctx, "t", position=None
        )

    assert "scripts/services/postgres.sh" in str(raised.value)
    assert "hunter2-secret" not in str(raised.value)


def test_a_refused_login_never_shows_the_password_of_the_dsn(ctx, monkeypatch) -> None:
    secret = "s3cret-pass-word"
    monkeypatch.setenv("SW_TEST_PG_DSN", f"postgresql://sw_nobody:{secret}@127.0.0.1:5432/postgres")

    with pytest.raises(ConfigError) as raised:
        PostgresSource(
            PostgresSourceConfig(type="postgres", dsn_env="SW_TEST_PG_DSN", table="t")
        ).read(ctx, "t", position=None)

    assert "sw_nobody" in str(raised.value) and secret not in str(raised.value)
    assert "SW_TEST_PG_DSN" in str(raised.value)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgres://postgres:pg@Secret:Pw@127.0.0.1:5432/postgres",  # '@' unencoded
        "postgresql://postgres:pg/Se:cret@127.0.0.1/postgres",  # '/' cuts the authority
        "postgresql://postgres:123/Secret@127.0.0.1/postgres",  # and '123' reads as a port
    ],
)
def test_a_url_dsn_with_an_unencoded_password_is_refused_without_quoting_it(
    ctx, monkeypatch, dsn: str
) -> None:
    monkeypatch.setenv("SW_TEST_PG_DSN", dsn)

    with pytest.raises(ConfigError, match="URL-encode") as raised:
        PostgresSource(
            PostgresSourceConfig(type="postgres", dsn_env="SW_TEST_PG_DSN", table="t")
        ).read(ctx, "t", position=None)

    message = str(raised.value)
    assert "SW_TEST_PG_DSN" in message
    assert not any(piece in message for piece in ("Secret", "Pw", "Se:", "cret"))


def test_a_missing_table_is_a_source_error_naming_it(schema, ctx) -> None:
    with pytest.raises(SourceError, match=rf"{schema}\.absent.*does not exist"):
        source(table=f"{schema}.absent").read(ctx, "absent", position=None)


def test_a_missing_cursor_column_is_a_source_error(pg, schema, ctx) -> None:
    table = orders_table(pg, schema)

    with pytest.raises(SourceError, match=r"cursor column\(s\) \['changed_at'\] are not among"):
        source(table=table, mode="incremental", cursor="changed_at", primary_key=["id"]).read(
            ctx, "orders", position=None
        )


# --- a pipeline: postgres → Delta, incremental ------------------------------------------------


def pipeline_spec(table: str) -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "pg_orders",
        "sources": {
            "orders": {
                "type": "postgres",
                **PG,
                "table": table,
                "mode": "incremental",
                "cursor": "updated_at",
                "primary_key": ["id"],
                "contract": {"columns": {"qty": {"type": "integer", "min": 0}}},
            }
        },
        "sinks": [{"type": "delta", "path": "lake/orders", "mode": "merge", "merge_keys": ["id"]}],
        "dead_letter": {"path": "lake/dead_letter"},
    }


def run(folder: Path, table: str) -> Any:
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline_spec(table), sort_keys=False))
    options = RunOptions(
        logical_date=date(2025, 1, 15), base_dir=folder, state_dir=folder / ".sluice"
    )
    return run_pipeline(load_spec(path), options)


def source_rows(pg: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    return pg.execute(f"SELECT id, qty, price, updated_at FROM {table} ORDER BY id").fetchall()


def lake_rows(folder: Path) -> list[tuple[Any, ...]]:
    data = DeltaTable(str(folder / "lake" / "orders")).to_pyarrow_table().to_pylist()
    return sorted((r["id"], r["qty"], r["price"], r["updated_at"]) for r in data)


def test_an_incremental_pipeline_into_delta_equals_the_source_after_two_runs(
    pg, schema, tmp_path
) -> None:
    table = f"{schema}.orders"
    pg.execute(
        f"CREATE TABLE {table} (id int PRIMARY KEY, qty int, price numeric(10, 2), "
        "updated_at timestamptz NOT NULL)"
    )
    pg.execute(
        f"INSERT INTO {table} SELECT g, g, g * 1.25, '2024-01-01 00:00+00'::timestamptz "
        "+ g * interval '1 minute' FROM generate_series(1, 100) g"
    )

    first = run(tmp_path, table)
    assert first.ok, first.error
    assert first.accounting.rows_in == 100 and lake_rows(tmp_path) == source_rows(pg, table)

    mark = "'2024-01-01 01:40+00'"  # the last cursor read
    pg.execute(f"INSERT INTO {table} VALUES (101, 101, 1.01, {mark})")  # a tie, committed late
    pg.execute(f"INSERT INTO {table} VALUES (102, 102, 1.02, '2024-01-02 00:00+00')")
    pg.execute(
        f"UPDATE {table} SET qty = 7, price = 70.07, updated_at = '2024-01-02 00:01+00' WHERE id = 5"
    )

    second = run(tmp_path, table)

    assert second.ok, second.error
    assert second.accounting.rows_in == 4  # 100 (tie, re-read), 101, 102, 5
    assert second.accounting.is_balanced
    assert lake_rows(tmp_path) == source_rows(pg, table)
    assert len(source_rows(pg, table)) == 102


def test_a_full_read_applies_the_contract_as_it_loads_and_dead_letters_the_breaking_rows(
    pg, schema, tmp_path, monkeypatch
) -> None:
    table = f"{schema}.payments"
    pg.execute(f"CREATE TABLE {table} (id int, Amount numeric(8, 2), note text)")
    pg.execute(
        f"INSERT INTO {table} VALUES (1, 10.50, 'ok'), (2, -3.00, 'refund?'), (NULL, 1.00, 'x'), "
        "(4, NULL, 'no amount'), (5, 999999.99, 'big')"
    )
    spec = {
        "version": 1,
        "pipeline": "pg_payments",
        "sources": {
            "payments": {
                "type": "postgres",
                **PG,
                "table": table,
                "contract": {
                    "columns": {
                        "id": {"type": "bigint", "nullable": False},
                        "amount": {"type": "decimal", "precision": 8, "scale": 2, "min": 0},
                    },
                    "evolution": "evolve",
                },
            }
        },
        "sinks": [{"type": "delta", "path": "lake/payments"}],
        "dead_letter": {"path": "lake/dead_letter"},
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    options = RunOptions(
        logical_date=date(2025, 1, 15), base_dir=tmp_path, state_dir=tmp_path / ".sluice"
    )

    def second_pass(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the contract ran as a pass of its own over the loaded rows")

    monkeypatch.setattr(contract_mod, "apply_contract", second_pass)

    result = run_pipeline(load_spec(tmp_path / "pipeline.yaml"), options)

    assert result.ok, result.error
    assert result.accounting.to_dict()["rows_in"] == 5
    assert (result.accounting.rows_written, result.accounting.rows_rejected) == (3, 2)
    landed = DeltaTable(str(tmp_path / "lake" / "payments")).to_pyarrow_table().to_pylist()
    assert sorted((r["id"], r["amount"], r["note"]) for r in landed) == [
        (1, Decimal("10.50"), "ok"),
        (4, None, "no amount"),
        (5, Decimal("999999.99"), "big"),
    ]
    dead = DeltaTable(str(tmp_path / "lake" / "dead_letter")).to_pyarrow_table().to_pylist()
    reasons = {
        json.loads(r["payload"])["note"]: (
            r["row"],
            [(e["rule"], e["column"]) for e in r["errors"]],
        )
        for r in dead
    }
    assert reasons == {"refund?": (2, [("min", "amount")]), "x": (3, [("not_null", "id")])}


def test_an_incremental_read_keeps_its_own_types_and_leaves_the_contract_to_the_runner(
    pg, schema, ctx
) -> None:
    pg.execute(f"CREATE TABLE {schema}.ev (id int PRIMARY KEY, at timestamptz NOT NULL)")
    pg.execute(f"INSERT INTO {schema}.ev VALUES (1, '2024-01-01 00:00+00')")
    shape_calls: list[str] = []

    def shape(relation: str, columns: list[str]) -> str:
        shape_calls.append(relation)
        return f"SELECT * FROM {relation}"

    config = {"mode": "incremental", "cursor": "at", "primary_key": ["id"]}
    incremental = source(table=f"{schema}.ev", **config).read(ctx, "ev", position=None, shape=shape)
    full = source(table=f"{schema}.ev").read(ctx, "ev_full", position=None, shape=shape)

    assert not incremental.is_shaped and full.is_shaped
    assert len(shape_calls) == 1
    assert incremental.position["last_value"].startswith("2024-01-01 00:00:00")


def test_a_numeric_cursor_without_precision_marks_the_greatest_number_not_text(
    pg, schema, ctx
) -> None:
    pg.execute(f"CREATE TABLE {schema}.ledger (id int PRIMARY KEY, version numeric)")
    pg.execute(f"INSERT INTO {schema}.ledger SELECT g, g FROM generate_series(1, 12) g")
    pg.execute(f"INSERT INTO {schema}.ledger VALUES (13, 'NaN')")  # never a mark
    config = {"mode": "incremental", "cursor": "version", "primary_key": ["id"]}

    first = source(table=f"{schema}.ledger", **config).read(ctx, "l1", position=None)
    again = source(table=f"{schema}.ledger", **config).read(ctx, "l2", position=first.position)

    assert first.position["last_value"] == "12"
    assert again.rows_in == 2  # the tie at 12, and NaN (>= any number in PostgreSQL)
    pg.execute(
        f"INSERT INTO {schema}.ledger VALUES (14, 10000000000000000000), (15, 10000000000000000001)"
    )
    big = source(table=f"{schema}.ledger", **config).read(ctx, "l3", position=again.position)
    assert big.position["last_value"] == "10000000000000000001"


def test_money_arrives_as_a_decimal_amount_not_cents(pg, schema, ctx) -> None:
    pg.execute(f"CREATE TABLE {schema}.till (id int, m money)")
    pg.execute(
        f"INSERT INTO {schema}.till VALUES (1, 12.34), (2, NULL), (3, '-92233720368547758.08')"
    )

    read = source(table=f"{schema}.till").read(ctx, "till", position=None)

    assert dict(ctx.engine.columns(read.table))["m"] == "DECIMAL(19,2)"
    assert [r["m"] for r in rows_of(ctx, read.table)] == [
        Decimal("12.34"),
        None,
        Decimal("-92233720368547758.08"),
    ]


@pytest.mark.parametrize(("scale", "expected"), [(0, Decimal("1234")), (3, Decimal("1.234"))])
def test_money_follows_the_servers_fractional_digits(scale: int, expected: Decimal) -> None:
    """lc_monetary decides money's fractional digits (0 for yen, 3 for dinar); this server
    has 2 only, so the expression is checked on its own over what the driver hands over."""
    import duckdb
    import pyarrow as pa

    from sluiceway.sources.postgres import _duck_select

    field = pa.field("m", pa.int64(), metadata={"POSTGRESQL:type": "money"})
    con = duckdb.connect()
    con.register("t", pa.table({"m": pa.array([1234, None], pa.int64())}))

    got = con.sql(f"SELECT {_duck_select(field, scale)} FROM t").fetchall()

    assert got == [(expected,), (None,)]


def test_a_cursor_changed_after_a_commit_is_refused_not_read_again_from_the_start(
    pg, schema, ctx
) -> None:
    pg.execute(f"CREATE TABLE {schema}.ev2 (id int PRIMARY KEY, at timestamptz, n int)")
    pg.execute(f"INSERT INTO {schema}.ev2 VALUES (1, '2024-01-01 00:00+00', 1)")
    first = source(table=f"{schema}.ev2", mode="incremental", cursor="at", primary_key=["id"]).read(
        ctx, "e1", position=None
    )

    with pytest.raises(ConfigError, match="tracks cursor 'at', the spec says 'n'"):
        source(table=f"{schema}.ev2", mode="incremental", cursor="n", primary_key=["id"]).read(
            ctx, "e2", position=first.position
        )
