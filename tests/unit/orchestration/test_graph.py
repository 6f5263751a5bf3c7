"""The project's dependency graph (unknown names, cycles, waves, downstream), the parallel
runner over it, and the backfill date selection from a real run store."""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluiceway.core.accounting import RowAccounting
from sluiceway.core.project import Project
from sluiceway.core.results import RunResult
from sluiceway.core.runstore import RunRecord, RunStore
from sluiceway.errors import SpecError
from sluiceway.orchestration.backfill import dates_between, plan_dates
from sluiceway.orchestration.graph import (
    build_graph,
    downstream,
    find_cycle,
    load_project_specs,
    waves,
)
from sluiceway.orchestration.parallel import run_graph

DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def write_specs(folder: Path, depends: dict[str, list[str]]) -> Project:
    for name, deps in depends.items():
        spec: dict[str, Any] = {
            "version": 1,
            "pipeline": name,
            "depends_on": deps,
            "sources": {"rows": {"type": "files", "path": "data.csv"}},
            "sinks": [{"type": "delta", "path": f"lake/{name}"}],
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return Project(version=1, project="p", pipelines=["*.yaml"])


def result(name: str, status: str) -> RunResult:
    return RunResult(f"run-{name}", name, date(2025, 1, 1), status, RowAccounting())


def test_a_diamond_loads_into_waves_and_its_downstream_closure(tmp_path) -> None:
    project = write_specs(tmp_path, DIAMOND)

    graph = build_graph(load_project_specs(project, tmp_path))

    assert waves(graph.depends_on, graph.specs) == [["a"], ["b", "c"], ["d"]]
    assert downstream(graph, ["b"]) == {"b", "d"}
    assert downstream(graph, ["a"]) == {"a", "b", "c", "d"}
    assert graph.specs["d"].path == (tmp_path / "d.yaml").resolve()


def test_an_unknown_dependency_names_the_pipeline_the_file_line_and_a_suggestion(
    tmp_path,
) -> None:
    project = write_specs(tmp_path, {"orders": [], "report": ["ordres"]})

    with pytest.raises(SpecError) as caught:
        build_graph(load_project_specs(project, tmp_path))

    (problem,) = caught.value.problems
    assert "pipeline 'report' depends on unknown pipeline 'ordres'" in problem.message
    assert "Did you mean 'orders'?" in problem.message
    assert problem.path == "depends_on[0]" and problem.line == 3
    assert problem.file == str((tmp_path / "report.yaml").resolve())


def test_a_cycle_is_a_spec_error_that_spells_out_the_cycle(tmp_path) -> None:
    project = write_specs(tmp_path, {"a": ["c"], "b": ["a"], "c": ["b"], "x": []})

    with pytest.raises(SpecError) as caught:
        build_graph(load_project_specs(project, tmp_path))

    assert "dependency cycle: a → c → b → a" in str(caught.value)


def test_find_cycle_returns_none_for_an_acyclic_graph_and_a_self_loop_otherwise() -> None:
    assert find_cycle(DIAMOND) is None
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def test_two_specs_with_one_pipeline_name_are_reported(tmp_path) -> None:
    write_specs(tmp_path, {"a": []})
    (tmp_path / "copy.yaml").write_text((tmp_path / "a.yaml").read_text())
    project = Project(version=1, project="p", pipelines=["*.yaml"])

    with pytest.raises(SpecError, match="pipeline name 'a' is also used by"):
        load_project_specs(project, tmp_path)


def test_a_failure_skips_everything_downstream_but_not_the_independent_branch() -> None:
    started: list[str] = []

    def run_one(name: str) -> RunResult:
        started.append(name)
        return result(name, "failed" if name == "b" else "succeeded")

    outcomes = run_graph(DIAMOND | {"e": ["d"]}, "abcde", run_one, workers=2)

    assert {n: o.status for n, o in outcomes.items()} == {
        "a": "succeeded",
        "b": "failed",
        "c": "succeeded",
        "d": "skipped",
        "e": "skipped",
    }
    assert outcomes["d"].reason == "upstream b failed"
    assert outcomes["e"].reason == "upstream d skipped"
    assert sorted(started) == ["a", "b", "c"]


def test_no_more_than_the_worker_count_run_at_once_and_dependents_wait() -> None:
    lock = threading.Lock()
    running: set[str] = set()
    peak: list[int] = []
    seen_when_started: dict[str, set[str]] = {}
    finished: set[str] = set()

    def run_one(name: str) -> RunResult:
        with lock:
            running.add(name)
            peak.append(len(running))
            seen_when_started[name] = set(finished)
        time.sleep(0.05)
        with lock:
            running.discard(name)
            finished.add(name)
        return result(name, "succeeded")

    wide = {f"p{i}": ["root"] for i in range(6)} | {"root": [], "last": ["p0", "p5"]}
    run_graph(wide, wide, run_one, workers=3)

    assert max(peak) == 3
    assert seen_when_started["last"] >= {"p0", "p5"}
    assert all("root" in seen_when_started[f"p{i}"] for i in range(6))


def test_a_stop_request_starts_none_of_the_ready_pipelines_left() -> None:
    """More pipelines are ready than workers: those not started when the stop comes never
    start (none waits queued in the pool)."""
    stop = threading.Event()
    started: list[str] = []

    def run_one(name: str) -> RunResult:
        started.append(name)
        stop.set()  # the stop request comes while the first pipeline runs
        time.sleep(0.1)
        return result(name, "succeeded")

    outcomes = run_graph({n: [] for n in "abcd"}, "abcd", run_one, workers=1, stop=stop)

    assert started == ["a"]
    assert {n: o.status for n, o in outcomes.items()} == {
        "a": "succeeded",
        "b": "skipped",
        "c": "skipped",
        "d": "skipped",
    }


def test_an_error_raised_by_one_run_fails_only_that_pipeline() -> None:
    def run_one(name: str) -> RunResult:
        if name == "c":
            raise RuntimeError("boom")
        return result(name, "succeeded")

    outcomes = run_graph(DIAMOND, ["a", "b", "c"], run_one, workers=2)

    assert outcomes["b"].status == "succeeded"
    assert outcomes["c"].status == "failed" and "RuntimeError: boom" in (outcomes["c"].reason or "")


def record(run_id: str, day: str, status: str, started: str) -> RunRecord:
    return RunRecord(
        run_id=run_id, pipeline="daily", logical_date=day, status=status, started_at=started
    )


def test_reprocess_selection_reads_the_latest_run_of_each_date(tmp_path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.save(record("r1", "2025-01-01", "succeeded", "20250102T010000"))
    store.save(record("r2", "2025-01-02", "succeeded", "20250103T010000"))
    store.save(record("r3", "2025-01-02", "failed", "2025-01-04T01:00:00+00:00"))
    store.save(record("r4", "2025-01-03", "failed", "20250104T010000"))
    store.save(record("r5", "2025-01-03", "succeeded", "20250105T010000"))
    days = dates_between(date(2025, 1, 1), date(2025, 1, 4))

    def plan(mode: Any) -> list[tuple[str, str]]:
        return [
            (p.logical_date.isoformat(), p.reason) for p in plan_dates(store, "daily", days, mode)
        ]

    assert plan("missing") == [("2025-01-04", "missing")]
    assert plan("failed") == [("2025-01-02", "failed")]
    assert [d for d, _ in plan("all")] == ["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04"]


def test_a_reversed_date_range_is_refused() -> None:
    with pytest.raises(ValueError, match="is after --to"):
        dates_between(date(2025, 1, 5), date(2025, 1, 1))
