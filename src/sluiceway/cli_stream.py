"""`sluice run` for `mode: stream` pipelines: the loop, its live status line and its summary."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from sluiceway.core.events import Event
from sluiceway.core.runner import RunOptions
from sluiceway.core.spec import Pipeline
from sluiceway.errors import ConfigError, SpecError
from sluiceway.observability.logs import WARNINGS, json_logger
from sluiceway.observability.progress import warning_message
from sluiceway.streaming.runner import StreamOptions, StreamResult, run_stream

IDLE_AFTER_S = 5.0
"""No batch committed for this long: the status line says 0 events/s."""


class StreamStatus:
    """One live line: events/s over the last batches, lag, age of the last commit, totals;
    retries are printed as they happen. Output that is not a terminal (a log file, a pipe)
    gets the line printed when a batch commits, at most every `every_s` seconds."""

    def __init__(self, console: Console, *, every_s: float = 10.0) -> None:
        self.console = console
        self.every_s = every_s
        self.printed_at: float | None = None
        self.live: Live | None = None
        self.fields: dict[str, Any] = {}
        self.pipeline = ""
        self.last_commit: float | None = None
        self.recent: list[tuple[float, int]] = []
        self.unprinted = False  # a log file has not seen the newest status yet

    def __call__(self, event: Event) -> None:
        if event.name == "stream_status":
            self.fields = dict(event.fields)
            self.pipeline = event.pipeline
            self.last_commit = time.monotonic()
            self.recent = [*self.recent[-9:], (self.last_commit, int(self.fields.get("events", 0)))]
            if not self.console.is_terminal:
                if self.printed_at is None or self.last_commit - self.printed_at >= self.every_s:
                    self.printed_at = self.last_commit
                    self.console.print(self._line(age=False), soft_wrap=True)
                    self.unprinted = False
                else:
                    self.unprinted = True
            elif self.live is None:
                self.live = Live(
                    get_renderable=self._line,
                    console=self.console,
                    transient=True,
                    refresh_per_second=2,
                )
                self.live.start()
        elif event.name in WARNINGS:
            self.console.print(warning_message(event), soft_wrap=True)
        elif event.name == "retrying":
            f = event.fields
            self.console.print(
                f"[yellow]retrying[/] {f.get('what')}: attempt {f.get('attempt')}/{f.get('of')}, "
                f"next in {f.get('delay_s')} s ({f.get('reason')})",
                markup=True,
                soft_wrap=True,
            )

    def _rate(self) -> int:
        if self.last_commit is not None and time.monotonic() - self.last_commit > IDLE_AFTER_S:
            return 0  # no batch for a while: the stream is idle, not at the last batch's rate
        if len(self.recent) < 2:
            return int(self.fields.get("events_per_s", 0))
        span = self.recent[-1][0] - self.recent[0][0]
        events = sum(count for _, count in self.recent[1:])
        return int(events / span) if span > 0 else 0

    def _line(self, *, age: bool = True) -> Text:
        """The line; without `age` (printed as a batch commits) the commit's age is left out."""
        f = self.fields
        lag = "?" if f.get("lag") is None else f"{f['lag']:,}"
        since = 0.0 if self.last_commit is None else time.monotonic() - self.last_commit
        commit = f"last commit v{f.get('version')}" + (f" {since:.0f}s ago" if age else "")
        return Text.assemble(
            (self.pipeline, "bold"),
            f"  {self._rate():,} events/s  lag {lag}  {commit}  ",
            f"written {f.get('written', 0):,}  rejected {f.get('rejected', 0):,} in all",
        )

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        if self.unprinted:  # the log's last status line would else be stale
            self.unprinted = False
            self.console.print(self._line(age=False), soft_wrap=True)


def run_stream_command(
    pipeline: Pipeline,
    spec: str,
    *,
    log_format: str,
    state_dir: Path,
    max_batches: int | None,
    idle_exit: float | None,
    subscribers: Sequence[Any] = (),
    run_store: Any = None,
) -> None:
    """Run `pipeline` as a stream and exit 0 when it stopped cleanly, else 1; `subscribers`
    (the project's lineage / traces / alerts) receive its events too."""
    from sluiceway import cli

    status = None if log_format == "json" else StreamStatus(cli.err_console)
    watchers: list[Any] = [json_logger()] if status is None else [status]
    options = RunOptions(
        base_dir=Path(spec).resolve().parent,
        state_dir=state_dir,
        subscribers=[*watchers, *subscribers],
        run_store=run_store,
    )
    try:
        result = run_stream(
            pipeline, options, StreamOptions(max_batches=max_batches, idle_exit_s=idle_exit)
        )
    except (SpecError, ConfigError) as exc:
        cli._fail(str(exc))
    finally:
        if status is not None:
            status.stop()
    if log_format == "json":
        print(json.dumps(stream_summary(result), default=str))
    else:
        _print(result)
    sys.exit(0 if result.ok else 1)


def stream_summary(result: StreamResult) -> dict[str, Any]:
    """A stream run's outcome as plain data."""
    return {
        "run_id": result.run_id,
        "pipeline": result.pipeline,
        "mode": "stream",
        "status": result.status,
        "batches": result.batches,
        "accounting": result.accounting.to_dict(),
        "already_committed": result.already_committed,
        "last_version": result.last_version,
        "stopped_by": result.stopped_by,
        "checks_warned": result.checks_warned,
        "error": result.error,
        "duration_s": result.duration_s,
    }


def _print(result: StreamResult) -> None:
    from sluiceway import cli

    acc = result.accounting
    colour = "green" if result.ok else "red"
    cli.console.print(
        f"\n[bold {colour}]{result.status.upper()}[/] {result.pipeline} stream run "
        f"{result.run_id}: {result.batches} batch(es) in {result.duration_s:.1f}s"
        + (f", stopped by {result.stopped_by}" if result.stopped_by else "")
    )
    cli.console.print(
        f"rows: in {acc.rows_in:,} = written {acc.rows_written:,} + rejected {acc.rows_rejected:,} "
        f"+ deduplicated {acc.rows_deduplicated:,} + filtered {acc.rows_filtered:,}; "
        f"{result.already_committed:,} redelivered message(s) were already committed"
    )
    if result.checks_warned:
        said = ", ".join(f"{name} ({n} batch(es))" for name, n in result.checks_warned.items())
        cli.console.print(f"[yellow]checks that warned:[/] {said}", soft_wrap=True)
    if result.error:
        cli.console.print(f"[red]error:[/] {result.error}", soft_wrap=True)
