"""`sluice check SPEC...`: the pre-flight review of pipeline specs, as a table or JSON.

Exit 0 when no spec fails (warnings alone pass), 1 when a spec fails a check, 2 when a spec
does not load. JSON entries name their spec; with several specs, one that does not load keeps
its place in the list with its problems. Unset `${ENV}` references do not stop the review.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from sluiceway.errors import SpecError
from sluiceway.gates.findings import Review
from sluiceway.gates.review import load_for_review, project_of, read_raw, review
from sluiceway.terminal import new_console

console = new_console()
err_console = new_console(stderr=True)
STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}
EXIT_PASSED, EXIT_FAILED, EXIT_UNLOADABLE = 0, 1, 2


@click.command("check")
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    help="json: one review object for one spec, a list of them for several.",
)
def check(specs: tuple[str, ...], fmt: str) -> None:
    """Review specs before production: 5 readiness checks and 5 production gates.

    Exit 0: no spec fails (warnings allowed); 1: a spec fails a check; 2: a spec does not load.
    """
    entries: list[dict[str, Any]] = []
    reviews: list[Review] = []
    for spec in specs:
        try:
            pipeline, unset = load_for_review(spec)
            project = project_of(spec)
        except SpecError as exc:
            print_problems(spec, exc)
            entries.append(unloadable_data(spec, exc))
            continue
        result = review(pipeline, raw=read_raw(spec), project=project)
        reviews.append(result)
        entries.append({"spec": spec, "loaded": True, **result.to_data(), "unset_env": unset})
        if unset:
            err_console.print(
                f"[yellow]note[/]: {escape(spec)} reviewed with environment variable(s) not "
                f"set, kept as written: {escape(', '.join(unset))}",
                soft_wrap=True,
            )
        if fmt == "table":
            print_review(spec, result)
    if fmt == "json" and (reviews or len(specs) > 1):
        print(json.dumps(entries[0] if len(specs) == 1 else entries, indent=2))
    unloadable = len(reviews) < len(specs)
    failed = any(r.has_failed for r in reviews)
    sys.exit(EXIT_UNLOADABLE if unloadable else EXIT_FAILED if failed else EXIT_PASSED)


def unloadable_data(spec: str, exc: SpecError) -> dict[str, Any]:
    """The JSON entry of a spec that does not load: its problems, with YAML path and line."""
    return {
        "spec": spec,
        "loaded": False,
        "passed": False,
        "problems": [{"path": p.path, "line": p.line, "message": p.message} for p in exc.problems],
    }


def print_problems(spec: str, exc: SpecError) -> None:
    """Every problem of a spec that does not load, as `sluice validate` prints them."""
    err_console.print(f"[bold red]✗ {escape(spec)}[/]: {len(exc.problems)} problem(s)")
    for problem in exc.problems:
        where = escape(problem.path or "<root>")
        err_console.print(
            f"  {escape(spec)}:{problem.line or '?'}  [cyan]{where}[/]  {escape(problem.message)}",
            soft_wrap=True,
        )


def print_review(spec: str, result: Review) -> None:
    """One table row per finding, then the summary line."""
    table = Table(
        title=f"Pre-flight review of {escape(spec)} (pipeline '{escape(result.pipeline)}')",
        box=box.SIMPLE_HEAVY,
        show_lines=True,
    )
    for column in ("check", "group", "status", "reason", "fix"):
        table.add_column(column, overflow="fold")
    for found in result.findings:
        table.add_row(
            escape(found.check),
            found.group,
            f"[{STATUS_STYLE[found.status]}]{found.status}[/]",
            escape(found.reason),
            escape(found.fix),
        )
    console.print(table)
    counts = {s: len(result.of(s)) for s in ("pass", "warn", "fail")}
    verdict = "[bold red]FAILED[/]" if result.has_failed else "[green]ready[/]"
    console.print(
        f"{escape(spec)}: {verdict} — {counts['pass']} passed, {counts['warn']} warning(s), "
        f"{counts['fail']} failed"
    )
