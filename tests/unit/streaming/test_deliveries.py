"""The runner's count of failed deliveries, for brokers that keep none (Kafka offsets)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from sluiceway.streaming.base import MESSAGE_SCHEMA, integer_order_keys
from sluiceway.streaming.deliveries import DeliveryLedger


def batch(partition: str, offsets: range) -> pa.Table:
    n = len(offsets)
    return pa.table(
        {
            "partition": [partition] * n,
            "msg_id": [str(o) for o in offsets],
            "payload": [b"{}"] * n,
            "enqueued_at": [datetime(2025, 1, 1, tzinfo=UTC)] * n,
            "deliveries": pa.nulls(n, pa.int32()),
        },
        schema=MESSAGE_SCHEMA,
    )


def deliveries(ledger: DeliveryLedger, messages: pa.Table) -> list[int | None]:
    keys = integer_order_keys(messages.column("msg_id"))
    return ledger.counted(messages, keys).column("deliveries").to_pylist()


def fail(ledger: DeliveryLedger, messages: pa.Table) -> None:
    keys = integer_order_keys(messages.column("msg_id"))
    ledger.failed(ledger.counted(messages, keys), keys)


def test_a_batch_read_again_after_failing_carries_its_count_across_restarts(tmp_path: Path):
    path = tmp_path / "deliveries-events.json"
    failing = batch("t:0", range(10, 13))
    fail(DeliveryLedger(path), failing)
    fail(DeliveryLedger(path), failing)  # a new process each time: the run ended

    again = pa.concat_tables([failing, batch("t:0", range(13, 15)), batch("t:1", range(10, 12))])
    assert deliveries(DeliveryLedger(path), again) == [3, 3, 3, None, None, None, None]


def test_a_committed_batch_clears_its_partitions(tmp_path: Path):
    ledger = DeliveryLedger(tmp_path / "d.json")
    fail(ledger, batch("t:0", range(0, 3)))
    fail(ledger, batch("t:1", range(0, 3)))

    ledger.committed(batch("t:0", range(0, 3)))

    assert deliveries(DeliveryLedger(tmp_path / "d.json"), batch("t:0", range(0, 3))) == [None] * 3
    assert deliveries(ledger, batch("t:1", range(0, 3))) == [2, 2, 2]


def test_a_broker_that_counts_deliveries_is_left_alone(tmp_path: Path):
    ledger = DeliveryLedger(tmp_path / "d.json")
    counted = batch("s", range(0, 2)).set_column(4, "deliveries", pa.array([1, 4], pa.int32()))

    ledger.failed(counted, integer_order_keys(counted.column("msg_id")))

    assert ledger.entries == {} and not (tmp_path / "d.json").exists()


def test_a_partition_committed_past_what_failed_is_forgotten(tmp_path: Path):
    ledger = DeliveryLedger(tmp_path / "d.json")
    fail(ledger, batch("t:0", range(10, 13)))
    fail(ledger, batch("t:1", range(10, 13)))

    ledger.prune({"t:0": "12", "t:1": "11"})  # t:0 moved on (dead-lettered elsewhere)

    reloaded = DeliveryLedger(tmp_path / "d.json")
    assert deliveries(reloaded, batch("t:0", range(10, 13))) == [None] * 3
    assert deliveries(reloaded, batch("t:1", range(10, 13))) == [2, 2, 2]
