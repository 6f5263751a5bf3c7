"""The run store: SQLite in WAL mode; save, get by id prefix, list newest first."""

from __future__ import annotations

import sqlite3

from sluiceway.core.runstore import RunRecord, RunStore


def record(run_id: str, *, pipeline: str = "orders", status: str = "succeeded") -> RunRecord:
    return RunRecord(
        run_id=run_id,
        pipeline=pipeline,
        logical_date="2025-01-15",
        status=status,
        started_at=run_id[:15],
        rows_in=10,
        rows_written=9,
        rows_rejected=1,
        details={"checks": [{"name": "not_null(id)", "status": "passed"}]},
    )


def test_the_store_runs_sqlite_in_wal_mode(tmp_path) -> None:
    RunStore(tmp_path / "state" / "runs.db")

    con = sqlite3.connect(tmp_path / "state" / "runs.db")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


def test_a_saved_run_reads_back_equal(tmp_path) -> None:
    store = RunStore(tmp_path / "runs.db")
    saved = record("20250115T010000-aaaa1111")

    store.save(saved)

    assert store.get("20250115T010000-aaaa1111") == saved


def test_saving_a_run_again_replaces_it(tmp_path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.save(record("20250115T010000-aaaa1111", status="running"))

    store.save(record("20250115T010000-aaaa1111", status="failed"))

    [only] = store.list()
    assert only.status == "failed"


def test_a_unique_prefix_finds_a_run_and_an_ambiguous_one_finds_none(tmp_path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.save(record("20250115T010000-aaaa1111"))
    store.save(record("20250115T020000-bbbb2222"))

    assert store.get("20250115T02").run_id == "20250115T020000-bbbb2222"  # type: ignore[union-attr]
    assert store.get("20250115T0") is None
    assert store.get("nope") is None


def test_runs_are_listed_newest_first_and_filtered_by_pipeline(tmp_path) -> None:
    store = RunStore(tmp_path / "runs.db")
    for run_id, pipeline in [
        ("20250115T020000-b", "orders"),
        ("20250115T030000-c", "events"),
        ("20250115T010000-a", "orders"),
    ]:
        store.save(record(run_id, pipeline=pipeline))

    assert [r.run_id for r in store.list()] == [
        "20250115T030000-c",
        "20250115T020000-b",
        "20250115T010000-a",
    ]
    assert [r.run_id for r in store.list(pipeline="orders")] == [
        "20250115T020000-b",
        "20250115T010000-a",
    ]
    assert [r.run_id for r in store.list(limit=1)] == ["20250115T030000-c"]


def test_runs_of_the_same_second_list_newest_first_and_iso_times_sort_with_compact_ones(
    tmp_path,
) -> None:
    store = RunStore(tmp_path / "runs.db")
    for run_id in ("20250115T020000-aaaa", "20250115T020000-0000", "20250115T020000-zzzz"):
        store.save(record(run_id))
    store.save(
        RunRecord(
            run_id="stream-1",
            pipeline="orders",
            logical_date="2025-01-15",
            status="running",
            started_at="2025-01-15T02:00:01+00:00",
        )
    )

    listed = [r.run_id for r in store.list(limit=10)]

    assert listed == [
        "stream-1",
        "20250115T020000-zzzz",
        "20250115T020000-0000",
        "20250115T020000-aaaa",
    ]
