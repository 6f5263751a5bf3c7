"""The HTML pieces of the quality report: the page shell and its CSS, tables, facts, cells.

Every stored text reaches a page through `_cell` or `_esc`, which escape it with
`html.escape`; only `Html` values, which the report builds itself, pass through unescaped.
Numbers are formatted here too (`_fmt`, `_seconds`), so tables and charts show them alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any
from urllib.parse import quote


class Html(str):
    """Text that is already HTML: `_cell` passes it through instead of escaping it."""


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2937;margin:0;
background:#f9fafb}main{max-width:1200px;margin:0 auto;padding:8px 24px 40px}
header{background:#111827;padding:10px 24px}header a{color:#e5e7eb;margin-right:16px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}h3{font-size:14px}
table{border-collapse:collapse;background:#fff;width:100%;margin:8px 0}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
td{white-space:pre-wrap;word-break:break-word}a{color:#1d4ed8}
.passed,.succeeded{color:#15803d;font-weight:600}.failed,.error{color:#b91c1c;font-weight:600}
.running{color:#6b7280;font-weight:600}.note{color:#6b7280}
pre.error{background:#fef2f2;border:1px solid #fecaca;padding:8px;white-space:pre-wrap}
code{background:#f3f4f6;padding:0 3px;border-radius:3px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px}dt{color:#6b7280}dd{margin:0}
.pager{margin:8px 0}.pager a{margin:0 6px}
svg.chart{width:100%;max-width:760px;background:#fff;border:1px solid #e5e7eb}
svg.strip{width:100%;max-width:760px;display:block}.legend{margin:2px 0 12px}
"""


def _page(title: str, body: str, *, root: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f'<header><a href="{root}index.html">All runs</a></header>'
        f"<main><h1>{_esc(title)}</h1>{body}</main></body></html>\n"
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric: Any = ()) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_cell(v)}</td>' if i in numeric else f"<td>{_cell(v)}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(pairs: Sequence[tuple[str, Any]]) -> str:
    return "<dl>" + "".join(f"<dt>{_esc(k)}</dt><dd>{_cell(v)}</dd>" for k, v in pairs) + "</dl>"


def _cell(value: Any) -> str:
    return value if isinstance(value, Html) else _esc(_fmt(value))


def _status(status: str) -> Html:
    return Html(f'<span class="{_esc(status)}">{_esc(status)}</span>')


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"
    return str(value)


def _seconds(value: Any) -> str:
    return f"{value:.2f} s" if isinstance(value, int | float) else ""


def _esc(value: Any) -> str:
    return escape(str(value), quote=True)


def _href(name: str) -> str:
    return quote(name, safe="")
