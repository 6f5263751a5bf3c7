"""`sluice import-gx`: a Great Expectations suite (JSON) → a sluiceway checks file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sluiceway.checks.gx_import import Conversion, SuiteError, convert_suite, read_suite
from sluiceway.terminal import new_console

EXIT_ALL_CONVERTED = 0
EXIT_UNREADABLE = 1
EXIT_SOME_SKIPPED = 2


@click.command("import-gx")
@click.argument("suite", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the checks file here (default: standard output).",
)
def import_gx(suite: str, output: str | None) -> None:
    """Convert a Great Expectations expectation suite (0.x or 1.x JSON) into a checks file
    for `sluice check-data` or a pipeline's `checks:`.

    The report goes to standard error. Exit 0: every expectation converted; 2: some were
    skipped (listed, not written); 1: the suite could not be read or the output written.
    """
    err = new_console(stderr=True)
    try:
        conversion = convert_suite(read_suite(Path(suite)))
    except SuiteError as exc:
        _fail(err, exc.message)
    err.print(_report_table(conversion))
    if not conversion.checks:
        _fail(
            err,
            f"no expectation of '{conversion.suite}' has an equivalent check; nothing written.",
            EXIT_SOME_SKIPPED,
        )
    _write(err, conversion.to_yaml(), output)
    skipped = len(conversion.skipped)
    converted = len(conversion.reports) - skipped
    err.print(
        f"{converted} of {len(conversion.reports)} expectation(s) converted"
        + (f", {skipped} skipped (not written)" if skipped else "")
        + (f"; wrote {escape(output)}" if output else "")
    )
    sys.exit(EXIT_SOME_SKIPPED if skipped else EXIT_ALL_CONVERTED)


def _report_table(conversion: Conversion) -> Table:
    table = Table(title=f"Suite '{escape(conversion.suite)}'", header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("expectation", overflow="fold")
    table.add_column("check", overflow="fold")
    table.add_column("detail", overflow="fold")
    for report in conversion.reports:
        check = report.check or "[yellow]skipped[/]"
        table.add_row(str(report.index), escape(report.expectation), check, escape(report.detail))
    return table


def _write(err: Console, text: str, output: str | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(err, f"cannot write '{output}': {exc.strerror or exc}.")


def _fail(err: Console, message: str, code: int = EXIT_UNREADABLE) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(code)
