"""The run store behaves the same on SQLite and on PostgreSQL (the server at 127.0.0.1:5432;
start it with `bash scripts/services/postgres.sh`): runs, metric history, stream batches,
leases and pruning, schedule claims, the metrics exposition, and the CLI, report and UI on a
store named by $SLUICE_RUN_STORE."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from sluiceway.cli import main
from sluiceway.cli_ui import build_dashboard
from sluiceway.core import leases
from sluiceway.core.runstore import MetricPoint, RunRecord, RunStore, StreamBatchRecord
from sluiceway.core.store_db import StoreLocation, connect, parse_location, scrub_url
from sluiceway.errors import ConfigError
from sluiceway.observability.metrics import render_metrics
from sluiceway.observability.report import RunIndex
from sluiceway.orchestration.schedule_state import ScheduleState
from sluiceway.ui.data import StoreReader
from sluiceway.ui.pages import overview, run_page

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
COMPACT = "%Y%m%dT%H%M%S"


@pytest.fixture
def location(store_location: StoreLocation) -> StoreLocation:
    return store_location


def run(run_id: str, started_at: str, **fields: Any) -> RunRecord:
    values: dict[str, Any] = {"pipeline": "orders", "logical_date": "2025-01-15"}
    values["status"] = "succeeded"
    values.update(fields)
    return RunRecord(run_id=run_id, started_at=started_at, **values)


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime(COMPACT)


def test_runs_list_newest_first_whether_started_at_is_compact_or_iso(
    location: StoreLocation,
) -> None:
    store = RunStore(location)
    store.save(run("20250115T020000-aaaa0001", "20250115T020000"))
    store.save(run("20250115T030000-bbbb0002-stream", "2025-01-15T03:00:00+00:00"))
    store.save(run("20250115T020000-cccc0003", "20250115T020000"))
    store.save(run("20250115T010000-dddd0004", "20250115T010000", pipeline="other"))

    listed = [r.run_id for r in store.list(pipeline="orders")]

    assert listed == [
        "20250115T030000-bbbb0002-stream",
        "20250115T020000-cccc0003",
        "20250115T020000-aaaa0001",
    ]
    assert [r.run_id for r in store.list(limit=2)] == listed[:2]


def test_a_run_reads_back_whole_by_id_or_unique_prefix(location: StoreLocation) -> None:
    store = RunStore(location)
    details = {"checks": [{"name": "not_null", "status": "passed"}], "mode": "batch"}
    store.save(run("20250115T020000-aaaa0001", "20250115T020000", rows_in=5, details=details))
    store.save(run("20250115T020000-aabb0002", "20250115T020000", status="failed"))
    store.save(run("20250115T020000-aaaa0001", "20250115T020000", rows_in=7, details=details))

    record = store.get("20250115T020000-aaaa")

    assert record is not None and record.rows_in == 7 and record.details == details
    assert store.get("20250115T020000-aa") is None
    assert store.get("20250115t020000-aabb") is not None
    assert len(store.list()) == 2


def test_metric_history_keeps_one_point_per_date_and_hour_oldest_first(
    location: StoreLocation,
) -> None:
    store = RunStore(location)

    def point(day: str, value: float, at: str, *, flagged: bool = False) -> MetricPoint:
        return MetricPoint("r", "orders", "staged", "c1", "rows", day, value, at, flagged)

    store.save_metrics([point("2025-01-14", 1, "2025-01-14T10:05:00+00:00")])
    store.save_metrics([point("2025-01-15", 2, "2025-01-15T10:05:00+00:00")])
    store.save_metrics([point("2025-01-15", 3, "2025-01-15T12:20:00+02:00", flagged=True)])
    store.save_metrics([point("2025-01-15", 4, "2025-01-15T11:00:00")])

    history = store.metric_history("orders", "c1", "rows")

    # 12:20+02:00 is 10:20 UTC: it replaces the 10:05 point; points order by recorded_at text.

    assert [(p.logical_date, p.value, p.flagged) for p in history] == [
        ("2025-01-14", 1.0, False),
        ("2025-01-15", 4.0, False),
        ("2025-01-15", 3.0, True),
    ]
    assert [p.value for p in store.metric_history("orders", "c1", "rows", before="2025-01-15")] == [
        1.0
    ]
    assert store.prune_metrics(keep_days=0) == 3
    assert store.metric_history("orders", "c1", "rows") == []


def test_stream_batches_replace_a_retried_batch_and_list_oldest_first(
    location: StoreLocation,
) -> None:
    store = RunStore(location)

    def batch(number: int, written: int, run_id: str = "s1") -> StreamBatchRecord:
        return StreamBatchRecord(
            run_id, "events", number, f"2025-01-15T00:00:0{number}", 10, written, 0, 0, 0, 0.5
        )

    for number in (1, 2, 3):
        store.save_batch(batch(number, number))
    store.save_batch(batch(2, 20, run_id="s2"))

    batches = store.stream_batches("events", limit=2)

    assert [(b.batch, b.written, b.run_id) for b in batches] == [(2, 20, "s2"), (3, 3, "s1")]
    assert [b.batch for b in store.stream_batches("events", run_id="s1")] == [1, 3]


def test_mark_interrupted_marks_only_running_runs_of_that_mode(location: StoreLocation) -> None:
    store = RunStore(location)
    stream = {"mode": "stream"}
    store.save(run("s-running", "2025-01-15T00:00:00", status="running", details=stream))
    store.save(run("s-done", "2025-01-15T00:00:00", details=stream))
    store.save(run("b-running", "20250115T000000", status="running", details={"mode": "batch"}))

    marked = store.mark_interrupted("orders", mode="stream")

    assert marked == ["s-running"]
    statuses = {r.run_id: r.status for r in store.list()}
    assert statuses == {"s-running": "interrupted", "s-done": "succeeded", "b-running": "running"}


def test_a_run_whose_lease_expired_is_crashed_and_a_live_one_is_not(
    location: StoreLocation,
) -> None:
    store = RunStore(location)
    store.save(run("dead", ago(hours=2), status="running", logical_date="2025-01-14"))
    store.save(run("alive", ago(seconds=1), status="running"))
    store.save(run("stream", ago(hours=2), status="running", details={"mode": "stream"}))
    lease = leases.Lease(location, "alive", "orders", ttl_s=60)
    try:
        crashed = leases.mark_crashed(location, "orders", ttl_s=60)
    finally:
        lease.release()

    assert [(c.run_id, c.logical_date) for c in crashed] == [("dead", "2025-01-14")]
    dead = store.get("dead")
    assert dead is not None and dead.status == "crashed"
    assert "--date 2025-01-14" in (dead.error or "")
    assert {r.run_id: r.status for r in store.list()}["alive"] == "running"


def test_prune_deletes_old_runs_and_runs_beyond_the_count_with_their_points(
    location: StoreLocation,
) -> None:
    store = RunStore(location)
    store.save(run("ancient", ago(days=400)))
    for n in range(4):
        store.save(run(f"recent-{n}", ago(hours=4 - n)))
    store.save(run("old-running", ago(days=400), status="running"))
    store.save_metrics(
        [MetricPoint("ancient", "orders", "staged", "c", "m", "2025-01-01", 1, "2025-01-01")]
    )
    store.save_batch(StreamBatchRecord("recent-0", "orders", 1, "t", 1, 1, 0, 0, 0, 0.1))

    deleted = leases.prune(location, keep_days=365, keep_runs=3)

    assert deleted == 2
    kept = sorted(r.run_id for r in store.list())
    assert kept == ["old-running", "recent-1", "recent-2", "recent-3"]
    assert store.metric_history("orders", "c", "m") == []
    assert store.stream_batches("orders") == []
    assert leases.prune_daily(location, keep_days=365, keep_runs=1) is None


def test_two_threads_claiming_the_same_dates_never_both_win_one(location: StoreLocation) -> None:
    RunStore(location)
    state = ScheduleState(location)
    days = [date(2025, 1, 1) + timedelta(days=n) for n in range(15)]
    now = datetime(2025, 2, 1, tzinfo=UTC)
    won: dict[str, list[date]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def claim_all(name: str) -> None:
        start.wait()
        for day in days:
            slot = datetime.combine(day, datetime.min.time(), UTC)
            if state.claim("orders", day, slot=slot, now=now):
                won[name].append(day)

    threads = [threading.Thread(target=claim_all, args=(n,)) for n in won]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(won["a"] + won["b"]) == days
    assert [c.logical_date for c in state.claims("orders")] == [d.isoformat() for d in days]
    state.mark("orders", days[0], "succeeded", run_id="r1")
    claim = state.get("orders", days[0])
    assert claim is not None and claim.run_id == "r1" and claim.finished_at is not None
    assert not state.is_active("orders", days[0]) and state.is_active("orders", days[1])
    state.advance("orders", now)
    state.advance("orders", now - timedelta(days=1))
    assert state.last_tick("orders") == now


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_the_metrics_exposition_counts_rows_runs_checks_retries_and_batches(
    location: StoreLocation,
) -> None:
    store = RunStore(location)
    checks = [
        {"name": "not_null", "severity": "error", "status": "passed"},
        {"name": "between", "severity": "warn", "status": "failed"},
    ]
    steps = [{"step": "sql", "index": 0, "attempts": 3}]
    details = {"checks": checks, "steps": steps, "attempt": 2}
    store.save(
        run("r1", "20250115T020000", finished_at="20250115T020010", duration_s=10.0, rows_in=5)
    )
    store.save(
        run("r2", "20250116T020000", duration_s=2.0, rows_in=7, status="failed", details=details)
    )
    store.save(
        run("s1", "2025-01-16T03:00:00", status="running", rows_in=11, details={"mode": "stream"})
    )
    store.save_batch(
        StreamBatchRecord("s1", "orders", 1, "2025-01-16T03:00:05", 11, 11, 0, 0, 0, 0.2, lag=4)
    )

    samples = _samples(render_metrics(location))

    assert samples[("sluice_rows_in_total", (("pipeline", "orders"),))] == 16
    assert samples[("sluice_runs_total", (("pipeline", "orders"), ("status", "failed")))] == 1
    assert samples[("sluice_runs_in_progress", (("pipeline", "orders"),))] == 1
    assert samples[("sluice_run_duration_seconds_count", (("pipeline", "orders"),))] == 2
    assert samples[("sluice_run_duration_seconds_sum", (("pipeline", "orders"),))] == 12
    bucket = ("sluice_run_duration_seconds_bucket", (("le", "5.0"), ("pipeline", "orders")))
    assert samples[bucket] == 1
    last = samples[("sluice_last_success_timestamp_seconds", (("pipeline", "orders"),))]
    assert last == datetime(2025, 1, 15, 2, 0, 10, tzinfo=UTC).timestamp()
    check = (
        ("check", "between"),
        ("pipeline", "orders"),
        ("severity", "warn"),
        ("status", "failed"),
    )
    assert samples[("sluice_checks_total", check)] == 1
    assert samples[("sluice_run_retries_total", (("pipeline", "orders"),))] == 1
    step = (("pipeline", "orders"), ("step", "steps[0].sql"))
    assert samples[("sluice_step_retries_total", step)] == 2
    assert samples[("sluice_stream_consumer_lag", (("pipeline", "orders"),))] == 4


def test_the_report_and_the_ui_reader_see_the_stored_runs(
    location: StoreLocation, tmp_path: Path
) -> None:
    store = RunStore(location)
    checks = [{"check_id": "c1", "name": "nn", "status": "passed", "observed_value": 0}]
    store.save(run("r1", "20250115T020000", details={"checks": checks}, rows_written=3))
    store.save(run("r2", "20250115T020000", status="failed", rows_written=4))
    sinks = {"sinks": [{"uri": "lake/a", "rows_written": 5}]}  # failed after one sink
    store.save(run("r3", "20250115T020000", status="failed", rows_written=5, details=sinks))

    index = RunIndex(tmp_path, location=location)

    summaries = list(index.summaries())
    assert [(s.run_id, s.checks_passed, s.checks_total, s.rows_written) for s in summaries] == [
        ("r3", 0, 0, 5),
        ("r2", 0, 0, None),  # staged, not published
        ("r1", 1, 1, 3),
    ]
    assert [(p.check_id, p.observed_value) for p in index.check_points("orders", 10)] == [("c1", 0)]
    record = index.record("r1")
    assert record is not None and record.rows_written == 3


def test_a_postgresql_password_never_appears_in_labels_or_errors() -> None:
    secret = "s3cr3t-pass"
    location = parse_location(
        f"postgresql://postgres:{secret}@127.0.0.1:1/postgres?schema=x", base=Path()
    )

    assert secret not in location.label and "***" in location.label
    assert secret not in scrub_url(f"postgresql://u:{secret}@h/db")
    with pytest.raises(ConfigError) as caught, connect(location):
        pass
    assert secret not in str(caught.value) and "127.0.0.1" in str(caught.value)


SPEC: dict[str, Any] = {
    "version": 1,
    "pipeline": "orders",
    "sources": {"orders": {"type": "files", "path": "in/", "format": "csv"}},
    "checks": [{"not_null": {"column": "order_id"}}],
    "sinks": [{"type": "delta", "path": "lake/orders", "mode": "append"}],
}


def test_sluice_run_runs_show_report_and_ui_share_the_store_named_by_the_environment(
    location: StoreLocation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "orders.csv").write_text("order_id,amount\no1,10\no2,20\n")
    spec = tmp_path / "orders.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    (tmp_path / "sluice.yaml").write_text("version: 1\nproject: shop\npipelines: [orders.yaml]\n")
    store_url = location.url and f"{location.url}?schema={location.schema}"
    monkeypatch.setenv("SLUICE_RUN_STORE", store_url or str(location.path))
    monkeypatch.chdir(tmp_path)
    cli = CliRunner()
    state = ["--state-dir", str(tmp_path / ".sluice")]

    ran = cli.invoke(main, ["run", str(spec), "--date", "2025-01-15", *state])
    listed = cli.invoke(main, ["runs", *state])
    [stored] = RunStore(location).list()
    shown = cli.invoke(main, ["show", stored.run_id[:20], *state])
    reported = cli.invoke(main, ["report", str(spec), *state, "-o", str(tmp_path / "site")])
    app = build_dashboard(tmp_path / "sluice.yaml", (), str(tmp_path / ".sluice"))

    assert ran.exit_code == 0, ran.output
    assert stored.status == "succeeded" and stored.rows_written == 2
    assert not (tmp_path / ".sluice" / "runs.db").exists()
    assert listed.exit_code == 0 and stored.run_id[:15] in listed.output
    assert shown.exit_code == 0 and "succeeded" in shown.output
    assert reported.exit_code == 0, reported.output
    site_index = (tmp_path / "site" / "index.html").read_text()
    assert stored.run_id in site_index
    assert "orders" in overview(app) and stored.run_id in run_page(app, stored.run_id)


def test_a_project_run_store_setting_is_where_runs_are_recorded_and_read(
    schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLUICE_RUN_STORE", raising=False)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "orders.csv").write_text("order_id,amount\no1,10\no2,20\n")
    (tmp_path / "orders.yaml").write_text(yaml.safe_dump(SPEC))
    (tmp_path / "sluice.yaml").write_text(
        "version: 1\nproject: shop\npipelines: [orders.yaml]\n"
        f"run_store: '{PG_URL}?schema={schema}'\n"
    )
    monkeypatch.chdir(tmp_path)
    cli = CliRunner()

    ran = cli.invoke(main, ["run", "orders", "--date", "2025-01-15"])
    listed = cli.invoke(main, ["runs"])

    assert ran.exit_code == 0, ran.output
    [stored] = RunStore(parse_location(f"{PG_URL}?schema={schema}", base=tmp_path)).list()
    assert stored.status == "succeeded" and stored.rows_written == 2
    assert not (tmp_path / ".sluice" / "runs.db").exists()
    assert listed.exit_code == 0 and stored.run_id[:15] in listed.output


def test_ui_freshness_goes_by_the_newest_date_published_not_by_a_backfill(
    location: StoreLocation,
) -> None:
    """A backfill of an old date today does not make the data fresh, as the freshness
    monitor (newest partition) would not either."""
    store = RunStore(location)
    today = datetime.now(UTC).date()
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).strftime(COMPACT)
    store.save(run("new", two_hours_ago, logical_date=str(today), finished_at=two_hours_ago))
    store.save(
        run("backfill", ago(minutes=1), logical_date="2020-01-01", finished_at=ago(minutes=1))
    )
    store.save(run("only-old", ago(minutes=1), pipeline="old", logical_date="2020-01-01"))

    states = StoreReader(location).pipeline_states()

    assert states["orders"].newest_data.run_id == "new"  # type: ignore[union-attr]
    fresh = states["orders"].data_time
    assert fresh is not None and abs((datetime.now(UTC) - fresh).total_seconds() - 7200) < 120
    assert states["old"].data_time == datetime(2020, 1, 2, tzinfo=UTC)
