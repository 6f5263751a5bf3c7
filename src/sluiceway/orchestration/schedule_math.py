"""When a schedule is due: cron slots in the schedule's time zone, and which missed slots a
catch-up policy runs.

A slot is a scheduled instant (aware, in the schedule's zone); its logical date is that
instant's date in the zone: '0 2 * * *' in Europe/Paris at 2025-01-16 02:00 runs logical date
2025-01-16.

Daylight saving: a wall-clock time that does not exist (spring forward) runs at the first
valid time after it (02:30 → 03:00); one that occurs twice (fall back) runs once, at its
first occurrence.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from croniter import croniter

from sluiceway.core.spec_meta import Schedule

Catchup = Literal["none", "latest", "all"]
MAX_SLOTS = 1000
"""Most slots computed at once: a scheduler down for years does not enumerate them all."""


def zone_of(schedule: Schedule, default: str) -> ZoneInfo:
    """The schedule's time zone, else `default` (the project's)."""
    return ZoneInfo(schedule.timezone or default)


def logical_date_of(slot: datetime) -> date:
    """The logical date a slot runs: its date in its own time zone."""
    return slot.date()


def slots_between(
    cron: str, zone: ZoneInfo, after: datetime, until: datetime, *, limit: int = MAX_SLOTS
) -> list[datetime]:
    """The cron's instants in `zone` with after < instant <= until, oldest first.

    Args:
        cron: five-field cron expression.
        zone: the zone the cron's wall-clock times are in.
        after: exclusive start (aware).
        until: inclusive end (aware).
        limit: most slots returned: the newest `limit` of them when there are more.

    Returns:
        aware datetimes in `zone`; a repeated wall-clock time (autumn) appears once.
    """
    if until <= after:
        return []
    found: list[datetime] = []
    walls: set[datetime] = set()
    slots = croniter(cron, after.astimezone(zone))
    while (slot := slots.get_next(datetime)) <= until:
        wall = slot.replace(tzinfo=None)
        if wall not in walls:
            walls.add(wall)
            found.append(slot)
        if len(found) > 2 * limit:
            found = found[-limit:]
    return found[-limit:]


def slots_to_run(
    slots: Sequence[datetime], catchup: Catchup, *, now: datetime, grace: timedelta
) -> list[datetime]:
    """The slots a tick starts, out of those that came due since the last tick.

    A slot no older than `grace` is simply due (a tick ran on time); older ones were missed
    while the scheduler was down, and `catchup` decides: `all` runs every one in order,
    `latest` only the newest slot, `none` only the slots that are due now.
    """
    if catchup == "all":
        return list(slots)
    if catchup == "latest":
        return list(slots[-1:])
    return [slot for slot in slots if now - slot <= grace]
