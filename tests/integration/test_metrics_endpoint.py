"""Prometheus metrics from a real run store: three real pipelines and recorded stream batches,
scraped over HTTP and parsed with prometheus_client's parser; the textfile export; the
Grafana dashboard and alert rules."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from sluiceway.cli_serve import export, serve
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.core.runstore import RunRecord, RunStore, StreamBatchRecord
from sluiceway.observability.metrics import (
    BATCH_LATENCY_BUCKETS,
    RUN_DURATION_BUCKETS,
    STEP_DURATION_BUCKETS,
    CachedExposition,
    metrics_server,
    render_metrics,
)

from .test_batch_pipeline import DAY, KEYS, base_spec, write_events, write_spec

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
STREAM = "clicks_stream"
BATCHES = (  # events_in, written, rejected, deduplicated, latency, p50, p99, lag
    (100, 90, 6, 4, 0.4, 0.8, 1.9, 250),
    (80, 75, 5, 0, 1.0, 0.6, 3.5, 120),  # on a bucket bound: le is inclusive
    (120, 110, 2, 8, 12.0, 0.5, 2.25, 40),
)


@dataclass(frozen=True)
class Store:
    state: Path
    db: Path


def _run(folder: Path, state: Path, spec: dict[str, Any]) -> None:
    folder.mkdir()
    write_events(folder)
    options = RunOptions(logical_date=DAY, base_dir=folder, state_dir=state, environ=dict(KEYS))
    run_pipeline(load_spec(write_spec(folder, spec)), options)


def _spec(name: str, checks: list[dict[str, Any]]) -> dict[str, Any]:
    return {**base_spec(), "pipeline": name, "checks": checks}


STREAM_FINISHED = "2025-01-15T11:59:30+00:00"


def _record_stream(store: RunStore) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    earlier = RunRecord(
        run_id="20250115T110000-stream00",
        pipeline=STREAM,
        logical_date=str(DAY),
        status="succeeded",
        started_at="2025-01-15T11:00:00+00:00",
        finished_at=STREAM_FINISHED,
        duration_s=3570.0,
        rows_in=10,
        rows_written=9,
        rows_rejected=1,
        rows_deduplicated=0,
        rows_filtered=0,
        details={"mode": "stream", "batches": 1},
    )
    store.save(earlier)
    store.save(
        RunRecord(
            run_id="20250115T120000-stream01",
            pipeline=STREAM,
            logical_date=str(DAY),
            status="running",
            started_at=now,
            rows_in=sum(b[0] for b in BATCHES),
            rows_written=sum(b[1] for b in BATCHES),
            rows_rejected=sum(b[2] for b in BATCHES),
            rows_deduplicated=sum(b[3] for b in BATCHES),
            rows_filtered=0,
            details={"mode": "stream", "batches": len(BATCHES)},
        )
    )
    for seq, (n_in, written, rejected, dedup, latency, p50, p99, lag) in enumerate(BATCHES, 1):
        store.save_batch(
            StreamBatchRecord(
                run_id="20250115T120000-stream01",
                pipeline=STREAM,
                batch=seq,
                committed_at=now,
                events_in=n_in,
                written=written,
                rejected=rejected,
                deduplicated=dedup,
                already_committed=0,
                batch_latency_s=latency,
                e2e_p50_s=p50,
                e2e_p99_s=p99,
                lag=lag,
            )
        )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("metrics")
    state = root / ".sluice"
    passing = {"row_count_between": {"min_value": 1, "name": "has_rows"}}
    warn = {"row_count_between": {"max_value": 1, "severity": "warn", "name": "tiny"}}
    gate = {"row_count_between": {"min_value": 10**9, "name": "huge"}}
    _run(root / "a", state, _spec("orders_a", [passing, warn]))
    _run(root / "a2", state, _spec("orders_a", [passing, warn]))
    _run(root / "b", state, _spec("orders_b", [passing]))
    _run(root / "c", state, _spec("orders_c", [passing, gate]))
    _record_stream(RunStore(state / "runs.db"))
    return Store(state, state / "runs.db")


def _samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint(store: Store) -> Iterator[str]:
    server = metrics_server(store.db, host="127.0.0.1", port=_free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def scraped(endpoint: str) -> Samples:
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return _samples(answer.read().decode())


def _runs(store: Store) -> list[RunRecord]:
    return RunStore(store.db).list(limit=1000)


def _reached_sinks(run: RunRecord) -> bool:
    return run.status == "succeeded" or run.details.get("mode") == "stream"


def test_row_counters_equal_the_sums_of_the_run_store(store: Store, scraped: Samples) -> None:
    runs = _runs(store)
    assert {r.pipeline for r in runs} == {"orders_a", "orders_b", "orders_c", STREAM}
    for pipeline in {r.pipeline for r in runs}:
        mine = [r for r in runs if r.pipeline == pipeline and _reached_sinks(r)]
        for kind in ("in", "written", "rejected", "deduplicated", "filtered"):
            expected = sum(getattr(r, f"rows_{kind}") or 0 for r in mine)
            name = f"sluice_rows_{kind}_total"
            assert _value(scraped, name, pipeline=pipeline) == expected, (name, pipeline)
    assert _value(scraped, "sluice_rows_in_total", pipeline="orders_a") == 14
    assert _value(scraped, "sluice_rows_written_total", pipeline=STREAM) == 9 + 275


def test_a_failed_batch_run_published_nothing_so_its_rows_are_not_counted(
    store: Store, scraped: Samples
) -> None:
    (failed,) = [r for r in _runs(store) if r.pipeline == "orders_c"]
    assert failed.status == "failed" and failed.rows_written
    assert _value(scraped, "sluice_rows_written_total", pipeline="orders_c") == 0
    assert _value(scraped, "sluice_rows_in_total", pipeline="orders_c") == 0


def test_row_counters_keep_the_accounting_identity(scraped: Samples) -> None:
    for pipeline in ("orders_a", "orders_b", STREAM):
        terms = ("written", "rejected", "deduplicated", "filtered")
        total = sum(_value(scraped, f"sluice_rows_{t}_total", pipeline=pipeline) for t in terms)
        assert _value(scraped, "sluice_rows_in_total", pipeline=pipeline) == total, pipeline


def test_runs_count_by_final_status_with_zeros_and_running_runs_apart(
    store: Store, scraped: Samples
) -> None:
    assert [r.status for r in _runs(store) if r.pipeline == "orders_c"] == ["failed"]
    assert _value(scraped, "sluice_runs_total", pipeline="orders_a", status="succeeded") == 2
    assert _value(scraped, "sluice_runs_total", pipeline="orders_a", status="failed") == 0
    assert _value(scraped, "sluice_runs_total", pipeline="orders_c", status="failed") == 1
    assert _value(scraped, "sluice_runs_in_progress", pipeline=STREAM) == 1
    assert _value(scraped, "sluice_runs_total", pipeline=STREAM, status="succeeded") == 1
    assert _value(scraped, "sluice_runs_in_progress", pipeline="orders_a") == 0
    assert ("sluice_runs_total", frozenset({("pipeline", STREAM), ("status", "running")})) not in (
        scraped
    )


def test_run_duration_histogram_buckets_the_stored_durations(
    store: Store, scraped: Samples
) -> None:
    durations = [r.duration_s for r in _runs(store) if r.pipeline == "orders_a"]
    assert len(durations) == 2 and all(d is not None and d > 0 for d in durations)
    name = "sluice_run_duration_seconds"
    assert _value(scraped, f"{name}_count", pipeline="orders_a") == 2
    assert _value(scraped, f"{name}_sum", pipeline="orders_a") == pytest.approx(sum(durations))
    for bound in RUN_DURATION_BUCKETS:
        expected = sum(d <= bound for d in durations)
        assert _value(scraped, f"{name}_bucket", pipeline="orders_a", le=repr(bound)) == expected
    assert _value(scraped, f"{name}_bucket", pipeline="orders_a", le="+Inf") == 2


def test_step_duration_histogram_buckets_every_recorded_step(
    store: Store, scraped: Samples
) -> None:
    durations = [
        step["duration_s"]
        for r in _runs(store)
        if r.pipeline == "orders_a"
        for step in r.details.get("steps", [])
    ]
    assert len(durations) == 4  # two runs of a spec with two steps
    name = "sluice_step_duration_seconds"
    assert _value(scraped, f"{name}_count", pipeline="orders_a") == 4
    assert _value(scraped, f"{name}_sum", pipeline="orders_a") == pytest.approx(sum(durations))
    for bound in STEP_DURATION_BUCKETS:
        expected = sum(d <= bound for d in durations)
        assert _value(scraped, f"{name}_bucket", pipeline="orders_a", le=repr(bound)) == expected


def test_bytes_written_sum_the_published_bytes_of_succeeded_runs(
    store: Store, scraped: Samples
) -> None:
    for pipeline in ("orders_a", "orders_b", "orders_c"):
        published = [
            r.details["bytes_written"]
            for r in _runs(store)
            if r.pipeline == pipeline and r.status == "succeeded"
        ]
        assert _value(scraped, "sluice_bytes_written_total", pipeline=pipeline) == sum(published)
    assert _value(scraped, "sluice_bytes_written_total", pipeline="orders_a") > 0
    assert _value(scraped, "sluice_bytes_written_total", pipeline="orders_c") == 0  # gate failed


def test_check_results_are_counted_per_check_severity_and_status(scraped: Samples) -> None:
    def checks(pipeline: str, check: str, severity: str, status: str) -> float:
        labels = {"pipeline": pipeline, "check": check, "severity": severity, "status": status}
        return _value(scraped, "sluice_checks_total", **labels)

    assert checks("orders_a", "has_rows", "error", "passed") == 2
    assert checks("orders_a", "has_rows", "error", "failed") == 0
    assert checks("orders_a", "tiny", "warn", "failed") == 2
    assert checks("orders_c", "huge", "error", "failed") == 1
    assert checks("orders_c", "huge", "error", "passed") == 0


def test_last_success_is_the_finish_time_of_the_newest_succeeded_run(
    store: Store, scraped: Samples
) -> None:
    finished = max(r.finished_at or "" for r in _runs(store) if r.pipeline == "orders_a")
    expected = datetime.strptime(finished, "%Y%m%dT%H%M%S").replace(tzinfo=UTC).timestamp()
    assert _value(scraped, "sluice_last_success_timestamp_seconds", pipeline="orders_a") == (
        expected
    )
    names = {name for name, labels in scraped if ("pipeline", "orders_c") in labels}
    assert "sluice_last_success_timestamp_seconds" not in names
    stream_success = datetime.fromisoformat(STREAM_FINISHED).timestamp()
    assert _value(scraped, "sluice_last_success_timestamp_seconds", pipeline=STREAM) == (
        stream_success
    )


def test_stream_gauges_come_from_the_latest_batch_and_the_histogram_from_all(
    store: Store, scraped: Samples
) -> None:
    stored = RunStore(store.db).stream_batches(STREAM)
    latest = stored[-1]
    assert latest.batch == 3
    assert _value(scraped, "sluice_stream_consumer_lag", pipeline=STREAM) == latest.lag == 40
    e2e = "sluice_stream_e2e_latency_seconds"
    assert _value(scraped, e2e, pipeline=STREAM, quantile="0.5") == latest.e2e_p50_s
    assert _value(scraped, e2e, pipeline=STREAM, quantile="0.99") == latest.e2e_p99_s == 2.25
    name = "sluice_stream_batch_latency_seconds"
    latencies = [b.batch_latency_s for b in stored]
    assert _value(scraped, f"{name}_count", pipeline=STREAM) == 3
    assert _value(scraped, f"{name}_sum", pipeline=STREAM) == pytest.approx(sum(latencies))
    for bound in BATCH_LATENCY_BUCKETS:
        expected = sum(v <= bound for v in latencies)
        assert _value(scraped, f"{name}_bucket", pipeline=STREAM, le=repr(bound)) == expected


def test_paths_other_than_metrics_answer_404(endpoint: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{endpoint}/", timeout=10)
    assert error.value.code == 404


def test_the_exposition_is_cached_for_its_ttl_then_reads_new_runs(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    record = RunRecord("r1", "p", str(DAY), "succeeded", "20250115T000000", rows_in=5)
    store.save(record)
    cache = CachedExposition(store.path, ttl_s=0.3)
    first = cache.text()
    store.save(RunRecord("r2", "p", str(DAY), "succeeded", "20250115T010000", rows_in=7))
    assert cache.text() == first
    time.sleep(0.35)
    assert _value(_samples(cache.text().decode()), "sluice_rows_in_total", pipeline="p") == 12


def test_the_serve_command_answers_scrapes_until_terminated(store: Store) -> None:
    port = _free_port()
    code = (
        "from sluiceway.cli_serve import serve; "
        f"serve(['--state-dir', {str(store.state)!r}, '--port', '{port}'])"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/metrics" in line, process.stderr.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            samples = _samples(answer.read().decode())
        assert _value(samples, "sluice_runs_total", pipeline="orders_b", status="succeeded") == 1
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_serve_reports_a_missing_store_and_a_busy_port(tmp_path: Path, store: Store) -> None:
    runner = CliRunner()
    missing = runner.invoke(serve, ["--state-dir", str(tmp_path / "nope")])
    assert missing.exit_code == 1
    assert "no run store at" in missing.output and "--state-dir" in missing.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = runner.invoke(serve, ["--state-dir", str(store.state), "--port", str(port)])
    assert taken.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in taken.output
    assert "Traceback" not in missing.output + taken.output


def test_textfile_export_holds_the_same_metrics_atomically(
    store: Store, scraped: Samples, tmp_path: Path
) -> None:
    target = tmp_path / "sluice.prom"
    target.write_text("stale\n")
    result = CliRunner().invoke(
        export, ["metrics", "--state-dir", str(store.state), "--textfile", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert _samples(target.read_text()) == _samples(render_metrics(store.db).decode())
    assert _samples(target.read_text()).keys() == scraped.keys()
    assert [p.name for p in tmp_path.iterdir()] == ["sluice.prom"]


def test_textfile_export_follows_the_project_settings(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sluice.yaml").write_text(
        f"version: 1\nproject: shop\nstate_dir: {store.state}\n"
        "metrics: {textfile: exported/sluice.prom}\n"
    )
    (tmp_path / "exported").mkdir()
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(export, ["metrics"])

    assert result.exit_code == 0, result.output
    written = (tmp_path / "exported" / "sluice.prom").read_text()
    assert _samples(written) == _samples(render_metrics(store.db).decode())


def test_textfile_export_without_a_file_or_a_project_says_what_to_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(export, ["metrics", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2 and "give --textfile" in result.output


def test_textfile_export_to_a_missing_folder_says_so(store: Store, tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "sluice.prom"
    result = CliRunner().invoke(
        export, ["metrics", "--state-dir", str(store.state), "--textfile", str(target)]
    )
    assert result.exit_code == 1
    assert "does not exist; create it first" in result.output


def test_grafana_export_writes_a_dashboard_and_rules_over_exported_metrics(
    tmp_path: Path, scraped: Samples
) -> None:
    out = tmp_path / "grafana"
    result = CliRunner().invoke(export, ["grafana", "-o", str(out), "--no-success-hours", "6"])
    assert result.exit_code == 0, result.output
    dashboard = json.loads((out / "dashboard.json").read_text())
    rules = yaml.safe_load((out / "alerts.yml").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["pipeline"]["multi"] is True
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert all('pipeline=~"$pipeline"' in e for e in exprs)
    alerts = {r["alert"]: r for r in rules["groups"][0]["rules"]}
    assert set(alerts) == {
        "SluiceRunFailed",
        "SluiceNoRecentSuccess",
        "SluiceCheckFailed",
        "SluiceConsumerLagHigh",
        "SluiceStreamLatencyHigh",
    }
    assert "> 21600" in alerts["SluiceNoRecentSuccess"]["expr"]
    exported = {name for name, _ in scraped}

    for expr in exprs + [r["expr"] for r in alerts.values()]:
        names = set(re.findall(r"\bsluice_[a-z0-9_]+", expr))
        assert names and names <= exported, (expr, names - exported)


def test_ten_thousand_runs_are_aggregated_within_a_scrape_budget(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    checks = [{"name": f"c{i}", "severity": "error", "status": "passed"} for i in range(5)]
    details = json.dumps({"checks": checks})
    rows = [
        (f"r{i:05d}", f"p{i % 20}", "2025-01-15", "succeeded", "20250115T000000",
         "20250115T000100", 1.5 + i % 50, 100, 90, 5, 5, 0, details)
        for i in range(10_000)
    ]  # fmt: skip
    with sqlite3.connect(store.path) as con:
        con.executemany(
            "INSERT INTO runs (run_id, pipeline, logical_date, status, started_at, finished_at, "
            "duration_s, rows_in, rows_written, rows_rejected, rows_deduplicated, "
            "rows_filtered, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    started = time.monotonic()
    samples = _samples(render_metrics(store.path).decode())
    elapsed = time.monotonic() - started
    assert _value(samples, "sluice_rows_in_total", pipeline="p3") == 500 * 100
    check = {"pipeline": "p3", "check": "c4", "severity": "error", "status": "passed"}
    assert _value(samples, "sluice_checks_total", **check) == 500
    assert elapsed < 2.0, f"{elapsed:.2f}s for 10,000 runs"
