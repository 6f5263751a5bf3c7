"""A Delta merge sink applies change rows: the last change per key, deletes, and columns a
change left unchanged keep the table's value."""

from __future__ import annotations

import pyarrow as pa
from deltalake import DeltaTable

from sluiceway.core.context import WriteRequest
from sluiceway.sinks.delta import DeltaSink, DeltaSinkConfig


def changes(rows: list[tuple[int, str | None, str | None, str, int, str]]) -> pa.Table:
    ids, values, bigs, ops, orders, unchanged = zip(*rows, strict=True)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "v": pa.array(values, pa.string()),
            "big": pa.array(bigs, pa.string()),
            "__sw_op": pa.array(ops),
            "__sw_order": pa.array(orders, pa.int64()),
            "__sw_unchanged": pa.array(unchanged),
        }
    )


def write(ctx, data: pa.Table, key: str, transactions=()) -> object:
    sink = DeltaSink(DeltaSinkConfig(type="delta", path="lake/t", mode="merge", merge_keys=["id"]))
    request = WriteRequest(
        data=data, idempotency_key=key, metadata={}, positions={}, transactions=transactions
    )
    return sink.write(ctx, request)


def rows(ctx) -> list[dict[str, object]]:
    table = DeltaTable(ctx.resolve("lake/t")).to_pyarrow_table()
    return sorted(table.to_pylist(), key=lambda r: r["id"])


def test_change_rows_insert_update_delete_and_keep_unchanged_columns(ctx) -> None:
    write(
        ctx,
        changes(
            [
                (1, "a", "x1", "r", 1, ","),
                (2, "b", "x2", "r", 2, ","),
                (3, "c", "x3", "r", 3, ","),
                (9, "z", "x9", "i", 4, ","),
                (9, None, None, "d", 5, ","),  # inserted then deleted in the same batch
            ]
        ),
        "b1",
    )
    assert [r["id"] for r in rows(ctx)] == [1, 2, 3]

    write(
        ctx,
        changes(
            [
                (1, "A", None, "u", 1, ",big,"),  # big unchanged: keeps x1
                (2, None, None, "d", 2, ","),
                (4, "d", "x4", "i", 3, ","),
                (3, "c2", "y3", "u", 4, ","),
                (3, "c3", "z3", "u", 5, ","),  # the last change of key 3 wins
            ]
        ),
        "b2",
    )

    assert rows(ctx) == [
        {"id": 1, "v": "A", "big": "x1"},
        {"id": 3, "v": "c3", "big": "z3"},
        {"id": 4, "v": "d", "big": "x4"},
    ]


def test_a_batch_already_committed_under_its_transaction_is_skipped(ctx) -> None:
    first = changes([(1, "a", "x", "i", 1, ",")])
    write(ctx, first, "s1", transactions=(("stream:t:p", 1),))

    again = write(
        ctx, changes([(1, "b", "y", "u", 1, ",")]), "s1", transactions=(("stream:t:p", 1),)
    )

    assert again.skipped
    assert rows(ctx) == [{"id": 1, "v": "a", "big": "x"}]
