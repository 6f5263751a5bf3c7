"""The sections of a specification document (`sluice doc`) and the blocks they are made of:
tables, text, bullets and subtitles, built from the spec alone (the architecture graph and
the technology stack are in `doc_graph`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sluiceway.core.spec import ColumnContract, Pipeline
from sluiceway.core.spec_meta import Inventory
from sluiceway.gates.estimate import CostEstimate

NOT_DECLARED = "not declared"
SMALL_TABLE_ROWS_PER_DAY = 1_000_000


@dataclass(frozen=True)
class Table:
    """A table: header cells and rows of text cells."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text."""

    text: str


@dataclass(frozen=True)
class Bullets:
    """A bullet list."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Subtitle:
    """A heading inside a section."""

    text: str


SectionBlock = Table | Text | Bullets | Subtitle


def _or_missing(value: object) -> str:
    if value is None or value == "" or value == []:
        return NOT_DECLARED
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _schedule(pipeline: Pipeline) -> str:
    schedule = pipeline.schedule
    if schedule is None:
        return "not scheduled (run by hand, `sluice run --all` or another orchestrator)"
    zone = f" {schedule.timezone}" if schedule.timezone else " (the project's time zone)"
    return f"cron `{schedule.cron}`{zone}, catchup {schedule.catchup}"


def overview(pipeline: Pipeline) -> Table:
    mode: str = pipeline.mode
    if mode == "stream":
        bounds = pipeline.stream
        mode += f" (micro-batches ≤ {bounds.max_batch_rows} rows or {bounds.max_batch_seconds:g} s)"
    retries = pipeline.retries
    rows = [
        ("Pipeline", pipeline.pipeline),
        ("Description", _or_missing(pipeline.description)),
        ("Owner", _or_missing(pipeline.owner)),
        ("Layer", _or_missing(pipeline.layer)),
        ("Mode", mode),
        ("Schedule", _schedule(pipeline)),
        ("Depends on", ", ".join(pipeline.depends_on) or "nothing"),
        ("Timeout", _or_missing(pipeline.timeout)),
        (
            "Retries",
            f"{retries.max_attempts} attempts, backoff {retries.backoff}"
            if retries
            else NOT_DECLARED,
        ),
        ("Spec fingerprint", pipeline.spec_hash()),
    ]
    return Table(("Item", "Value"), tuple(rows))


def sources(pipeline: Pipeline) -> tuple[SectionBlock, ...]:
    rows = tuple(
        (
            name,
            source.type,
            *(_inventory_field(source.inventory, key) for key in _INVENTORY_COLUMNS),
            str(len(source.contract.columns)) if source.contract else "no contract",
        )
        for name, source in pipeline.sources.items()
    )
    headers = ("Source", "Type", "Volume", "Freshness", "Access pattern", "Owner")
    primary = Text(f"Primary source (feeds `input`): {pipeline.primary_source}.")
    return (Table((*headers, "Contract columns"), rows), primary)


_INVENTORY_COLUMNS = ("volume", "freshness", "access_pattern", "owner")


def _inventory_field(inventory: Inventory | None, key: str) -> str:
    return _or_missing(getattr(inventory, key) if inventory else None)


def targets(pipeline: Pipeline) -> Table:
    sla, quality, compliance = pipeline.sla, pipeline.quality, pipeline.compliance
    rows = [
        ("SLA", "latency", _or_missing(sla and sla.latency)),
        ("SLA", "freshness", _or_missing(sla and sla.freshness)),
        ("SLA", "availability", _or_missing(sla and sla.availability)),
        ("SLA", "throughput", _or_missing(sla and sla.throughput)),
        ("Quality", "completeness", _share(quality.completeness if quality else None)),
        ("Quality", "pass rate", _share(quality.pass_rate if quality else None)),
        ("Compliance", "retention", _or_missing(compliance and compliance.retention)),
        ("Compliance", "regulations", _or_missing(compliance and compliance.regulations)),
        ("Compliance", "data-subject key", _or_missing(compliance and compliance.subject_key)),
    ]
    return Table(("Area", "Target", "Value"), tuple(rows))


def _share(value: float | None) -> str:
    return NOT_DECLARED if value is None else f"{value:.2%}"


# Data quality checks.

_RULES: dict[str, Callable[[ColumnContract], str | None]] = {
    "required": lambda c: "required" if c.required else None,
    "min": lambda c: None if c.min is None else f"≥ {c.min:g}",
    "max": lambda c: None if c.max is None else f"≤ {c.max:g}",
    "values": lambda c: None if c.values is None else "in " + ", ".join(map(str, c.values)),
    "regex": lambda c: None if c.regex is None else f"matches {c.regex}",
    "format": lambda c: None if c.format is None else f"format {c.format}",
    "strftime": lambda c: None if c.strftime is None else f"parsed as {c.strftime}",
    "min_length": lambda c: None if c.min_length is None else f"length ≥ {c.min_length}",
    "max_length": lambda c: None if c.max_length is None else f"length ≤ {c.max_length}",
}
_PII_METHODS = {
    "hash": "hex SHA-256 of salt and value",
    "hmac": "HMAC-SHA256 token: deterministic, joins with other masked tables",
    "truncate_ip": "IPv4 truncated to /24, IPv6 to /48",
    "email": "local part hashed, domain kept",
    "redact": "replaced by '[REDACTED]'",
    "encrypt": "AES-256-GCM token, reversible with the key (reveals equality)",
}
_CHECK_OPTIONS = {"severity", "on_fail", "name"}


def quality(pipeline: Pipeline) -> tuple[SectionBlock, ...]:
    blocks: list[SectionBlock] = []
    for name, source in pipeline.sources.items():
        blocks.append(Subtitle(f"Contract of source {name}"))
        if source.contract is None:
            blocks.append(Text(f"No contract: {NOT_DECLARED}; every column passes as read."))
            continue
        rows = tuple(
            (column, _type_of(spec), "yes" if spec.nullable else "no", _rules_of(spec))
            for column, spec in source.contract.columns.items()
        )
        blocks.append(Table(("Column", "Type", "Nullable", "Rules"), rows))
        blocks.append(
            Text(
                f"Rows breaking the contract: {source.contract.on_violation}; columns outside "
                f"it: {source.contract.evolution}."
            )
        )
    blocks.append(Subtitle("Table checks"))
    blocks.append(_checks(pipeline) if pipeline.checks else Text(f"Table checks: {NOT_DECLARED}."))
    blocks.append(Subtitle("PII masking"))
    if pipeline.pii:
        masked = tuple((c, str(m), _PII_METHODS.get(m, m)) for c, m in pipeline.pii.items())
        blocks.append(Table(("Column", "Method", "What the sinks receive"), masked))
    else:
        blocks.append(Text(f"PII columns: {NOT_DECLARED}; every column is written in clear."))
    return tuple(blocks)


def _type_of(spec: ColumnContract) -> str:
    return f"decimal({spec.precision},{spec.scale})" if spec.type == "decimal" else spec.type


def _rules_of(spec: ColumnContract) -> str:
    rules = [rule(spec) for rule in _RULES.values()]
    return "; ".join(rule for rule in rules if rule) or "—"


def _checks(pipeline: Pipeline) -> Table:
    rows = []
    for check in pipeline.checks:
        options = check.model_dump(mode="json", exclude_defaults=True, exclude=_CHECK_OPTIONS)
        arguments = ", ".join(f"{key}={value}" for key, value in options.items())
        label = f"{check.key} ({check.name})" if check.name else check.key
        on_fail = check.on_fail or ("fail" if check.severity == "error" else "warn")
        rows.append((label, arguments or "—", check.severity, on_fail))
    return Table(("Check", "Arguments", "Severity", "On fail"), tuple(rows))


# Partitioning.


def partitioning(pipeline: Pipeline, rows_per_day: float | None) -> tuple[SectionBlock, ...]:
    blocks: list[SectionBlock] = []
    sink: Any
    for i, sink in enumerate(pipeline.sinks):
        blocks.append(Subtitle(f"sinks[{i}]: {sink.type} {location(sink)}"))
        if not hasattr(sink, "partition_by"):
            blocks.append(Text("Not a file table: partitioning is the database's concern."))
            continue
        tiers = getattr(sink, "tiers", [])
        rows = (
            ("partition_by", _or_missing(sink.partition_by) if sink.partition_by else "none"),
            ("mode", str(sink.mode)),
            ("tiers", _tiers_text(sink) if tiers else "none (everything stays hot)"),
            ("z-order", ", ".join(getattr(sink, "zorder_by", [])) or "none"),
        )
        blocks += [Table(("Setting", "Value"), rows), Bullets(_rationale(sink, rows_per_day))]
    return tuple(blocks)


def _tiers_text(sink: Any) -> str:
    parts = [f"hot {location(sink)}"]
    parts += [f"{tier.name} {tier.path} after {tier.after}" for tier in sink.tiers]
    return " → ".join(parts)


def _rationale(sink: Any, rows_per_day: float | None) -> tuple[str, ...]:
    columns = ", ".join(sink.partition_by)
    why = {
        "overwrite_partition": f"overwrite_partition by {columns} makes backfills idempotent: "
        "a rerun of a date replaces that date's partitions only, never the rest.",
        "append": "append commits each input once (its idempotency key is recorded with the "
        "commit), so a retried batch is skipped, not written twice.",
        "merge": f"merge on {', '.join(getattr(sink, 'merge_keys', []))} upserts: a rerun "
        "writes the same keys again and converges.",
    }
    if sink.type == "parquet":
        why["append"] = (
            "append writes files named after the run's idempotency key: a retried run "
            "rewrites the same files instead of adding them twice (a full re-read under a new "
            "key still adds its rows again)."
        )
    notes = [why.get(sink.mode, f"mode {sink.mode}.")]
    if getattr(sink, "replace_where", None):
        notes[0] = (
            f"overwrite_partition with replace_where `{sink.replace_where}` replaces exactly "
            "the rows the predicate selects, so reruns and backfills converge."
        )
    notes.append(_partition_note(sink.partition_by, rows_per_day))
    if getattr(sink, "tiers", None):
        age_column = sink.tier_by or sink.partition_by[0]
        notes.append(
            f"Tiers age partitions by {age_column}: `sluice tier` moves those older than each "
            "tier's `after` to cheaper storage; readers still see one table."
        )
    if getattr(sink, "zorder_by", None):
        notes.append(
            f"Z-order by {', '.join(sink.zorder_by)}: `sluice optimize` clusters rows so "
            "filters on these columns skip whole files."
        )
    return tuple(notes)


def _partition_note(partition_by: list[str], rows_per_day: float | None) -> str:
    declared = NOT_DECLARED if rows_per_day is None else f"{rows_per_day:,.0f} rows/day declared"
    if not partition_by:
        if rows_per_day is not None and rows_per_day > SMALL_TABLE_ROWS_PER_DAY:
            return (
                f"No partitioning with {declared}: above ~1M rows/day, partition by a date "
                "column so readers prune files and retention drops whole partitions."
            )
        return f"No partitioning: fine below ~1M rows/day ({declared}); compact with optimize."
    note = (
        f"Partitioned by {', '.join(partition_by)}: queries filtering on {partition_by[0]} read "
        "only matching partitions; retention and tiering drop or move whole partitions."
    )
    if any("hour" in column for column in partition_by):
        note += " Hourly partitions make 24 per day: run `sluice optimize` to compact small files."
    return note


# Cost and risks.


def cost(estimate: CostEstimate, prices: Mapping[str, float]) -> tuple[SectionBlock, ...]:
    cur = estimate.currency
    lines = tuple(
        (
            line.category,
            line.item,
            f"{line.quantity:,.4f} {line.unit}",
            f"{line.unit_price:.6g} {cur}",
            f"{_money(line.cost)} {cur}",
        )
        for line in estimate.lines
    )
    summary = (
        ("Total per month", f"{_money(estimate.total)} {cur}"),
        ("Budget per month", _budget(estimate)),
        (
            "Growth per year",
            f"× {estimate.growth_per_year:g}" if estimate.growth_per_year else NOT_DECLARED,
        ),
        ("Projected per month after 12 months", f"{_money(estimate.projected_total_12m)} {cur}"),
    )
    volume = (
        f"Declared volume: {estimate.rows_per_day:,.0f} rows/day, "
        f"{estimate.bytes_per_day / 1e9:,.3f} GB/day; retention {estimate.retention_days:g} days."
    )
    used = tuple((key, f"{value:,.10g}") for key, value in sorted(prices.items()))
    return (
        Table(("Category", "Item", "Quantity", "Unit price", "Monthly cost"), lines),
        Table(("Figure", "Value"), summary),
        Text(volume),
        Subtitle("Assumptions"),
        Bullets(estimate.assumptions),
        Subtitle("Prices"),
        Table(("Price", "Value"), used),
    )


def _money(value: float) -> str:
    return f"{value:,.2f}" if value == 0 or abs(value) >= 0.01 else f"{value:.6f}"


def _budget(estimate: CostEstimate) -> str:
    if estimate.budget is None:
        return NOT_DECLARED
    budget = f"{_money(estimate.budget)} {estimate.currency}"
    if estimate.is_over_budget:
        return f"{budget}: OVER by {_money(estimate.total - estimate.budget)}"
    if estimate.is_projected_over_budget:
        return f"{budget}: within today, over after 12 months of growth"
    return f"{budget}: within budget"


def risks(pipeline: Pipeline, raw: Mapping[str, Any] | None) -> tuple[SectionBlock, ...]:
    from sluiceway.gates.review import review

    findings = [f for f in review(pipeline, raw=raw).findings if f.status != "pass"]
    if not findings:
        return (Text("No risks: every check of the pre-flight review passed."),)
    order = {"fail": 0, "warn": 1}
    rows = tuple(
        (f.status, f.check, f.reason, f.fix or "—", f.where or "—")
        for f in sorted(findings, key=lambda f: order[f.status])
    )
    note = Text("From the pre-flight review (`sluice check`): every warning and failure.")
    return (note, Table(("Severity", "Check", "Risk", "Mitigation", "Where"), rows))


def location(config: Any) -> str:
    """Where a source or sink lives: its path, else its table, else its type."""
    return str(getattr(config, "path", None) or getattr(config, "table", None) or config.type)
