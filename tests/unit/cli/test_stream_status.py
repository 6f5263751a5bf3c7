"""The stream status line: redrawn on a terminal, printed now and then into a log file."""

from __future__ import annotations

import io

from rich.console import Console

from sluiceway.cli_stream import StreamStatus
from sluiceway.core.events import Event


def status(events: int, version: int) -> Event:
    fields = {"events": events, "lag": 5, "version": version, "written": events, "rejected": 0}
    return Event(name="stream_status", pipeline="clicks", run_id="r1", fields=fields)


def test_a_log_file_gets_the_status_line_at_most_every_interval() -> None:
    out = io.StringIO()
    line = StreamStatus(Console(file=out, force_terminal=False, width=200), every_s=3600)

    line(status(100, 1))
    line(status(200, 2))  # within the hour: not printed again, until the run stops
    line.stop()

    printed = out.getvalue().splitlines()
    assert len(printed) == 2
    assert printed[0].startswith("clicks") and "last commit v1 " in printed[0]
    assert "ago" not in printed[0]  # printed as the commit lands: its age says nothing
    assert "written 100  rejected 0 in all" in printed[0]
    assert "last commit v2 " in printed[1]  # the log ends on the newest status, not a stale one
    line.stop()
    assert len(out.getvalue().splitlines()) == 2


def test_a_stream_without_batches_for_a_while_shows_no_rate() -> None:
    line = StreamStatus(Console(file=io.StringIO(), force_terminal=False, width=200))
    line(status(1000, 1))
    line(status(1000, 2))
    assert line._rate() > 0

    assert line.last_commit is not None
    line.last_commit -= 60  # a minute without a commit

    assert line._rate() == 0


def test_with_no_interval_every_batch_is_printed() -> None:
    out = io.StringIO()
    line = StreamStatus(Console(file=out, force_terminal=False, width=200), every_s=0)

    for version in (1, 2, 3):
        line(status(100, version))

    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all(f"v{version}" in text for version, text in zip((1, 2, 3), lines, strict=True))
