"""The architecture of a specification document (`sluice doc`): the data-flow graph of a
spec, its Mermaid source, and the technology stack the spec uses."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sluiceway.core.spec import Pipeline
from sluiceway.gates.doc_sections import Table, location
from sluiceway.gates.estimate import source_paths


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
    entry = _entry_stages(pipeline, [stage.id for stage in stages])
    previous = [
        node.id
        for node, name in zip(nodes, pipeline.sources, strict=True)
        if entry.get(name) is None
    ]
    for column, stage in enumerate(stages, start=1):
        nodes.append(Node(stage.id, stage.label, stage.kind, column))
        joined = [
            f"src{i}" for i, name in enumerate(pipeline.sources) if entry.get(name) == stage.id
        ]
        edges += [Edge(p, stage.id) for p in [*previous, *joined]]
        previous = [stage.id]
    sink_column = len(stages) + 1
    for i, sink in enumerate(pipeline.sinks):
        nodes.append(Node(f"sink{i}", f"{sink.type}: {location(sink)}", "sink", sink_column))
        edges += [Edge(p, f"sink{i}") for p in previous]
    rejected = _dead_letter_edges(pipeline)
    if rejected or pipeline.dead_letter:
        where = pipeline.dead_letter.path if pipeline.dead_letter else "state folder"
        nodes.append(Node("dlq", f"dead letter: {where}", "dead_letter", sink_column))
    return Graph(tuple(nodes), tuple(edges + rejected))


def _entry_stages(pipeline: Pipeline, stage_ids: list[str]) -> dict[str, str | None]:
    """Where each source enters the flow: the primary source at the first stage, a secondary
    source at the first step whose SQL names it (else the first stage); None: no stage."""
    first = stage_ids[0] if stage_ids else None
    entry: dict[str, str | None] = {}
    for name in pipeline.sources:
        if name == pipeline.primary_source:
            entry[name] = None
            continue
        named = re.compile(rf"\b{re.escape(name)}\b")
        entry[name] = next(
            (
                f"step{i}"
                for i, step in enumerate(pipeline.steps)
                if step.key == "sql" and named.search(str(getattr(step, "query", "")))
            ),
            first,
        )
    return entry


def _step_label(step: Any) -> str:
    keys = getattr(step, "keys", None)
    return f"{step.key} on {', '.join(keys)}" if step.key == "dedup" and keys else step.key


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
    """`text` as a quoted Mermaid label: quotes, brackets, markup and backticks (which could
    close the Markdown fence) become entity codes."""
    codes = {"#": "#35;", '"': "#quot;", "[": "#91;", "]": "#93;", "<": "#lt;", ">": "#gt;"}
    codes |= {"|": "#124;", "`": "#96;", "\n": " "}
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


def stack(pipeline: Pipeline) -> Table:
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
            _is_s3(path) for path in [location(sink), *(t.path for t in getattr(sink, "tiers", []))]
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
