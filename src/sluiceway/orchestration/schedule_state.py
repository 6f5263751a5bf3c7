"""What the scheduler remembers, in the run store (SQLite or PostgreSQL): the claim of each
(pipeline, logical date) and the last tick seen per pipeline.

A claim is an `INSERT OR IGNORE` (PostgreSQL: `ON CONFLICT DO NOTHING`) on the primary key
(pipeline, logical_date) made before a run
starts: whichever scheduler inserts the row runs the date, any other one (a second process,
or the same one after a restart) sees the row and skips it. A date therefore runs at most
once through the scheduler; rerun it by hand with `sluice run SPEC --date DATE` or
`sluice backfill`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from sluiceway.core.store_db import (
    StoreConnection,
    StoreLocation,
    as_location,
    connect,
    ensure_schema,
    insert_new_sql,
)
from sluiceway.core.store_schema import SCHEDULE_SCHEMA

_CLAIM_COLUMNS = ("pipeline", "logical_date", "claimed_at", "scheduled_for")

ACTIVE = ("claimed", "running")
"""Claim statuses of a run that has not finished."""


@dataclass(frozen=True)
class Claim:
    """One claimed (pipeline, logical date)."""

    pipeline: str
    logical_date: str
    claimed_at: str
    run_id: str | None
    scheduled_for: str | None
    status: str
    finished_at: str | None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


class ScheduleState:
    """Claims and last ticks in the run store (`<state>/runs.db` by default).

    Args:
        target: the store's location, or its SQLite file (its folder is created).
    """

    def __init__(self, target: StoreLocation | Path) -> None:
        self.location = as_location(target)
        self.path = self.location.path
        ensure_schema(self.location, SCHEDULE_SCHEMA, name="schedule")

    @contextmanager
    def _connect(self) -> Iterator[StoreConnection]:
        with connect(self.location) as con:
            yield con

    def claim(self, pipeline: str, logical_date: date, *, slot: datetime, now: datetime) -> bool:
        """Claim a date for a run; True when this caller won it (nobody claimed it before)."""
        with self._connect() as con:
            cursor = con.execute(
                insert_new_sql(
                    con.dialect, "schedule_claims", _CLAIM_COLUMNS, key=("pipeline", "logical_date")
                ),
                (pipeline, logical_date.isoformat(), _iso(now), slot.isoformat()),
            )
            return cursor.rowcount == 1

    def mark(
        self, pipeline: str, logical_date: date, status: str, *, run_id: str | None = None
    ) -> None:
        """Record the run of a claim: its run id and status (finished_at once it ended)."""
        finished = None if status in ACTIVE else _iso(datetime.now(UTC))
        with self._connect() as con:
            con.execute(
                "UPDATE schedule_claims SET status = ?, run_id = coalesce(?, run_id), "
                "finished_at = ? WHERE pipeline = ? AND logical_date = ?",
                (status, run_id, finished, pipeline, logical_date.isoformat()),
            )

    def get(self, pipeline: str, logical_date: date) -> Claim | None:
        """The claim of a date, if any."""
        with self._connect() as con:
            row = con.execute(
                "SELECT * FROM schedule_claims WHERE pipeline = ? AND logical_date = ?",
                (pipeline, logical_date.isoformat()),
            ).fetchone()
        return Claim(**dict(row)) if row else None

    def is_active(self, pipeline: str, logical_date: date) -> bool:
        """True when a run of `pipeline` for the date is claimed and not finished."""
        claim = self.get(pipeline, logical_date)
        return claim is not None and claim.status in ACTIVE

    def claims(self, pipeline: str | None = None) -> list[Claim]:
        """Every claim (of one pipeline), by pipeline and date."""
        query = "SELECT * FROM schedule_claims"
        params: tuple[str, ...] = ()
        if pipeline is not None:
            query, params = query + " WHERE pipeline = ?", (pipeline,)
        with self._connect() as con:
            rows = con.execute(query + " ORDER BY pipeline, logical_date", params).fetchall()
        return [Claim(**dict(row)) for row in rows]

    def last_tick(self, pipeline: str) -> datetime | None:
        """The last moment a tick covered for `pipeline` (None: never scheduled yet)."""
        with self._connect() as con:
            row = con.execute(
                "SELECT last_tick FROM schedule_ticks WHERE pipeline = ?", (pipeline,)
            ).fetchone()
        return datetime.fromisoformat(row["last_tick"]) if row else None

    def advance(self, pipeline: str, moment: datetime) -> None:
        """Record that slots up to `moment` were handled; never moves backwards."""
        value = _iso(moment)
        with self._connect() as con:
            con.execute(
                "INSERT INTO schedule_ticks (pipeline, last_tick) VALUES (?, ?) "
                "ON CONFLICT (pipeline) DO UPDATE SET last_tick = excluded.last_tick "
                "WHERE excluded.last_tick > schedule_ticks.last_tick",
                (pipeline, value),
            )
