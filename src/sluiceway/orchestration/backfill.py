"""Backfills: runs of one pipeline over a range of logical dates.

Which dates run is decided from the run store (`reprocess`):

- ``missing``: the dates with no succeeded run;
- ``failed``: the dates whose latest run failed, crashed or was interrupted;
- ``all``: every date.

A per-date pipeline gets one run per selected date, at most N at once (a sliding window: a
worker takes the next date as soon as it is free). A `range_capable` pipeline gets one run
over the selected span, with `date_range=(first, last)` and `logical_date=last`. Reruns are
safe because sinks are idempotent (an `overwrite_partition` sink replaces the date's
partition). A failed date never stops the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from sluiceway.core.results import RunResult
from sluiceway.core.runstore import RunRecord, RunStore
from sluiceway.errors import SluicewayError

Reprocess = Literal["missing", "failed", "all"]
REPROCESS: tuple[Reprocess, ...] = ("missing", "failed", "all")
FAILED_STATUSES = frozenset({"failed", "crashed", "interrupted"})
MAX_DATES = 10_000
_STORE_SCAN = 1_000_000


@dataclass(frozen=True)
class PlannedDate:
    """A date the backfill will run, and why: `missing` (never run), `failed` (its latest
    run failed), `incomplete` (runs, none succeeded), or `reprocess` (reprocess all)."""

    logical_date: date
    reason: str


@dataclass
class DateOutcome:
    """The run of one date (or, for a range run, of the range ending on that date)."""

    logical_date: date
    ok: bool
    result: RunResult | None = None
    error: str | None = None
    duration_s: float = 0.0


def dates_between(first: date, last: date) -> list[date]:
    """Every date from `first` to `last`, both included.

    Raises:
        ValueError: `first` is after `last`, or the range is longer than MAX_DATES days.
    """
    if first > last:
        raise ValueError(f"--from {first} is after --to {last}; swap them")
    days = (last - first).days + 1
    if days > MAX_DATES:
        raise ValueError(f"{days} dates is more than {MAX_DATES}; backfill in smaller ranges")
    return [first + timedelta(days=i) for i in range(days)]


def plan_dates(
    store: RunStore, pipeline: str, dates: Iterable[date], reprocess: Reprocess
) -> list[PlannedDate]:
    """The dates of `dates` to run under `reprocess`, in date order, each with its reason.

    Args:
        store: the run store the pipeline's runs are recorded in.
        pipeline: the pipeline's name.
        dates: the candidate dates.
        reprocess: missing, failed or all (see the module docstring).
    """
    latest, succeeded = _history(store, pipeline)
    plan: list[PlannedDate] = []
    for day in sorted(set(dates)):
        last = latest.get(day.isoformat())
        if reprocess == "all":
            plan.append(PlannedDate(day, "reprocess"))
        elif reprocess == "failed":
            if last is not None and last.status in FAILED_STATUSES:
                plan.append(PlannedDate(day, "failed"))
        elif day.isoformat() not in succeeded:
            plan.append(PlannedDate(day, _missing_reason(last)))
    return plan


def _missing_reason(last: RunRecord | None) -> str:
    if last is None:
        return "missing"
    return "failed" if last.status in FAILED_STATUSES else "incomplete"


def _history(store: RunStore, pipeline: str) -> tuple[dict[str, RunRecord], set[str]]:
    """The latest run per logical date, and the dates with a succeeded run (a range run
    that recorded its `date_range` covers every date of it)."""
    records = store.list(pipeline=pipeline, limit=_STORE_SCAN)
    records.sort(key=lambda r: (_sortable(r.started_at), _sortable(r.finished_at or "")))
    latest: dict[str, RunRecord] = {}
    succeeded: set[str] = set()
    for record in records:
        if (record.details or {}).get("replay"):
            continue  # a replay of a date's dead letters is not a run of the date
        latest[record.logical_date] = record
        if record.status == "succeeded":
            succeeded.update(_covered(record))
    return latest, succeeded


def _sortable(stamp: str) -> str:
    """Batch runs store '20250115T020000', stream runs ISO; compare them as compact text."""
    return stamp.replace("-", "").replace(":", "")


def _covered(record: RunRecord) -> list[str]:
    span = record.details.get("date_range")
    if not (isinstance(span, list | tuple) and len(span) == 2):
        return [record.logical_date]
    try:
        days = dates_between(date.fromisoformat(str(span[0])), date.fromisoformat(str(span[1])))
    except ValueError:
        return [record.logical_date]
    return [d.isoformat() for d in days]


def run_dates(
    plan: Iterable[PlannedDate],
    run_one: Callable[[date], RunResult],
    *,
    workers: int,
    on_outcome: Callable[[DateOutcome], None] | None = None,
) -> list[DateOutcome]:
    """Run each planned date, at most `workers` at once; a failure never stops the others.

    Args:
        plan: the dates to run.
        run_one: runs the pipeline for one logical date.
        workers: the window size (at least 1).
        on_outcome: called in the calling thread as each date finishes.

    Returns:
        The outcomes in date order.
    """
    outcomes: list[DateOutcome] = []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sluice-fill") as pool:
        futures = [pool.submit(_run_date, p.logical_date, run_one) for p in plan]
        for future in as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    return sorted(outcomes, key=lambda o: o.logical_date)


def run_range(
    plan: list[PlannedDate], run_one: Callable[[date, tuple[date, date]], RunResult]
) -> DateOutcome:
    """One run over the span of the planned dates (a `range_capable` pipeline)."""
    first, last = plan[0].logical_date, plan[-1].logical_date
    return _run_date(last, lambda day: run_one(day, (first, last)))


def _run_date(day: date, run_one: Callable[[date], RunResult]) -> DateOutcome:
    started = time.monotonic()
    try:
        result = run_one(day)
    except SluicewayError as exc:
        return DateOutcome(day, False, error=str(exc), duration_s=time.monotonic() - started)
    except Exception as exc:  # one date's crash must not stop the other dates
        error = f"unexpected {type(exc).__name__}: {exc} (please report it)"
        return DateOutcome(day, False, error=error, duration_s=time.monotonic() - started)
    return DateOutcome(day, result.ok, result, result.error, result.duration_s)
