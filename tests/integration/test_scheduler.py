"""`sluice scheduler` on a real project: due dates, catch-up after downtime, restarts, two
schedulers at once, and a clean stop on SIGTERM. Every run is a real batch run writing a
Delta table on local disk."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from deltalake import DeltaTable

from sluiceway.core.runstore import RunRecord, RunStore
from sluiceway.orchestration.schedule_state import ScheduleState

SLUICE = str(Path(sys.executable).parent / "sluice")
FIRST_SEEN = "2025-01-15T12:00:00+00:00"
THREE_DAYS_LATER = "2025-01-18T12:00:00+00:00"
DATES = ["2025-01-16", "2025-01-17", "2025-01-18"]


def make_project(root: Path, *, catchup: str = "all", **spec_extra: Any) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data" / "events.csv").write_text("event_id,amount\ne1,1.5\ne2,2.5\n")
    (root / "pipelines").mkdir()
    spec = {
        "version": 1,
        "pipeline": "daily",
        "schedule": {"cron": "0 2 * * *", "catchup": catchup},
        "sources": {"events": {"type": "files", "path": "../data/events.csv", "format": "csv"}},
        "steps": [{"sql": "SELECT *, logical_date() AS event_date FROM input"}],
        "sinks": [
            {
                "type": "delta",
                "path": "../lake/daily",
                "partition_by": ["event_date"],
                "mode": "overwrite_partition",
            }
        ],
        **spec_extra,
    }
    (root / "pipelines" / "daily.yaml").write_text(yaml.safe_dump(spec))
    project = {
        "version": 1,
        "project": "sched",
        "pipelines": ["pipelines/"],
        "lineage": {"transport": "none"},
    }
    (root / "sluice.yaml").write_text(yaml.safe_dump(project))
    return root / "sluice.yaml"


def scheduler_command(project: Path, now: str) -> list[str]:
    return [SLUICE, "scheduler", "--project", str(project), "--once", "--now", now]


def run_once(project: Path, now: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        scheduler_command(project, now), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def runs_per_date(project: Path) -> Counter[str]:
    store = RunStore(project.parent / ".sluice" / "runs.db")
    return Counter(r.logical_date for r in store.list(pipeline="daily", limit=1000))


def test_the_first_pass_only_starts_the_clock_and_runs_nothing(tmp_path: Path) -> None:
    project = make_project(tmp_path)

    run_once(project, FIRST_SEEN)

    assert runs_per_date(project) == Counter()
    state = ScheduleState(tmp_path / ".sluice" / "runs.db")
    assert state.last_tick("daily") is not None
    assert state.last_tick("daily").isoformat() == FIRST_SEEN  # type: ignore[union-attr]


def test_catchup_all_runs_every_missed_date_once_and_a_second_pass_runs_nothing(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path, catchup="all")
    run_once(project, FIRST_SEEN)

    run_once(project, THREE_DAYS_LATER)
    run_once(project, THREE_DAYS_LATER)

    assert runs_per_date(project) == Counter({d: 1 for d in DATES})
    claims = ScheduleState(tmp_path / ".sluice" / "runs.db").claims("daily")
    assert [(c.logical_date, c.status) for c in claims] == [(d, "succeeded") for d in DATES]
    assert all(c.run_id for c in claims)
    table = DeltaTable(str(tmp_path / "lake" / "daily"))
    assert sorted({p["event_date"] for p in table.partitions()}) == DATES


def test_a_failed_scheduled_run_is_reported_with_its_error(tmp_path: Path) -> None:
    project = make_project(
        tmp_path, catchup="latest", checks=[{"row_count_between": {"min_value": 10}}]
    )
    run_once(project, FIRST_SEEN)

    done = subprocess.run(
        scheduler_command(project, THREE_DAYS_LATER), capture_output=True, text=True, timeout=300
    )

    assert done.returncode == 1
    line = next(x for x in done.stdout.splitlines() if "daily 2025-01-18: failed" in x)
    assert "1 error check(s) failed" in line and "row_count_between" in line


def test_a_run_whose_process_died_is_marked_crashed_and_alerted_not_taken_for_a_slow_one(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path, catchup="none", sla={"latency": "1m"})
    store = RunStore(tmp_path / ".sluice" / "runs.db")
    store.save(
        RunRecord(
            run_id="20250115T020000-dead0001",
            pipeline="daily",
            logical_date="2025-01-14",
            status="running",
            started_at="20250115T020000",
        )
    )
    (tmp_path / "sluice.yaml").write_text(
        (tmp_path / "sluice.yaml").read_text()
        + f"alerts:\n  - {{name: log, type: command, command: [tee, -a, {tmp_path}/alerts.jsonl]}}\n"
    )

    done = run_once(project, FIRST_SEEN)

    [record] = store.list(pipeline="daily")
    assert record.status == "crashed" and "sluice run --resume" in (record.error or "")
    assert "run crashed" in done.stdout and "running for" not in done.stdout
    [sent] = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert (sent["kind"], sent["run_id"]) == ("run_failed", "20250115T020000-dead0001")
    assert sent["inspect"] == "sluice run --resume 20250115T020000-dead0001"


def test_a_broken_spec_is_left_out_and_the_others_are_scheduled(tmp_path: Path) -> None:
    project = make_project(tmp_path, catchup="latest")
    (tmp_path / "pipelines" / "refunds.yaml").write_text(
        "version: 1\npipeline: refunds\nsources: {r: {type: file, path: x}}\n"
        "sinks: [{type: delta, path: ../lake/r}]\n"
    )
    run_once(project, FIRST_SEEN)

    done = run_once(project, THREE_DAYS_LATER)

    assert "refunds.yaml" in done.stderr and "left out until fixed: refunds" in done.stdout
    assert runs_per_date(project) == Counter({"2025-01-18": 1})


def test_a_pipeline_whose_upstream_failed_for_a_date_is_not_run_for_it(tmp_path: Path) -> None:
    """As `sluice run --all`: the downstream date is skipped, said and recorded, not built
    from stale data."""
    project = make_project(
        tmp_path, catchup="latest", checks=[{"row_count_between": {"min_value": 10}}]
    )
    downstream = {
        "version": 1,
        "pipeline": "weekly",
        "depends_on": ["daily"],
        "schedule": {"cron": "0 2 * * *", "catchup": "latest"},
        "sources": {"daily": {"type": "delta", "path": "../lake/daily"}},
        "sinks": [{"type": "delta", "path": "../lake/weekly", "mode": "append"}],
    }
    (tmp_path / "pipelines" / "weekly.yaml").write_text(yaml.safe_dump(downstream))
    run_once(project, FIRST_SEEN)

    done = subprocess.run(
        scheduler_command(project, THREE_DAYS_LATER), capture_output=True, text=True, timeout=300
    )

    assert "daily 2025-01-18: failed" in done.stdout
    assert "weekly 2025-01-18: skipped (upstream daily failed for 2025-01-18)" in done.stdout
    assert "`sluice run weekly --date 2025-01-18`" in done.stdout
    assert "weekly 2025-01-18: starting" not in done.stdout
    claims = ScheduleState(tmp_path / ".sluice" / "runs.db").claims("weekly")
    assert [(c.logical_date, c.status) for c in claims] == [("2025-01-18", "upstream_failed")]
    assert not (tmp_path / "lake" / "weekly").exists()


def test_an_upstream_date_rerun_by_hand_after_it_failed_lets_the_downstream_run(
    tmp_path: Path,
) -> None:
    project = make_project(
        tmp_path, catchup="latest", checks=[{"row_count_between": {"min_value": 10}}]
    )
    spec_path = tmp_path / "pipelines" / "daily.yaml"
    downstream = {
        "version": 1,
        "pipeline": "weekly",
        "depends_on": ["daily"],
        "schedule": {"cron": "0 5 * * *", "catchup": "latest"},
        "sources": {"daily": {"type": "delta", "path": "../lake/daily"}},
        "sinks": [{"type": "delta", "path": "../lake/weekly", "mode": "append"}],
    }
    (tmp_path / "pipelines" / "weekly.yaml").write_text(yaml.safe_dump(downstream))
    run_once(project, FIRST_SEEN)
    failing = subprocess.run(
        scheduler_command(project, "2025-01-18T03:00:00+00:00"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "daily 2025-01-18: failed" in failing.stdout
    fixed = yaml.safe_load(spec_path.read_text())
    fixed.pop("checks")
    spec_path.write_text(yaml.safe_dump(fixed))
    by_hand = subprocess.run(
        [SLUICE, "run", "daily", "--date", "2025-01-18", "--project", str(project)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert by_hand.returncode == 0, by_hand.stdout + by_hand.stderr

    later = run_once(project, "2025-01-18T06:00:00+00:00")

    assert "weekly 2025-01-18: succeeded" in later.stdout, later.stdout


def test_a_restarted_scheduler_resumes_from_its_last_tick(tmp_path: Path) -> None:
    project = make_project(tmp_path, catchup="all")
    run_once(project, FIRST_SEEN)
    run_once(project, THREE_DAYS_LATER)

    run_once(project, "2025-01-20T03:00:00+00:00")

    assert runs_per_date(project) == Counter({d: 1 for d in [*DATES, "2025-01-19", "2025-01-20"]})


def test_catchup_latest_runs_only_the_newest_missed_date(tmp_path: Path) -> None:
    project = make_project(tmp_path, catchup="latest")
    run_once(project, FIRST_SEEN)

    run_once(project, THREE_DAYS_LATER)

    assert runs_per_date(project) == Counter({"2025-01-18": 1})


def test_catchup_none_skips_missed_dates_and_runs_a_date_that_is_due_now(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path, catchup="none")
    run_once(project, FIRST_SEEN)

    run_once(project, THREE_DAYS_LATER)
    assert runs_per_date(project) == Counter()

    run_once(project, "2025-01-19T02:00:20+00:00")
    assert runs_per_date(project) == Counter({"2025-01-19": 1})


def test_two_schedulers_at_once_never_run_the_same_date_twice(tmp_path: Path) -> None:
    project = make_project(tmp_path, catchup="all")
    run_once(project, FIRST_SEEN)

    both = [
        subprocess.Popen(
            scheduler_command(project, THREE_DAYS_LATER),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in both]

    assert [p.returncode for p in both] == [0, 0], outputs
    assert runs_per_date(project) == Counter({d: 1 for d in DATES})


def test_sigterm_stops_the_scheduler_with_exit_code_zero(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    process = subprocess.Popen(
        [SLUICE, "scheduler", "--project", str(project), "--tick", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    assert "scheduler started" in first, first
    time.sleep(1.5)

    process.send_signal(signal.SIGTERM)
    rest = process.communicate(timeout=60)[0]

    assert process.returncode == 0, rest
    assert "scheduler stopped" in rest


def test_a_reload_keeps_the_previous_spec_of_a_pipeline_whose_edit_broke_it(
    tmp_path: Path,
) -> None:
    from sluiceway.cli_orchestrate import find_project
    from sluiceway.cli_scheduler import _load_specs_quietly

    project = make_project(tmp_path)
    daily = tmp_path / "pipelines" / "daily.yaml"
    other = yaml.safe_load(daily.read_text()) | {"pipeline": "other"}
    (tmp_path / "pipelines" / "other.yaml").write_text(yaml.safe_dump(other))
    context = find_project(str(project))
    assert context is not None
    first = _load_specs_quietly(context, {})
    daily.write_text(daily.read_text().replace("mode: overwrite_partition", "mode: overwrite"))
    (tmp_path / "pipelines" / "new.yaml").write_text("version: 1\npipeline: new\nsources: {}\n")

    again = _load_specs_quietly(context, first)

    assert sorted(first) == ["daily", "other"]
    assert sorted(again) == ["daily", "other"]
    assert again["daily"] is first["daily"]  # the broken edit is not taken
