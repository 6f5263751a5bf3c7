"""The `mysql_cdc` source against a real MariaDB with a ROW binlog (start it with
`bash scripts/services/mariadb.sh`). Every test has its own database (dropped afterwards) and
its own position file under tmp_path."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml
from deltalake import DeltaTable

from sluiceway.core import registry
from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.runner import RunOptions
from sluiceway.errors import SourceError, TransientError
from sluiceway.streaming.base import MESSAGE_SCHEMA, Fetched
from sluiceway.streaming.mysql_cdc import MySqlCdcSource, MySqlCdcSourceConfig
from sluiceway.streaming.runner import StreamOptions, run_stream

HOST, PORT = "127.0.0.1", 3306
START_SCRIPT = "bash scripts/services/mariadb.sh"

MakeSource = Callable[..., MySqlCdcSource]


@pytest.fixture(scope="session")
def server() -> None:
    """Fails (never skips) when MariaDB does not answer, saying how to start it."""
    try:
        pymysql.connect(host=HOST, port=PORT, user="root", connect_timeout=5).close()
    except pymysql.MySQLError as exc:
        pytest.fail(
            f"MariaDB not reachable on {HOST}:{PORT} ({exc}): start it with `{START_SCRIPT}`"
        )


def sql(*statements: str) -> list[tuple[Any, ...]]:
    """Runs the statements (autocommit, UTC); the rows of the last one."""
    with (
        pymysql.connect(host=HOST, port=PORT, user="root", autocommit=True) as link,
        link.cursor() as cur,
    ):
        cur.execute("SET time_zone = '+00:00'")
        for statement in statements:
            cur.execute(statement)
        return list(cur.fetchall())


@pytest.fixture
def table(server: None) -> Iterator[str]:
    """`database.items` in a database of the test's own, dropped afterwards."""
    database = f"sw_cdc_{uuid.uuid4().hex[:10]}"
    sql(
        f"CREATE DATABASE {database}",
        f"CREATE TABLE {database}.items (id INT PRIMARY KEY, name VARCHAR(20), "
        "amount DECIMAL(10,2), seen DATETIME(3), doc JSON)",
    )
    yield f"{database}.items"
    sql(f"DROP DATABASE IF EXISTS {database}")


@pytest.fixture
def make_source(table: str, tmp_path: Path) -> Iterator[MakeSource]:
    """Opens sources on `table` sharing one position file; closes them afterwards."""
    sources: list[MySqlCdcSource] = []

    def make(*, open_it: bool = True, **options: Any) -> MySqlCdcSource:
        fields = {"user": "root", "table": table, "state_path": str(tmp_path / "pos.json")}
        source = MySqlCdcSource(MySqlCdcSourceConfig(**{**fields, **options}))
        sources.append(source)
        if open_it:
            source.open()
        return source

    yield make
    for source in sources:
        source.close()


def fetch_n(source: MySqlCdcSource, count: int, *, timeout_s: float = 10) -> list[Fetched]:
    """Fetch until `count` messages arrived (fails after `timeout_s`)."""
    batches: list[Fetched] = []
    deadline = time.monotonic() + timeout_s
    while sum(b.count for b in batches) < count:
        assert time.monotonic() < deadline, f"only {sum(b.count for b in batches)} of {count}"
        fetched = source.fetch(count - sum(b.count for b in batches), 0.5)
        if fetched.count:
            batches.append(fetched)
    return batches


def payloads(batches: list[Fetched]) -> list[dict[str, Any]]:
    return [json.loads(p) for b in batches for p in b.messages.column("payload").to_pylist()]


def msg_ids(batches: list[Fetched]) -> list[str]:
    return [i for b in batches for i in b.messages.column("msg_id").to_pylist()]


def test_snapshot_rows_then_changes_arrive_in_order_with_ops_and_text_values(
    table: str, make_source: MakeSource
) -> None:
    sql(
        f"INSERT INTO {table} VALUES (1, 'a', 10.50, '2024-01-02 03:04:05.120', "
        """'{"k": 1}'), (2, 'b', NULL, NULL, NULL)"""
    )
    source = make_source()
    sql(f"INSERT INTO {table} VALUES (3, 'c', 3, '2024-05-06 07:08:09', '[1]')")
    sql(
        "START TRANSACTION",
        f"UPDATE {table} SET amount = 11 WHERE id = 1",
        f"DELETE FROM {table} WHERE id = 2",
        "COMMIT",
    )
    batches = fetch_n(source, 5)

    a = {"id": "1", "name": "a", "seen": "2024-01-02 03:04:05.120000", "doc": '{"k": 1}'}
    assert payloads(batches) == [
        {**a, "amount": "10.50", "__op": "r"},
        {"id": "2", "name": "b", "amount": None, "seen": None, "doc": None, "__op": "r"},
        {
            "id": "3",
            "name": "c",
            "amount": "3.00",
            "seen": "2024-05-06 07:08:09",
            "doc": "[1]",
            "__op": "i",
        },
        {**a, "amount": "11.00", "__op": "u"},  # the row after the change
        {"id": "2", "name": "b", "amount": None, "seen": None, "doc": None, "__op": "d"},
    ]
    ids = msg_ids(batches)
    assert all(source.position_after(b, a) for a, b in itertools.pairwise(ids))
    # the update and the delete share their transaction's start, numbered 0 and 1
    assert ids[3].rsplit(":", 1)[0] == ids[4].rsplit(":", 1)[0]
    assert [int(i.rsplit(":", 1)[1]) for i in ids[3:]] == [0, 1]
    for fetched in batches:
        assert fetched.messages.schema == MESSAGE_SCHEMA
        assert set(fetched.messages.column("partition").to_pylist()) == {table}
        assert fetched.messages.column("deliveries").null_count == fetched.count
        assert fetched.messages.column("enqueued_at").null_count == 0


def test_snapshot_never_emits_only_changes_after_open(table: str, make_source: MakeSource) -> None:
    sql(f"INSERT INTO {table} (id, name) VALUES (1, 'old')")
    source = make_source(snapshot="never")
    sql(f"INSERT INTO {table} (id, name) VALUES (2, 'new')")
    assert [(p["id"], p["__op"]) for p in payloads(fetch_n(source, 1))] == [("2", "i")]
    assert source.fetch(10, 0.5).count == 0


def test_changes_of_other_tables_are_not_emitted(table: str, make_source: MakeSource) -> None:
    database = table.split(".")[0]
    sql(f"CREATE TABLE {database}.other (id INT PRIMARY KEY)")
    source = make_source(snapshot="never")
    sql(f"INSERT INTO {database}.other VALUES (1)", f"INSERT INTO {table} (id) VALUES (7)")
    assert [p["id"] for p in payloads(fetch_n(source, 1))] == ["7"]
    assert source.fetch(10, 0.5).count == 0


def test_a_new_source_resumes_at_the_last_acknowledged_transaction_and_repeats_what_follows(
    table: str, make_source: MakeSource
) -> None:
    sql(f"INSERT INTO {table} (id, name) VALUES (1, 'snap')")
    source = make_source()
    for fetched in fetch_n(source, 1):
        source.ack(fetched)
    sql(f"INSERT INTO {table} (id, name) VALUES (2, 'acked')")
    acked = fetch_n(source, 1)
    source.ack(acked[0])
    sql(f"INSERT INTO {table} (id, name) VALUES (3, 'unacked')")
    unacked = fetch_n(source, 1)
    source.close()

    again = make_source()  # the position file exists: no snapshot
    redelivered = fetch_n(again, 2)
    # the acknowledged transaction comes again with its id (the runner drops it as committed)
    assert msg_ids(redelivered) == msg_ids(acked) + msg_ids(unacked)
    assert not again.position_after(msg_ids(redelivered)[0], msg_ids(acked)[0])
    assert [(p["id"], p["__op"]) for p in payloads(redelivered)] == [("2", "i"), ("3", "i")]
    assert again.fetch(10, 0.5).count == 0


def test_a_transaction_split_over_batches_resumes_at_its_start_with_the_same_ids(
    table: str, make_source: MakeSource
) -> None:
    source = make_source(snapshot="never")
    sql(f"INSERT INTO {table} (id) VALUES (1), (2), (3), (4)")
    first = source.fetch(2, 5)
    source.ack(first)
    source.close()

    again = make_source()
    batches = fetch_n(again, 4)
    assert msg_ids(batches)[:2] == msg_ids([first])
    assert [p["id"] for p in payloads(batches)] == ["1", "2", "3", "4"]


def test_an_interrupted_snapshot_is_taken_again_after_the_changes_since_the_first(
    table: str, make_source: MakeSource
) -> None:
    sql(f"INSERT INTO {table} (id) VALUES (1), (2), (3)")
    source = make_source()
    first = fetch_n(source, 2)  # part of the snapshot, never acknowledged
    sql(f"DELETE FROM {table} WHERE id = 3")
    again = make_source()  # a new run: the position file says the snapshot was cut short

    batches = fetch_n(again, 3)
    # the delete reaches a sink that may hold row 3 from the first snapshot, then the rows
    assert [(p["id"], p["__op"]) for p in payloads(batches)] == [("3", "d"), ("1", "r"), ("2", "r")]
    ids = [msg_ids(first)[-1], *msg_ids(batches)]
    assert all(again.position_after(b, a) for a, b in itertools.pairwise(ids))
    for fetched in batches:
        again.ack(fetched)
    assert again.fetch(10, 0.5).count == 0
    sql(f"INSERT INTO {table} (id) VALUES (4)")
    assert [(p["id"], p["__op"]) for p in payloads(fetch_n(again, 1))] == [("4", "i")]


def test_position_after_compares_file_position_then_row_as_numbers(
    make_source: MakeSource,
) -> None:
    source = make_source(open_it=False)
    assert source.position_after("000002:000000000004:000000000", "000001:999999999999:000000009")
    assert source.position_after("000001:000000000500:000000010", "000001:000000000500:000000009")
    assert source.position_after("000001:000000000500:1000000000", "000001:000000000500:999999999")
    assert not source.position_after(
        "000001:000000000500:000000001", "000001:000000000500:000000001"
    )
    assert not source.position_after(
        "000001:000000000499:000000005", "000001:000000000500:000000000"
    )
    with pytest.raises(SourceError, match="not a mysql_cdc msg_id"):
        source.position_after("1-0", "000001:000000000500:000000000")


def test_unreachable_server_is_a_transient_error_naming_the_start_script(
    table: str, tmp_path: Path
) -> None:
    config = MySqlCdcSourceConfig(
        user="root", table=table, port=1, state_path=str(tmp_path / "p.json"), connect_timeout_s=2
    )
    source = MySqlCdcSource(config)
    with pytest.raises(TransientError, match=re.escape(START_SCRIPT)):
        source.open()
    source.close()


def test_a_missing_table_is_a_clear_source_error(table: str, make_source: MakeSource) -> None:
    with pytest.raises(SourceError, match=r"table .*\.nope does not exist"):
        make_source(table=table.split(".")[0] + ".nope")


def test_the_source_type_is_registered_and_captures_changes() -> None:
    plugin = registry.lookup("source", "mysql_cdc")
    assert plugin is not None
    assert plugin.impl is MySqlCdcSource
    config = plugin.config.model_validate(
        {"type": "mysql_cdc", "user": "u", "table": "shop.orders"}
    )
    assert config.change_capture
    assert config.state_file().name == "shop.orders.json"


def cdc_spec(table: str, state_path: Path, *, batch_rows: int = 2) -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "cdc_items",
        "mode": "stream",
        "stream": {"max_batch_rows": batch_rows, "max_batch_seconds": 0.3},
        "sources": {
            "items": {
                "type": "mysql_cdc",
                "user": "root",
                "table": table,
                "state_path": str(state_path),
                "contract": {
                    "columns": {
                        "id": {"type": "integer", "nullable": False},
                        "name": {"type": "string"},
                        "amount": {"type": "decimal"},
                    }
                },
            }
        },
        "sinks": [{"type": "delta", "path": "lake/items", "mode": "merge", "merge_keys": ["id"]}],
        "dead_letter": {"path": "lake/dead_letter"},
    }


def delta_rows(folder: Path) -> list[tuple[Any, ...]]:
    landed = DeltaTable(str(folder / "lake" / "items")).to_pyarrow_table()
    columns = ("id", "name", "amount")
    return sorted(zip(*(landed.column(c).to_pylist() for c in columns), strict=True))


def source_rows(table: str) -> list[tuple[Any, ...]]:
    return sorted(sql(f"SELECT id, name, amount FROM {table}"))


def test_the_stream_runner_applies_the_snapshot_and_the_changes_to_delta(
    table: str, tmp_path: Path
) -> None:
    sql(f"INSERT INTO {table} (id, name, amount) VALUES (1, 'a', 1.5), (2, 'b', 2)")
    options = RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice")
    spec = cdc_spec(table, tmp_path / "pos.json")

    def run() -> None:
        result = run_stream(pipeline_from_dict(spec), options, StreamOptions(idle_exit_s=1.5))
        assert result.ok, result.error

    run()
    assert delta_rows(tmp_path) == source_rows(table)
    sql(
        f"UPDATE {table} SET amount = 5 WHERE id = 1",
        f"DELETE FROM {table} WHERE id = 2",
        f"INSERT INTO {table} (id, name, amount) VALUES (3, 'c', 3)",
        f"UPDATE {table} SET name = 'c2' WHERE id = 3",
    )
    run()
    assert delta_rows(tmp_path) == source_rows(table)
    assert [r[0] for r in delta_rows(tmp_path)] == [1, 3]


def test_the_position_file_lives_in_the_state_folder_and_its_loss_is_not_a_silent_snapshot(
    table: str, tmp_path: Path
) -> None:
    """Run from another state folder (another working folder, say), the pipeline must not
    take a new snapshot over the table: rows deleted meanwhile would stay in it."""
    sql(f"INSERT INTO {table} (id, name, amount) VALUES (1, 'a', 1.5), (2, 'b', 2)")
    spec = cdc_spec(table, tmp_path / "unused.json")
    del spec["sources"]["items"]["state_path"]
    first = RunOptions(base_dir=tmp_path, state_dir=tmp_path / "state_a")
    result = run_stream(pipeline_from_dict(spec), first, StreamOptions(idle_exit_s=1.5))
    assert result.ok, result.error
    assert (tmp_path / "state_a" / "mysql_cdc" / f"{table}.json").is_file()
    sql(f"DELETE FROM {table} WHERE id = 2")

    elsewhere = RunOptions(base_dir=tmp_path, state_dir=tmp_path / "state_b")
    refused = run_stream(pipeline_from_dict(spec), elsewhere, StreamOptions(idle_exit_s=1.5))
    again = run_stream(pipeline_from_dict(spec), first, StreamOptions(idle_exit_s=1.5))

    assert not refused.ok
    assert "position file" in str(refused.error) and "state_b" in str(refused.error)
    assert "delete the sink's table" in str(refused.error)
    assert again.ok, again.error
    assert delta_rows(tmp_path) == source_rows(table) == [(1, "a", Decimal("1.5"))]


def test_merge_keys_other_than_the_primary_key_are_refused(table: str, tmp_path: Path) -> None:
    sql(f"INSERT INTO {table} (id, name, amount) VALUES (1, 'a', 1.5), (2, 'a', 2)")
    spec = cdc_spec(table, tmp_path / "pos.json")
    spec["sinks"][0]["merge_keys"] = ["name"]
    options = RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice")

    result = run_stream(pipeline_from_dict(spec), options, StreamOptions(idle_exit_s=1.5))

    assert not result.ok
    assert "merge_keys ['name'] are not the table's primary key ['id']" in str(result.error)
    assert not (tmp_path / "lake" / "items").exists()


def test_columns_beyond_the_contract_and_columns_added_at_the_source_land_too(
    table: str, tmp_path: Path
) -> None:
    sql(f"INSERT INTO {table} (id, name, amount, doc) VALUES (1, 'a', 1.5, '[1]')")
    options = RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice")
    spec = cdc_spec(table, tmp_path / "pos.json")

    def run() -> None:
        result = run_stream(pipeline_from_dict(spec), options, StreamOptions(idle_exit_s=1.5))
        assert result.ok, result.error

    run()
    sql(
        f"ALTER TABLE {table} ADD COLUMN region VARCHAR(8)",
        f"INSERT INTO {table} (id, name, amount, region) VALUES (2, 'b', 2, 'eu')",
    )
    run()

    landed = DeltaTable(str(tmp_path / "lake" / "items")).to_pyarrow_table().to_pylist()
    rows = {row["id"]: row for row in landed}
    assert rows[1]["doc"] == "[1]" and rows[1]["region"] is None
    assert rows[2]["region"] == "eu" and rows[2]["doc"] is None


def test_an_update_that_moves_the_primary_key_leaves_no_row_under_the_old_key(
    table: str, tmp_path: Path
) -> None:
    sql(f"INSERT INTO {table} (id, name, amount) VALUES (1, 'a', 1.5), (2, 'b', 2)")
    options = RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice")
    spec = cdc_spec(table, tmp_path / "pos.json", batch_rows=50)

    def run() -> None:
        result = run_stream(pipeline_from_dict(spec), options, StreamOptions(idle_exit_s=1.5))
        assert result.ok, result.error

    run()
    sql(
        f"UPDATE {table} SET id = 10 WHERE id = 1",
        f"UPDATE {table} SET id = 11, name = 'b2' WHERE id = 2",
        f"UPDATE {table} SET id = 1 WHERE id = 11",
    )
    run()

    assert delta_rows(tmp_path) == source_rows(table)
    assert [r[0] for r in delta_rows(tmp_path)] == [1, 10]


# Until plugins.py imports mysql_cdc, the `sluice` command registers it through this wrapper.
_SLUICE = "import sys, sluiceway.streaming.mysql_cdc; from sluiceway.cli import entry; entry()"


def test_killed_at_every_point_the_cdc_table_equals_the_source(table: str, tmp_path: Path) -> None:
    values = ", ".join(f"({i}, 'n{i}', {i})" for i in range(1, 41))
    sql(f"INSERT INTO {table} (id, name, amount) VALUES {values}")
    spec_path = tmp_path / "pipeline.yaml"
    spec = cdc_spec(table, tmp_path / "pos.json", batch_rows=15)
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, "SLUICE_HOME": str(tmp_path / ".sluice")}

    def run(fault: str | None) -> int:
        run_env = {**env, "SLUICE_STREAM_FAULT": fault} if fault else env
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                _SLUICE,
                "run",
                str(spec_path),
                "--idle-exit",
                "1.5",
                "--log-format",
                "json",
            ],
            cwd=tmp_path,
            env=run_env,
            capture_output=True,
            timeout=120,
        )
        return done.returncode

    assert run("after_commit:1") == -signal.SIGKILL  # snapshot batch committed, not acked
    for step, fault in enumerate(("before_write:3", "after_dead_letters:3", "after_commit:4")):
        sql(
            f"UPDATE {table} SET amount = amount + 100 WHERE id % 3 = {step}",
            f"DELETE FROM {table} WHERE id = {10 + step}",
            f"INSERT INTO {table} (id, name, amount) VALUES ({100 + step}, 'new', 1)",
        )
        code = run(fault)
        assert code in (0, -signal.SIGKILL)
    assert run(None) == 0

    assert delta_rows(tmp_path) == source_rows(table)
