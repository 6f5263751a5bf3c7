"""Live progress on the terminal: the current stage, a bar when its size is known, elapsed time."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from sluiceway.core.events import Event
from sluiceway.observability.logs import WARNINGS


class ConsoleProgress:
    """Shows each stage of a run while it works; `progress` events with `total` fill a bar."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __call__(self, event: Event) -> None:
        if event.name == "progress":
            if self.progress is None:  # shown from the first stage on: a refused run shows none
                self._start(event.pipeline)
            assert self.progress is not None and self.task is not None
            fields = event.fields
            self.progress.update(
                self.task,
                description=f"[bold]{event.pipeline}[/] {fields.get('stage', '')}",
                total=fields.get("total"),
                completed=fields.get("done", 0),
            )
        elif event.name in ("run_succeeded", "run_failed"):
            self._stop()
        elif event.name == "runs_interrupted":
            runs = ", ".join(event.fields.get("runs", []))
            self.console.print(
                f"[yellow]{event.pipeline}: earlier run(s) {runs} stopped without finishing "
                "(process killed or crashed); marked crashed. See `sluice show RUN`.[/]",
                soft_wrap=True,
            )
        elif event.name == "retrying":
            self.console.print(retrying_message(event), soft_wrap=True)
        elif event.name in WARNINGS:
            self.console.print(warning_message(event), soft_wrap=True)

    def _start(self, pipeline: str) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(f"[bold]{pipeline}[/] starting", total=None)

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.progress, self.task = None, None


def warning_message(event: Event) -> str:
    """'orders: <where>: <hint>' (rich markup) for an event of `logs.WARNINGS`."""
    where = event.fields.get("sink") or event.fields.get("path")
    prefix = f"{escape(str(where))}: " if where else ""
    return f"[yellow]{event.pipeline}: {prefix}{escape(str(event.fields.get('hint', '')))}[/]"


def retrying_message(event: Event) -> str:
    """'orders: steps[1].enrich_redis attempt 2/5, next in 8 s (after: ...)' (rich markup);
    a retry of the whole run names no step."""
    fields = event.fields
    step = f"{escape(fields['step'])} " if fields.get("step") else ""
    return (
        f"[yellow]{event.pipeline}: {step}attempt {fields['attempt']}/{fields['max_attempts']}, "
        f"next in {fields['next_in_s']:.0f} s[/] (after: {escape(fields['error'])})"
    )
