"""`sluice retention`, `sluice forget` and `sluice audit`: data governance commands.

retention deletes rows older than a pipeline's `compliance.retention`; forget erases one
data subject from every table and proves it by scanning every file; audit lists the audit
log and checks its hash chain. Exit codes: 0 done, 1 something failed or is unverified,
2 a usage or configuration error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from rich import box
from rich.markup import escape
from rich.table import Table

from sluiceway.cli import _fail
from sluiceway.cli import load_or_exit as _load
from sluiceway.core.spec import Pipeline
from sluiceway.errors import SluicewayError
from sluiceway.ops.audit import AuditLog
from sluiceway.ops.forget import ForgetReport, TableErasure, forget_subject
from sluiceway.ops.retention import (
    PipelineRetention,
    apply_retention,
    other_sinks,
    table_rows,
)

_T = TypeVar("_T")
_SPEC_SUFFIXES = (".yaml", ".yml")


def _cli() -> Any:
    from sluiceway import cli

    return cli


def _guarded(action: Callable[[], _T]) -> _T:
    try:
        return action()
    except SluicewayError as exc:
        _fail(exc.message)


def _say(text: str) -> None:
    _cli().console.print(text, soft_wrap=True, markup=False)


def _specs_in(paths: tuple[str, ...]) -> list[tuple[Pipeline, Path]]:
    """Each file given, and every YAML file of each folder given that is a pipeline spec."""
    found: list[tuple[Pipeline, Path]] = []
    for given in map(Path, paths):
        if given.is_file():
            found.append((_load(str(given)), given.resolve().parent))
            continue
        for path in sorted(p for p in given.rglob("*") if p.suffix in _SPEC_SUFFIXES):
            if not _looks_like_spec(path):
                _cli().err_console.print(
                    f"note: {escape(str(path))} is not a pipeline spec; skipped", soft_wrap=True
                )
                continue
            found.append((_load(str(path)), path.resolve().parent))
    if not found:
        _fail(f"no pipeline spec in {', '.join(paths)}; pass spec files or their folders.")
    return found


def _looks_like_spec(path: Path) -> bool:
    """A YAML mapping with `version` and `pipeline`: a spec (its errors are errors then)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "pipeline" in data and "version" in data


state_dir_option = click.option(
    "--state-dir", help="The state folder (audit log, default dead-letter table)."
)


@click.command("retention")
@click.argument("specs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--as-of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="The day retention counts back from (default: today, UTC).",
)
@click.option("--dry-run", is_flag=True, help="Count the rows that would be deleted; delete none.")
@state_dir_option
def retention(
    specs: tuple[str, ...], as_of: datetime | None, dry_run: bool, state_dir: str | None
) -> None:
    """Delete rows older than each pipeline's compliance.retention, then vacuum (SPECS:
    spec files, or folders whose pipeline specs are all taken)."""
    day = as_of.date() if as_of else datetime.now(UTC).date()
    state = _cli()._state_dir(state_dir)
    outcomes: list[PipelineRetention] = []
    for pipeline, folder in _specs_in(specs):
        outcome = _guarded(
            partial(
                apply_retention,
                pipeline,
                folder,
                as_of=day,
                state_dir=state,
                is_dry_run=dry_run,
            )
        )
        if outcome is None:
            _say(f"{pipeline.pipeline}: no compliance.retention declared; nothing to do")
            continue
        for sink in other_sinks(pipeline):
            _say(f"note: {pipeline.pipeline} {sink} is not a Delta table; retention skips it")
        outcomes.append(outcome)
        if not dry_run:
            _audit_retention(state, pipeline, outcome, day)
    _print_retention(outcomes, dry_run)
    sys.exit(0 if all(o.is_ok for o in outcomes) else 1)


def _audit_retention(
    state: Path, pipeline: Pipeline, outcome: PipelineRetention, day: date
) -> None:
    if pipeline.compliance is not None and not pipeline.compliance.audit:
        return
    AuditLog(state).append(
        "retention",
        pipeline=pipeline.pipeline,
        tables=[t.table.target.uri for t in outcome.tables],
        rows_affected=outcome.rows_deleted,
        details={
            "retention": outcome.retention,
            "as_of": day.isoformat(),
            "cutoff": outcome.cutoff.isoformat(),
            "per_table": {t.table.target.uri: t.rows_deleted for t in outcome.tables},
        },
    )


def _print_retention(outcomes: list[PipelineRetention], dry_run: bool) -> None:
    verb = "would delete (dry run)" if dry_run else "rows deleted"
    out = Table(box=box.SIMPLE, header_style="bold")
    for column in ("pipeline", "table", "column", verb, "files vacuumed", "location / problem"):
        out.add_column(column, overflow="fold")
    for row in table_rows(outcomes):
        out.add_row(
            row["pipeline"],
            row["table"],
            row["column"] or "",
            str(row["rows_deleted"]),
            str(row["files_vacuumed"]),
            f"FAILED: {row['problem']}" if row["problem"] else row["uri"],
        )
    _cli().console.print(out, soft_wrap=True)
    done = "would be deleted (dry run)" if dry_run else "deleted"
    for outcome in outcomes:
        _say(
            f"{outcome.pipeline}: retention {outcome.retention}, cutoff "
            f"{outcome.cutoff.isoformat()}: {outcome.rows_deleted} row(s) {done}"
        )


@click.command("forget")
@click.option(
    "--subject",
    required=True,
    help="COLUMN=VALUE, or VALUE alone to use the specs' compliance.subject_key.",
)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--dry-run", is_flag=True, help="Count the subject's rows; change nothing.")
@state_dir_option
def forget(subject: str, paths: tuple[str, ...], dry_run: bool, state_dir: str | None) -> None:
    """Erase one data subject from every table of the pipelines given, then verify it."""
    pipelines = _specs_in(paths)
    column, value = _subject(subject, pipelines)
    state = _cli()._state_dir(state_dir)
    report = _guarded(
        lambda: forget_subject(pipelines, column, value, state_dir=state, is_dry_run=dry_run)
    )
    _print_forget(report, dry_run)
    if dry_run:
        sys.exit(1 if any(e.problem for e in report.tables) else 0)
    sys.exit(0 if report.is_clean else 1)


def _subject(subject: str, pipelines: list[tuple[Pipeline, Path]]) -> tuple[str, str]:
    column, has_column, value = subject.partition("=")
    if has_column and column.strip():
        return column.strip(), value
    keys = {p.compliance.subject_key for p, _ in pipelines if p.compliance}
    keys.discard(None)
    if len(keys) != 1:
        _fail(
            "--subject: give the column as COLUMN=VALUE (the specs declare "
            f"{len(keys)} different compliance.subject_key)."
        )
    return str(keys.pop()), subject


def _print_forget(report: ForgetReport, dry_run: bool) -> None:
    _say(f"subject {report.fingerprint} (column {report.column})")
    for note in report.notes:
        _say(f"note: {note}")
    out = Table(box=box.SIMPLE, header_style="bold")
    for column in ("pipeline", "table", "rows deleted", "files rewritten", "verification"):
        out.add_column(column, overflow="fold")
    for erasure in report.tables:
        out.add_row(
            erasure.table.pipeline,
            erasure.table.target.label,
            str(erasure.rows_deleted),
            str(erasure.files_rewritten),
            ("dry run" if not erasure.problem else "FAILED") if dry_run else _verdict(erasure),
        )
    _cli().console.print(out, soft_wrap=True)
    for erasure in report.tables:
        _say(f"{erasure.table.pipeline} {erasure.table.target.label}: {erasure.table.target.uri}")
        problems = [erasure.problem] if erasure.problem else []
        for problem in _failures(erasure) if not dry_run else problems:
            _say(f"  FAILED: {problem}")
    for sink in report.unhandled:
        _say(f"NOT HANDLED: {sink} is not a Delta table; erase the subject there yourself")
    if dry_run:
        _say(f"dry run: {report.rows_deleted} row(s) would be deleted; nothing was changed")
        if any(e.problem for e in report.tables):
            _say("a real run would fail where FAILED is shown above")
        return
    _say(
        f"{report.rows_deleted} row(s) deleted. Touched tables were vacuumed with retention 0 "
        "and their Delta log cut at a checkpoint: time travel to earlier versions is gone."
    )
    _say("verified clean" if report.is_clean else "NOT verified clean: see FAILED above")


def _verdict(erasure: TableErasure) -> str:
    if erasure.is_clean:
        files = erasure.scan.files if erasure.scan else 0
        return f"clean ({files} file(s) scanned)"
    return "FAILED"


def _failures(erasure: TableErasure) -> list[str]:
    if erasure.problem:
        return [erasure.problem]
    if erasure.scan is None:
        return ["not scanned"]
    return [
        *(f"{file} still holds the subject" for file in erasure.scan.dirty),
        *(f"{file} could not be checked (encrypted, no key?)" for file in erasure.scan.unreadable),
    ]


@click.command("audit")
@click.option("--pipeline", help="Only this pipeline's entries.")
@click.option("--action", help="Only this action's entries (e.g. forget, retention).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--verify", is_flag=True, help="Check the hash chain; exit 1 at the first break.")
@state_dir_option
def audit(
    pipeline: str | None,
    action: str | None,
    limit: int,
    fmt: str,
    verify: bool,
    state_dir: str | None,
) -> None:
    """List the audit log, newest first; --verify checks its hash chain."""
    log = AuditLog(_cli()._state_dir(state_dir))
    if verify:
        _verify_chain(log)
        return
    try:
        entries = list(log.entries(pipeline=pipeline, action=action))
    except (ValueError, TypeError) as exc:
        _fail(f"{log.path} has a line that is not an audit entry ({exc}); run --verify.", 1)
    newest = [vars(e) for e in reversed(entries)][:limit]
    if fmt == "json":
        print(json.dumps(newest, default=str))
        return
    out = Table(title=escape(str(log.path)), box=box.SIMPLE, header_style="bold")
    for column in ("seq", "at", "who", "action", "pipeline", "rows", "details"):
        out.add_column(column, overflow="fold")
    for e in newest:
        details = json.dumps(e["details"], default=str, sort_keys=True)
        out.add_row(
            *(str(e[k] or "") for k in ("seq", "at", "who", "action", "pipeline")),
            "" if e["rows_affected"] is None else str(e["rows_affected"]),
            escape(details),
        )
    _cli().console.print(out, soft_wrap=True)


def _verify_chain(log: AuditLog) -> None:
    check = log.verify_chain()
    if check.is_intact:
        _say(f"{log.path}: hash chain intact ({check.entries} entries)")
        return
    _cli().err_console.print(
        f"[bold red]broken:[/] {escape(str(log.path))} line {check.broken_at}: "
        f"{escape(check.reason)}",
        soft_wrap=True,
    )
    sys.exit(1)


COMMANDS = (retention, forget, audit)

__all__ = ["COMMANDS", "audit", "forget", "retention"]
