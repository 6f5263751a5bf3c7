"""Each audited run writes its check results, with a sample of unexpected values, as JSON."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from deltalake import DeltaTable

from sluiceway.checks.table import check_id
from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.results import RunResult
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.core.runstore import RunStore

KEYS = {
    "SLUICE_HMAC_KEY": "hmac-key",
    "SLUICE_MASK_SALT": "salt",
    "SLUICE_ENCRYPTION_KEY": "2" * 64,
}
AMOUNTS = [10, 150, 20, -5, 150, 30, 999, 40]


def write_orders(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["order_id,amount,email"] + [
        f"o{i},{amount},buyer{i}@example.com" for i, amount in enumerate(AMOUNTS)
    ]
    (folder / "orders.csv").write_text("\n".join(lines) + "\n")


def run(tmp_path: Path, checks: list[dict[str, Any]]) -> tuple[RunResult, dict[str, Any]]:
    write_orders(tmp_path / "in")
    spec = {
        "version": 1,
        "pipeline": "orders",
        "sources": {"orders": {"type": "files", "path": "in/"}},
        "steps": [{"sql": "SELECT * REPLACE (CAST(amount AS INTEGER) AS amount) FROM input"}],
        "pii": {"email": "hmac"},
        "checks": checks,
        "sinks": [{"type": "delta", "path": "lake/orders", "mode": "append"}],
    }
    pipeline = pipeline_from_dict(spec)
    options = RunOptions(
        logical_date=date(2025, 1, 15),
        base_dir=tmp_path,
        state_dir=tmp_path / ".sluice",
        environ=KEYS,
    )
    result = run_pipeline(pipeline, options)
    assert result.results_path is not None, result.error
    return result, json.loads(Path(result.results_path).read_text())


def test_a_failing_between_check_records_its_fingerprint_counts_and_out_of_range_values(
    tmp_path: Path,
) -> None:
    result, document = run(
        tmp_path, [{"between": {"column": "amount", "min_value": 0, "max_value": 100}}]
    )

    assert result.status == "failed"
    expected_path = tmp_path / ".sluice" / "results" / f"{result.run_id}.json"
    assert Path(result.results_path or "") == expected_path.resolve()
    assert document["version"] == 1
    assert (document["run_id"], document["status"]) == (result.run_id, "failed")
    assert document["logical_date"] == "2025-01-15"
    [check] = document["checks"]
    config = pipeline_from_dict(
        {
            "version": 1,
            "pipeline": "orders",
            "sources": {"orders": {"type": "files", "path": "in/"}},
            "checks": [{"between": {"column": "amount", "min_value": 0, "max_value": 100}}],
            "sinks": [{"type": "delta", "path": "lake/orders"}],
        }
    ).checks[0]
    assert check["check_id"] == check_id(config)
    assert (check["status"], check["unexpected_count"], check["rows_checked"]) == ("failed", 4, 8)
    assert check["unexpected_percent"] == 50.0
    assert sorted(check["unexpected_sample"]) == ["-5", "150", "999"]
    assert document["statements"] == 2


def test_a_passing_run_adds_no_statement_beyond_the_fused_check_query(tmp_path: Path) -> None:
    checks = [
        {"not_null": {"column": "order_id"}},
        {"unique": {"column": "order_id"}},
        {"between": {"column": "amount", "min_value": -10, "max_value": 1000}},
    ]

    result, document = run(tmp_path, checks)

    assert result.ok, result.error
    assert document["status"] == "succeeded"
    assert document["statements"] == 1
    assert [c["status"] for c in document["checks"]] == ["passed"] * 3
    assert [c["unexpected_sample"] for c in document["checks"]] == [[], [], []]
    record = RunStore(tmp_path / ".sluice" / "runs.db").get(result.run_id)
    assert record is not None and record.details["results_path"] == result.results_path


def test_a_failing_in_set_check_on_a_pii_column_samples_masked_tokens_only(
    tmp_path: Path,
) -> None:
    checks = [{"in_set": {"column": "email", "value_set": ["nobody"], "severity": "warn"}}]

    result, document = run(tmp_path, checks)

    assert result.ok, result.error
    [check] = document["checks"]
    assert check["status"] == "failed"
    published = DeltaTable(str(tmp_path / "lake" / "orders")).to_pyarrow_table()
    assert sorted(check["unexpected_sample"]) == sorted(published["email"].to_pylist())
    text = Path(result.results_path or "").read_text()
    clear = [f"buyer{i}@example.com" for i in range(len(AMOUNTS))]
    assert [email for email in clear if email in text] == []
    assert "@" not in text
