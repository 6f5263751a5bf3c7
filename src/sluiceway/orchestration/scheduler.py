"""`sluice scheduler`: starts the scheduled runs of a project as they come due.

Each tick:
1. loads the project's specs (edits are picked up without a restart);
2. for each pipeline with a `schedule`, computes the cron slots since its last tick (first
   sight: none; the pipeline is scheduled from now on) and keeps those its `catchup` policy
   runs;
3. runs them in dependency waves (`depends_on`), at most `max_workers` pipelines at once, the
   slots of one pipeline in date order; each date is claimed in `schedule_claims` first, so
   it never runs twice, even with two schedulers; a date whose dependency has a claim for
   the same date still running is left for the next tick;
4. records the tick, then runs the freshness and latency monitors and sends their alerts.

A stop request (SIGTERM / SIGINT) lets running runs finish and starts no new one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sluiceway.core import leases
from sluiceway.core.durations import parse_instant
from sluiceway.core.events import Event
from sluiceway.core.runstore import RunStore
from sluiceway.core.store_db import resolve_location
from sluiceway.observability.alert_payloads import Alert
from sluiceway.observability.alerts import dispatch
from sluiceway.observability.monitors import freshness_alerts, latency_alerts
from sluiceway.orchestration import ProjectContext, ProjectSpec, run_project_pipeline
from sluiceway.orchestration.graph import waves
from sluiceway.orchestration.schedule_math import (
    logical_date_of,
    slots_between,
    slots_to_run,
    zone_of,
)
from sluiceway.orchestration.schedule_state import ACTIVE, ScheduleState

MIN_GRACE = timedelta(seconds=60)
Say = Callable[[str], None]

UPSTREAM_FAILED = "upstream_failed"
"""A scheduled date not run because a dependency's run of it did not succeed."""


@dataclass(frozen=True)
class SlotOutcome:
    """What a tick did with one slot of one pipeline."""

    pipeline: str
    logical_date: str
    outcome: str
    """succeeded / failed (the run's status), claimed_elsewhere, waiting_for_dependency,
    stopped (a stop request came first) or error (the run could not start)."""
    run_id: str | None = None
    error: str | None = None


@dataclass
class TickReport:
    """Everything one tick did."""

    at: datetime
    slots: list[SlotOutcome] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)

    @property
    def has_failures(self) -> bool:
        """True when a run of this tick failed or could not start."""
        return any(s.outcome in ("failed", "error") for s in self.slots)


@dataclass
class Scheduler:
    """The scheduler of one project.

    Attributes:
        context: the project.
        specs: its pipelines by name (reloaded by the caller as it sees fit).
        state_dir: run store, claims, alert state.
        tick_seconds: time between ticks (also sets the grace of a slot that is due now).
        say: receives one line per started or finished run.
    """

    context: ProjectContext
    specs: dict[str, ProjectSpec]
    state_dir: Path
    tick_seconds: float = 30.0
    say: Say = lambda _: None
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        project = self.context.project
        location = resolve_location(
            self.state_dir, run_store=project.run_store, root=self.context.root
        )
        self.state = ScheduleState(location)
        self.store = RunStore(location)

    @property
    def grace(self) -> timedelta:
        """How old a slot may be and still count as due now, not missed."""
        return max(MIN_GRACE, timedelta(seconds=2 * self.tick_seconds))

    def tick(self, now: datetime | None = None) -> TickReport:
        """One pass: start the due runs, wait for them, run the monitors.

        Args:
            now: the moment of the tick (aware; default: the clock).
        """
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        report = TickReport(at=moment)
        plan = self.plan(moment)
        deferred: dict[str, datetime] = {}
        with ThreadPoolExecutor(max_workers=self.context.project.max_workers) as pool:
            for wave in waves(self._depends_on(), list(plan)):
                jobs = [pool.submit(self._run_slots, name, plan[name], moment) for name in wave]
                for name, job in zip(wave, jobs, strict=True):
                    outcomes, waiting = job.result()
                    report.slots.extend(outcomes)
                    if waiting is not None:
                        deferred[name] = waiting
        for name in plan:
            self.state.advance(name, deferred.get(name, moment))
        report.alerts = self.monitor(moment)
        return report

    def plan(self, now: datetime) -> dict[str, list[datetime]]:
        """Scheduled pipeline → the slots to run at `now` (empty lists included)."""
        plan: dict[str, list[datetime]] = {}
        for name, spec in sorted(self.specs.items()):
            schedule = spec.pipeline.schedule
            if schedule is None:
                continue
            last = self.state.last_tick(name)
            if last is None:
                self.state.advance(name, now)
                plan[name] = []
                continue
            zone = zone_of(schedule, self.context.project.timezone)
            slots = slots_between(schedule.cron, zone, last, now)
            plan[name] = slots_to_run(slots, schedule.catchup, now=now, grace=self.grace)
        return plan

    def _depends_on(self) -> dict[str, tuple[str, ...]]:
        return {n: tuple(s.pipeline.depends_on) for n, s in self.specs.items()}

    def _run_slots(
        self, name: str, slots: list[datetime], now: datetime
    ) -> tuple[list[SlotOutcome], datetime | None]:
        outcomes: list[SlotOutcome] = []
        for slot in slots:
            day = logical_date_of(slot)
            if self.stop.is_set():
                outcomes.append(SlotOutcome(name, day.isoformat(), "stopped"))
                return outcomes, slot - timedelta(seconds=1)
            busy = [d for d in self.specs[name].pipeline.depends_on if self.state.is_active(d, day)]
            if busy:
                self.say(f"{name} {day}: waiting for {', '.join(busy)} (running)")
                outcomes.append(SlotOutcome(name, day.isoformat(), "waiting_for_dependency"))
                return outcomes, slot - timedelta(seconds=1)
            failed = self._failed_upstream(name, day)
            if not self.state.claim(name, day, slot=slot, now=now):
                outcomes.append(SlotOutcome(name, day.isoformat(), "claimed_elsewhere"))
                continue
            if failed:
                # As `sluice run --all`: built from an upstream that failed for the date, the
                # table would be stale. Rerun the date once the upstream is fixed.
                why = f"upstream {', '.join(failed)} failed for {day}"
                self.state.mark(name, day, UPSTREAM_FAILED)
                self.say(
                    f"{name} {day}: skipped ({why}); once it succeeds, run this date with "
                    f"`sluice run {name} --date {day}` (or `sluice backfill {name} --from "
                    f"{day} --to {day}`)"
                )
                outcomes.append(SlotOutcome(name, day.isoformat(), UPSTREAM_FAILED, error=why))
                continue
            outcomes.append(self._run_one(name, slot))
        return outcomes, None

    def _failed_upstream(self, name: str, day: date) -> list[str]:
        """Dependencies whose scheduled run of `day` ended other than succeeded."""
        failed = []
        for dependency in self.specs[name].pipeline.depends_on:
            claim = self.state.get(dependency, day)
            if (
                claim is not None
                and claim.status not in ("succeeded", *ACTIVE)
                and not self._succeeded_since(dependency, day, claim.finished_at)
            ):
                failed.append(dependency)
        return failed

    def _succeeded_since(self, pipeline: str, day: date, since: str | None) -> bool:
        """A run of `pipeline` for `day` succeeded after its scheduled one ended (someone
        ran the date again by hand once it was fixed)."""
        recent = self.store.list(pipeline=pipeline, limit=50)
        return any(
            r.logical_date == day.isoformat()
            and r.status == "succeeded"
            and not (r.details or {}).get("replay")
            and (since is None or (parse_instant(r.started_at) or _EPOCH) >= _instant(since))
            for r in recent
        )

    def _run_one(self, name: str, slot: datetime) -> SlotOutcome:
        spec, day = self.specs[name], logical_date_of(slot)
        self.say(f"{name} {day}: starting (scheduled {slot.isoformat()})")
        self.state.mark(name, day, "running")

        finished: list[str] = []

        def record_run_id(event: Event) -> None:
            if event.name == "run_started":
                self.state.mark(name, day, "running", run_id=event.run_id)
            elif event.name == "run_finished":
                finished.append(event.run_id)

        try:
            result = run_project_pipeline(
                spec,
                self.context,
                state_dir=self.state_dir,
                logical_date=day,
                subscribers=[record_run_id],
                warn=self.say,
            )
        except Exception as exc:
            self.state.mark(name, day, "error")
            self.say(f"{name} {day}: could not start: {exc}")
            if not finished:  # no run_finished: the run's own alert hook never fired
                self._alert_not_started(name, day.isoformat(), exc)
            return SlotOutcome(name, day.isoformat(), "error", error=str(exc))
        self.state.mark(name, day, result.status, run_id=result.run_id)
        attempts = (
            f", attempt {result.attempt}/{result.max_attempts}" if result.max_attempts > 1 else ""
        )
        why = f": {result.error}" if result.error and not result.ok else ""
        self.say(f"{name} {day}: {result.status} (run {result.run_id}{attempts}){why}")
        return SlotOutcome(name, day.isoformat(), result.status, result.run_id, result.error)

    def _alert_not_started(self, name: str, day: str, exc: Exception) -> None:
        """Send run_failed for a scheduled date whose run could not start (a missing secret,
        an unreadable spec): unattended, nobody else would hear of it."""
        alert = Alert(
            kind="run_failed",
            pipeline=name,
            summary=f"scheduled run could not start: {exc}",
            severity="critical",
            logical_date=day,
            inspect=f"sluice backfill {name} --from {day} --to {day}",
            details={"error_type": type(exc).__name__},
        )
        dispatch(self.context.project, alert, state_dir=self.state_dir)

    def monitor(self, now: datetime) -> list[str]:
        """Run the freshness and latency monitors; send their alerts.

        Returns:
            one line per alert: its key, what it observed and what each route did with it.
        """
        specs = [(s.pipeline, s.path) for _, s in sorted(self.specs.items())]
        found = self._crashed_runs()  # first: a dead run is not a slow one
        found += freshness_alerts(specs, now=now) + latency_alerts(specs, self.store, now=now)
        lines = []
        for alert in found:
            outcomes = dispatch(self.context.project, alert, state_dir=self.state_dir)
            routes = ", ".join(f"{route}: {what}" for route, what in outcomes.items())
            lines.append(f"{alert.key}: {alert.summary} ({routes or 'no route'})")
        return lines

    def _crashed_runs(self) -> list[Alert]:
        """Runs of the project's pipelines left `running` by a process that died (their
        lease expired), marked crashed, one `run_failed` alert each: until then they showed
        as running everywhere (UI, metrics) and a latency SLA took them for slow runs."""
        alerts = []
        for name in sorted(self.specs):
            for run in leases.mark_crashed(self.store.location, name, ttl_s=leases.lease_ttl()):
                alerts.append(
                    Alert(
                        kind="run_failed",
                        pipeline=name,
                        summary=f"run crashed: {leases.crash_message(run)}",
                        severity="critical",
                        run_id=run.run_id,
                        logical_date=run.logical_date,
                        inspect=f"sluice run --resume {run.run_id}",
                    )
                )
        return alerts


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(text: str) -> datetime:
    return parse_instant(text) or _EPOCH
