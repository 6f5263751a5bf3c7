"""The `api` source: records of a REST JSON API, page after page, into one DuckDB table.

Each page is one GET (`api_http`: rate limit, retries, Retry-After). The records are found
at `records_path` in the page's JSON, flattened by the declared `fields` (dotted paths;
a missing path is NULL) or kept by their top-level keys, and loaded column-wise through
Arrow as text, so the contract types them exactly as it types a CSV file (`typed=False`).
A row says which page it came from (`__sw_file`: the page URL without secrets) and where
it was on it (`__sw_row`).

Pagination follows a page number, an offset, a cursor taken from the response, or the
`Link: <...>; rel="next"` header. In incremental mode the largest `cursor_field` seen is the
position, committed with the data and sent as `incremental.param` on the next run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from sluiceway.checks.contract import cast_sql
from sluiceway.core import registry
from sluiceway.core.context import PARSE_REJECT_SCHEMA, ROW_FILE, ROW_NUMBER, RunContext, SourceRead
from sluiceway.core.spec import ColumnContract, Model, SourceConfig
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident
from sluiceway.errors import ConfigError, SourceError
from sluiceway.sources.api_http import (
    SECRET_PARAM,
    HttpClient,
    Redactor,
    Response,
    RetryPolicy,
    TokenBucket,
)
from sluiceway.sources.api_paging import (
    MISSING,
    NEXT_URL,
    ApiPagination,
    Page,
    host_of,
    json_kind,
    json_path,
    with_params,
)

RAW_COLUMN = "raw_json"


class ApiRateLimit(Model):
    """A token bucket: `requests_per_s` on average, `burst` at once."""

    requests_per_s: float = Field(gt=0, description="Average requests per second allowed.")
    burst: int = Field(1, ge=1, description="Requests that may go at once after a pause.")


class ApiRetry(Model):
    """Bounded retries with exponential backoff and jitter."""

    max_attempts: int = Field(5, ge=1, description="Attempts per request, the first included.")
    initial_backoff_s: float = Field(0.5, ge=0, description="Backoff before the 2nd attempt.")
    max_backoff_s: float = Field(30.0, ge=0, description="Longest backoff between attempts.")
    max_retry_after_s: float = Field(
        300.0, ge=0, description="A Retry-After longer than this fails the read (run later)."
    )


class ApiIncremental(Model):
    """Read only what changed since the last committed run."""

    param: str = Field(description="Query parameter the last cursor is sent as.")
    cursor_field: str = Field(description="Dotted path of the record's cursor (updated_at).")
    initial_value: str | None = Field(
        None, description="Sent on the first run (nothing committed yet); unset: not sent."
    )


class ApiSourceConfig(SourceConfig):
    """Records of a REST JSON API."""

    type: Literal["api"] = Field("api", description="A REST API answering JSON.")
    url: str = Field(description="The first page's URL (http or https).")
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Query parameters sent with every request."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, repr=False, description="Headers sent with every request."
    )
    bearer_env: str | None = Field(
        None, description="Environment variable holding a token sent as Authorization: Bearer."
    )
    header_env: dict[str, str] = Field(
        default_factory=dict, description="Header name → environment variable holding its value."
    )
    param_env: dict[str, str] = Field(
        default_factory=dict,
        description="Query parameter → environment variable holding its value (an API key).",
    )
    records_path: str | None = Field(
        None, description="Dotted path of the list of records (data.items); unset: the body."
    )
    paginate: ApiPagination | None = Field(None, description="Pagination; unset: one page.")
    rate_limit: ApiRateLimit | None = Field(None, description="Request rate limit.")
    retry: ApiRetry = Field(default_factory=ApiRetry, description="Retries and backoff.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout of each attempt, in seconds.")
    incremental: ApiIncremental | None = Field(None, description="Incremental reads.")
    fields: dict[str, str] | None = Field(
        None,
        description="Column → dotted path in the record (user.address.city); a missing path "
        "is NULL, other keys are dropped. Unset: the record's top-level keys.",
    )
    keep_raw: bool = Field(False, description=f"Also keep each record as JSON in '{RAW_COLUMN}'.")
    on_malformed_page: Literal["fail", "dead_letter"] = Field(
        "fail",
        description="A page that is not JSON or lacks records_path: fail the run, or put its "
        "body in the dead-letter table.",
    )

    @model_validator(mode="after")
    def _is_http(self) -> ApiSourceConfig:
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError("url must start with http:// or https://")
        return self


@dataclass
class _Rows:
    """Records gathered column-wise; a column first seen late is NULL for earlier rows."""

    columns: dict[str, list[str | None]] = field(default_factory=dict)
    pages: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    bad_pages: int = 0
    """Pages dead-lettered whole (malformed): their records were never seen."""
    cursors: list[Any] = field(default_factory=list)
    """The cursor value of every record, as the server wrote it."""

    def add(self, values: dict[str, str | None], page: str, line: int) -> None:
        for name, value in values.items():
            column = self.columns.get(name)
            if column is None:
                column = self.columns[name] = [None] * len(self.lines)
            column.append(value)
        self.pages.append(page)
        self.lines.append(line)
        if len(values) < len(self.columns):
            for column in self.columns.values():
                if len(column) < len(self.lines):
                    column.append(None)

    def reject(self, page: str, line: int | None, raw: bytes, reason: str) -> None:
        self.rejects.append({"file": page, "line": line, "raw": raw, "reason": reason})

    def to_arrow(self, declared: list[str], redactor: Redactor) -> pa.Table:
        """The records as a table of text columns; a record holding text that is not valid
        Unicode (a lone UTF-16 surrogate, which JSON's `\\ud83d` escape can spell) becomes a
        dead letter instead of failing the whole read."""
        try:
            return self._arrow(declared)
        except UnicodeEncodeError:
            self._reject_unencodable(redactor)
            return self._arrow(declared)

    def _arrow(self, declared: list[str]) -> pa.Table:
        names = declared + [n for n in self.columns if n not in declared]
        data = {
            n: pa.array(self.columns.get(n, [None] * len(self.lines)), pa.string()) for n in names
        }
        data[ROW_FILE] = pa.array(self.pages, pa.string())
        data[ROW_NUMBER] = pa.array(self.lines, pa.int64())
        return pa.table(data)

    def _reject_unencodable(self, redactor: Redactor) -> None:
        bad: dict[int, list[str]] = {}
        for name, values in self.columns.items():
            for index, value in enumerate(values):
                if value is not None and not (_is_encodable(value) and _is_encodable(name)):
                    bad.setdefault(index, []).append(
                        name.encode("utf-8", "backslashreplace").decode()
                    )
        for name in [n for n in self.columns if not _is_encodable(n)]:
            del self.columns[name]  # only the rejected records had a value there
        for index, names in sorted(bad.items()):
            record = {n: v[index] for n, v in self.columns.items() if v[index] is not None}
            self.reject(
                self.pages[index],
                self.lines[index],
                _redacted(json.dumps(record).encode(), redactor),  # \ud83d escaped, as sent
                f"field(s) {names} hold a lone UTF-16 surrogate (an unpaired \\uD800-\\uDFFF "
                "escape), which is not valid Unicode text",
            )
        keep = [i for i in range(len(self.lines)) if i not in bad]
        self.columns = {n: [v[i] for i in keep] for n, v in self.columns.items()}
        self.pages = [self.pages[i] for i in keep]
        self.lines = [self.lines[i] for i in keep]


class ApiSource:
    """Reads the pages of an `ApiSourceConfig` into one DuckDB table."""

    def __init__(self, config: ApiSourceConfig) -> None:
        self.config = config

    def read(self, ctx: RunContext, name: str, *, position: dict[str, Any] | None) -> SourceRead:
        """Fetch every page (after `position['cursor']` in incremental mode).

        Raises:
            ConfigError: a credential variable is not set.
            SourceError: a 4xx answer, a malformed page (unless dead-lettered), too many pages.
            TransientError: the server stayed unreachable or failing over every retry.
        """
        client, redactor = self._client(name)
        client.on_retry = lambda attempt, delay, why: ctx.events.emit(
            "retrying",
            step=f"source {name}",
            attempt=attempt,
            max_attempts=self.config.retry.max_attempts,
            next_in_s=delay,
            error=why,
        )
        rows, digest = _Rows(), hashlib.sha256()
        cursor = (position or {}).get("cursor") if self.config.incremental else None
        if self.config.incremental and cursor is None:
            cursor = self.config.incremental.initial_value
        for page in self._pages(client, redactor, name, self._first_url(cursor)):
            digest.update(f"{page.shown}\n".encode() + page.response.body)
            ctx.events.emit("progress", stage=f"reading {name}", done=len(rows.lines), unit="rows")
            self._take(page, rows, redactor)
        typed = self._cursor_contract()
        if typed is not None:
            newest = _newest_by_contract(ctx.engine, [cursor, *rows.cursors], typed)
        else:
            newest = functools.reduce(_later, rows.cursors, cursor)
        if self.config.incremental and rows.bad_pages and newest != cursor:
            ctx.events.emit(
                "cursor_held",
                source=name,
                hint=f"api source '{name}': {rows.bad_pages} page(s) went to the dead letters "
                "unread, so the cursor stays where it was (the next run asks for the same "
                "records again; a merge sink keeps them once) rather than move past records "
                "never loaded",
            )
            newest = cursor
        table = ctx.engine.register_arrow(
            ctx.engine.new_name(f"src_{name}"),
            rows.to_arrow(list(self.config.fields or {}), redactor),
        )
        return SourceRead(
            table=table,
            rows_in=len(rows.lines) + len(rows.rejects),
            parse_rejects=pa.Table.from_pylist(rows.rejects, schema=PARSE_REJECT_SCHEMA),
            position={"cursor": newest} if self.config.incremental else {},
            typed=False,
            fingerprint=digest.hexdigest()[:20],
        )

    def _client(self, name: str) -> tuple[HttpClient, Redactor]:
        headers = {"Accept": "application/json", **self.config.headers}
        if self.config.bearer_env:
            headers["Authorization"] = f"Bearer {_env(self.config.bearer_env, 'bearer_env', name)}"
        for header, variable in self.config.header_env.items():
            headers[header] = _env(variable, f"header_env.{header}", name)
        secrets = [v for k, v in headers.items() if SECRET_PARAM.search(k)]
        secrets += [headers[h] for h in self.config.header_env]
        secrets += [str(v) for k, v in self.config.params.items() if SECRET_PARAM.search(k)]
        secrets += [_env(v, f"param_env.{k}", name) for k, v in self.config.param_env.items()]
        # Masked in every URL shown: the configured credentials (and, by name, any other
        # credential a server writes into a next link), never the pager's own parameter.
        cursor_param = getattr(self.config.paginate, "cursor_param", None)
        paging: set[str] = {cursor_param} if isinstance(cursor_param, str) else set()
        in_url = urllib.parse.parse_qsl(urllib.parse.urlsplit(self.config.url).query)
        url_secrets = {k: v for k, v in in_url if SECRET_PARAM.search(k) and k not in paging}
        secrets += url_secrets.values()
        secret_params = [
            *self.config.param_env,
            *filter(SECRET_PARAM.search, self.config.params),
            *url_secrets,
        ]
        tokens = [s.split(" ", 1)[1] for s in secrets if " " in s]  # "Bearer <token>"
        redactor = Redactor([*secrets, *tokens], secret_params, shown_params=paging)
        retry = self.config.retry
        limit = self.config.rate_limit
        client = HttpClient(
            headers=headers,
            timeout_s=self.config.timeout_s,
            retry=RetryPolicy(
                retry.max_attempts,
                retry.initial_backoff_s,
                retry.max_backoff_s,
                retry.max_retry_after_s,
            ),
            redactor=redactor,
            label=f"api source '{name}'",
            bucket=TokenBucket(limit.requests_per_s, limit.burst) if limit else None,
            secret_headers=frozenset(
                k.lower() for k in headers if SECRET_PARAM.search(k) or k in self.config.header_env
            ),
            home=self.config.url,
        )
        return client, redactor

    def _first_url(self, cursor: Any) -> str:
        params: dict[str, Any] = dict(self.config.params)
        params.update({k: os.environ[v] for k, v in self.config.param_env.items()})
        if self.config.incremental and cursor is not None:
            params[self.config.incremental.param] = cursor
        pager = self.config.paginate
        if pager and pager.type == "page":
            params.update({pager.page_param: pager.first_page, pager.size_param: pager.page_size})
        elif pager and pager.type == "offset":
            params.update({pager.offset_param: 0, pager.limit_param: pager.limit})
        return with_params(self.config.url, params)

    def _pages(
        self, client: HttpClient, redactor: Redactor, name: str, url: str | None
    ) -> Iterator[Page]:
        pager = self.config.paginate
        max_pages = pager.max_pages if pager else 1
        seen: set[str] = set()
        count = 0
        while url is not None:
            count += 1
            if url in seen:
                raise SourceError(
                    f"api source '{name}': the server pointed back to a page already read "
                    f"({redactor.url(url)}); check the pagination settings (cursor_path, "
                    "page_param) or the server's next links",
                    context={"source": name, "page": redactor.url(url)},
                )
            if count > max_pages:
                raise SourceError(
                    f"api source '{name}': more than paginate.max_pages ({max_pages}) pages; "
                    "raise max_pages, or check that the server honours the pagination params",
                    context={"source": name, "page": redactor.url(url)},
                )
            seen.add(url)
            response = client.get(url)
            page = self._parse(response, redactor.url(url))
            page.quote = redactor.text(response.body[:200].decode("utf-8", "replace"))
            yield page
            url = self._with_credentials(NEXT_URL[pager.type](pager, url, page)) if pager else None

    def _with_credentials(self, url: str | None) -> str | None:
        """A next-page URL on the configured host carries the param_env values, whatever
        the server wrote in it; another host never gets them."""
        if url is None or not self.config.param_env or host_of(url) != host_of(self.config.url):
            return url
        return with_params(url, {k: os.environ[v] for k, v in self.config.param_env.items()})

    def _parse(self, response: Response, shown: str) -> Page:
        page = Page(shown, response)
        try:
            page.document = json.loads(response.body, parse_float=ExactFloat)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            page.malformed = f"the page is not JSON ({exc})"
            return page
        found = json_path(page.document, self.config.records_path)
        if found is MISSING:
            page.malformed = f"records_path '{self.config.records_path}' is not in the page"
        elif found is None:
            page.records = []
        elif not isinstance(found, list):
            where = (
                f"records_path '{self.config.records_path}'"
                if self.config.records_path
                else "the body"
            )
            page.malformed = f"{where} holds a JSON {json_kind(found)}, not a list of records"
        else:
            page.records = found
        return page

    def _cursor_contract(self) -> ColumnContract | None:
        """The contract of the cursor's column when it types it as a number, date or time:
        cursor values are then ordered as the contract casts them, and a value it cannot
        cast (`"zzz"`, which would sort after every date as text) never moves the cursor."""
        incremental, contract = self.config.incremental, self.config.contract
        if incremental is None or contract is None:
            return None
        fields = self.config.fields
        column = (
            next((c for c, path in fields.items() if path == incremental.cursor_field), None)
            if fields is not None
            else incremental.cursor_field
        )
        spec = contract.columns.get(column or "")
        return spec if spec is not None and spec.type in _ORDERED_TYPES else None

    def _take(self, page: Page, rows: _Rows, redactor: Redactor) -> None:
        """Add the page's records (and their cursor values) to `rows`. What goes to the dead
        letters is redacted: a server may echo the credentials it was sent (a debug error
        page), and a dead letter is kept, shown and copied where secrets must not go."""
        if page.records is None:
            if self.config.on_malformed_page == "fail":
                raise SourceError(
                    f"malformed page {page.shown}: {page.malformed}; the body starts with "
                    f"{page.quote!r}. Fix records_path, "
                    "or set on_malformed_page: dead_letter to keep going",
                    context={"page": page.shown},
                )
            rows.reject(
                page.shown, None, _redacted(page.response.body, redactor), str(page.malformed)
            )
            rows.bad_pages += 1
            return
        for line, record in enumerate(page.records, start=1):
            if not isinstance(record, dict):
                raw = _redacted(json.dumps(record, ensure_ascii=False).encode(), redactor)
                rows.reject(
                    page.shown,
                    line,
                    raw,
                    f"the record is a JSON {json_kind(record)}, not an object",
                )
                continue
            rows.add(self._flatten(record), page.shown, line)
            if self.config.incremental:
                value = json_path(record, self.config.incremental.cursor_field)
                if value is not None and value is not MISSING:
                    rows.cursors.append(value)

    def _flatten(self, record: dict[str, Any]) -> dict[str, str | None]:
        if self.config.fields is None:
            values = {key: as_text(value) for key, value in record.items()}
        else:
            values = {
                column: as_text(json_path(record, path))
                for column, path in self.config.fields.items()
            }
        if self.config.keep_raw:
            values[RAW_COLUMN] = json.dumps(record, ensure_ascii=False)
        return values


def _is_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _redacted(raw: bytes, redactor: Redactor) -> bytes:
    """`raw` without the source's secrets (kept byte for byte when none is in it)."""
    text = raw.decode("utf-8", "replace")
    shown = redactor.text(text)
    return raw if shown == text else shown.encode()


def as_text(value: Any) -> str | None:
    """A JSON value as column text: strings as they are, others as JSON; missing/null → None."""
    if value is None or value is MISSING:
        return None
    return _SCALAR_TEXT.get(type(value), _json_text)(value)


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class ExactFloat(float):
    """A JSON number with a fraction or an exponent: a float that keeps the digits the
    server wrote, so that a decimal column gets them exactly (a float rounds them past ~17
    significant digits: 99999999999999999999.99 would land as 1e+20). Used as a float
    elsewhere (cursor comparisons, nested values written back as JSON)."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> ExactFloat:
        number = super().__new__(cls, text)
        number.text = text
        return number


_SCALAR_TEXT: dict[type, Callable[[Any], str]] = {
    str: str,
    int: str,
    ExactFloat: lambda v: v.text,  # the server's digits
    float: repr,  # as JSON writes it (1.5, 1e+100), without the encoder's overhead
    bool: lambda v: "true" if v else "false",
}


def _later(current: Any, candidate: Any) -> Any:
    """The larger cursor: numbers compare as numbers, anything else as text."""
    if candidate is None or candidate is MISSING:
        return current
    if current is None:
        return candidate
    numbers = all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in (current, candidate)
    )
    if numbers:
        return max(current, candidate)
    return candidate if str(candidate) > str(current) else current


_ORDERED_TYPES = frozenset(
    {"integer", "bigint", "double", "float", "decimal", "date", "timestamp", "timestamp_ntz"}
)


def _newest_by_contract(engine: DuckDBEngine, values: list[Any], spec: ColumnContract) -> Any:
    """The value (as the server wrote it) that is largest once cast as the contract casts
    its column; values it cannot cast (or NaN, infinities) are passed over. None if none."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    texts = pa.array([as_text(v) for v in known], pa.string())
    view = engine.register_arrow(
        engine.new_name("cursors"),
        pa.table({"v": texts, "i": pa.array(range(len(known)), pa.int64())}),
    )
    try:
        cast = cast_sql("v", spec)
        finite = f" AND isfinite({cast})" if spec.type in ("double", "float") else ""
        row = engine.fetch_one(
            f"SELECT i FROM {quote_ident(view)} WHERE {cast} IS NOT NULL{finite} "
            f"ORDER BY {cast} DESC, i LIMIT 1",
            purpose="the newest cursor value",
        )
    finally:
        engine.unregister(view)
    return None if row is None else known[int(row[0])]


def _env(variable: str, option: str, source: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(
            f"api source '{source}': environment variable {variable} (named by {option}) is "
            f"not set; export it before the run",
            context={"source": source, "variable": variable},
        )
    return value


registry.register("source", "api", ApiSourceConfig, ApiSource)

__all__ = ["ApiSource", "ApiSourceConfig", "as_text"]
