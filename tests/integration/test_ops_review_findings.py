"""Review findings on tiering, forget, retention, cost and the audit log: each test pins a
bug found in review (it failed before its fix) on real Delta tables."""

from __future__ import annotations

import json
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
from sluiceway.cli import main
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.ops.audit import AuditLog
from sluiceway.ops.tier_read import MANIFEST, read_manifest
from sluiceway.ops.tiering import FAULT_ENV, read_tiered, tier_layout

pytestmark = pytest.mark.integration

OLD_DAY = date(2025, 1, 1)
NEW_DAY = date(2026, 1, 30)
AS_OF = date(2026, 1, 31)
HEADER = "event_id,user_id,amount,event_date\n"


def tiered_spec(mode: str, **sink: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": f"tiered_{mode}",
        "sources": {
            "events": {
                "type": "files",
                "path": "data/",
                "format": "csv",
                "contract": {
                    "columns": {
                        "event_id": {"type": "string", "nullable": False},
                        "user_id": {"type": "string"},
                        "amount": {"type": "double"},
                        "event_date": {"type": "date"},
                    }
                },
            }
        },
        "sinks": [
            {
                "type": "delta",
                "path": "lake/hot",
                "mode": mode,
                "partition_by": ["event_date"],
                "tiers": [
                    {"name": "warm", "path": "lake/warm", "after": "30d"},
                    {"name": "cold", "path": "lake/cold", "after": "365d"},
                ],
                **sink,
            }
        ],
        "dead_letter": {"path": "lake/dead_letter"},
    }


def write_spec(folder: Path, spec: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_with(spec: Path, lines: list[str], day: date = AS_OF) -> None:
    """Replace the source files with `lines` and run the pipeline once."""
    data = spec.parent / "data"
    data.mkdir(exist_ok=True)
    for old in data.glob("*.csv"):
        old.unlink()
    (data / f"events-{len(lines)}-{lines[0][:6]}.csv").write_text(HEADER + "\n".join(lines) + "\n")
    options = RunOptions(logical_date=day, base_dir=spec.parent, state_dir=spec.parent / ".sluice")
    result = run_pipeline(load_spec(spec), options)
    assert result.ok, result.error


def sluice(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "300", **(env or {})})


def tier_now(spec: Path) -> None:
    state = str(spec.parent / ".sluice")
    result = sluice("tier", str(spec), "--as-of", AS_OF.isoformat(), "--state-dir", state)
    assert result.exit_code == 0, result.output


def visible(spec: Path) -> Counter[tuple[Any, ...]]:
    table = read_tiered(load_spec(spec).sinks[0], spec.parent)  # type: ignore[arg-type]
    names = ["event_id", "user_id", "amount", "event_date"]
    return Counter(zip(*(table[n].to_pylist() for n in names), strict=True))


def test_overwrite_partition_of_a_date_moved_to_cold_replaces_it_instead_of_adding(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, tiered_spec("overwrite_partition"))
    run_with(spec, [f"e1,u1,1.5,{OLD_DAY}", f"e2,u2,2.5,{OLD_DAY}", f"e3,u3,3.5,{NEW_DAY}"])
    tier_now(spec)
    assert DeltaTable(str(tmp_path / "lake/cold")).to_pyarrow_table().num_rows == 2
    run_with(spec, [f"e9,u9,9.5,{OLD_DAY}"])
    assert visible(spec) == Counter([("e9", "u9", 9.5, OLD_DAY), ("e3", "u3", 3.5, NEW_DAY)])
    tier_now(spec)
    assert visible(spec) == Counter([("e9", "u9", 9.5, OLD_DAY), ("e3", "u3", 3.5, NEW_DAY)])


def test_overwrite_partition_with_replace_where_clears_the_colder_tiers_too(
    tmp_path: Path,
) -> None:
    spec = tiered_spec("overwrite_partition", replace_where=f"event_date = '{OLD_DAY}'")
    path = write_spec(tmp_path, spec)
    run_with(path, [f"e1,u1,1.5,{OLD_DAY}", f"e2,u2,2.5,{OLD_DAY}"])
    tier_now(path)
    run_with(path, [f"e5,u5,5.5,{OLD_DAY}"])
    assert visible(path) == Counter([("e5", "u5", 5.5, OLD_DAY)])


def test_a_merge_on_a_key_whose_row_lives_in_cold_updates_it_instead_of_duplicating(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, tiered_spec("merge", merge_keys=["event_id"]))
    run_with(spec, [f"e1,u1,1.5,{OLD_DAY}", f"e2,u2,2.5,{OLD_DAY}"])
    tier_now(spec)
    run_with(spec, [f"e1,u1,100.0,{OLD_DAY}", f"e4,u4,4.0,{NEW_DAY}"])
    assert visible(spec) == Counter(
        [("e1", "u1", 100.0, OLD_DAY), ("e2", "u2", 2.5, OLD_DAY), ("e4", "u4", 4.0, NEW_DAY)]
    )


def forget_spec() -> dict[str, Any]:
    spec = tiered_spec("append")
    spec["pipeline"] = "forget_review"
    return spec


def forget(spec: Path, subject: str, *args: str) -> Any:
    state = str(spec.parent / ".sluice")
    return sluice("forget", "--subject", subject, str(spec), "--state-dir", state, *args)


def test_forget_of_an_integer_subject_ignores_the_same_number_in_other_columns(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, forget_spec())
    rows = pa.table(
        {
            "event_id": ["e1", "e2", "e3"],
            "user_id": pa.array([123, 7, 8], pa.int64()),
            "amount": pa.array([5.0, 123.0, 9.0]),
            "quantity": pa.array([1, 123, 2], pa.int64()),
            "event_date": pa.array([NEW_DAY] * 3),
        }
    )
    write_deltalake(str(tmp_path / "lake/hot"), rows, partition_by=["event_date"])
    result = forget(spec, "user_id=123")
    assert result.exit_code == 0, result.output
    assert "verified clean" in result.output
    left = DeltaTable(str(tmp_path / "lake/hot")).to_pyarrow_table()
    assert sorted(left["user_id"].to_pylist()) == [7, 8]


def test_forget_of_a_value_with_sql_metacharacters_deletes_only_that_subject(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, forget_spec())
    nasty = "o'hara' OR '1'='1"
    rows = pa.table(
        {
            "event_id": ["e1", "e2", "e3"],
            "user_id": [nasty, "bob", "o'hara"],
            "amount": [1.0, 2.0, 3.0],
            "event_date": pa.array([NEW_DAY] * 3),
        }
    )
    write_deltalake(str(tmp_path / "lake/hot"), rows, partition_by=["event_date"])
    result = forget(spec, f"user_id={nasty}")
    assert result.exit_code == 0, result.output
    assert nasty not in result.output
    left = DeltaTable(str(tmp_path / "lake/hot")).to_pyarrow_table()
    assert sorted(left["user_id"].to_pylist()) == ["bob", "o'hara"]


def tiered_lake_with_subject(tmp_path: Path) -> tuple[Path, str]:
    """A tiered lake where the subject's value also appears inside a move id of a manifest."""
    spec = write_spec(tmp_path, forget_spec())
    run_with(spec, [f"e1,u1,1.5,{OLD_DAY}", f"e2,u2,2.5,{NEW_DAY}"])
    tier_now(spec)
    layout = tier_layout(load_spec(spec).sinks[0], spec.parent)  # type: ignore[arg-type]
    move_id = next(iter(read_manifest(layout.locations[2])))
    subject = move_id[:8]
    run_with(spec, [f"e3,{subject},3.5,{NEW_DAY}", f"e4,{subject},4.5,{OLD_DAY}"])
    tier_now(spec)
    return spec, subject


def test_forget_on_a_tiered_table_is_not_failed_by_move_ids_in_the_manifests(
    tmp_path: Path,
) -> None:
    spec, subject = tiered_lake_with_subject(tmp_path)
    assert subject in (tmp_path / "lake/cold" / MANIFEST).read_text()
    result = forget(spec, f"user_id={subject}")
    assert result.exit_code == 0, result.output
    assert "verified clean" in result.output
    assert {r[1] for r in visible(spec)} == {"u1", "u2"}


def test_a_forget_dry_run_on_a_tiered_table_changes_no_table_and_writes_no_file(
    tmp_path: Path,
) -> None:
    spec, subject = tiered_lake_with_subject(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "lake").rglob("*"))
    result = forget(spec, f"user_id={subject}", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "2 row(s) would be deleted" in result.output
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "lake").rglob("*")) == before


def test_forget_after_a_move_killed_before_its_manifest_keeps_the_moved_rows_visible(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, forget_spec())
    run_with(spec, [f"e1,u1,1.5,{OLD_DAY}", f"e2,gone,2.5,{NEW_DAY}"])
    command = [sys.executable, "-c", "from sluiceway.cli import entry; entry()", "tier"]
    command += [str(spec), "--as-of", AS_OF.isoformat(), "--state-dir", str(tmp_path / ".sluice")]
    killed = subprocess.run(
        command, env={**_environ(), FAULT_ENV: "after_delete:1"}, capture_output=True, timeout=300
    )
    assert killed.returncode == -9, killed.stderr.decode()
    assert not (tmp_path / "lake/cold" / MANIFEST).exists()
    result = forget(spec, "user_id=gone")
    assert result.exit_code == 0, result.output
    assert visible(spec) == Counter([("e1", "u1", 1.5, OLD_DAY)])


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != FAULT_ENV}


def test_retention_on_a_text_column_that_holds_no_dates_deletes_nothing_and_says_why(
    tmp_path: Path,
) -> None:
    spec = tiered_spec("append")
    spec["compliance"] = {"retention": "30d", "retention_column": "user_id"}
    path = write_spec(tmp_path, spec)
    run_with(path, [f"e1,007,1.5,{OLD_DAY}", f"e2,1abc,2.5,{NEW_DAY}"])
    tier_now(path)
    result = sluice(
        "retention", str(path), "--as-of", AS_OF.isoformat(), "--state-dir", str(tmp_path / "s")
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "not an ISO date" in result.output
    assert len(visible(path)) == 2


def test_cost_of_a_project_whose_tables_do_not_exist_yet_is_valid_json_with_zero_bytes(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, tiered_spec("append"))
    result = sluice("cost", str(spec), "--format", "json", "--state-dir", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [t["bytes"] for t in report["pipelines"][0]["tables"]] == [0, 0, 0, 0]


def test_two_processes_appending_to_the_audit_log_keep_one_intact_chain(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom sluiceway.ops.audit import AuditLog\n"
        "log = AuditLog(sys.argv[1])\n"
        "for n in range(60):\n    log.append('test', pipeline=sys.argv[2], rows_affected=n)\n"
    )
    workers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name]) for name in "ab"]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    log = AuditLog(tmp_path)
    assert log.verify_chain().is_intact
    entries = list(log.entries())
    assert [e.seq for e in entries] == list(range(1, 121))
    assert Counter(e.pipeline for e in entries) == {"a": 60, "b": 60}


def test_a_late_day_is_aged_from_the_as_of_date_and_stays_hot(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, tiered_spec("append"))
    recent = AS_OF - timedelta(days=29)
    run_with(spec, [f"e1,u1,1.5,{recent}"])
    tier_now(spec)
    assert not (tmp_path / "lake/warm").exists()
    assert visible(spec) == Counter([("e1", "u1", 1.5, recent)])


def test_a_tier_run_that_fails_midway_still_audits_the_moves_it_made(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, tiered_spec("append"))
    warm_day = AS_OF - timedelta(days=60)
    run_with(spec, [f"e2,u2,2.5,{OLD_DAY}"])
    run_with(spec, [f"e1,u1,1.5,{warm_day}"])
    (tmp_path / "lake/cold").write_text("not a folder")
    state = tmp_path / ".sluice"
    result = sluice("tier", str(spec), "--as-of", AS_OF.isoformat(), "--state-dir", str(state))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    warm = DeltaTable(str(tmp_path / "lake/warm")).to_pyarrow_table()
    entries = list(AuditLog(state).entries(action="tier"))
    assert len(entries) == 1, result.output
    assert entries[0].rows_affected == warm.num_rows == 1
    assert entries[0].details["error"]
