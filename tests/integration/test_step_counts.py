"""Row-preserving steps are counted lazily; a broken promise is still caught and named."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from deltalake import DeltaTable

from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline


def write_orders(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "orders.csv").write_text("order_id,amount\n1,10\n2,20\n2,20\n3,30\n")


def run(tmp_path: Path, steps: list[dict[str, Any]]) -> RunResult:
    write_orders(tmp_path / "in")
    spec = {
        "version": 1,
        "pipeline": "orders",
        "sources": {"orders": {"type": "files", "path": "in/"}},
        "steps": steps,
        "sinks": [{"type": "delta", "path": "lake/orders", "mode": "append"}],
    }
    options = RunOptions(
        logical_date=date(2025, 1, 15), base_dir=tmp_path, state_dir=tmp_path / ".sluice"
    )
    return run_pipeline(pipeline_from_dict(spec), options)


def test_dedup_and_preserving_sql_steps_account_for_every_row(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        [
            {"dedup": ["order_id"]},
            {"sql": "SELECT *, CAST(amount AS INTEGER) * 2 AS doubled FROM input"},
        ],
    )

    assert result.ok, result.error
    acc = result.accounting
    assert (acc.rows_in, acc.rows_written, acc.rows_deduplicated) == (4, 3, 1)
    assert DeltaTable(str(tmp_path / "lake" / "orders")).to_pyarrow_table().num_rows == 3


def test_the_second_of_two_preserving_sql_steps_is_named_when_it_drops_rows(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        [
            {"sql": "SELECT *, 1 AS one FROM input"},
            {"sql": "SELECT * FROM input WHERE order_id <> '3'"},
        ],
    )

    assert result.status == "failed"
    assert "steps[1].sql" in (result.error or "")
    assert "changed the row count from 4 to 3" in (result.error or "")
    assert not (tmp_path / "lake" / "orders").exists()


def test_a_broken_promise_is_caught_before_the_next_counting_step_runs(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        [
            {"sql": "SELECT * FROM input JOIN (SELECT 1 AS k UNION ALL SELECT 2) ON true"},
            {"filter": "CAST(amount AS INTEGER) > 0"},
        ],
    )

    assert result.status == "failed"
    assert "steps[0].sql" in (result.error or "")
    assert "changed the row count from 4 to 8" in (result.error or "")
