"""The `sluice` command, run as a real process: validate, run, runs, show, dlq, demo, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml
from deltalake import DeltaTable

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "clickstream_batch" / "pipeline.yaml"
KEYS = {
    "SLUICE_HMAC_KEY": "cli-hmac-key",
    "SLUICE_MASK_SALT": "cli-salt",
    "SLUICE_ENCRYPTION_KEY": "3c" * 32,
}
CLEAR_PII = (
    "alice@example.com",
    "bob@example.org",
    "grace@localhost",
    "203.0.113.57",
    "198.51.100.23",
    "192.0.2.200",
)

SPEC = textwrap.dedent(
    """\
    version: 1
    pipeline: orders
    sources:
      events:
        type: files
        path: data/
        format: csv
        contract:
          columns:
            event_id: {type: string, nullable: false}
            event_type: {type: string, values: [view, buy]}
            email: {type: string, format: email}
            ip_address: {type: string, format: ip}
    pii:
      email: hmac
      ip_address: truncate_ip
    sinks:
      - type: delta
        path: lake/orders
        mode: append
    """
)
EVENTS = (
    "event_id,event_type,email,ip_address\n"
    "e1,view,alice@example.com,203.0.113.57\n"
    "e2,buy,bob@example.org,198.51.100.23\n"
    "e3,refund,bob@example.org,198.51.100.23\n"
    "e4,view,grace@localhost,192.0.2.200\n"
)
BAD_SPEC = textwrap.dedent(
    """\
    version: 1
    pipeline: orders
    sources:
      events:
        type: file
        path: data/
    steps:
      - dedupe: [event_id]
    sinks:
      - type: delta
        path: lake/orders
    """
)


def sluice_executable() -> str:
    beside = Path(sys.executable).parent / "sluice"
    found = str(beside) if beside.exists() else shutil.which("sluice")
    assert found, "the `sluice` console script is not installed: run `pip install -e .` in the venv"
    return found


def sluice(
    *args: str, cwd: Path, keys: dict[str, str] | None = None, columns: int = 400
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    environ.update(KEYS if keys is None else keys)
    environ["COLUMNS"] = str(columns)
    return subprocess.run(
        [sluice_executable(), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipeline.yaml").write_text(SPEC)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "events.csv").write_text(EVENTS)
    return tmp_path


def run_logged(project: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    """`sluice run` of the project's spec with JSON logs: the process and its summary."""
    done = sluice(
        "run",
        "pipeline.yaml",
        "--date",
        "2025-01-15",
        "--log-format",
        "json",
        "--state-dir",
        ".sluice",
        cwd=project,
    )
    return done, json.loads(done.stdout.strip().splitlines()[-1])


def run_json(project: Path) -> dict[str, object]:
    done, summary = run_logged(project)
    assert done.returncode == 0, done.stderr
    return summary


def test_validate_reports_each_problem_with_file_line_and_a_suggestion(tmp_path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_SPEC)

    done = sluice("validate", "bad.yaml", cwd=tmp_path)

    assert done.returncode == 1
    assert "bad.yaml:5" in done.stderr and "sources.events.type" in done.stderr
    assert "Did you mean 'files'?" in done.stderr
    assert "bad.yaml:8" in done.stderr and "steps[0].dedupe" in done.stderr
    assert "Did you mean 'dedup'?" in done.stderr
    assert "Traceback" not in done.stderr


def test_validate_reports_an_unknown_dependency_and_a_cycle(tmp_path) -> None:
    def write(name: str, depends_on: list[str]) -> None:
        spec = {
            "version": 1,
            "pipeline": name,
            "depends_on": depends_on,
            "sources": {"s": {"type": "files", "path": "x.csv"}},
            "sinks": [{"type": "delta", "path": f"lake/{name}"}],
        }
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))

    write("orders", ["custmers"])
    unknown = sluice("validate", "orders.yaml", cwd=tmp_path)
    write("orders", ["revenue"])
    write("revenue", ["orders"])
    cycle = sluice("validate", "orders.yaml", "revenue.yaml", cwd=tmp_path)

    assert unknown.returncode == 1
    assert "unknown pipeline 'custmers'" in unknown.stderr
    assert cycle.returncode == 1 and "dependency cycle" in cycle.stderr


def test_validate_judges_only_the_specs_given_against_the_loadable_ones(tmp_path) -> None:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (tmp_path / "sluice.yaml").write_text("version: 1\nproject: p\npipelines: [pipelines/]\n")

    def write(name: str, depends_on: list[str], source_type: str = "files") -> None:
        spec = {
            "version": 1,
            "pipeline": name,
            "depends_on": depends_on,
            "sources": {"s": {"type": source_type, "path": "x.csv"}},
            "sinks": [{"type": "delta", "path": f"lake/{name}"}],
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))

    write("a", ["b"])
    write("b", [])
    write("c", [], source_type="filez")  # broken: not a's business
    write("d", ["zzz"])  # d's own problem

    done = sluice("validate", "pipelines/a.yaml", cwd=tmp_path)

    assert done.returncode == 0, done.stderr


def test_validate_accepts_the_example(tmp_path) -> None:
    done = sluice("validate", str(EXAMPLE), cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "clickstream_batch" in done.stdout
    assert "2 source(s), 2 step(s), 6 check(s), 1 sink(s)" in done.stdout


def test_run_with_json_logs_prints_one_json_event_per_line_and_a_json_summary(project) -> None:
    done = sluice(
        "run",
        "pipeline.yaml",
        "--date",
        "2025-01-15",
        "--log-format",
        "json",
        "--state-dir",
        ".sluice",
        cwd=project,
    )

    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    names = [e["event"] for e in events]
    assert names[0] == "run_started" and names[-1] == "run_succeeded"
    assert {"source_read", "commit_done", "dead_letter_written"} <= set(names)
    summary = json.loads(done.stdout)
    assert summary["status"] == "succeeded"
    assert summary["logical_date"] == "2025-01-15"
    assert summary["accounting"]["rows_in"] == 4
    assert summary["accounting"]["rows_written"] == 2
    assert summary["accounting"]["rows_rejected"] == 2
    assert {e["run_id"] for e in events} == {summary["run_id"]}
    assert DeltaTable(str(project / "lake" / "orders")).to_pyarrow_table().num_rows == 2
    for value in CLEAR_PII:
        assert value not in done.stdout + done.stderr


def test_runs_lists_runs_and_show_finds_one_by_prefix(project) -> None:
    first = run_json(project)
    second = run_json(project)

    listed = sluice("runs", "--state-dir", ".sluice", cwd=project, columns=80)
    shown = sluice("show", str(second["run_id"])[:20], "--state-dir", ".sluice", cwd=project)

    assert listed.returncode == 0, listed.stderr
    assert str(first["run_id"]) in listed.stdout and str(second["run_id"]) in listed.stdout
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["run_id"] == second["run_id"]
    assert (first["accounting"]["rows_in"], first["accounting"]["rows_written"]) == (4, 2)
    # The same inputs again: append is exactly-once, so the rerun processes and writes nothing.
    assert (record["status"], record["rows_in"], record["rows_written"]) == ("succeeded", 0, 0)
    assert record["details"]["sinks"][0]["skipped"] is True


def test_a_run_that_published_nothing_shows_no_rows_written(project) -> None:
    spec = yaml.safe_load((project / "pipeline.yaml").read_text())
    spec["checks"] = [{"row_count_between": {"max_value": 1}}]  # fails: nothing is published
    (project / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    done, summary = run_logged(project)

    listed = sluice("runs", "--state-dir", ".sluice", cwd=project, columns=120)

    assert done.returncode == 1 and summary["published"] is False
    [row] = [line for line in listed.stdout.splitlines() if str(summary["run_id"]) in line]
    assert row.split()[3:6] == ["failed", "4", "–"]


def test_show_of_an_unknown_run_fails_with_a_hint(project) -> None:
    run_json(project)

    done = sluice("show", "19990101", "--state-dir", ".sluice", cwd=project)

    assert done.returncode == 2
    assert "no run '19990101'" in done.stderr
    assert "Traceback" not in done.stderr


def test_dlq_lists_rejected_rows_without_clear_pii(project) -> None:
    summary = run_json(project)

    table = sluice("dlq", "pipeline.yaml", "--state-dir", ".sluice", cwd=project)
    as_json = sluice(
        "dlq", "pipeline.yaml", "--format", "json", "--state-dir", ".sluice", cwd=project
    )

    assert table.returncode == 0 and as_json.returncode == 0, table.stderr + as_json.stderr
    assert "2 dead-letter row(s)" in table.stdout
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {r["run_id"] for r in rows} == {summary["run_id"]}
    assert sorted((e["column"], e["rule"]) for r in rows for e in r["errors"]) == [
        ("email", "format"),
        ("event_type", "values"),
    ]
    assert all("raw_payload" not in r for r in rows)
    for value in CLEAR_PII:
        assert value not in table.stdout + as_json.stdout


def test_dlq_says_when_it_shows_fewer_rows_than_there_are(project) -> None:
    run_json(project)

    one = sluice(
        "dlq",
        "pipeline.yaml",
        "--format",
        "json",
        "--limit",
        "1",
        "--state-dir",
        ".sluice",
        cwd=project,
    )
    every = sluice(
        "dlq",
        "pipeline.yaml",
        "--format",
        "json",
        "--limit",
        "0",
        "--state-dir",
        ".sluice",
        cwd=project,
    )

    assert len(one.stdout.splitlines()) == 1
    assert "showing 1 of 2 dead letters; --limit 0 shows every one" in one.stderr
    assert len(every.stdout.splitlines()) == 2 and "showing" not in every.stderr


def test_demo_runs_the_example_and_prints_the_accounting_and_tables(tmp_path) -> None:
    demo = tmp_path / "demo"

    done = sluice("demo", "--dir", str(demo), "--rows", "2000", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    manifest = json.loads((demo / "data" / "manifest.json").read_text())
    d = manifest["defects"]
    rejected = sum(
        d[k]
        for k in (
            "null_user_id",
            "unknown_event_type",
            "negative_price",
            "malformed_timestamp",
            "bad_email",
            "malformed_lines",
            "invalid_utf8_lines",
        )
    )
    written = manifest["rows"] - rejected - d["duplicates"]
    lines = done.stdout.splitlines()
    header = next(line for line in lines if "written" in line and "deduplicated" in line)
    assert header.split()[1:-1:2] == ["in", "written", "rejected", "deduplicated", "filtered"]
    values = lines[lines.index(header) + 2].split()[1:-1:2]
    assert values == [f"{n:,}" for n in (manifest["rows"], written, rejected, d["duplicates"], 0)]
    out = " ".join(done.stdout.split())
    assert "SUCCEEDED" in out
    assert f"table: {demo / 'lake' / 'silver' / 'clickstream'} (version 0)" in out
    assert f"dead-letter table: {demo / 'lake' / 'dead_letter'}" in out
    # The products lookup rejects a row too: in the dead letters, not in the rows above.
    letters = DeltaTable(str(demo / "lake" / "dead_letter")).to_pyarrow_table()
    from_products = letters.filter(pc.equal(letters["source"], "products")).num_rows
    assert from_products > 0
    assert (
        f"({letters.num_rows} row(s) this run, {from_products} of them from other sources "
        f"(products: {from_products})" in out
    )
    table = DeltaTable(str(demo / "lake" / "silver" / "clickstream")).to_pyarrow_table()
    assert table.num_rows == written


def test_a_missing_key_is_reported_without_a_traceback(project) -> None:
    keys = {k: v for k, v in KEYS.items() if k != "SLUICE_ENCRYPTION_KEY"}

    done = sluice("run", "pipeline.yaml", "--state-dir", ".sluice", cwd=project, keys=keys)

    assert done.returncode == 2
    assert done.stderr.startswith("error:")
    assert "SLUICE_ENCRYPTION_KEY" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (project / "lake").exists()


def test_a_bad_spec_given_to_run_is_reported_without_a_traceback(tmp_path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_SPEC)

    done = sluice("run", "bad.yaml", "--state-dir", ".sluice", cwd=tmp_path)

    assert done.returncode == 2
    assert "unknown source type 'file'" in done.stderr
    assert "Traceback" not in done.stderr


def test_replay_of_a_bad_spec_is_reported_without_a_traceback(tmp_path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_SPEC)

    done = sluice("replay", "bad.yaml", "--run", "x", "--state-dir", ".sluice", cwd=tmp_path)

    assert done.returncode == 2
    assert "unknown step 'dedupe'" in done.stderr
    assert "Traceback" not in done.stderr


def test_dlq_finds_the_default_dead_letter_table_under_sluice_home(project) -> None:
    home = project / "home"
    done_run = sluice(
        "run",
        "pipeline.yaml",
        "--date",
        "2025-01-15",
        cwd=project,
        keys={**KEYS, "SLUICE_HOME": str(home)},
    )
    assert done_run.returncode == 0, done_run.stderr

    done = sluice(
        "dlq",
        "pipeline.yaml",
        "--format",
        "json",
        cwd=project,
        keys={**KEYS, "SLUICE_HOME": str(home)},
    )

    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
    assert (home / "dead_letter").is_dir()


def test_a_failed_run_shows_its_rows_as_not_published_and_why_a_check_errored(project) -> None:
    spec = (project / "pipeline.yaml").read_text()
    spec += "checks:\n  - not_null: {column: event_idx}\n"
    (project / "pipeline.yaml").write_text(spec)

    done = sluice("run", "pipeline.yaml", "--state-dir", ".sluice", cwd=project)

    assert done.returncode == 1
    assert "in = staged, not published + rejected" in done.stdout
    assert " written " not in done.stdout
    reason = next(line for line in done.stdout.splitlines() if "not_null(event_idx): " in line)
    assert "Did you mean 'event_id'" in reason  # why it errored, not only that it did
    assert "not found in the checked result" in reason  # not an internal table name
    assert not (project / "lake" / "orders").exists()


def test_reading_commands_do_not_create_a_run_store_where_none_is(tmp_path) -> None:
    listed = sluice("runs", cwd=tmp_path)
    shown = sluice("show", "20250115", cwd=tmp_path)

    assert listed.returncode == 0 and "no run is recorded in" in listed.stderr
    assert shown.returncode == 2 and "no run is recorded in" in shown.stderr
    assert not (tmp_path / ".sluice").exists()
