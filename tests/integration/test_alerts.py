"""Alerts from real runs and monitors, delivered to a local HTTP receiver and a command: the
payloads each route type sends, deduplication within min_interval, freshness and latency."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from deltalake import write_deltalake

from sluiceway.core.loader import load_project, load_spec
from sluiceway.core.project import AlertRoute
from sluiceway.core.results import RunResult
from sluiceway.observability.alert_payloads import Alert
from sluiceway.observability.alerts import read_alert_log, send_alert
from sluiceway.orchestration import ProjectContext, ProjectSpec, run_project_pipeline

SLUICE = str(Path(sys.executable).parent / "sluice")
DAY = date(2025, 1, 15)


class Receiver:
    """A local HTTP server that keeps every JSON body posted to it, by path."""

    def __init__(self) -> None:
        received: list[tuple[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, path: str) -> list[Any]:
        return [body for where, body in self.received if where == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


def make_project(root: Path, receiver: Receiver, spec_extra: dict[str, Any]) -> ProjectContext:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "orders.csv").write_text("order_id,amount\no1,1.5\no2,-2.5\n")
    spec = {
        "version": 1,
        "pipeline": "orders",
        "sources": {"orders": {"type": "files", "path": "data/orders.csv", "format": "csv"}},
        "sinks": [{"type": "delta", "path": "lake/orders", "mode": "append"}],
        **spec_extra,
    }
    (root / "orders.yaml").write_text(yaml.safe_dump(spec))
    stdin_file = root / "command-stdin.json"
    project = {
        "version": 1,
        "project": "alerting",
        "pipelines": ["orders.yaml"],
        "lineage": {"transport": "none"},
        "alerts": [
            {"name": "slack", "type": "webhook", "url": f"{receiver.url}/slack"},
            {
                "name": "pager",
                "type": "pagerduty",
                "url": f"{receiver.url}/pagerduty",
                "routing_key": "test-routing-key",
                "on": ["run_failed", "freshness"],
            },
            {
                "name": "script",
                "type": "command",
                "command": [
                    sys.executable,
                    "-c",
                    f"import sys; open({str(stdin_file)!r}, 'a').write(sys.stdin.read() + '\\n')",
                ],
                "on": ["check_failed"],
            },
        ],
    }
    (root / "sluice.yaml").write_text(yaml.safe_dump(project))
    return ProjectContext(load_project(root / "sluice.yaml"), root, root / "sluice.yaml")


def run(context: ProjectContext) -> RunResult:
    spec = ProjectSpec(load_spec(context.root / "orders.yaml"), context.root / "orders.yaml")
    return run_project_pipeline(spec, context, state_dir=context.root / ".sluice", logical_date=DAY)


def test_a_failed_run_posts_a_slack_message_with_pipeline_run_error_and_command(
    tmp_path: Path, receiver: Receiver
) -> None:
    context = make_project(tmp_path, receiver, {"steps": [{"sql": "SELECT nope FROM input"}]})

    result = run(context)

    assert result.status == "failed"
    failed = [b for b in receiver.bodies("/slack") if "run_failed" in b["text"]]
    assert len(failed) == 1
    text = failed[0]["text"]
    assert "`orders`" in text and result.run_id in text
    assert "nope" in text
    assert f"sluice show {result.run_id}" in text
    assert failed[0]["blocks"][0]["type"] == "section"


def test_a_failed_run_triggers_a_pagerduty_event_v2_with_a_stable_dedup_key(
    tmp_path: Path, receiver: Receiver
) -> None:
    context = make_project(tmp_path, receiver, {"steps": [{"sql": "SELECT nope FROM input"}]})

    result = run(context)

    [event] = receiver.bodies("/pagerduty")
    assert event["routing_key"] == "test-routing-key"
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "orders/run_failed/-"
    payload = event["payload"]
    assert set(payload) >= {"summary", "source", "severity", "custom_details"}
    assert payload["severity"] == "critical" and payload["source"] == "sluiceway"
    assert payload["custom_details"]["run_id"] == result.run_id


def test_an_error_check_failure_names_the_check_and_its_observed_value(
    tmp_path: Path, receiver: Receiver
) -> None:
    checks = [{"row_count_between": {"min_value": 1000}}]
    context = make_project(tmp_path, receiver, {"checks": checks})

    result = run(context)

    assert result.status == "failed"
    [slack] = [b for b in receiver.bodies("/slack") if "check_failed" in b["text"]]
    assert "`row_count_between`" in slack["text"]
    assert "observed: 2 (threshold min_value 1000)" in slack["text"]
    [piped] = (tmp_path / "command-stdin.json").read_text().splitlines()
    alert = json.loads(piped)
    assert (alert["kind"], alert["check"], alert["observed"], alert["threshold"]) == (
        "check_failed",
        "row_count_between",
        2,
        {"min_value": 1000},
    )
    assert alert["run_id"] == result.run_id


def test_a_dead_letter_share_above_the_route_threshold_alerts_with_the_dlq_command(
    tmp_path: Path, receiver: Receiver
) -> None:
    contract = {"columns": {"order_id": {"type": "string"}, "amount": {"type": "double", "min": 0}}}
    source = {"type": "files", "path": "data/orders.csv", "format": "csv", "contract": contract}
    context = make_project(tmp_path, receiver, {"sources": {"orders": source}})

    result = run(context)

    assert result.accounting.rows_rejected == 1
    [slack] = [b for b in receiver.bodies("/slack") if "dead_letter_rate" in b["text"]]
    assert "observed: 0.5 (threshold 0.05)" in slack["text"]
    assert f"sluice dlq {tmp_path / 'orders.yaml'} --run {result.run_id}" in slack["text"]


def test_a_run_longer_than_its_latency_sla_alerts(tmp_path: Path, receiver: Receiver) -> None:
    context = make_project(tmp_path, receiver, {"sla": {"latency": "1ms"}})

    result = run(context)

    assert result.ok, result.error
    [slack] = [b for b in receiver.bodies("/slack") if "sla" in b["text"].split(":")[0]]
    assert "latency SLA of 1ms" in slack["text"] and result.run_id in slack["text"]


def test_the_same_alert_within_min_interval_is_sent_once_and_suppressed_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    route = AlertRoute(name="slack", type="webhook", url=f"{receiver.url}/slack", min_interval="1h")
    alert = Alert(kind="run_failed", pipeline="orders", summary="run failed", run_id="r1")
    state = tmp_path / ".sluice"

    outcomes = [send_alert(route, alert, state_dir=state, now=t) for t in (1000.0, 1100.0, 4700.0)]

    assert outcomes == ["sent", "suppressed", "sent"]
    assert len(receiver.bodies("/slack")) == 2
    assert [e["outcome"] for e in read_alert_log(state)] == ["sent", "suppressed", "sent"]
    counters = json.loads((state / "alerts.json").read_text())
    assert counters["slack|orders/run_failed/-"]["last_sent"] == 4700.0


def test_the_suppressed_count_is_kept_in_the_alert_state(
    tmp_path: Path, receiver: Receiver
) -> None:
    route = AlertRoute(name="slack", type="webhook", url=f"{receiver.url}/slack")
    alert = Alert(kind="freshness", pipeline="orders", summary="stale", check="sinks[0]")
    state = tmp_path / ".sluice"

    for moment in (10.0, 20.0, 30.0):
        send_alert(route, alert, state_dir=state, now=moment)

    counters = json.loads((state / "alerts.json").read_text())
    assert counters["slack|orders/freshness/sinks[0]"] == {"last_sent": 10.0, "suppressed": 2}


def stale_table(root: Path) -> None:
    data = pa.table({"order_id": ["o1"], "order_date": ["2025-01-01"]})
    write_deltalake(str(root / "lake" / "orders"), data, partition_by=["order_date"])


def scheduler_once(context: ProjectContext, now: str) -> subprocess.CompletedProcess[str]:
    command = [SLUICE, "scheduler", "--project", str(context.path), "--once", "--now", now]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_freshness_monitor_alerts_on_a_table_older_than_its_sla(
    tmp_path: Path, receiver: Receiver
) -> None:
    context = make_project(tmp_path, receiver, {"sla": {"freshness": "1d"}})
    stale_table(tmp_path)

    done = scheduler_once(context, "2025-01-10T00:00:00+00:00")

    assert done.returncode == 0, done.stdout + done.stderr
    [slack] = receiver.bodies("/slack")
    assert "freshness" in slack["text"] and "8d" in slack["text"]
    assert "threshold 1d" in slack["text"]
    [pager] = receiver.bodies("/pagerduty")
    assert pager["dedup_key"] == "orders/freshness/sinks[0]"


def test_the_freshness_monitor_is_quiet_while_the_newest_partition_is_fresh(
    tmp_path: Path, receiver: Receiver
) -> None:
    context = make_project(tmp_path, receiver, {"sla": {"freshness": "1d"}})
    stale_table(tmp_path)

    done = scheduler_once(context, "2025-01-02T06:00:00+00:00")

    assert done.returncode == 0, done.stdout + done.stderr
    assert receiver.received == []
