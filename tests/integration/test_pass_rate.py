"""`quality.pass_rate` gates a run on the share of rows that pass the contract; a run that
rejects every row warns even without it (a wrong delimiter, a renamed header)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from deltalake import DeltaTable

from sluiceway.core.events import Event
from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.results import RunResult
from sluiceway.core.runner import RunOptions, run_pipeline

GOOD = "order_id,amount\n1,2.5\n2,3.0\n3,-1\n4,1.0\n"
SEMICOLONS = "order_id;amount\n1;2.5\n2;3.0\n3;1.0\n"


def run(tmp_path: Path, data: str, quality: dict[str, Any] | None) -> tuple[RunResult, list[Event]]:
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in" / "orders.csv").write_text(data)
    spec: dict[str, Any] = {
        "version": 1,
        "pipeline": "orders",
        "sources": {
            "orders": {
                "type": "files",
                "path": "in/",
                "contract": {
                    "columns": {
                        "order_id": {"type": "integer", "required": True},
                        "amount": {"type": "double", "min": 0},
                    },
                    "on_violation": "dead_letter",
                },
            }
        },
        "sinks": [{"type": "delta", "path": "lake/orders"}],
    }
    if quality is not None:
        spec["quality"] = quality
    events: list[Event] = []
    options = RunOptions(
        logical_date=date(2025, 1, 15),
        base_dir=tmp_path,
        state_dir=tmp_path / ".sluice",
        subscribers=[events.append],
    )
    return run_pipeline(pipeline_from_dict(spec), options), events


def test_a_run_below_its_pass_rate_publishes_nothing_and_says_why(tmp_path: Path) -> None:
    result, _ = run(tmp_path, SEMICOLONS, {"pass_rate": 0.9})

    assert result.status == "failed"
    assert "3 of 3 rows were rejected" in (result.error or "")
    assert "below quality.pass_rate 90.0%" in (result.error or "")
    assert "order_id.missing_column" in (result.error or "")
    assert not DeltaTable.is_deltatable(str(tmp_path / "lake/orders"))
    assert result.dead_letter_rows == 3  # the rejected rows are kept all the same


def test_a_run_at_or_above_its_pass_rate_publishes(tmp_path: Path) -> None:
    result, events = run(tmp_path, GOOD, {"pass_rate": 0.75})

    assert result.ok, result.error
    assert (result.accounting.rows_written, result.accounting.rows_rejected) == (3, 1)
    assert not [e for e in events if e.name == "all_rows_rejected"]


def test_a_run_that_rejects_every_row_warns_without_a_pass_rate(tmp_path: Path) -> None:
    result, events = run(tmp_path, SEMICOLONS, None)

    assert result.ok
    [warning] = [e for e in events if e.name == "all_rows_rejected"]
    assert "wrong delimiter" in warning.fields["hint"]
    assert "3 of 3 rows were rejected" in warning.fields["hint"]
