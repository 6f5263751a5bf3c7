"""The specification document (`gates.doc`) as one self-contained HTML page: inline CSS, the
architecture as an inline SVG drawing, the Mermaid source in a <details>. The page loads
nothing: no script, font, stylesheet or image from anywhere, so it opens offline.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

from sluiceway.gates.doc import (
    Bullets,
    Document,
    Graph,
    Node,
    Subtitle,
    Table,
    Text,
    mermaid_source,
)

BOX_WIDTH = 190
BOX_HEIGHT = 46
COLUMN_GAP = 56
ROW_GAP = 22
MARGIN = 16
LONGEST_LABEL = 28
_FILLS = {
    "source": "#e3f2fd",
    "step": "#f1f8e9",
    "mask": "#fff3e0",
    "checks": "#ede7f6",
    "sink": "#e0f7fa",
    "dead_letter": "#ffebee",
}
_CODE = re.compile(r"`([^`]+)`")
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222;
       padding: 0 1rem; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #ccc; padding: .3rem .55rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
code, pre { font-family: ui-monospace, monospace; background: #f6f6f6; }
pre { padding: .8rem; overflow-x: auto; }
figure { margin: 1rem 0; overflow-x: auto; }
svg text { font: 12px system-ui, sans-serif; }
"""


def render_html(document: Document) -> str:
    """The document as a self-contained HTML page.

    Args:
        document: from `gates.doc.build_document`.

    Returns:
        The HTML text: well formed, no external references.
    """
    title = html.escape(document.title)
    body = [f"<h1>{title}</h1>"]
    for section in document.sections:
        blocks = "\n".join(_HTML[type(block)](block) for block in section.blocks)
        body.append(f"<section>\n<h2>{html.escape(section.title)}</h2>\n{blocks}\n</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )


def _inline(text: str) -> str:
    return _CODE.sub(r"<code>\1</code>", html.escape(text))


def _table(table: Table) -> str:
    head = "".join(f"<th>{_inline(cell)}</th>" for cell in table.headers)
    rows = "\n".join(
        "<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>"
        for row in table.rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


def _bullets(bullets: Bullets) -> str:
    items = "\n".join(f"<li>{_inline(item)}</li>" for item in bullets.items)
    return f"<ul>\n{items}\n</ul>"


def _graph(graph: Graph) -> str:
    mermaid = html.escape(mermaid_source(graph))
    return (
        f"<figure>\n{render_svg(graph)}\n</figure>\n"
        f"<details><summary>Mermaid source</summary>\n<pre><code>{mermaid}</code></pre>\n"
        "</details>"
    )


_HTML: dict[type, Callable[[Any], str]] = {
    Table: _table,
    Text: lambda block: f"<p>{_inline(block.text)}</p>",
    Bullets: _bullets,
    Subtitle: lambda block: f"<h3>{_inline(block.text)}</h3>",
    Graph: _graph,
}


# The SVG drawing: one column per stage, boxes top-down, curved arrows left to right.


def layout(graph: Graph) -> dict[str, tuple[int, int]]:
    """The top-left corner (x, y) of every node: column by `Node.column`, rows in order; the
    dead-letter box takes a row of its own below every other box."""
    rows_used: dict[int, int] = {}
    positions = {}
    for node in graph.nodes:
        row = rows_used.get(node.column, 0)
        if node.kind == "dead_letter":
            row = max(rows_used.values(), default=0)
        rows_used[node.column] = row + 1
        x = MARGIN + node.column * (BOX_WIDTH + COLUMN_GAP)
        positions[node.id] = (x, MARGIN + row * (BOX_HEIGHT + ROW_GAP))
    return positions


def render_svg(graph: Graph) -> str:
    """The graph as an inline SVG element: boxes with labels, arrows between them.

    Args:
        graph: the architecture graph of a document.

    Returns:
        An <svg> element (no external reference), sized to fit every box.
    """
    positions = layout(graph)
    width = max(x for x, _ in positions.values()) + BOX_WIDTH + MARGIN
    height = max(y for _, y in positions.values()) + BOX_HEIGHT + MARGIN
    arrows = [_arrow(positions[e.source], positions[e.target], e.is_dashed) for e in graph.edges]
    boxes = [_box(node, positions[node.id]) for node in graph.nodes]
    marker = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#555"></path></marker></defs>'
    )
    return (
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Architecture diagram">\n'
        f"{marker}\n" + "\n".join(arrows + boxes) + "\n</svg>"
    )


def _box(node: Node, corner: tuple[int, int]) -> str:
    x, y = corner
    label = node.label
    shown = label if len(label) <= LONGEST_LABEL else label[: LONGEST_LABEL - 1] + "…"
    fill = _FILLS.get(node.kind, "#f5f5f5")
    return (
        f'<g class="node {node.kind}" id="node-{node.id}"><title>{html.escape(label)}</title>'
        f'<rect x="{x}" y="{y}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="6" '
        f'fill="{fill}" stroke="#555"></rect>'
        f'<text x="{x + BOX_WIDTH // 2}" y="{y + BOX_HEIGHT // 2 + 4}" text-anchor="middle">'
        f"{html.escape(shown)}</text></g>"
    )


def _arrow(start: tuple[int, int], end: tuple[int, int], is_dashed: bool) -> str:
    x1, y1 = start[0] + BOX_WIDTH, start[1] + BOX_HEIGHT // 2
    x2, y2 = end[0], end[1] + BOX_HEIGHT // 2
    if is_dashed:
        # Rejected rows drop into the gap right of their box, then run along the bottom row.
        lane = x1 + COLUMN_GAP // 3
        shape = f"M {x1} {y1} H {lane} V {y2} H {x2}"
        return (
            f'<path class="edge rejected" d="{shape}" fill="none" stroke="#b71c1c" '
            'stroke-dasharray="5 4" marker-end="url(#arrow)"></path>'
        )
    bend = max(COLUMN_GAP // 2, (x2 - x1) // 3)
    return (
        f'<path class="edge" d="M {x1} {y1} C {x1 + bend} {y1}, {x2 - bend} {y2}, {x2} {y2}" '
        'fill="none" stroke="#555" marker-end="url(#arrow)"></path>'
    )
