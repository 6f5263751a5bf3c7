"""The `delta` source: one pipeline reads another pipeline's Delta table, pinned by version
or time, on real local tables."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable, write_deltalake

import sluiceway.sources.delta  # noqa: F401  (registers the source)
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline
from sluiceway.core.storage import delta_storage_options
from sluiceway.errors import SpecError

DAY = date(2025, 4, 1)
UPSTREAM_RUNS = 3
S3_ENV = {"AWS_ACCESS_KEY_ID": "delta-src-key", "AWS_SECRET_ACCESS_KEY": "delta-src-secret"}


def upstream_spec() -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "orders_bronze",
        "sources": {
            "orders": {
                "type": "files",
                "path": "data/",
                "format": "csv",
                "incremental": True,
                "contract": {
                    "columns": {
                        "order_id": {"type": "string", "nullable": False},
                        "amount": {"type": "double"},
                        "quantity": {"type": "integer"},
                    }
                },
            }
        },
        "sinks": [{"type": "delta", "path": "lake/bronze", "mode": "append"}],
        "dead_letter": {"path": "lake/dead_letter"},
    }


def downstream_spec(**source: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "orders_silver",
        "sources": {"bronze": {"type": "delta", "path": "../upstream/lake/bronze", **source}},
        "sinks": [{"type": "delta", "path": "lake/silver", "mode": "append"}],
        "dead_letter": {"path": "lake/dead_letter"},
    }


@dataclass(frozen=True)
class Lakes:
    """An upstream pipeline that ran UPSTREAM_RUNS times (table versions 0..2) and a
    folder for the downstream pipeline next to it."""

    upstream: Path
    downstream: Path
    commit_times: list[datetime]

    def run_downstream(self, spec: dict[str, Any], day: date = DAY) -> RunResult:
        path = self.downstream / "pipeline.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        options = RunOptions(
            logical_date=day, base_dir=self.downstream, state_dir=self.downstream / ".sluice"
        )
        return run_pipeline(load_spec(path), options)

    def silver(self) -> pa.Table:
        table = DeltaTable(str(self.downstream / "lake" / "silver"))
        return table.to_pyarrow_table().sort_by("order_id")


def run_upstream(folder: Path, spec: Path, index: int) -> None:
    csv = folder / "data" / f"orders-{index}.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    csv.write_text(f"order_id,amount,quantity\no{index}a,{index}.25,{index}\no{index}b,-1.5,7\n")
    options = RunOptions(logical_date=DAY, base_dir=folder, state_dir=folder / ".sluice")
    result = run_pipeline(load_spec(spec), options)
    assert result.ok, result.error


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lakes")
    upstream = root / "upstream"
    upstream.mkdir()
    spec = upstream / "pipeline.yaml"
    spec.write_text(yaml.safe_dump(upstream_spec(), sort_keys=False))
    for index in range(UPSTREAM_RUNS):
        run_upstream(upstream, spec, index)
    return root


@pytest.fixture
def lakes(built: Path, tmp_path: Path) -> Lakes:
    root = tmp_path / "lakes"
    shutil.copytree(built, root)
    (root / "downstream").mkdir()
    history = DeltaTable(str(root / "upstream" / "lake" / "bronze")).history()
    times = {c["version"]: datetime.fromtimestamp(c["timestamp"] / 1000, UTC) for c in history}
    return Lakes(root / "upstream", root / "downstream", [times[v] for v in sorted(times)])


def test_a_pipeline_reads_another_pipelines_table_at_a_pinned_version(lakes: Lakes) -> None:
    result = lakes.run_downstream(downstream_spec(version=1))

    assert result.ok, result.error
    assert result.accounting.rows_in == 4
    silver = lakes.silver()
    assert silver["order_id"].to_pylist() == ["o0a", "o0b", "o1a", "o1b"]
    assert silver["amount"].to_pylist() == [0.25, -1.5, 1.25, -1.5]
    assert silver.schema.field("amount").type == pa.float64()
    assert silver.schema.field("quantity").type == pa.int64()
    commit = DeltaTable(str(lakes.downstream / "lake" / "silver")).history(1)[0]
    assert commit["sluice.positions"] == '{"bronze": {"version": 1}}'


def test_without_a_pin_the_latest_version_is_read(lakes: Lakes) -> None:
    result = lakes.run_downstream(downstream_spec())

    assert result.ok, result.error
    assert result.accounting.rows_in == 2 * UPSTREAM_RUNS
    assert lakes.silver()["order_id"].to_pylist()[-2:] == ["o2a", "o2b"]


def test_a_rerun_of_the_same_version_is_skipped_and_a_new_version_is_not(lakes: Lakes) -> None:
    first = lakes.run_downstream(downstream_spec(version=0))
    again = lakes.run_downstream(downstream_spec(version=0))
    moved = lakes.run_downstream(downstream_spec(version=1))

    assert [s.skipped for s in first.sinks] == [False]
    assert [s.skipped for s in again.sinks] == [True]
    assert [s.skipped for s in moved.sinks] == [False]
    assert len(lakes.silver()) == 2 + 4


def test_a_timestamp_reads_the_version_current_at_that_time(lakes: Lakes) -> None:
    moment = lakes.commit_times[1].isoformat()

    result = lakes.run_downstream(downstream_spec(timestamp=moment))

    assert result.ok, result.error
    assert lakes.silver()["order_id"].to_pylist() == ["o0a", "o0b", "o1a", "o1b"]


def test_columns_limits_what_is_read(lakes: Lakes) -> None:
    result = lakes.run_downstream(downstream_spec(version=0, columns=["order_id", "quantity"]))

    assert result.ok, result.error
    assert lakes.silver().column_names == ["order_id", "quantity"]


def test_a_contract_on_the_delta_source_dead_letters_rows_with_table_and_row(
    lakes: Lakes,
) -> None:
    spec = downstream_spec(
        version=0,
        contract={"columns": {"amount": {"type": "double", "min": 0}}},
    )

    result = lakes.run_downstream(spec)

    assert result.ok, result.error
    assert (result.accounting.rows_written, result.accounting.rows_rejected) == (1, 1)
    letters = DeltaTable(str(lakes.downstream / "lake" / "dead_letter")).to_pyarrow_table()
    uri = (lakes.upstream / "lake" / "bronze").resolve()
    assert letters.select(["file", "row", "source"]).to_pylist() == [
        {"file": f"{uri}@v0", "row": 2, "source": "bronze"}
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"version": 9}, "version 9 does not exist in"),
        ({"columns": ["order_id", "price"]}, "column(s) ['price'] are not in"),
        ({"path": "../nowhere"}, "no Delta table at '../nowhere'"),
        ({"timestamp": "2000-01-01T00:00"}, "has no version at or before timestamp 2000-01-01"),
    ],
)
def test_a_bad_table_version_or_column_fails_the_run_with_a_clear_message(
    lakes: Lakes, source: dict[str, Any], message: str
) -> None:
    result = lakes.run_downstream(downstream_spec(**source))

    assert result.status == "failed"
    assert result.error is not None
    assert message in result.error
    assert "delta source bronze" in result.error


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"version": 1, "timestamp": "2025-01-01T00:00:00"}, "set version or timestamp, not both"),
        ({"timestamp": "last tuesday"}, "timestamp 'last tuesday' is not an ISO 8601 time"),
        ({"version": -1}, "greater than or equal to 0"),
    ],
)
def test_a_bad_pin_is_a_spec_problem(lakes: Lakes, source: dict[str, Any], message: str) -> None:
    path = lakes.downstream / "pipeline.yaml"
    path.write_text(yaml.safe_dump(downstream_spec(**source), sort_keys=False))

    with pytest.raises(SpecError) as caught:
        load_spec(path)

    assert message in str(caught.value)
    assert "sources.bronze" in str(caught.value)


def test_a_table_on_s3_is_read_at_a_pinned_version(
    lakes: Lakes,
    s3_endpoint: str,
    make_bucket: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    uri = f"s3://{make_bucket('sluice-delta-src')}/lake/bronze"
    options = delta_storage_options(uri, {"endpoint_url": s3_endpoint})
    for index in range(2):
        rows = pa.table({"order_id": [f"s{index}"], "amount": [float(index)]})
        write_deltalake(uri, rows, mode="append", storage_options=options)
    spec = downstream_spec(version=0, storage_options={"endpoint_url": s3_endpoint})
    spec["sources"]["bronze"]["path"] = uri

    result = lakes.run_downstream(spec)

    assert result.ok, result.error
    assert lakes.silver().to_pylist() == [{"order_id": "s0", "amount": 0.0}]
