"""Messages of a micro-batch parsed in bulk: rows for JSON objects, reasons for the rest."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from sluiceway.core.spec import Contract
from sluiceway.streaming.base import MESSAGE_SCHEMA
from sluiceway.streaming.parse import parse_messages

CONTRACT = Contract.model_validate(
    {"columns": {"id": {"type": "string"}, "a.b": {"type": "integer"}, 'q"x': {"type": "string"}}}
)


def batch(payloads: list[bytes | None], deliveries: list[int] | None = None) -> pa.Table:
    n = len(payloads)
    return pa.table(
        {
            "partition": ["s"] * n,
            "msg_id": [f"1-{i}" for i in range(n)],
            "payload": payloads,
            "enqueued_at": [datetime(2025, 1, 1, tzinfo=UTC)] * n,
            "deliveries": deliveries or [1] * n,
        },
        schema=MESSAGE_SCHEMA,
    )


def test_json_objects_become_text_rows_named_by_message(engine) -> None:
    read = parse_messages(
        engine,
        batch([b'{"id": "x", "a.b": 5, "q\\"x": "y"}', b'{"id": 7, "extra": true}']),
        CONTRACT,
        max_deliveries=3,
    )

    rows = engine.fetch_arrow(f"SELECT * FROM {read.table} ORDER BY __sw_row").to_pylist()
    assert [(r["id"], r["a.b"], r['q"x'], r["__sw_file"]) for r in rows] == [
        ("x", "5", "y", "s#1-0"),
        ("7", None, None, "s#1-1"),
    ]
    assert read.rows_in == 2 and read.parse_rejects.num_rows == 0


def test_every_message_that_cannot_be_a_row_is_a_reject_with_its_reason(engine) -> None:
    payloads = [b"[1, 2]", b"not json", b"\xff\xfe", None, b'{"id": "late"}', b'{"id": "ok"}']
    read = parse_messages(
        engine, batch(payloads, deliveries=[1, 1, 1, 1, 4, 1]), CONTRACT, max_deliveries=3
    )

    rejects = read.parse_rejects.to_pylist()
    assert [(r["file"], r["reason"]) for r in rejects] == [
        ("s#1-0", "the payload is a JSON array, not an object"),
        ("s#1-1", "the payload is not valid JSON"),
        ("s#1-2", "the payload is not valid UTF-8"),
        ("s#1-3", "the message has no payload"),
        ("s#1-4", "delivered 4 times (max_deliveries: 3)"),
    ]
    assert rejects[2]["raw"] == b"\xff\xfe"
    assert engine.count(read.table) == 1
    assert read.rows_in == 6


def test_a_change_payload_spelling_a_contract_column_in_another_case_fills_that_column(
    engine,
) -> None:
    """A table column `Email` is the contract's `email`: read from that key, not passed on
    beside a NULL `email` as a column beyond the contract."""
    contract = Contract.model_validate(
        {"columns": {"id": {"type": "bigint"}, "email": {"type": "string"}}}
    )
    read = parse_messages(
        engine,
        batch([b'{"__op": "c", "id": 1, "Email": "a@example.com", "Note": "n"}']),
        contract,
        max_deliveries=3,
        change_capture=True,
    )

    rows = engine.fetch_arrow(f"SELECT * EXCLUDE (__sw_file, __sw_row) FROM {read.table}")
    assert [c for c in rows.column_names if not c.startswith("__sw_")] == ["id", "email", "Note"]
    assert rows.column("email").to_pylist() == ["a@example.com"]
    assert rows.column("Note").to_pylist() == ["n"]


@pytest.mark.parametrize(
    ("evolution", "columns"),
    [("evolve", ["id", "country"]), ("freeze", ["id", "country"]), ("discard_column", ["id"])],
)
def test_a_field_the_contract_does_not_name_reaches_it_unless_discarded(
    engine, evolution: str, columns: list[str]
) -> None:
    """A producer's new field is not dropped unseen: the contract keeps it (evolve) or
    rejects its rows (freeze); only discard_column leaves it out."""
    contract = Contract.model_validate(
        {"columns": {"id": {"type": "string"}}, "evolution": evolution}
    )
    read = parse_messages(
        engine,
        batch([b'{"id": "a"}', b'{"id": "b", "country": "FR"}']),
        contract,
        max_deliveries=3,
    )

    rows = engine.fetch_arrow(f"SELECT * EXCLUDE (__sw_file, __sw_row) FROM {read.table}")
    assert rows.column_names == columns


def test_a_message_the_source_could_not_decode_is_rejected_with_the_sources_reason(engine):
    messages = batch([b'{"id": "ok"}', b"\x02\x0a"]).append_column(
        "reason", pa.array([None, "the value is not Avro of avro_schema"], pa.string())
    )

    read = parse_messages(engine, messages, CONTRACT, max_deliveries=3)

    assert [(r["raw"], r["reason"]) for r in read.parse_rejects.to_pylist()] == [
        (b"\x02\x0a", "the value is not Avro of avro_schema")
    ]
    assert engine.count(read.table) == 1


def test_one_batch_spelling_a_field_two_ways_reads_it_as_one_column(engine) -> None:
    contract = Contract.model_validate(
        {"columns": {"id": {"type": "string"}, "email": {"type": "string"}}}
    )
    read = parse_messages(
        engine,
        batch([b'{"id": "1", "email": "a@x.org"}', b'{"id": "2", "Email": "b@x.org"}']),
        contract,
        max_deliveries=3,
    )

    rows = engine.fetch_arrow(f"SELECT * EXCLUDE (__sw_file) FROM {read.table} ORDER BY __sw_row")
    assert rows.column_names == ["id", "email", "__sw_row"]
    assert rows.column("email").to_pylist() == ["a@x.org", "b@x.org"]


def test_keys_that_cannot_be_columns_do_not_break_the_batch(engine) -> None:
    read = parse_messages(
        engine,
        batch([b'{"id": "1", "": "x", "__sw_row": 99}', b'{"id": "2"}']),
        CONTRACT,
        max_deliveries=3,
    )

    rows = engine.fetch_arrow(f"SELECT id, __sw_row FROM {read.table} ORDER BY __sw_row")
    assert rows.to_pylist() == [{"id": "1", "__sw_row": 1}, {"id": "2", "__sw_row": 2}]
    assert [c for c, _ in engine.columns(read.table)].count("__sw_row") == 1  # not renamed
