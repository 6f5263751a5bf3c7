"""Which dates a backfill runs, from the run store: a replay is not a run of its date."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from sluiceway.core.runstore import RunRecord, RunStore
from sluiceway.orchestration.backfill import plan_dates

DAY = date(2025, 1, 3)


def record(run_id: str, status: str, **details: object) -> RunRecord:
    return RunRecord(run_id, "daily", DAY.isoformat(), status, run_id[:15], details=details)


def test_a_succeeded_replay_does_not_make_a_failed_date_done(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.save(record("20250104T020000-aaaaaaaa", "failed"))
    store.save(record("20250104T090000-bbbbbbbb", "succeeded", replay=True))

    failed = plan_dates(store, "daily", [DAY], "failed")
    missing = plan_dates(store, "daily", [DAY], "missing")

    assert [(p.logical_date, p.reason) for p in failed] == [(DAY, "failed")]
    assert [(p.logical_date, p.reason) for p in missing] == [(DAY, "failed")]


def test_a_succeeded_run_of_the_date_still_counts(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.save(record("20250104T020000-aaaaaaaa", "failed"))
    store.save(record("20250104T090000-bbbbbbbb", "succeeded"))

    assert plan_dates(store, "daily", [DAY], "failed") == []
    assert plan_dates(store, "daily", [DAY], "missing") == []
