"""`sluice scheduler`: the long-running process that starts a project's scheduled runs.

sluice scheduler [--project FILE] [--once] [--tick SECONDS] [--now ISO] [--state-dir DIR]
"""

from __future__ import annotations

import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from rich.markup import escape

from sluiceway.cli import _fail
from sluiceway.errors import SpecError
from sluiceway.orchestration import ProjectContext
from sluiceway.orchestration.graph import usable_graph
from sluiceway.orchestration.scheduler import Scheduler, TickReport


def _cli() -> Any:
    from sluiceway import cli

    return cli


def _say(line: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    _cli().console.print(f"[dim]{stamp}[/] {escape(line)}", soft_wrap=True)


def _parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"--now '{text}' is not an ISO 8601 time; write e.g. 2025-01-16T03:00:00+00:00")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _project(project_file: str | None) -> ProjectContext:
    from sluiceway.cli_orchestrate import find_project

    context = find_project(project_file)
    if context is None:
        _fail(
            "no sluice.yaml here or in a parent folder: the scheduler runs a project; "
            "create one, or pass --project FILE"
        )
    try:
        ZoneInfo(context.project.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        _fail(
            f"{context.path}: timezone '{context.project.timezone}' is not a known time zone; "
            "use an IANA name such as 'Europe/Paris'"
        )
    return context


def _load_specs(context: ProjectContext) -> dict[str, Any]:
    """The project's usable specs; those with problems (and what depends on them) are left
    out and said, and the scheduler starts with the others. None usable: it stops."""
    try:
        usable = usable_graph(context.project, context.root)
    except SpecError as exc:
        _print_problems(exc.problems, exc.source)
        _fail(f"{len(exc.problems)} problem(s) in {exc.source}; fix them and start again")
    _SAID[context.path] = frozenset(f"{p.file}:{p.path}: {p.message}" for p in usable.problems)
    if usable.problems:
        _print_problems(usable.problems, "the project's specs")
        left = ", ".join(sorted(set(usable.left_out.values())))
        if not usable.graph.specs:
            _fail(f"no spec of the project can run ({left}); fix them and start again")
        _say(f"left out until fixed: {left}; scheduling the others")
    return dict(usable.graph.specs)


def _print_problems(problems: list[Any], source: str | None) -> None:
    err = _cli().err_console
    for problem in problems:
        where = f"{problem.file or source or ''}:{problem.line or '?'}"
        err.print(
            f"  {escape(where)}  {escape(problem.path or '<root>')}  {escape(problem.message)}",
            soft_wrap=True,
        )


def _print_report(report: TickReport, *, is_quiet: bool = False) -> None:
    if not report.slots and not report.alerts and not is_quiet:
        _say(f"tick {report.at.isoformat(timespec='seconds')}: nothing due")
    for line in report.alerts:
        _say(f"alert {line}")


def _install_stop(scheduler: Scheduler) -> None:
    def request_stop(signum: int, _frame: object) -> None:
        if not scheduler.stop.is_set():
            _say(f"{signal.Signals(signum).name}: finishing running runs, then exiting")
        scheduler.stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


@click.command("scheduler")
@click.option("--project", "project_file", help="The sluice.yaml (default: the nearest one).")
@click.option("--once", is_flag=True, help="Do one pass (due runs and monitors), then exit.")
@click.option(
    "--tick",
    "tick_seconds",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds between passes.",
)
@click.option("--now", "now_text", help="With --once: the pass's time, ISO 8601 (tests).")
@click.option("--state-dir", help="Run store and claims (default: the project's state_dir).")
def scheduler(
    project_file: str | None,
    once: bool,
    tick_seconds: float,
    now_text: str | None,
    state_dir: str | None,
) -> None:
    """Start scheduled runs as they come due, catch up missed ones, watch freshness and SLAs.

    Each (pipeline, logical date) runs at most once, even with several schedulers on the
    same state folder. SIGTERM lets running runs finish, then exits 0.
    """
    now = _parse_now(now_text)
    if now is not None and not once:
        _fail("--now fixes the time of a single pass; use it with --once")
    context = _project(project_file)
    folder = Path(state_dir).resolve() if state_dir else context.state_dir()
    runner = Scheduler(context, _load_specs(context), folder, tick_seconds=tick_seconds, say=_say)
    _install_stop(runner)
    if once:
        report = runner.tick(now)
        _print_report(report)
        sys.exit(1 if report.has_failures else 0)
    _loop(runner, context)


def _loop(runner: Scheduler, context: ProjectContext) -> None:
    scheduled = sorted(n for n, s in runner.specs.items() if s.pipeline.schedule)
    _say(f"scheduler started: {len(scheduled)} scheduled pipeline(s): {', '.join(scheduled)}")
    while not runner.stop.is_set():
        try:
            runner.specs = _load_specs_quietly(context, runner.specs)
            _print_report(runner.tick(), is_quiet=True)
        except Exception as exc:  # a tick's failure must not end the scheduler
            _say(f"tick failed: {type(exc).__name__}: {exc}")
        runner.stop.wait(runner.tick_seconds)
    _say("scheduler stopped")
    sys.exit(0)


def _load_specs_quietly(context: ProjectContext, previous: dict[str, Any]) -> dict[str, Any]:
    """The reloaded specs; a pipeline whose spec now has problems keeps its previous spec
    (an edit in progress does not stop its schedule), and one seen for the first time with
    problems waits until it is fixed."""
    try:
        usable = usable_graph(context.project, context.root)
    except SpecError as exc:
        _say(f"specs not reloaded ({len(exc.problems)} problem(s)); keeping the previous ones")
        return previous
    specs = dict(usable.graph.specs)
    kept = sorted(n for n in set(usable.left_out.values()) if n in previous and n not in specs)
    specs.update({n: previous[n] for n in kept})
    problems = frozenset(f"{p.file}:{p.path}: {p.message}" for p in usable.problems)
    if problems != _SAID.get(context.path, frozenset()):  # said once, not at every pass
        _SAID[context.path] = problems
        if problems:
            _print_problems(usable.problems, None)
            _say(
                f"{len(problems)} problem(s) in the specs"
                + (f"; keeping the previous spec of {', '.join(kept)}" if kept else "")
            )
        else:
            _say("the specs' problems are fixed")
    return specs


_SAID: dict[Path, frozenset[str]] = {}
"""The spec problems last said per project: a reload says them when they change."""
