"""Inline SVG for the dashboard: the row-accounting waterfall, step timings, the lineage graph.

Plain SVG text without script; every label goes through `_esc`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sluiceway.observability.report_html import _esc, _fmt

_BAR_COLOURS = {"in": "#2563eb", "written": "#16a34a"}
_LOSS_COLOUR = "#dc2626"


def waterfall(stages: Sequence[tuple[str, int]]) -> str:
    """A waterfall of row counts: the first stage and the last are totals, the ones between
    are losses hanging from the running total (in → rejected → ... → written)."""
    total = max(stages[0][1], stages[-1][1], 1) if stages else 1
    width, left, bar_h, gap = 760, 120, 22, 8
    plot = width - left - 80
    parts, level = [], stages[0][1] if stages else 0
    for i, (name, count) in enumerate(stages):
        is_total = i in (0, len(stages) - 1)
        start = 0 if is_total else level - count
        if not is_total:
            level -= count
        x = left + plot * max(start, 0) / total
        w = max(plot * count / total, 1 if count else 0)
        y = 4 + i * (bar_h + gap)
        colour = _BAR_COLOURS.get(name, _LOSS_COLOUR)
        parts.append(
            f'<text x="{left - 6}" y="{y + 15}" text-anchor="end" font-size="12">{_esc(name)}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}">'
            f"<title>{_esc(name)}: {_esc(_fmt(count))}</title></rect>"
            f'<text x="{x + w + 4:.1f}" y="{y + 15}" font-size="12">{_esc(_fmt(count))}</text>'
        )
    height = 8 + len(stages) * (bar_h + gap)
    return (
        f'<svg class="waterfall" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="row accounting">{"".join(parts)}</svg>'
    )


def timing_bars(steps: Sequence[tuple[str, float]]) -> str:
    """Horizontal bars of step durations in seconds."""
    if not steps:
        return '<p class="note">No step timings recorded.</p>'
    longest = max((s for _, s in steps), default=0) or 1
    width, left, bar_h = 760, 200, 16
    parts = []
    for i, (name, seconds) in enumerate(steps):
        y = 4 + i * (bar_h + 6)
        w = max((width - left - 80) * seconds / longest, 1)
        parts.append(
            f'<text x="{left - 6}" y="{y + 12}" text-anchor="end" font-size="12">{_esc(name)}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#6366f1"/>'
            f'<text x="{left + w + 4:.1f}" y="{y + 12}" font-size="12">{seconds:.3f} s</text>'
        )
    height = 8 + len(steps) * (bar_h + 6)
    return f'<svg class="timings" viewBox="0 0 {width} {height}" role="img">{"".join(parts)}</svg>'


def lineage_graph(pipelines: Sequence[str], edges: Sequence[tuple[str, str, str]]) -> str:
    """Pipelines as boxes in columns by depth, an arrow for each dataset one writes and
    another reads (labelled with the dataset). Cycles are drawn, not followed."""
    if not pipelines:
        return '<p class="note">No pipelines in the project.</p>'
    depth = _depths(pipelines, edges)
    columns: dict[int, list[str]] = {}
    for name in pipelines:
        columns.setdefault(depth[name], []).append(name)
    box_w, box_h, col_w, row_h = 180, 34, 260, 70
    where = {
        name: (20 + d * col_w, 20 + r * row_h)
        for d, names in columns.items()
        for r, name in enumerate(names)
    }
    parts = [
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto"><path d="M0 0L10 5L0 10z" fill="#6b7280"/></marker></defs>'
    ]
    for up, down, label in edges:
        (x1, y1), (x2, y2) = where[up], where[down]
        sx, sy, ex, ey = x1 + box_w, y1 + box_h / 2, x2, y2 + box_h / 2
        parts.append(
            f'<line x1="{sx}" y1="{sy}" x2="{ex}" y2="{ey}" stroke="#6b7280" '
            f'marker-end="url(#arrow)"><title>{_esc(label)}</title></line>'
            f'<text x="{(sx + ex) / 2:.0f}" y="{(sy + ey) / 2 - 4:.0f}" font-size="10" '
            f'text-anchor="middle" fill="#6b7280">{_esc(_short(label))}</text>'
        )
    for name, (x, y) in where.items():
        parts.append(
            f'<a href="/pipelines/{_esc(name)}"><rect class="node" x="{x}" y="{y}" '
            f'width="{box_w}" height="{box_h}" rx="6" fill="#eff6ff" stroke="#2563eb"/>'
            f'<text x="{x + box_w / 2}" y="{y + 21}" text-anchor="middle" font-size="13">'
            f"{_esc(name)}</text></a>"
        )
    width = 40 + (max(depth.values()) + 1) * col_w
    height = 40 + max(len(n) for n in columns.values()) * row_h
    return (
        f'<svg class="lineage" viewBox="0 0 {width} {height}" width="{width}" role="img">'
        f"{''.join(parts)}</svg>"
    )


def _depths(pipelines: Sequence[str], edges: Sequence[tuple[str, str, str]]) -> dict[str, int]:
    """Longest distance from a pipeline without upstream; at most len(pipelines) rounds, so
    a cycle ends instead of looping."""
    depth = dict.fromkeys(pipelines, 0)
    for _ in range(len(pipelines)):
        changed = False
        for up, down, _label in edges:
            if depth[down] < depth[up] + 1 and depth[up] + 1 < len(pipelines):
                depth[down], changed = depth[up] + 1, True
        if not changed:
            break
    return depth


def _short(label: str) -> str:
    return label if len(label) <= 36 else "…" + label[-35:]
