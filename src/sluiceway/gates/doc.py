"""The Data Pipeline Specification of a spec (`sluice doc`): a document model built from the
spec alone, and its Markdown rendering (`doc_html` renders the same model as HTML).

A document is a list of sections made of blocks (tables, text, bullets, subtitles and the
architecture graph), so the Markdown and the HTML page show exactly the same facts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sluiceway.core.spec import ColumnContract, Pipeline
from sluiceway.core.spec_meta import Inventory
from sluiceway.gates.estimate import CostEstimate, estimate_cost, source_paths

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


@dataclass(frozen=True)
class Node:
    """A box of the architecture graph; `id` is safe for Mermaid (letters and digits)."""

    id: str
    label: str
    kind: str
    column: int


@dataclass(frozen=True)
class Edge:
    """An arrow of the architecture graph; dashed arrows carry rejected rows."""

    source: str
    target: str
    label: str = ""
    is_dashed: bool = False


@dataclass(frozen=True)
class Graph:
    """The data flow: sources → steps → masking → checks → sinks, plus the dead letters."""

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


Block = Table | Text | Bullets | Subtitle | Graph


@dataclass(frozen=True)
class Section:
    """A numbered section of the document."""

    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Document:
    """The specification document of one pipeline."""

    title: str
    sections: tuple[Section, ...]
    estimate: CostEstimate


def build_document(
    pipeline: Pipeline, *, prices: Mapping[str, float], raw: Mapping[str, Any] | None = None
) -> Document:
    """Build the specification document of `pipeline`.

    Args:
        pipeline: the validated spec.
        prices: the price table of the cost estimate (`ops.pricing.load_prices`).
        raw: the spec as plain YAML data, passed on to the pre-flight review.

    Returns:
        The document: nine sections, from name and purpose to risks.
    """
    estimate = estimate_cost(pipeline, prices)
    is_declared = len(estimate.undeclared_sources) < len(pipeline.sources)
    rows_per_day = estimate.rows_per_day if is_declared else None
    sections = (
        Section("1. Name and purpose", (_overview(pipeline),)),
        Section("2. Sources", _sources(pipeline)),
        Section("3. Service levels and quality targets", (_targets(pipeline),)),
        Section("4. Architecture", (build_graph(pipeline),)),
        Section("5. Technology stack", (_stack(pipeline),)),
        Section("6. Data quality checks", _quality(pipeline)),
        Section("7. Partitioning strategy", _partitioning(pipeline, rows_per_day)),
        Section("8. Cost estimate per month", _cost(estimate, prices)),
        Section("9. Risks and mitigations", _risks(pipeline, raw)),
    )
    return Document(f"Data Pipeline Specification: {pipeline.pipeline}", sections, estimate)


def _or_missing(value: object) -> str:
    if value is None or value == "" or value == []:
        return NOT_DECLARED
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _overview(pipeline: Pipeline) -> Table:
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


def _sources(pipeline: Pipeline) -> tuple[Block, ...]:
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


def _targets(pipeline: Pipeline) -> Table:
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


# The architecture graph.


def build_graph(pipeline: Pipeline) -> Graph:
    """The data flow of `pipeline` in the runner's order: read → contract → steps → mask →
    table checks → publish; contract violations and `on_fail: dead_letter` rows go to the
    dead-letter table (dashed arrows)."""
    nodes = [
        Node(f"src{i}", f"{name} ({source.type})", "source", 0)
        for i, (name, source) in enumerate(pipeline.sources.items())
    ]
    edges: list[Edge] = []
    stages = [
        Node(f"step{i}", _step_label(step), "step", 0) for i, step in enumerate(pipeline.steps)
    ]
    if pipeline.pii:
        stages.append(Node("mask", f"PII masking ({', '.join(pipeline.pii)})", "mask", 0))
    if pipeline.checks:
        stages.append(Node("checks", f"table checks ({len(pipeline.checks)})", "checks", 0))
    previous = [node.id for node in nodes]
    for column, stage in enumerate(stages, start=1):
        nodes.append(Node(stage.id, stage.label, stage.kind, column))
        edges += [Edge(p, stage.id) for p in previous]
        previous = [stage.id]
    sink_column = len(stages) + 1
    for i, sink in enumerate(pipeline.sinks):
        nodes.append(Node(f"sink{i}", f"{sink.type}: {_location(sink)}", "sink", sink_column))
        edges += [Edge(p, f"sink{i}") for p in previous]
    rejected = _dead_letter_edges(pipeline)
    if rejected or pipeline.dead_letter:
        where = pipeline.dead_letter.path if pipeline.dead_letter else "state folder"
        nodes.append(Node("dlq", f"dead letter: {where}", "dead_letter", sink_column))
    return Graph(tuple(nodes), tuple(edges + rejected))


def _step_label(step: Any) -> str:
    keys = getattr(step, "keys", None)
    return f"{step.key} on {', '.join(keys)}" if step.key == "dedup" and keys else step.key


def _location(config: Any) -> str:
    return str(getattr(config, "path", None) or getattr(config, "table", None) or config.type)


def _dead_letter_edges(pipeline: Pipeline) -> list[Edge]:
    edges = [
        Edge(f"src{i}", "dlq", "contract violations", is_dashed=True)
        for i, source in enumerate(pipeline.sources.values())
        if source.contract and source.contract.on_violation == "dead_letter"
    ]
    if any(check.on_fail == "dead_letter" for check in pipeline.checks):
        edges.append(Edge("checks", "dlq", "failed row checks", is_dashed=True))
    return edges


def mermaid_label(text: str) -> str:
    """`text` as a quoted Mermaid label: quotes, brackets and markup become entity codes."""
    codes = {"#": "#35;", '"': "#quot;", "[": "#91;", "]": "#93;", "<": "#lt;", ">": "#gt;"}
    codes |= {"|": "#124;", "\n": " "}
    return '"' + "".join(codes.get(char, char) for char in text) + '"'


_MERMAID_SHAPES = {"source": "[({})]", "sink": "[({})]", "dead_letter": "[/{}/]"}


def mermaid_source(graph: Graph) -> str:
    """The graph as a Mermaid `flowchart LR`."""
    lines = ["flowchart LR"]
    for node in graph.nodes:
        shape = _MERMAID_SHAPES.get(node.kind, "[{}]")
        lines.append(f"    {node.id}{shape.format(mermaid_label(node.label))}")
    for edge in graph.edges:
        arrow = "-.->" if edge.is_dashed else "-->"
        label = f"|{mermaid_label(edge.label)}|" if edge.label else ""
        lines.append(f"    {edge.source} {arrow}{label} {edge.target}")
    return "\n".join(lines)


# The technology stack.

_SOURCE_STACK = {
    "files": ("DuckDB file readers", "reads CSV, JSON and Parquet files"),
    "delta": ("Delta Lake via delta-rs", "reads a Delta table"),
    "postgres": ("PostgreSQL via ADBC", "reads tables and queries as Arrow"),
    "postgres_cdc": ("PostgreSQL logical replication (psycopg2)", "streams row changes"),
    "mysql": ("MySQL / MariaDB via connectorx and PyMySQL", "reads tables and queries"),
    "mysql_cdc": ("MySQL binlog via python-mysql-replication", "streams row changes"),
    "kafka": ("Apache Kafka via confluent-kafka", "consumes a topic in a consumer group"),
    "nats": ("NATS JetStream via nats-py", "consumes a stream"),
    "redis_streams": ("Redis Streams via redis-py", "consumes a stream in a consumer group"),
    "api": ("REST API over HTTP (urllib)", "reads JSON pages"),
}
_STEP_STACK = {
    "sql": ("DuckDB SQL", "SQL steps"),
    "enrich_redis": ("Redis via redis-py", "enrichment lookups in Redis hashes"),
    "python": ("Python transforms on Arrow tables", "python steps"),
}
_SINK_STACK = {
    "delta": ("Delta Lake via delta-rs", "ACID table writes with the run's positions"),
    "parquet": ("Parquet via PyArrow", "hive-partitioned Parquet datasets"),
    "postgres": ("PostgreSQL via ADBC", "writes the result table"),
}


def _stack(pipeline: Pipeline) -> Table:
    uses: dict[str, dict[str, list[str]]] = {}

    def use(tech: str, why: str, subject: str = "") -> None:
        subjects = uses.setdefault(tech, {}).setdefault(why, [])
        if subject:
            subjects.append(subject)

    use("DuckDB engine", "contracts, steps, masking and checks run in DuckDB")
    use("Apache Arrow (PyArrow)", "moves batches between sources, DuckDB and sinks")
    for name, source in pipeline.sources.items():
        tech, why = _SOURCE_STACK.get(source.type, (source.type, "source plug-in"))
        if getattr(source, "format", None) == "avro":
            tech, why = "Avro via fastavro", "reads Avro files"
        use(tech, why, name)
        if any(_is_s3(path) for path in source_paths(source)):
            use(_S3, "object storage", name)
    for step in pipeline.steps:
        use(*_STEP_STACK.get(step.key, ("DuckDB SQL", f"{step.key} steps")))
    if pipeline.pii:
        use("PII masking in DuckDB", ", ".join(sorted(set(pipeline.pii.values()))))
    for i, sink in enumerate(pipeline.sinks):
        tech, why = _SINK_STACK.get(sink.type, (sink.type, "sink plug-in"))
        use(tech, why, f"sinks[{i}]")
        if any(
            _is_s3(path)
            for path in [_location(sink), *(t.path for t in getattr(sink, "tiers", []))]
        ):
            use(_S3, "object storage", f"sinks[{i}]")
    use("Delta Lake via delta-rs", "dead-letter table")
    rows = tuple(
        (
            tech,
            "; ".join(
                f"{why} ({', '.join(subjects)})" if subjects else why
                for why, subjects in whys.items()
            ),
        )
        for tech, whys in uses.items()
    )
    return Table(("Technology", "Used for"), rows)


_S3 = "Amazon S3 (or S3-compatible) object storage"


def _is_s3(path: str) -> bool:
    return path.lower().startswith(("s3://", "s3a://"))


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


def _quality(pipeline: Pipeline) -> tuple[Block, ...]:
    blocks: list[Block] = []
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


def _partitioning(pipeline: Pipeline, rows_per_day: float | None) -> tuple[Block, ...]:
    blocks: list[Block] = []
    sink: Any
    for i, sink in enumerate(pipeline.sinks):
        blocks.append(Subtitle(f"sinks[{i}]: {sink.type} {_location(sink)}"))
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
    parts = [f"hot {_location(sink)}"]
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


def _cost(estimate: CostEstimate, prices: Mapping[str, float]) -> tuple[Block, ...]:
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


def _risks(pipeline: Pipeline, raw: Mapping[str, Any] | None) -> tuple[Block, ...]:
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


# Markdown.


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    lines = ["| " + " | ".join(map(_md_cell, table.headers)) + " |"]
    lines.append("|" + "---|" * len(table.headers))
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in table.rows]
    return "\n".join(lines)


_MARKDOWN: dict[type, Callable[[Any], str]] = {
    Table: _md_table,
    Text: lambda block: block.text,
    Bullets: lambda block: "\n".join(f"- {item}" for item in block.items),
    Subtitle: lambda block: f"### {block.text}",
    Graph: lambda block: f"```mermaid\n{mermaid_source(block)}\n```",
}


def render_markdown(document: Document) -> str:
    """The document as Markdown (GitHub flavour: pipe tables, a ```mermaid block).

    Args:
        document: from `build_document`.

    Returns:
        The Markdown text, ending with a newline.
    """
    parts = [f"# {document.title}"]
    for section in document.sections:
        parts.append(f"## {section.title}")
        parts += [_MARKDOWN[type(block)](block) for block in section.blocks]
    return "\n\n".join(parts) + "\n"
