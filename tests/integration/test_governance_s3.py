"""`sluice retention` and `sluice cost` on tables in the S3-compatible server (start it with
`bash scripts/services/moto.sh`): old partitions leave the bucket's table and its
dead letters, and the bucket's bytes are priced as object storage."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from deltalake import DeltaTable

from sluiceway.cli import main
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.core.storage import delta_storage_options
from sluiceway.ops.audit import AuditLog

pytestmark = pytest.mark.integration

ENV = {
    "AWS_ACCESS_KEY_ID": "governance-key",
    "AWS_SECRET_ACCESS_KEY": "governance-secret",
    "AWS_REGION": "us-east-1",
}
DAYS = (date(2025, 1, 10), date(2025, 3, 25))
HOT_PRICE = 7.0


@pytest.fixture
def lake(
    tmp_path: Path,
    s3_endpoint: str,
    make_bucket: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    bucket = make_bucket("governance")
    options = {"endpoint_url": s3_endpoint}
    spec = {
        "version": 1,
        "pipeline": "orders_s3",
        "sources": {
            "orders": {
                "type": "files",
                "path": "data/",
                "format": "csv",
                "incremental": True,
                "contract": {
                    "columns": {
                        "order_id": {"type": "string", "nullable": False},
                        "amount": {"type": "double", "min": 0},
                        "order_date": {"type": "date"},
                    }
                },
            }
        },
        "sinks": [
            {
                "type": "delta",
                "path": f"s3://{bucket}/orders",
                "storage_options": options,
                "partition_by": ["order_date"],
            }
        ],
        "dead_letter": {"path": f"s3://{bucket}/dead_letter", "storage_options": options},
        "compliance": {"retention": "30d"},
        "cost": {"prices": {"storage_hot_gb_month": HOT_PRICE}},
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (tmp_path / "data").mkdir()
    for index, day in enumerate(DAYS):
        lines = [f"o{index}-{n},{n + 1}.5,{day}" for n in range(3)] + [f"o{index}-bad,-1,{day}"]
        (tmp_path / "data" / f"orders-{index}.csv").write_text(
            "order_id,amount,order_date\n" + "\n".join(lines) + "\n"
        )
        options_ = RunOptions(logical_date=day, base_dir=tmp_path, state_dir=tmp_path / ".sluice")
        result = run_pipeline(load_spec(tmp_path / "pipeline.yaml"), options_)
        assert result.ok, result.error
    return {"folder": tmp_path, "bucket": bucket, "options": options}


def table(lake: dict[str, Any], name: str) -> DeltaTable:
    uri = f"s3://{lake['bucket']}/{name}"
    return DeltaTable(uri, storage_options=delta_storage_options(uri, lake["options"]))


def sluice(lake: dict[str, Any], *args: str) -> Any:
    folder = lake["folder"]
    return CliRunner().invoke(
        main,
        [*args, str(folder / "pipeline.yaml"), "--state-dir", str(folder / ".sluice")],
        env={"COLUMNS": "300"},
        catch_exceptions=False,
    )


def test_retention_deletes_old_partitions_from_tables_in_a_bucket(lake: dict[str, Any]) -> None:
    assert table(lake, "orders").to_pyarrow_table().num_rows == 6

    result = sluice(lake, "retention", "--as-of", "2025-04-01")

    assert result.exit_code == 0, result.output
    orders = table(lake, "orders").to_pyarrow_table()
    assert set(orders["order_date"].to_pylist()) == {DAYS[1]}
    assert orders.num_rows == 3
    dead = table(lake, "dead_letter").to_pyarrow_table()
    assert set(dead["logical_date"].to_pylist()) == {DAYS[1]}
    (entry,) = AuditLog(lake["folder"] / ".sluice").entries(action="retention")
    assert entry.rows_affected == 4  # 3 rows and 1 dead letter of the old date


def test_cost_prices_a_table_in_a_bucket_as_object_storage(lake: dict[str, Any]) -> None:
    result = sluice(lake, "cost", "--format", "json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["pipelines"][0]
    rows = {row["label"]: row for row in report["tables"]}
    live = sum(table(lake, "orders").get_add_actions(flatten=True).column("size_bytes").to_pylist())
    assert live > 0
    assert rows["sinks[0]"]["bytes"] == live
    assert rows["sinks[0]"]["storage_per_month"] == pytest.approx(live / 1e9 * HOT_PRICE)
    assert rows["dead_letter"]["bytes"] > 0
