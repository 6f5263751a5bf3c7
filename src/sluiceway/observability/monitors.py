"""Monitors run by `sluice scheduler` on every tick: freshness and latency SLAs.

- freshness: for each Delta sink of a pipeline with `sla.freshness`, the newest data is the
  table's latest commit time, or, when the table is partitioned by a date column, the end of
  its newest partition's day (midnight after it, UTC) if that is earlier. Older than
  `sla.freshness` at `now` → a `freshness` alert. A table that does not exist yet is not
  judged (nothing was promised before the first run).
- latency: a run still `running` in the run store for longer than `sla.latency` → an `sla`
  alert (a finished run that took too long is reported by `AlertSubscriber`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from deltalake import DeltaTable

from sluiceway.core.durations import parse_duration
from sluiceway.core.runstore import RunStore
from sluiceway.core.spec import Pipeline
from sluiceway.core.storage import delta_storage_options, is_storage_error
from sluiceway.observability.alert_payloads import Alert

RECENT_RUNS = 50


def freshness_alerts(specs: Sequence[tuple[Pipeline, Path]], *, now: datetime) -> list[Alert]:
    """A `freshness` alert for every Delta sink whose newest data is older than its SLA.

    Args:
        specs: (pipeline, spec file) pairs; relative sink paths resolve against the file's
            folder.
        now: the moment to judge at (aware).
    """
    alerts: list[Alert] = []
    for pipeline, spec in specs:
        freshness = pipeline.sla.freshness if pipeline.sla else None
        if freshness is None:
            continue
        limit = parse_duration(freshness)
        for index, uri, options in _delta_sinks(pipeline, spec.parent):
            newest = newest_data_time(uri, options)
            if newest is None or now - newest <= limit:
                continue
            alerts.append(_stale(pipeline.pipeline, spec, index, now - newest, freshness, newest))
    return alerts


def _stale(
    name: str, spec: Path, index: int, age: timedelta, freshness: str, newest: datetime
) -> Alert:
    return Alert(
        kind="freshness",
        pipeline=name,
        summary=f"newest data of sinks[{index}] is {_human(age)} old, older than its "
        f"freshness SLA of {freshness}",
        severity="error",
        check=f"sinks[{index}]",
        observed=_human(age),
        threshold=freshness,
        inspect=f"sluice history {spec} --sink {index}",
        details={"newest_data": newest.isoformat(timespec="seconds")},
    )


def _delta_sinks(pipeline: Pipeline, base_dir: Path) -> Iterator[tuple[int, str, dict[str, str]]]:
    for index, sink in enumerate(pipeline.sinks):
        if sink.type != "delta":
            continue
        config: Any = sink
        path = str(config.path)
        uri = path if "://" in path else str((base_dir / Path(path).expanduser()).resolve())
        yield index, uri, dict(config.storage_options)


def newest_data_time(uri: str, spec_options: dict[str, str]) -> datetime | None:
    """When the newest data of the Delta table at `uri` dates from (None: no table, or the
    storage could not be read).

    Returns:
        the latest commit time, or the end of the newest date partition if earlier.
    """
    options = delta_storage_options(uri, spec_options)
    try:
        if not DeltaTable.is_deltatable(uri, storage_options=options):
            return None
        table = DeltaTable(uri, storage_options=options)
        commit = datetime.fromtimestamp(table.history(1)[0]["timestamp"] / 1000, UTC)
        newest_day = _newest_partition_date(table)
    except Exception as exc:
        if is_storage_error(exc):
            return None
        raise
    if newest_day is None:
        return commit
    end_of_day = datetime.combine(newest_day + timedelta(days=1), datetime.min.time(), UTC)
    return min(commit, end_of_day)


def _newest_partition_date(table: DeltaTable) -> date | None:
    columns = table.metadata().partition_columns
    partitions = table.partitions() if columns else []
    for column in columns:
        days = [_as_date(p.get(column)) for p in partitions]
        if days and all(day is not None for day in days):
            return max(day for day in days if day is not None)
    return None


def _as_date(value: str | None) -> date | None:
    if not value or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def latency_alerts(
    specs: Sequence[tuple[Pipeline, Path]], store: RunStore, *, now: datetime
) -> list[Alert]:
    """An `sla` alert for every run still running for longer than its pipeline's
    `sla.latency`."""
    alerts: list[Alert] = []
    for pipeline, _ in specs:
        latency = pipeline.sla.latency if pipeline.sla else None
        if latency is None:
            continue
        limit = parse_duration(latency)
        for run in store.list(pipeline=pipeline.pipeline, limit=RECENT_RUNS):
            started = parse_started_at(run.started_at)
            if run.status != "running" or started is None or now - started <= limit:
                continue
            alerts.append(
                Alert(
                    kind="sla",
                    pipeline=pipeline.pipeline,
                    summary=f"run has been running for {_human(now - started)}, longer than "
                    f"its latency SLA of {latency}",
                    severity="warning",
                    run_id=run.run_id,
                    check="latency",
                    logical_date=run.logical_date,
                    observed=_human(now - started),
                    threshold=latency,
                    inspect=f"sluice show {run.run_id}",
                )
            )
    return alerts


def parse_started_at(text: str) -> datetime | None:
    """A run store `started_at` (compact '20250115T020000' or ISO 8601) as an aware UTC time."""
    for parse in (lambda t: datetime.strptime(t[:15], "%Y%m%dT%H%M%S"), datetime.fromisoformat):
        try:
            moment = parse(text)
        except ValueError:
            continue
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def _human(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"
