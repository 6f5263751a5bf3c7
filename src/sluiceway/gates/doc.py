"""The Data Pipeline Specification of a spec (`sluice doc`): a document model built from the
spec alone, and its Markdown rendering (`doc_html` renders the same model as HTML).

A document is a list of sections made of blocks (tables, text, bullets, subtitles and the
architecture graph), so the Markdown and the HTML page show exactly the same facts. The
sections are built in `doc_sections`, the graph and the stack in `doc_graph`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sluiceway.core.spec import Pipeline
from sluiceway.gates import doc_sections as sections_of
from sluiceway.gates.doc_graph import (
    Edge,
    Graph,
    Node,
    build_graph,
    mermaid_label,
    mermaid_source,
    stack,
)
from sluiceway.gates.doc_sections import NOT_DECLARED, Bullets, Subtitle, Table, Text
from sluiceway.gates.estimate import CostEstimate, estimate_cost

__all__ = [
    "NOT_DECLARED",
    "Block",
    "Bullets",
    "Document",
    "Edge",
    "Graph",
    "Node",
    "Section",
    "Subtitle",
    "Table",
    "Text",
    "build_document",
    "build_graph",
    "mermaid_label",
    "mermaid_source",
    "render_markdown",
]

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
        Section("1. Name and purpose", (sections_of.overview(pipeline),)),
        Section("2. Sources", sections_of.sources(pipeline)),
        Section("3. Service levels and quality targets", (sections_of.targets(pipeline),)),
        Section("4. Architecture", (build_graph(pipeline),)),
        Section("5. Technology stack", (stack(pipeline),)),
        Section("6. Data quality checks", sections_of.quality(pipeline)),
        Section("7. Partitioning strategy", sections_of.partitioning(pipeline, rows_per_day)),
        Section("8. Cost estimate per month", sections_of.cost(estimate, prices)),
        Section("9. Risks and mitigations", sections_of.risks(pipeline, raw)),
    )
    return Document(f"Data Pipeline Specification: {pipeline.pipeline}", sections, estimate)


# Markdown.


_CODE_SPAN = re.compile(r"(`[^`\n]+`)")


def _md_inline(text: str) -> str:
    """`text` on one line with `<` and `>` as entities outside code spans: spec text (a
    description, a path) never becomes raw HTML in a Markdown viewer."""
    parts = _CODE_SPAN.split(text.replace("\n", " "))
    return "".join(
        part if index % 2 else part.replace("<", "&lt;").replace(">", "&gt;")
        for index, part in enumerate(parts)
    )


def _md_cell(text: str) -> str:
    return _md_inline(text.replace("\\", "\\\\").replace("|", "\\|"))


def _md_table(table: Table) -> str:
    lines = ["| " + " | ".join(map(_md_cell, table.headers)) + " |"]
    lines.append("|" + "---|" * len(table.headers))
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in table.rows]
    return "\n".join(lines)


_MARKDOWN: dict[type, Callable[[Any], str]] = {
    Table: _md_table,
    Text: lambda block: _md_inline(block.text),
    Bullets: lambda block: "\n".join(f"- {_md_inline(item)}" for item in block.items),
    Subtitle: lambda block: f"### {_md_inline(block.text)}",
    Graph: lambda block: f"```mermaid\n{mermaid_source(block)}\n```",
}


def render_markdown(document: Document) -> str:
    """The document as Markdown (GitHub flavour: pipe tables, a ```mermaid block).

    Args:
        document: from `build_document`.

    Returns:
        The Markdown text, ending with a newline.
    """
    parts = [f"# {_md_inline(document.title)}"]
    for section in document.sections:
        parts.append(f"## {_md_inline(section.title)}")
        parts += [_MARKDOWN[type(block)](block) for block in section.blocks]
    return "\n\n".join(parts) + "\n"
