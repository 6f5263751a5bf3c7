"""Pages of the `api` source: how to find the next one, and where things are in a page.

Pagination is a table of strategies (`NEXT_URL`): a page number, an offset, a cursor token
taken from the response, or the RFC 5988 `Link` header's rel="next". Each gets the
configuration, the URL just read and the page, and returns the next URL or None.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from sluiceway.core.spec import Model
from sluiceway.sources.api_http import Response

PaginationType = Literal["page", "offset", "cursor", "link"]
_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")
_TYPE_OPTIONS: dict[str, set[str]] = {
    "page": {"page_param", "size_param", "page_size", "first_page"},
    "offset": {"offset_param", "limit_param", "limit"},
    "cursor": {"cursor_path", "cursor_param"},
    "link": set(),
}


class ApiPagination(Model):
    """How to get the next page; only the options of the chosen `type` apply."""

    type: PaginationType = Field(
        description="page: page number + size; offset: offset + limit; cursor: a token from "
        'the response sent back as a param; link: the Link header\'s rel="next".'
    )
    page_param: str = Field("page", description="type page: the page-number parameter.")
    size_param: str = Field("page_size", description="type page: the page-size parameter.")
    page_size: int = Field(100, ge=1, description="type page: records per page.")
    first_page: int = Field(1, ge=0, description="type page: number of the first page.")
    offset_param: str = Field("offset", description="type offset: the offset parameter.")
    limit_param: str = Field("limit", description="type offset: the limit parameter.")
    limit: int = Field(100, ge=1, description="type offset: records per request.")
    cursor_path: str | None = Field(
        None, description="type cursor: dotted path of the next cursor in the response JSON."
    )
    cursor_param: str = Field("cursor", description="type cursor: the parameter it is sent as.")
    max_pages: int = Field(
        10_000, ge=1, description="More pages than this is an error (a server that loops)."
    )

    @model_validator(mode="after")
    def _options_match_type(self) -> ApiPagination:
        foreign = sorted(
            name
            for name in self.model_fields_set - {"type", "max_pages"}
            if name not in _TYPE_OPTIONS[self.type]
        )
        if foreign:
            raise ValueError(f"{', '.join(foreign)} do(es) not apply to pagination '{self.type}'")
        if self.type == "cursor" and not self.cursor_path:
            raise ValueError("pagination 'cursor' needs cursor_path (e.g. meta.next_cursor)")
        return self


@dataclass
class Page:
    """One page as fetched: the URL shown for it, the response, its records or why none."""

    shown: str
    response: Response
    document: Any = None
    records: list[Any] | None = None
    malformed: str | None = None
    quote: str = ""
    """The start of the body, secrets masked, for error messages."""


MISSING: Any = object()


def json_path(document: Any, path: str | None) -> Any:
    """The value at dotted `path` ('data.items', 'items.0.id'), or `MISSING`."""
    if not path:
        return document
    value = document
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def with_params(url: str, params: dict[str, Any]) -> str:
    """`url` with `params` set in its query (a parameter already there keeps its place)."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    query.update({k: _param_text(v) for k, v in params.items()})
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def next_link(header: str | None) -> str | None:
    """The rel="next" target of an RFC 5988 Link header, or None."""
    for target, attributes in _LINK.findall(header or ""):
        for attribute in attributes.split(";"):
            key, _, value = attribute.strip().partition("=")
            if key.strip().lower() == "rel" and "next" in value.strip().strip('"').lower().split():
                return target
    return None


def _next_page(pager: ApiPagination, url: str, page: Page) -> str | None:
    if page.records is not None and len(page.records) < pager.page_size:
        return None
    number = int(_query(url).get(pager.page_param, pager.first_page))
    return with_params(url, {pager.page_param: number + 1})


def _next_offset(pager: ApiPagination, url: str, page: Page) -> str | None:
    if page.records is not None and len(page.records) < pager.limit:
        return None
    offset = int(_query(url).get(pager.offset_param, 0))
    return with_params(url, {pager.offset_param: offset + pager.limit})


def _next_cursor(pager: ApiPagination, url: str, page: Page) -> str | None:
    if page.records is None:
        return None
    token = json_path(page.document, pager.cursor_path)
    if token is MISSING or token in (None, ""):
        return None
    return with_params(url, {pager.cursor_param: token})


def _next_link(pager: ApiPagination, url: str, page: Page) -> str | None:
    headers = {k.lower(): v for k, v in page.response.headers.items()}
    target = next_link(headers.get("link"))
    return urllib.parse.urljoin(url, target) if target else None


NextUrl = Callable[[ApiPagination, str, Page], str | None]
NEXT_URL: dict[str, NextUrl] = {
    "page": _next_page,
    "offset": _next_offset,
    "cursor": _next_cursor,
    "link": _next_link,
}


def host_of(url: str) -> str:
    """The host (and port) of `url`, without user info, lower case."""
    return urllib.parse.urlsplit(url).netloc.rsplit("@", 1)[-1].lower()


def _query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def json_kind(value: Any) -> str:
    """The JSON name of a decoded value's type ('object', 'array', ...), for messages."""
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


__all__ = [
    "MISSING",
    "NEXT_URL",
    "ApiPagination",
    "Page",
    "host_of",
    "json_kind",
    "json_path",
    "next_link",
    "with_params",
]
