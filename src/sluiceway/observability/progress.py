"""Live progress on the terminal: a spinner with the current stage and elapsed time."""

from __future__ import annotations

from rich.console import Console
from rich.status import Status

from sluiceway.core.events import Event


class ConsoleProgress:
    """Shows the stage of a run while it works; stops at the end of the run."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.status: Status | None = None

    def __call__(self, event: Event) -> None:
        if event.name == "run_started":
            self.status = self.console.status(f"[bold]{event.pipeline}[/] starting", spinner="dots")
            self.status.start()
        elif event.name == "progress" and self.status is not None:
            self.status.update(f"[bold]{event.pipeline}[/] {event.fields.get('stage', '')}")
        elif event.name in ("run_succeeded", "run_failed") and self.status is not None:
            self.status.stop()
            self.status = None
