"""`sluice tier` (move old partitions of a Delta sink to colder tiers) and `sluice cost`
(storage, compute and projected cost of a pipeline's tables)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from sluiceway.cli import _fail
from sluiceway.cli import load_or_exit as _load
from sluiceway.core.spec import Pipeline
from sluiceway.errors import ConfigError, SluicewayError
from sluiceway.ops.audit import AuditLog
from sluiceway.ops.cost import CostReport, by_layer, cost_report
from sluiceway.ops.pricing import load_prices
from sluiceway.ops.tiering import (
    Move,
    MoveOutcome,
    TierLayout,
    declare_tiers,
    execute_move,
    plan_moves,
    recover_manifests,
    tier_layout,
    tier_lock,
)
from sluiceway.sinks.delta import DeltaSinkConfig

_SUMMARY_COLUMNS = ("partition", "from", "to", "rows", "bytes")


def _cli() -> Any:
    from sluiceway import cli

    return cli


def _tiered_sink(pipeline: Pipeline, index: int | None) -> DeltaSinkConfig:
    tiered = [i for i, s in enumerate(pipeline.sinks) if isinstance(s, DeltaSinkConfig) and s.tiers]
    if index is None:
        if not tiered:
            raise ConfigError(
                f"pipeline '{pipeline.pipeline}' has no delta sink with `tiers:`; declare "
                "tiers on a delta sink (see docs/tiering-and-cost.md)."
            )
        index = tiered[0]
    if index not in tiered:
        raise ConfigError(
            f"--sink {index} is not a delta sink with tiers; sinks with tiers: {tiered}."
        )
    sink = pipeline.sinks[index]
    assert isinstance(sink, DeltaSinkConfig)
    return sink


@click.command("tier")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--sink", type=click.IntRange(min=0), help="Index of the sink (default: the first with tiers)."
)
@click.option(
    "--as-of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Age partitions relative to this date (default: today, UTC).",
)
@click.option("--dry-run", is_flag=True, help="List the partitions that would move; move none.")
@click.option("--state-dir", help="The state folder (default: $SLUICE_HOME or ./.sluice).")
def tier(
    spec: str, sink: int | None, as_of: datetime | None, dry_run: bool, state_dir: str | None
) -> None:
    """Move partitions older than each tier's `after` to that tier (safe to rerun)."""
    pipeline = _load(spec)
    state = _cli()._state_dir(state_dir)
    day = as_of.date() if as_of else datetime.now(UTC).date()
    done: list[tuple[Move, int]] = []
    try:
        layout = tier_layout(_tiered_sink(pipeline, sink), Path(spec).resolve().parent)
        with tier_lock(state, layout.hot.uri):
            _run_tier(layout, day, done, is_dry_run=dry_run)
    except SluicewayError as exc:
        if done:
            _audit(state, pipeline, layout, day, done, is_dry_run=dry_run, error=exc.message)
        _fail(exc.message, 2 if isinstance(exc, ConfigError) else 1)
    _summary(layout, done, is_dry_run=dry_run)
    _audit(state, pipeline, layout, day, done, is_dry_run=dry_run)


def _audit(
    state: Path,
    pipeline: Pipeline,
    layout: TierLayout,
    day: date,
    done: list[tuple[Move, int]],
    *,
    is_dry_run: bool,
    error: str | None = None,
) -> None:
    """Record the run, and the moves it made before failing (`error`) when it failed."""
    details: dict[str, Any] = {
        "as_of": day.isoformat(),
        "dry_run": is_dry_run,
        "moves": [_move_row(layout, move, rows) for move, rows in done],
    }
    if error is not None:
        details["error"] = error
    AuditLog(state).append(
        "tier",
        pipeline=pipeline.pipeline,
        tables=[loc.uri for loc in layout.locations],
        rows_affected=0 if is_dry_run else sum(rows for _, rows in done),
        details=details,
    )


def _run_tier(
    layout: TierLayout, as_of: date, done: list[tuple[Move, int]], *, is_dry_run: bool
) -> None:
    """Plan and make the moves, adding each one made to `done` as it completes."""
    if is_dry_run:
        done.extend((move, move.rows) for move in plan_moves(layout, as_of))
        return
    declare_tiers(layout)
    recover_manifests(layout)
    moves = plan_moves(layout, as_of)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=_cli().err_console, transient=True) as progress:
        task = progress.add_task("moving partitions", total=len(moves))
        for move in moves:
            outcome: MoveOutcome | None = execute_move(layout, move)
            if outcome is not None:
                done.append((move, outcome.rows))
            progress.advance(task)


def _move_row(layout: TierLayout, move: Move, rows: int) -> dict[str, Any]:
    return {
        "partition": str(move.value),
        "from": layout.locations[move.source].name,
        "to": layout.locations[move.dest].name,
        "rows": rows,
        "bytes": move.bytes,
    }


def _summary(layout: TierLayout, done: list[tuple[Move, int]], *, is_dry_run: bool) -> None:
    console = _cli().console
    verb = "would move (dry run)" if is_dry_run else "moved"
    if not done:
        console.print(f"{layout.hot.uri}: no partition to move.", soft_wrap=True, markup=False)
        return
    out = Table(title=escape(f"{len(done)} partition(s) {verb}"), box=box.SIMPLE)
    for column in _SUMMARY_COLUMNS:
        out.add_column(column, justify="right" if column in ("rows", "bytes") else "left")
    for move, rows in done:
        out.add_row(*(str(v) for v in _move_row(layout, move, rows).values()))
    console.print(out, soft_wrap=True)


@click.command("cost")
@click.argument("specs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--prices", type=click.Path(exists=True, dir_okay=False), help="Price table (YAML/JSON)."
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--fail-over-budget", is_flag=True, help="Exit 1 when a pipeline is over budget.")
@click.option("--state-dir", help="The state folder (default: $SLUICE_HOME or ./.sluice).")
def cost(
    specs: tuple[str, ...],
    prices: str | None,
    fmt: str,
    fail_over_budget: bool,
    state_dir: str | None,
) -> None:
    """Storage, compute and 12-month projected cost of each pipeline's tables."""
    state = _cli()._state_dir(state_dir)
    reports = []
    for spec in specs:
        pipeline = _load(spec)
        try:
            table = load_prices(pipeline, prices)
            reports.append(cost_report(pipeline, Path(spec).resolve().parent, state, table))
        except SluicewayError as exc:
            _fail(exc.message, 2 if isinstance(exc, ConfigError) else 1)
    is_over = any(report.is_over_budget for report in reports)
    layers = by_layer(reports)
    if fmt == "json":
        data = {"pipelines": [r.as_dict() for r in reports], "over_budget": is_over}
        print(json.dumps({**data, "by_layer": layers}))
    else:
        for report in reports:
            _print_report(report)
        if len(reports) > 1:
            _print_layers(layers)
    if is_over and fail_over_budget:
        sys.exit(1)


def _print_layers(layers: dict[str, dict[str, float]]) -> None:
    out = Table(title="by layer", box=box.SIMPLE)
    for column in ("layer", "bytes", "per month", "in 12 months"):
        out.add_column(column, justify="left" if column == "layer" else "right")
    for name, total in sorted(layers.items()):
        out.add_row(
            name,
            f"{total['bytes']:,.0f}",
            f"{total['monthly_total']:.4f}",
            f"{total['projected_monthly']:.4f}",
        )
    _cli().console.print(out, soft_wrap=True)


def _print_report(report: CostReport) -> None:
    console = _cli().console
    out = Table(title=escape(f"{report.pipeline} ({report.currency})"), box=box.SIMPLE)
    for column in ("table", "tier", "bytes", "files", "per month", "bytes/day", "in 12 months"):
        out.add_column(column, justify="left" if column in ("table", "tier") else "right")
    for row in report.tables:
        out.add_row(
            escape(row.label),
            row.tier,
            f"{row.bytes:,}",
            str(row.files),
            f"{row.storage_per_month:.4f}",
            f"{row.bytes_per_day:,.0f}",
            f"{row.projected_storage_per_month:.4f}",
        )
    console.print(out, soft_wrap=True)
    console.print(
        f"compute: {report.compute_hours_30d:.2f} h in 30 days = {report.compute_per_month:.4f}"
        f"/month; total {report.monthly_total:.4f}/month, projected in 12 months "
        f"{report.projected_monthly:.4f}/month",
        soft_wrap=True,
        markup=False,
    )
    if report.is_over_budget:
        console.print(
            f"[yellow]warning: {escape(report.pipeline)} is projected at "
            f"{report.projected_monthly:.2f} {report.currency}/month, over its budget of "
            f"{report.budget_per_month:.2f}[/]",
            soft_wrap=True,
        )
