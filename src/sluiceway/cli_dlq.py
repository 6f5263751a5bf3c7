"""`sluice dlq`, `sluice replay` and `sluice demo`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from sluiceway.core.loader import load_spec
from sluiceway.core.replay import dead_letter_table
from sluiceway.core.replay import replay as replay_run
from sluiceway.core.runner import RunOptions
from sluiceway.errors import SluicewayError


def _cli() -> Any:
    from sluiceway import cli

    return cli


def _where(row: dict[str, Any]) -> str:
    """`file:line` for a line the parser rejected, `file row N` (the Nth record, header
    not counted) for a record the contract or a check rejected."""
    name = Path(row["file"] or "").name or "?"
    if row["line"] is not None:
        return f"{name}:{row['line']}"
    return f"{name} row {row['row']}" if row["row"] is not None else name


@click.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option("--run", "run_id", help="Only the dead letters of this run.")
@click.option(
    "--limit", default=20, show_default=True, help="How many rows to show (0: every row)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    help="json: one JSON object per dead letter per line (NDJSON; none: no output).",
)
@click.option(
    "--state-dir",
    help="Where runs are recorded (default: the spec's project's state_dir, else "
    "$SLUICE_HOME or ./.sluice).",
)
def dlq(spec: str, run_id: str | None, limit: int, fmt: str, state_dir: str | None) -> None:
    """List dead-letter rows of a pipeline (PII masked; raw payloads never shown)."""
    cli = _cli()
    try:
        pipeline = load_spec(spec)
        state, _ = _state_of(spec, state_dir)
        options = RunOptions(base_dir=Path(spec).resolve().parent, state_dir=state)
        table = dead_letter_table(pipeline, options)
        letters = table.read(pipeline=pipeline.pipeline, run_id=run_id)
    except SluicewayError as exc:
        cli._fail(str(exc))
    raw = letters.column("raw_payload")
    empty = [r is None or r == b"" for r in raw.slice(0, limit or None).to_pylist()]
    shown = letters.drop_columns(["raw_payload"]).slice(0, limit or None).to_pylist()
    if len(shown) < letters.num_rows:
        click.echo(
            f"showing {len(shown)} of {letters.num_rows} dead letters; --limit 0 shows every one",
            err=True,
        )
    if fmt == "json":
        for row in shown:
            print(json.dumps(row, default=str))
        return
    out = Table(title=f"{letters.num_rows} dead-letter row(s) in {table.uri}", header_style="bold")
    for column in ("dlq_id", "run", "source", "where", "stage", "errors", "payload"):
        out.add_column(column, overflow="fold")
    for row, is_empty in zip(shown, empty, strict=True):
        where = _where(row)
        errors = "; ".join(
            f"{e['column'] or '*'}.{e['rule']}: {e['reason']}" for e in row["errors"] or []
        )
        out.add_row(
            row["dlq_id"][:12],
            row["run_id"],
            row["source"],
            where,
            row["stage"],
            errors,
            (row["payload"] or ("(no payload)" if is_empty else "(encrypted)"))[:120],
        )
    cli.console.print(out)


@click.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option("--run", "run_id", required=True, help="The run whose dead letters to replay.")
@click.option(
    "--date",
    "run_date",
    type=click.DateTime(["%Y-%m-%d"]),
    help="Logical date of the replay run (default: the date of the run replayed).",
)
@click.option(
    "--state-dir",
    help="Where runs are recorded (default: the spec's project's state_dir, else "
    "$SLUICE_HOME or ./.sluice).",
)
def replay(spec: str, run_id: str, run_date: Any, state_dir: str | None) -> None:
    """Send a run's dead letters back through the pipeline after the spec was fixed."""
    cli = _cli()
    try:
        state, store = _state_of(spec, state_dir)
        options = RunOptions(
            logical_date=run_date.date() if run_date else None,
            base_dir=Path(spec).resolve().parent,
            state_dir=state,
            run_store=store,
        )
        outcome = replay_run(load_spec(spec), run_id, options)
    except SluicewayError as exc:
        cli._fail(str(exc))
    if outcome.run is not None:
        cli.print_summary(outcome.run)
    cli.console.print(
        f"replayed {outcome.replayed} dead letter(s): {outcome.passed} passed and left the "
        f"dead-letter table ({outcome.deleted} deleted), {outcome.still_failing} still fail"
    )
    run = outcome.run
    dropped = run.accounting.rows_filtered + run.accounting.rows_deduplicated if run else 0
    if run is not None and outcome.passed and dropped:
        cli.console.print(
            f"of those that passed, {run.accounting.rows_written:,} were written and "
            f"{dropped:,} were dropped by the steps ({run.accounting.rows_filtered:,} filtered, "
            f"{run.accounting.rows_deduplicated:,} deduplicated), as a run of "
            f"{run.logical_date} would drop them",
            soft_wrap=True,
        )
    if outcome.not_replayable:
        cli.console.print(
            f"{outcome.not_replayable} other dead letter(s) of this run cannot be replayed "
            "(unparseable records or pages, rejects of other sources, rows a check routed): "
            "they hold no row to rebuild; fix the input and run the date again "
            f"(`sluice dlq {spec} --run {run_id}` lists them)"
        )
    sys.exit(0 if outcome.run is None or outcome.run.ok else 1)


@click.command()
@click.option(
    "--dir", "workdir", default="sluice-demo", show_default=True, help="Where to put data and lake."
)
@click.option("--rows", default=20_000, show_default=True, help="Clickstream rows to generate.")
def demo(workdir: str, rows: int) -> None:
    """Generate a clickstream sample with defects and run examples/clickstream_batch on it."""
    from sluiceway.demo.run import run_demo
    from sluiceway.observability.progress import ConsoleProgress

    cli = _cli()
    target = Path(workdir).resolve()
    result, sample, keys_file = run_demo(
        target, rows=rows, subscribers=[ConsoleProgress(cli.err_console)]
    )
    d = sample.defects
    cli.console.print(
        f"[bold]generated[/] {sample.rows:,} clickstream rows in {target / 'data'} with defects: "
        f"{d.duplicates} duplicates, {d.null_user_id} null user_id, {d.unknown_event_type} unknown event types, "
        f"{d.negative_price} negative prices, {d.malformed_timestamp} malformed timestamps, "
        f"{d.bad_email} bad emails, {d.malformed_lines + d.invalid_utf8_lines} broken lines"
    )
    cli.print_summary(result)
    if keys_file is not None:
        cli.console.print(
            f"masking keys: made for this demo and kept in {keys_file}; to run or replay "
            f"here, first: set -a; . {keys_file}; set +a   (in production they come from "
            "your secret store)",
            soft_wrap=True,
        )
    cli.console.print(
        f"\nnext: sluice runs --state-dir {target / '.sluice'}\n"
        f"      sluice dlq {target / 'pipeline.yaml'}\n"
        f"      sluice report --state-dir {target / '.sluice'} --open"
    )
    sys.exit(0 if result.ok else 1)


def _state_of(spec: str, state_dir: str | None) -> tuple[Path, Any]:
    """The state folder and run store of `spec`'s runs: --state-dir, else its project's
    (found from the spec's folder, as `sluice run SPEC` finds it), else the default."""
    from sluiceway import cli_orchestrate as orchestrate

    context = orchestrate.find_project(None, near=Path(spec).resolve().parent)
    state = Path(_cli()._state_dir(orchestrate.state_dir_of(context, state_dir)))
    return state, orchestrate.store_location_of(context, state)
