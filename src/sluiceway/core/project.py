"""A project: `sluice.yaml` at its root lists the pipelines and the settings they share.

```yaml
version: 1
project: analytics
pipelines: [pipelines/, extra/orders.yaml]   # spec files, folders or globs
state_dir: .sluice                           # run store, dead letters, audit log
max_workers: 4                               # pipelines run at once by --all / backfill
lineage: {transport: file, path: .sluice/lineage.jsonl, namespace: analytics}
traces: {endpoint: "http://127.0.0.1:4318/v1/traces"}
alerts:
  - {name: on-call, type: webhook, url: "${SLACK_WEBHOOK}", on: [run_failed, check_failed]}
```

Commands find the project by walking up from the current folder to the first `sluice.yaml`
(`--project FILE` overrides). Without a project, each command works on the spec it is given,
with the defaults below.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sluiceway.core.durations import parse_duration
from sluiceway.core.spec_meta import check_timezone

PROJECT_FILE = "sluice.yaml"
AlertEvent = Literal[
    "run_failed",
    "check_failed",
    "anomaly",
    "freshness",
    "sla",
    "dead_letter_rate",
]
ALERT_EVENTS: tuple[AlertEvent, ...] = (
    "run_failed",
    "check_failed",
    "anomaly",
    "freshness",
    "sla",
    "dead_letter_rate",
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class LineageSettings(_Model):
    """Where OpenLineage run events go."""

    transport: Literal["file", "http", "console", "none"] = Field(
        "file", description="file: JSON lines; http: a Marquez-compatible endpoint; console."
    )
    path: str = Field(
        ".sluice/lineage.jsonl", description="JSONL file of the file transport (project-relative)."
    )
    url: str | None = Field(None, description="Endpoint of the http transport, e.g. Marquez.")
    api_key: str | None = Field(None, repr=False, description="Bearer token (use ${ENV}).")
    namespace: str = Field("sluiceway", description="OpenLineage job namespace.")


class TraceSettings(_Model):
    """OpenTelemetry spans per run, step and stream batch."""

    endpoint: str | None = Field(
        None, description="OTLP/HTTP traces endpoint; unset: no spans are exported."
    )
    service_name: str = Field("sluiceway", description="service.name resource attribute.")
    headers: dict[str, str] = Field(
        default_factory=dict, repr=False, description="Headers for the exporter (use ${ENV})."
    )


class MetricsSettings(_Model):
    """Where `sluice serve` and `sluice export metrics` publish the run store's metrics."""

    host: str = Field("127.0.0.1", description="Address `sluice serve` listens on.")
    port: int = Field(9464, ge=0, le=65535, description="Port of `sluice serve`.")
    textfile: str | None = Field(
        None,
        description="Default .prom file of `sluice export metrics` (node-exporter's textfile "
        "directory), project-relative.",
    )


class AlertRoute(_Model):
    """One destination for alerts and the events it receives."""

    name: str = Field(description="Route name, shown in the alert log.")
    type: Literal["webhook", "pagerduty", "http", "command"] = Field(
        description="webhook: Slack-compatible JSON; pagerduty: Events v2; http: the alert "
        "as JSON; command: runs a program with the alert as JSON on stdin."
    )
    url: str | None = Field(None, description="URL of webhook / pagerduty / http routes.")
    routing_key: str | None = Field(
        None, repr=False, description="PagerDuty integration key (use ${ENV})."
    )
    command: list[str] | None = Field(None, description="Program and arguments (command).")
    on: list[AlertEvent] = Field(
        default_factory=lambda: list(ALERT_EVENTS), description="Events this route receives."
    )
    pipelines: list[str] = Field(
        default_factory=list, description="Only these pipelines (default: all)."
    )
    min_interval: str = Field(
        "10m", description="The same alert (pipeline + kind + check) is sent at most this often."
    )
    dead_letter_rate: float = Field(
        0.05, ge=0, le=1, description="Rejected share of rows above which dead_letter_rate fires."
    )

    @model_validator(mode="after")
    def _destination_given(self) -> AlertRoute:
        if self.type == "command" and not self.command:
            raise ValueError(f"alert route '{self.name}' of type command needs command: [...]")
        if self.type != "command" and not self.url:
            raise ValueError(f"alert route '{self.name}' of type {self.type} needs url: ...")
        if self.type == "pagerduty" and not self.routing_key:
            raise ValueError(
                f"alert route '{self.name}' of type pagerduty needs routing_key: ${{PD_KEY}}"
            )
        parse_duration(self.min_interval, what="min_interval")
        return self


class Project(_Model):
    """The contents of `sluice.yaml`."""

    version: Literal[1] = Field(description="Project file format version; 1 is the only one.")
    project: str = Field(pattern=r"^[a-z][a-z0-9_\-]*$", description="Project name.")
    pipelines: list[str] = Field(
        default_factory=lambda: ["pipelines/"],
        description="Spec files, folders (every *.yaml / *.yml in them) or globs.",
    )
    state_dir: str = Field(".sluice", description="Run store, dead letters, audit log.")
    max_workers: int = Field(4, ge=1, le=64, description="Pipelines run at once.")
    lineage: LineageSettings = Field(
        default_factory=LineageSettings, description="OpenLineage events."
    )
    traces: TraceSettings = Field(default_factory=TraceSettings, description="OTel spans.")
    metrics: MetricsSettings = Field(
        default_factory=MetricsSettings, description="Prometheus endpoint and textfile."
    )
    alerts: list[AlertRoute] = Field(default_factory=list, description="Alert routes.")
    secrets: Literal["env"] = Field(
        "env", description="Where ${NAME} references resolve: the environment."
    )
    timezone: str = Field("UTC", description="Default time zone of schedules.")
    run_store: str | None = Field(
        None,
        description="Where runs are recorded: a PostgreSQL URL "
        "(postgresql://user@host:5432/db?schema=sluice; use ${ENV} for a password) or a SQLite "
        "file (project-relative); default: <state_dir>/runs.db. $SLUICE_RUN_STORE overrides it.",
    )

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, value: str) -> str:
        return check_timezone(value)

    def spec_paths(self, root: Path) -> list[Path]:
        """Every spec file the project lists, sorted, without duplicates."""
        found: set[Path] = set()
        for entry in self.pipelines:
            path = root / entry
            if path.is_dir():
                found.update(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            elif any(ch in entry for ch in "*?["):
                found.update(Path(p) for p in glob.glob(str(path), recursive=True))
            else:
                found.add(path)
        return sorted(p.resolve() for p in found if p.name != PROJECT_FILE)


def find_project_file(start: Path | None = None) -> Path | None:
    """The nearest `sluice.yaml` in `start` (default: cwd) or a parent folder."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / PROJECT_FILE).is_file():
            return candidate / PROJECT_FILE
    return None


def min_interval_seconds(route: AlertRoute) -> float:
    return parse_duration(route.min_interval, what="min_interval").total_seconds()
