"""overwrite_partition with a rerun that finds no rows: nothing is replaced, and the run
says so and how to empty the date instead (replace_where with the logical date)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from deltalake import DeltaTable

from sluiceway.core.events import Event
from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.runner import RunOptions, run_pipeline


def spec(replace_where: str | None) -> dict:
    sink = {
        "type": "delta",
        "path": "lake/t",
        "mode": "overwrite_partition",
        "partition_by": ["day"],
    }
    if replace_where:
        sink["replace_where"] = replace_where
    return {
        "version": 1,
        "pipeline": "daily",
        "sources": {"events": {"type": "files", "path": "in.csv", "format": "csv"}},
        "steps": [
            {
                "sql": {
                    "query": "SELECT *, logical_date() AS day FROM input WHERE amount <> 'skip'",
                    "rows": "filter",
                }
            }
        ],
        "sinks": [sink],
    }


def run(tmp_path: Path, rows: str, replace_where: str | None) -> list[Event]:
    (tmp_path / "in.csv").write_text("id,amount\n" + rows)
    seen: list[Event] = []
    options = RunOptions(
        logical_date=date(2025, 1, 15),
        base_dir=tmp_path,
        state_dir=tmp_path / ".sluice",
        subscribers=[seen.append],
    )
    assert run_pipeline(pipeline_from_dict(spec(replace_where)), options).ok
    return seen


def test_a_rerun_without_rows_replaces_nothing_and_says_so(tmp_path: Path) -> None:
    run(tmp_path, "1,5\n2,6\n", None)

    seen = run(tmp_path, "1,skip\n", None)

    assert DeltaTable(str(tmp_path / "lake" / "t")).to_pyarrow_table().num_rows == 2
    [said] = [e for e in seen if e.name == "nothing_replaced"]
    assert "replace_where" in said.fields["hint"]


def test_with_replace_where_a_rerun_without_rows_empties_the_date(tmp_path: Path) -> None:
    where = "day = '{logical_date}'"
    run(tmp_path, "1,5\n2,6\n", where)

    seen = run(tmp_path, "1,skip\n", where)

    assert DeltaTable(str(tmp_path / "lake" / "t")).to_pyarrow_table().num_rows == 0
    assert not [e for e in seen if e.name == "nothing_replaced"]
