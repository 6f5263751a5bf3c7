"""Bugs found reviewing the performance changes, each shown with real data on real Delta tables."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline


def run(tmp_path: Path, spec: dict[str, Any]) -> RunResult:
    options = RunOptions(
        logical_date=date(2025, 1, 15),
        base_dir=tmp_path,
        state_dir=tmp_path / ".sluice",
        environ={},
    )
    return run_pipeline(pipeline_from_dict(spec), options)


def test_a_preserving_sql_step_that_drops_a_row_fails_even_when_the_next_one_adds_a_row(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "orders.csv").write_text("order_id,amount\n1,10\n2,20\n3,30\n")
    spec = {
        "version": 1,
        "pipeline": "orders",
        "sources": {"orders": {"type": "files", "path": "in/"}},
        "steps": [
            {"sql": "SELECT * FROM input WHERE order_id <> '3'"},
            {"sql": "SELECT * FROM input UNION ALL SELECT * FROM input WHERE order_id = '1'"},
        ],
        "sinks": [{"type": "delta", "path": "lake/orders", "mode": "append"}],
    }

    result = run(tmp_path, spec)

    assert result.status == "failed"
    assert "steps[0].sql" in (result.error or "")
    assert "from 3 to 2" in (result.error or "")
    assert not (tmp_path / "lake" / "orders").exists()
