"""The `postgres_cdc` source against a real PostgreSQL with wal_level=logical (start it with
`bash scripts/services/postgres.sh`). Every test has its own schema, slot and publication;
the slot and the publication are dropped afterwards (a slot left behind retains WAL)."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from deltalake import DeltaTable

from sluiceway.core import registry
from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.runner import RunOptions
from sluiceway.errors import ConfigError, SourceError, TransientError
from sluiceway.streaming.base import MESSAGE_SCHEMA, Fetched
from sluiceway.streaming.postgres_cdc import PostgresCdcSource, PostgresCdcSourceConfig
from sluiceway.streaming.runner import StreamOptions, run_stream

START_SCRIPT = "bash scripts/services/postgres.sh"

BIG = 3000  # characters of a TOASTed value (storage EXTERNAL keeps it out of line)

MakeSource = Callable[..., PostgresCdcSource]


@pytest.fixture
def table(pg: psycopg.Connection[Any], schema: str) -> str:
    pg.execute(f"CREATE TABLE {schema}.items (id int PRIMARY KEY, name text, qty int, doc text)")
    pg.execute(f"ALTER TABLE {schema}.items ALTER COLUMN doc SET STORAGE EXTERNAL")
    return f"{schema}.items"


@pytest.fixture
def make_source(pg: psycopg.Connection[Any], table: str) -> Iterator[MakeSource]:
    """Opens sources on `table`; closes them, then drops the slot and the publication."""
    sources: list[PostgresCdcSource] = []
    slot = PostgresCdcSourceConfig(table=table).slot_name

    def make(*, open_it: bool = True, **options: Any) -> PostgresCdcSource:
        source = PostgresCdcSource(PostgresCdcSourceConfig(table=table, **options))
        sources.append(source)
        if open_it:
            source.open()
        return source

    yield make
    for source in sources:
        source.close()
    _drop_slot(pg, slot)
    pg.execute(f"DROP PUBLICATION IF EXISTS {slot}")


def _drop_slot(pg: psycopg.Connection[Any], slot: str) -> None:
    for _ in range(40):
        try:
            pg.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
            return
        except psycopg.errors.ObjectInUse:
            time.sleep(0.25)  # the walsender of a closed source is still exiting
    raise AssertionError(f"could not drop test slot {slot}: drop it by hand, it retains WAL")


def fetch_n(source: PostgresCdcSource, count: int, *, timeout_s: float = 10) -> list[Fetched]:
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


def confirmed_flush(pg: psycopg.Connection[Any], slot: str) -> str:
    row = pg.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    assert row is not None
    return str(row[0])


def lsn_value(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def test_snapshot_rows_then_changes_arrive_in_order_with_ops_and_values(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource
) -> None:
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 10, 'x'), (2, 'b', NULL, 'y')")
    source = make_source()
    pg.execute(f"INSERT INTO {table} VALUES (3, 'c', 30, 'z')")
    with pg.transaction():
        pg.execute(f"UPDATE {table} SET qty = 11 WHERE id = 1")
        pg.execute(f"DELETE FROM {table} WHERE id = 2")
    batches = fetch_n(source, 5)

    assert payloads(batches) == [
        {"id": "1", "name": "a", "qty": "10", "doc": "x", "__op": "r"},
        {"id": "2", "name": "b", "qty": None, "doc": "y", "__op": "r"},
        {"id": "3", "name": "c", "qty": "30", "doc": "z", "__op": "i"},
        {"id": "1", "name": "a", "qty": "11", "doc": "x", "__op": "u"},
        {"id": "2", "__op": "d"},  # default replica identity: the key only
    ]
    ids = msg_ids(batches)
    assert all(source.position_after(b, a) for a, b in itertools.pairwise(ids))
    # the update and the delete share their transaction's commit LSN, numbered 0 and 1
    assert ids[3].split(":")[0] == ids[4].split(":")[0]
    assert [i.split(":")[1] for i in ids[3:]] == ["00000000", "00000001"]
    table_rows = pa_rows(batches)
    assert {r["partition"] for r in table_rows} == {table}
    assert all(r["deliveries"] is None and r["enqueued_at"] is not None for r in table_rows)


def pa_rows(batches: list[Fetched]) -> list[dict[str, Any]]:
    rows = []
    for fetched in batches:
        assert fetched.messages.schema == MESSAGE_SCHEMA
        rows += fetched.messages.to_pylist()
    return rows


def test_snapshot_never_emits_only_changes_after_the_slot(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource
) -> None:
    pg.execute(f"INSERT INTO {table} VALUES (1, 'old', 1, 'x')")
    source = make_source(snapshot="never")
    pg.execute(f"INSERT INTO {table} VALUES (2, 'new', 2, 'y')")

    assert payloads(fetch_n(source, 1)) == [
        {"id": "2", "name": "new", "qty": "2", "doc": "y", "__op": "i"}
    ]
    assert source.fetch(10, 0.5).count == 0


def test_replica_identity_full_update_carries_the_old_toast_value(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource
) -> None:
    pg.execute(f"ALTER TABLE {table} REPLICA IDENTITY FULL")
    source = make_source(snapshot="never")
    doc = "".join(f"{i:05d}" for i in range(BIG // 5))
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, %s)", (doc,))
    pg.execute(f"UPDATE {table} SET qty = 2 WHERE id = 1")
    pg.execute(f"DELETE FROM {table} WHERE id = 1")

    inserted, updated, deleted = payloads(fetch_n(source, 3))
    assert inserted["doc"] == doc
    assert updated == {"id": "1", "name": "a", "qty": "2", "doc": doc, "__op": "u"}
    assert deleted == {"id": "1", "name": "a", "qty": "2", "doc": doc, "__op": "d"}


def test_default_identity_lists_unchanged_toast_columns_instead_of_a_value(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource
) -> None:
    source = make_source(snapshot="never")
    doc = "".join(f"{i:05d}" for i in range(BIG // 5))
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, %s)", (doc,))
    pg.execute(f"UPDATE {table} SET qty = 2 WHERE id = 1")
    pg.execute(f"UPDATE {table} SET doc = 'short' WHERE id = 1")

    _, untouched, rewritten = payloads(fetch_n(source, 3))
    assert untouched == {"id": "1", "name": "a", "qty": "2", "__op": "u", "__unchanged": ["doc"]}
    assert rewritten == {"id": "1", "name": "a", "qty": "2", "doc": "short", "__op": "u"}


def test_an_update_of_the_key_carries_the_old_key(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource
) -> None:
    source = make_source(snapshot="never")
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x')")
    pg.execute(f"UPDATE {table} SET id = 7 WHERE id = 1")

    assert payloads(fetch_n(source, 2))[1] == {
        "id": "7", "name": "a", "qty": "1", "doc": "x", "__op": "u", "__old_key": {"id": "1"}
    }  # fmt: skip


def test_under_replica_identity_full_a_key_change_carries_the_old_key_of_the_merge_keys(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource, tmp_path: Path
) -> None:
    make_source(open_it=False)  # its teardown drops the slot and the publication
    pg.execute(f"ALTER TABLE {table} REPLICA IDENTITY FULL")
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x'), (2, 'b', 2, 'y')")
    options = RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice")

    def run() -> Any:
        spec = cdc_spec(table)
        return run_stream(pipeline_from_dict(spec), options, StreamOptions(idle_exit_s=1.5))

    assert run().ok
    pg.execute(f"UPDATE {table} SET id = 7 WHERE id = 1")
    pg.execute(f"UPDATE {table} SET qty = 20 WHERE id = 2")  # the key kept: no old key
    result = run()

    assert result.ok, result.error
    assert delta_rows(tmp_path) == source_rows(pg, table) == [(2, "b", 20, "y"), (7, "a", 1, "x")]


def test_ack_advances_the_slot_to_the_end_of_the_last_whole_transaction(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource
) -> None:
    source = make_source(snapshot="never")
    slot = source.config.slot_name
    before = lsn_value(confirmed_flush(pg, slot))
    with pg.transaction():
        pg.execute(f"INSERT INTO {table} SELECT g, 'n', g, 'x' FROM generate_series(1, 3) g")
    pg.execute(f"INSERT INTO {table} VALUES (4, 'n', 4, 'x')")

    first = fetch_n(source, 2)  # two of the three rows of the first transaction
    for fetched in first:
        source.ack(fetched)
    time.sleep(0.3)
    assert lsn_value(confirmed_flush(pg, slot)) == before

    rest = fetch_n(source, 2)  # the last row of the first, the row of the second
    for fetched in rest:
        source.ack(fetched)
    first_commit, second_commit = (int(i.split(":")[0], 16) for i in msg_ids(rest))
    after = wait_for_confirmed(pg, slot, beyond=before)
    assert first_commit < after
    if after < second_commit:  # its COMMIT had not arrived when the batch was read
        assert source.fetch(10, 0.5).count == 0  # reads it; idle, all acknowledged
        after = wait_for_confirmed(pg, slot, beyond=after)
    assert after > second_commit


def wait_for_confirmed(pg: psycopg.Connection[Any], slot: str, *, beyond: int) -> int:
    deadline = time.monotonic() + 5
    while lsn_value(confirmed_flush(pg, slot)) <= beyond and time.monotonic() < deadline:
        time.sleep(0.05)
    return lsn_value(confirmed_flush(pg, slot))


def test_a_new_source_after_an_unacknowledged_fetch_gets_the_same_changes_again(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource
) -> None:
    source = make_source(snapshot="never")
    slot = source.config.slot_name
    before = lsn_value(confirmed_flush(pg, slot))
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x')")
    source.ack(fetch_n(source, 1)[0])
    assert source.fetch(10, 0.5).count == 0  # idle: the first transaction is confirmed
    wait_for_confirmed(pg, slot, beyond=before)
    pg.execute(f"INSERT INTO {table} VALUES (2, 'b', 2, 'y')")
    unacked = fetch_n(source, 1)
    source.close()

    again = make_source(snapshot="never")
    redelivered = fetch_n(again, 1)
    assert msg_ids(redelivered) == msg_ids(unacked)
    assert payloads(redelivered) == [{"id": "2", "name": "b", "qty": "2", "doc": "y", "__op": "i"}]
    assert again.fetch(10, 0.5).count == 0


def test_position_after_compares_lsn_then_sequence_as_numbers(
    make_source: MakeSource,
) -> None:
    source = make_source(open_it=False)
    assert source.position_after("0000000100000000:00000000", "00000000FFFFFFFF:00000009")
    assert source.position_after("000000000000000A:00000010", "000000000000000A:00000009")
    assert not source.position_after("000000000000000A:00000001", "000000000000000A:00000001")
    assert not source.position_after("0000000000000009:00000005", "000000000000000A:00000000")
    with pytest.raises(SourceError, match="not a postgres_cdc msg_id"):
        source.position_after("1-0", "000000000000000A:00000000")


def test_lag_is_the_wal_between_the_server_and_the_confirmed_position(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource
) -> None:
    source = make_source(snapshot="never")
    pg.execute(f"INSERT INTO {table} SELECT g, 'n', g, 'x' FROM generate_series(1, 50) g")
    lag = source.lag()
    assert lag is not None and lag > 0
    for fetched in fetch_n(source, 50):
        source.ack(fetched)
    assert source.fetch(10, 0.2).count == 0
    deadline = time.monotonic() + 5
    while (source.lag() or 0) >= lag and time.monotonic() < deadline:
        time.sleep(0.1)
    after = source.lag()
    assert after is not None and after < lag


def test_an_interrupted_snapshot_is_taken_again_on_reopen(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource
) -> None:
    pg.execute(f"INSERT INTO {table} SELECT g, 'n', g, 'x' FROM generate_series(1, 5) g")
    source = make_source()
    first = fetch_n(source, 2)  # part of the snapshot, never acknowledged
    pg.execute(f"DELETE FROM {table} WHERE id = 5")
    source.open()  # what the runner does after a transient error

    batches = fetch_n(source, 4)
    assert [p["id"] for p in payloads(batches)] == ["1", "2", "3", "4"]
    assert all(p["__op"] == "r" for p in payloads(batches))
    assert source.position_after(msg_ids(batches)[0], msg_ids(first)[-1])
    assert source.fetch(10, 0.5).count == 0  # the delete happened before the new snapshot


def test_reset_drops_the_slot_so_the_next_open_snapshots_again(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource
) -> None:
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x')")
    source = make_source()
    for fetched in fetch_n(source, 1):
        source.ack(fetched)
    source.close()
    again = make_source()  # the slot exists: no snapshot
    assert again.fetch(10, 0.5).count == 0
    again.reset()
    again.open()
    assert payloads(fetch_n(again, 1)) == [
        {"id": "1", "name": "a", "qty": "1", "doc": "x", "__op": "r"}
    ]


def test_a_missing_publication_without_create_is_a_clear_source_error(
    table: str, make_source: MakeSource
) -> None:
    with pytest.raises(SourceError, match=r"publication sluice_\w+ does not exist.*create"):
        make_source(create=False)


def test_unreachable_server_is_a_transient_error_naming_the_start_script(table: str) -> None:
    source = PostgresCdcSource(PostgresCdcSourceConfig(table=table, port=1))
    with pytest.raises(TransientError, match=re.escape(START_SCRIPT)):
        source.open()
    source.close()


def test_a_user_without_replication_is_told_to_grant_it_not_to_start_the_server(
    table: str,
) -> None:
    """The server's words when a user without REPLICATION opens the replication
    connection (PostgreSQL 15): a permission to grant, not a server to start or retry."""
    source = PostgresCdcSource(PostgresCdcSourceConfig(table=table))
    said = (
        'connection to server at "127.0.0.1", port 5432 failed: FATAL:  must be superuser or '
        "replication role to start walsender"
    )

    error = source._connect_error(said)

    assert isinstance(error, ConfigError) and "WITH REPLICATION" in str(error)
    assert START_SCRIPT not in str(error)


def test_the_source_type_is_registered() -> None:
    plugin = registry.lookup("source", "postgres_cdc")
    assert plugin is not None
    assert plugin.impl is PostgresCdcSource
    config = plugin.config.model_validate({"type": "postgres_cdc", "table": "shop.orders"})
    assert (config.slot_name, config.publication_name) == ("sluice_shop_orders",) * 2


def test_a_dropped_replication_connection_is_transient_and_a_reopen_resumes(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource
) -> None:
    source = make_source(snapshot="never")
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x')")
    unacked = fetch_n(source, 1)
    pg.execute(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s",
        (source.config.slot_name,),
    )
    with pytest.raises(TransientError, match=re.escape(START_SCRIPT)):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            source.fetch(10, 0.2)
    source.open()

    assert msg_ids(fetch_n(source, 1)) == msg_ids(unacked)


def test_a_new_column_appears_in_the_payloads_after_it_is_added(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource
) -> None:
    source = make_source(snapshot="never")
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x')")
    pg.execute(f"ALTER TABLE {table} ADD COLUMN color text")
    pg.execute(f"INSERT INTO {table} VALUES (2, 'b', 2, 'y', 'red')")

    assert payloads(fetch_n(source, 2)) == [
        {"id": "1", "name": "a", "qty": "1", "doc": "x", "__op": "i"},
        {"id": "2", "name": "b", "qty": "2", "doc": "y", "color": "red", "__op": "i"},
    ]


def cdc_spec(table: str, *, batch_rows: int = 2) -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "cdc_items",
        "mode": "stream",
        "stream": {"max_batch_rows": batch_rows, "max_batch_seconds": 0.3},
        "sources": {
            "items": {
                "type": "postgres_cdc",
                "table": table,
                "contract": {
                    "columns": {
                        "id": {"type": "integer", "nullable": False},
                        "name": {"type": "string"},
                        "qty": {"type": "integer"},
                        "doc": {"type": "string"},
                    }
                },
            }
        },
        "sinks": [{"type": "delta", "path": "lake/items", "mode": "merge", "merge_keys": ["id"]}],
        "dead_letter": {"path": "lake/dead_letter"},
    }


def delta_rows(folder: Path) -> list[tuple[Any, ...]]:
    landed = DeltaTable(str(folder / "lake" / "items")).to_pyarrow_table()
    columns = ("id", "name", "qty", "doc")
    return sorted(zip(*(landed.column(c).to_pylist() for c in columns), strict=True))


def source_rows(pg: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    return sorted(pg.execute(f"SELECT id, name, qty, doc FROM {table}").fetchall())


def test_the_stream_runner_applies_the_snapshot_and_the_changes_to_delta(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource, tmp_path: Path
) -> None:
    make_source(open_it=False)  # its teardown drops the slot and the publication
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x'), (2, 'b', 2, 'y')")
    options = RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice")

    def run() -> None:
        result = run_stream(
            pipeline_from_dict(cdc_spec(table)), options, StreamOptions(idle_exit_s=1.5)
        )
        assert result.ok, result.error

    run()
    assert delta_rows(tmp_path) == source_rows(pg, table)
    pg.execute(f"UPDATE {table} SET qty = 5 WHERE id = 1")
    pg.execute(f"DELETE FROM {table} WHERE id = 2")
    pg.execute(f"INSERT INTO {table} VALUES (3, 'c', 3, 'z')")
    pg.execute(f"UPDATE {table} SET name = 'c2' WHERE id = 3")
    pg.execute(f"UPDATE {table} SET id = 30 WHERE id = 3")  # the key moves
    run()
    assert delta_rows(tmp_path) == source_rows(pg, table)
    assert [r[0] for r in delta_rows(tmp_path)] == [1, 30]


def landed_columns(folder: Path) -> dict[int, dict[str, Any]]:
    landed = DeltaTable(str(folder / "lake" / "items")).to_pyarrow_table().to_pylist()
    return {row["id"]: row for row in landed}


def test_columns_the_contract_does_not_name_and_columns_added_at_the_source_land_too(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource, tmp_path: Path
) -> None:
    make_source(open_it=False)
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x'), (2, 'b', 2, 'y')")
    spec = cdc_spec(table)
    spec["sources"]["items"]["contract"]["columns"] = {
        "id": {"type": "integer", "nullable": False},
        "name": {"type": "string"},
    }  # evolution: evolve (the default) keeps qty and doc, as text
    events: list[Any] = []
    options = RunOptions(
        base_dir=tmp_path, state_dir=tmp_path / ".sluice", subscribers=[events.append]
    )

    def run() -> None:
        result = run_stream(pipeline_from_dict(spec), options, StreamOptions(idle_exit_s=1.5))
        assert result.ok, result.error

    run()
    assert landed_columns(tmp_path)[2] == {"id": 2, "name": "b", "qty": "2", "doc": "y"}
    pg.execute(f"ALTER TABLE {table} ADD COLUMN region text")
    pg.execute(f"INSERT INTO {table} VALUES (3, 'c', 3, 'z', 'eu')")
    pg.execute(f"UPDATE {table} SET qty = 10 WHERE id = 1")
    run()

    rows = landed_columns(tmp_path)
    assert rows[3] == {"id": 3, "name": "c", "qty": "3", "doc": "z", "region": "eu"}
    assert rows[1] == {"id": 1, "name": "a", "qty": "10", "doc": "x", "region": None}
    assert rows[2]["region"] is None
    said = [e.fields for e in events if e.name == "columns_beyond_contract"]
    assert [f["columns"] for f in said] == [["doc", "qty"], ["doc", "qty", "region"]]  # per run
    assert "not masked unless named in pii:" in said[0]["hint"]


def test_a_column_added_to_the_contract_later_is_added_to_the_table(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource, tmp_path: Path
) -> None:
    make_source(open_it=False)
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x')")
    spec = cdc_spec(table)
    spec["sources"]["items"]["contract"]["evolution"] = "discard_column"
    options = RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice")

    def run() -> None:
        result = run_stream(pipeline_from_dict(spec), options, StreamOptions(idle_exit_s=1.5))
        assert result.ok, result.error

    run()
    pg.execute(f"ALTER TABLE {table} ADD COLUMN region text")
    pg.execute(f"INSERT INTO {table} VALUES (2, 'b', 2, 'y', 'eu')")
    spec["sources"]["items"]["contract"]["columns"]["region"] = {"type": "string"}
    run()

    rows = landed_columns(tmp_path)
    assert rows[2]["region"] == "eu" and rows[1]["region"] is None


def test_a_truncate_empties_the_table_between_the_changes_before_and_after_it(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource, tmp_path: Path
) -> None:
    make_source(open_it=False)
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x'), (2, 'b', 2, 'y')")
    options = RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice")

    def run() -> Any:
        result = run_stream(
            pipeline_from_dict(cdc_spec(table)), options, StreamOptions(idle_exit_s=1.5)
        )
        assert result.ok, result.error
        return result

    run()
    pg.execute(f"INSERT INTO {table} VALUES (3, 'c', 3, 'z')")
    pg.execute(f"TRUNCATE {table}")
    pg.execute(f"INSERT INTO {table} VALUES (4, 'd', 4, 'w')")
    result = run()

    assert delta_rows(tmp_path) == source_rows(pg, table)
    assert [r[0] for r in delta_rows(tmp_path)] == [4]
    assert result.accounting.rows_rejected == 0
    history = DeltaTable(str(tmp_path / "lake" / "items")).history()
    assert any(c.get("sluice.truncate") for c in history)
    pg.execute(f"TRUNCATE {table}")  # a TRUNCATE as the only change of a run
    run()
    assert delta_rows(tmp_path) == source_rows(pg, table) == []
    rerun = run()  # nothing new: the committed TRUNCATE is not applied again
    assert rerun.batches == 0


def test_killed_at_every_point_the_cdc_table_equals_the_source(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource, tmp_path: Path
) -> None:
    make_source(open_it=False)
    pg.execute(f"INSERT INTO {table} SELECT i, 'n' || i, i, 'd' || i FROM generate_series(1, 40) i")
    spec_path = tmp_path / "pipeline.yaml"
    spec_path.write_text(yaml.safe_dump(cdc_spec(table, batch_rows=15), sort_keys=False))
    sluice = str(Path(sys.executable).parent / "sluice")
    env = {**os.environ, "SLUICE_HOME": str(tmp_path / ".sluice")}

    def run(fault: str | None) -> int:
        run_env = {**env, "SLUICE_STREAM_FAULT": fault} if fault else env
        done = subprocess.run(
            [sluice, "run", str(spec_path), "--idle-exit", "1.5", "--log-format", "json"],
            cwd=tmp_path,
            env=run_env,
            capture_output=True,
            timeout=120,
        )
        return done.returncode

    assert run("after_commit:1") == -signal.SIGKILL  # snapshot batch committed, not acked
    for step, fault in enumerate(("before_write:3", "after_dead_letters:3", "after_commit:4")):
        pg.execute(f"UPDATE {table} SET qty = qty + 100 WHERE id % 3 = {step}")
        pg.execute(f"DELETE FROM {table} WHERE id = {10 + step}")
        pg.execute(f"INSERT INTO {table} VALUES ({100 + step}, 'new', 1, 'n')")
        code = run(fault)
        assert code in (0, -signal.SIGKILL)
    assert run(None) == 0

    assert delta_rows(tmp_path) == source_rows(pg, table)


def run_cli(tmp_path: Path, table: str, fault: str | None, *, batch_rows: int) -> int:
    spec_path = tmp_path / "pipeline.yaml"
    spec_path.write_text(yaml.safe_dump(cdc_spec(table, batch_rows=batch_rows), sort_keys=False))
    env = {**os.environ, "SLUICE_HOME": str(tmp_path / ".sluice")}
    if fault:
        env["SLUICE_STREAM_FAULT"] = fault
    sluice = str(Path(sys.executable).parent / "sluice")
    command = [sluice, "run", str(spec_path), "--idle-exit", "1.5", "--log-format", "json"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=120)
    return done.returncode


@pytest.mark.parametrize("fault", ["before_write:1", "after_commit:1", "after_commit:2"])
def test_a_first_run_killed_during_the_snapshot_is_read_again_in_full_by_the_next(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource, tmp_path: Path, fault: str
) -> None:
    make_source(open_it=False)
    pg.execute(f"INSERT INTO {table} SELECT i, 'n' || i, i, 'd' || i FROM generate_series(1, 40) i")

    assert run_cli(tmp_path, table, fault, batch_rows=15) == -signal.SIGKILL
    pg.execute(f"DELETE FROM {table} WHERE id IN (3, 33)")  # while no run is reading
    assert run_cli(tmp_path, table, None, batch_rows=15) == 0

    assert delta_rows(tmp_path) == source_rows(pg, table)
    assert len(delta_rows(tmp_path)) == 38


def test_a_snapshot_that_landed_whole_is_not_read_again(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource, tmp_path: Path
) -> None:
    make_source(open_it=False)
    # 30 rows in batches of 15: the last batch is full, so the end is known by reading ahead.
    pg.execute(f"INSERT INTO {table} SELECT i, 'n' || i, i, 'd' || i FROM generate_series(1, 30) i")
    assert run_cli(tmp_path, table, None, batch_rows=15) == 0
    versions = DeltaTable(str(tmp_path / "lake" / "items")).version()

    assert run_cli(tmp_path, table, None, batch_rows=15) == 0

    assert DeltaTable(str(tmp_path / "lake" / "items")).version() == versions  # nothing again
    assert delta_rows(tmp_path) == source_rows(pg, table)
    newest = json.loads(
        DeltaTable(str(tmp_path / "lake" / "items")).history(1)[0]["sluice.positions"]
    )
    assert newest["items"][table].endswith(":999999999999999999")


def test_killed_around_a_truncate_the_cdc_table_equals_the_source(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource, tmp_path: Path
) -> None:
    make_source(open_it=False)
    pg.execute(f"INSERT INTO {table} SELECT i, 'n' || i, i, 'd' || i FROM generate_series(1, 20) i")
    spec_path = tmp_path / "pipeline.yaml"
    spec_path.write_text(yaml.safe_dump(cdc_spec(table, batch_rows=50), sort_keys=False))
    sluice = str(Path(sys.executable).parent / "sluice")
    env = {**os.environ, "SLUICE_HOME": str(tmp_path / ".sluice")}

    def run(fault: str | None) -> int:
        run_env = {**env, "SLUICE_STREAM_FAULT": fault} if fault else env
        command = [sluice, "run", str(spec_path), "--idle-exit", "1.5", "--log-format", "json"]
        done = subprocess.run(command, cwd=tmp_path, env=run_env, capture_output=True, timeout=120)
        return done.returncode

    assert run(None) == 0
    kills = 0
    for step, fault in enumerate(("after_commit:4", "before_write:6", "after_commit:9")):
        pg.execute(f"INSERT INTO {table} VALUES ({200 + step}, 'before', 1, 'b')")
        pg.execute(f"TRUNCATE {table}")
        pg.execute(f"INSERT INTO {table} VALUES ({300 + step}, 'after', 1, 'a')")
        code = run(fault)
        assert code in (0, -signal.SIGKILL)
        kills += code == -signal.SIGKILL
    assert run(None) == 0

    assert kills >= 2  # the faults hit batches holding a TRUNCATE or right after one
    assert delta_rows(tmp_path) == source_rows(pg, table)
    assert [r[0] for r in delta_rows(tmp_path)] == [302]


def test_a_table_without_replica_identity_is_refused_before_it_is_published(
    pg: psycopg.Connection[Any], schema: str
) -> None:
    pg.execute(f"CREATE TABLE {schema}.nokey (a int, b text)")
    source = PostgresCdcSource(PostgresCdcSourceConfig(table=f"{schema}.nokey"))
    with pytest.raises(SourceError, match=r"no replica identity.*REPLICA IDENTITY FULL"):
        source.open()
    source.close()
    published = pg.execute(
        "SELECT count(*) FROM pg_publication WHERE pubname = %s",
        (source.config.publication_name,),
    ).fetchone()
    assert published == (0,)
    pg.execute(f"UPDATE {schema}.nokey SET b = 'still allowed'")


def test_a_truncate_of_the_table_is_one_message_with_op_t(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource
) -> None:
    source = make_source(snapshot="never")
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x')")
    pg.execute(f"TRUNCATE {table}")

    inserted, truncated = payloads(fetch_n(source, 2))
    assert (inserted["__op"], truncated) == ("i", {"__op": "t"})
    assert source.fetch(10, 0.5).count == 0


def drop_slot(pg: psycopg.Connection[Any], table: str) -> None:
    slot = PostgresCdcSourceConfig(table=table).slot_name
    pg.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def test_a_dropped_slot_fails_the_run_by_default_with_what_to_do(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource, tmp_path: Path
) -> None:
    make_source(open_it=False)
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x'), (2, 'b', 2, 'y')")
    options = RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice")
    first = run_stream(pipeline_from_dict(cdc_spec(table)), options, StreamOptions(idle_exit_s=1.5))
    assert first.ok, first.error
    drop_slot(pg, table)
    pg.execute(f"DELETE FROM {table} WHERE id = 2")  # a change nobody captured

    result = run_stream(
        pipeline_from_dict(cdc_spec(table)), options, StreamOptions(idle_exit_s=1.5)
    )

    assert not result.ok
    assert "is lost: it does not exist" in (result.error or "")
    assert "on_slot_lost: resnapshot" in (result.error or "")
    assert [r[0] for r in delta_rows(tmp_path)] == [1, 2]  # untouched


def test_with_resnapshot_a_lost_slot_replaces_the_table_by_a_new_snapshot(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource, tmp_path: Path
) -> None:
    make_source(open_it=False)
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x'), (2, 'b', 2, 'y')")
    options = RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice")
    spec = cdc_spec(table)
    spec["sources"]["items"]["on_slot_lost"] = "resnapshot"

    def run() -> None:
        result = run_stream(pipeline_from_dict(spec), options, StreamOptions(idle_exit_s=1.5))
        assert result.ok, result.error

    run()
    drop_slot(pg, table)
    pg.execute(f"DELETE FROM {table} WHERE id = 2")
    pg.execute(f"UPDATE {table} SET qty = 10 WHERE id = 1")
    pg.execute(f"INSERT INTO {table} VALUES (3, 'c', 3, 'z')")
    run()
    pg.execute(f"INSERT INTO {table} VALUES (4, 'd', 4, 'w')")  # streaming again after it
    run()

    assert delta_rows(tmp_path) == source_rows(pg, table)
    assert [r[0] for r in delta_rows(tmp_path)] == [1, 3, 4]


def test_a_stream_run_that_cannot_reach_the_database_says_database_not_broker(
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    spec = cdc_spec("public.nothing_here")
    spec["sources"]["items"]["port"] = port
    options = RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice")

    result = run_stream(pipeline_from_dict(spec), options, StreamOptions(retries=2, backoff_s=0.01))

    assert not result.ok
    assert "could not connect to the database after 2 attempts" in (result.error or "")
    assert START_SCRIPT in (result.error or "")


def test_replaying_a_dead_lettered_change_is_refused_saying_what_to_do(
    table: str, tmp_path: Path
) -> None:
    from sluiceway.core.replay import replay

    options = RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice")
    with pytest.raises(ConfigError, match="cannot be replayed") as raised:
        replay(pipeline_from_dict(cdc_spec(table)), "20250101T000000-0000aaaa-stream", options)

    assert "new snapshot" in str(raised.value)


def test_merge_keys_other_than_the_primary_key_are_refused_before_the_slot_is_made(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource, tmp_path: Path
) -> None:
    make_source(open_it=False)  # its teardown drops the slot and the publication
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x'), (2, 'a', 2, 'y')")
    spec = cdc_spec(table)
    spec["sinks"][0]["merge_keys"] = ["name"]
    options = RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice")

    result = run_stream(pipeline_from_dict(spec), options, StreamOptions(idle_exit_s=1.5))

    assert not result.ok
    assert "merge_keys ['name'] are not the primary key" in str(result.error)
    assert "Set merge_keys: ['id']" in str(result.error)
    slot = PostgresCdcSourceConfig(table=table).slot_name
    assert not pg.execute(
        "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    ).fetchall()


def test_deletes_are_not_judged_by_table_checks(
    pg: psycopg.Connection[Any], table: str, make_source: MakeSource, tmp_path: Path
) -> None:
    """A delete carries only the key (default replica identity): a not_null check on another
    column must neither route it to the dead letters nor fail its batch."""
    make_source(open_it=False)  # its teardown drops the slot and the publication
    pg.execute(f"INSERT INTO {table} VALUES (1, 'a', 1, 'x'), (2, 'b', 2, 'y')")
    spec = cdc_spec(table)
    spec["checks"] = [
        {"not_null": {"column": "name", "on_fail": "dead_letter"}},
        {"not_null": {"column": "qty"}},
    ]
    options = RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice")

    def run() -> Any:
        return run_stream(pipeline_from_dict(spec), options, StreamOptions(idle_exit_s=1.5))

    first = run()
    assert first.ok, first.error
    pg.execute(f"DELETE FROM {table} WHERE id = 2")
    second = run()

    assert second.ok, second.error
    assert delta_rows(tmp_path) == source_rows(pg, table) == [(1, "a", 1, "x")]
    letters = tmp_path / "lake" / "dead_letter"
    assert (
        not DeltaTable.is_deltatable(str(letters))
        or not DeltaTable(str(letters)).to_pyarrow_table().num_rows
    )
