"""The production gates of the pre-flight review: is the pipeline safe to run in production?
Data quality, idempotency, cost, observability, reliability.

Like the readiness checks, each gate returns its findings, or one pass finding saying what
it verified.
"""

from __future__ import annotations

import math
from typing import Any

from sluiceway.core.project import Project
from sluiceway.core.spec import Pipeline, SinkConfig
from sluiceway.core.spec_meta import parse_volume
from sluiceway.gates.findings import Finding, Status
from sluiceway.gates.idempotency import date_column, idempotency, key_columns
from sluiceway.gates.readiness import contract_missing, sources_without_contract

ROWS_NEED_PARTITIONS = 1_000_000
BYTES_NEED_PARTITIONS = 1e9
BYTES_NEED_TIERS = 1e12
DAYS_PER_YEAR = 365


def finding(check: str, status: Status, reason: str, fix: str = "", where: str = "") -> Finding:
    """A gate finding."""
    return Finding("gate", check, status, reason, fix if status != "pass" else "", where)


def verdict(check: str, problems: list[Finding], passed: str) -> list[Finding]:
    """`problems`, or one pass finding saying what was verified when there are none."""
    return problems or [finding(check, "pass", passed)]


def gate_findings(pipeline: Pipeline, project: Project | None = None) -> list[Finding]:
    """The findings of the five production gates, in `GATES` order."""
    return [
        *data_quality(pipeline),
        *idempotency(pipeline),
        *cost(pipeline),
        *observability(pipeline, project),
        *reliability(pipeline),
    ]


def data_quality(pipeline: Pipeline) -> list[Finding]:
    """Contracts everywhere, an error-level table check, and bad rows routed."""
    check = "data quality"
    problems: list[Finding] = []
    if bare := sources_without_contract(pipeline):
        problems.append(contract_missing(check, bare, finding))
    blocking = [c for c in pipeline.checks if c.severity == "error"]
    if not blocking:
        # A failing error check stops a stream (the batch is retried, unacknowledged), so
        # streams usually keep warn-level checks and rely on the contract's dead letters.
        status: Status = "warn" if pipeline.mode == "stream" else "fail"
        problems.append(
            finding(
                check,
                status,
                f"checks: none of the {len(pipeline.checks)} table check(s) has severity error; "
                "nothing blocks a bad batch from being published",
                f"add to checks: {{not_null: {{column: {key_columns(pipeline)[0]}}}}} "
                "(severity error is the default)",
                "checks",
            )
        )
    for name, source in pipeline.sources.items():
        if source.contract is not None and source.contract.on_violation != "dead_letter":
            problems.append(_violation_routing(name, source.contract.on_violation))
    return verdict(
        check,
        problems,
        f"every source has a contract routing bad rows to dead letters; {len(blocking)} "
        "error-level table check(s) guard publishing",
    )


def _violation_routing(source: str, on_violation: str) -> Finding:
    where = f"sources.{source}.contract.on_violation"
    if on_violation == "warn":
        return finding(
            "data quality",
            "fail",
            f"{where} is warn: rows breaking the contract would be published",
            f"set {where}: dead_letter",
            where,
        )
    return finding(
        "data quality",
        "warn",
        f"{where} is fail: one bad row stops the whole pipeline",
        f"set {where}: dead_letter (bad rows go to the dead-letter table, the rest publish)",
        where,
    )


def cost(pipeline: Pipeline) -> list[Finding]:
    """Large tables are partitioned, very large ones tiered; streams get compacted."""
    check = "cost"
    rows, size = bytes_per_day(pipeline)
    growth = pipeline.cost.growth_per_year if pipeline.cost else None
    yearly = projected_year_bytes(size, growth)
    deltas = [(i, s) for i, s in enumerate(pipeline.sinks) if s.type == "delta"]
    files = [(i, s) for i, s in enumerate(pipeline.sinks) if hasattr(s, "partition_by")]
    problems: list[Finding] = []
    if rows > ROWS_NEED_PARTITIONS or size > BYTES_NEED_PARTITIONS:
        problems += [
            finding(
                check,
                "fail",
                f"sinks[{i}].partition_by is empty while the sources declare {rows:,.0f} "
                f"rows/day ({size / 1e9:.2f} GB/day): every read and rewrite scans the table",
                f"add sinks[{i}].partition_by: [{date_column(pipeline)}] (a date column)",
                f"sinks[{i}].partition_by",
            )
            for i, sink in files
            if not _attr(sink, "partition_by")
        ]
    if yearly > BYTES_NEED_TIERS:
        problems += [
            finding(
                check,
                "warn",
                f"sinks[{i}] grows to about {yearly / 1e12:.1f} TB in a year with no tiers",
                f"add sinks[{i}].tiers: [{{name: cold, path: s3://archive/..., after: 90d}}] "
                "(tiers move whole partitions: partition_by is needed)",
                f"sinks[{i}].tiers",
            )
            for i, sink in deltas
            if not _attr(sink, "tiers")
        ]
    if pipeline.mode == "stream":
        problems += [
            finding(
                check,
                "warn",
                f"sinks[{i}] is a Delta table written in micro-batches: many small files",
                f"schedule `sluice optimize <spec> --sink {i}` (e.g. hourly); set "
                f"sinks[{i}].zorder_by for clustering",
                f"sinks[{i}]",
            )
            for i, _ in deltas
        ]
    return verdict(
        check,
        problems,
        f"declared {rows:,.0f} rows/day, {size / 1e9:.2f} GB/day, about "
        f"{yearly / 1e12:.2f} TB in a year; tables are partitioned and tiered as needed",
    )


def _attr(sink: SinkConfig, name: str) -> Any:
    return getattr(sink, name, None)


def projected_year_bytes(bytes_per_day: float, growth_per_year: float | None) -> float:
    """Bytes landing over the next year when the daily volume grows by `growth_per_year`
    (a multiplier) continuously: the daily volume integrated over 365 days."""
    if not growth_per_year or math.isclose(growth_per_year, 1.0):
        return bytes_per_day * DAYS_PER_YEAR
    return bytes_per_day * DAYS_PER_YEAR * (growth_per_year - 1) / math.log(growth_per_year)


def observability(pipeline: Pipeline, project: Project | None = None) -> list[Finding]:
    """Someone answers for the pipeline, it says what it is, staleness is detected, and a
    failure reaches an alert route of the project (metrics and structured logs are built in:
    every run records its metrics in the run store, `sluice serve` exposes them)."""
    check = "observability"
    problems: list[Finding] = []
    routes = alert_routes(pipeline, project)
    if not routes:
        problems.append(
            finding(
                check,
                "warn" if project is None else "fail",
                "no alert route receives this pipeline's failures"
                + (" (no sluice.yaml project found)" if project is None else ""),
                "add to sluice.yaml: alerts: [{name: on-call, type: webhook, url: "
                "${ALERT_WEBHOOK}, on: [run_failed, check_failed]}] (docs/alerts.md)",
                "alerts",
            )
        )
    if not pipeline.owner:
        problems.append(
            finding(
                check,
                "fail",
                "owner is not declared: nobody is alerted when it breaks",
                "add owner: team@example.com",
                "owner",
            )
        )
    if not pipeline.description:
        problems.append(
            finding(
                check,
                "warn",
                "description is not declared",
                "add description: What the pipeline produces and for whom",
                "description",
            )
        )
    has_freshness_check = any(c.key == "freshness" for c in pipeline.checks)
    if not (pipeline.sla and pipeline.sla.freshness) and not has_freshness_check:
        problems.append(
            finding(
                check,
                "warn",
                "neither sla.freshness nor a freshness check: stale data goes unnoticed",
                "add sla.freshness: 1d, or checks: [{freshness: {column: updated_at, "
                "max_age: 1d}}]",
                "sla.freshness",
            )
        )
    watch = pipeline.sla.freshness if pipeline.sla and pipeline.sla.freshness else None
    return verdict(
        check,
        problems,
        f"owner {pipeline.owner}; described; staleness watched by "
        + (f"sla.freshness {watch}" if watch else "a freshness check")
        + f"; failures alert {', '.join(routes)}; metrics in the run store",
    )


def alert_routes(pipeline: Pipeline, project: Project | None) -> list[str]:
    """Names of the project's alert routes that receive this pipeline's run failures."""
    if project is None:
        return []
    return [
        route.name
        for route in project.alerts
        if "run_failed" in route.on
        and (not route.pipelines or pipeline.pipeline in route.pipelines)
    ]


def reliability(pipeline: Pipeline) -> list[Finding]:
    """Failed runs are retried and bounded; poison messages and bad rows have somewhere to go."""
    check = "reliability"
    problems = _batch_bounds(pipeline) if pipeline.mode == "batch" else []
    unrouted = [
        name
        for name, source in pipeline.sources.items()
        if source.contract is None or source.contract.on_violation != "dead_letter"
    ]
    if unrouted:
        problems.append(
            finding(
                check,
                "warn",
                f"source(s) {', '.join(unrouted)} have no dead-letter route for bad rows",
                f"set sources.{unrouted[0]}.contract.on_violation: dead_letter",
                f"sources.{unrouted[0]}.contract.on_violation",
            )
        )
    deliveries = {
        name: getattr(source, "max_deliveries", None)
        for name, source in pipeline.sources.items()
        if getattr(source, "streaming", False)
    }
    passed = (
        f"retries {pipeline.retries.max_attempts} attempt(s), timeout {pipeline.timeout}"
        if pipeline.mode == "batch" and pipeline.retries
        else "redeliveries bounded: "
        + ", ".join(f"{n} max_deliveries {d}" for n, d in deliveries.items())
    )
    return verdict(check, problems, f"{passed}; every contract routes bad rows to dead letters")


def _batch_bounds(pipeline: Pipeline) -> list[Finding]:
    out: list[Finding] = []
    if pipeline.retries is None:
        out.append(
            finding(
                "reliability",
                "fail",
                "retries is not declared: a transient error (network, throttling) fails the run",
                "add retries: {max_attempts: 3, backoff: 30s}",
                "retries",
            )
        )
    elif pipeline.retries.max_attempts < 2:
        out.append(
            finding(
                "reliability",
                "warn",
                "retries.max_attempts is 1: a transient error (network, throttling) fails "
                "the run with no retry",
                "set retries.max_attempts: 3",
                "retries.max_attempts",
            )
        )
    if pipeline.timeout is None:
        out.append(
            finding(
                "reliability",
                "warn",
                "timeout is not declared: a hung run holds its slot forever",
                "add timeout: 2h",
                "timeout",
            )
        )
    return out


def bytes_per_day(pipeline: Pipeline) -> tuple[float, float]:
    """(rows per day, stored bytes per day) summed over the sources with a declared volume."""
    rows = size = 0.0
    for source in pipeline.sources.values():
        if source.inventory is None or source.inventory.volume is None:
            continue
        volume = parse_volume(source.inventory.volume)
        daily = volume.stored_bytes_per_day(source.inventory.row_bytes)
        if math.isfinite(daily) and math.isfinite(volume.rows_per_day or 0.0):
            rows += volume.rows_per_day or 0.0  # infinite volumes fail the readiness cost
            size += daily
    return rows, size
