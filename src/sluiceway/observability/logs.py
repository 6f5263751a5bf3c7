"""Structured logs: one JSON object per event (`--log-format json`), or a human line.

Events carry counts, names and positions only, never row values, so logs hold no PII.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TextIO

from sluiceway.core.events import Event, Subscriber

WARNINGS = frozenset(
    {
        "positions_not_found",
        "dedup_state_missing",
        "all_rows_rejected",
        "cursor_held",
        "columns_beyond_contract",
        "stopped_with_lag",
        "check_warned",
        "nothing_replaced",
        "files_changed_since_loaded",
    }
)
"""Events that carry a `hint` a person must read: shown on the console as they happen."""
_LEVELS = {
    "run_failed": "error",
    "gate_failed": "error",
    "rows_rejected": "warning",
    "dedup_state_unsaved": "warning",
    **dict.fromkeys(WARNINGS, "warning"),
}
_NOT_LOGGED = frozenset({"run_finished"})  # the run's summary, printed on its own


def json_logger(stream: TextIO | None = None) -> Subscriber:
    """A subscriber that writes each event as one JSON line."""
    out = stream or sys.stderr

    def log(event: Event) -> None:
        if event.name in _NOT_LOGGED:
            return
        record = {
            "ts": datetime.fromtimestamp(event.at, UTC).isoformat(timespec="milliseconds"),
            "level": _LEVELS.get(event.name, "info"),
            "event": event.name,
            "pipeline": event.pipeline,
            "run_id": event.run_id,
            **event.fields,
        }
        out.write(json.dumps(record, default=str) + "\n")
        out.flush()

    return log
