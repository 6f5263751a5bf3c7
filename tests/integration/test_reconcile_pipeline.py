"""`reconcile` in real pipeline runs: the staged result against its own source, then the gate."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml
from deltalake import DeltaTable

from sluiceway.checks import reconcile  # noqa: F401  (registers `reconcile`)
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline

DAY = date(2025, 1, 15)
KEYS = {
    "SLUICE_HMAC_KEY": "integration-hmac-key",
    "SLUICE_MASK_SALT": "integration-salt",
    "SLUICE_ENCRYPTION_KEY": "5a" * 32,
}
ORDERS = (
    "order_id,status,amount\n"
    "o1,paid,10.5\n"
    "o2,paid,3.25\n"
    "o3,refunded,7\n"
    "o2,paid,3.25\n"  # a duplicate of o2: deduplicated
    "o4,paid,-1\n"  # amount below min: rejected by the contract
)


def spec(*, steps: list[Any], checks: list[Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "orders",
        "sources": {
            "orders": {
                "type": "files",
                "path": "data/orders.csv",
                "format": "csv",
                "contract": {
                    "columns": {
                        "order_id": {"type": "string", "nullable": False},
                        "status": {"type": "string"},
                        "amount": {"type": "double", "min": 0},
                    }
                },
            }
        },
        "steps": [{"dedup": {"keys": ["order_id"]}}, *steps],
        "checks": checks,
        "sinks": [{"type": "delta", "path": "lake/orders", "mode": "append"}],
        "dead_letter": {"path": "lake/dead_letter"},
    }


def run(folder: Path, pipeline: dict[str, Any]) -> RunResult:
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "orders.csv").write_text(ORDERS)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    options = RunOptions(
        logical_date=DAY, base_dir=folder, state_dir=folder / ".sluice", environ=dict(KEYS)
    )
    return run_pipeline(load_spec(path), options)


RECONCILE = {
    "reconcile": {
        "against": "orders",
        "keys": ["order_id"],
        # the source's valid rows still hold the duplicate of o2 that dedup removed
        "row_count": {"tolerance": 1},
        "sums": [{"column": "amount", "tolerance": 3.25}],
    }
}


def test_a_pipeline_reconciles_with_the_valid_rows_of_its_source(tmp_path: Path) -> None:
    result = run(tmp_path, spec(steps=[], checks=[RECONCILE]))

    assert result.ok, result.error
    [check] = result.checks
    assert (check.name, check.status, check.observed_value) == ("reconcile(orders)", "passed", 0)
    assert "row count 3 vs 4: difference -1" in check.message
    assert "3 of 3 matched" in check.message
    assert DeltaTable(str(tmp_path / "lake" / "orders")).to_pyarrow_table().num_rows == 3


def test_a_step_that_drops_rows_fails_the_key_reconciliation_and_publishes_nothing(
    tmp_path: Path,
) -> None:
    only_paid = {"sql": {"query": "SELECT * FROM input WHERE status = 'paid'", "rows": "filter"}}
    checks = [{"reconcile": {"against": "orders", "keys": ["order_id"]}}]

    result = run(tmp_path, spec(steps=[only_paid], checks=checks))

    assert result.status == "failed"
    assert "reconcile(orders)" in (result.error or "")
    assert not DeltaTable.is_deltatable(str(tmp_path / "lake" / "orders"))
    [check] = result.checks
    assert (check.status, check.observed_value, check.unexpected_count) == ("failed", 1, 1)
    assert "1 missing from the target, 0 not in 'orders', 2 of 3 matched" in check.message
    staged = Path(result.staged_path or "")
    assert sorted(pq.read_table(staged / "staged.parquet")["order_id"].to_pylist()) == ["o1", "o2"]
    [kept] = json.loads((staged / "checks.json").read_text())
    assert (kept["check"], kept["status"]) == ("reconcile", "failed")


def test_a_warn_reconciliation_records_the_mismatch_and_still_publishes(tmp_path: Path) -> None:
    only_paid = {"sql": {"query": "SELECT * FROM input WHERE status = 'paid'", "rows": "filter"}}
    checks = [{"reconcile": {"against": "orders", "keys": ["order_id"], "severity": "warn"}}]

    result = run(tmp_path, spec(steps=[only_paid], checks=checks))

    assert result.ok, result.error
    assert [(c.status, c.observed_value) for c in result.checks] == [("failed", 1)]
    assert DeltaTable(str(tmp_path / "lake" / "orders")).to_pyarrow_table().num_rows == 2


def test_an_unknown_source_name_stops_the_run_with_the_known_names(tmp_path: Path) -> None:
    checks = [{"reconcile": {"against": "ordrs", "row_count": {}}}]

    result = run(tmp_path, spec(steps=[], checks=checks))

    assert result.status == "failed"
    [check] = result.checks
    assert check.status == "error"
    assert "Did you mean 'orders'?" in (check.error or "")
    assert not DeltaTable.is_deltatable(str(tmp_path / "lake" / "orders"))
