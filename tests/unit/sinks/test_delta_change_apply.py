"""A Delta merge sink applies change rows: the last change per key, deletes, and columns a
change left unchanged keep the table's value."""

from __future__ import annotations

from datetime import UTC, datetime

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


def moved(rows: pa.Table, old_keys: list[str | None]) -> pa.Table:
    return rows.append_column("__sw_old_key", pa.array(old_keys, pa.string()))


def test_an_unchanged_value_comes_from_the_keys_earlier_change_in_the_same_batch(ctx) -> None:
    """A key inserted (or snapshot-read) and updated in one batch: the update lists the big
    value as unchanged, and the table has no row yet to keep it from."""
    write(ctx, changes([(1, "a", "x1", "r", 1, ",")]), "b1")

    write(
        ctx,
        changes(
            [
                (2, "b", "BIG2", "i", 1, ","),
                (2, "b2", None, "u", 2, ",big,"),
                (3, "c", "BIG3", "r", 3, ","),
                (3, "c2", None, "u", 4, ",big,"),
                (3, "c3", None, "u", 5, ",big,"),
                (1, "a2", None, "u", 6, ",big,"),  # in the table: keeps x1 at the merge
                (4, "d", "BIG4", "i", 7, ","),
                (4, None, None, "d", 8, ","),
                (4, "d2", None, "u", 9, ",big,"),  # after a delete nothing is carried
            ]
        ),
        "b2",
    )

    assert rows(ctx) == [
        {"id": 1, "v": "a2", "big": "x1"},
        {"id": 2, "v": "b2", "big": "BIG2"},
        {"id": 3, "v": "c3", "big": "BIG3"},
        {"id": 4, "v": "d2", "big": None},
    ]


def test_a_row_moved_to_a_new_key_keeps_its_unchanged_value(ctx) -> None:
    write(ctx, moved(changes([(1, "a", "BIG1", "r", 1, ",")]), [None]), "b1")

    write(
        ctx,
        moved(
            changes(
                [
                    (10, "a2", None, "u", 1, ",big,"),  # key 1 → 10, value from the table
                    (5, "e", "BIG5", "i", 2, ","),
                    (50, "e2", None, "u", 3, ",big,"),  # key 5 → 50 in this batch
                ]
            ),
            ['{"id": 1}', None, '{"id": 5}'],
        ),
        "b2",
    )

    assert rows(ctx) == [
        {"id": 10, "v": "a2", "big": "BIG1"},
        {"id": 50, "v": "e2", "big": "BIG5"},
    ]


def test_a_moved_row_updated_again_in_the_batch_keeps_its_unchanged_value(ctx) -> None:
    write(ctx, moved(changes([(1, "a", "BIG1", "r", 1, ",")]), [None]), "b1")

    write(
        ctx,
        moved(
            changes([(10, "a2", None, "u", 1, ",big,"), (10, "a3", None, "u", 2, ",big,")]),
            ['{"id": 1}', None],
        ),
        "b2",
    )

    assert rows(ctx) == [{"id": 10, "v": "a3", "big": "BIG1"}]


def test_old_keys_compare_by_value_not_by_spelling(ctx) -> None:
    """pgoutput writes a timestamptz key as `2024-01-01 10:00:00+00`; the row holds it as
    an instant: the moved row still finds its earlier change in the batch."""
    at = pa.array([datetime(2024, 1, 1, 10, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)])
    data = pa.table(
        {
            "id": at.cast(pa.timestamp("us", tz="UTC")),
            "v": ["x", "y"],
            "big": ["BIG", None],
            "__sw_op": ["i", "u"],
            "__sw_order": pa.array([1, 2], pa.int64()),
            "__sw_unchanged": [",", ",big,"],
            "__sw_old_key": [None, '{"id": "2024-01-01 10:00:00+00"}'],
        }
    )

    write(ctx, data, "b1")

    assert [(r["v"], r["big"]) for r in rows(ctx)] == [("y", "BIG")]


def test_a_batch_whose_keys_change_once_is_left_to_the_merge(ctx) -> None:
    """Keys changed once keep the table's value at the merge: the carry takes none of them
    into Python."""
    from sluiceway.sinks import delta

    data = changes([(i, f"v{i}", None, "u", i, ",big,") for i in range(1, 50)])
    assert delta._carry_unchanged(data, ["id"], None) is data


def test_a_key_updated_then_moved_in_the_batch_keeps_the_tables_unchanged_value(ctx) -> None:
    """UPDATE t SET v = ... WHERE id = 1; UPDATE t SET id = 10 WHERE id = 1; in one batch."""
    write(ctx, moved(changes([(1, "a", "BIG1", "r", 1, ",")]), [None]), "b1")

    write(
        ctx,
        moved(
            changes([(1, "a2", None, "u", 1, ",big,"), (10, "a3", None, "u", 2, ",big,")]),
            [None, '{"id": 1}'],
        ),
        "b2",
    )

    assert rows(ctx) == [{"id": 10, "v": "a3", "big": "BIG1"}]
