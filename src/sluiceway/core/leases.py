"""Leases of running batch runs, and pruning of the run store.

A run that starts takes a lease in the run store and renews it from a heartbeat thread
every third of its time to live. A process that dies (SIGKILL, a lost machine) stops
renewing; the next run of the same pipeline finds the run still `running` with an expired
lease and marks it `crashed`, naming the command that resumes it (rerunning the same date is
safe: every sink is idempotent). A run without a lease row (written before leases existed)
is judged by its start time.

Pruning keeps the store small: finished runs older than `keep_days`, and those beyond the
newest `keep_runs` of their pipeline, are deleted with their metric points and stream
batches ($SLUICE_RUNS_KEEP_DAYS, $SLUICE_RUNS_KEEP; checked once a day at the end of a run).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sluiceway.core.store_db import (
    StoreConnection,
    StoreLocation,
    as_location,
    connect,
    db_errors,
    ensure_schema,
    json_text,
    upsert_sql,
)
from sluiceway.core.store_schema import LEASES_SCHEMA
from sluiceway.errors import ConfigError

DEFAULT_TTL_S = 60.0
DEFAULT_KEEP_DAYS = 365
DEFAULT_KEEP_RUNS = 10_000
Store = StoreLocation | Path
"""The run store: a location, or (as before) the path of its SQLite file."""


@contextmanager
def _connect(db: Store) -> Iterator[StoreConnection]:
    location = as_location(db)
    if location.dialect == "postgresql":
        ensure_schema(location, LEASES_SCHEMA, name="leases")
    with connect(location) as con:
        if con.dialect == "sqlite":
            con.raw.executescript(LEASES_SCHEMA["sqlite"])
        yield con


def _now() -> datetime:
    return datetime.now(UTC)


_COMPACT = "%Y%m%dT%H%M%S"
_STARTED = "replace(replace(started_at, '-', ''), ':', '')"
"""`started_at` as compact UTC text ('20250115T020000'), whether stored compact or ISO."""


def lease_ttl(environ: dict[str, str] | None = None) -> float:
    """The lease time to live: $SLUICE_LEASE_SECONDS, else 60 s."""
    value = (environ if environ is not None else os.environ).get("SLUICE_LEASE_SECONDS")
    try:
        return float(value) if value else DEFAULT_TTL_S
    except ValueError:
        raise ConfigError(
            f"SLUICE_LEASE_SECONDS={value!r} is not a number of seconds; unset it or write "
            "e.g. SLUICE_LEASE_SECONDS=60"
        ) from None


class Lease:
    """A running run's claim on its pipeline, renewed until `release`."""

    def __init__(
        self,
        db: Store,
        run_id: str,
        pipeline: str,
        *,
        ttl_s: float,
        holder: str | None = None,
        fenced: bool = False,
    ) -> None:
        self.db, self.run_id, self.pipeline, self.ttl_s = db, run_id, pipeline, ttl_s
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.fenced = fenced
        """Taken by `take_publish_turn`: renewed only while its row is still this holder's
        (another run may take it once it expired), never written over."""
        self._stop = threading.Event()
        if not fenced:
            self._renew()
        self._thread = threading.Thread(target=self._beat, name="sluice-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        expires = (_now() + timedelta(seconds=self.ttl_s)).isoformat()
        with _connect(self.db) as con:
            if self.fenced:
                con.execute(
                    "UPDATE leases SET expires_at = ? WHERE run_id = ? AND holder = ? "
                    "AND expires_at >= ?",
                    (expires, self.run_id, self.holder, _now().isoformat()),
                )
                return
            con.execute(
                upsert_sql(con.dialect, "leases", _LEASE_COLUMNS, key=("run_id",)),
                (self.run_id, self.pipeline, self.holder, expires),
            )

    def _beat(self) -> None:
        transient: tuple[type[Exception], ...] = (*db_errors(), ConfigError)
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self._renew()
            except transient:
                continue

    def release(self) -> None:
        """Stop the heartbeat and drop the lease (the run is finished); a fenced lease that
        another holder took over is left to it."""
        self._stop.set()
        self._thread.join(timeout=5)
        with _connect(self.db) as con:
            if self.fenced:
                con.execute(
                    "DELETE FROM leases WHERE run_id = ? AND holder = ?",
                    (self.run_id, self.holder),
                )
            else:
                con.execute("DELETE FROM leases WHERE run_id = ?", (self.run_id,))


def take_publish_turn(
    db: Store,
    pipeline: str,
    run_id: str,
    *,
    ttl_s: float,
    waiting: Callable[[str], object] = lambda holder: None,
    still_waiting: Callable[[], object] = lambda: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Lease:
    """Wait until no other run of `pipeline` holds its publish turn, then hold it: a lease
    under the key `publish:<pipeline>`, renewed until released, so a holder that dies frees
    it after `ttl_s`. `waiting(holder)` is told once when another run holds it, and
    `still_waiting()` before each wait (it raises to give up: a run's timeout)."""
    key = f"publish:{pipeline}"
    holder = f"{socket.gethostname()}:{os.getpid()} (run {run_id})"
    told = False
    while True:
        held_by = None
        try:
            with _connect(db) as con:
                con.execute(
                    "DELETE FROM leases WHERE run_id = ? AND expires_at < ?",
                    (key, _now().isoformat()),
                )
                row = con.execute("SELECT holder FROM leases WHERE run_id = ?", (key,)).fetchone()
                if row is None:
                    expires = (_now() + timedelta(seconds=ttl_s)).isoformat()
                    con.execute(
                        "INSERT INTO leases (run_id, pipeline, holder, expires_at) "
                        "VALUES (?, ?, ?, ?)",
                        (key, pipeline, holder, expires),
                    )
                elif _is_dead_here(str(row[0])):  # killed on this machine: free it now
                    con.execute("DELETE FROM leases WHERE run_id = ? AND holder = ?", (key, row[0]))
                    continue
                else:
                    held_by = str(row[0])
        except db_errors() as exc:  # another run inserted it first (unique key)
            held_by = f"another run ({type(exc).__name__})"
        if held_by is None:
            return Lease(db, key, pipeline, ttl_s=ttl_s, holder=holder, fenced=True)
        if not told:
            waiting(held_by)
            told = True
        still_waiting()
        sleep(0.2)


def _is_dead_here(holder: str) -> bool:
    """Whether `holder` ('host:pid ...') is a process of this machine that no longer runs."""
    host, _, rest = holder.partition(":")
    pid = rest.split(" ", 1)[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, as another user
        return False
    return False


@dataclass(frozen=True)
class CrashedRun:
    """A run found `running` with its lease expired."""

    run_id: str
    logical_date: str
    holder: str


_LEASE_COLUMNS = ("run_id", "pipeline", "holder", "expires_at")


def mark_crashed(db: Store, pipeline: str, *, ttl_s: float) -> list[CrashedRun]:
    """Mark the `running` batch runs of `pipeline` whose lease expired as `crashed`."""
    now = _now()
    cutoff = (now - timedelta(seconds=ttl_s)).strftime(_COMPACT)
    with _connect(db) as con:
        rows = con.execute(
            f"SELECT r.run_id, r.logical_date, l.holder, l.expires_at, {_STARTED} AS started "
            "FROM runs r "
            "LEFT JOIN leases l ON l.run_id = r.run_id WHERE r.pipeline = ? AND "
            f"r.status = 'running' AND coalesce({json_text(con.dialect, 'r.details', 'mode')}, "
            "'batch') = 'batch'",
            (pipeline,),
        ).fetchall()
        crashed = [
            CrashedRun(row["run_id"], row["logical_date"], row["holder"] or "unknown")
            for row in rows
            if (row["expires_at"] or "") < now.isoformat()
            and (row["expires_at"] is not None or row["started"] < cutoff)
        ]
        for run in crashed:
            con.execute(
                "UPDATE runs SET status = 'crashed', error = ? WHERE run_id = ?",
                (crash_message(run), run.run_id),
            )
            con.execute("DELETE FROM leases WHERE run_id = ?", (run.run_id,))
    return crashed


def crash_message(run: CrashedRun) -> str:
    return (
        f"the process running it ({run.holder}) stopped renewing its lease (killed or "
        "crashed); nothing it had not committed is visible. Resume with "
        f"`sluice run --resume {run.run_id}` (or `sluice run SPEC --date {run.logical_date}`; "
        "reruns are idempotent)."
    )


def prune(
    db: Store, *, keep_days: int = DEFAULT_KEEP_DAYS, keep_runs: int = DEFAULT_KEEP_RUNS
) -> int:
    """Delete finished runs older than `keep_days`, and those beyond the newest `keep_runs`
    of their pipeline, with their metric points and stream batches; returns the runs
    deleted."""
    cutoff = (_now() - timedelta(days=keep_days)).strftime(_COMPACT)
    with _connect(db) as con:
        doomed = [
            row[0]
            for row in con.execute(
                f"SELECT run_id FROM (SELECT run_id, {_STARTED} AS started, status, "
                f"row_number() OVER (PARTITION BY pipeline ORDER BY {_STARTED} DESC) AS newest "
                "FROM runs) AS ranked WHERE status != 'running' AND (started < ? OR newest > ?)",
                (cutoff, keep_runs),
            )
        ]
        for table in ("metrics", "stream_batches", "runs"):
            con.executemany(f"DELETE FROM {table} WHERE run_id = ?", [(i,) for i in doomed])
        con.execute(
            upsert_sql(con.dialect, "store_meta", ("key", "value"), key=("key",)),
            ("pruned_at", _now().isoformat()),
        )
    return len(doomed)


def prune_daily(db: Store, *, keep_days: int, keep_runs: int) -> int | None:
    """`prune` at most once a day (cheap to call at the end of every run)."""
    with _connect(db) as con:
        row = con.execute("SELECT value FROM store_meta WHERE key = 'pruned_at'").fetchone()
    if row and row[0] > (_now() - timedelta(days=1)).isoformat():
        return None
    return prune(db, keep_days=keep_days, keep_runs=keep_runs)
