"""The metric history: one point per pipeline, check, metric and logical date."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline
from sluiceway.core.runstore import RUN_METRICS, MetricPoint, RunStore


def point(
    logical_date: str, value: float, *, run_id: str = "r1", metric: str = "observed_value"
) -> MetricPoint:
    return MetricPoint(
        run_id=run_id,
        pipeline="orders",
        dataset="staged",
        check_id="abc123",
        metric=metric,
        logical_date=logical_date,
        value=value,
        recorded_at="2025-01-20T00:00:00+00:00",
    )


def dates_and_values(points: list[MetricPoint]) -> list[tuple[str, float]]:
    return [(p.logical_date, p.value) for p in points]


def test_history_reads_back_ordered_by_logical_date_whatever_the_save_order(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.save_metrics([point("2025-01-03", 3.0), point("2025-01-01", 1.0)])
    store.save_metrics(
        [point("2025-01-02", 2.0), point("2025-01-02", 99.0, metric="unexpected_count")]
    )

    history = store.metric_history("orders", "abc123", "observed_value")

    assert dates_and_values(history) == [
        ("2025-01-01", 1.0),
        ("2025-01-02", 2.0),
        ("2025-01-03", 3.0),
    ]
    assert history[0] == point("2025-01-01", 1.0)


def test_before_excludes_the_tested_date_and_later(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.save_metrics([point(f"2025-01-0{d}", float(d)) for d in range(1, 6)])

    history = store.metric_history("orders", "abc123", "observed_value", before="2025-01-04")

    assert dates_and_values(history) == [
        ("2025-01-01", 1.0),
        ("2025-01-02", 2.0),
        ("2025-01-03", 3.0),
    ]


def test_limit_keeps_the_most_recent_points_still_oldest_first(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.save_metrics([point(f"2025-01-0{d}", float(d)) for d in range(1, 6)])

    history = store.metric_history("orders", "abc123", "observed_value", limit=2)

    assert dates_and_values(history) == [("2025-01-04", 4.0), ("2025-01-05", 5.0)]


def test_a_rerun_of_a_date_replaces_its_points_instead_of_adding_duplicates(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.save_metrics([point("2025-01-01", 1.0), point("2025-01-02", 2.0, run_id="first")])

    store.save_metrics([point("2025-01-02", 20.0, run_id="rerun")])

    history = store.metric_history("orders", "abc123", "observed_value")
    assert dates_and_values(history) == [("2025-01-01", 1.0), ("2025-01-02", 20.0)]
    assert history[1].run_id == "rerun"


def test_prune_deletes_points_older_than_keep_days_and_keeps_recent_ones(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    today = datetime.now(UTC).date()
    old, recent = (today - timedelta(days=400)).isoformat(), (today - timedelta(days=2)).isoformat()
    store.save_metrics([point(old, 1.0), point(recent, 2.0)])

    deleted = store.prune_metrics(keep_days=30)

    assert deleted == 1
    assert dates_and_values(store.metric_history("orders", "abc123", "observed_value")) == [
        (recent, 2.0)
    ]


def run_orders(tmp_path: Path, rows: int, logical_date: date, *, min_rows: int = 1) -> RunResult:
    folder = tmp_path / "in" / logical_date.isoformat()
    folder.mkdir(parents=True)
    lines = [f"{logical_date.day}{i},{i * 10}" for i in range(rows)]
    (folder / "orders.csv").write_text("order_id,amount\n" + "\n".join(lines) + "\n")
    spec = {
        "version": 1,
        "pipeline": "orders",
        "sources": {"orders": {"type": "files", "path": f"in/{logical_date.isoformat()}/"}},
        "checks": [{"row_count_between": {"min_value": min_rows}}],
        "sinks": [{"type": "delta", "path": "lake/orders", "mode": "append"}],
    }
    options = RunOptions(
        logical_date=logical_date, base_dir=tmp_path, state_dir=tmp_path / ".sluice"
    )
    return run_pipeline(pipeline_from_dict(spec), options)


def test_two_runs_on_two_dates_leave_one_row_count_point_per_date(tmp_path: Path) -> None:
    first = run_orders(tmp_path, 3, date(2025, 1, 15))
    second = run_orders(tmp_path, 5, date(2025, 1, 16))
    assert first.ok, first.error
    assert second.ok, second.error
    check_id = first.checks[0].check_id
    assert second.checks[0].check_id == check_id

    store = RunStore(tmp_path / ".sluice" / "runs.db")
    history = store.metric_history("orders", check_id, "observed_value")
    written = store.metric_history("orders", RUN_METRICS, "rows_written")

    assert dates_and_values(history) == [("2025-01-15", 3.0), ("2025-01-16", 5.0)]
    assert [p.run_id for p in history] == [first.run_id, second.run_id]
    assert dates_and_values(written) == [("2025-01-15", 3.0), ("2025-01-16", 5.0)]


def test_a_run_stopped_by_the_gate_still_records_its_metrics(tmp_path: Path) -> None:
    result = run_orders(tmp_path, 3, date(2025, 1, 15), min_rows=100)
    assert result.status == "failed"
    assert "nothing was published" in (result.error or "")

    store = RunStore(tmp_path / ".sluice" / "runs.db")
    history = store.metric_history("orders", result.checks[0].check_id, "observed_value")

    assert dates_and_values(history) == [("2025-01-15", 3.0)]
