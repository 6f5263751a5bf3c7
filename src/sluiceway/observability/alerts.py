"""Alerts: run outcomes and monitor findings, sent to the routes of `sluice.yaml`.

`AlertSubscriber` turns a run's `run_finished` event into alerts:

| kind             | when                                                              |
|------------------|-------------------------------------------------------------------|
| run_failed       | the run's status is `failed`                                      |
| check_failed     | an `error`-severity check failed (one alert per check)            |
| anomaly          | an `anomaly` check failed (any severity)                          |
| dead_letter_rate | rejected rows / rows in > the route's `dead_letter_rate`          |
| sla              | the run took longer than the spec's `sla.latency`                 |

The monitors (`observability.monitors`) raise `freshness` and `sla` alerts of their own and
send them with `send_alert`.

Deduplication and rate limit: an alert with the same key (pipeline + kind + check) on the
same route is sent at most once per `min_interval`; repeats inside it are suppressed and
counted in `<state>/alerts.json`. Every alert, sent, suppressed or failed to send, is appended
to `<state>/alerts.jsonl`. A route that cannot be reached never fails the run.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml

from sluiceway.core.durations import parse_duration
from sluiceway.core.events import Event
from sluiceway.core.project import AlertRoute, Project, min_interval_seconds
from sluiceway.core.spec import Pipeline
from sluiceway.observability.alert_payloads import Alert, payload_for

Outcome = Literal["sent", "suppressed", "failed", "skipped"]
SEND_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0
STATE_FILE = "alerts.json"
LOG_FILE = "alerts.jsonl"


def project_state_dir(project: Project, root: Path) -> Path:
    """The project's state folder (`state_dir` of sluice.yaml, relative to its folder)."""
    return (root / project.state_dir).resolve()


class AlertSubscriber:
    """Sends the alerts a run's outcome calls for to every matching route.

    Args:
        project: the loaded sluice.yaml (its `alerts` routes).
        root: the project's folder.
        pipeline: the spec being run.
        state_dir: where alerts.json / alerts.jsonl live (default: the project's state_dir).
    """

    def __init__(
        self, project: Project, root: Path, pipeline: Pipeline, *, state_dir: Path | None = None
    ) -> None:
        self.project = project
        self.root = root
        self.pipeline = pipeline
        self.state_dir = state_dir or project_state_dir(project, root)

    def __call__(self, event: Event) -> None:
        if event.name != "run_finished":
            return
        for alert in alerts_from_run(self.pipeline, event, self._dlq_command):
            dispatch(self.project, alert, state_dir=self.state_dir)

    def _dlq_command(self, run_id: str) -> str:
        spec = spec_path_of(self.project, self.root, self.pipeline.pipeline)
        return f"sluice dlq {spec or 'SPEC'} --run {run_id}"


def alerts_from_run(
    pipeline: Pipeline, event: Event, dlq_command: Callable[[str], str] | None = None
) -> list[Alert]:
    """The alerts a `run_finished` event calls for (before route filtering).

    Args:
        pipeline: the spec that ran (its `sla`).
        event: the run_finished event.
        dlq_command: run_id → the command listing its dead letters.
    """
    fields = event.fields
    base: dict[str, Any] = {
        "pipeline": event.pipeline,
        "run_id": event.run_id,
        "logical_date": fields.get("logical_date"),
        "inspect": f"sluice show {event.run_id}",
    }
    alerts: list[Alert] = []
    if fields.get("status") == "failed":
        error = fields.get("error") or "unknown error"
        alerts.append(
            Alert(kind="run_failed", summary=f"run failed: {error}", severity="critical", **base)
        )
    alerts.extend(_check_alerts(fields.get("checks") or [], base))
    alerts.extend(_dead_letter_alert(fields, base, dlq_command))
    alerts.extend(_latency_alert(pipeline, fields, base))
    return alerts


def _check_alerts(checks: list[dict[str, Any]], base: dict[str, Any]) -> Iterator[Alert]:
    for check in checks:
        if check.get("status") != "failed":
            continue
        is_anomaly = check.get("check") == "anomaly"
        if not is_anomaly and check.get("severity") != "error":
            continue
        yield Alert(
            kind="anomaly" if is_anomaly else "check_failed",
            summary=f"check {check.get('name')} failed: {check.get('message')}",
            severity="warning" if is_anomaly else "error",
            check=str(check.get("name")),
            observed=check.get("observed_value"),
            threshold=check.get("threshold"),
            details={
                "check_type": check.get("check"),
                "column": check.get("column"),
                "unexpected_count": check.get("unexpected_count"),
                "unexpected_percent": check.get("unexpected_percent"),
                "rows_checked": check.get("rows_checked"),
            },
            **base,
        )


def _dead_letter_alert(
    fields: dict[str, Any], base: dict[str, Any], dlq: Callable[[str], str] | None
) -> list[Alert]:
    accounting = fields.get("accounting") or {}
    rows_in, rejected = accounting.get("rows_in") or 0, accounting.get("rows_rejected") or 0
    if not rows_in or not rejected:
        return []
    share = round(rejected / rows_in, 6)
    command = dlq(base["run_id"]) if dlq else f"sluice dlq SPEC --run {base['run_id']}"
    return [
        Alert(
            kind="dead_letter_rate",
            summary=f"{rejected} of {rows_in} rows ({share:.1%}) went to the dead-letter table",
            severity="warning",
            observed=share,
            details={"rows_in": rows_in, "rows_rejected": rejected},
            **{**base, "inspect": command},
        )
    ]


def _latency_alert(pipeline: Pipeline, fields: dict[str, Any], base: dict[str, Any]) -> list[Alert]:
    latency = pipeline.sla.latency if pipeline.sla else None
    duration = fields.get("duration_s")
    if latency is None or duration is None:
        return []
    limit = parse_duration(latency).total_seconds()
    if duration <= limit:
        return []
    return [
        Alert(
            kind="sla",
            summary=f"run took {duration:.1f}s, longer than its latency SLA of {latency}",
            severity="warning",
            check="latency",
            observed=f"{duration:.1f}s",
            threshold=latency,
            **base,
        )
    ]


def route_accepts(route: AlertRoute, alert: Alert) -> bool:
    """True when `route` takes `alert`: its kind, its pipeline, and (dead_letter_rate) a
    share above the route's threshold."""
    if alert.kind not in route.on or (route.pipelines and alert.pipeline not in route.pipelines):
        return False
    if alert.kind == "dead_letter_rate":
        return float(alert.observed or 0) > route.dead_letter_rate
    return True


def dispatch(project: Project, alert: Alert, *, state_dir: Path) -> dict[str, Outcome]:
    """Send `alert` to every route of the project that takes it.

    Returns:
        route name → what happened (sent, suppressed or failed).
    """
    outcomes: dict[str, Outcome] = {}
    for route in project.alerts:
        if route_accepts(route, alert):
            routed = alert
            if alert.kind == "dead_letter_rate":
                routed = replace(alert, threshold=route.dead_letter_rate)
            outcomes[route.name] = send_alert(route, routed, state_dir=state_dir)
    return outcomes


def send_alert(
    route: AlertRoute, alert: Alert, *, state_dir: Path, now: float | None = None
) -> Outcome:
    """Send `alert` on `route` unless the same alert was sent within `route.min_interval`.

    Args:
        route: the destination.
        alert: what to send.
        state_dir: the folder of alerts.json (dedup state) and alerts.jsonl (the log).
        now: the current time in epoch seconds (default: the clock).

    Returns:
        'sent', 'suppressed' (a repeat inside min_interval) or 'failed' (the route could not
        be reached or refused; the next repeat is tried again).
    """
    moment = time.time() if now is None else now
    state_dir.mkdir(parents=True, exist_ok=True)
    slot = f"{route.name}|{alert.key}"
    with _locked(state_dir):
        state = _read_state(state_dir)
        entry = state.get(slot, {})
        last = entry.get("last_sent")
        if last is not None and moment - last < min_interval_seconds(route):
            entry["suppressed"] = entry.get("suppressed", 0) + 1
            state[slot] = entry
            _write_state(state_dir, state)
            _log(state_dir, route, alert, "suppressed")
            return "suppressed"
        error = _deliver(route, alert)
        if error is None:
            state[slot] = {"last_sent": moment, "suppressed": 0}
            _write_state(state_dir, state)
        _log(state_dir, route, alert, "failed" if error else "sent", error)
    return "failed" if error else "sent"


def _deliver(route: AlertRoute, alert: Alert) -> str | None:
    body = json.dumps(payload_for(route, alert), default=str).encode()
    if route.type == "command":
        return _run_command(route, body)
    if not route.url:
        return f"route '{route.name}' has no url; set `url` in sluice.yaml"
    request = urllib.request.Request(
        route.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        return f"route '{route.name}' answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"route '{route.name}' could not be reached: {type(reason).__name__}"
    return None


def _run_command(route: AlertRoute, body: bytes) -> str | None:
    if not route.command:
        return f"route '{route.name}' has no command; set `command: [program, args...]`"
    try:
        done = subprocess.run(
            route.command, input=body, capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"route '{route.name}': command {route.command[0]} failed: {type(exc).__name__}"
    if done.returncode != 0:
        return f"route '{route.name}': command {route.command[0]} exited {done.returncode}"
    return None


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    with (state_dir / "alerts.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_state(state_dir: Path) -> dict[str, dict[str, Any]]:
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(state_dir: Path, state: dict[str, dict[str, Any]]) -> None:
    temporary = state_dir / f"{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(state, indent=1, sort_keys=True))
    temporary.replace(state_dir / STATE_FILE)


def _log(
    state_dir: Path, route: AlertRoute, alert: Alert, outcome: Outcome, error: str | None = None
) -> None:
    record = {"route": route.name, "outcome": outcome, "error": error, **alert.to_dict()}
    with (state_dir / LOG_FILE).open("a") as log:
        log.write(json.dumps(record, default=str) + "\n")


def read_alert_log(state_dir: Path) -> list[dict[str, Any]]:
    """Every alert logged in `<state_dir>/alerts.jsonl`, oldest first."""
    path = state_dir / LOG_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spec_path_of(project: Project, root: Path, name: str) -> Path | None:
    """The spec file of the project that declares pipeline `name` (None when none does)."""
    for path in project.spec_paths(root):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("pipeline") == name:
            return path
    return None
