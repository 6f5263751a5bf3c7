"""The dashboard's page shell, navigation and small HTML helpers.

Stored text reaches a page only through `_esc` / `_cell` (html.escape); `Html` marks markup
the dashboard built itself. The CSS is the quality report's plus a few rules of its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from sluiceway.observability.report_html import _CSS, Html, _esc

_UI_CSS = """
header a.brand{font-weight:700;color:#fff}nav.sub{margin:8px 0}
svg.waterfall,svg.timings{width:100%;max-width:760px;background:#fff;border:1px solid #e5e7eb}
svg.lineage{background:#fff;border:1px solid #e5e7eb;max-width:100%}
.late{color:#b45309;font-weight:600}.ok{color:#15803d}.tag{background:#fef3c7;
border-radius:3px;padding:0 4px;font-size:12px}form.inline{display:inline}
input[type=search]{width:320px;padding:4px}button{padding:4px 12px;cursor:pointer}
.outcome{background:#ecfdf5;border:1px solid #a7f3d0;padding:8px}
"""


def page(title: str, body: str) -> str:
    """A whole HTML page with the navigation bar."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)} · sluice ui</title><style>{_CSS}{_UI_CSS}</style></head><body>"
        '<header><a class="brand" href="/">sluice</a><a href="/">Pipelines</a>'
        '<a href="/lineage">Lineage</a><a href="/catalog">Catalog</a></header>'
        f"<main><h1>{_esc(title)}</h1>{body}</main></body></html>\n"
    )


def link(path: str, text: Any, **query: Any) -> Html:
    """An `<a>` to `path` (segments already quoted) with an escaped text and query."""
    params = {k: v for k, v in query.items() if v not in (None, "")}
    href = path + ("?" + urlencode(params) if params else "")
    return Html(f'<a href="{_esc(href)}">{_esc(text)}</a>')


def segment(name: str) -> str:
    """`name` quoted as one URL path segment."""
    return quote(name, safe="")


def pager(path: str, page_no: int, pages: int, **query: Any) -> str:
    """Previous / next links for a paginated list."""
    if pages <= 1:
        return ""
    parts = [f"page {page_no} of {pages}"]
    if page_no > 1:
        parts.insert(0, link(path, "← newer", page=page_no - 1, **query))
    if page_no < pages:
        parts.append(link(path, "older →", page=page_no + 1, **query))
    return f'<p class="pager">{" ".join(parts)}</p>'


def when(instant: datetime | None) -> str:
    """A UTC instant as 'YYYY-MM-DD HH:MM:SS UTC' ('' when unknown)."""
    return instant.strftime("%Y-%m-%d %H:%M:%S UTC") if instant else ""


def age(seconds: float | None) -> str:
    """A duration in the largest fitting unit: '45 s', '12 min', '5.0 h', '3.2 d'."""
    if seconds is None:
        return ""
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.0f} {unit}" if unit != "h" else f"{seconds / size:.1f} h"
    return f"{seconds / 86400:.1f} d"
