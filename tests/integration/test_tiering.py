"""`sluice tier` on real local Delta tables: partitions land where their age says, readers
see one table at every moment, and a SIGKILL at any step boundary loses or duplicates no row."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from click.testing import CliRunner
from deltalake import DeltaTable, write_deltalake

import sluiceway.sources.delta  # noqa: F401  (registers the source)
from sluiceway.cli_tier import tier
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.ops.audit import AuditLog
from sluiceway.ops.tier_read import MANIFEST, MOVE_COLUMN, declared_tiers, read_tiers
from sluiceway.ops.tiering import FAULT_ENV, read_tiered, tier_layout

pytestmark = pytest.mark.integration

AS_OF = date(2026, 1, 31)
DAYS = [AS_OF - timedelta(days=n) for n in range(0, 401, 10)]
ROWS_PER_DAY = 3
COMMITS = 4


def lake_spec(cold_path: str = "lake/cold", cold_options: dict[str, str] | None = None) -> dict:
    cold: dict[str, Any] = {"name": "cold", "path": cold_path, "after": "365d"}
    if cold_options:
        cold["storage_options"] = cold_options
    return {
        "version": 1,
        "pipeline": "events_lake",
        "sources": {"events": {"type": "files", "path": "data/", "format": "csv"}},
        "sinks": [
            {
                "type": "delta",
                "path": "lake/hot",
                "partition_by": ["event_date"],
                "tiers": [
                    {"name": "warm", "path": "lake/warm", "after": "30d", "compression_level": 3},
                    cold,
                ],
            }
        ],
        "dead_letter": {"path": "lake/dead_letter"},
    }


def events(days: list[date], start_id: int) -> pa.Table:
    ids, dates = [], []
    for day in days:
        for _ in range(ROWS_PER_DAY):
            ids.append(start_id + len(ids))
            dates.append(day)
    return pa.table(
        {
            "event_id": pa.array(ids, pa.int64()),
            "event_date": pa.array(dates, pa.date32()),
            "amount": pa.array([i * 0.5 for i in ids], pa.float64()),
        }
    )


def make_lake(folder: Path, **spec: Any) -> Path:
    """A spec and a hot table written in COMMITS appends, dates across 400 days."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(lake_spec(**spec), sort_keys=False))
    for commit in range(COMMITS):
        chunk = DAYS[commit::COMMITS]
        write_deltalake(
            folder / "lake/hot",
            events(chunk, commit * 10_000),
            partition_by=["event_date"],
            mode="append",
        )
    return path


def rows_of(table: pa.Table) -> Counter[tuple[Any, ...]]:
    names = ["event_id", "event_date", "amount"]
    return Counter(zip(*(table[n].to_pylist() for n in names), strict=True))


def tiered_rows(spec: Path) -> Counter[tuple[Any, ...]]:
    sink = load_spec(spec).sinks[0]
    table = read_tiered(sink, spec.parent)  # type: ignore[arg-type]
    assert MOVE_COLUMN not in table.column_names
    return rows_of(table)


def original_rows() -> Counter[tuple[Any, ...]]:
    every = [events(DAYS[c::COMMITS], c * 10_000) for c in range(COMMITS)]
    return rows_of(pa.concat_tables(every))


def tier_cli(spec: Path, *args: str) -> Any:
    state = spec.parent / ".sluice"
    result = CliRunner().invoke(tier, [str(spec), "--state-dir", str(state), *args])
    assert result.exit_code == 0, result.output
    return result


def tier_process(spec: Path, as_of: date, fault: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    command = [sys.executable, "-c", "from sluiceway.cli import entry; entry()", "tier", str(spec)]
    command += ["--as-of", as_of.isoformat(), "--state-dir", str(spec.parent / ".sluice")]
    return subprocess.run(command, env=env, capture_output=True, timeout=300).returncode


def partitions(uri: Path) -> set[date]:
    if not DeltaTable.is_deltatable(str(uri)):
        return set()
    actions = pa.table(DeltaTable(str(uri)).get_add_actions(flatten=True))
    return set(actions["partition.event_date"].to_pylist())


def expected_tier(day: date, as_of: date) -> str:
    if day < as_of - timedelta(days=365):
        return "cold"
    return "warm" if day < as_of - timedelta(days=30) else "hot"


def assert_placed(spec: Path, as_of: date) -> None:
    lake = spec.parent / "lake"
    for name in ("hot", "warm", "cold"):
        wanted = {d for d in DAYS if expected_tier(d, as_of) == name}
        assert partitions(lake / name) == wanted, name


def test_each_partition_moves_to_the_tier_its_age_says_and_no_row_changes(tmp_path: Path) -> None:
    spec = make_lake(tmp_path)
    result = tier_cli(spec, "--as-of", AS_OF.isoformat())
    assert_placed(spec, AS_OF)
    assert tiered_rows(spec) == original_rows()
    assert "partition(s) moved" in result.output
    cold = DeltaTable(str(tmp_path / "lake/cold")).to_pyarrow_table()
    assert cold[MOVE_COLUMN].null_count == 0


def test_a_second_run_moves_nothing(tmp_path: Path) -> None:
    spec = make_lake(tmp_path)
    tier_cli(spec, "--as-of", AS_OF.isoformat())
    versions = [DeltaTable(str(tmp_path / "lake" / n)).version() for n in ("hot", "warm", "cold")]
    result = tier_cli(spec, "--as-of", AS_OF.isoformat())
    again = [DeltaTable(str(tmp_path / "lake" / n)).version() for n in ("hot", "warm", "cold")]
    assert again == versions
    assert "no partition to move" in result.output
    assert tiered_rows(spec) == original_rows()


def test_dry_run_lists_the_moves_and_moves_nothing(tmp_path: Path) -> None:
    spec = make_lake(tmp_path)
    result = tier_cli(spec, "--as-of", AS_OF.isoformat(), "--dry-run")
    assert "would move" in result.output
    assert str(DAYS[-1]) in result.output
    assert partitions(tmp_path / "lake/hot") == set(DAYS)
    assert not (tmp_path / "lake/warm").exists()
    entry = next(AuditLog(tmp_path / ".sluice").entries(action="tier"))
    assert entry.details["dry_run"] is True
    assert entry.rows_affected == 0


def test_every_run_writes_an_audit_entry_with_the_rows_moved(tmp_path: Path) -> None:
    spec = make_lake(tmp_path)
    tier_cli(spec, "--as-of", AS_OF.isoformat())
    entries = list(AuditLog(tmp_path / ".sluice").entries(action="tier"))
    moved = sum(1 for d in DAYS if expected_tier(d, AS_OF) != "hot") * ROWS_PER_DAY
    assert len(entries) == 1
    assert entries[0].rows_affected == moved
    assert entries[0].pipeline == "events_lake"
    assert {m["to"] for m in entries[0].details["moves"]} == {"warm", "cold"}


def test_warm_partitions_move_on_to_cold_as_they_age(tmp_path: Path) -> None:
    spec = make_lake(tmp_path)
    earlier = AS_OF - timedelta(days=120)
    tier_cli(spec, "--as-of", earlier.isoformat())
    assert tiered_rows(spec) == original_rows()
    tier_cli(spec, "--as-of", AS_OF.isoformat())
    assert_placed(spec, AS_OF)
    assert tiered_rows(spec) == original_rows()


def test_late_rows_of_a_moved_partition_stay_visible_and_move_next_time(tmp_path: Path) -> None:
    spec = make_lake(tmp_path)
    tier_cli(spec, "--as-of", AS_OF.isoformat())
    late = events([DAYS[-1]], 90_000)
    write_deltalake(tmp_path / "lake/hot", late, mode="append")
    expected = original_rows() + rows_of(late)
    assert tiered_rows(spec) == expected
    tier_cli(spec, "--as-of", AS_OF.isoformat())
    assert DAYS[-1] not in partitions(tmp_path / "lake/hot")
    assert tiered_rows(spec) == expected


def test_a_delta_source_reads_the_tiered_table_as_one_table(tmp_path: Path) -> None:
    spec = make_lake(tmp_path / "up")
    tier_cli(spec, "--as-of", AS_OF.isoformat())
    down = tmp_path / "down"
    down.mkdir()
    reader = {
        "version": 1,
        "pipeline": "events_copy",
        "sources": {"events": {"type": "delta", "path": "../up/lake/hot"}},
        "sinks": [{"type": "delta", "path": "lake/copy", "mode": "append"}],
        "dead_letter": {"path": "lake/dead_letter"},
    }
    (down / "pipeline.yaml").write_text(yaml.safe_dump(reader))
    options = RunOptions(logical_date=AS_OF, base_dir=down, state_dir=down / ".sluice")
    result = run_pipeline(load_spec(down / "pipeline.yaml"), options)
    assert result.status == "succeeded", result.error
    copy = DeltaTable(str(down / "lake/copy")).to_pyarrow_table()
    assert MOVE_COLUMN not in copy.column_names
    assert rows_of(copy) == original_rows()


@pytest.mark.parametrize(
    "faults",
    [
        ["after_copy:1"],
        ["after_delete:1"],
        ["after_manifest:2"],
        ["after_copy:7", "after_delete:3"],
        ["after_delete:20", "after_copy:1", "after_copy:2"],
    ],
)
def test_a_sigkill_at_any_step_loses_and_duplicates_no_row(
    tmp_path: Path, faults: list[str]
) -> None:
    spec = make_lake(tmp_path)
    for fault in faults:
        assert tier_process(spec, AS_OF, fault) == -9, fault
        assert tiered_rows(spec) == original_rows(), fault
    assert tier_process(spec, AS_OF) == 0
    assert_placed(spec, AS_OF)
    assert tiered_rows(spec) == original_rows()
    assert (tmp_path / "lake/cold" / MANIFEST).exists()


def colder_rows(folder: Path) -> int:
    tables = [folder / "lake" / name for name in ("warm", "cold")]
    return sum(DeltaTable(str(t)).to_pyarrow_table().num_rows for t in tables if t.exists())


def test_a_kill_between_copy_and_delete_does_not_copy_twice(tmp_path: Path) -> None:
    spec = make_lake(tmp_path)
    assert tier_process(spec, AS_OF, "after_copy:1") == -9
    assert colder_rows(tmp_path) == ROWS_PER_DAY
    assert tier_process(spec, AS_OF) == 0
    moved_days = sum(1 for d in DAYS if expected_tier(d, AS_OF) != "hot")
    assert colder_rows(tmp_path) == moved_days * ROWS_PER_DAY


def test_every_pinned_hot_version_reads_the_whole_table_as_it_was_then(tmp_path: Path) -> None:
    spec = make_lake(tmp_path)
    tier_cli(spec, "--as-of", (AS_OF - timedelta(days=120)).isoformat())
    tier_cli(spec, "--as-of", AS_OF.isoformat())
    sink = load_spec(spec).sinks[0]
    layout = tier_layout(sink, spec.parent)  # type: ignore[arg-type]
    latest = DeltaTable(layout.hot.uri).version()
    tiers = declared_tiers(DeltaTable(layout.hot.uri))
    assert latest > COMMITS + 10
    for version in range(COMMITS - 1, latest + 1):
        read = read_tiers(layout.hot, tiers, version=version)
        assert rows_of(read.reader.read_all()) == original_rows(), version
        assert read.versions["hot"] == version


def test_a_delta_source_pinned_to_a_version_before_tiering_reads_the_hot_table_then(
    tmp_path: Path,
) -> None:
    spec = make_lake(tmp_path / "up")
    tier_cli(spec, "--as-of", AS_OF.isoformat())
    down = tmp_path / "down"
    down.mkdir()
    reader = {
        "version": 1,
        "pipeline": "events_copy",
        "sources": {"events": {"type": "delta", "path": "../up/lake/hot", "version": 1}},
        "sinks": [{"type": "delta", "path": "lake/copy", "mode": "append"}],
        "dead_letter": {"path": "lake/dead_letter"},
    }
    (down / "pipeline.yaml").write_text(yaml.safe_dump(reader))
    options = RunOptions(logical_date=AS_OF, base_dir=down, state_dir=down / ".sluice")
    result = run_pipeline(load_spec(down / "pipeline.yaml"), options)
    assert result.status == "succeeded", result.error
    copy = DeltaTable(str(down / "lake/copy")).to_pyarrow_table()
    first_two = [events(DAYS[c::COMMITS], c * 10_000) for c in range(2)]
    assert rows_of(copy) == rows_of(pa.concat_tables(first_two))


def test_a_sink_without_tiers_is_a_usage_error_saying_what_to_add(tmp_path: Path) -> None:
    spec = lake_spec()
    spec["sinks"][0].pop("tiers")
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(tier, [str(path), "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "no delta sink with `tiers:`" in result.output
    assert "Traceback" not in result.output
