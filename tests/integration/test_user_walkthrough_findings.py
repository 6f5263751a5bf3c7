"""Problems a new user met following the docs on a small project (orders tiered to cold,
a dead-letter table shared by two pipelines), each pinned by a test."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from click.testing import CliRunner
from deltalake import DeltaTable

from sluiceway.cli import main
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline

SUBJECT = "u4417"
ORDERS = (
    "order_id,user_id,amount,order_date\n"
    f"o1,u1,10.5,2025-01-10\n"
    f"o2,{SUBJECT},7.25,2024-01-12\n"
    "o3,u2,-5,2025-01-11\n"
)


def orders_spec(name: str = "orders") -> dict[str, Any]:
    columns = {
        "order_id": {"type": "string", "nullable": False},
        "user_id": {"type": "string"},
        "amount": {"type": "double", "min": 0},
        "order_date": {"type": "date"},
    }
    tiers = [{"name": "cold", "path": f"lake/{name}_cold", "after": "365d"}]
    return {
        "version": 1,
        "pipeline": name,
        "compliance": {"retention": "400d", "subject_key": "user_id"},
        "sources": {
            "orders": {
                "type": "files",
                "path": "data/",
                "format": "csv",
                "contract": {"columns": columns, "on_violation": "dead_letter"},
            }
        },
        "sinks": [
            {
                "type": "delta",
                "path": f"lake/{name}",
                "partition_by": ["order_date"],
                "mode": "overwrite_partition",
                "tiers": tiers,
            }
        ],
    }


def write_spec(root: Path, name: str) -> Path:
    spec = root / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(orders_spec(name), sort_keys=False))
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "orders.csv").write_text(ORDERS)
    return spec


def run(spec: Path, state: Path) -> None:
    options = RunOptions(logical_date=date(2025, 1, 15), base_dir=spec.parent, state_dir=state)
    result = run_pipeline(load_spec(spec), options)
    assert result.ok, result.error


@pytest.fixture
def sluice() -> Callable[..., Any]:
    def invoke(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


def files_holding(folder: Path, needle: str) -> list[str]:
    return [
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and needle.encode() in path.read_bytes()
    ]


def test_forget_after_a_tier_move_erases_the_subject_left_in_the_hot_tables_history(
    tmp_path: Path, sluice: Callable[..., Any]
) -> None:
    spec = write_spec(tmp_path, "orders")
    state = tmp_path / ".sluice"
    run(spec, state)
    moved = sluice("tier", str(spec), "--as-of", "2025-01-20", "--state-dir", str(state))
    assert moved.exit_code == 0, moved.output
    assert files_holding(tmp_path / "lake" / "orders", SUBJECT), "the hot history holds it"

    result = sluice(
        "forget", "--subject", f"user_id={SUBJECT}", str(spec), "--state-dir", str(state)
    )

    assert result.exit_code == 0, result.output
    assert "FAILED" not in result.output
    assert files_holding(tmp_path / "lake" / "orders", SUBJECT) == []
    assert files_holding(tmp_path / "lake" / "orders_cold", SUBJECT) == []


def test_cost_counts_only_a_pipelines_own_part_of_a_shared_dead_letter_table(
    tmp_path: Path, sluice: Callable[..., Any]
) -> None:
    state = tmp_path / ".sluice"
    specs = [write_spec(tmp_path, name) for name in ("orders", "returns")]
    for spec in specs:
        run(spec, state)
    letters = DeltaTable(str(state / "dead_letter"))
    total = sum(int(s) for s in pa.table(letters.get_add_actions(flatten=True))["size_bytes"])

    result = sluice("cost", *map(str, specs), "--format", "json", "--state-dir", str(state))

    assert result.exit_code == 0, result.output
    reports = json.loads(result.output)["pipelines"]
    shares = [t["bytes"] for r in reports for t in r["tables"] if t["label"] == "dead_letter"]
    assert len(shares) == 2
    assert all(0 < share < total for share in shares)
    assert sum(shares) == total


def test_dlq_names_a_contract_reject_by_its_row_not_as_a_line_of_the_file(
    tmp_path: Path, sluice: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(tmp_path, "orders")
    run(spec, tmp_path / ".sluice")
    monkeypatch.setenv("COLUMNS", "250")

    result = sluice("dlq", str(spec), "--state-dir", str(tmp_path / ".sluice"))

    assert result.exit_code == 0, result.output
    assert "orders.csv row 3" in result.output  # o3 is the third record, on line 4
    assert "orders.csv:3" not in result.output


def test_a_step_option_written_beside_the_step_says_to_move_it_inside(
    tmp_path: Path, sluice: Callable[..., Any]
) -> None:
    spec = tmp_path / "revenue.yaml"
    spec.write_text(
        "version: 1\npipeline: revenue\n"
        "sources:\n  orders: {type: files, path: data/, format: csv}\n"
        "steps:\n  - sql: SELECT user_id, sum(amount) AS total FROM input GROUP BY user_id\n"
        "    rows: filter\n"
        "sinks:\n  - {type: delta, path: lake/revenue}\n"
    )

    result = sluice("validate", str(spec))

    assert result.exit_code == 1, result.output
    assert "steps[0]" in result.output
    assert "'rows'" in result.output
    assert "- sql: {query: ..., rows: ...}" in result.output


def test_runs_fits_an_80_column_terminal_without_cutting_names_dates_or_statuses(
    tmp_path: Path, sluice: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(tmp_path, "customers")
    run(spec, tmp_path / ".sluice")
    monkeypatch.setenv("COLUMNS", "80")

    result = sluice("runs", "--state-dir", str(tmp_path / ".sluice"))

    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if "customers" in line]
    assert "2025-01-15" in line
    assert "succeeded" in line
    assert max(len(line) for line in result.output.splitlines()) <= 80


def test_scheduler_once_prints_what_a_freshness_alert_observed(
    tmp_path: Path, sluice: Callable[..., Any]
) -> None:
    spec = write_spec(tmp_path, "orders")
    data = yaml.safe_load(spec.read_text())
    data["sla"] = {"freshness": "1d"}
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / "sluice.yaml").write_text("version: 1\nproject: shop\npipelines: [orders.yaml]\n")
    run(spec, tmp_path / ".sluice")  # newest order_date partition: 2025-01-10

    result = sluice(
        "scheduler",
        "--once",
        "--now",
        "2025-01-18T12:00:00+00:00",
        "--project",
        str(tmp_path / "sluice.yaml"),
    )

    assert result.exit_code == 0, result.output
    assert "orders/freshness/sinks[0]" in result.output
    assert "older than its freshness SLA of 1d" in result.output
