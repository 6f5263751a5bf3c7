"""Typed run events and the bus that carries them to logs, metrics and progress.

The runner emits; observability subscribes. Plug-ins never log or count directly. Event
fields never hold row values, so PII cannot leak through them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

EventName = Literal[
    "run_started",
    "source_read",
    "rows_rejected",
    "step_done",
    "checks_done",
    "gate_failed",
    "dead_letter_written",
    "commit_done",
    "commit_skipped",
    "run_succeeded",
    "run_failed",
    "progress",
    "enrich_misses",
    "dedup_state_unsaved",
    "stream_resumed",
    "batch_committed",
    "already_committed",
    "stream_status",
    "retrying",
    "runs_interrupted",
    "positions_not_found",
    "dedup_state_missing",
    "all_rows_rejected",
    "cursor_held",
    "columns_beyond_contract",
    "stopped_with_lag",
    "check_warned",
    "nothing_replaced",
    "files_changed_since_loaded",
    "run_finished",
]


@dataclass(frozen=True)
class Event:
    """One thing that happened in a run."""

    name: EventName
    pipeline: str
    run_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    """When it happened (seconds since the epoch)."""


Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers events to subscribers in order; a failing subscriber never fails the run."""

    def __init__(self, pipeline: str, run_id: str) -> None:
        self.pipeline = pipeline
        self.run_id = run_id
        self._subscribers: list[Subscriber] = []
        self.history: list[Event] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        """Receive every later event."""
        self._subscribers.append(subscriber)

    def emit(self, name: EventName, **fields: Any) -> Event:
        """Send an event to every subscriber; returns it."""
        event = Event(name=name, pipeline=self.pipeline, run_id=self.run_id, fields=fields)
        self.history.append(event)
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                continue
        return event
