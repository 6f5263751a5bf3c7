"""The `sluice` command. Thin: parses arguments, calls the package, renders results."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.markup import escape
from rich.table import Table

from sluiceway.checks.base import CheckResult
from sluiceway.core.loader import load_spec
from sluiceway.core.results import was_published
from sluiceway.core.runner import RunResult
from sluiceway.core.runstore import RunStore
from sluiceway.core.spec import Pipeline
from sluiceway.errors import ConfigError, SluicewayError, SpecError
from sluiceway.observability.logs import json_logger
from sluiceway.observability.progress import ConsoleProgress
from sluiceway.terminal import new_console

console = new_console()
err_console = new_console(stderr=True)
RUN_ID_WIDTH = len("20250115T000000-0123abcd")


def _state_dir(state_dir: str | None) -> Path:
    import os

    return Path(state_dir or os.environ.get("SLUICE_HOME") or Path.cwd() / ".sluice").resolve()


def _fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    sys.exit(code)


def load_or_exit(spec: str) -> Pipeline:
    """The spec at `spec`, or its problems on stderr (path, line, did-you-mean) and exit 2."""
    try:
        return load_spec(spec)
    except SpecError as exc:
        _print_problems(spec, exc)
        sys.exit(2)


def entry() -> None:
    """The `sluice` console script: run the command, then leave without the native exit
    handlers. A reader thread that deltalake leaves behind for pyarrow datasets can abort
    the process at interpreter exit ("terminate called without an active exception"),
    turning a finished command into exit code 134; by then all output is flushed and every
    commit is done, so nothing is lost by skipping them."""
    code = 0
    try:
        main(standalone_mode=True)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


_LAZY_COMMANDS = {
    "audit": "cli_governance:audit",
    "backfill": "cli_orchestrate:backfill",
    "check": "cli_review:check",
    "cost": "cli_tier:cost",
    "demo": "cli_dlq:demo",
    "dlq": "cli_dlq:dlq",
    "doc": "cli_doc:doc",
    "export": "cli_serve:export",
    "forget": "cli_governance:forget",
    "history": "cli_storage:history",
    "import-gx": "cli_gx:import_gx",
    "lineage": "cli_lineage:lineage",
    "optimize": "cli_storage:optimize",
    "profile": "cli_profile:profile",
    "replay": "cli_dlq:replay",
    "report": "cli_report:report",
    "restore": "cli_storage:restore",
    "retention": "cli_governance:retention",
    "scheduler": "cli_scheduler:scheduler",
    "serve": "cli_serve:serve",
    "suggest": "cli_profile:suggest",
    "tier": "cli_tier:tier",
    "ui": "cli_ui:ui",
    "vacuum": "cli_storage:vacuum",
}
"""Commands whose module is imported only when the command is used (`sluice run` does not
pay for the dashboard, lineage or governance imports)."""


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY_COMMANDS:
            module, attr = _LAZY_COMMANDS[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(f"sluiceway.{module}"), attr)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sluiceway")
def main() -> None:
    """sluiceway: data pipelines with the quality gates built in."""


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(specs: tuple[str, ...]) -> None:
    """Check specs and report every problem at once (path, line, did-you-mean)."""
    failed = 0
    loaded: dict[str, Any] = {}
    for spec in specs:
        try:
            pipeline = load_spec(spec)
        except SpecError as exc:
            failed += 1
            _print_problems(spec, exc)
            continue
        loaded[spec] = pipeline
        console.print(
            f"[green]✓ {spec}[/]: pipeline '{pipeline.pipeline}', {len(pipeline.sources)} source(s), "
            f"{len(pipeline.steps)} step(s), {len(pipeline.checks)} check(s), {len(pipeline.sinks)} sink(s)"
        )
    projects = _project_models(loaded)
    judged = _dependency_problems(loaded, projects)
    for spec, problems in _shared_table_problems(loaded, projects).items():
        judged.setdefault(spec, []).extend(problems)
    for spec, problems in judged.items():
        failed += 1
        _print_problems(spec, SpecError(problems))
    sys.exit(1 if failed else 0)


def _project_models(loaded: dict[str, Any]) -> dict[Path | None, list[tuple[Pipeline, Path]]]:
    """The specs that load of each project the given specs belong to, each project read
    once (the specs of one project are validated against each other)."""
    from sluiceway.core.loader import load_project
    from sluiceway.core.project import find_project_file

    found: dict[Path | None, list[tuple[Pipeline, Path]]] = {}
    for project_file in {find_project_file(Path(path).resolve().parent) for path in loaded}:
        if project_file is None:
            continue
        found[project_file] = []
        with contextlib.suppress(SpecError):
            project = load_project(project_file)
            for other in project.spec_paths(project_file.parent):
                with contextlib.suppress(SluicewayError):
                    found[project_file].append((load_spec(other), Path(other).resolve()))
    return found


def _shared_table_problems(
    loaded: dict[str, Any], projects: dict[Path | None, list[tuple[Pipeline, Path]]]
) -> dict[str, list[Any]]:
    """Specs given that write a table another pipeline (given, or of their project) writes
    with other masking (spec → problems), as `sluice run` in the project would refuse."""
    from sluiceway.orchestration.graph import ProjectSpec, shared_table_problems

    specs: dict[str, ProjectSpec] = {}
    for models in projects.values():
        for model, other in models:
            specs.setdefault(model.pipeline, ProjectSpec(model, other))
    for path, pipeline in loaded.items():  # the specs validated together know each other
        specs[pipeline.pipeline] = ProjectSpec(pipeline, Path(path).resolve())
    given = {str(Path(path).resolve()): path for path in loaded}
    found: dict[str, list[Any]] = {}
    for problem in shared_table_problems(specs):
        if problem.file in given:
            found.setdefault(given[problem.file], []).append(problem)
    return found


def _dependency_problems(
    loaded: dict[str, Any], projects: dict[Path | None, list[tuple[Pipeline, Path]]]
) -> dict[str, list[Any]]:
    """Unknown names and cycles in the `depends_on` of the specs given (spec → problems),
    against the other pipelines of each one's project, as `sluice run --all` would find
    them. Specs of the project that do not load are left out, and only the specs given are
    judged (another spec's own unknown names are its problems)."""
    from sluiceway.core.project import find_project_file
    from sluiceway.core.registry import did_you_mean
    from sluiceway.errors import SpecProblem
    from sluiceway.orchestration.graph import find_cycle

    found: dict[str, list[Any]] = {}
    for path, pipeline in loaded.items():
        if not pipeline.depends_on:
            continue
        graph: dict[str, tuple[str, ...]] = {}
        for model, _ in projects.get(find_project_file(Path(path).resolve().parent), []):
            graph.setdefault(model.pipeline, tuple(model.depends_on))
        for other_model in loaded.values():  # the specs validated together know each other
            graph.setdefault(other_model.pipeline, tuple(other_model.depends_on))
        graph[pipeline.pipeline] = tuple(pipeline.depends_on)
        known = sorted(graph)
        problems = [
            SpecProblem(
                f"depends_on[{index}]",
                f"pipeline '{pipeline.pipeline}' depends on unknown pipeline '{name}' "
                f"(pipelines in the project: {', '.join(known)}).{did_you_mean(name, known)}",
            )
            for index, name in enumerate(pipeline.depends_on)
            if name not in graph
        ]
        cycle = find_cycle({n: [d for d in deps if d in graph] for n, deps in graph.items()})
        if cycle and pipeline.pipeline in cycle:
            problems.append(
                SpecProblem(
                    "depends_on",
                    f"dependency cycle: {' → '.join(cycle)}; remove one of these depends_on "
                    "entries",
                )
            )
        if problems:
            found[path] = problems
    return found


def _current_record(store: Any, run_id: str) -> Any:
    """The run `run_id` (id or unique prefix), or None; a `running` run whose lease expired
    (its process died) is marked crashed first, so it shows as what it is."""
    record = store.get(run_id)
    if record is not None and record.status == "running":
        from sluiceway.core import leases

        leases.mark_crashed(store.location, record.pipeline, ttl_s=leases.lease_ttl())
        record = store.get(run_id)
    return record


def _print_problems(spec: str, exc: SpecError) -> None:
    err_console.print(f"[bold red]✗ {escape(spec)}[/]: {len(exc.problems)} problem(s)")
    for problem in exc.problems:
        where = escape(problem.path or "<root>")
        err_console.print(
            f"  {escape(spec)}:{problem.line or '?'}  [cyan]{where}[/]  {escape(problem.message)}",
            soft_wrap=True,
        )


def _run_spec(
    pipeline: Pipeline,
    spec: str,
    run_date: date | None,
    log_format: str,
    state_dir: str | None,
    *,
    project: Any = None,
    **extra: Any,
) -> RunResult:
    from sluiceway.orchestration import ProjectSpec, run_project_pipeline

    subscribers = [json_logger()] if log_format == "json" else [ConsoleProgress(err_console)]
    if project is not None and pipeline.depends_on:
        _warn_failed_upstream(pipeline, run_date or datetime.now(UTC).date(), project, state_dir)
    try:
        return run_project_pipeline(
            ProjectSpec(pipeline, Path(spec).resolve()),
            project,
            state_dir=_state_dir(state_dir),
            logical_date=run_date,
            subscribers=subscribers,
            warn=lambda message: err_console.print(f"[yellow]{escape(message)}[/]"),
            **extra,
        )
    except ConfigError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


def _warn_failed_upstream(
    pipeline: Pipeline, day: date, project: Any, state_dir: str | None
) -> None:
    """Say so when a pipeline this one depends on failed for the date (its latest run of
    that date): the run goes ahead, on what the upstream published before. The scheduler
    and `run --all` would hold it back."""
    from sluiceway import cli_orchestrate as orchestrate

    state = _state_dir(orchestrate.state_dir_of(project, state_dir))
    try:
        store = RunStore(orchestrate.store_location_of(project, state))
    except ConfigError:
        return
    for upstream in pipeline.depends_on:
        runs = [
            r
            for r in store.list(pipeline=upstream, limit=200)
            if r.logical_date == str(day) and not (r.details or {}).get("replay")
        ]
        if runs and runs[0].status in ("failed", "crashed"):
            err_console.print(
                f"[yellow]upstream {escape(upstream)} {runs[0].status} for {day} (run "
                f"{escape(runs[0].run_id)}): this run reads what {escape(upstream)} published "
                f"before. Rerun it first (`sluice run {escape(upstream)} --date {day}`), or "
                f"both: `sluice run {escape(upstream)} --downstream --date {day}`[/]",
                soft_wrap=True,
            )


@main.command()
@click.argument("target", metavar="[SPEC|NAME]", required=False)
@click.option(
    "--date",
    "run_date",
    type=click.DateTime(["%Y-%m-%d"]),
    help="Logical date (default: today, UTC).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    help="json: one JSON event per line on stderr.",
)
@click.option(
    "--state-dir",
    help="Where runs are recorded (default: the project's state_dir, else $SLUICE_HOME or "
    "./.sluice).",
)
@click.option(
    "--max-batches", type=click.IntRange(min=1), help="Stream: stop after this many batches."
)
@click.option(
    "--idle-exit",
    type=click.FloatRange(min=0),
    help="Stream: stop once no message arrived for this many seconds.",
)
@click.option(
    "--env",
    default=lambda: os.environ.get("SLUICE_ENV", "dev"),
    show_default="$SLUICE_ENV or dev",
    help="Environment; prod refuses a spec that fails `sluice check`.",
)
@click.option(
    "--override-review",
    metavar="REASON",
    help="Run in prod although the review fails; the reason goes to the audit log.",
)
@click.option("--all", "run_all", is_flag=True, help="Every pipeline of the project.")
@click.option("--downstream", is_flag=True, help="Also every pipeline that depends on this one.")
@click.option(
    "--workers", type=click.IntRange(1, 64), help="Pipelines at once (default: max_workers)."
)
@click.option("--project", "project_file", help="The sluice.yaml (default: the nearest one).")
@click.option(
    "--resume",
    "resume_run",
    metavar="RUN_ID",
    help="Run again the pipeline and date of a crashed, interrupted or failed run.",
)
def run(
    target: str | None,
    run_date: Any,
    log_format: str,
    state_dir: str | None,
    max_batches: int | None,
    idle_exit: float | None,
    env: str,
    override_review: str | None,
    run_all: bool,
    downstream: bool,
    workers: int | None,
    project_file: str | None,
    resume_run: str | None,
) -> None:
    """Run a pipeline (spec file, or pipeline NAME of the project) once for a logical date; a
    `mode: stream` pipeline runs until stopped (SIGTERM / Ctrl-C finish the batch in hand,
    commit it and exit 0). --all / --downstream run several in dependency order."""
    from sluiceway import cli_orchestrate as orchestrate

    resumed_pipeline = None
    if resume_run:
        target, run_date, resumed_pipeline = _resumed(
            resume_run, target, run_date, state_dir, project_file
        )
    if run_all == bool(target):
        _fail("give one pipeline (a spec file or a pipeline NAME) or --all, not both or neither")
    spec_file = Path(target) if target and Path(target).is_file() else None
    context = orchestrate.find_project(
        project_file, near=spec_file.resolve().parent if spec_file else None
    )
    state_dir = orchestrate.state_dir_of(context, state_dir)
    day = run_date.date() if run_date else None
    if run_all or downstream:
        start = None if run_all else orchestrate.resolve_spec(target or "", context).name
        orchestrate.run_many(
            context,
            start=start,
            run_date=day,
            workers=workers,
            log_format=log_format,
            state_dir=state_dir,
            review=lambda s: _enforce_review(
                s.pipeline, str(s.path), env, override_review, state_dir
            ),
        )
    found = orchestrate.resolve_spec(target or "", context)
    pipeline, spec = found.pipeline, str(found.path)
    if resumed_pipeline and pipeline.pipeline != resumed_pipeline:
        _fail(
            f"--resume: the run is of pipeline '{resumed_pipeline}', the spec of '{pipeline.pipeline}'"
        )
    _enforce_review(pipeline, spec, env, override_review, state_dir)
    if pipeline.mode == "stream":
        from sluiceway.cli_stream import run_stream_command
        from sluiceway.orchestration import project_hooks

        hooks = project_hooks(
            context,
            pipeline,
            base_dir=Path(spec).resolve().parent,
            warn=lambda message: err_console.print(f"[yellow]{escape(message)}[/]"),
            state_dir=_state_dir(state_dir),
        )
        run_stream_command(
            pipeline,
            spec,
            log_format=log_format,
            state_dir=_state_dir(state_dir),
            max_batches=max_batches,
            idle_exit=idle_exit,
            subscribers=hooks,
            run_store=orchestrate.store_location_of(context, _state_dir(state_dir)),
        )
    terminated = _sigterm_interrupts()
    try:
        result = _run_spec(pipeline, spec, day, log_format, state_dir, project=context)
    except KeyboardInterrupt:  # between two attempts of the retry policy: no run under way
        err_console.print(
            "interrupted while waiting to retry: the last attempt failed and is recorded; "
            "nothing was published by it",
            markup=False,
        )
        sys.exit(143 if terminated else 130)
    if log_format == "json":
        print(json.dumps(summary_data(result), default=str))
    else:
        print_summary(result)
    sys.exit((143 if terminated else 130) if result.interrupted else 0 if result.ok else 1)


def _sigterm_interrupts() -> list[int]:
    """SIGTERM (what a scheduler such as Airflow sends to stop a task) stops a batch run as
    Ctrl-C does: the run ends interrupted, recorded so, the table as it was. Returns a list
    that holds the signal once it came (the exit code is then 143, 128 + SIGTERM)."""
    import signal

    came: list[int] = []

    def interrupt(signum: int, _frame: Any) -> None:
        came.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    return came


def _enforce_review(
    pipeline: Pipeline, spec: str, env: str, reason: str | None, state_dir: str | None
) -> None:
    if reason is not None and not reason.strip():
        _fail("--override-review needs a reason, e.g. --override-review 'hotfix INC-123'")
    if env != "prod":
        return
    from sluiceway.gates.review import enforce_review

    try:
        enforced = enforce_review(
            pipeline, spec, env=env, override_reason=reason, state_dir=_state_dir(state_dir)
        )
    except ConfigError as exc:
        _fail(str(exc))
    if enforced is not None and enforced.has_failed:
        err_console.print(
            f"[yellow]review failed, overridden ({escape(reason or '')}); recorded in the "
            "audit log[/]",
            soft_wrap=True,
        )


def summary_data(result: RunResult) -> dict[str, Any]:
    """The run's outcome as plain data."""
    return {
        "run_id": result.run_id,
        "pipeline": result.pipeline,
        "logical_date": str(result.logical_date),
        "status": result.status,
        "accounting": result.accounting.to_dict(),
        "checks": [c.to_dict() for c in result.checks],
        "sinks": [vars(s) for s in result.sinks],
        "dead_letter": {
            "uri": result.dead_letter_uri,
            "rows": result.dead_letter_rows,
            "by_rule": result.rejected_by_rule,
        },
        "published": bool(result.sinks),
        "staged_path": result.staged_path,
        "results_path": result.results_path,
        "error": result.error,
        "note": result.note,
        "duration_s": result.duration_s,
        "attempt": result.attempt,
        "max_attempts": result.max_attempts,
    }


def print_summary(result: RunResult) -> None:
    """Render a run's outcome: accounting, checks, where things are."""
    acc = result.accounting
    colour = "green" if result.ok else "red"
    attempt = f", attempt {result.attempt}/{result.max_attempts}" if result.max_attempts > 1 else ""
    console.print(
        f"\n[bold {colour}]{result.status.upper()}[/] {result.pipeline} run {result.run_id} "
        f"for {result.logical_date} in {result.duration_s:.1f}s{attempt}"
    )
    rows = Table(title="Rows", show_header=True, header_style="bold")
    # A run that failed before its commit wrote nothing: its rows were only staged.
    kept = "written" if result.ok or result.sinks else "staged, not published"
    for name in ("in", kept, "rejected", "deduplicated", "filtered"):
        rows.add_column(name, justify="right")
    rows.add_row(
        *(
            f"{v:,}"
            for v in (
                acc.rows_in,
                acc.rows_written,
                acc.rows_rejected,
                acc.rows_deduplicated,
                acc.rows_filtered,
            )
        )
    )
    console.print(rows)
    if acc.is_balanced or result.ok or result.error_type == "AccountingError":
        balance = "[green]balanced[/]" if acc.is_balanced else "[red]NOT balanced[/]"
        console.print(
            f"accounting: in = {kept} + rejected + deduplicated + filtered → {balance}",
            soft_wrap=True,
        )
    else:  # stopped before every row was counted: nothing is missing, the count is
        console.print(
            "accounting: not complete — the run stopped before it counted every row "
            "(nothing was published; the error below says why)",
            soft_wrap=True,
        )
    if result.rejected_by_rule:
        top = ", ".join(f"{k}: {v}" for k, v in list(result.rejected_by_rule.items())[:8])
        console.print(f"rejected by rule: {top}", soft_wrap=True)
    if result.checks:
        _print_checks(result.checks, title="Checks (audited before publish)")
    for sink in result.sinks:
        state = "already committed, nothing written" if sink.skipped else f"version {sink.version}"
        console.print(f"table: {sink.uri} ({state})")
    if result.dead_letter_uri:
        console.print(
            f"dead-letter table: {result.dead_letter_uri} ({result.dead_letter_rows} row(s) this "
            f"run{_other_sources_rejects(result)})",
            soft_wrap=True,
        )
    if result.note:
        console.print(f"note: {result.note}", soft_wrap=True)
    if result.staged_path:
        console.print(f"staged (unpublished) result: {result.staged_path}")
    if result.results_path:
        console.print(f"check results: {result.results_path}")
    if result.error:
        console.print(f"[red]error:[/] {escape(result.error)}", soft_wrap=True)


def _other_sources_rejects(result: RunResult) -> str:
    """', 2 of them from other sources (products: 2) ...' when sources other than the
    primary rejected rows: those are in the dead-letter table, not in the row accounting."""
    primary = result.primary_source
    others = {
        name: counts["rows_rejected"]
        for name, counts in result.sources.items()
        if name != primary and counts.get("rows_rejected")
    }
    if not others:
        return ""
    listed = ", ".join(f"{name}: {count:,}" for name, count in others.items())
    return (
        f", {sum(others.values()):,} of them from other sources ({listed}), which the "
        "rows above do not count"
    )


def _figure(value: float | None) -> str:
    """An observed value: whole numbers in full (10,005, not 1e+04), others to 4 digits."""
    if value is None:
        return ""
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.4g}"


def _print_checks(results: Sequence[CheckResult], *, title: str) -> None:
    table = Table(title=title, header_style="bold")
    for column in ("check", "severity", "status", "observed", "unexpected"):
        table.add_column(column)
    style = {"passed": "green", "failed": "red", "error": "magenta"}
    for check in results:
        observed = _figure(check.observed_value)
        unexpected = "" if check.unexpected_count is None else f"{check.unexpected_count:,}"
        table.add_row(
            check.name,
            check.severity,
            f"[{style[check.status]}]{check.status}[/]",
            observed,
            unexpected,
        )
    console.print(table)
    passed = sum(c.status == "passed" for c in results)
    console.print(f"checks: {passed} passed, {len(results) - passed} failed")
    for check in results:
        if check.error is not None:  # it could not run: say why, not only that
            console.print(f"  {escape(check.name)}: {escape(check.error)}", soft_wrap=True)
        elif check.check == "parseable" and not check.success:
            console.print(f"  {escape(check.name)}: {escape(check.message)}", soft_wrap=True)


@main.command("check-data")
@click.argument("checks_file", type=click.Path(dir_okay=False))
@click.option(
    "--data",
    help="A file, folder or glob (local or s3://) of CSV, JSON, Parquet or Avro "
    "(default, for a pipeline spec: its primary source).",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def check_data_command(checks_file: str, data: str | None, fmt: str) -> None:
    """Run the table checks of a spec or checks file on data, without a pipeline.

    Exit 0: no error-level check failed; 1: one did; 2: bad spec or unreadable data.
    """
    from sluiceway.checks.standalone import check_data_report
    from sluiceway.checks.table import blocking_failures

    try:
        results, samples = check_data_report(Path(checks_file), data, base_dir=Path.cwd())
    except SpecError as exc:
        _print_problems(checks_file, exc)
        sys.exit(2)
    except SluicewayError as exc:
        _fail(exc.message)
    blocking = blocking_failures(results)
    if fmt == "json":
        checks = [
            {**r.to_dict(), "unexpected_sample": sample}
            for r, sample in zip(results, samples, strict=True)
        ]
        print(json.dumps({"ok": not blocking, "checks": checks}, default=str))
    else:
        _print_checks(results, title=f"Checks on {data or checks_file}")
        for result, sample in zip(results, samples, strict=True):
            if sample:
                shown = ", ".join(repr(v) for v in sample)
                console.print(
                    f"  {escape(result.name)}: unexpected values include {escape(shown)}",
                    soft_wrap=True,
                )
    sys.exit(1 if blocking else 0)


_STORE_HELP = (
    "Where runs are recorded (default: the project's state_dir, else $SLUICE_HOME or ./.sluice)."
)


def _resumed(
    run_id: str, target: str | None, run_date: Any, state_dir: str | None, project_file: str | None
) -> tuple[str, Any, str]:
    """The target (the run's pipeline name unless a SPEC is given), the date and the
    pipeline name to rerun for `--resume RUN_ID`."""
    store = _run_store(state_dir, project_file)
    record = _current_record(store, run_id)
    if record is None:
        _fail(
            f"--resume {run_id}: no run with that id (or the prefix is not unique); see `sluice runs`"
        )
    assert record is not None
    if record.status in ("succeeded", "running"):
        _fail(
            f"--resume {record.run_id}: the run is {record.status}; only a crashed, interrupted "
            "or failed run is resumed"
        )
    if run_date is not None and run_date.date().isoformat() != record.logical_date:
        _fail(f"--resume {record.run_id} is for {record.logical_date}; leave out --date")
    err_console.print(
        f"resuming {record.pipeline} for {record.logical_date} (run {record.run_id} "
        f"{record.status}); reruns are idempotent",
        markup=False,
    )
    return (
        target or record.pipeline,
        datetime.fromisoformat(record.logical_date),
        record.pipeline,
    )


def _run_store(
    state_dir: str | None, project_file: str | None, *, empty_ok: bool = False
) -> RunStore:
    """The run store of `--state-dir`, else of the project (`--project` or the nearest
    sluice.yaml), else of $SLUICE_HOME or ./.sluice: where `sluice run` records its runs.

    A SQLite store that does not exist is not created by a command that only reads it:
    it says where it looked and stops (exit 0 with `empty_ok`, else 2)."""
    from sluiceway import cli_orchestrate as orchestrate

    context = orchestrate.find_project(project_file)
    state = _state_dir(orchestrate.state_dir_of(context, state_dir))
    location = orchestrate.store_location_of(context, state)
    if location.path is not None and not location.path.exists():
        message = (
            f"no run is recorded in {location.path}: runs are recorded in the state_dir of "
            "the spec's project (found from the spec's folder; run this inside it or pass "
            "--project), else where `sluice run` ran (./.sluice), or in --state-dir / "
            "$SLUICE_HOME"
        )
        if empty_ok:
            err_console.print(message, markup=False)
            sys.exit(0)
        _fail(message)
    try:
        return RunStore(location)
    except ConfigError as exc:
        _fail(exc.message)
    raise AssertionError("unreachable")


@main.command()
@click.option("--pipeline", help="Only this pipeline's runs.")
@click.option("--limit", default=20, show_default=True)
@click.option("--state-dir", help=_STORE_HELP)
@click.option("--project", "project_file", help="The sluice.yaml (default: the nearest one).")
def runs(pipeline: str | None, limit: int, state_dir: str | None, project_file: str | None) -> None:
    """List recent runs, newest first."""
    store = _run_store(state_dir, project_file, empty_ok=True)
    # one space between columns: an 80-column terminal shows every column whole
    table = Table(header_style="bold", box=None, padding=(0, 1, 0, 0), pad_edge=False)
    table.add_column("run", no_wrap=True, min_width=RUN_ID_WIDTH)  # whole, for `sluice show`
    table.add_column("pipeline", overflow="fold")
    table.add_column("date", no_wrap=True, min_width=len("2025-01-15"))
    table.add_column("status", no_wrap=True)
    # out: rows published ('–' for a run that published nothing: its rows were only staged)
    for column in ("in", "out", "rej", "dup", "secs"):  # written, rejected, deduplicated
        table.add_column(column, justify="right")
    for r in store.list(pipeline=pipeline, limit=limit):
        details = r.details or {}
        published = was_published(r.status, details)
        written = r.rows_written if published or r.status == "running" else "–"
        counts = (r.rows_in, written, r.rows_rejected, r.rows_deduplicated)
        table.add_row(
            r.run_id,
            r.pipeline,
            r.logical_date,
            f"{r.status} (replay)" if (r.details or {}).get("replay") else r.status,
            *(str(v if v is not None else "") for v in counts),
            "" if r.duration_s is None else f"{r.duration_s:.1f}",
        )
    console.print(table)


@main.command()
@click.argument("run_id")
@click.option("--state-dir", help=_STORE_HELP)
@click.option("--project", "project_file", help="The sluice.yaml (default: the nearest one).")
def show(run_id: str, state_dir: str | None, project_file: str | None) -> None:
    """Show one run (id or unique prefix) as JSON: accounting, checks, sinks, error."""
    store = _run_store(state_dir, project_file)
    record = _current_record(store, run_id)
    if record is None:
        _fail(f"no run '{run_id}' (or the prefix is ambiguous); list runs with `sluice runs`")
    print(json.dumps(vars(record), indent=2, default=str))


@main.group()
def checks() -> None:
    """The table-check vocabulary."""


@checks.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def checks_list(fmt: str) -> None:
    """Every table check: its name, its Great Expectations name, and its arguments."""
    from sluiceway.core import registry

    common = {"severity", "mostly", "name", "on_fail"}
    rows: list[dict[str, Any]] = [
        {
            "check": plugin.name,
            "aliases": list(plugin.aliases),
            "arguments": {
                field: info.description or ""
                for field, info in plugin.config.model_fields.items()
                if field not in common
            },
        }
        for plugin in registry.canonical("check")
    ]
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return
    table = Table(
        title=(
            f"{len(rows)} table checks (each also takes severity: error|warn, on_fail: "
            "fail|warn|dead_letter, name, and mostly where it applies)"
        ),
        header_style="bold",
        show_lines=True,
    )
    for column in ("check", "Great Expectations name", "arguments"):
        table.add_column(column, overflow="fold")
    for row in rows:
        arguments = "\n".join(f"{k}: {v}" for k, v in row["arguments"].items())
        table.add_row(row["check"], "\n".join(row["aliases"]), arguments)
    console.print(table)


__all__ = ["SluicewayError", "main"]
