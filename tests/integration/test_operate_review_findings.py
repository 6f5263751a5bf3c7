"""Findings of the end-to-end review of the Operate features, driven through `sluice` as a user.

A project of three pipelines: bronze (CSV → Delta), silver (Delta source, dedup, pii hmac),
gold (an aggregate), with depends_on, lineage to a file and an alert route to a local
receiver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

SLUICE = [sys.executable, "-c", "from sluiceway.cli import entry; entry()"]
HMAC_KEY = "review-hmac-key"
ENCRYPTION_KEY = "ab" * 32
EMAILS = ("alice@example.com", "bob@example.com", "carol@example.com")

SPECS = {
    "bronze.yaml": """
version: 1
pipeline: bronze_customers
schedule: {cron: "0 2 * * *", catchup: latest}
sources:
  raw:
    type: files
    path: ../data/
    format: csv
    contract:
      columns:
        customer_id: {type: integer, nullable: false}
        email: {type: string}
        country: {type: string}
        amount: {type: double}
        updated_at: {type: timestamp}
steps:
  - sql: SELECT *, logical_date() AS load_date FROM input
sinks:
  - {type: delta, path: ../lake/bronze, mode: overwrite_partition, partition_by: [load_date]}
""",
    "silver.yaml": """
version: 1
pipeline: silver_customers
depends_on: [bronze_customers]
schedule: "0 3 * * *"
sources:
  bronze: {type: delta, path: ../lake/bronze}
steps:
  - sql: {query: "SELECT * FROM input WHERE load_date = logical_date()", rows: filter}
  - dedup: {keys: [customer_id], order_by: updated_at, keep: last}
pii: {email: hmac}
sinks:
  - {type: delta, path: ../lake/silver, mode: overwrite_partition, partition_by: [load_date]}
""",
    "gold.yaml": """
version: 1
pipeline: gold_revenue
depends_on: [silver_customers]
sources:
  silver: {type: delta, path: ../lake/silver}
steps:
  - sql:
      query: >-
        SELECT country, load_date, SUM(amount) AS revenue FROM input
        WHERE load_date = logical_date() GROUP BY country, load_date
      rows: filter
sinks:
  - {type: delta, path: ../lake/gold, mode: overwrite_partition, partition_by: [load_date]}
""",
}


class Receiver:
    """A local HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append(json.loads(self.rfile.read(length) or b"null"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


@pytest.fixture
def project(tmp_path: Path, receiver: Receiver) -> Path:
    root = tmp_path / "shop"
    (root / "pipelines").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "customers.csv").write_text(
        "customer_id,email,country,amount,updated_at\n"
        f"1,{EMAILS[0]},FR,10.5,2025-01-10T10:00:00\n"
        f"2,{EMAILS[1]},DE,20.0,2025-01-10T11:00:00\n"
        f"2,{EMAILS[1]},DE,25.0,2025-01-11T11:00:00\n"
        f"3,{EMAILS[2]},FR,7.25,2025-01-11T09:00:00\n"
    )
    for name, text in SPECS.items():
        (root / "pipelines" / name).write_text(text)
    (root / "sluice.yaml").write_text(
        "version: 1\nproject: shop\npipelines: [pipelines/]\nstate_dir: state\n"
        "lineage: {transport: file, path: state/lineage.jsonl, namespace: shop}\n"
        f"alerts:\n  - {{name: local, type: http, url: '{receiver.url}', min_interval: 1s}}\n"
    )
    return root


def sluice(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "COLUMNS": "200",
        "SLUICE_HMAC_KEY": HMAC_KEY,
        "SLUICE_ENCRYPTION_KEY": ENCRYPTION_KEY,
    }
    environ.pop("SLUICE_HOME", None)
    environ.update(env or {})
    return subprocess.run(
        [*SLUICE, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300
    )


def _run_all(project: Path) -> None:
    done = sluice("run", "--all", "--date", "2025-01-11", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr


def test_sluice_runs_inside_a_project_lists_the_runs_of_its_state_dir(project: Path) -> None:
    _run_all(project)
    listed = sluice("runs", cwd=project)
    assert listed.returncode == 0, listed.stderr
    for name in ("bronze_customers", "silver_customers", "gold_revenue"):
        assert name in listed.stdout
    assert not (project / ".sluice").exists()


def test_sluice_show_inside_a_project_finds_a_run_of_its_state_dir(project: Path) -> None:
    _run_all(project)
    runs = sluice("runs", "--state-dir", "state", cwd=project).stdout
    run_id = next(w for w in runs.split() if w[:8].isdigit() and "-" in w)
    shown = sluice("show", run_id, cwd=project / "pipelines")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run_id"] == run_id


def test_sluice_runs_with_project_option_reads_that_projects_state(
    project: Path, tmp_path: Path
) -> None:
    _run_all(project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed = sluice("runs", "--project", str(project / "sluice.yaml"), cwd=elsewhere)
    assert listed.returncode == 0, listed.stderr
    assert "gold_revenue" in listed.stdout


def test_ui_reads_the_projects_state_dir_even_when_sluice_home_is_set(
    project: Path, tmp_path: Path
) -> None:
    from sluiceway.cli_ui import build_dashboard

    os.environ["SLUICE_HOME"] = str(tmp_path / "home")
    try:
        app = build_dashboard(project / "sluice.yaml", (), None)
    finally:
        del os.environ["SLUICE_HOME"]
    assert Path(app.state_dir) == (project / "state").resolve()


def _lineage_events(project: Path) -> list[dict[str, Any]]:
    lines = (project / "state" / "lineage.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_lineage_of_a_delta_source_without_contract_maps_columns_and_marks_masked_pii(
    project: Path,
) -> None:
    _run_all(project)
    events = _lineage_events(project)
    silver = next(
        e for e in events if e["job"]["name"] == "silver_customers" and e["eventType"] == "COMPLETE"
    )
    fields = silver["outputs"][0]["facets"]["columnLineage"]["fields"]
    email = fields["email"]
    assert [f["field"] for f in email["inputFields"]] == ["email"]
    assert email["inputFields"][0]["name"].endswith("lake/bronze")
    assert email.get("transformationType") == "MASKED"
    assert [f["field"] for f in fields["amount"]["inputFields"]] == ["amount"]
    schema = silver["inputs"][0]["facets"]["schema"]["fields"]
    assert "customer_id" in [f["name"] for f in schema]


def test_lineage_of_an_aggregate_names_the_summed_column(project: Path) -> None:
    _run_all(project)
    gold = next(
        e
        for e in _lineage_events(project)
        if e["job"]["name"] == "gold_revenue" and e["eventType"] == "COMPLETE"
    )
    revenue = gold["outputs"][0]["facets"]["columnLineage"]["fields"]["revenue"]
    assert [f["field"] for f in revenue["inputFields"]] == ["amount"]
    assert revenue["inputFields"][0]["transformations"][0]["subtype"] == "AGGREGATION"


def test_a_scheduled_run_that_cannot_start_sends_a_run_failed_alert(
    project: Path, receiver: Receiver
) -> None:
    first = sluice("scheduler", "--once", "--now", "2025-01-12T01:00:00+00:00", cwd=project)
    assert first.returncode == 0, first.stderr
    missing_key = {"SLUICE_ENCRYPTION_KEY": ""}
    due = sluice(
        "scheduler", "--once", "--now", "2025-01-12T04:00:00+00:00", cwd=project, env=missing_key
    )
    assert due.returncode == 1, due.stdout + due.stderr
    failed = [b for b in receiver.bodies if b["kind"] == "run_failed"]
    assert [b["pipeline"] for b in failed] == ["silver_customers"]
    assert failed[0]["logical_date"] == "2025-01-12"
    assert "SLUICE_ENCRYPTION_KEY" in failed[0]["summary"]
    logged = (project / "state" / "alerts.jsonl").read_text()
    assert "silver_customers/run_failed" in logged


def test_no_email_appears_in_clear_in_project_state_or_alerts(
    project: Path, receiver: Receiver
) -> None:
    _run_all(project)
    sluice("run", "gold_revenue", "--downstream", "--date", "2025-01-12", cwd=project)
    texts = [json.dumps(receiver.bodies)]
    for path in (project / "state").rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    for path in (project / "lake" / "silver").rglob("*.parquet"):
        texts.append(path.read_bytes().decode("latin-1"))
    for email in EMAILS:
        assert not any(email in text for text in texts), email


def test_a_run_refused_for_a_missing_key_is_recorded_failed_and_seen_by_subscribers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluiceway.core.events import Event
    from sluiceway.core.loader import parse_spec
    from sluiceway.core.runner import RunOptions, run_pipeline
    from sluiceway.core.runstore import RunStore
    from sluiceway.errors import ConfigError

    for name in ("SLUICE_HMAC_KEY", "SLUICE_ENCRYPTION_KEY", "SLUICE_MASK_SALT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "data.csv").write_text("id,email\n1,a@example.com\n")
    spec = parse_spec(
        "version: 1\npipeline: keyed\nsources: {s: {type: files, path: data.csv, format: csv}}\n"
        "pii: {email: hmac}\nsinks: [{type: delta, path: lake/keyed}]\n",
        environ={},
    )
    events: list[Event] = []

    with pytest.raises(ConfigError):
        run_pipeline(
            spec,
            RunOptions(base_dir=tmp_path, state_dir=tmp_path / "st", subscribers=[events.append]),
        )

    assert [e.name for e in events] == ["run_started", "run_failed", "run_finished"]
    assert events[-1].fields["status"] == "failed"
    [record] = RunStore(tmp_path / "st" / "runs.db").list(pipeline="keyed")
    assert record.status == "failed" and "SLUICE_" in (record.error or "")
