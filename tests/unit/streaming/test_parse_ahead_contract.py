"""A batch parsed ahead on the fetch thread comes with the contract applied there: its valid
and rejected rows are exactly those the batch's own run would make."""

from __future__ import annotations

import json

import pyarrow as pa

from sluiceway import masking
from sluiceway.checks.contract import apply_contract, flagging_query, split_flagged
from sluiceway.core.loader import parse_spec
from sluiceway.core.pii import PiiMasking
from sluiceway.engines.duckdb import DuckDBEngine
from sluiceway.streaming.base import MESSAGE_SCHEMA
from sluiceway.streaming.parse import parse_ahead, parse_messages

SPEC = """
version: 1
pipeline: ahead_contract
mode: stream
sources:
  events:
    type: redis_streams
    stream: events
    contract:
      columns:
        id:    {type: bigint, nullable: false}
        email: {type: string, format: email}
        price: {type: double, min: 0}
        kind:  {type: string, values: [a, b]}
        at:    {type: timestamp, format: iso_timestamp}
pii: {email: hmac}
sinks:
  - {type: delta, path: lake/out, mode: append}
"""

KEYS = masking.MaskKeys(hmac_key=b"k" * 32, encryption_key=b"e" * 32)

PAYLOADS = [
    {"id": 1, "email": "ann@example.com", "price": 3.5, "kind": "a", "at": "2024-01-02T10:00:00Z"},
    {"id": 2, "email": "not-an-email", "price": 1, "kind": "b", "at": "2024-01-02T10:00:01+02:00"},
    {"id": None, "email": "bob@example.com", "price": -1, "kind": "c", "at": "yesterday"},
    {"id": "x", "email": None, "price": "cheap", "kind": "a"},
    {"id": 5, "email": "eve@example.com", "price": 0, "kind": "b", "at": "2024-01-02 10:00"},
]


def _messages() -> pa.Table:
    payloads = [json.dumps(p).encode() for p in PAYLOADS] + [b"{broken", b"[1, 2]"]
    count = len(payloads)
    return pa.table(
        {
            "partition": ["events"] * count,
            "msg_id": [f"{i}-0" for i in range(1, count + 1)],
            "payload": pa.array(payloads, pa.binary()),
            "enqueued_at": pa.array([None] * count, pa.timestamp("ms", tz="UTC")),
            "deliveries": pa.array([1] * count, pa.int32()),
        },
        schema=MESSAGE_SCHEMA,
    )


def _engine() -> DuckDBEngine:
    engine = DuckDBEngine(threads=1, redact_values=True)
    masking.register_functions(engine.con, KEYS)
    return engine


def _rows(engine: DuckDBEngine, table: str, order: str = "__sw_row") -> list[dict]:
    return engine.fetch_arrow(f"SELECT * FROM {table} ORDER BY {order}").to_pylist()


def test_contract_applied_ahead_matches_the_batch_run() -> None:
    pipeline = parse_spec(SPEC)
    contract = pipeline.sources["events"].contract
    assert contract is not None

    in_run = _engine()
    read = parse_messages(in_run, _messages(), contract, max_deliveries=5)
    payload = PiiMasking(pipeline, KEYS, in_run).payload_sql
    expected = apply_contract(
        in_run, read.table, contract, pii=pipeline.pii, masked_payload=payload
    )

    ahead = _engine()
    shape = flagging_query(
        contract, pii=pipeline.pii, masked_payload=PiiMasking(pipeline, KEYS, ahead).payload_sql
    )
    parsed = parse_ahead(ahead, _messages(), contract, max_deliveries=5, shape=shape)
    assert parsed.shaped
    run = _engine()
    handed = parsed.read(run)
    assert handed.is_shaped
    got = split_flagged(run, handed.table)

    assert (got.rows_valid, got.rows_rejected) == (expected.rows_valid, expected.rows_rejected)
    assert (got.rows_valid, got.rows_rejected) == (2, 3)
    assert _rows(run, got.valid) == _rows(in_run, expected.valid)
    rejected = _rows(run, got.rejected)
    assert rejected == _rows(in_run, expected.rejected)
    # The dead letters' payloads are masked the same way on both engines (`raw` is
    # encrypted later, when the dead letters are sealed).
    emails = [json.loads(row["payload"])["email"] for row in rejected]
    assert emails[2] is None
    assert all(len(e) == 64 and "@" not in e for e in emails[:2]), emails
    assert parsed.rejects.equals(read.parse_rejects)
    assert parsed.rejects.num_rows == 2
