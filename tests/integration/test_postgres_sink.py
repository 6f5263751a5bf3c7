"""The `postgres` sink against a real PostgreSQL (start it with
`bash scripts/services/postgres.sh`): idempotent upserts, all-or-nothing transactions,
positions in the same transaction, and a pipeline from one table to another."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
import yaml

from sluiceway.core.context import WriteRequest
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.errors import SinkError
from sluiceway.sinks.postgres import PostgresSink, PostgresSinkConfig
from sluiceway.sources import postgres as _postgres_source  # noqa: F401  (registers the source)

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
START = "bash scripts/services/postgres.sh"


def sink(table: str, **config: Any) -> PostgresSink:
    return PostgresSink(
        PostgresSinkConfig.model_validate({"type": "postgres", **PG, "table": table, **config})
    )


def request(data: pa.Table, key: str = "run-a", **positions: Any) -> WriteRequest:
    return WriteRequest(
        data=data,
        idempotency_key=key,
        metadata={"sluice.run_id": key},
        positions=positions or {"orders": {"cursor": "updated_at", "last_value": "1"}},
    )


ORDERS = pa.table(
    {
        "id": pa.array([1, 2, 3], pa.int32()),
        "qty": pa.array([10, 20, None], pa.int64()),
        "price": pa.array([Decimal("1.10"), Decimal("20.00"), None], pa.decimal128(10, 2)),
        "at": pa.array(
            [datetime(2024, 1, 1, tzinfo=UTC), None, datetime(2024, 1, 3, 12, tzinfo=UTC)],
            pa.timestamp("us", tz="UTC"),
        ),
        "tags": pa.array([["a", "b"], [], None], pa.list_(pa.string())),
    }
)


def table_rows(pg: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    return pg.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


def commits(pg: psycopg.Connection[Any], schema: str) -> list[tuple[Any, ...]]:
    return pg.execute(
        f"SELECT app_id, positions, rows_written FROM {schema}._sluice_commits ORDER BY id"
    ).fetchall()


def test_a_missing_table_is_created_with_types_from_arrow_and_the_keys_as_primary_key(
    pg, schema, ctx
) -> None:
    result = sink(f"{schema}.orders", keys=["id"]).write(ctx, request(ORDERS))

    assert result.rows_written == 3 and not result.skipped
    types = pg.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
        [f"{schema}.orders"],
    ).fetchall()
    assert types == [
        ("id", "integer"),
        ("qty", "bigint"),
        ("price", "numeric(10,2)"),
        ("at", "timestamp with time zone"),
        ("tags", "text[]"),
    ]
    primary = pg.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
        [f"{schema}.orders"],
    ).fetchall()
    assert primary == [("id",)]
    assert table_rows(pg, f"{schema}.orders")[0] == (
        1,
        10,
        Decimal("1.10"),
        datetime(2024, 1, 1, tzinfo=UTC),
        ["a", "b"],
    )


def test_upserting_the_same_rows_twice_leaves_the_table_as_after_once(pg, schema, ctx) -> None:
    target = sink(f"{schema}.orders", keys=["id"])
    target.write(ctx, request(ORDERS, "run-a"))
    once = table_rows(pg, f"{schema}.orders")

    again = target.write(ctx, request(ORDERS, "run-a"))

    assert again.rows_written == 3
    assert table_rows(pg, f"{schema}.orders") == once
    assert len(once) == 3


def test_an_upsert_updates_matching_keys_and_inserts_new_ones(pg, schema, ctx) -> None:
    target = sink(f"{schema}.orders", keys=["id"])
    target.write(ctx, request(ORDERS.select(["id", "qty"]), "run-a"))
    changes = pa.table({"id": pa.array([2, 4], pa.int32()), "qty": pa.array([21, 40], pa.int64())})

    target.write(ctx, request(changes, "run-b"))

    assert table_rows(pg, f"{schema}.orders") == [(1, 10), (2, 21), (3, None), (4, 40)]


def test_upsert_casts_to_the_existing_tables_types(pg, schema, ctx) -> None:
    pg.execute(
        f"CREATE TABLE {schema}.docs (id bigint PRIMARY KEY, doc jsonb, amount numeric(8,3))"
    )
    data = pa.table(
        {
            "id": pa.array([1], pa.int32()),
            "doc": ['{"a": [1, 2]}'],
            "amount": pa.array([Decimal("2.5")], pa.decimal128(5, 1)),
        }
    )

    sink(f"{schema}.docs", keys=["id"]).write(ctx, request(data))

    assert table_rows(pg, f"{schema}.docs") == [(1, {"a": [1, 2]}, Decimal("2.500"))]


def test_a_failing_row_rolls_back_the_rows_and_the_positions(pg, schema, ctx) -> None:
    table = f"{schema}.orders"
    pg.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, qty int CHECK (qty >= 0))")
    target = sink(table, keys=["id"])
    target.write(ctx, request(pa.table({"id": [1, 2], "qty": [1, 2]}), "run-a", orders={"n": 1}))
    bad = pa.table({"id": [1, 3, 4], "qty": [100, -5, 4]})  # an update, a bad row, a new row

    with pytest.raises(SinkError, match="check constraint") as raised:
        target.write(ctx, request(bad, "run-b", orders={"n": 2}))

    assert "rolled back" in str(raised.value) and "-5" not in str(raised.value)
    assert table_rows(pg, table) == [(1, 1), (2, 2)]
    assert target.committed_positions(ctx) == {"orders": {"n": 1}}
    assert [c[0] for c in commits(pg, schema)] == ["run-a"]


def test_positions_commit_with_the_rows_and_merge_oldest_first(pg, schema, ctx) -> None:
    target = sink(f"{schema}.orders", keys=["id"])
    assert target.committed_positions(ctx) == {}

    target.write(ctx, request(ORDERS, "run-a", orders={"last_value": "a"}, other={"x": 1}))
    target.write(ctx, request(ORDERS.slice(0, 1), "run-b", orders={"last_value": "b"}))

    assert target.committed_positions(ctx) == {"orders": {"last_value": "b"}, "other": {"x": 1}}
    assert commits(pg, schema) == [
        ("run-a", {"orders": {"last_value": "a"}, "other": {"x": 1}}, 3),
        ("run-b", {"orders": {"last_value": "b"}}, 1),
    ]


def test_positions_of_other_pipelines_are_ignored(pg, schema, make_ctx) -> None:
    target = sink(f"{schema}.orders", keys=["id"])
    target.write(make_ctx("first"), request(ORDERS, orders={"last_value": "a"}))

    assert target.committed_positions(make_ctx("second")) == {}


def test_append_writes_a_key_once(pg, schema, ctx) -> None:
    target = sink(f"{schema}.events", mode="append")
    assert not target.is_committed(ctx, "run-a")

    first = target.write(ctx, request(ORDERS, "run-a"))
    repeat = target.write(ctx, request(ORDERS, "run-a"))
    other = target.write(ctx, request(ORDERS, "run-b"))

    assert (first.rows_written, repeat.skipped, other.rows_written) == (3, True, 3)
    assert target.is_committed(ctx, "run-a")
    assert len(table_rows(pg, f"{schema}.events")) == 6


def test_an_upsert_sink_never_claims_a_key_is_committed(pg, schema, ctx) -> None:
    target = sink(f"{schema}.orders", keys=["id"])
    target.write(ctx, request(ORDERS, "run-a"))

    assert not target.is_committed(ctx, "run-a")


def test_a_stream_batch_already_committed_is_skipped(pg, schema, ctx) -> None:
    target = sink(f"{schema}.orders", keys=["id"])
    batch = WriteRequest(
        data=ORDERS, idempotency_key="b", metadata={}, positions={}, transactions=(("p0", 3),)
    )
    target.write(ctx, batch)

    assert target.write(ctx, batch).skipped
    assert target.transaction_version(ctx, "p0") == 3


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (pa.table({"id": [1, 1], "qty": [1, 2]}), "1 key\\(s\\) repeat on \\['id'\\]"),
        (pa.table({"id": [1, None], "qty": [1, 2]}), "1 NULL value\\(s\\) in the keys"),
        (pa.table({"qty": [1]}), "key column\\(s\\) \\['id'\\] are not in the data"),
    ],
)
def test_keys_that_cannot_be_upserted_are_refused_before_any_write(
    pg, schema, ctx, data, problem
) -> None:
    with pytest.raises(SinkError, match=problem):
        sink(f"{schema}.orders", keys=["id"]).write(ctx, request(data))

    assert pg.execute("SELECT to_regclass(%s)", [f"{schema}.orders"]).fetchone() == (None,)


def test_an_upsert_into_a_table_without_a_unique_index_on_the_keys_says_how_to_fix_it(
    pg, schema, ctx
) -> None:
    pg.execute(f"CREATE TABLE {schema}.loose (id int, qty int)")

    with pytest.raises(SinkError, match="CREATE UNIQUE INDEX"):
        sink(f"{schema}.loose", keys=["id"]).write(ctx, request(pa.table({"id": [1], "qty": [1]})))


def test_a_column_missing_from_the_table_is_named(pg, schema, ctx) -> None:
    pg.execute(f"CREATE TABLE {schema}.narrow (id int PRIMARY KEY)")

    with pytest.raises(
        SinkError, match="column\\(s\\) \\['qty'\\] of the data are not in the table"
    ):
        sink(f"{schema}.narrow", keys=["id"]).write(ctx, request(pa.table({"id": [1], "qty": [1]})))


def test_a_number_too_big_for_its_column_names_the_column(pg, schema, ctx) -> None:
    pg.execute(
        f"CREATE TABLE {schema}.small (id int PRIMARY KEY, qty smallint, price numeric(6,2))"
    )
    data = pa.table({"id": [1, 2], "qty": [1, 2], "price": pa.array([1.5, 12345.25], pa.float64())})

    with pytest.raises(SinkError, match=r"numeric field overflow") as caught:
        sink(f"{schema}.small", keys=["id"]).write(ctx, request(data))

    assert "are in column(s) price (the server does not say which)" in str(caught.value)
    assert table_rows(pg, f"{schema}.small") == []


def test_upsert_needs_keys() -> None:
    with pytest.raises(ValueError, match="mode: upsert needs keys"):
        PostgresSinkConfig.model_validate({"type": "postgres", "table": "t"})


# --- a pipeline: postgres → postgres, incremental ---------------------------------------------


def test_an_incremental_pipeline_between_two_tables_keeps_its_position_in_the_target(
    pg, schema, tmp_path: Path
) -> None:
    source_table, target_table = f"{schema}.orders", f"{schema}.orders_copy"
    pg.execute(f"CREATE TABLE {source_table} (id int PRIMARY KEY, qty int, updated_at bigint)")
    pg.execute(f"INSERT INTO {source_table} SELECT g, g, g FROM generate_series(1, 50) g")
    spec = {
        "version": 1,
        "pipeline": "pg_copy",
        "sources": {
            "orders": {
                "type": "postgres",
                **PG,
                "table": source_table,
                "mode": "incremental",
                "cursor": "updated_at",
                "primary_key": ["id"],
            }
        },
        "sinks": [{"type": "postgres", **PG, "table": target_table, "keys": ["id"]}],
        "dead_letter": {"path": "lake/dead_letter"},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    options = RunOptions(
        logical_date=date(2025, 1, 15), base_dir=tmp_path, state_dir=tmp_path / ".sluice"
    )

    first = run_pipeline(load_spec(path), options)
    pg.execute(f"UPDATE {source_table} SET qty = 0, updated_at = 60 WHERE id = 7")
    pg.execute(f"INSERT INTO {source_table} VALUES (51, 51, 50)")  # ties the mark
    second = run_pipeline(load_spec(path), options)

    assert first.ok and second.ok, (first.error, second.error)
    assert (first.accounting.rows_in, second.accounting.rows_in) == (50, 3)
    assert table_rows(pg, target_table) == table_rows(pg, source_table)
    last = commits(pg, schema)[-1][1]
    assert last["orders"]["last_value"] == "60"
