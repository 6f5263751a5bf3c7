"""Two runs of one incremental pipeline at once: the second to commit publishes nothing.

Run A reads the new files, then waits inside a Python step while run B reads and commits; when
A goes on, its commit would land the same files twice (append) or roll B's positions back.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from deltalake import DeltaTable

from sluiceway.core.loader import load_spec
from sluiceway.core.retry import run_with_policy
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline

KEYS = {"SLUICE_HMAC_KEY": "k" * 32, "SLUICE_ENCRYPTION_KEY": "5a" * 32}
HEADER = "event_id,amount\n"
WAITING_STEP = """\
import threading
from datetime import date

started = threading.Event()
go_on = threading.Event()


def transform(batch):
    started.set()
    if not go_on.wait(60):
        raise RuntimeError("the test never let the run go on")
    return batch
"""


def spec(*, waits: bool, mode: str = "append") -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"sql": "SELECT * FROM input"}]
    if waits:
        steps.append({"python": "sw_concurrent_wait:transform"})
    return {
        "version": 1,
        "pipeline": "orders",
        "sources": {
            "events": {
                "type": "files",
                "path": "data/",
                "format": "csv",
                "incremental": True,
                "contract": {
                    "columns": {
                        "event_id": {"type": "string", "nullable": False},
                        "amount": {"type": "double", "min": 0},
                    }
                },
            }
        },
        "steps": steps,
        "sinks": [{"type": "delta", "path": "lake/orders", "mode": mode}],
        "dead_letter": {"path": "lake/dead_letter"},
    }


def add_file(folder: Path, name: str, *ids: str) -> None:
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / name).write_text(HEADER + "".join(f"{i},1\n" for i in ids))


def spec_file(folder: Path, body: dict[str, Any], name: str) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def run(folder: Path, body: dict[str, Any], name: str, **extra: Any) -> RunResult:
    path = spec_file(folder, body, name)
    return run_pipeline(
        load_spec(path),
        RunOptions(base_dir=folder, state_dir=folder / ".sluice", environ=dict(KEYS), **extra),
    )


@pytest.fixture
def waiting_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "sw_concurrent_wait.py").write_text(WAITING_STEP)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("sw_concurrent_wait", None)
    module = importlib.import_module("sw_concurrent_wait")
    yield module
    module.go_on.set()
    sys.modules.pop("sw_concurrent_wait", None)


def overtaken(
    folder: Path, waiting_step: Any, between: Any, body: dict[str, Any] | None = None
) -> tuple[RunResult, RunResult]:
    """Run A up to its Python step, run `between()` (which returns run B's result), then let
    A finish; returns (A, B)."""
    results: dict[str, RunResult] = {}
    first = threading.Thread(
        target=lambda: results.setdefault("a", run(folder, body or spec(waits=True), "a.yaml"))
    )
    first.start()
    while not waiting_step.started.wait(0.1):
        assert first.is_alive(), f"run A stopped before its Python step: {results}"
    second = between()
    waiting_step.go_on.set()
    first.join(60)
    assert not first.is_alive()
    return results["a"], second


def event_ids(folder: Path) -> list[str]:
    return sorted(
        DeltaTable(str(folder / "lake" / "orders")).to_pyarrow_table()["event_id"].to_pylist()
    )


def test_a_run_overtaken_by_one_that_committed_the_same_files_writes_nothing(
    tmp_path, waiting_step
) -> None:
    add_file(tmp_path, "1.csv", "e1", "e2")
    with (tmp_path / "data" / "1.csv").open("a") as csv:
        csv.write("bad,-1\n")  # a dead letter: amount below min

    a, b = overtaken(tmp_path, waiting_step, lambda: run(tmp_path, spec(waits=False), "b.yaml"))

    assert b.ok, b.error
    assert a.ok, a.error
    assert [s.skipped for s in a.sinks] == [True]
    assert "committed these same inputs" in (a.note or "")
    assert a.accounting.rows_in == 0 and a.dead_letter_rows == 0
    assert event_ids(tmp_path) == ["e1", "e2"]  # once, not twice
    letters = DeltaTable(str(tmp_path / "lake" / "dead_letter")).to_pyarrow_table()
    assert letters["run_id"].to_pylist() == [b.run_id]  # B's, not rewritten under A's id


def test_an_overtaken_merge_publishes_nothing_and_says_to_run_again(tmp_path, waiting_step) -> None:
    add_file(tmp_path, "1.csv", "e1", "e2")
    merge = {"type": "delta", "path": "lake/orders", "mode": "merge", "merge_keys": ["event_id"]}

    def b_then_a_newer_file() -> RunResult:
        result = run(tmp_path, {**spec(waits=False), "sinks": [merge]}, "b.yaml")
        add_file(tmp_path, "2.csv", "e3")
        return result

    a, b = overtaken(
        tmp_path, waiting_step, b_then_a_newer_file, body={**spec(waits=True), "sinks": [merge]}
    )
    after = run(tmp_path, {**spec(waits=False), "sinks": [merge]}, "b.yaml")

    assert b.ok, b.error
    assert not a.ok and a.retryable
    assert "committed new positions of source(s) events" in (a.error or "")
    assert "Run it again" in (a.error or "")
    assert after.ok and after.accounting.rows_in == 1  # 2.csv only: B's positions held
    assert event_ids(tmp_path) == ["e1", "e2", "e3"]


def test_a_run_overtaken_by_one_that_read_more_files_does_not_roll_its_positions_back(
    tmp_path, waiting_step
) -> None:
    add_file(tmp_path, "1.csv", "e1")

    def newer_file_then_b() -> RunResult:
        add_file(tmp_path, "2.csv", "e2")
        return run(tmp_path, spec(waits=False), "b.yaml")

    a, b = overtaken(tmp_path, waiting_step, newer_file_then_b)
    add_file(tmp_path, "3.csv", "e3")
    after = run(tmp_path, spec(waits=False), "b.yaml")

    assert b.ok and not a.ok and a.retryable
    assert after.ok and after.accounting.rows_in == 1  # only 3.csv: B's positions held
    assert event_ids(tmp_path) == ["e1", "e2", "e3"]


def test_a_retry_policy_retries_an_overtaken_run_from_the_new_positions(
    tmp_path, waiting_step
) -> None:
    add_file(tmp_path, "1.csv", "e1")
    results: dict[str, Any] = {}
    path = tmp_path / "a.yaml"
    body = {**spec(waits=True), "retries": {"max_attempts": 2, "backoff": "1s"}}
    path.write_text(yaml.safe_dump(body, sort_keys=False))

    def retried() -> None:
        results["a"] = run_with_policy(
            load_spec(path),
            RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice", environ=dict(KEYS)),
            sleep=lambda _seconds: None,
        )

    first = threading.Thread(target=retried)
    first.start()
    assert waiting_step.started.wait(60)
    add_file(tmp_path, "2.csv", "e2")
    b = run(tmp_path, spec(waits=False), "b.yaml")
    waiting_step.go_on.set()
    first.join(60)

    assert b.ok
    assert results["a"].ok, results["a"].error
    assert results["a"].attempt == 2 and results["a"].accounting.rows_in == 0
    assert event_ids(tmp_path) == ["e1", "e2"]


def test_overlapping_runs_of_a_pipeline_that_reads_in_full_both_publish(
    tmp_path, waiting_step
) -> None:
    add_file(tmp_path, "1.csv", "e1")

    def by_day(waits: bool) -> dict[str, Any]:
        body = spec(waits=waits)
        del body["sources"]["events"]["incremental"]
        body["steps"][0] = {"sql": "SELECT *, logical_date() AS day FROM input"}
        body["sinks"][0].update(mode="overwrite_partition", partition_by=["day"])
        return body

    a, b = overtaken(
        tmp_path,
        waiting_step,
        lambda: run(tmp_path, by_day(False), "b.yaml", logical_date=date(2025, 1, 1)),
        body=by_day(True),
    )

    assert a.ok and b.ok, (a.error, b.error)
    days = DeltaTable(str(tmp_path / "lake" / "orders")).to_pyarrow_table()["day"].to_pylist()
    assert sorted(map(str, days)) == ["2025-01-01", str(a.logical_date)]


@pytest.fixture
def slow_writer(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """The Delta write of the thread named 'run-a' (a large batch) sets the first event
    and waits for the second before it writes."""
    from sluiceway.sinks import delta

    write = delta._Job.write
    writing, go_on = threading.Event(), threading.Event()

    def slow_write(job: Any, table: Any, **options: Any) -> int:
        if threading.current_thread().name == "run-a":
            writing.set()
            assert go_on.wait(60)
        return write(job, table, **options)

    monkeypatch.setattr(delta._Job, "write", slow_write)
    return writing, go_on


def test_a_run_that_reaches_its_commit_while_another_writes_waits_for_it(
    tmp_path, slow_writer: tuple[threading.Event, threading.Event]
) -> None:
    """The positions check and the commit are one turn per pipeline: a run whose check came
    while another run was writing its files (a large batch) waits, then finds the positions
    moved, instead of committing the same new files again."""
    add_file(tmp_path, "1.csv", "e1")
    writing, go_on = slow_writer
    results: dict[str, RunResult] = {}
    waiting = threading.Event()

    def note(event: Any) -> None:
        if event.name == "progress" and "waiting for another run" in event.fields["stage"]:
            waiting.set()

    first = threading.Thread(
        target=lambda: results.setdefault("a", run(tmp_path, spec(waits=False), "a.yaml")),
        name="run-a",
    )
    first.start()
    assert writing.wait(60)
    add_file(tmp_path, "2.csv", "e2")
    second = threading.Thread(
        target=lambda: results.setdefault(
            "b", run(tmp_path, spec(waits=False), "b.yaml", subscribers=[note])
        ),
        name="run-b",
    )
    second.start()
    assert waiting.wait(60), "run B did not wait for run A's commit"
    go_on.set()
    first.join(60)
    second.join(60)
    after = run(tmp_path, spec(waits=False), "c.yaml")

    assert results["a"].ok, results["a"].error
    assert not results["b"].ok and results["b"].retryable
    assert after.ok and after.accounting.rows_in == 1
    assert event_ids(tmp_path) == ["e1", "e2"]


def test_a_run_that_read_nothing_new_is_not_failed_by_one_that_committed_meanwhile(
    tmp_path,
) -> None:
    add_file(tmp_path, "1.csv", "e1")
    assert run(tmp_path, spec(waits=False), "first.yaml").ok
    has_read, go_on = threading.Event(), threading.Event()

    def hold_after_reading(event: Any) -> None:  # subscribers run in the run's thread
        if event.name == "source_read":
            has_read.set()
            assert go_on.wait(60)

    results: dict[str, RunResult] = {}
    first = threading.Thread(
        target=lambda: results.setdefault(
            "a", run(tmp_path, spec(waits=False), "a.yaml", subscribers=[hold_after_reading])
        )
    )
    first.start()
    assert has_read.wait(60)
    add_file(tmp_path, "2.csv", "e2")
    b = run(tmp_path, spec(waits=False), "b.yaml")
    go_on.set()
    first.join(60)
    a = results["a"]

    assert b.ok and a.ok, a.error
    assert a.accounting.rows_in == 0 and a.sinks == []
    assert event_ids(tmp_path) == ["e1", "e2"]


def test_a_run_waiting_for_another_to_publish_stops_at_its_timeout(
    tmp_path, slow_writer: tuple[threading.Event, threading.Event]
) -> None:
    add_file(tmp_path, "1.csv", "e1")
    writing, go_on = slow_writer
    results: dict[str, RunResult] = {}
    first = threading.Thread(
        target=lambda: results.setdefault("a", run(tmp_path, spec(waits=False), "a.yaml")),
        name="run-a",
    )
    first.start()
    assert writing.wait(60)
    add_file(tmp_path, "2.csv", "e2")
    started = time.monotonic()
    try:
        b = run_with_policy(
            load_spec(spec_file(tmp_path, {**spec(waits=False), "timeout": "1s"}, "b.yaml")),
            RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice", environ=dict(KEYS)),
        )
    finally:
        go_on.set()
        first.join(60)

    assert not b.ok and "timeout" in (b.error or "") and b.retryable
    assert time.monotonic() - started < 15
    assert results["a"].ok and event_ids(tmp_path) == ["e1"]
