"""`sluice serve` (Prometheus `/metrics` from the run store) and `sluice export metrics |
grafana` (a textfile for node-exporter; a Grafana dashboard and Prometheus alert rules)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml

from sluiceway.errors import ConfigError

STATE_DIR_HELP = (
    "Where runs are recorded (default: the project's state_dir, else $SLUICE_HOME or "
    "./.sluice; $SLUICE_RUN_STORE or the project's run_store names another run store)."
)


def _store_and_project(state_dir: str | None, project_file: str | None) -> tuple[Any, Any]:
    """The run store the project's runs are recorded in, and the project (or None)."""
    from sluiceway import cli_orchestrate as orchestrate

    context = orchestrate.find_project(project_file)
    state = _cli()._state_dir(orchestrate.state_dir_of(context, state_dir))
    return orchestrate.store_location_of(context, state), context


def _cli() -> Any:
    from sluiceway import cli

    return cli


def _metrics() -> Any:
    """The metrics module; prometheus_client is imported only by commands that need it."""
    try:
        from sluiceway.observability import metrics
    except ImportError as exc:
        _cli()._fail(
            f"the metrics commands need prometheus_client ({exc}): pip install prometheus_client",
            code=1,
        )
    return metrics


@click.command("serve")
@click.option("--state-dir", help=STATE_DIR_HELP)
@click.option("--host", help="Address to listen on (default: the project's, else 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="TCP port (default: the project's, else 9464)."
)
@click.option("--project", "project_file", help="The sluice.yaml (default: the nearest one).")
def serve(
    state_dir: str | None, host: str | None, port: int | None, project_file: str | None
) -> None:
    """Serve Prometheus metrics of the run store at http://HOST:PORT/metrics until stopped
    (Ctrl-C / SIGTERM). Each scrape reads the store (cached for one second)."""
    cli, metrics = _cli(), _metrics()
    try:
        db_path, context = _store_and_project(state_dir, project_file)
        settings = context.project.metrics if context else None
        host = host or (settings.host if settings else "127.0.0.1")
        port = port if port is not None else (settings.port if settings else 9464)
        server = metrics.metrics_server(db_path, host=host, port=port)
    except ConfigError as exc:
        cli._fail(exc.message, code=1)
    bound_host, bound_port = server.server_address[:2]
    click.echo(f"serving metrics of {db_path.label} at http://{bound_host}:{bound_port}/metrics")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@click.group("export")
def export() -> None:
    """Export metrics for node-exporter, or a Grafana dashboard and alert rules."""


@export.command("metrics")
@click.option("--state-dir", help=STATE_DIR_HELP)
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False),
    help="The .prom file to write (atomically) in node-exporter's textfile directory "
    "(default: the project's metrics.textfile).",
)
@click.option("--project", "project_file", help="The sluice.yaml (default: the nearest one).")
def export_metrics(state_dir: str | None, textfile: str | None, project_file: str | None) -> None:
    """Write the metrics `sluice serve` exposes to a file, for node-exporter's textfile
    collector (run it from cron or after each pipeline run)."""
    cli, metrics = _cli(), _metrics()
    db_path, context = _store_and_project(state_dir, project_file)
    configured = context.project.metrics.textfile if context else None
    if textfile is None and configured is None:
        cli._fail("give --textfile FILE.prom (or set metrics.textfile in sluice.yaml)")
    path = Path(textfile).resolve() if textfile else (context.root / str(configured)).resolve()
    try:
        size = metrics.write_textfile(db_path, path)
    except ConfigError as exc:
        cli._fail(exc.message, code=1)
    click.echo(f"metrics: {path} ({size:,} bytes)")
    if path.suffix != ".prom":
        click.echo(f"note: node-exporter reads only *.prom files; {path.name} is ignored", err=True)


@export.command("grafana")
@click.option(
    "-o",
    "--out",
    "out_dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for dashboard.json and alerts.yml (created if missing).",
)
@click.option(
    "--no-success-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=26,
    show_default=True,
    help="Alert when a pipeline has not succeeded for this many hours.",
)
@click.option(
    "--lag-threshold",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Alert when a stream's consumer lag stays above this many messages for 10m.",
)
@click.option(
    "--p99-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=60,
    show_default=True,
    help="Alert when a stream's end-to-end p99 latency stays above this for 10m.",
)
def export_grafana(
    out_dir: str, no_success_hours: float, lag_threshold: int, p99_seconds: float
) -> None:
    """Write a Grafana dashboard (dashboard.json, templated on pipeline) and Prometheus
    alert rules (alerts.yml) for the metrics `sluice serve` exposes."""
    cli, metrics = _cli(), _metrics()
    dashboard = metrics.grafana_dashboard()
    rules = metrics.alert_rules(
        no_success_hours=no_success_hours, lag_threshold=lag_threshold, p99_seconds=p99_seconds
    )
    unknown = metrics.unknown_metric_names(metrics.dashboard_expressions(dashboard, rules))
    if unknown:
        raise AssertionError(f"dashboard or rules name unexported metrics: {sorted(unknown)}")
    out = Path(out_dir).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "dashboard.json").write_text(json.dumps(dashboard, indent=2) + "\n")
        (out / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False, width=100))
    except OSError as exc:
        cli._fail(f"cannot write to {out}: {exc.strerror or exc}; choose another -o", code=1)
    click.echo(f"dashboard: {out / 'dashboard.json'}\nalert rules: {out / 'alerts.yml'}")
