"""Project runs for `sluice run --all / NAME --downstream`, and `sluice backfill`.

`sluice run` (in cli.py) parses its options and calls `run_many` for a multi-pipeline run;
the project lookup and the pipeline resolution used by both commands live here.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from sluiceway.cli import _fail
from sluiceway.core.events import Event, Subscriber
from sluiceway.core.loader import load_project, load_spec
from sluiceway.core.project import find_project_file
from sluiceway.core.results import RunResult
from sluiceway.core.runstore import RunStore
from sluiceway.core.store_db import StoreLocation
from sluiceway.errors import ConfigError, SpecError
from sluiceway.observability.logs import json_logger
from sluiceway.orchestration import ProjectContext, run_project_pipeline, store_location
from sluiceway.orchestration.backfill import (
    REPROCESS,
    DateOutcome,
    PlannedDate,
    dates_between,
    plan_dates,
    run_dates,
    run_range,
)
from sluiceway.orchestration.graph import (
    ProjectSpec,
    downstream,
    unlike_masking_problems,
    usable_graph,
    waves,
)
from sluiceway.orchestration.parallel import Outcome, run_graph

_STYLE = {"succeeded": "green", "failed": "red", "skipped": "yellow"}


def _cli() -> Any:
    from sluiceway import cli

    return cli


def _spec_error(exc: SpecError) -> NoReturn:
    _print_problems(exc.problems, exc.source or "spec", source=exc.source)
    sys.exit(2)


def find_project(project_file: str | None, *, near: Path | None = None) -> ProjectContext | None:
    """The project of `--project FILE`, else the nearest `sluice.yaml` above `near` (a spec's
    folder: its project, wherever the command runs from) or the working folder (None: no
    project).

    Exits 2 with every problem when the project file is invalid or missing.
    """
    path = Path(project_file) if project_file else None
    if path is None and near is not None:
        path = find_project_file(near)
    if path is None and not project_file:
        path = find_project_file()
    if path is None:
        return None
    if not path.is_file():
        _fail(f"--project {project_file}: no such file; give the path of a sluice.yaml")
    try:
        project = load_project(path)
    except SpecError as exc:
        _spec_error(exc)
    path = path.resolve()
    return ProjectContext(project, path.parent, path)


def state_dir_of(context: ProjectContext | None, state_dir: str | None) -> str | None:
    """`--state-dir` when given, else the project's state folder (None: the default)."""
    if state_dir or context is None:
        return state_dir
    return str(context.state_dir())


def store_location_of(context: ProjectContext | None, state: Path) -> StoreLocation:
    """The run store: $SLUICE_RUN_STORE, else the project's `run_store`, else
    `<state>/runs.db`.

    Raises:
        ConfigError: an unusable run store URL.
    """
    return store_location(context, state)


def resolve_spec(target: str, context: ProjectContext | None) -> ProjectSpec:
    """A spec file path, or the name of a pipeline of the project."""
    path = Path(target)
    if path.is_file():
        try:
            spec = ProjectSpec(load_spec(path), path.resolve())
        except SpecError as exc:
            _spec_error(exc)
        if context is not None:
            _refuse_unlike_masking(spec, context)
        return spec
    if context is None:
        _fail(
            f"'{target}' is neither a spec file nor a pipeline of a project: no sluice.yaml "
            "was found here or above; give a spec path, or --project FILE"
        )
    # Another team's broken spec does not keep this pipeline from running, nor does a
    # broken dependency (run alone, it reads what the dependency published).
    try:
        usable = usable_graph(context.project, context.root)
        found = usable.graph.specs.get(target) or usable.blocked.get(target)
        if found is not None:
            _refuse_unlike_masking(found, context)
            return found
        if target in set(usable.left_out.values()):
            mine = [p for p in usable.problems if usable.left_out.get(p.file or "") == target]
            raise SpecError(mine or usable.problems, source="the project's specs")
        return usable.graph.resolve(target)
    except SpecError as exc:
        _spec_error(exc)


class _Ticker:
    """Multi-run progress: one line as each run starts, retries and finishes (a live bar per
    run would fight the others for the terminal)."""

    def __init__(self) -> None:
        self.console = _cli().err_console

    def __call__(self, event: Event) -> None:
        fields = event.fields
        if event.name == "run_started":
            self.console.print(f"[dim]→ {event.pipeline} started ({fields.get('logical_date')})[/]")
        elif event.name == "retrying":
            self.console.print(
                f"[yellow]↻ {event.pipeline}: attempt {fields['attempt']}/"
                f"{fields['max_attempts']}, next in {fields['next_in_s']:.0f} s[/]"
            )


def _locked(subscriber: Subscriber) -> Subscriber:
    lock = threading.Lock()

    def deliver(event: Event) -> None:
        with lock:
            subscriber(event)

    return deliver


def run_many(
    context: ProjectContext | None,
    *,
    start: str | None,
    run_date: date | None,
    workers: int | None,
    log_format: str,
    state_dir: str | None,
    review: Any,
) -> NoReturn:
    """Run every pipeline of the project (start None) or `start` and its downstream, in
    dependency order with at most `workers` at once; print one summary; exit 1 on failure."""
    if context is None:
        _fail(
            "--all and --downstream need a project: no sluice.yaml here or above "
            "(or give --project FILE)"
        )
    try:
        usable = usable_graph(context.project, context.root)
    except SpecError as exc:
        _spec_error(exc)
    graph = usable.graph
    broken = sorted(set(usable.left_out.values()) - set(graph.specs))
    if not graph.specs or (start is not None and start not in graph.specs and start in broken):
        _spec_error(SpecError(usable.problems, source="the project's specs"))
    try:
        names = (
            set(graph.specs) if start is None else downstream(graph, [graph.resolve(start).name])
        )
    except SpecError as exc:
        _spec_error(exc)
    if start is not None:  # only the pipelines left out below `start` would have run
        broken = [n for n in usable.left_out_below(start) if n not in graph.specs]
    problems = usable.problems if start is None or broken else []
    if problems:  # a broken spec naming a pipeline that runs is said too
        shown = ", ".join(broken) or "none (a spec with problems, beside a sound one)"
        _print_problems(problems, f"left out of this run: {shown}")
    streams = sorted(n for n in names if graph.specs[n].pipeline.mode == "stream")
    names -= set(streams)
    for name in sorted(names):
        review(graph.specs[name])
    state = Path(_cli()._state_dir(state_dir_of(context, state_dir)))
    logger = _locked(json_logger()) if log_format == "json" else _Ticker()
    err = _cli().err_console

    def run_one(name: str) -> RunResult:
        return run_project_pipeline(
            graph.specs[name],
            context,
            state_dir=state,
            logical_date=run_date,
            subscribers=[logger],
            warn=lambda m: err.print(f"[yellow]{escape(m)}[/]"),
        )

    stop = _stop_on_sigterm()
    outcomes = run_graph(
        graph.depends_on,
        names,
        run_one,
        workers=workers or context.project.max_workers,
        on_outcome=None if log_format == "json" else _print_outcome,
        stop=stop,
    )
    reason = "stream pipeline: it runs continuously; start it with `sluice run NAME`"
    ordered = [outcomes[n] for wave in waves(graph.depends_on, names) for n in wave]
    ordered += [Outcome(n, "skipped", reason=reason) for n in streams]
    ordered += [
        Outcome(n, "failed", reason="not run: its spec, or a dependency's, has problems (above)")
        for n in broken
    ]
    if log_format == "json":
        print(json.dumps([_outcome_data(o) for o in ordered], default=str))
    else:
        _cli().console.print(summary_table(ordered))
    failed = problems or any(o.status == "failed" for o in ordered)
    sys.exit(143 if stop.is_set() else 1 if failed else 0)


def _print_problems(problems: list[Any], headline: str, *, source: str | None = None) -> None:
    """A headline, then each problem as `file:line  path  message` (`source` stands for a
    problem's file when it has none)."""
    err = _cli().err_console
    err.print(f"[bold red]✗ {escape(headline)}[/]: {len(problems)} problem(s)", soft_wrap=True)
    for problem in problems:
        where = f"{problem.file or source or ''}:{problem.line or '?'}"
        err.print(
            f"  {escape(where)}  [cyan]{escape(problem.path or '<root>')}[/]  "
            f"{escape(problem.message)}",
            soft_wrap=True,
        )


def _refuse_unlike_masking(spec: ProjectSpec, context: ProjectContext) -> None:
    """A spec run by its path writes a table another pipeline of the project masks
    otherwise: refused as `run --all` would leave it out (its rows would hold clear PII
    beside masked ones)."""
    mine = unlike_masking_problems(spec, context.project, context.root)
    if mine:
        _spec_error(SpecError(mine, source="the project's sinks"))


def _stop_on_sigterm() -> threading.Event:
    """SIGTERM (what a scheduler or a service manager sends to stop a task) stops the
    project run as the scheduler stops: the running pipelines finish (each publishes or not,
    as a whole), none starts after it, and the command exits 143 (128 + SIGTERM)."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        if not stop.is_set():
            _cli().err_console.print(
                "SIGTERM: finishing the running pipelines; no other starts", markup=False
            )
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    return stop


def _print_outcome(outcome: Outcome) -> None:
    style = _STYLE[outcome.status]
    tail = f": {outcome.reason}" if outcome.reason else ""
    _cli().err_console.print(
        f"[{style}]{outcome.status}[/] {escape(outcome.name)}{escape(tail)}", soft_wrap=True
    )


def summary_table(outcomes: list[Outcome]) -> Table:
    """One row per pipeline: status, rows in / written / rejected, duration, error or reason."""
    table = Table(title="Pipelines", header_style="bold")
    for column in ("pipeline", "status", "in", "written", "rejected", "secs", "error / reason"):
        table.add_column(column, overflow="fold")
    for outcome in outcomes:
        result = outcome.result
        counts = ["", "", ""]
        secs = ""
        if result is not None:
            acc = result.accounting
            counts = [f"{v:,}" for v in (acc.rows_in, acc.rows_written, acc.rows_rejected)]
            if not result.ok and not result.sinks:  # staged, never published
                counts[1] = "–"
            secs = f"{result.duration_s:.1f}"
        style = _STYLE[outcome.status]
        table.add_row(
            outcome.name,
            f"[{style}]{outcome.status}[/]",
            *counts,
            secs,
            escape(outcome.reason or ""),
        )
    return table


def _outcome_data(outcome: Outcome) -> dict[str, Any]:
    data: dict[str, Any] = {"pipeline": outcome.name, "status": outcome.status}
    if outcome.result is not None:
        data.update(_cli().summary_data(outcome.result))
        data["status"] = outcome.status
    data["reason"] = outcome.reason
    return data


@click.command("backfill")
@click.argument("target", metavar="NAME|SPEC")
@click.option(
    "--from", "first", required=True, type=click.DateTime(["%Y-%m-%d"]), help="First date."
)
@click.option(
    "--to", "last", required=True, type=click.DateTime(["%Y-%m-%d"]), help="Last date (included)."
)
@click.option("--parallel", type=click.IntRange(1, 64), help="Dates run at once.")
@click.option(
    "--reprocess",
    type=click.Choice(REPROCESS),
    default="missing",
    show_default=True,
    help="missing: dates with no succeeded run; failed: dates whose latest run failed; all.",
)
@click.option("--dry-run", is_flag=True, help="List the dates that would run, run nothing.")
@click.option(
    "--downstream",
    is_flag=True,
    help="Then rerun every pipeline that depends on it, in dependency order, for the dates "
    "that succeeded upstream.",
)
@click.option("--project", "project_file", help="The sluice.yaml (default: the nearest one).")
@click.option("--state-dir", help="Where runs are recorded (default: the project's state_dir).")
def backfill(
    target: str,
    first: datetime,
    last: datetime,
    parallel: int | None,
    reprocess: Any,
    dry_run: bool,
    downstream: bool,
    project_file: str | None,
    state_dir: str | None,
) -> None:
    """Run a pipeline once per logical date from --from to --to (both included), or once
    over the range when the spec is `range_capable`. Exit 1 if any date failed."""
    # As `sluice run SPEC`: the project of a spec file is found from the spec's folder.
    near = Path(target).resolve().parent if Path(target).is_file() else None
    context = find_project(project_file, near=near)
    spec = resolve_spec(target, context)
    if spec.pipeline.mode == "stream":
        _fail(f"pipeline '{spec.name}' is a stream pipeline: a backfill runs batch pipelines")
    try:
        candidates = dates_between(first.date(), last.date())
    except ValueError as exc:
        _fail(str(exc))
    state = Path(_cli()._state_dir(state_dir_of(context, state_dir)))
    try:
        store = RunStore(store_location_of(context, state))
    except ConfigError as exc:
        _fail(exc.message)
    plan = plan_dates(store, spec.name, candidates, reprocess)
    if dry_run:
        _print_plan(spec, plan, len(candidates))
        sys.exit(0)
    if not plan:
        _cli().console.print(
            f"nothing to run: no date of {first:%Y-%m-%d}..{last:%Y-%m-%d} is "
            f"selected by --reprocess {reprocess}"
        )
        sys.exit(0)
    workers = parallel or (context.project.max_workers if context else 1)
    span = f"--from {first:%Y-%m-%d} --to {last:%Y-%m-%d}"
    outcomes = _run_backfill(spec, context, state, plan, workers)
    _print_backfill_end(spec, outcomes, span)
    failed = any(not o.ok for o in outcomes)
    if downstream:
        days = [planned.logical_date for planned in plan]
        failed = _backfill_downstream(spec, context, state, outcomes, days, workers, span) or failed
    sys.exit(1 if failed else 0)


def _backfill_downstream(
    spec: ProjectSpec,
    context: ProjectContext | None,
    state: Path,
    upstream: list[DateOutcome],
    planned: list[date],
    workers: int,
    span: str,
) -> bool:
    """Rerun the pipelines below `spec`, wave by wave, each for the dates every one of its
    dependencies in the backfill succeeded (a date that failed upstream is held back, as
    `run --all` holds it). Returns whether anything failed or was held back."""
    if context is None:
        _fail("--downstream needs a project: no sluice.yaml here or above (or --project FILE)")
    usable = usable_graph(context.project, context.root)
    graph = usable.graph
    if spec.name not in graph.specs:
        _spec_error(SpecError(usable.problems, source="the project's specs"))
    below = downstream(graph, [spec.name]) - {spec.name}
    broken = [n for n in usable.left_out_below(spec.name) if n not in graph.specs]
    if broken:
        _print_problems(usable.problems, f"left out of this backfill: {', '.join(broken)}")
    days = {spec.name: {o.logical_date for o in upstream if o.ok}}
    if spec.pipeline.range_capable and upstream and upstream[0].ok:
        days[spec.name] = set(planned)  # one run over the range
    failed = bool(broken)
    for wave in waves(graph.depends_on, below | {spec.name}):
        for name in (n for n in wave if n != spec.name):
            child = graph.specs[name]
            if child.pipeline.mode == "stream":  # it runs on its own; counts as met
                days[name] = set(planned)
                continue
            ready = set.intersection(
                *(days.get(d, set()) for d in graph.depends_on[name] if d in days)
            )
            held = [d for d in sorted(planned) if d not in ready]
            plan = [PlannedDate(d, "upstream backfilled") for d in sorted(ready)]
            outcomes = _run_backfill(child, context, state, plan, workers) if plan else []
            _print_backfill_end(child, outcomes, span)
            if held:
                _cli().console.print(
                    f"{escape(name)}: held back for {', '.join(d.isoformat() for d in held)} "
                    "(a dependency failed for those dates)"
                )
            days[name] = {o.logical_date for o in outcomes if o.ok}
            if child.pipeline.range_capable and outcomes and outcomes[0].ok:
                days[name] = set(ready)
            failed = failed or bool(held) or any(not o.ok for o in outcomes)
    return failed


def _print_plan(spec: ProjectSpec, plan: list[PlannedDate], candidates: int) -> None:
    console = _cli().console
    table = Table(title=f"Backfill of {spec.name} (dry run)", header_style="bold")
    table.add_column("date")
    table.add_column("why")
    for planned in plan:
        table.add_row(planned.logical_date.isoformat(), planned.reason)
    console.print(table)
    if spec.pipeline.range_capable and plan:
        span = f"{plan[0].logical_date}..{plan[-1].logical_date}"
        console.print(f"range_capable: one run over {span}")
    console.print(f"{len(plan)} of {candidates} date(s) would run; nothing was run")


def _run_backfill(
    spec: ProjectSpec,
    context: ProjectContext | None,
    state: Path,
    plan: list[PlannedDate],
    workers: int,
) -> list[DateOutcome]:
    err = _cli().err_console

    def run_one(day: date, span: tuple[date, date] | None = None) -> RunResult:
        return run_project_pipeline(
            spec,
            context,
            state_dir=state,
            logical_date=day,
            date_range=span,
            warn=lambda m: err.print(f"[yellow]{escape(m)}[/]"),
        )

    total = 1 if spec.pipeline.range_capable else len(plan)
    with _BackfillBar(spec.name, total) as bar:
        if spec.pipeline.range_capable:
            outcome = run_range(plan, run_one)
            bar(outcome)
            return [outcome]
        return run_dates(plan, run_one, workers=workers, on_outcome=bar)


class _BackfillBar:
    """A progress bar with done / failed / remaining columns."""

    def __init__(self, name: str, total: int) -> None:
        self.progress = Progress(
            TextColumn(f"[bold]{escape(name)}[/]"),
            BarColumn(),
            TextColumn("[green]{task.fields[done]} done[/]"),
            TextColumn("[red]{task.fields[failed]} failed[/]"),
            TextColumn("{task.fields[remaining]} remaining"),
            TimeElapsedColumn(),
            console=_cli().err_console,
        )
        self.total, self.done, self.failed = total, 0, 0
        self.task: TaskID | None = None

    def __enter__(self) -> _BackfillBar:
        self.progress.start()
        self.task = self.progress.add_task("backfill", total=self.total, **self._fields())
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def _fields(self) -> dict[str, Any]:
        remaining = self.total - self.done - self.failed
        return {"done": self.done, "failed": self.failed, "remaining": remaining}

    def __call__(self, outcome: DateOutcome) -> None:
        self.done += outcome.ok
        self.failed += not outcome.ok
        assert self.task is not None
        self.progress.update(self.task, advance=1, **self._fields())


def _print_backfill_end(spec: ProjectSpec, outcomes: list[DateOutcome], span: str) -> None:
    console = _cli().console
    failed = [o for o in outcomes if not o.ok]
    ok = len(outcomes) - len(failed)
    colour = "red" if failed else "green"
    runs = "1 range run" if spec.pipeline.range_capable else f"{len(outcomes)} date(s)"
    console.print(
        f"[bold {colour}]backfill of {spec.name}[/]: {runs}, {ok} succeeded, {len(failed)} failed"
    )
    if not failed:
        return
    table = Table(title="Failed dates", header_style="bold")
    table.add_column("date", no_wrap=True)
    table.add_column("error", overflow="fold")
    for outcome in failed:
        table.add_row(outcome.logical_date.isoformat(), escape(outcome.error or "failed"))
    console.print(table)
    console.print(f"after a fix, rerun them: sluice backfill {spec.name} {span} --reprocess failed")
