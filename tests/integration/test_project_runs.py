"""`sluice run --all / NAME --downstream` on a real project: four pipelines a → b, a → c,
{b, c} → d, with CSV and Delta sources and Delta sinks, run as `sluice` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from deltalake import DeltaTable

import sluiceway
from sluiceway.core.runstore import RunStore
from sluiceway.errors import SpecError

SLUICE = [sys.executable, "-c", "from sluiceway.cli import entry; entry()"]
SLOW = "SELECT * FROM input WHERE (SELECT count(*) FROM range(60000000) t(x) WHERE x % 7 = 3) > 0"
PROJECT = {
    "version": 1,
    "project": "shop",
    "pipelines": ["pipelines/"],
    "state_dir": "state",
    "max_workers": 2,
    "lineage": {"transport": "none"},
}


def sluice(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    environ["COLUMNS"] = "300"
    return subprocess.run(
        [*SLUICE, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300
    )


def spec(name: str, sources: dict[str, Any], *, depends_on: list[str], sql: str) -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": name,
        "depends_on": depends_on,
        "sources": sources,
        "steps": [{"sql": sql}],
        "sinks": [{"type": "delta", "path": f"../lake/{name}", "mode": "append"}],
    }


def write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture()
def shop(tmp_path: Path) -> Path:
    """a reads a CSV; b and c read a's table (slowly); d reads b's table and needs c's."""
    write(tmp_path / "sluice.yaml", PROJECT)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "orders.csv").write_text("id,amount\n1,2.5\n2,3.5\n3,4.5\n")
    csv = {"orders": {"type": "files", "path": "../data/orders.csv", "format": "csv"}}
    delta_a = {"a_rows": {"type": "delta", "path": "../lake/a"}}
    delta_bc = {
        "b_rows": {"type": "delta", "path": "../lake/b"},
        "c_rows": {"type": "delta", "path": "../lake/c"},
    }
    needs_c = "SELECT * FROM input WHERE (SELECT count(*) FROM c_rows) > 0"
    specs = {
        "a": spec("a", csv, depends_on=[], sql="SELECT * FROM input"),
        "b": spec("b", delta_a, depends_on=["a"], sql=SLOW),
        "c": spec("c", delta_a, depends_on=["a"], sql=SLOW),
        "d": spec("d", delta_bc, depends_on=["b", "c"], sql=needs_c),
    }
    for name, data in specs.items():
        write(tmp_path / "pipelines" / f"{name}.yaml", data)
    return tmp_path


def events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def moment(found: list[dict[str, Any]], pipeline: str, event: str) -> datetime:
    (record,) = [e for e in found if e["pipeline"] == pipeline and e["event"] == event]
    return datetime.fromisoformat(record["ts"])


def rows(table: Path) -> int:
    return DeltaTable(str(table)).to_pyarrow_table().num_rows


def runs_of(project: Path, pipeline: str) -> int:
    return len(RunStore(project / "state" / "runs.db").list(pipeline=pipeline, limit=100))


def test_run_all_runs_in_dependency_order_with_independent_pipelines_in_parallel(shop) -> None:
    done = sluice("run", "--all", "--workers", "2", "--log-format", "json", cwd=shop)

    assert done.returncode == 0, done.stderr
    summary = {p["pipeline"]: p for p in json.loads(done.stdout)}
    assert {n: p["status"] for n, p in summary.items()} == dict.fromkeys("abcd", "succeeded")
    assert summary["d"]["accounting"]["rows_written"] == 3
    found = events(done.stderr)
    for upstream in ("b", "c"):
        assert moment(found, upstream, "run_started") >= moment(found, "a", "run_succeeded")
        assert moment(found, "d", "run_started") >= moment(found, upstream, "run_succeeded")
    assert moment(found, "b", "run_started") < moment(found, "c", "run_succeeded")
    assert moment(found, "c", "run_started") < moment(found, "b", "run_succeeded")
    assert rows(shop / "lake" / "d") == 3
    assert (shop / "state" / "runs.db").is_file() and not (shop / ".sluice").exists()


def test_a_failed_pipeline_skips_its_downstream_while_the_other_branch_completes(shop) -> None:
    broken = yaml.safe_load((shop / "pipelines" / "b.yaml").read_text())
    broken["steps"] = [{"sql": "SELECT no_such_column FROM input"}]
    write(shop / "pipelines" / "b.yaml", broken)

    done = sluice("run", "--all", cwd=shop)

    assert done.returncode == 1
    lines = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if "│" in line}
    assert "succeeded" in lines["a"] and "succeeded" in lines["c"]
    assert "failed" in lines["b"] and "no_such_column" in lines["b"]
    assert "skipped" in lines["d"] and "upstream b failed" in lines["d"]
    assert rows(shop / "lake" / "c") == 3
    assert not (shop / "lake" / "d").exists()
    assert runs_of(shop, "d") == 0
    assert "Traceback" not in done.stderr

    by_hand = sluice("run", "d", "--date", "2025-01-15", cwd=shop)  # b has no run that date
    today = sluice("run", "d", cwd=shop)  # b failed today

    assert "upstream" not in by_hand.stderr
    assert "upstream b failed for" in today.stderr and "sluice run b --downstream" in today.stderr
    assert "upstream c" not in today.stderr


def test_sigterm_lets_the_running_pipelines_finish_and_starts_no_other(shop) -> None:
    """What a service manager sends to stop `sluice run --all`: b and c (running) publish
    and are recorded, d (not started) is skipped as stopped, the command exits 143."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    process = subprocess.Popen(
        [*SLUICE, "run", "--all", "--workers", "2", "--log-format", "json"],
        cwd=shop,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    started: set[str] = set()
    for line in process.stderr:  # until b and c run (a has succeeded)
        if line.startswith("{") and json.loads(line)["event"] == "run_started":
            started.add(json.loads(line)["pipeline"])
        if {"b", "c"} <= started:
            break
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)

    assert process.returncode == 143, err[-2000:]
    summary = {p["pipeline"]: p for p in json.loads(out)}
    assert {n: p["status"] for n, p in summary.items()} == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "succeeded",
        "d": "skipped",
    }
    assert "stopped before it started" in summary["d"]["reason"]
    assert "SIGTERM: finishing the running pipelines" in err
    assert rows(shop / "lake" / "b") == rows(shop / "lake" / "c") == 3
    assert not (shop / "lake" / "d").exists() and runs_of(shop, "d") == 0
    statuses = [r.status for r in RunStore(shop / "state" / "runs.db").list(limit=10)]
    assert sorted(statuses) == ["succeeded"] * 3


def test_a_pipeline_writing_a_table_another_one_masks_otherwise_is_never_run(shop) -> None:
    """a writes lake/a with `amount` in clear; a fix-up pipeline writes the same table and
    masks it: the table would hold both, so `a` (and what depends on it) is left out, named,
    and the rest of the project runs."""
    fixes = spec(
        "a_fixes",
        {"orders": {"type": "files", "path": "../data/orders.csv", "format": "csv"}},
        depends_on=[],
        sql="SELECT * FROM input",
    )
    fixes["sinks"] = [{"type": "delta", "path": "../lake/a", "mode": "append"}]
    fixes["pii"] = {"amount": "redact"}
    write(shop / "pipelines" / "a_fixes.yaml", fixes)

    done = sluice("run", "--all", cwd=shop)
    checked = sluice("validate", "pipelines/a.yaml", cwd=shop)

    assert done.returncode == 1, done.stdout + done.stderr
    for output in (done.stderr, checked.stdout + checked.stderr):
        assert "pipeline 'a' writes" in output and "'a_fixes' masks column 'amount'" in output
        assert "pii: {amount: redact}" in output
    assert checked.returncode == 1
    lines = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if "│" in line}
    for left_out in "abcd":
        assert "failed" in lines[left_out] and "not run" in lines[left_out]
    assert "left out of this run: a, b, c, d" in done.stderr
    by_path = sluice("run", "pipelines/a.yaml", cwd=shop)
    by_name = sluice("run", "a", cwd=shop)
    for single in (by_path, by_name):
        assert single.returncode == 2 and "'a_fixes' masks column 'amount'" in single.stderr
    with pytest.raises(SpecError, match="'a_fixes' masks column 'amount'"):
        sluiceway.run(shop / "pipelines" / "a.yaml")
    assert runs_of(shop, "a") == 0 and runs_of(shop, "a_fixes") == 1


def test_a_broken_masking_spec_still_holds_its_table_and_downstream_lists_what_it_leaves_out(
    shop,
) -> None:
    """b masks `amount` in lake/b but its spec is broken; a fix-up pipeline writing lake/b in
    clear is left out all the same. `a --downstream` lists b and d (b broken, d below it)."""
    masked = yaml.safe_load((shop / "pipelines" / "b.yaml").read_text())
    masked["pii"] = {"amount": "redact"}
    masked["sinks"][0]["mode"] = "apend"
    write(shop / "pipelines" / "b.yaml", masked)
    fixes = spec(
        "b_fix",
        {"orders": {"type": "files", "path": "../data/orders.csv", "format": "csv"}},
        depends_on=[],
        sql="SELECT * FROM input",
    )
    fixes["sinks"] = [{"type": "delta", "path": "../lake/b", "mode": "append"}]
    write(shop / "pipelines" / "b_fix.yaml", fixes)

    all_runs = sluice("run", "--all", "--log-format", "json", cwd=shop)
    alone = sluice("run", "pipelines/b_fix.yaml", cwd=shop)
    below = sluice("run", "a", "--downstream", "--log-format", "json", cwd=shop)

    summary = {p["pipeline"]: p["status"] for p in json.loads(all_runs.stdout)}
    assert summary == {
        "a": "succeeded",
        "c": "succeeded",
        "b": "failed",
        "b_fix": "failed",
        "d": "failed",
    }
    assert alone.returncode == 2 and "'b' masks column 'amount'" in alone.stderr
    assert not (shop / "lake" / "b").exists()
    assert below.returncode == 1
    assert {p["pipeline"]: p["status"] for p in json.loads(below.stdout)} == {
        "a": "succeeded",
        "c": "succeeded",
        "b": "failed",
        "d": "failed",
    }


def test_backfill_downstream_reruns_the_dependents_for_the_dates_that_succeeded(shop) -> None:
    broken = yaml.safe_load((shop / "pipelines" / "c.yaml").read_text())
    # c fails on 2025-01-02 only: no row that day, and a check wants one
    broken["steps"] = [
        {
            "sql": {
                "query": "SELECT * FROM input WHERE logical_date() <> DATE '2025-01-02'",
                "rows": "filter",
            }
        }
    ]
    broken["checks"] = [{"row_count_between": {"min_value": 1}}]
    write(shop / "pipelines" / "c.yaml", broken)

    done = sluice(
        "backfill", "a", "--from", "2025-01-01", "--to", "2025-01-03", "--downstream", cwd=shop
    )

    assert done.returncode == 1, done.stdout + done.stderr
    store = RunStore(shop / "state" / "runs.db")
    ran = {
        name: sorted(
            r.logical_date for r in store.list(pipeline=name, limit=50) if r.status == "succeeded"
        )
        for name in "abcd"
    }
    assert ran["a"] == ran["b"] == ["2025-01-01", "2025-01-02", "2025-01-03"]
    assert ran["c"] == ["2025-01-01", "2025-01-03"]
    assert ran["d"] == ["2025-01-01", "2025-01-03"]  # held back where c failed
    assert "d: held back for 2025-01-02" in done.stdout
    assert "Traceback" not in done.stderr


def test_run_downstream_runs_the_pipeline_and_its_dependents_only(shop) -> None:
    assert sluice("run", "--all", cwd=shop).returncode == 0

    done = sluice("run", "b", "--downstream", "--log-format", "json", cwd=shop / "pipelines")

    assert done.returncode == 0, done.stderr
    assert [p["pipeline"] for p in json.loads(done.stdout)] == ["b", "d"]
    assert {n: runs_of(shop, n) for n in "abcd"} == {"a": 1, "b": 2, "c": 1, "d": 2}


def test_run_by_name_finds_the_project_from_a_subfolder_and_records_in_its_state_dir(
    shop,
) -> None:
    done = sluice("run", "a", "--date", "2025-01-15", cwd=shop / "pipelines")

    assert done.returncode == 0, done.stderr
    assert "SUCCEEDED a" in done.stdout
    (record,) = RunStore(shop / "state" / "runs.db").list(pipeline="a")
    assert record.logical_date == "2025-01-15" and record.status == "succeeded"
    assert not (shop / "pipelines" / ".sluice").exists()


def test_an_unknown_pipeline_name_is_reported_with_a_suggestion(shop) -> None:
    done = sluice("run", "bb", cwd=shop)

    assert done.returncode == 2
    assert "no pipeline 'bb'" in done.stderr and "Did you mean 'b'?" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_dependency_cycle_is_a_spec_error_that_names_the_cycle(shop) -> None:
    looped = yaml.safe_load((shop / "pipelines" / "a.yaml").read_text())
    looped["depends_on"] = ["d"]
    write(shop / "pipelines" / "a.yaml", looped)

    done = sluice("run", "--all", cwd=shop)

    assert done.returncode == 2
    assert "dependency cycle: a → d → b → a" in done.stderr
    assert "a.yaml" in done.stderr
    assert not (shop / "lake").exists()


def test_an_unknown_depends_on_name_leaves_that_pipeline_out_with_file_and_suggestion(
    shop,
) -> None:
    typo = yaml.safe_load((shop / "pipelines" / "d.yaml").read_text())
    typo["depends_on"] = ["b", "cc"]
    write(shop / "pipelines" / "d.yaml", typo)

    done = sluice("run", "--all", cwd=shop)
    checked = sluice("validate", "pipelines/d.yaml", cwd=shop)

    assert done.returncode == 1
    assert "pipeline 'd' depends on unknown pipeline 'cc'" in done.stderr
    assert "Did you mean 'c'?" in done.stderr and "d.yaml:3" in done.stderr
    assert "pipeline 'd' depends on unknown pipeline 'cc'" in checked.stdout + checked.stderr
    assert (rows(shop / "lake" / "b"), rows(shop / "lake" / "c")) == (3, 3)
    assert not (shop / "lake" / "d").exists()


def test_a_broken_spec_leaves_out_itself_and_its_downstream_only(shop) -> None:
    """One team's broken spec does not stop the project: the others run, and `sluice run`
    of a pipeline whose spec loads runs even when its dependency's spec does not."""
    broken = yaml.safe_load((shop / "pipelines" / "b.yaml").read_text())
    broken["sinks"][0]["mode"] = "apend"
    write(shop / "pipelines" / "b.yaml", broken)

    done = sluice("run", "--all", cwd=shop)
    alone = sluice("run", "d", cwd=shop)
    refused = sluice("run", "b", cwd=shop)

    assert done.returncode == 1, done.stdout + done.stderr
    lines = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if "│" in line}
    assert "succeeded" in lines["a"] and "succeeded" in lines["c"]
    assert "failed" in lines["b"] and "failed" in lines["d"] and "not run" in lines["d"]
    assert "b.yaml" in done.stderr and "apend" in done.stderr
    assert "left out of this run: b, d" in done.stderr
    # d runs alone (it reads b's table, which b never wrote here: a run error, not a spec one)
    assert alone.returncode == 1 and "no Delta table at" in alone.stdout + alone.stderr
    assert "apend" not in alone.stdout + alone.stderr and runs_of(shop, "d") == 1
    assert refused.returncode == 2 and "apend" in refused.stderr


def test_all_and_a_pipeline_name_together_are_a_usage_error(shop) -> None:
    done = sluice("run", "a", "--all", cwd=shop)

    assert done.returncode == 2
    assert "not both" in done.stderr
