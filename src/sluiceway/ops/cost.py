"""What a pipeline's tables cost: live bytes per table and tier, monthly storage cost, the
compute of the last 30 days of runs, and a 12-month projection against the budget.

Growth is measured on the tables pipelines write (a sink's hot tier, the dead-letter table):
the bytes of the live files added in the last 30 days (or since the first commit, when the
table is younger) per day. A sink with colder tiers loses files to the moves, so its growth
is the rows its runs added in the window at the bytes per row of all its tiers, and a year
of it is spread over the tiers by age (`_tiered`). A table that does not exist yet grows by
the spec's inventory volume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from sluiceway.core.durations import parse_duration
from sluiceway.core.replay import dead_letter_table
from sluiceway.core.runner import RunOptions
from sluiceway.core.runstore import RunStore
from sluiceway.core.spec import Pipeline
from sluiceway.core.spec_meta import parse_volume
from sluiceway.core.storage import delta_storage_options, is_remote, storage_errors
from sluiceway.core.store_db import resolve_location
from sluiceway.ops.pricing import storage_price
from sluiceway.sinks.delta import DeltaSinkConfig

GB = 1e9
WINDOW_DAYS = 30
DAYS_PER_YEAR = 365
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class TableCost:
    """One table (or tier) of a pipeline: size, cost now and in 12 months."""

    label: str
    tier: str
    uri: str
    bytes: int
    files: int
    storage_per_month: float
    bytes_per_day: float
    growth_from: str
    projected_bytes: float
    projected_storage_per_month: float


@dataclass(frozen=True)
class CostReport:
    """The cost of one pipeline."""

    pipeline: str
    currency: str
    tables: list[TableCost]
    compute_hours_30d: float
    compute_per_month: float
    growth_per_year: float | None = None
    budget_per_month: float | None = None
    runs_30d: int = 0
    notes: list[str] = field(default_factory=list)
    layer: str | None = None

    @property
    def storage_per_month(self) -> float:
        return sum(t.storage_per_month for t in self.tables)

    @property
    def monthly_total(self) -> float:
        return self.storage_per_month + self.compute_per_month

    @property
    def projected_monthly(self) -> float:
        """Monthly cost in 12 months: projected storage plus compute grown like the data."""
        storage = sum(t.projected_storage_per_month for t in self.tables)
        return storage + self.compute_per_month * (self.growth_per_year or 1.0)

    @property
    def is_over_budget(self) -> bool:
        return self.budget_per_month is not None and self.projected_monthly > self.budget_per_month

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, totals included."""
        data = asdict(self)
        data.update(
            storage_per_month=self.storage_per_month,
            monthly_total=self.monthly_total,
            projected_monthly=self.projected_monthly,
            over_budget=self.is_over_budget,
        )
        return data


def by_layer(reports: list[CostReport]) -> dict[str, dict[str, float]]:
    """Bytes, monthly cost and projected monthly cost per layer (bronze, silver, gold;
    'none' for pipelines that declare no layer)."""
    totals: dict[str, dict[str, float]] = {}
    for report in reports:
        layer = totals.setdefault(
            report.layer or "none", {"bytes": 0, "monthly_total": 0.0, "projected_monthly": 0.0}
        )
        layer["bytes"] += sum(t.bytes for t in report.tables)
        layer["monthly_total"] += report.monthly_total
        layer["projected_monthly"] += report.projected_monthly
    return totals


def storage_cost(size_bytes: float, price_gb_month: float) -> float:
    """Monthly cost of `size_bytes` at `price_gb_month` per GB (10⁹ bytes) and month."""
    return size_bytes / GB * price_gb_month


def projected_bytes(
    size_bytes: float, bytes_per_day: float, growth_per_year: float | None
) -> float:
    """Size in 12 months: today's plus a year of the daily growth, times `growth_per_year`."""
    return size_bytes + bytes_per_day * DAYS_PER_YEAR * (growth_per_year or 1.0)


def compute_cost(durations_s: Sequence[float], price_per_hour: float) -> tuple[float, float]:
    """(hours, cost) of runs lasting `durations_s` seconds."""
    hours = sum(durations_s) / 3600
    return hours, hours * price_per_hour


def daily_growth(
    files: Sequence[tuple[int, int]], first_commit_ms: int | None, now_ms: int
) -> float:
    """Bytes per day added by live files `(modification_ms, size)` in the last 30 days (or
    since the first commit when it is more recent; at least one day)."""
    start = now_ms - WINDOW_DAYS * _DAY_MS
    added = sum(size for modified, size in files if modified >= start)
    span_ms = now_ms - max(start, first_commit_ms if first_commit_ms is not None else start)
    return added / max(span_ms / _DAY_MS, 1.0)


def inventory_bytes_per_day(pipeline: Pipeline) -> float | None:
    """Bytes per day the sources' `inventory.volume` declares (None: nothing declared)."""
    total, found = 0.0, False
    for source in pipeline.sources.values():
        inventory = getattr(source, "inventory", None)
        if inventory is not None and inventory.volume:
            found = True
            total += parse_volume(inventory.volume).stored_bytes_per_day(inventory.row_bytes)
    return total if found else None


def cost_report(
    pipeline: Pipeline,
    base_dir: Path,
    state_dir: Path,
    prices: Mapping[str, float],
    *,
    now: datetime | None = None,
) -> CostReport:
    """The cost of `pipeline`'s delta sinks (every tier) and dead-letter table.

    Raises:
        SinkError: a table's storage refused the read.
    """
    moment = now or datetime.now(UTC)
    growth = pipeline.cost.growth_per_year if pipeline.cost else None
    targets = _targets(pipeline, base_dir, state_dir)
    tables = [
        _table_cost(target, prices, growth, moment, inventory_bytes_per_day(pipeline))
        for target in targets
    ]
    tables = _tiered(targets, tables, prices, growth, moment)
    durations = _run_durations(pipeline.pipeline, state_dir, moment)
    hours, compute = compute_cost(durations, prices["compute_hour"])
    return CostReport(
        pipeline=pipeline.pipeline,
        currency=pipeline.cost.currency if pipeline.cost else "USD",
        tables=tables,
        compute_hours_30d=hours,
        compute_per_month=compute,
        growth_per_year=growth,
        budget_per_month=pipeline.cost.budget_per_month if pipeline.cost else None,
        runs_30d=len(durations),
        layer=pipeline.layer,
    )


@dataclass(frozen=True)
class _Target:
    label: str
    tier: str
    uri: str
    options: dict[str, str]
    is_written: bool
    pipeline: str | None = None  # the dead-letter table is shared: count this partition only
    after_days: float | None = None  # a tier: partitions older than this many days move here


def _targets(pipeline: Pipeline, base_dir: Path, state_dir: Path) -> list[_Target]:
    targets = []
    for index, sink in enumerate(pipeline.sinks):
        if not isinstance(sink, DeltaSinkConfig):
            continue
        uri = _resolve(sink.path, base_dir)
        tier = "hot" if is_remote(uri) else "local"
        targets.append(_Target(f"sinks[{index}]", tier, uri, dict(sink.storage_options), True))
        for level in sink.tiers:
            label = f"sinks[{index}].{level.name}"
            uri = _resolve(level.path, base_dir)
            after = parse_duration(level.after, what="after").total_seconds() / 86_400
            targets.append(
                _Target(label, level.name, uri, dict(level.storage_options), False, None, after)
            )
    letters = dead_letter_table(pipeline, RunOptions(base_dir=base_dir, state_dir=state_dir))
    tier = "hot" if is_remote(letters.uri) else "local"
    options = dict(pipeline.dead_letter.storage_options) if pipeline.dead_letter else {}
    targets.append(_Target("dead_letter", tier, letters.uri, options, True, pipeline.pipeline))
    return targets


def _table_cost(
    target: _Target,
    prices: Mapping[str, float],
    growth: float | None,
    now: datetime,
    inventory: float | None,
) -> TableCost:
    price = storage_price(prices, target.tier, is_remote=is_remote(target.uri))
    table = _open(target)
    size, files, per_day, source = 0, 0, 0.0, "none"
    if table is not None:
        actions = _own_files(pa.table(table.get_add_actions(flatten=True)), target.pipeline)
        sizes = [int(s) for s in actions["size_bytes"].to_pylist()]
        size, files = sum(sizes), len(sizes)
        if target.is_written:
            stamps = [int(m) for m in actions["modification_time"].to_pylist()]
            first = min((int(c["timestamp"]) for c in table.history()), default=None)
            per_day = daily_growth(list(zip(stamps, sizes, strict=True)), first, _ms(now))
            source = "history"
    elif target.is_written and inventory is not None and target.label != "dead_letter":
        per_day, source = inventory, "inventory"
    future = projected_bytes(size, per_day, growth)
    return TableCost(
        label=target.label,
        tier=target.tier,
        uri=target.uri,
        bytes=size,
        files=files,
        storage_per_month=storage_cost(size, price),
        bytes_per_day=per_day,
        growth_from=source,
        projected_bytes=future,
        projected_storage_per_month=storage_cost(future, price),
    )


def _tiered(
    targets: list[_Target],
    tables: list[TableCost],
    prices: Mapping[str, float],
    growth: float | None,
    now: datetime,
) -> list[TableCost]:
    """Growth of a sink with colder tiers. Moves take files out of its hot table, so the
    files left there undercount what the pipeline writes: the rows its runs added in the
    window (commit metrics) at the bytes per row of all tiers are the growth (the live
    files when no run of sluiceway wrote the table). A year of it is spread over the tiers
    by age: the hot table keeps the days before the first `after`, each tier the days up
    to the next one's, within the year."""
    out = list(tables)
    for index, target in enumerate(targets):
        tiers = [i for i, t in enumerate(targets) if t.label.startswith(f"{target.label}.")]
        if not target.is_written or not tiers:
            continue
        opened = [_open(targets[i]) for i in [index, *tiers]]
        hot = opened[0]
        if hot is None:
            continue
        rows = _rows_per_day(hot, _ms(now))
        per_day = out[index].bytes_per_day
        if rows is not None:
            per_day = rows * _bytes_per_row([t for t in opened if t is not None])
        bounds = [0.0, *(targets[i].after_days or 0.0 for i in tiers), float("inf")]
        members = [index, *tiers]
        future = [0.0] * len(members)
        for position, i in enumerate(members):
            # What a tier holds now is a year older then: it sits where that age belongs
            # (its youngest age, `bounds[position]`, decides).
            aged = bounds[position] + DAYS_PER_YEAR
            future[max(p for p, b in enumerate(bounds[:-1]) if b <= aged)] += out[i].bytes
        for position, i in enumerate(members):
            days = max(min(bounds[position + 1], DAYS_PER_YEAR) - bounds[position], 0.0)
            future[position] += per_day * days * (growth or 1.0)
            table = out[i]
            price = storage_price(prices, table.tier, is_remote=is_remote(table.uri))
            out[i] = replace(
                table,
                bytes_per_day=per_day if days else 0.0,
                growth_from=(table.growth_from if i == index else f"moves from {target.label}")
                if days
                else "none",
                projected_bytes=future[position],
                projected_storage_per_month=storage_cost(future[position], price),
            )
    return out


def _rows_per_day(table: DeltaTable, now_ms: int) -> float | None:
    """Rows the pipeline's runs added per day in the last 30 days (since the first commit
    when it is more recent); commits of other writers (tier moves, compaction) left out.
    A merge counts the rows it inserted less those it deleted; of several writes of one
    logical date (a rerun replacing its partition) only the newest counts. None when no
    run of sluiceway wrote the table."""
    start = now_ms - WINDOW_DAYS * _DAY_MS
    history = table.history()
    if not any("sluice.run_id" in commit for commit in history):
        return None
    first = min((int(c["timestamp"]) for c in history), default=start)
    by_date: dict[str, int] = {}
    appended = 0
    for commit in sorted(history, key=lambda c: int(c.get("version", 0))):
        if int(commit["timestamp"]) < start or "sluice.run_id" not in commit:
            continue
        metrics = commit.get("operationMetrics") or {}
        if commit.get("operation") == "MERGE":
            appended += int(metrics.get("num_target_rows_inserted") or 0)
            appended -= int(metrics.get("num_target_rows_deleted") or 0)
        elif (commit.get("operationParameters") or {}).get("mode") == "Overwrite":
            by_date[str(commit.get("sluice.logical_date"))] = int(
                metrics.get("num_added_rows") or 0
            )
        else:
            appended += int(metrics.get("num_added_rows") or 0)
    rows = appended + sum(by_date.values())
    return max(rows, 0) / max((now_ms - max(start, first)) / _DAY_MS, 1.0)


def _bytes_per_row(tables: list[DeltaTable]) -> float:
    size = rows = 0
    for table in tables:
        actions = pa.table(table.get_add_actions(flatten=True))
        size += int(pc.sum(actions["size_bytes"]).as_py() or 0)
        rows += int(pc.sum(actions["num_records"]).as_py() or 0)
    return size / rows if rows else 0.0


def _own_files(actions: pa.Table, pipeline: str | None) -> pa.Table:
    """The add actions of `pipeline`'s partition of a table partitioned by pipeline (the
    shared dead-letter table), so pipelines sharing it do not each count all of it."""
    column = "partition.pipeline"
    if pipeline is None or column not in actions.column_names:
        return actions
    return actions.filter(pc.equal(actions[column], pipeline))


def _open(target: _Target) -> DeltaTable | None:
    options = delta_storage_options(target.uri, target.options)
    with storage_errors(
        f"Could not read {target.label} ({target.uri})",
        target.options,
        advice="Check the path and storage_options (endpoint, region, credentials).",
        context={"table": target.label},
    ):
        if not DeltaTable.is_deltatable(target.uri, storage_options=options):
            return None
        return DeltaTable(target.uri, storage_options=options)


def _run_durations(pipeline: str, state_dir: Path, now: datetime) -> list[float]:
    location = resolve_location(state_dir)
    if not location.exists():
        return []
    since = now - timedelta(days=WINDOW_DAYS)
    durations = []
    for run in RunStore(location).list(pipeline=pipeline, limit=1_000_000):
        started = datetime.fromisoformat(run.started_at)
        started = started if started.tzinfo else started.replace(tzinfo=UTC)
        if started >= since and run.duration_s is not None:
            durations.append(float(run.duration_s))
    return durations


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _resolve(path: str, base_dir: Path) -> str:
    return path if "://" in path else str((base_dir / Path(path).expanduser()).resolve())


__all__ = [
    "CostReport",
    "TableCost",
    "compute_cost",
    "cost_report",
    "daily_growth",
    "inventory_bytes_per_day",
    "projected_bytes",
    "storage_cost",
]
