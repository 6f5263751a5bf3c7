"""Leases of running batch runs: a run whose process was SIGKILLed is marked crashed by the
next run of its pipeline, a live run is left alone, and the run store prunes old runs."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from sluiceway.core import leases
from sluiceway.core.runstore import MetricPoint, RunRecord, RunStore

SLUICE = [sys.executable, "-c", "from sluiceway.cli import entry; entry()"]
SLOW_SQL = "SELECT o.*, (SELECT count(*) FROM range({n}) t(x) WHERE x % 7 = 3) AS n FROM input o"


def write_pipeline(tmp_path: Path, *, range_size: int) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data/orders.csv").write_text("id,amount\n1,2.5\n2,3.5\n3,4.5\n")
    spec = {
        "version": 1,
        "pipeline": "leased",
        "sources": {"orders": {"type": "files", "path": "data/*.csv", "format": "csv"}},
        "steps": [{"sql": SLOW_SQL.format(n=range_size)}],
        "sinks": [{"type": "delta", "path": "lake/orders"}],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def start_run(spec: Path, state: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SLUICE_LEASE_SECONDS": "1"}
    return subprocess.Popen(
        [*SLUICE, "run", str(spec), "--state-dir", str(state)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for_running(state: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (state / "runs.db").exists():
            try:
                with sqlite3.connect(state / "runs.db") as con:
                    row = con.execute("SELECT run_id FROM runs WHERE status = 'running'").fetchone()
            except sqlite3.OperationalError:  # the schema is being created
                row = None
            if row:
                return str(row[0])
        time.sleep(0.1)
    raise AssertionError("the run never started")


def test_a_killed_run_is_marked_crashed_by_the_next_run_which_completes_the_date(
    tmp_path: Path,
) -> None:
    spec, state = write_pipeline(tmp_path, range_size=50_000_000_000), tmp_path / ".sluice"
    process = start_run(spec, state)
    killed = wait_for_running(state)
    time.sleep(1.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(1.2)  # the lease lives 1 s past its last heartbeat

    write_pipeline(tmp_path, range_size=10)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from sluiceway.cli import entry; entry()",
            "run",
            str(spec),
            "--state-dir",
            str(state),
        ],
        env={**os.environ, "SLUICE_LEASE_SECONDS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert f"earlier run(s) {killed}" in done.stderr
    crashed = RunStore(state / "runs.db").get(killed)
    assert crashed is not None and crashed.status == "crashed"
    assert "sluice run SPEC --date" in (crashed.error or "")
    assert sorted(
        DeltaTable(str(tmp_path / "lake/orders")).to_pyarrow_table()["id"].to_pylist()
    ) == ["1", "2", "3"]


def test_a_run_whose_lease_is_renewed_is_not_marked_crashed(tmp_path: Path) -> None:
    spec, state = write_pipeline(tmp_path, range_size=50_000_000_000), tmp_path / ".sluice"
    process = start_run(spec, state)
    try:
        running = wait_for_running(state)
        time.sleep(2.5)  # more than two lease lifetimes: only heartbeats keep it alive

        assert leases.mark_crashed(state / "runs.db", "leased", ttl_s=1) == []
        record = RunStore(state / "runs.db").get(running)
        assert record is not None and record.status == "running"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    time.sleep(1.2)
    assert [c.run_id for c in leases.mark_crashed(state / "runs.db", "leased", ttl_s=1)] == [
        running
    ]


def record(run_id: str, pipeline: str, started: datetime, status: str = "succeeded") -> RunRecord:
    return RunRecord(
        run_id=run_id,
        pipeline=pipeline,
        logical_date=started.date().isoformat(),
        status=status,
        started_at=started.isoformat(),
    )


def test_pruning_drops_runs_past_the_age_and_beyond_the_count_with_their_metrics(
    tmp_path: Path,
) -> None:
    store = RunStore(tmp_path / "runs.db")
    now = datetime.now(UTC)
    for day in range(10):
        store.save(record(f"a{day}", "a", now - timedelta(days=day)))
    compact = record("a-compact", "a", now - timedelta(days=200))
    store.save(
        replace(compact, started_at=compact.started_at[:19].replace("-", "").replace(":", ""))
    )
    store.save(record("b-old", "b", now - timedelta(days=400)))
    store.save(record("b-running", "b", now - timedelta(days=400), status="running"))
    store.save(record("b-new", "b", now))
    store.save_metrics(
        [MetricPoint("a9", "a", "orders", "__run__", "rows_in", "2025-01-01", 1.0, now.isoformat())]
    )

    deleted = leases.prune(tmp_path / "runs.db", keep_days=365, keep_runs=4)

    assert deleted == 8
    assert sorted(r.run_id for r in store.list(limit=100)) == [
        "a0",
        "a1",
        "a2",
        "a3",
        "b-new",
        "b-running",
    ]
    assert store.metric_history("a", "__run__", "rows_in") == []
    assert leases.prune_daily(tmp_path / "runs.db", keep_days=1, keep_runs=1) is None


def test_a_crashed_run_is_resumed_by_its_id_for_its_date(tmp_path: Path) -> None:
    write_pipeline(tmp_path, range_size=50_000_000_000)
    state = tmp_path / ".sluice"
    (tmp_path / "sluice.yaml").write_text(
        "version: 1\nproject: shop\npipelines: [pipeline.yaml]\nstate_dir: .sluice\n"
    )
    process = subprocess.Popen(
        [*SLUICE, "run", "leased", "--date", "2025-03-04"],
        cwd=tmp_path,
        env={**os.environ, "SLUICE_LEASE_SECONDS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed = wait_for_running(state)
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(1.2)
    write_pipeline(tmp_path, range_size=10)
    env = {**os.environ, "SLUICE_LEASE_SECONDS": "1"}

    def sluice(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SLUICE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    refused = sluice("run", "--resume", "no-such-run")
    resumed = sluice("run", "--resume", killed)  # marks the killed run crashed, then reruns

    assert refused.returncode == 2 and "no run with that id" in refused.stderr
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming leased for 2025-03-04" in resumed.stderr
    runs = RunStore(state / "runs.db").list(pipeline="leased")
    assert {(r.run_id == killed, r.status, r.logical_date) for r in runs} == {
        (True, "crashed", "2025-03-04"),
        (False, "succeeded", "2025-03-04"),
    }
    again = sluice(
        "run", "--resume", runs[0].run_id if runs[0].status == "succeeded" else runs[1].run_id
    )
    assert again.returncode == 2 and "only a crashed, interrupted or failed run" in again.stderr


def test_a_publish_turn_that_lapsed_and_was_taken_is_neither_renewed_over_nor_released(
    tmp_path: Path,
) -> None:

    db = tmp_path / "runs.db"
    first = leases.take_publish_turn(db, "orders", "run-a", ttl_s=0.3)
    first._stop.set()  # its heartbeat stops (a run store it cannot reach)
    time.sleep(0.5)
    second = leases.take_publish_turn(db, "orders", "run-b", ttl_s=30)

    first._renew()  # a late heartbeat of the first holder
    first.release()

    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT holder FROM leases WHERE run_id = 'publish:orders'").fetchall()
    assert [r[0].endswith("(run run-b)") for r in rows] == [True]
    second.release()


def test_a_run_waiting_for_the_publish_turn_gives_up_at_its_timeout(tmp_path: Path) -> None:

    db = tmp_path / "runs.db"
    held = leases.take_publish_turn(db, "orders", "run-a", ttl_s=30)
    waits: list[float] = []

    def timeout() -> None:
        if len(waits) == 3:
            raise TimeoutError("timeout 2s passed")

    try:
        with pytest.raises(TimeoutError):
            leases.take_publish_turn(
                db, "orders", "run-b", ttl_s=30, still_waiting=timeout, sleep=waits.append
            )
    finally:
        held.release()
    assert waits == [0.2, 0.2, 0.2]


def test_the_publish_turn_of_a_killed_run_on_this_machine_is_taken_at_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs.db"
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()
    held = leases.take_publish_turn(db, "orders", "run-a", ttl_s=60)
    held._stop.set()
    with sqlite3.connect(db) as con:  # as if the run's process had held it, then died
        con.execute(
            "UPDATE leases SET holder = ? WHERE run_id = 'publish:orders'",
            (f"{socket.gethostname()}:{killed.pid} (run run-a)",),
        )
    waits: list[float] = []

    turn = leases.take_publish_turn(db, "orders", "run-b", ttl_s=60, sleep=waits.append)

    assert waits == []  # not the 60 s until its lease expires
    turn.release()
