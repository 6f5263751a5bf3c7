"""Inline SVG charts for the report's trend pages: a line chart and a pass/fail strip.

Charts are plain SVG text with no script, sized by a fixed viewBox and scaled by CSS
(`svg.chart`, `svg.strip` in `report_html`). Labels and series names are escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sluiceway.observability.report_html import _esc, _fmt

_WIDTH, _HEIGHT, _LEFT, _RIGHT, _TOP, _BOTTOM = 760, 200, 64, 12, 10, 24
_COLOURS = ("#2563eb", "#16a34a", "#dc2626", "#9333ea")
_STATUS_COLOURS = {"passed": "#16a34a", "succeeded": "#16a34a", "failed": "#dc2626"}
_DOTS_UP_TO = 60


def line_chart(labels: Sequence[str], series: Mapping[str, Sequence[float | None]]) -> str:
    """An inline SVG line chart of one or more series over the same labels (logical dates),
    evenly spaced; a missing value breaks its line."""
    values = [float(v) for s in series.values() for v in s if v is not None]
    if not values:
        return '<p class="note">No values to chart.</p>'
    low, high = min(0.0, *values), max(values)
    high = high if high > low else low + 1
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def x(i: int) -> float:
        return _LEFT + (i / (len(labels) - 1) if len(labels) > 1 else 0.5) * plot_w

    def y(v: float) -> float:
        return _TOP + (1 - (v - low) / (high - low)) * plot_h

    parts = [_axes(labels, low, high)]
    legend = []
    for n, (name, points) in enumerate(series.items()):
        colour = _COLOURS[n % len(_COLOURS)]
        path, move = [], True
        for i, v in enumerate(points):
            if v is None:
                move = True
                continue
            path.append(f"{'M' if move else 'L'}{x(i):.1f} {y(float(v)):.1f}")
            move = False
            if len(labels) <= _DOTS_UP_TO:
                parts.append(
                    f'<circle cx="{x(i):.1f}" cy="{y(float(v)):.1f}" r="2.5" fill="{colour}">'
                    f"<title>{_esc(labels[i])}: {_esc(name)} {_fmt(v)}</title></circle>"
                )
        parts.insert(
            1, f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
        )
        legend.append(f'<span style="color:{colour}">■</span> {_esc(name)}')
    svg = f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img">{"".join(parts)}</svg>'
    return f'{svg}<p class="legend">{" ".join(legend)}</p>'


def _axes(labels: Sequence[str], low: float, high: float) -> str:
    bottom = _HEIGHT - _BOTTOM
    text = 'font-size="11" fill="#555"'
    parts = [
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}" stroke="#999"/>',
        f'<line x1="{_LEFT}" y1="{bottom}" x2="{_WIDTH - _RIGHT}" y2="{bottom}" stroke="#999"/>',
        f'<text x="{_LEFT - 4}" y="{_TOP + 10}" text-anchor="end" {text}>{_fmt(high)}</text>',
        f'<text x="{_LEFT - 4}" y="{bottom}" text-anchor="end" {text}>{_fmt(low)}</text>',
    ]
    if labels:
        parts.append(f'<text x="{_LEFT}" y="{_HEIGHT - 6}" {text}>{_esc(labels[0])}</text>')
    if len(labels) > 1:
        parts.append(
            f'<text x="{_WIDTH - _RIGHT}" y="{_HEIGHT - 6}" text-anchor="end" {text}>'
            f"{_esc(labels[-1])}</text>"
        )
    return "".join(parts)


def status_strip(labels: Sequence[str], statuses: Sequence[str]) -> str:
    """An inline SVG strip, one cell per label: green passed, red failed, grey otherwise."""
    if not labels:
        return ""
    plot_w = _WIDTH - _LEFT - _RIGHT
    step = plot_w / len(labels)
    cells = "".join(
        f'<rect x="{_LEFT + i * step:.2f}" y="2" width="{max(step - 0.5, 0.5):.2f}" height="14" '
        f'fill="{_STATUS_COLOURS.get(status, "#9ca3af")}">'
        f"<title>{_esc(label)}: {_esc(status or 'not run')}</title></rect>"
        for i, (label, status) in enumerate(zip(labels, statuses, strict=True))
    )
    return f'<svg class="strip" viewBox="0 0 {_WIDTH} 18" role="img">{cells}</svg>'
