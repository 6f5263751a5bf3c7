"""Prometheus metrics from the run store (`sluice serve`, `sluice export metrics|grafana`).

Every scrape reads the run store (`<state_dir>/runs.db`, or PostgreSQL: `core.store_db`)
read-only and aggregates in SQL (one statement per
metric family, each a single scan of `runs` or `stream_batches`), so a store of ten
thousand runs costs tens of milliseconds; `CachedExposition` keeps the text for a second so a burst
of scrapes costs one read. Counters are sums over recorded runs, so they only grow while
runs are added (a running stream run's rows grow with each committed batch). Row counters
count what reached the sinks: succeeded batch runs and stream runs; a failed batch run
published nothing and its rerun counts the rows.

Retries come from each run's details: `attempt` (which attempt of the run's retry policy
it was) and, per step that finished, `attempts` and `duration_s`; `bytes_written` is the
Arrow size of the published rows. `METRICS` is the catalogue;
the Grafana dashboard and the alert rules (`grafana_dashboard`, `alert_rules`) may only
name metrics in it (`unknown_metric_names`).
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from sluiceway.core.store_db import (
    StoreConnection,
    StoreLocation,
    as_location,
    connect,
    db_errors,
)
from sluiceway.errors import ConfigError
from sluiceway.observability.metrics_sql import QUERIES, counted_rows, histogram_sql

MetricType = Literal["counter", "gauge", "histogram"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format every Prometheus reads (names here are plain ASCII)."""

RUN_DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
STEP_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0)
BATCH_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROW_COUNTS = ("in", "written", "rejected", "deduplicated", "filtered")
ZERO_RUN_STATUSES = ("succeeded", "failed")
"""Statuses every pipeline reports, at 0 until one happens: `increase()` over a series that
appears with its first failure would miss that failure."""


@dataclass(frozen=True)
class MetricInfo:
    """One exported family: its Prometheus type, help text and labels."""

    type: MetricType
    help: str
    labels: tuple[str, ...]


METRICS: dict[str, MetricInfo] = {
    **{
        f"sluice_rows_{kind}": MetricInfo(
            "counter",
            f"Rows {kind} by succeeded batch runs and by stream runs (run accounting).",
            ("pipeline",),
        )
        for kind in ROW_COUNTS
    },
    "sluice_runs": MetricInfo("counter", "Finished runs by final status.", ("pipeline", "status")),
    "sluice_runs_in_progress": MetricInfo(
        "gauge", "Runs recorded as running (a stream run until it stops).", ("pipeline",)
    ),
    "sluice_run_duration_seconds": MetricInfo(
        "histogram", "Wall time of finished runs.", ("pipeline",)
    ),
    "sluice_step_duration_seconds": MetricInfo(
        "histogram", "Wall time of the steps of finished runs.", ("pipeline",)
    ),
    "sluice_bytes_written": MetricInfo(
        "counter",
        "Bytes of the rows succeeded batch runs published (Arrow, uncompressed: the data "
        "volume, not the size of the files).",
        ("pipeline",),
    ),
    "sluice_checks": MetricInfo(
        "counter",
        "Table check results of finished runs.",
        ("pipeline", "check", "severity", "status"),
    ),
    "sluice_last_success_timestamp_seconds": MetricInfo(
        "gauge", "Unix time the last succeeded run finished.", ("pipeline",)
    ),
    "sluice_run_retries": MetricInfo(
        "counter",
        "Attempts of finished batch runs beyond the first (the run's retry policy).",
        ("pipeline",),
    ),
    "sluice_step_retries": MetricInfo(
        "counter",
        "Attempts of finished steps beyond the first (the step's retry policy).",
        ("pipeline", "step"),
    ),
    "sluice_stream_consumer_lag": MetricInfo(
        "gauge", "Messages behind the head of the stream after the latest batch.", ("pipeline",)
    ),
    "sluice_stream_e2e_latency_seconds": MetricInfo(
        "gauge",
        "Broker enqueue to Delta commit, quantile over the latest batch's events.",
        ("pipeline", "quantile"),
    ),
    "sluice_stream_batch_latency_seconds": MetricInfo(
        "histogram", "Wall time of committed micro-batches.", ("pipeline",)
    ),
}


def sample_names() -> set[str]:
    """Every series name the exposition can hold (`_total`, `_bucket`, `_count`, `_sum`)."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    return {name + s for name, info in METRICS.items() for s in suffixes[info.type]}


def _family(name: str, **kwargs: Any) -> Any:
    info = METRICS[name]
    kind = {
        "counter": CounterMetricFamily,
        "gauge": GaugeMetricFamily,
        "histogram": HistogramMetricFamily,
    }[info.type]
    return kind(name, info.help, labels=list(info.labels), **kwargs)


class StoreCollector:
    """A prometheus_client collector that reads the run store on every `collect`.

    Args:
        db_path: the store (`<state_dir>/runs.db` or a location); opened read-only, never
            created.
    """

    def __init__(self, db_path: StoreLocation | Path) -> None:
        self.db_path = db_path
        self.location = as_location(db_path)

    def collect(self) -> Iterator[Metric]:
        with connect(self.location, read_only=True, timeout=10) as con:
            tables = {r[0] for r in con.execute(QUERIES[con.dialect]["tables"])}
            if "runs" in tables:
                yield from _row_counters(con)
                yield from _run_families(con)
                yield _checks(con)
                yield from _retries(con)
            if "stream_batches" in tables:
                yield from _stream_families(con)

    def describe(self) -> list[Metric]:
        return []


def _row_counters(con: StoreConnection) -> Iterator[Metric]:
    counted = counted_rows(con.dialect)
    sums = ", ".join(
        f"COALESCE(SUM(CASE WHEN {counted} THEN rows_{kind} END), 0)" for kind in ROW_COUNTS
    )
    rows = con.execute(f"SELECT pipeline, {sums} FROM runs GROUP BY pipeline").fetchall()
    for i, kind in enumerate(ROW_COUNTS, start=1):
        family = _family(f"sluice_rows_{kind}")
        for row in rows:
            family.add_metric([row[0]], row[i])
        yield family


def _run_families(con: StoreConnection) -> Iterator[Metric]:
    counts = con.execute("SELECT pipeline, status, COUNT(*) FROM runs GROUP BY 1, 2").fetchall()
    pipelines = sorted({row[0] for row in counts})
    finished = {(p, s): n for p, s, n in counts if s != "running"}
    for pipeline in pipelines:
        for status in ZERO_RUN_STATUSES:
            finished.setdefault((pipeline, status), 0)
    runs, running = _family("sluice_runs"), _family("sluice_runs_in_progress")
    for (pipeline, status), n in sorted(finished.items()):
        runs.add_metric([pipeline, status], n)
    in_progress = {p: n for p, s, n in counts if s == "running"}
    for pipeline in pipelines:
        running.add_metric([pipeline], in_progress.get(pipeline, 0))
    yield from (runs, running)
    yield _histogram(
        con,
        "sluice_run_duration_seconds",
        "runs WHERE status != 'running' AND duration_s IS NOT NULL",
        "duration_s",
        RUN_DURATION_BUCKETS,
    )
    yield _histogram(
        con,
        "sluice_step_duration_seconds",
        QUERIES[con.dialect]["step_durations"],
        "duration_s",
        STEP_DURATION_BUCKETS,
    )
    written = _family("sluice_bytes_written")
    for pipeline, size in con.execute(QUERIES[con.dialect]["bytes_written"]):
        written.add_metric([pipeline], size or 0)
    yield written
    last = _family("sluice_last_success_timestamp_seconds")
    for pipeline, epoch in con.execute(QUERIES[con.dialect]["last_success"]):
        if epoch is not None:
            last.add_metric([pipeline], float(epoch))
    yield last


def _checks(con: StoreConnection) -> Metric:
    rows = con.execute(QUERIES[con.dialect]["checks"]).fetchall()
    counts = {(p, str(c), str(sev), str(s)): n for p, c, sev, s, n in rows}
    for pipeline, check, severity, _ in list(counts):
        for status in ("passed", "failed"):
            counts.setdefault((pipeline, check, severity, status), 0)
    family = _family("sluice_checks")
    for labels, n in sorted(counts.items()):
        family.add_metric(list(labels), n)
    return family


def _retries(con: StoreConnection) -> Iterator[Metric]:
    """Run attempts beyond the first per pipeline (0 for every pipeline with a finished run),
    and step attempts beyond the first per step (0 for every step recorded with attempts)."""
    runs = _family("sluice_run_retries")
    for pipeline, retries in con.execute(QUERIES[con.dialect]["run_retries"]):
        runs.add_metric([pipeline], retries)
    yield runs
    steps = _family("sluice_step_retries")
    for pipeline, step, retries in con.execute(QUERIES[con.dialect]["step_retries"]):
        steps.add_metric([pipeline, step], retries)
    yield steps


def _stream_families(con: StoreConnection) -> Iterator[Metric]:
    latest = con.execute(
        "SELECT pipeline, lag, e2e_p50_s, e2e_p99_s FROM stream_batches AS b "
        "WHERE batch = (SELECT MAX(batch) FROM stream_batches WHERE pipeline = b.pipeline) "
        "ORDER BY pipeline"
    ).fetchall()
    lag, e2e = _family("sluice_stream_consumer_lag"), _family("sluice_stream_e2e_latency_seconds")
    for pipeline, lag_value, p50, p99 in latest:
        if lag_value is not None:
            lag.add_metric([pipeline], lag_value)
        for quantile, value in (("0.5", p50), ("0.99", p99)):
            if value is not None:
                e2e.add_metric([pipeline, quantile], value)
    yield from (lag, e2e)
    yield _histogram(
        con,
        "sluice_stream_batch_latency_seconds",
        "stream_batches",
        "batch_latency_s",
        BATCH_LATENCY_BUCKETS,
    )


def _histogram(
    con: StoreConnection, name: str, source: str, column: str, bounds: tuple[float, ...]
) -> Metric:
    """A histogram per pipeline of `column` over `source` (a table and its WHERE clause)."""
    family = _family(name)
    query = histogram_sql(con.dialect, source, column, bounds)
    for pipeline, count, total, *cumulative in con.execute(query):
        buckets = [(repr(b), n or 0) for b, n in zip(bounds, cumulative, strict=True)]
        family.add_metric([pipeline], [*buckets, ("+Inf", count)], sum_value=total)
    return family


def render_metrics(db_path: StoreLocation | Path) -> bytes:
    """The Prometheus text exposition (format 0.0.4) of the store at `db_path`.

    Raises:
        ConfigError: no run store at `db_path`, or it cannot be read.
    """
    location = as_location(db_path)
    if not location.exists():
        raise ConfigError(
            f"no run store at {location.label}: run a pipeline with this state dir first, or "
            "pass the state dir its runs use (--state-dir or $SLUICE_HOME)"
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(location))
    try:
        return generate_latest(registry)
    except db_errors() as exc:
        raise ConfigError(
            f"cannot read the run store {location.label}: {location.scrub(str(exc))}; check "
            "that --state-dir (or $SLUICE_HOME, $SLUICE_RUN_STORE) is the store `sluice run` "
            "uses"
        ) from exc


class CachedExposition:
    """`render_metrics` of one store, reused for `ttl_s` seconds; safe across threads."""

    def __init__(self, db_path: StoreLocation | Path, *, ttl_s: float = 1.0) -> None:
        self.db_path = db_path
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._text = b""
        self._at = float("-inf")

    def text(self) -> bytes:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                self._text = render_metrics(self.db_path)
                self._at = time.monotonic()
            return self._text


def metrics_server(db_path: StoreLocation | Path, *, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server answering `GET /metrics` from the store (404 elsewhere), bound but
    not started: call `serve_forever` (in a thread, or the CLI's main thread).

    Raises:
        ConfigError: no run store at `db_path`, or the address cannot be bound.
    """
    exposition = CachedExposition(db_path)
    exposition.text()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._answer(404, b"not found: metrics are at /metrics\n", "text/plain")
                return
            try:
                body = exposition.text()
            except ConfigError as exc:
                self._answer(500, f"{exc.message}\n".encode(), "text/plain")
                return
            self._answer(200, body, CONTENT_TYPE)

        def _answer(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes are routine: no line per request."""

    try:
        return ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose another --port "
            "or --host"
        ) from exc


def write_textfile(db_path: StoreLocation | Path, path: Path) -> int:
    """Write the exposition to `path` atomically (a temporary file in the same folder, then
    a rename), for node-exporter's textfile collector. Returns the bytes written.

    Raises:
        ConfigError: no run store, or `path`'s folder is missing or not writable.
    """
    text = render_metrics(db_path)
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"cannot write {path}: folder {folder} does not exist; create it first")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return len(text)


_METRIC_NAME = re.compile(r"\bsluice_[a-z0-9_]+")


def unknown_metric_names(expressions: list[str]) -> set[str]:
    """The `sluice_*` names used in PromQL `expressions` that the exposition never holds."""
    used = {name for expr in expressions for name in _METRIC_NAME.findall(expr)}
    return used - sample_names()


PIPELINE = 'pipeline=~"$pipeline"'
PANELS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Rows per second",
        "rowsps",
        tuple(
            (
                f"sum by (pipeline) (rate(sluice_rows_{kind}_total{{{PIPELINE}}}[$__rate_interval]))",
                f"{{{{pipeline}}}} {kind}",
            )
            for kind in ROW_COUNTS
        ),
    ),
    (
        "Rejected share of rows in",
        "percentunit",
        (
            (
                f"sum by (pipeline) (increase(sluice_rows_rejected_total{{{PIPELINE}}}[1h])) / "
                f"sum by (pipeline) (increase(sluice_rows_in_total{{{PIPELINE}}}[1h]))",
                "{{pipeline}}",
            ),
        ),
    ),
    (
        "Runs by status (1h)",
        "short",
        (
            (
                f"sum by (pipeline, status) (increase(sluice_runs_total{{{PIPELINE}}}[1h]))",
                "{{pipeline}} {{status}}",
            ),
            (f"sluice_runs_in_progress{{{PIPELINE}}}", "{{pipeline}} running"),
        ),
    ),
    (
        "Run duration p50 / p95 (1d)",
        "s",
        tuple(
            (
                f"histogram_quantile({q}, sum by (pipeline, le) "
                f"(increase(sluice_run_duration_seconds_bucket{{{PIPELINE}}}[1d])))",
                f"{{{{pipeline}}}} p{q[2:]}",
            )
            for q in ("0.5", "0.95")
        ),
    ),
    (
        "Failed checks (1d)",
        "short",
        (
            (
                f"sum by (pipeline, check, severity) (increase(sluice_checks_total{{{PIPELINE}, "
                f'status=~"failed|error"}}[1d]))',
                "{{pipeline}} {{check}} ({{severity}})",
            ),
        ),
    ),
    (
        "Time since last success",
        "s",
        ((f"time() - sluice_last_success_timestamp_seconds{{{PIPELINE}}}", "{{pipeline}}"),),
    ),
    (
        "Stream consumer lag",
        "short",
        ((f"sluice_stream_consumer_lag{{{PIPELINE}}}", "{{pipeline}}"),),
    ),
    (
        "Stream end-to-end latency (latest batch)",
        "s",
        (
            (
                f"sluice_stream_e2e_latency_seconds{{{PIPELINE}}}",
                "{{pipeline}} q{{quantile}}",
            ),
        ),
    ),
    (
        "Stream batch latency p99",
        "s",
        (
            (
                "histogram_quantile(0.99, sum by (pipeline, le) (rate("
                f"sluice_stream_batch_latency_seconds_bucket{{{PIPELINE}}}[$__rate_interval])))",
                "{{pipeline}}",
            ),
        ),
    ),
)
"""Dashboard panels: title, Grafana unit, (PromQL, legend) per series."""


def grafana_dashboard() -> dict[str, Any]:
    """A Grafana dashboard (JSON model) of every panel in `PANELS`, templated on a
    Prometheus data source and on `pipeline` (multi-select, all by default)."""
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    panels = [
        {
            "id": i + 1,
            "type": "timeseries",
            "title": title,
            "datasource": datasource,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [
                {
                    "refId": chr(ord("A") + j),
                    "datasource": datasource,
                    "expr": e,
                    "legendFormat": lg,
                }
                for j, (e, lg) in enumerate(series)
            ],
        }
        for i, (title, unit, series) in enumerate(PANELS)
    ]
    pipeline_variable = {
        "name": "pipeline",
        "label": "pipeline",
        "type": "query",
        "datasource": datasource,
        "query": {"query": "label_values(sluice_runs_total, pipeline)", "refId": "pipelines"},
        "definition": "label_values(sluice_runs_total, pipeline)",
        "multi": True,
        "includeAll": True,
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }
    source_variable = {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
    }
    return {
        "uid": "sluiceway-pipelines",
        "title": "sluiceway pipelines",
        "tags": ["sluiceway"],
        "schemaVersion": 39,
        "time": {"from": "now-24h", "to": "now"},
        "refresh": "1m",
        "templating": {"list": [source_variable, pipeline_variable]},
        "panels": panels,
    }


def alert_rules(
    *, no_success_hours: float = 26, lag_threshold: int = 10_000, p99_seconds: float = 60
) -> dict[str, Any]:
    """Prometheus alerting rules (the `rule_files` format) over the exported metrics.

    Args:
        no_success_hours: alert when a pipeline's last success is older than this.
        lag_threshold: alert when a stream's consumer lag stays above this many messages.
        p99_seconds: alert when a stream's end-to-end p99 latency stays above this.
    """
    rules = [
        (
            "SluiceRunFailed",
            'increase(sluice_runs_total{status="failed"}[15m]) > 0',
            "0m",
            "critical",
            "A run of {{ $labels.pipeline }} failed: see `sluice runs --pipeline "
            "{{ $labels.pipeline }}`.",
        ),
        (
            "SluiceNoRecentSuccess",
            f"time() - sluice_last_success_timestamp_seconds > {no_success_hours * 3600:g}",
            "5m",
            "warning",
            f"{{{{ $labels.pipeline }}}} has not succeeded for {no_success_hours:g} hours.",
        ),
        (
            "SluiceCheckFailed",
            'increase(sluice_checks_total{status=~"failed|error", severity="error"}[15m]) > 0',
            "0m",
            "critical",
            "Error-severity check {{ $labels.check }} of {{ $labels.pipeline }} failed.",
        ),
        (
            "SluiceConsumerLagHigh",
            f"sluice_stream_consumer_lag > {lag_threshold}",
            "10m",
            "warning",
            f"{{{{ $labels.pipeline }}}} is more than {lag_threshold} messages behind.",
        ),
        (
            "SluiceStreamLatencyHigh",
            f'sluice_stream_e2e_latency_seconds{{quantile="0.99"}} > {p99_seconds:g}',
            "10m",
            "warning",
            f"{{{{ $labels.pipeline }}}}: p99 enqueue-to-commit above {p99_seconds:g}s.",
        ),
    ]
    return {
        "groups": [
            {
                "name": "sluiceway",
                "rules": [
                    {
                        "alert": name,
                        "expr": expr,
                        "for": wait,
                        "labels": {"severity": severity},
                        "annotations": {"summary": summary},
                    }
                    for name, expr, wait, severity, summary in rules
                ],
            }
        ]
    }


def dashboard_expressions(dashboard: dict[str, Any], rules: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard and a rules document."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs + [r["expr"] for g in rules["groups"] for r in g["rules"]]
