"""The `mysql` source against a real MariaDB (start it with `bash scripts/services/mariadb.sh`):
types, full and incremental reads, chunking, credentials, errors, and whole pipelines to Delta."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pymysql
import pytest
import yaml
from deltalake import DeltaTable

from sluiceway.core.context import RunContext, SourceRead
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.errors import ConfigError, SourceError, TransientError
from sluiceway.sources.mysql import MySQLSource, MySQLSourceConfig

HOST, PORT = "127.0.0.1", 3306
START = "bash scripts/services/mariadb.sh"


@pytest.fixture(scope="session")
def server() -> None:
    """Fails (never skips) when MariaDB does not answer, saying how to start it."""
    try:
        pymysql.connect(host=HOST, port=PORT, user="root", connect_timeout=5).close()
    except pymysql.MySQLError as exc:
        pytest.fail(f"MariaDB not reachable on {HOST}:{PORT} ({exc}): start it with `{START}`")


@pytest.fixture()
def db(server: None) -> Iterator[str]:
    """A database of its own for the test, dropped afterwards."""
    name = f"sw_mysql_{uuid.uuid4().hex[:10]}"
    sql(f"CREATE DATABASE {name}")
    yield name
    sql(f"DROP DATABASE IF EXISTS {name}")


def sql(*statements: str, database: str | None = None, time_zone: str = "+00:00") -> None:
    with (
        pymysql.connect(
            host=HOST, port=PORT, user="root", database=database, autocommit=True
        ) as link,
        link.cursor() as cur,
    ):
        cur.execute(f"SET time_zone = '{time_zone}'")
        for statement in statements:
            cur.execute(statement)


def config(db: str, **fields: Any) -> MySQLSourceConfig:
    return MySQLSourceConfig.model_validate(
        {"type": "mysql", "host": HOST, "port": PORT, "user": "root", "database": db, **fields}
    )


def read(
    ctx: RunContext, cfg: MySQLSourceConfig, position: dict[str, Any] | None = None
) -> tuple[SourceRead, list[dict[str, Any]]]:
    result = MySQLSource(cfg).read(ctx, "orders", position=position)
    rows = ctx.engine.fetch_arrow(f'SELECT * FROM "{result.table}" ORDER BY __sw_row').to_pylist()
    return result, rows


def orders_table(db: str, *rows: str) -> None:
    sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, status VARCHAR(10), "
        "updated_at DATETIME(6) NOT NULL)",
        *(f"INSERT INTO orders VALUES {row}" for row in rows),
        database=db,
    )


# --- types ----------------------------------------------------------------------------------


TYPES_DDL = """CREATE TABLE every_type (
  id BIGINT UNSIGNED PRIMARY KEY,
  price DECIMAL(20,4), fine DECIMAL(30,12), huge DECIMAL(65,30),
  seen_at DATETIME(6), stamped TIMESTAMP(3) NULL, born DATE,
  doc JSON, raw BLOB, is_active TINYINT(1), level TINYINT, small_u INT UNSIGNED,
  name VARCHAR(20), took TIME
)"""


def test_every_type_lands_with_its_declared_type_and_exact_value(ctx, db) -> None:
    sql(TYPES_DDL, database=db)
    sql(
        "INSERT INTO every_type VALUES (18446744073709551615, 12345678901234.5678, "
        "123456789012345678.123456789012, 1.5, '2024-01-02 03:04:05.123456', "
        "'2024-01-02 03:04:05.123', '2024-02-29', '{\"a\": [1, 2]}', x'00ff10', 1, -5, "
        "4294967295, 'héllo', '-838:59:59')",
        "INSERT INTO every_type (id) VALUES (1)",
        database=db,
        time_zone="+02:00",
    )

    result, rows = read(ctx, config(db, table="every_type", primary_key=["id"]))

    types = dict(ctx.engine.columns(result.table))
    assert types == {
        "id": "DECIMAL(20,0)",
        "price": "DECIMAL(20,4)",
        "fine": "DECIMAL(30,12)",
        "huge": "VARCHAR",
        "seen_at": "TIMESTAMP",
        "stamped": "TIMESTAMP WITH TIME ZONE",
        "born": "DATE",
        "doc": "VARCHAR",
        "raw": "BLOB",
        "is_active": "BOOLEAN",
        "level": "TINYINT",
        "small_u": "BIGINT",
        "name": "VARCHAR",
        "took": "VARCHAR",
        "__sw_file": "VARCHAR",
        "__sw_row": "BIGINT",
    }
    empty, full = rows
    assert all(v is None for k, v in empty.items() if k not in ("id", "__sw_file", "__sw_row"))
    assert full["id"] == Decimal(18446744073709551615)
    assert full["price"] == Decimal("12345678901234.5678")
    assert full["fine"] == Decimal("123456789012345678.123456789012")
    assert full["huge"] == "1.500000000000000000000000000000"
    assert full["seen_at"] == datetime(2024, 1, 2, 3, 4, 5, 123456)
    assert full["stamped"] == datetime(2024, 1, 2, 1, 4, 5, 123000, tzinfo=UTC)  # +02:00 → UTC
    assert full["born"] == date(2024, 2, 29)
    assert full["doc"] == '{"a": [1, 2]}'
    assert full["raw"] == b"\x00\xff\x10"
    assert full["is_active"] is True
    assert full["level"] == -5
    assert full["small_u"] == 4294967295
    assert full["name"] == "héllo"
    assert full["took"] == "-838:59:59"
    assert result.typed is True
    assert result.parse_rejects.num_rows == 0


def test_a_full_read_labels_and_numbers_every_row(ctx, db) -> None:
    orders_table(db, "(2, 'new', '2024-01-01 10:00:00')", "(1, 'paid', '2024-01-01 09:00:00')")

    result, rows = read(ctx, config(db, table=f"{db}.orders", primary_key=["id"]))

    assert [(r["id"], r["status"]) for r in rows] == [(1, "paid"), (2, "new")]
    assert [(r["__sw_file"], r["__sw_row"]) for r in rows] == [
        (f"mysql:{db}.orders", 1),
        (f"mysql:{db}.orders", 2),
    ]
    assert result.rows_in == 2
    assert result.position == {}


def test_a_large_read_arrives_in_bounded_chunks_with_a_progress_event_each(ctx, db) -> None:
    sql(
        "CREATE TABLE numbers (n INT PRIMARY KEY)",
        "INSERT INTO numbers SELECT seq FROM seq_1_to_10",
        database=db,
    )

    result, rows = read(ctx, config(db, table="numbers", primary_key=["n"], chunk_rows=3))

    chunks = [
        e.fields["done"]
        for e in ctx.events.history
        if e.name == "progress" and e.fields.get("stage") == "reading orders"
    ]
    assert chunks == [3, 6, 9, 10]
    assert [r["n"] for r in rows] == list(range(1, 11))
    assert [r["__sw_row"] for r in rows] == list(range(1, 11))
    assert result.rows_in == 10


def test_an_empty_result_gives_an_empty_typed_table(ctx, db) -> None:
    orders_table(db)

    result, rows = read(ctx, config(db, table="orders"))

    assert rows == []
    assert result.rows_in == 0
    assert dict(ctx.engine.columns(result.table))["updated_at"] == "TIMESTAMP"


# --- incremental ----------------------------------------------------------------------------


def incremental(db: str, **extra: Any) -> MySQLSourceConfig:
    return config(
        db, table="orders", mode="incremental", cursor="updated_at", primary_key=["id"], **extra
    )


def test_incremental_reads_resume_at_the_high_water_mark_and_read_ties_again(ctx, db) -> None:
    orders_table(
        db,
        "(1, 'new', '2024-01-01 09:00:00')",
        "(2, 'new', '2024-01-01 10:00:00')",
    )
    first, rows1 = read(ctx, incremental(db))
    assert [r["id"] for r in rows1] == [1, 2]
    assert first.position == {
        "cursor": "updated_at",
        "cursor_type": "timestamp",
        "high_water_mark": "2024-01-01T10:00:00",
    }
    # a row committed late with the same cursor value (a tie), a newer row, an update
    sql(
        "INSERT INTO orders VALUES (3, 'new', '2024-01-01 10:00:00')",
        "INSERT INTO orders VALUES (4, 'new', '2024-01-01 11:00:00')",
        "UPDATE orders SET status = 'paid', updated_at = '2024-01-01 12:00:00' WHERE id = 1",
        database=db,
    )

    second, rows2 = read(ctx, incremental(db), first.position)

    assert [(r["id"], r["status"]) for r in rows2] == [
        (1, "paid"),
        (2, "new"),
        (3, "new"),
        (4, "new"),
    ]
    assert second.position["high_water_mark"] == "2024-01-01T12:00:00"
    assert second.rows_in == 4
    third, rows3 = read(ctx, incremental(db), second.position)
    assert [r["id"] for r in rows3] == [1]  # only the tie at the mark comes back
    assert third.fingerprint != second.fingerprint


def test_lag_reads_again_that_far_behind_the_mark(ctx, db) -> None:
    sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, version BIGINT NOT NULL)",
        "INSERT INTO orders SELECT seq, seq * 10 FROM seq_1_to_5",
        database=db,
    )
    cfg = config(
        db, table="orders", mode="incremental", cursor="version", primary_key=["id"], lag=15
    )
    mark = {"cursor": "version", "cursor_type": "integer", "high_water_mark": "40"}

    result, rows = read(ctx, cfg, mark)

    assert [r["version"] for r in rows] == [30, 40, 50]  # >= 40 - 15
    assert result.position["high_water_mark"] == "50"


def test_a_duration_lag_applies_to_a_date_time_cursor(ctx, db) -> None:
    orders_table(
        db,
        "(1, 'a', '2024-01-01 09:54:59')",
        "(2, 'b', '2024-01-01 09:55:00')",
        "(3, 'c', '2024-01-01 10:00:00')",
    )
    mark = {
        "cursor": "updated_at",
        "cursor_type": "timestamp",
        "high_water_mark": "2024-01-01T10:00:00",
    }

    _, rows = read(ctx, incremental(db, lag="5m"), mark)

    assert [r["id"] for r in rows] == [2, 3]


def test_a_read_keeps_one_row_per_key_with_the_highest_cursor(ctx, db) -> None:
    orders_table(db, "(1, 'new', '2024-01-01 09:00:00')", "(2, 'new', '2024-01-01 09:30:00')")
    sql(
        "CREATE TABLE order_history (id INT, status VARCHAR(10), updated_at DATETIME(6))",
        "INSERT INTO order_history VALUES (1, 'paid', '2024-01-01 11:00:00'), "
        "(1, 'sent', '2024-01-01 10:00:00')",
        database=db,
    )
    query = "SELECT * FROM orders UNION ALL SELECT * FROM order_history"

    result, rows = read(
        ctx,
        config(db, query=query, mode="incremental", cursor="updated_at", primary_key=["id"]),
    )

    assert sorted((r["id"], r["status"]) for r in rows) == [(1, "paid"), (2, "new")]
    assert result.rows_in == 2
    assert result.position["high_water_mark"] == "2024-01-01T11:00:00"


def test_a_rerun_of_unchanged_rows_has_the_same_fingerprint(ctx, db) -> None:
    orders_table(db, "(1, 'new', '2024-01-01 09:00:00')")
    first, _ = read(ctx, config(db, table="orders"))
    same, _ = read(ctx, config(db, table="orders"))
    sql("UPDATE orders SET status = 'paid' WHERE id = 1", database=db)
    changed, _ = read(ctx, config(db, table="orders"))

    assert first.fingerprint == same.fingerprint
    assert changed.fingerprint != first.fingerprint


# --- configuration, credentials and errors ---------------------------------------------------


def test_credentials_come_from_the_environment_and_never_reach_a_message(
    ctx, db, monkeypatch
) -> None:
    orders_table(db, "(1, 'new', '2024-01-01 09:00:00')")
    user, secret = f"r_{db[-10:]}", "Pw-Unique-9431"
    sql(
        f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{secret}'",
        f"GRANT SELECT ON {db}.* TO '{user}'@'127.0.0.1'",
    )
    try:
        monkeypatch.setenv("SW_TEST_MYSQL_DSN", f"mysql://{user}:{secret}@{HOST}:{PORT}/{db}")
        result, rows = read(ctx, MySQLSourceConfig(dsn_env="SW_TEST_MYSQL_DSN", table="orders"))
        assert [r["id"] for r in rows] == [1]
        assert secret not in repr(result) + repr(ctx.events.history)

        monkeypatch.setenv("SW_TEST_MYSQL_PASSWORD", secret + "-wrong")
        wrong = config(db, table="orders", user=user, password_env="SW_TEST_MYSQL_PASSWORD")
        with pytest.raises(ConfigError) as refused:
            read(ctx, wrong)
        assert f"refused user '{user}'" in str(refused.value)
        assert secret not in str(refused.value)
    finally:
        sql(f"DROP USER '{user}'@'127.0.0.1'")

    with pytest.raises(ConfigError, match=r"SW_TEST_MYSQL_UNSET .* is not set"):
        read(ctx, config(db, table="orders", password_env="SW_TEST_MYSQL_UNSET"))


def test_an_unreachable_server_is_a_transient_error_naming_the_start_script(ctx) -> None:
    cfg = MySQLSourceConfig.model_validate(
        {"host": HOST, "port": 1, "user": "root", "database": "test", "table": "t"}
    )

    with pytest.raises(TransientError, match=r"cannot be reached.*scripts/services/mariadb\.sh"):
        read(ctx, cfg)


def test_a_missing_table_or_cursor_column_is_a_clear_error(ctx, db) -> None:
    orders_table(db)

    with pytest.raises(SourceError, match="doesn't exist"):
        read(ctx, config(db, table="no_such_table"))
    with pytest.raises(ConfigError, match=r"\['changed_at'\] are not in the result"):
        read(ctx, incremental(db).model_copy(update={"cursor": "changed_at"}))


def test_a_query_that_fails_on_the_server_during_the_read_is_a_source_error(ctx, db) -> None:
    orders_table(db, "(1, 'a', '2024-01-01 09:00:00')", "(2, 'b', '2024-01-01 10:00:00')")
    query = "SELECT id, (SELECT status FROM orders) AS status FROM orders"  # 2 rows: error 1242

    with pytest.raises(
        SourceError,
        match=r"MySQL server .* failed: ERROR 1242 \(21000\): Subquery returns more than 1 row",
    ):
        read(ctx, config(db, query=query))


def test_a_zero_date_fails_the_read_with_advice(ctx, db) -> None:
    sql(
        "SET SESSION sql_mode = ''",
        "CREATE TABLE legacy (id INT PRIMARY KEY, born DATE)",
        "INSERT INTO legacy VALUES (1, '0000-00-00')",
        database=db,
    )

    with pytest.raises(SourceError, match=r"zero or partial date .*CAST\(col AS CHAR\)"):
        read(ctx, config(db, table="legacy"))
    _, rows = read(ctx, config(db, query="SELECT id, CAST(born AS CHAR) AS born FROM legacy"))
    assert rows[0]["born"] == "0000-00-00"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"mode": "incremental", "cursor": "updated_at"}, "needs `cursor` and `primary_key`"),
        ({"query": "SELECT 1"}, "exactly one of `table` or `query`"),
        ({"lag": "5 minutes", "cursor": "updated_at"}, "lag .5 minutes. is not a duration"),
        ({"dsn_env": "X"}, "`dsn_env` or `user`, not both"),
    ],
)
def test_an_incomplete_config_is_refused_with_the_reason(fields, problem) -> None:
    base = {"type": "mysql", "user": "root", "database": "test", "table": "orders"}

    with pytest.raises(ValueError, match=problem):
        MySQLSourceConfig.model_validate({**base, **fields})


def test_a_dsn_with_an_unencoded_password_is_a_config_error_quoting_none_of_it() -> None:
    from sluiceway.connectors.mysql import connection_of

    config = MySQLSourceConfig(type="mysql", dsn_env="SW_TEST_MY_DSN", table="orders")
    dsn = "mysql://trapi_u:p@ss:W/rd#1%@127.0.0.1:3306/trapi_my"

    with pytest.raises(ConfigError, match="must be URL-encoded") as raised:
        connection_of(config, {"SW_TEST_MY_DSN": dsn})

    message = str(raised.value)
    assert "SW_TEST_MY_DSN" in message
    assert not any(piece in message for piece in ("ss:W", "'W'", "rd#1"))


# --- whole pipelines --------------------------------------------------------------------------


def run_spec(folder: Path, spec: dict[str, Any], day: date = date(2024, 1, 2)) -> Any:
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run_pipeline(
        load_spec(path),
        RunOptions(logical_date=day, base_dir=folder, state_dir=folder / ".sluice", environ={}),
    )
    assert result.ok, result.error
    return result


def source_rows(db: str, table: str) -> list[tuple[Any, ...]]:
    with (
        pymysql.connect(host=HOST, port=PORT, user="root", database=db) as link,
        link.cursor() as cur,
    ):
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(f"SELECT * FROM {table} ORDER BY id")
        return [tuple(r) for r in cur.fetchall()]


def delta_rows(path: Path, columns: list[str]) -> list[tuple[Any, ...]]:
    data = DeltaTable(str(path)).to_pyarrow_table().select(columns).sort_by("id")
    return [tuple(row[c] for c in columns) for row in data.to_pylist()]


def test_a_pipeline_copies_a_mariadb_table_to_delta_exactly(tmp_path, db) -> None:
    sql(
        "CREATE TABLE payments (id BIGINT PRIMARY KEY, amount DECIMAL(12,2) NOT NULL, "
        "paid_at TIMESTAMP(6) NULL, day DATE, is_refund TINYINT(1), note JSON)",
        "INSERT INTO payments SELECT seq, seq * 1.25, TIMESTAMP'2024-01-01 00:00:00' + "
        "INTERVAL seq MINUTE, DATE'2024-01-01' + INTERVAL (seq % 3) DAY, seq % 2, "
        "JSON_OBJECT('n', seq) FROM seq_1_to_2500",
        "INSERT INTO payments VALUES (9999, 0, NULL, NULL, NULL, NULL)",
        database=db,
    )
    spec = {
        "version": 1,
        "pipeline": "payments_copy",
        "sources": {
            "payments": {
                "type": "mysql",
                "host": HOST,
                "user": "root",
                "database": db,
                "table": "payments",
                "primary_key": ["id"],
                "chunk_rows": 1000,
                "contract": {"columns": {"amount": {"type": "decimal", "min": 0}}},
            }
        },
        "sinks": [{"type": "delta", "path": "lake/payments", "mode": "append"}],
    }

    result = run_spec(tmp_path, spec)

    assert result.accounting.rows_in == 2501 and result.accounting.rows_written == 2501
    columns = ["id", "amount", "paid_at", "day", "is_refund", "note"]
    expected = [
        (
            r[0],
            r[1],
            r[2].replace(tzinfo=UTC) if r[2] else None,
            r[3],
            None if r[4] is None else bool(r[4]),
            r[5],
        )
        for r in source_rows(db, "payments")
    ]
    assert delta_rows(tmp_path / "lake" / "payments", columns) == expected
    rerun = run_spec(tmp_path, spec)
    assert [s.skipped for s in rerun.sinks] == [True]  # same rows, same date: committed


def test_an_incremental_pipeline_merges_ties_and_updates_over_two_runs(tmp_path, db) -> None:
    orders_table(db, "(1, 'new', '2024-01-01 09:00:00')", "(2, 'new', '2024-01-01 10:00:00')")
    spec = {
        "version": 1,
        "pipeline": "orders_sync",
        "sources": {
            "orders": {
                "type": "mysql",
                "user": "root",
                "database": db,
                "table": "orders",
                "mode": "incremental",
                "cursor": "updated_at",
                "primary_key": ["id"],
            }
        },
        "sinks": [{"type": "delta", "path": "lake/orders", "mode": "merge", "merge_keys": ["id"]}],
    }
    first = run_spec(tmp_path, spec)
    sql(
        "INSERT INTO orders VALUES (3, 'new', '2024-01-01 10:00:00')",  # a tie at the mark
        "UPDATE orders SET status = 'paid', updated_at = '2024-01-01 11:00:00' WHERE id = 1",
        database=db,
    )

    second = run_spec(tmp_path, spec, day=date(2024, 1, 3))

    assert (first.accounting.rows_in, second.accounting.rows_in) == (2, 3)
    columns = ["id", "status", "updated_at"]
    assert delta_rows(tmp_path / "lake" / "orders", columns) == source_rows(db, "orders")
    history = DeltaTable(str(tmp_path / "lake" / "orders")).history()
    assert '"2024-01-01T11:00:00"' in next(
        c["sluice.positions"] for c in history if "sluice.positions" in c
    )


def test_arrow_types_are_what_delta_can_store(ctx, db) -> None:
    sql(TYPES_DDL, "INSERT INTO every_type (id) VALUES (1)", database=db)
    result, _ = read(ctx, config(db, table="every_type"))

    data = ctx.engine.fetch_arrow(f'SELECT * EXCLUDE (__sw_file, __sw_row) FROM "{result.table}"')

    assert not any(pa.types.is_unsigned_integer(f.type) for f in data.schema)
    assert not any(pa.types.is_time(f.type) for f in data.schema)


def test_a_tinyint_1_holding_another_value_than_0_or_1_stops_the_read_naming_it(ctx, db) -> None:
    sql(
        "CREATE TABLE flags (id INT PRIMARY KEY, ok TINYINT(1), level TINYINT)",
        "INSERT INTO flags VALUES (1, 0, 5), (2, 1, -3), (3, NULL, NULL)",
        database=db,
    )
    _, rows = read(ctx, config(db, table="flags"))
    assert [(r["ok"], r["level"]) for r in rows] == [(False, 5), (True, -3), (None, None)]

    sql("INSERT INTO flags VALUES (4, 2, 0)", database=db)
    with pytest.raises(SourceError, match=r"column ok is TINYINT\(1\).*CAST\(`ok` AS SIGNED\)"):
        read(ctx, config(db, table="flags"))
    sql("CREATE TABLE odd (`is ok` TINYINT(1))", "INSERT INTO odd VALUES (7)", database=db)
    with pytest.raises(SourceError) as raised:
        read(ctx, config(db, table="odd"))
    assert "CAST(`is ok` AS SIGNED) AS `is ok`" in str(raised.value)
    assert "sluice-unfit" not in str(raised.value) and "CREATE" not in str(raised.value)
    _, rows = read(
        ctx, config(db, query="SELECT id, CAST(ok AS SIGNED) AS ok FROM flags ORDER BY id")
    )
    assert [r["ok"] for r in rows] == [0, 1, None, 2]
