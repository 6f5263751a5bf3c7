from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from sluiceway.core.context import RunContext, WriteRequest
from sluiceway.errors import SinkError
from sluiceway.sinks.parquet import ParquetSink, ParquetSinkConfig, file_key


def request(
    data: pa.Table, key: str = "k1", positions: dict[str, Any] | None = None
) -> WriteRequest:
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


def rows_of(path: Path) -> list[tuple[Any, ...]]:
    table = ds.dataset(str(path), format="parquet", partitioning="hive").to_table()
    return sorted((r["order_id"], r["day"], r["amount"]) for r in table.to_pylist())


def sink(**options: Any) -> ParquetSink:
    return ParquetSink(ParquetSinkConfig(path="lake/orders", **options))


def test_overwrite_partition_replaces_only_the_partitions_in_the_data(
    ctx: RunContext, tmp_path: Path
) -> None:
    parquet = sink(partition_by=["day"])
    parquet.write(
        ctx, request(pa.concat_tables([orders([1], "2024-01-01"), orders([2], "2024-01-02")]))
    )

    results = [
        parquet.write(ctx, request(orders([3, 4], amount=10.0), key="rerun")) for _ in range(3)
    ]

    assert [r.rows_written for r in results] == [2, 2, 2]
    assert rows_of(tmp_path / "lake/orders") == [
        (1, "2024-01-01", 1.0),
        (3, "2024-01-02", 30.0),
        (4, "2024-01-02", 40.0),
    ]


def test_append_with_the_same_key_twice_lands_the_rows_once(
    ctx: RunContext, tmp_path: Path
) -> None:
    parquet = sink(mode="append", partition_by=["day"])

    parquet.write(ctx, request(orders([1, 2]), key="k1"))
    parquet.write(ctx, request(orders([1, 2]), key="k1"))

    assert rows_of(tmp_path / "lake/orders") == [(1, "2024-01-02", 1.0), (2, "2024-01-02", 2.0)]
    files = sorted(p.name for p in (tmp_path / "lake/orders/day=2024-01-02").iterdir())
    assert files == ["part-k1-0.parquet"]


def test_appends_with_different_keys_both_land(ctx: RunContext, tmp_path: Path) -> None:
    parquet = sink(mode="append")

    parquet.write(ctx, request(orders([1]), key="k1"))
    parquet.write(ctx, request(orders([2]), key="k2"))

    assert [r[0] for r in rows_of(tmp_path / "lake/orders")] == [1, 2]


def test_positions_round_trip_through_sidecars(
    ctx: RunContext, make_ctx: Callable[..., RunContext], tmp_path: Path
) -> None:
    parquet = sink(partition_by=["day"])
    parquet.write(
        ctx, request(orders([1]), "k1", {"orders": {"files": ["a.csv"]}, "api": {"cursor": 1}})
    )
    parquet.write(
        ctx, request(orders([2]), "k2", {"orders": {"files": ["b.csv"]}, "api": {"cursor": 2}})
    )
    other = make_ctx(pipeline="returns", sink="parquet")
    parquet.write(other, request(orders([3]), "k3", {"orders": {"files": ["z.csv"]}}))

    assert parquet.committed_positions(ctx) == {
        "orders": {"files": ["a.csv", "b.csv"]},
        "api": {"cursor": 2},
    }
    sidecar = json.loads((tmp_path / "lake/orders/_sluice/positions-k1.json").read_text())
    assert (sidecar["pipeline"], sidecar["idempotency_key"]) == ("orders", "k1")


def test_empty_data_still_records_its_positions(ctx: RunContext, tmp_path: Path) -> None:
    parquet = sink(partition_by=["day"])

    result = parquet.write(ctx, request(orders([]), "k1", {"orders": {"files": ["empty.csv"]}}))

    assert result.rows_written == 0
    assert parquet.committed_positions(ctx) == {"orders": {"files": ["empty.csv"]}}


def test_committed_positions_of_a_missing_dataset_are_empty(ctx: RunContext) -> None:
    assert sink(partition_by=["day"]).committed_positions(ctx) == {}


def test_files_are_zstd_compressed(ctx: RunContext, tmp_path: Path) -> None:
    sink(partition_by=["day"]).write(ctx, request(orders([1, 2])))

    files = list((tmp_path / "lake/orders").rglob("*.parquet"))
    codecs = {pq.ParquetFile(f).metadata.row_group(0).column(0).compression for f in files}
    assert len(files) == 1
    assert codecs == {"ZSTD"}


def test_a_missing_partition_column_is_refused(ctx: RunContext) -> None:
    with pytest.raises(SinkError, match=r"partition column\(s\) \['region'\] are not in the data"):
        sink(partition_by=["region"]).write(ctx, request(orders([1])))


def test_overwrite_partition_without_partition_by_is_an_invalid_config() -> None:
    with pytest.raises(ValidationError, match="needs partition_by"):
        ParquetSinkConfig(path="x")


def test_unsafe_keys_become_a_digest_in_file_names() -> None:
    assert file_key("run_2024-01-02.abc") == "run_2024-01-02.abc"
    assert file_key("../../etc") == hashlib.sha256(b"../../etc").hexdigest()[:32]
    assert "/" not in file_key("a/b")


def test_the_config_keeps_credentials_out_of_its_repr() -> None:
    config = ParquetSinkConfig(
        path="s3://b/t", partition_by=["day"], storage_options={"secret_access_key": "hush-1234"}
    )

    assert "hush-1234" not in repr(config)
    assert config.storage_options == {"secret_access_key": "hush-1234"}
