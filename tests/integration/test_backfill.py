"""`sluice backfill` on a real project: one run per logical date into an
overwrite_partition Delta table, reprocess selection from the run store, a failing date,
a dry run, and a range-capable pipeline that backfills in one run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deltalake import DeltaTable

from sluiceway.core.runstore import RunStore

SLUICE = [sys.executable, "-c", "from sluiceway.cli import entry; entry()"]
DATES = ("--from", "2025-01-01", "--to", "2025-01-05")
PER_DATE_SQL = (
    "SELECT *, CASE WHEN logical_date() IN ({bad}) THEN error('bad day ' || logical_date()) "
    "ELSE logical_date() END AS event_date FROM input"
)


def sluice(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    environ["COLUMNS"] = "300"
    return subprocess.run(
        [*SLUICE, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300
    )


def write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def daily_spec(*, bad_dates: tuple[str, ...] = ()) -> dict[str, Any]:
    bad = ", ".join(f"DATE '{d}'" for d in bad_dates) or "NULL"
    return {
        "version": 1,
        "pipeline": "daily",
        "sources": {"orders": {"type": "files", "path": "data/orders.csv", "format": "csv"}},
        "steps": [{"sql": PER_DATE_SQL.format(bad=bad)}],
        "sinks": [
            {
                "type": "delta",
                "path": "lake/daily",
                "mode": "overwrite_partition",
                "partition_by": ["event_date"],
            }
        ],
    }


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    project = {"version": 1, "project": "fill", "pipelines": ["*.yaml"]}
    write(tmp_path / "sluice.yaml", {**project, "lineage": {"transport": "none"}})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "orders.csv").write_text("id,amount\n1,2.5\n2,3.5\n3,4.5\n")
    write(tmp_path / "daily.yaml", daily_spec())
    return tmp_path


def partitions(project: Path) -> dict[str, int]:
    data = DeltaTable(str(project / "lake" / "daily")).to_pyarrow_table()
    days = [str(d) for d in data.column("event_date").to_pylist()]
    return {day: days.count(day) for day in sorted(set(days))}


def runs(project: Path, pipeline: str = "daily") -> list[tuple[str, str]]:
    records = RunStore(project / ".sluice" / "runs.db").list(pipeline=pipeline, limit=100)
    return sorted((r.logical_date, r.status) for r in records)


def test_a_backfill_writes_one_partition_per_date_and_a_rerun_of_missing_runs_nothing(
    project,
) -> None:
    done = sluice("backfill", "daily", *DATES, "--parallel", "2", cwd=project)

    assert done.returncode == 0, done.stdout + done.stderr
    days = [f"2025-01-0{i}" for i in range(1, 6)]
    assert partitions(project) == dict.fromkeys(days, 3)
    assert runs(project) == [(d, "succeeded") for d in days]
    assert "5 succeeded, 0 failed" in done.stdout

    again = sluice("backfill", "daily", *DATES, "--reprocess", "missing", cwd=project)

    assert again.returncode == 0, again.stderr
    assert "nothing to run" in again.stdout
    assert len(runs(project)) == 5


def test_a_failing_date_is_listed_at_the_end_and_reprocess_failed_reruns_only_it(
    project,
) -> None:
    write(project / "daily.yaml", daily_spec(bad_dates=("2025-01-03",)))

    done = sluice("backfill", "daily", *DATES, "--parallel", "2", cwd=project)

    assert done.returncode == 1
    assert "4 succeeded, 1 failed" in done.stdout
    failed_section = done.stdout.split("Failed dates", 1)[1]
    assert "2025-01-03" in failed_section and "bad day 2025-01-03" in failed_section
    assert "2025-01-02" not in failed_section
    assert sorted(partitions(project)) == ["2025-01-01", "2025-01-02", "2025-01-04", "2025-01-05"]
    write(project / "daily.yaml", daily_spec())

    fixed = sluice("backfill", "daily", *DATES, "--reprocess", "failed", cwd=project)

    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "1 date(s), 1 succeeded, 0 failed" in fixed.stdout
    assert partitions(project) == {f"2025-01-0{i}": 3 for i in range(1, 6)}
    history = runs(project)
    assert history.count(("2025-01-03", "failed")) == 1
    assert history.count(("2025-01-03", "succeeded")) == 1
    assert len(history) == 6


def test_a_dry_run_lists_the_dates_and_why_and_runs_nothing(project) -> None:
    write(project / "daily.yaml", daily_spec(bad_dates=("2025-01-02",)))
    first = sluice("backfill", "daily", "--from", "2025-01-01", "--to", "2025-01-02", cwd=project)
    assert first.returncode == 1

    done = sluice(
        "backfill", "daily", "--from", "2025-01-01", "--to", "2025-01-04", "--dry-run", cwd=project
    )

    assert done.returncode == 0, done.stderr
    listed = {
        cells[1].strip(): cells[2].strip()
        for line in done.stdout.splitlines()
        if line.count("│") == 3 and (cells := line.split("│"))
    }
    assert listed == {"2025-01-02": "failed", "2025-01-03": "missing", "2025-01-04": "missing"}
    assert "3 of 4 date(s) would run; nothing was run" in done.stdout
    assert len(runs(project)) == 2


def test_a_range_capable_pipeline_backfills_the_range_in_one_run(project) -> None:
    spec = {
        "version": 1,
        "pipeline": "ranged",
        "range_capable": True,
        "sources": {"orders": {"type": "files", "path": "data/orders.csv", "format": "csv"}},
        "steps": [
            {"sql": "SELECT *, range_start() AS first_day, range_end() AS last_day FROM input"}
        ],
        "sinks": [{"type": "delta", "path": "lake/ranged", "mode": "append"}],
    }
    write(project / "ranged.yaml", spec)

    done = sluice("backfill", "ranged", *DATES, "--parallel", "4", cwd=project)

    assert done.returncode == 0, done.stdout + done.stderr
    assert runs(project, "ranged") == [("2025-01-05", "succeeded")]
    data = DeltaTable(str(project / "lake" / "ranged")).to_pyarrow_table().to_pylist()
    assert {(str(r["first_day"]), str(r["last_day"])) for r in data} == {
        ("2025-01-01", "2025-01-05")
    }
    assert len(data) == 3
    again = sluice("backfill", "ranged", *DATES, "--reprocess", "missing", cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert runs(project, "ranged") == [("2025-01-05", "succeeded")]


def test_a_backfill_of_an_unknown_pipeline_or_a_reversed_range_is_a_usage_error(
    project,
) -> None:
    unknown = sluice("backfill", "dayly", *DATES, cwd=project)
    reversed_range = sluice(
        "backfill", "daily", "--from", "2025-01-05", "--to", "2025-01-01", cwd=project
    )

    assert unknown.returncode == 2 and "Did you mean 'daily'?" in unknown.stderr
    assert reversed_range.returncode == 2 and "is after --to" in reversed_range.stderr
    assert not (project / "lake").exists()
