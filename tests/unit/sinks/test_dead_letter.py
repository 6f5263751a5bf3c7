from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from sluiceway.errors import SinkError
from sluiceway.sinks.dead_letter import DEAD_LETTER_SCHEMA, DeadLetterTable

T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def letters(
    count: int,
    *,
    pipeline: str = "orders",
    run_key: str = "key-1",
    run_id: str = "run-1",
    prefix: str = "d",
) -> pa.Table:
    rows = [
        {
            "dlq_id": f"{prefix}{i}",
            "pipeline": pipeline,
            "run_id": run_id,
            "run_key": run_key,
            "logical_date": date(2024, 1, 2),
            "source": "orders",
            "file": "in/orders.csv",
            "line": i + 2,
            "row": i + 1,
            "stage": "contract",
            "errors": [{"rule": "not_null", "column": "order_id", "reason": "is NULL"}],
            "payload": f'{{"order_id": null, "n": {i}}}',
            "raw_payload": f"raw-{i}".encode(),
            "raw_encrypted": False,
            "dead_lettered_at": T0 + timedelta(seconds=count - i),
        }
        for i in range(count)
    ]
    return pa.Table.from_pylist(rows, schema=DEAD_LETTER_SCHEMA)


@pytest.fixture
def dlq(tmp_path: Path) -> DeadLetterTable:
    return DeadLetterTable(str(tmp_path / "state/dead_letter"), {})


def ids(table: pa.Table) -> list[str]:
    return sorted(table["dlq_id"].to_pylist())


def test_write_creates_the_table_partitioned_by_pipeline(dlq: DeadLetterTable) -> None:
    assert dlq.exists() is False

    written = dlq.write(
        letters(2), pipeline="orders", run_key="key-1", metadata={"sluice.run_id": "r"}
    )

    assert written == 2
    assert dlq.exists() is True
    table = DeltaTable(dlq.uri)
    assert table.metadata().partition_columns == ["pipeline"]
    assert table.history(1)[0]["sluice.run_id"] == "r"


def test_rewriting_a_run_key_replaces_its_rows_instead_of_duplicating(dlq: DeadLetterTable) -> None:
    dlq.write(letters(3), pipeline="orders", run_key="key-1", metadata={})
    dlq.write(
        letters(1, run_key="key-2", prefix="other"), pipeline="orders", run_key="key-2", metadata={}
    )

    for _ in range(2):
        dlq.write(letters(2, prefix="again"), pipeline="orders", run_key="key-1", metadata={})

    assert ids(dlq.read()) == ["again0", "again1", "other0"]


def test_an_empty_write_clears_the_run_keys_old_rows(dlq: DeadLetterTable) -> None:
    dlq.write(letters(2), pipeline="orders", run_key="key-1", metadata={})
    dlq.write(
        letters(1, run_key="key-2", prefix="kept"), pipeline="orders", run_key="key-2", metadata={}
    )

    written = dlq.write(letters(0), pipeline="orders", run_key="key-1", metadata={})

    assert written == 0
    assert ids(dlq.read()) == ["kept0"]


def test_an_empty_write_without_a_table_creates_nothing(dlq: DeadLetterTable) -> None:
    assert dlq.write(letters(0), pipeline="orders", run_key="key-1", metadata={}) == 0
    assert dlq.exists() is False


def test_run_keys_with_quotes_are_matched_exactly(dlq: DeadLetterTable) -> None:
    key = "it's a \\key"
    dlq.write(letters(2, run_key=key), pipeline="orders", run_key=key, metadata={})
    dlq.write(letters(1, run_key=key, prefix="x"), pipeline="orders", run_key=key, metadata={})

    assert ids(dlq.read()) == ["x0"]


def test_read_filters_by_pipeline_and_run_id_oldest_first(dlq: DeadLetterTable) -> None:
    dlq.write(letters(3, run_id="run-1"), pipeline="orders", run_key="key-1", metadata={})
    dlq.write(
        letters(2, run_id="run-2", run_key="key-2", prefix="b"),
        pipeline="orders",
        run_key="key-2",
        metadata={},
    )
    dlq.write(
        letters(1, pipeline="returns", prefix="r"), pipeline="returns", run_key="key-1", metadata={}
    )

    assert dlq.read(pipeline="orders", run_id="run-1")["dlq_id"].to_pylist() == ["d2", "d1", "d0"]
    assert ids(dlq.read(pipeline="orders")) == ["b0", "b1", "d0", "d1", "d2"]
    assert ids(dlq.read(pipeline="returns")) == ["r0"]
    assert dlq.read(pipeline="orders", run_id="run-1", limit=2)["dlq_id"].to_pylist() == [
        "d2",
        "d1",
    ]


def test_read_returns_rows_with_the_dead_letter_schema(dlq: DeadLetterTable) -> None:
    dlq.write(letters(1), pipeline="orders", run_key="key-1", metadata={})

    found = dlq.read()

    assert found.schema == DEAD_LETTER_SCHEMA
    row = found.to_pylist()[0]
    assert row["errors"] == [{"rule": "not_null", "column": "order_id", "reason": "is NULL"}]
    assert (row["raw_payload"], row["dead_lettered_at"]) == (b"raw-0", T0 + timedelta(seconds=1))


def test_read_of_a_missing_table_is_empty_with_the_schema(dlq: DeadLetterTable) -> None:
    found = dlq.read(pipeline="orders")

    assert (found.num_rows, found.schema) == (0, DEAD_LETTER_SCHEMA)


def test_delete_removes_the_given_ids_and_counts_them(dlq: DeadLetterTable) -> None:
    dlq.write(letters(4), pipeline="orders", run_key="key-1", metadata={})

    deleted = dlq.delete(["d1", "d3", "d1", "unknown"], metadata={"sluice.replay_run_id": "r9"})

    assert deleted == 2
    assert ids(dlq.read()) == ["d0", "d2"]
    assert DeltaTable(dlq.uri).history(1)[0]["sluice.replay_run_id"] == "r9"


def test_delete_of_many_ids_is_chunked_and_complete(dlq: DeadLetterTable) -> None:
    dlq.write(letters(1203), pipeline="orders", run_key="key-1", metadata={})

    deleted = dlq.delete([f"d{i}" for i in range(1, 1203)], metadata={})

    assert deleted == 1202
    assert ids(dlq.read()) == ["d0"]


def test_delete_without_a_table_deletes_nothing(dlq: DeadLetterTable) -> None:
    assert dlq.delete(["d0"], metadata={}) == 0


def test_rows_of_another_run_key_are_refused(dlq: DeadLetterTable) -> None:
    with pytest.raises(SinkError, match=r"run_key 'key-1': 2 row\(s\) carry another"):
        dlq.write(letters(2, run_key="key-9"), pipeline="orders", run_key="key-1", metadata={})

    assert dlq.exists() is False


def test_rows_missing_a_column_are_refused_with_its_name(dlq: DeadLetterTable) -> None:
    with pytest.raises(SinkError, match=r"missing \['payload'\], unexpected \['extra'\]"):
        dlq.write(
            letters(1).drop_columns(["payload"]).append_column("extra", pa.array([1])),
            pipeline="orders",
            run_key="key-1",
            metadata={},
        )


def test_rows_with_an_uncastable_column_name_it_without_its_values(dlq: DeadLetterTable) -> None:
    table = letters(1).set_column(7, "line", pa.array(["secret-value"]))

    with pytest.raises(SinkError, match="column 'line' has type string") as caught:
        dlq.write(table, pipeline="orders", run_key="key-1", metadata={})

    assert "secret-value" not in str(caught.value)


def test_rows_with_an_unknown_stage_are_refused(dlq: DeadLetterTable) -> None:
    table = letters(1).set_column(9, "stage", pa.array(["transform"]))

    with pytest.raises(SinkError, match=r"1 dead-letter row\(s\) have a stage other than"):
        dlq.write(table, pipeline="orders", run_key="key-1", metadata={})


def test_rows_without_a_dlq_id_are_refused(dlq: DeadLetterTable) -> None:
    table = letters(1).set_column(0, "dlq_id", pa.array([None], pa.string()))

    with pytest.raises(SinkError, match=r"1 dead-letter row\(s\) have no dlq_id"):
        dlq.write(table, pipeline="orders", run_key="key-1", metadata={})
