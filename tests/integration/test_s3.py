"""Delta and Parquet sinks and the dead-letter table against a real S3-compatible server.

Start the server with `bash scripts/services/moto.sh` (endpoint: SLUICE_TEST_S3_ENDPOINT,
default http://127.0.0.1:5000).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable

from sluiceway.core.context import RunContext, WriteRequest
from sluiceway.core.storage import arrow_filesystem, delta_storage_options
from sluiceway.errors import SinkError
from sluiceway.sinks.dead_letter import DEAD_LETTER_SCHEMA, DeadLetterTable
from sluiceway.sinks.delta import DeltaSink, DeltaSinkConfig
from sluiceway.sinks.parquet import ParquetSink, ParquetSinkConfig

pytestmark = pytest.mark.integration

ENDPOINT = os.environ.get("SLUICE_TEST_S3_ENDPOINT", "http://127.0.0.1:5000")
ACCESS_KEY = "sluice-test-key"
SECRET_KEY = "sluice-test-secret-value"
OPTIONS = {"endpoint_url": ENDPOINT, "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}


@pytest.fixture(scope="session")
def bucket(make_bucket: Callable[[str], str]) -> str:
    return make_bucket("sluice-test")


@pytest.fixture
def prefix(bucket: str) -> str:
    return f"s3://{bucket}/{uuid.uuid4().hex[:8]}"


def request(data: pa.Table, key: str, positions: dict[str, Any] | None = None) -> WriteRequest:
    return WriteRequest(
        data=data,
        idempotency_key=key,
        metadata={"sluice.run_id": "run-1"},
        positions=positions or {},
    )


def orders(ids: list[int], day: str = "2024-01-02", amount: float = 1.0) -> pa.Table:
    return pa.table(
        {
            "order_id": pa.array(ids, pa.int64()),
            "day": pa.array([day] * len(ids)),
            "amount": pa.array([amount * i for i in ids], pa.float64()),
        }
    )


def delta_rows(uri: str) -> list[tuple[Any, ...]]:
    table = DeltaTable(uri, storage_options=delta_storage_options(uri, OPTIONS))
    return sorted(
        (r["order_id"], r["day"], r["amount"]) for r in table.to_pyarrow_table().to_pylist()
    )


def test_delta_append_is_idempotent_on_s3(ctx: RunContext, prefix: str) -> None:
    delta = DeltaSink(DeltaSinkConfig(path=f"{prefix}/orders", storage_options=OPTIONS))

    first = delta.write(ctx, request(orders([1, 2]), "k1", {"orders": {"files": ["a.csv"]}}))
    again = delta.write(ctx, request(orders([1, 2]), "k1", {"orders": {"files": ["a.csv"]}}))
    both = {"orders": {"files": ["a.csv", "b.csv"]}}  # a request holds the whole positions
    other = delta.write(ctx, request(orders([3]), "k2", both))

    assert (first.skipped, again.skipped, other.skipped) == (False, True, False)
    assert (first.version, again.version, other.version) == (0, 0, 1)
    assert [r[0] for r in delta_rows(f"{prefix}/orders")] == [1, 2, 3]
    assert delta.committed_positions(ctx) == {"orders": {"files": ["a.csv", "b.csv"]}}


def test_delta_overwrite_partition_converges_on_s3(ctx: RunContext, prefix: str) -> None:
    config = DeltaSinkConfig(
        path=f"{prefix}/orders",
        mode="overwrite_partition",
        partition_by=["day"],
        storage_options=OPTIONS,
    )
    delta = DeltaSink(config)
    delta.write(
        ctx, request(pa.concat_tables([orders([1], "2024-01-01"), orders([2], "2024-01-02")]), "k0")
    )

    for _ in range(3):
        delta.write(ctx, request(orders([5, 6], amount=10.0), "rerun"))

    assert delta_rows(f"{prefix}/orders") == [
        (1, "2024-01-01", 1.0),
        (5, "2024-01-02", 50.0),
        (6, "2024-01-02", 60.0),
    ]


def test_delta_merge_upserts_on_s3(ctx: RunContext, prefix: str) -> None:
    config = DeltaSinkConfig(
        path=f"{prefix}/orders", mode="merge", merge_keys=["order_id"], storage_options=OPTIONS
    )
    delta = DeltaSink(config)
    delta.write(ctx, request(orders([1, 2]), "m1"))

    delta.write(ctx, request(orders([2, 3], amount=100.0), "m2"))
    delta.write(ctx, request(orders([2, 3], amount=100.0), "m2"))

    assert [(r[0], r[2]) for r in delta_rows(f"{prefix}/orders")] == [
        (1, 1.0),
        (2, 200.0),
        (3, 300.0),
    ]


def test_delta_sink_takes_credentials_from_the_environment(
    ctx: RunContext, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", ENDPOINT)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    delta = DeltaSink(DeltaSinkConfig(path=f"{prefix}/env"))

    result = delta.write(ctx, request(orders([1]), "k1"))

    assert (result.rows_written, result.version) == (1, 0)
    assert [r[0] for r in delta_rows(f"{prefix}/env")] == [1]


def test_storage_errors_name_the_table_without_secrets(ctx: RunContext, s3_endpoint: str) -> None:
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/orders"
    delta = DeltaSink(DeltaSinkConfig(path=missing, storage_options=OPTIONS))

    with pytest.raises(SinkError) as caught:
        delta.write(ctx, request(orders([1]), "k1"))

    assert missing in caught.value.message
    assert "NoSuchBucket" in caught.value.message
    assert "\x1b[" not in caught.value.message
    assert SECRET_KEY not in str(caught.value)
    assert SECRET_KEY not in repr(delta)


def test_dead_letters_are_written_read_and_deleted_on_s3(prefix: str) -> None:
    dlq = DeadLetterTable(f"{prefix}/dead_letter", OPTIONS)
    rows = pa.Table.from_pylist(
        [
            {
                "dlq_id": f"d{i}",
                "pipeline": "orders",
                "run_id": "run-1",
                "run_key": "key-1",
                "logical_date": date(2024, 1, 2),
                "source": "orders",
                "file": "in.csv",
                "line": i + 2,
                "row": i + 1,
                "stage": "parse",
                "errors": [],
                "payload": None,
                "raw_payload": b"x",
                "raw_encrypted": True,
                "dead_lettered_at": datetime(2024, 1, 2, 0, 0, i, tzinfo=UTC),
            }
            for i in range(3)
        ],
        schema=DEAD_LETTER_SCHEMA,
    )

    dlq.write(rows, pipeline="orders", run_key="key-1", metadata={})
    dlq.write(rows, pipeline="orders", run_key="key-1", metadata={})
    deleted = dlq.delete(["d0"], metadata={})

    assert dlq.exists() is True
    assert deleted == 1
    assert dlq.read(pipeline="orders", run_id="run-1")["dlq_id"].to_pylist() == ["d1", "d2"]


def test_parquet_sink_writes_partitions_and_positions_on_s3(ctx: RunContext, prefix: str) -> None:
    parquet = ParquetSink(
        ParquetSinkConfig(path=f"{prefix}/pq", partition_by=["day"], storage_options=OPTIONS)
    )

    parquet.write(ctx, request(orders([1, 2]), "k1", {"orders": {"files": ["a.csv"]}}))
    parquet.write(ctx, request(orders([3]), "k2", {"orders": {"files": ["b.csv"]}}))

    filesystem, path = arrow_filesystem(f"{prefix}/pq", OPTIONS)
    table = ds.dataset(
        path, filesystem=filesystem, format="parquet", partitioning="hive"
    ).to_table()
    assert sorted(table["order_id"].to_pylist()) == [3]
    assert parquet.committed_positions(ctx) == {"orders": {"files": ["a.csv", "b.csv"]}}
