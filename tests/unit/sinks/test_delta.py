from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pydantic import ValidationError

from sluiceway.core.context import RunContext, WriteRequest
from sluiceway.core.storage import (
    arrow_filesystem,
    delta_storage_options,
    merge_positions,
    redact,
)
from sluiceway.errors import ConfigError, SinkError
from sluiceway.sinks.delta import DeltaSink, DeltaSinkConfig, app_id, replace_predicate

LOGICAL_DATE = date(2024, 1, 2)


def request(
    data: pa.Table,
    key: str = "k1",
    positions: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
) -> WriteRequest:
    return WriteRequest(
        data=data,
        idempotency_key=key,
        metadata=metadata or {"sluice.run_id": "run-1"},
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


def rows_of(path: Path, *sort_by: str) -> list[dict[str, Any]]:
    table = DeltaTable(str(path)).to_pyarrow_table()
    keys = sort_by or tuple(table.column_names)
    return sorted(table.to_pylist(), key=lambda r: tuple(str(r[k]) for k in keys))


def sink(path: str = "lake/orders", **options: Any) -> DeltaSink:
    return DeltaSink(DeltaSinkConfig(path=path, **options))


# append


def test_append_with_the_same_key_twice_lands_the_rows_once(
    ctx: RunContext, tmp_path: Path
) -> None:
    delta = sink()
    first = delta.write(ctx, request(orders([1, 2, 3])))
    second = delta.write(ctx, request(orders([1, 2, 3])))

    assert (first.rows_written, first.skipped, first.version) == (3, False, 0)
    assert (second.rows_written, second.skipped, second.version) == (0, True, 0)
    assert [r["order_id"] for r in rows_of(tmp_path / "lake/orders", "order_id")] == [1, 2, 3]
    assert DeltaTable(str(tmp_path / "lake/orders")).version() == 0


def test_appends_with_different_keys_both_land(ctx: RunContext, tmp_path: Path) -> None:
    delta = sink()
    first = delta.write(ctx, request(orders([1, 2]), key="k1"))
    second = delta.write(ctx, request(orders([3]), key="k2"))

    assert (first.version, second.version, second.skipped) == (0, 1, False)
    assert [r["order_id"] for r in rows_of(tmp_path / "lake/orders", "order_id")] == [1, 2, 3]


def test_append_records_the_key_as_a_delta_app_transaction(ctx: RunContext, tmp_path: Path) -> None:
    sink().write(ctx, request(orders([1]), key="abc"))

    table = DeltaTable(str(tmp_path / "lake/orders"))
    assert table.transaction_version(app_id("orders", "abc")) == 1
    assert table.transaction_version(app_id("orders", "other")) is None


def test_append_creates_missing_parent_folders(ctx: RunContext, tmp_path: Path) -> None:
    result = sink("deep/er/lake/orders").write(ctx, request(orders([1])))

    assert result.uri == str(tmp_path / "deep/er/lake/orders")
    assert DeltaTable.is_deltatable(result.uri)


def test_append_with_a_new_nullable_column_evolves_the_schema(
    ctx: RunContext, tmp_path: Path
) -> None:
    delta = sink()
    delta.write(ctx, request(orders([1]), key="k1"))
    wider = orders([2]).append_column("channel", pa.array(["web"]))
    delta.write(ctx, request(wider, key="k2"))

    table = DeltaTable(str(tmp_path / "lake/orders"))
    assert table.schema().to_arrow().names == ["order_id", "day", "amount", "channel"]
    assert [
        (r["order_id"], r["channel"]) for r in rows_of(tmp_path / "lake/orders", "order_id")
    ] == [
        (1, None),
        (2, "web"),
    ]


def test_an_empty_append_still_commits_the_positions(ctx: RunContext) -> None:
    delta = sink()
    delta.write(ctx, request(orders([1]), key="k1", positions={"orders": {"files": ["a.csv"]}}))
    result = delta.write(
        ctx, request(orders([]), key="k2", positions={"orders": {"files": ["a.csv", "b.csv"]}})
    )

    assert (result.rows_written, result.version) == (0, 1)
    assert delta.committed_positions(ctx) == {"orders": {"files": ["a.csv", "b.csv"]}}


# commit metadata and positions


def test_every_commit_carries_metadata_positions_and_key(ctx: RunContext, tmp_path: Path) -> None:
    positions = {"orders": {"files": ["in/a.csv"]}}
    metadata = {"sluice.run_id": "run-7", "sluice.spec_hash": "abc123"}
    sink().write(ctx, request(orders([1]), key="key-9", positions=positions, metadata=metadata))

    commit = DeltaTable(str(tmp_path / "lake/orders")).history(1)[0]
    assert commit["sluice.run_id"] == "run-7"
    assert commit["sluice.spec_hash"] == "abc123"
    assert commit["sluice.pipeline"] == "orders"
    assert commit["sluice.idempotency_key"] == "key-9"
    assert json.loads(commit["sluice.positions"]) == positions
    assert commit["sluice.positions_complete"] == "true"


def test_committed_positions_are_the_newest_commit_of_the_pipeline(
    ctx: RunContext, make_ctx: Callable[..., RunContext]
) -> None:
    # A request's positions are the pipeline's whole positions: the newest commit wins.
    delta = sink()
    first = {"orders": {"files": ["a.csv", "b.csv"]}, "api": {"cursor": "2024-01-01"}}
    newest = {"orders": {"files": ["a.csv", "c.csv"]}, "api": {"cursor": "2024-01-02"}}
    delta.write(ctx, request(orders([1]), key="k1", positions=first))
    delta.write(ctx, request(orders([2]), key="k2", positions=newest))
    other = make_ctx(pipeline="returns")
    delta.write(other, request(orders([3]), key="k3", positions={"orders": {"files": ["z.csv"]}}))

    assert delta.committed_positions(ctx) == newest
    assert delta.committed_positions(other) == {"orders": {"files": ["z.csv"]}}


def _watched(make_ctx: Callable[..., RunContext]) -> tuple[RunContext, list[Any]]:
    """A context and the events it emits."""
    ctx, events = make_ctx(), []
    ctx.events.subscribe(events.append)
    return ctx, events


def _clean_log(path: Path, *, after: Callable[[], Any] | None = None) -> list[int]:
    """Cut the table's log at a fresh checkpoint, as Delta's cleanup does once commits are
    older than `delta.logRetentionDuration`; the versions left in its history."""
    table = DeltaTable(str(path))
    table.alter.set_table_properties({"delta.logRetentionDuration": "interval 0 seconds"})
    if after is not None:
        after()
    table = DeltaTable(str(path))
    table.create_checkpoint()
    table.cleanup_metadata()
    return [int(c["version"]) for c in DeltaTable(str(path)).history()]


def test_committed_positions_survive_the_log_cleanup_of_older_commits(
    make_ctx: Callable[..., RunContext], tmp_path: Path
) -> None:
    ctx, events = _watched(make_ctx)
    delta = sink()
    for index in range(1, 4):
        positions = {"orders": {"files": [f"{n}.csv" for n in range(index)]}}
        delta.write(ctx, request(orders([index]), key=f"k{index}", positions=positions))
    last = {"orders": {"files": ["0.csv", "1.csv", "2.csv", "3.csv"]}}

    left = _clean_log(
        tmp_path / "lake/orders",
        after=lambda: delta.write(ctx, request(orders([4]), key="k4", positions=last)),
    )

    assert left == [4]  # the commits of the earlier positions are gone
    assert delta.committed_positions(ctx) == last
    assert not [e for e in events if e.name == "positions_not_found"]


def test_a_log_cleaned_of_every_commit_of_the_pipeline_is_reported(
    make_ctx: Callable[..., RunContext], tmp_path: Path
) -> None:
    ctx, events = _watched(make_ctx)
    delta = sink()
    delta.write(ctx, request(orders([1]), key="k1", positions={"orders": {"files": ["a.csv"]}}))
    delta.write(ctx, request(orders([2]), key="k2", positions={"orders": {"files": ["b.csv"]}}))

    left = _clean_log(tmp_path / "lake/orders")  # its newest commit is the property change

    assert left == [2]
    assert delta.committed_positions(ctx) == {}
    [warning] = [e for e in events if e.name == "positions_not_found"]
    assert warning.fields["log_starts_at"] == 2
    assert "delta.logRetentionDuration" in warning.fields["hint"]


def test_a_commit_without_whole_positions_is_not_marked_and_reads_merge_past_it(
    ctx: RunContext, tmp_path: Path
) -> None:
    delta = sink()
    whole = {"orders": {"files": ["a.csv", "b.csv"]}}
    delta.write(ctx, request(orders([1]), key="k1", positions=whole))
    replayed = dataclasses.replace(request(orders([2]), key="k2"), positions_complete=False)
    delta.write(ctx, replayed)

    newest = DeltaTable(str(tmp_path / "lake/orders")).history(1)[0]
    assert "sluice.positions_complete" not in newest
    assert delta.committed_positions(ctx) == whole


def test_committed_positions_of_a_missing_table_are_empty(ctx: RunContext) -> None:
    assert sink("lake/nothing_here").committed_positions(ctx) == {}


def test_positions_that_are_not_json_are_refused_before_writing(
    ctx: RunContext, tmp_path: Path
) -> None:
    with pytest.raises(SinkError, match="JSON"):
        sink().write(ctx, request(orders([1]), positions={"api": {"cursor": date(2024, 1, 1)}}))

    assert not DeltaTable.is_deltatable(str(tmp_path / "lake/orders"))


# overwrite_partition


def test_overwrite_partition_replaces_only_the_partitions_in_the_data(
    ctx: RunContext, tmp_path: Path
) -> None:
    delta = sink(mode="overwrite_partition", partition_by=["day"])
    delta.write(
        ctx, request(pa.concat_tables([orders([1, 2], "2024-01-01"), orders([3], "2024-01-02")]))
    )

    results = [
        delta.write(ctx, request(orders([4, 5], "2024-01-02", amount=10.0), key="rerun"))
        for _ in range(3)
    ]

    assert [r.skipped for r in results] == [False, False, False]
    assert [r.rows_written for r in results] == [2, 2, 2]
    assert [
        (r["order_id"], r["day"], r["amount"])
        for r in rows_of(tmp_path / "lake/orders", "order_id")
    ] == [
        (1, "2024-01-01", 1.0),
        (2, "2024-01-01", 2.0),
        (4, "2024-01-02", 40.0),
        (5, "2024-01-02", 50.0),
    ]


def test_overwrite_partition_with_replace_where_uses_the_logical_date(
    ctx: RunContext, tmp_path: Path
) -> None:
    sink().write(
        ctx, request(pa.concat_tables([orders([1], "2024-01-01"), orders([2], "2024-01-02")]))
    )
    delta = sink(mode="overwrite_partition", replace_where="day = '{logical_date}'")

    for _ in range(3):
        delta.write(ctx, request(orders([7, 8], "2024-01-02"), key="daily"))

    assert [(r["order_id"], r["day"]) for r in rows_of(tmp_path / "lake/orders", "order_id")] == [
        (1, "2024-01-01"),
        (7, "2024-01-02"),
        (8, "2024-01-02"),
    ]


def test_overwrite_partition_refuses_rows_outside_replace_where(
    ctx: RunContext, tmp_path: Path
) -> None:
    delta = sink(mode="overwrite_partition", replace_where="day = '{logical_date}'")

    with pytest.raises(SinkError, match="replace_where") as caught:
        delta.write(ctx, request(orders([1], "2024-01-01")))

    assert "2024-01-02" in caught.value.message
    assert "Preview" not in caught.value.message


def test_overwrite_partition_with_empty_data_and_replace_where_clears_the_partition(
    ctx: RunContext, tmp_path: Path
) -> None:
    delta = sink(
        mode="overwrite_partition", replace_where="day = '{logical_date}'", partition_by=["day"]
    )
    seed = pa.concat_tables([orders([1], "2024-01-01"), orders([2, 3], "2024-01-02")])
    sink(partition_by=["day"]).write(ctx, request(seed))

    result = delta.write(ctx, request(orders([], "2024-01-02"), key="empty"))

    assert result.rows_written == 0
    assert [r["order_id"] for r in rows_of(tmp_path / "lake/orders", "order_id")] == [1]


def test_overwrite_partition_reruns_converge_on_multiple_partition_columns(
    ctx: RunContext, tmp_path: Path
) -> None:
    delta = sink(mode="overwrite_partition", partition_by=["region", "day"])
    data = pa.table(
        {
            "order_id": pa.array([1, 2, 3], pa.int64()),
            "region": pa.array(["eu", None, "us"]),
            "day": pa.array([date(2024, 1, 1), date(2024, 1, 1), date(2024, 1, 2)]),
        }
    )
    untouched = pa.table(
        {
            "order_id": pa.array([9], pa.int64()),
            "region": pa.array(["eu"]),
            "day": pa.array([date(2024, 1, 2)]),
        }
    )
    delta.write(ctx, request(untouched, key="first"))

    for _ in range(3):
        delta.write(ctx, request(data, key="again"))

    assert [r["order_id"] for r in rows_of(tmp_path / "lake/orders", "order_id")] == [1, 2, 3, 9]


def test_derived_replace_predicate_lists_the_partition_values_present() -> None:
    config = DeltaSinkConfig(path="x", mode="overwrite_partition", partition_by=["day"])
    data = orders([1, 2], "2024-01-02").append_column("x", pa.array([1, 2]))
    data = pa.concat_tables([data, orders([3], "it's").append_column("x", pa.array([3]))])

    assert replace_predicate(config, data, LOGICAL_DATE) == "\"day\" IN ('2024-01-02', 'it''s')"
    assert replace_predicate(config, data.slice(0, 0), LOGICAL_DATE) is None


def test_overwrite_partition_needs_partition_by_or_replace_where() -> None:
    with pytest.raises(ValidationError, match=r"needs partition_by \(.*\) or replace_where"):
        DeltaSinkConfig(path="x", mode="overwrite_partition")


# merge


def test_merge_creates_the_table_then_upserts_on_the_keys(ctx: RunContext, tmp_path: Path) -> None:
    delta = sink(mode="merge", merge_keys=["order_id"])
    first = delta.write(ctx, request(orders([1, 2]), key="m1"))
    changed = pa.table(
        {
            "order_id": pa.array([2, 3], pa.int64()),
            "day": pa.array(["2024-01-03", "2024-01-03"]),
            "amount": pa.array([20.0, 30.0]),
        }
    )
    second = delta.write(ctx, request(changed, key="m2"))
    third = delta.write(ctx, request(changed, key="m2"))

    assert (first.version, second.version, third.version) == (0, 1, 2)
    assert third.skipped is False
    assert [
        (r["order_id"], r["amount"]) for r in rows_of(tmp_path / "lake/orders", "order_id")
    ] == [
        (1, 1.0),
        (2, 20.0),
        (3, 30.0),
    ]
    assert DeltaTable(str(tmp_path / "lake/orders")).history(1)[0]["operation"] == "MERGE"


def test_merge_rejects_a_source_with_duplicate_keys(ctx: RunContext, tmp_path: Path) -> None:
    delta = sink(mode="merge", merge_keys=["order_id"])
    duplicated = orders([1, 1, 1, 2, 2, 3])

    with pytest.raises(SinkError, match=r"2 duplicate key\(s\) on \['order_id'\] \(5 rows\)"):
        delta.write(ctx, request(duplicated))

    assert not DeltaTable.is_deltatable(str(tmp_path / "lake/orders"))


def test_merge_rejects_null_keys(ctx: RunContext) -> None:
    delta = sink(mode="merge", merge_keys=["order_id", "day"])
    data = orders([1, 2]).set_column(1, "day", pa.array([None, "2024-01-01"]))

    with pytest.raises(SinkError, match=r"1 row\(s\) have a NULL merge key"):
        delta.write(ctx, request(data))


def test_merge_without_merge_keys_is_an_invalid_config() -> None:
    with pytest.raises(ValidationError, match="mode: merge needs merge_keys"):
        DeltaSinkConfig(path="x", mode="merge")


# storage


def test_written_files_are_zstd_compressed(ctx: RunContext, tmp_path: Path) -> None:
    sink(partition_by=["day"]).write(ctx, request(orders([1, 2, 3])))

    files = DeltaTable(str(tmp_path / "lake/orders")).file_uris()
    codecs = {
        pq.ParquetFile(f).metadata.row_group(0).column(c).compression
        for f in files
        for c in range(pq.ParquetFile(f).metadata.num_columns)
    }
    assert len(files) == 1
    assert codecs == {"ZSTD"}


def test_a_write_the_table_refuses_becomes_a_sink_error_saying_what_to_do(
    ctx: RunContext,
) -> None:
    sink(partition_by=["day"]).write(ctx, request(orders([1])))

    with pytest.raises(SinkError, match=r"Delta sink could not write to .*lake/orders") as caught:
        sink(partition_by=["order_id"]).write(ctx, request(orders([2]), key="k2"))

    assert "partitioning does not match" in caught.value.message
    assert "Check the path, partition_by" in caught.value.message
    assert caught.value.context["uri"].endswith("lake/orders")


def test_values_the_table_cannot_hold_are_refused_instead_of_truncated(
    ctx: RunContext, tmp_path: Path
) -> None:
    sink().write(ctx, request(orders([1])))
    fractional = orders([2]).set_column(0, "order_id", pa.array([2.5]))

    with pytest.raises(SinkError, match=r"column 'order_id' has type double, .* without loss"):
        sink().write(ctx, request(fractional, key="k2"))

    assert [r["order_id"] for r in rows_of(tmp_path / "lake/orders")] == [1]


def test_widening_values_the_table_can_hold_are_written(ctx: RunContext, tmp_path: Path) -> None:
    sink().write(ctx, request(orders([1])))
    narrower = orders([2]).set_column(0, "order_id", pa.array([2], pa.int32()))

    sink().write(ctx, request(narrower, key="k2"))

    assert [r["order_id"] for r in rows_of(tmp_path / "lake/orders", "order_id")] == [1, 2]


def test_replays_append_even_to_an_overwrite_partition_sink(
    ctx: RunContext, tmp_path: Path
) -> None:
    delta = sink(mode="overwrite_partition", partition_by=["day"])
    delta.write(ctx, request(orders([1, 2])))
    replay = WriteRequest(
        data=orders([3]), idempotency_key="replay-1", metadata={}, positions={}, append_only=True
    )

    delta.write(ctx, replay)
    again = delta.write(ctx, replay)

    assert again.skipped is True
    assert [r["order_id"] for r in rows_of(tmp_path / "lake/orders", "order_id")] == [1, 2, 3]


def test_storage_options_for_local_paths_are_none() -> None:
    assert delta_storage_options("/tmp/lake/t", {"region": "eu-west-1"}) is None
    assert delta_storage_options("file:///tmp/lake/t", {}) is None


def test_storage_options_map_short_keys_and_complete_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")

    from_env = delta_storage_options("s3://bucket/t", {})
    given = delta_storage_options(
        "s3://bucket/t",
        {
            "endpoint_url": "https://s3.example",
            "access_key_id": "k",
            "secret_access_key": "s",
            "region": "eu-west-1",
            "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
        },
    )

    assert from_env == {
        "AWS_REGION": "us-east-1",
        "conditional_put": "etag",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "env-key",
        "AWS_SECRET_ACCESS_KEY": "env-secret",
    }
    assert given == {
        "AWS_REGION": "eu-west-1",
        "conditional_put": "etag",
        "AWS_ENDPOINT_URL": "https://s3.example",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }


def test_arrow_filesystem_gives_the_path_without_scheme(tmp_path: Path) -> None:
    local, local_path = arrow_filesystem(str(tmp_path / "data"), {})
    remote, remote_path = arrow_filesystem(
        "s3://bucket/a/b/", {"endpoint_url": "http://127.0.0.1:1", "region": "eu-west-1"}
    )

    assert (local.type_name, local_path) == ("local", str(tmp_path / "data"))
    assert (remote.type_name, remote_path, remote.region) == ("s3", "bucket/a/b", "eu-west-1")
    with pytest.raises(ConfigError, match="Unsupported storage scheme 'gs://'"):
        arrow_filesystem("gs://bucket/x", {})


def test_configs_and_sinks_keep_credentials_out_of_their_repr() -> None:
    config = DeltaSinkConfig(path="s3://b/t", storage_options={"secret_access_key": "hush-1234"})

    assert "hush-1234" not in repr(config)
    assert "hush-1234" not in repr(DeltaSink(config))
    assert "s3://b/t" in repr(config)


def test_redact_removes_credentials_from_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-env-secret")
    options = {"secret_access_key": "spec-secret-value", "access_key_id": "AKIAEXAMPLE"}

    text = redact("denied for AKIAEXAMPLE with spec-secret-value", options)

    assert text == "denied for *** with ***"


def test_merge_positions_unions_files_and_prefers_newer_values() -> None:
    older = {"a": {"files": ["x"], "cursor": 1}, "b": 5}
    newer = {"a": {"files": ["y", "x"], "cursor": 2}, "b": 6, "c": {"offset": 3}}

    assert merge_positions(older, newer) == {
        "a": {"files": ["x", "y"], "cursor": 2},
        "b": 6,
        "c": {"offset": 3},
    }


def test_a_column_delta_cannot_store_is_named_with_the_cast_to_make(
    ctx: RunContext, tmp_path: Path
) -> None:
    data = pa.table(
        {
            "id": [1],
            "waited": pa.array([pa.scalar((0, 1, 0), pa.month_day_nano_interval())]),
            "opens": pa.array([36_000_000_000], pa.time64("us")),
            "spans": pa.array([[5]], pa.list_(pa.duration("s"))),
        }
    )

    with pytest.raises(SinkError) as raised:
        sink().write(ctx, request(data))

    message = str(raised.value)
    assert "waited (month_day_nano_interval)" in message and "opens (time64[us])" in message
    assert "spans" in message and "id (" not in message
    assert "CAST(x AS VARCHAR)" in message and "<unknown>" not in message
    assert not (tmp_path / "lake" / "orders").exists()
