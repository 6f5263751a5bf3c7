"""A monthly cost estimate computed from what a spec DECLARES: source volumes, retention, the
sinks' storage tiers, the budget and the growth. Nothing is measured; every figure follows
from the spec and the price table (`sluiceway.ops.pricing`).

Formulas (a month is 365/12 days, a GB is 10^9 bytes):

- bytes per day = Σ over sources with `inventory.volume` of the declared bytes per day, or
  rows per day × `inventory.row_bytes` (default 100). Every row read is assumed to land in
  every sink: an upper bound for pipelines that filter or aggregate.
- storage of a sink = bytes per day × the days each tier holds, within `compliance.retention`
  (default 365d): hot (the sink's path) holds ages [0, first tier's `after`), each tier
  [its `after`, the next one's), the last tier up to the retention. Price per GB-month:
  `storage_price(prices, tier, is_remote=is_remote(path))`, where the hot tier of a local
  path is priced as `local` (block storage), as `sluice cost` does.
- compute = rows per month / `rows_per_compute_hour` × `compute_hour`.
- transfer = bytes per month read from remote sources (a `path` on an object store) ×
  `transfer_gb`; databases, brokers and APIs are assumed to sit in the same network.
- projected total after 12 months = total × `cost.growth_per_year` (every line grows with
  the volume).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sluiceway.core.durations import parse_duration
from sluiceway.core.spec import Pipeline, SourceConfig
from sluiceway.core.spec_meta import DEFAULT_ROW_BYTES, parse_volume
from sluiceway.core.storage import is_remote
from sluiceway.errors import ConfigError
from sluiceway.ops.pricing import storage_price

DAYS_PER_MONTH = 365 / 12
BYTES_PER_GB = 1e9
DEFAULT_RETENTION_DAYS = 365.0
_SECONDS_PER_DAY = 86_400.0

Category = Literal["storage", "compute", "transfer"]


@dataclass(frozen=True)
class CostLine:
    """One priced line of the estimate.

    Attributes:
        category: storage, compute or transfer.
        item: what is priced, e.g. 'sinks[0] hot (lake/gold/churn)'.
        quantity: the amount priced, in `unit`.
        unit: 'GB-month', 'compute hours' or 'GB'.
        unit_price: price per unit (currency of the estimate).
        cost: quantity × unit_price.
    """

    category: Category
    item: str
    quantity: float
    unit: str
    unit_price: float
    cost: float


@dataclass(frozen=True)
class CostEstimate:
    """The estimated monthly cost of a pipeline at its declared volumes.

    Attributes:
        lines: every priced line (storage per sink and tier, compute, transfer).
        total: sum of the lines, per month.
        currency: currency of the prices and the budget.
        budget: `cost.budget_per_month`, None when not declared.
        growth_per_year: `cost.growth_per_year`, None when not declared.
        projected_total_12m: the monthly total after one year of growth.
        rows_per_day: declared rows per day over all sources.
        bytes_per_day: declared bytes per day over all sources.
        retention_days: days of data kept (`compliance.retention`, default 365).
        assumptions: the assumptions behind the figures, in words.
        undeclared_sources: sources without `inventory.volume` (counted as zero).
    """

    lines: tuple[CostLine, ...]
    total: float
    currency: str
    budget: float | None
    growth_per_year: float | None
    projected_total_12m: float
    rows_per_day: float
    bytes_per_day: float
    retention_days: float
    assumptions: tuple[str, ...]
    undeclared_sources: tuple[str, ...]

    @property
    def is_over_budget(self) -> bool:
        """True when a budget is declared and the monthly total exceeds it."""
        return self.budget is not None and self.total > self.budget

    @property
    def is_projected_over_budget(self) -> bool:
        """True when a budget is declared and the total after a year of growth exceeds it."""
        return self.budget is not None and self.projected_total_12m > self.budget

    def of(self, category: Category) -> float:
        """The monthly cost of one category."""
        return sum(line.cost for line in self.lines if line.category == category)


@dataclass(frozen=True)
class _Flow:
    """Declared daily volume of one source."""

    name: str
    rows_per_day: float
    bytes_per_day: float
    is_remote: bool


def estimate_cost(pipeline: Pipeline, prices: Mapping[str, float]) -> CostEstimate:
    """Estimate the monthly cost of `pipeline` at its declared volumes.

    Args:
        pipeline: the validated spec.
        prices: the price table, e.g. from `sluiceway.ops.pricing.load_prices`.

    Returns:
        The priced lines, the total, the budget comparison and the 12-month projection.

    Raises:
        KeyError: `prices` lacks a key the formulas need (load_prices always has them).
        ConfigError: `rows_per_compute_hour` is 0, or a declared volume is infinite.
    """
    flows = [_flow(name, source) for name, source in pipeline.sources.items()]
    declared = [flow for flow in flows if flow is not None]
    bytes_per_day = sum(flow.bytes_per_day for flow in declared)
    rows_per_day = sum(flow.rows_per_day for flow in declared)
    retention_days = _retention_days(pipeline)
    lines = [
        *_storage_lines(pipeline, prices, bytes_per_day, retention_days),
        _compute_line(prices, rows_per_day),
        _transfer_line(prices, [flow for flow in declared if flow.is_remote]),
    ]
    total = sum(line.cost for line in lines)
    cost = pipeline.cost
    growth = cost.growth_per_year if cost else None
    undeclared = tuple(
        name for name, flow in zip(pipeline.sources, flows, strict=True) if flow is None
    )
    return CostEstimate(
        lines=tuple(lines),
        total=total,
        currency=cost.currency if cost else "USD",
        budget=cost.budget_per_month if cost else None,
        growth_per_year=growth,
        projected_total_12m=total * (growth or 1.0),
        rows_per_day=rows_per_day,
        bytes_per_day=bytes_per_day,
        retention_days=retention_days,
        assumptions=_assumptions(pipeline, retention_days, undeclared, growth),
        undeclared_sources=undeclared,
    )


def _flow(name: str, source: SourceConfig) -> _Flow | None:
    inventory = source.inventory
    if inventory is None or inventory.volume is None:
        return None
    volume = parse_volume(inventory.volume)
    row_bytes = inventory.row_bytes or DEFAULT_ROW_BYTES
    stored = volume.stored_bytes_per_day(row_bytes)
    rows = volume.rows_per_day if volume.rows_per_day is not None else stored / row_bytes
    if not (math.isfinite(stored) and math.isfinite(rows)):
        raise ConfigError(
            f"sources.{name}.inventory.volume '{inventory.volume}' is too large to compute a "
            "cost with; write a realistic rate, e.g. 40GB/day"
        )
    return _Flow(name, rows, stored, any(is_remote(path) for path in source_paths(source)))


def source_paths(source: SourceConfig) -> list[str]:
    """The file or table locations a source reads (empty for databases, brokers, APIs)."""
    path: Any = getattr(source, "path", None)
    if isinstance(path, str):
        return [path]
    return [str(p) for p in path] if isinstance(path, list) else []


def _retention_days(pipeline: Pipeline) -> float:
    compliance = pipeline.compliance
    if compliance is None or compliance.retention is None:
        return DEFAULT_RETENTION_DAYS
    return parse_duration(compliance.retention).total_seconds() / _SECONDS_PER_DAY


def tier_spans(sink: Any, retention_days: float) -> list[tuple[str, str, float]]:
    """(tier, location, days held) of a sink: hot first, then its `tiers` by age.

    Each tier holds the ages from its `after` to the next tier's (the last one up to the
    retention); spans are clipped to the retention, so a tier past it holds 0 days.
    """
    location = str(getattr(sink, "path", None) or getattr(sink, "table", None) or sink.type)
    tiers = list(getattr(sink, "tiers", None) or [])
    starts = [0.0] + [parse_duration(t.after).total_seconds() / _SECONDS_PER_DAY for t in tiers]
    ends = [*starts[1:], retention_days]
    names = [("hot", location)] + [(t.name, t.path) for t in tiers]
    return [
        (name, path, max(0.0, min(end, retention_days) - min(start, retention_days)))
        for (name, path), start, end in zip(names, starts, ends, strict=True)
    ]


def _storage_lines(
    pipeline: Pipeline, prices: Mapping[str, float], bytes_per_day: float, retention_days: float
) -> list[CostLine]:
    lines = []
    for index, sink in enumerate(pipeline.sinks):
        for span, location, days in tier_spans(sink, retention_days):
            remote = is_remote(location) if hasattr(sink, "path") else False
            tier = span if span != "hot" or remote else "local"
            price = storage_price(prices, tier, is_remote=remote)
            gb = bytes_per_day * days / BYTES_PER_GB
            item = f"sinks[{index}] {tier} ({location}, {days:g} days)"
            lines.append(CostLine("storage", item, gb, "GB-month", price, gb * price))
    return lines


def _compute_line(prices: Mapping[str, float], rows_per_day: float) -> CostLine:
    if prices["rows_per_compute_hour"] <= 0:
        raise ConfigError(
            "price 'rows_per_compute_hour' is 0: it is the number of rows one compute hour "
            "processes and must be > 0; fix it in --prices or cost.prices"
        )
    hours = rows_per_day * DAYS_PER_MONTH / prices["rows_per_compute_hour"]
    price = prices["compute_hour"]
    item = f"{rows_per_day * DAYS_PER_MONTH:,.0f} rows per month"
    return CostLine("compute", item, hours, "compute hours", price, hours * price)


def _transfer_line(prices: Mapping[str, float], remote: list[_Flow]) -> CostLine:
    gb = sum(flow.bytes_per_day for flow in remote) * DAYS_PER_MONTH / BYTES_PER_GB
    names = ", ".join(flow.name for flow in remote) or "no remote source"
    price = prices["transfer_gb"]
    return CostLine("transfer", f"read from {names}", gb, "GB", price, gb * price)


def _assumptions(
    pipeline: Pipeline, retention_days: float, undeclared: tuple[str, ...], growth: float | None
) -> tuple[str, ...]:
    has_retention = bool(pipeline.compliance and pipeline.compliance.retention)
    notes = [
        f"A month is {DAYS_PER_MONTH:g} days; 1 GB = 10^9 bytes.",
        "Every row read lands in every sink (an upper bound when steps filter or aggregate).",
        f"Rows without inventory.row_bytes take {DEFAULT_ROW_BYTES} bytes each.",
        f"Storage is the steady state: {retention_days:g} days of data kept "
        + ("(compliance.retention)." if has_retention else "(default; no compliance.retention)."),
        "Dead-letter rows, Delta logs and old file versions awaiting vacuum are not priced.",
        "Transfer is priced only for sources read from an object store; databases, brokers "
        "and APIs are assumed to be in the same network.",
        f"After 12 months every line is × {growth:g} (cost.growth_per_year)."
        if growth
        else "No cost.growth_per_year: the 12-month projection equals today's total.",
    ]
    if undeclared:
        notes.append(f"Sources without inventory.volume count as zero: {', '.join(undeclared)}.")
    return tuple(notes)
