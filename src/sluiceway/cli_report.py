"""`sluice report`: a static HTML site of runs, checks and trends from the stored results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from sluiceway.core.loader import load_spec
from sluiceway.errors import SluicewayError, SpecError
from sluiceway.observability.report import PAGE_SIZE, RUNS_LIMIT, build_report, render_run

STATE_DIR_HELP = (
    "Where runs are recorded (default: the state_dir of the spec's project, found from the "
    "spec's folder or this one, else $SLUICE_HOME or ./.sluice)."
)


def _cli() -> Any:
    from sluiceway import cli

    return cli


@click.command("report")
@click.argument("spec", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--state-dir", help=STATE_DIR_HELP)
@click.option("--pipeline", help="Only this pipeline's runs (default: the SPEC's pipeline).")
@click.option("--run", "run_id", help="Render only this run's page (id or unique prefix).")
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Where the site goes (default: <state dir>/report).",
)
@click.option(
    "--page-size",
    type=click.IntRange(min=1),
    default=PAGE_SIZE,
    show_default=True,
    help="Runs per index page.",
)
@click.option(
    "--runs-limit",
    type=click.IntRange(min=1),
    default=RUNS_LIMIT,
    show_default=True,
    help="Run pages and trend points for at most this many of the newest runs.",
)
@click.option("--rewrite", is_flag=True, help="Rewrite every run page, even up-to-date ones.")
@click.option("--open", "open_browser", is_flag=True, help="Open the report in a browser.")
def report(
    spec: str | None,
    state_dir: str | None,
    pipeline: str | None,
    run_id: str | None,
    out_dir: str | None,
    page_size: int,
    runs_limit: int,
    rewrite: bool,
    open_browser: bool,
) -> None:
    """Render an HTML quality report from stored run results: the runs (paginated), one page
    per run with its checks, and trends per pipeline. Opens offline: no script, no network."""
    from sluiceway import cli_orchestrate as orchestrate

    cli = _cli()
    # The runs of the spec's project (found from its folder, else from here), as `sluice
    # run` recorded them: its state_dir and run_store, unless --state-dir says otherwise.
    near = Path(spec).resolve().parent if spec is not None else None
    context = orchestrate.find_project(None, near=near)
    state = Path(cli._state_dir(orchestrate.state_dir_of(context, state_dir)))
    out = Path(out_dir).resolve() if out_dir else state / "report"
    try:
        location = orchestrate.store_location_of(context, state)
        if spec is not None:
            pipeline = _spec_pipeline(spec, pipeline)
        if run_id is not None:
            page = render_run(state, out, run_id, location=location)
            click.echo(str(page))
        else:
            summary = build_report(
                state,
                out,
                pipeline=pipeline,
                page_size=page_size,
                runs_limit=runs_limit,
                rewrite=rewrite,
                location=location,
            )
            page = summary.index
            click.echo(
                f"report: {page} ({summary.runs:,} run(s) on {summary.index_pages} index "
                f"page(s); run pages: {summary.run_pages_written} written, "
                f"{summary.run_pages_kept} up to date; {len(summary.trend_pages)} trend page(s))"
            )
    except SpecError as exc:
        cli._print_problems(spec or "", exc)
        sys.exit(2)
    except SluicewayError as exc:
        cli._fail(exc.message, code=1)
    if open_browser:
        click.launch(str(page))


def _spec_pipeline(spec: str, pipeline: str | None) -> str:
    name = load_spec(spec).pipeline
    if pipeline is not None and pipeline != name:
        raise SluicewayError(
            f"--pipeline '{pipeline}' differs from the pipeline of {spec} ('{name}'): "
            "give one of them"
        )
    return name
