"""The `api` source against a real HTTP server started by the test (http.server in a thread)
that paginates, fails, throttles, stalls and lies the way real APIs do."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable

import sluiceway
from sluiceway.core.context import RunContext, SourceRead
from sluiceway.errors import ConfigError, SourceError, TransientError
from sluiceway.sources.api import ApiSource, ApiSourceConfig
from sluiceway.sources.api_http import retry_after_seconds
from sluiceway.sources.api_paging import next_link

Reply = tuple[int, dict[str, str], bytes]
Route = Callable[[dict[str, str], dict[str, str]], Reply]


@dataclass
class Hit:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float


@dataclass
class ApiServer:
    """A local HTTP server: routes by path, and a log of every request it received."""

    base: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def hits_on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]


def _handler(server: ApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parts.query))
            headers = {k.lower(): v for k, v in self.headers.items()}
            server.hits.append(Hit(parts.path, query, headers, time.monotonic()))
            route = server.routes.get(parts.path)
            status, extra, body = route(query, headers) if route else (404, {}, b"no route")
            try:
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **extra}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on a stalled answer: that is the test

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def api() -> Iterator[ApiServer]:
    server = ApiServer(base="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    httpd.shutdown()
    httpd.server_close()


def ok(payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return 200, headers or {}, json.dumps(payload).encode()


def items(ids: range) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"item-{i}"} for i in ids]


def read(
    ctx: RunContext, spec: dict[str, Any], *, position: dict[str, Any] | None = None
) -> tuple[SourceRead, list[dict[str, Any]]]:
    config = ApiSourceConfig.model_validate({"type": "api", **spec})
    result = ApiSource(config).read(ctx, "things", position=position)
    rows = ctx.engine.fetch_arrow(f'SELECT * FROM "{result.table}" ORDER BY __sw_file, __sw_row')
    return result, rows.to_pylist()


# --- pagination ------------------------------------------------------------------------


def test_page_pagination_reads_every_page_and_labels_rows_with_their_page(
    ctx: RunContext, api: ApiServer
) -> None:
    data = items(range(1, 6))

    def pages(query: dict[str, str], _: dict[str, str]) -> Reply:
        page, size = int(query["page"]), int(query["per_page"])
        return ok({"data": {"items": data[(page - 1) * size : page * size]}})

    api.routes["/things"] = pages
    result, rows = read(
        ctx,
        {
            "url": api.url("/things"),
            "params": {"sort": "id"},
            "records_path": "data.items",
            "paginate": {"type": "page", "size_param": "per_page", "page_size": 2},
        },
    )
    assert sorted(int(r["id"]) for r in rows) == [1, 2, 3, 4, 5]
    assert [h.query["page"] for h in api.hits] == ["1", "2", "3"]
    assert all(h.query["sort"] == "id" for h in api.hits)
    assert result.rows_in == 5 and result.typed is False
    third = next(r for r in rows if r["id"] == "5")
    assert third["__sw_file"] == api.url("/things?sort=id&page=3&per_page=2")
    assert third["__sw_row"] == 1
    assert {r["__sw_row"] for r in rows if "page=1&" in r["__sw_file"]} == {1, 2}


def test_offset_pagination_stops_at_the_first_short_page(ctx: RunContext, api: ApiServer) -> None:
    data = items(range(1, 5))
    api.routes["/things"] = lambda q, _: ok(
        {"results": data[int(q["offset"]) : int(q["offset"]) + int(q["limit"])]}
    )
    result, rows = read(
        ctx,
        {
            "url": api.url("/things"),
            "records_path": "results",
            "paginate": {"type": "offset", "limit": 2},
        },
    )
    assert sorted(int(r["id"]) for r in rows) == [1, 2, 3, 4]
    assert [h.query["offset"] for h in api.hits] == ["0", "2", "4"]
    assert result.rows_in == 4


def test_cursor_pagination_sends_back_the_token_from_the_response(
    ctx: RunContext, api: ApiServer
) -> None:
    chain = {"": ("c1", [1, 2]), "c1": ("c2", [3]), "c2": (None, [4, 5])}

    def pages(query: dict[str, str], _: dict[str, str]) -> Reply:
        token, ids = chain[query.get("after", "")]
        return ok({"items": items(range(ids[0], ids[-1] + 1)), "meta": {"next": token}})

    api.routes["/things"] = pages
    _, rows = read(
        ctx,
        {
            "url": api.url("/things"),
            "records_path": "items",
            "paginate": {"type": "cursor", "cursor_path": "meta.next", "cursor_param": "after"},
        },
    )
    assert sorted(int(r["id"]) for r in rows) == [1, 2, 3, 4, 5]
    assert [h.query.get("after") for h in api.hits] == [None, "c1", "c2"]


def test_a_page_token_named_like_a_secret_still_tells_the_pages_apart(
    ctx: RunContext, api: ApiServer
) -> None:
    """Masking `page_token` made every page's __sw_file the same: dead letters of the same
    line on two pages then shared one id."""
    chain = {"": ("t1", [1]), "t1": ("t2", [2]), "t2": (None, [3])}

    def pages(query: dict[str, str], _: dict[str, str]) -> Reply:
        token, ids = chain[query.get("page_token", "")]
        return ok({"items": items(range(ids[0], ids[-1] + 1)), "next": token})

    api.routes["/things"] = pages
    paging = {"type": "cursor", "cursor_path": "next", "cursor_param": "page_token"}
    _, rows = read(ctx, {"url": api.url("/things"), "records_path": "items", "paginate": paging})

    assert len({r["__sw_file"] for r in rows}) == 3
    assert any("page_token=t2" in r["__sw_file"] for r in rows)


def test_link_pagination_follows_rel_next_until_there_is_none(
    ctx: RunContext, api: ApiServer
) -> None:
    def first(_: dict[str, str], __: dict[str, str]) -> Reply:
        link = f'<{api.url("/p2?x=1")}>; rel="next", <{api.url("/p3")}>; rel="last"'
        return ok(items(range(1, 3)), {"Link": link})

    api.routes["/things"] = first
    api.routes["/p2"] = lambda _, __: ok(items(range(3, 5)), {"Link": '</p3>; rel="next"'})
    api.routes["/p3"] = lambda _, __: ok(items(range(5, 6)), {"Link": '</things>; rel="first"'})
    _, rows = read(ctx, {"url": api.url("/things"), "paginate": {"type": "link"}})
    assert sorted(int(r["id"]) for r in rows) == [1, 2, 3, 4, 5]
    assert [h.path for h in api.hits] == ["/things", "/p2", "/p3"]
    assert {r["__sw_file"] for r in rows if r["id"] == "5"} == {api.url("/p3")}


def test_credentials_a_server_writes_into_next_links_are_masked_yet_pages_differ(
    ctx: RunContext, api: ApiServer
) -> None:
    def page(n: int) -> str:
        return api.url(f"/things?page={n}&X-Amz-Signature=SIG{n}SECRET&access_token=TOK{n}SECRET")

    api.routes["/things"] = lambda q, _: ok(
        items(range(int(q.get("page", 1)), int(q.get("page", 1)) + 1)),
        {"Link": f'<{page(int(q.get("page", 1)) + 1)}>; rel="next"'}
        if q.get("page") != "3"
        else {},
    )
    _, rows = read(ctx, {"url": api.url("/things?page=1"), "paginate": {"type": "link"}})

    files = [r["__sw_file"] for r in rows]
    assert len(rows) == 3 and len(set(files)) == 3  # dead letters of two pages never share an id
    assert not any("SECRET" in f for f in files)
    assert all("X-Amz-Signature=***" in f and "access_token=***" in f for f in files[1:])


def test_next_link_reads_rfc_5988_headers() -> None:
    header = '<https://a/x?page=1>; rel="prev", <https://a/x?page=3>; rel="next last"'
    assert next_link(header) == "https://a/x?page=3"
    assert next_link('<https://a/x>; rel="prev"') is None
    assert next_link(None) is None


def test_a_server_that_points_back_to_a_page_already_read_is_an_error(
    ctx: RunContext, api: ApiServer
) -> None:
    api.routes["/things"] = lambda _, __: ok({"items": items(range(1, 2)), "next": "same"})
    with pytest.raises(SourceError, match="already read"):
        read(
            ctx,
            {
                "url": api.url("/things"),
                "records_path": "items",
                "paginate": {"type": "cursor", "cursor_path": "next"},
            },
        )
    assert len(api.hits) == 2


# --- retries ---------------------------------------------------------------------------


def _fails_then(first: list[Reply], then: Reply) -> Route:
    replies = list(first)
    return lambda _, __: replies.pop(0) if replies else then


def test_429_waits_for_retry_after_seconds_then_reads(ctx: RunContext, api: ApiServer) -> None:
    api.routes["/things"] = _fails_then(
        [(429, {"Retry-After": "1"}, b'{"error": "slow down"}')], ok(items(range(1, 3)))
    )
    events: list[Any] = []
    ctx.events.subscribe(events.append)
    _, rows = read(ctx, {"url": api.url("/things"), "retry": {"initial_backoff_s": 0.01}})
    assert len(rows) == 2
    first, second = api.hits
    assert 0.95 <= second.at - first.at < 3
    waits = [e.fields for e in events if e.name == "retrying"]
    assert len(waits) == 1  # the wait is said, not silent
    assert (waits[0]["attempt"], waits[0]["next_in_s"]) == (2, 1.0)
    assert waits[0]["step"] == "source things" and "429" in waits[0]["error"]


def test_503_honours_retry_after_as_an_http_date(ctx: RunContext, api: ApiServer) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    api.routes["/things"] = _fails_then(
        [(503, {"Retry-After": later}, b"maintenance")], ok(items(range(1, 2)))
    )
    _, rows = read(ctx, {"url": api.url("/things"), "retry": {"initial_backoff_s": 0.01}})
    assert len(rows) == 1
    first, second = api.hits
    assert second.at - first.at >= 0.95  # the date has a 1 s resolution: 1 to 2 s


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 30.0
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:00:00 GMT", now=now) == 0.0
    assert retry_after_seconds("soon") is None


def test_a_retry_after_beyond_the_limit_fails_as_transient(ctx: RunContext, api: ApiServer) -> None:
    api.routes["/things"] = lambda _, __: (429, {"Retry-After": "3600"}, b"")
    with pytest.raises(TransientError, match="Retry-After 3600s"):
        read(ctx, {"url": api.url("/things")})
    assert len(api.hits) == 1


def test_500_is_retried_with_backoff_then_succeeds(ctx: RunContext, api: ApiServer) -> None:
    api.routes["/things"] = _fails_then(
        [(500, {}, b"oops"), (502, {}, b"bad gateway")], ok(items(range(1, 4)))
    )
    _, rows = read(ctx, {"url": api.url("/things"), "retry": {"initial_backoff_s": 0.2}})
    assert len(rows) == 3
    gaps = [b.at - a.at for a, b in zip(api.hits, api.hits[1:], strict=False)]
    assert len(gaps) == 2
    assert 0.1 <= gaps[0] <= 0.45  # 0.2 s with equal jitter: between 0.1 and 0.2
    assert 0.2 <= gaps[1] <= 0.7  # doubled: between 0.2 and 0.4


def test_persistent_5xx_gives_up_after_max_attempts(ctx: RunContext, api: ApiServer) -> None:
    api.routes["/things"] = lambda _, __: (500, {}, b"still broken")
    spec = {"url": api.url("/things"), "retry": {"max_attempts": 3, "initial_backoff_s": 0.01}}
    with pytest.raises(TransientError, match="failed 3 time") as caught:
        read(ctx, spec)
    assert "HTTP 500" in str(caught.value) and "still broken" in str(caught.value)
    assert len(api.hits) == 3


def test_a_stalled_answer_times_out_and_is_retried(ctx: RunContext, api: ApiServer) -> None:
    calls = []

    def stalls_once(_: dict[str, str], __: dict[str, str]) -> Reply:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(1.0)
        return ok(items(range(1, 3)))

    api.routes["/things"] = stalls_once
    started = time.monotonic()
    _, rows = read(
        ctx, {"url": api.url("/things"), "timeout_s": 0.3, "retry": {"initial_backoff_s": 0.01}}
    )
    assert len(rows) == 2 and len(calls) == 2
    assert time.monotonic() - started < 1.0


def test_a_server_that_never_answers_in_time_fails_as_transient(
    ctx: RunContext, api: ApiServer
) -> None:
    def stalls(_: dict[str, str], __: dict[str, str]) -> Reply:
        time.sleep(0.6)
        return ok([])

    api.routes["/things"] = stalls
    spec = {
        "url": api.url("/things"),
        "timeout_s": 0.2,
        "retry": {"max_attempts": 2, "initial_backoff_s": 0.01},
    }
    with pytest.raises(TransientError, match=r"timed out after 0\.2s"):
        read(ctx, spec)
    assert len(api.hits) == 2


def test_an_unreachable_server_fails_as_transient(ctx: RunContext) -> None:
    spec = {
        "url": "http://127.0.0.1:9/things",
        "retry": {"max_attempts": 2, "initial_backoff_s": 0.01},
    }
    with pytest.raises(TransientError, match="connection failed"):
        read(ctx, spec)


def test_a_404_is_a_clear_error_with_status_url_and_body_and_no_retry(
    ctx: RunContext, api: ApiServer
) -> None:
    api.routes["/missing"] = lambda _, __: (
        404,
        {},
        b'{"error": "no such collection"}' + b"x" * 500,
    )
    with pytest.raises(SourceError) as caught:
        read(ctx, {"url": api.url("/missing"), "params": {"q": "a"}})
    message = str(caught.value)
    assert "HTTP 404" in message
    assert api.url("/missing?q=a") in message
    assert "no such collection" in message
    assert "x" * 169 in message and "x" * 170 not in message  # the first 200 chars only
    assert "Check the url" in message
    assert len(api.hits) == 1


# --- malformed pages -------------------------------------------------------------------


def test_a_page_that_is_not_json_fails_naming_the_page(ctx: RunContext, api: ApiServer) -> None:
    api.routes["/things"] = lambda _, __: (200, {"Content-Type": "text/html"}, b"<html>oops")
    with pytest.raises(SourceError, match=r"malformed page .*/things: the page is not JSON") as c:
        read(ctx, {"url": api.url("/things")})
    assert "<html>oops" in str(c.value)


def test_a_page_without_records_path_fails_naming_the_path(ctx: RunContext, api: ApiServer) -> None:
    api.routes["/things"] = lambda _, __: ok({"error": {"message": "quota"}})
    with pytest.raises(SourceError, match=r"records_path 'data\.items' is not in the page"):
        read(ctx, {"url": api.url("/things"), "records_path": "data.items"})


def test_malformed_pages_become_parse_rejects_with_their_raw_body(
    ctx: RunContext, api: ApiServer
) -> None:
    bodies = {
        "1": ok({"data": items(range(1, 3))}),
        "2": (200, {}, b"<html>gateway hiccup</html>"),
        "3": ok({"data": [{"id": 5}, "not an object"]}),
        "4": ok({"data": []}),
    }
    api.routes["/things"] = lambda q, _: bodies[q["page"]]
    result, rows = read(
        ctx,
        {
            "url": api.url("/things"),
            "records_path": "data",
            "paginate": {"type": "page", "page_size": 2},
            "on_malformed_page": "dead_letter",
        },
    )
    assert sorted(int(r["id"]) for r in rows) == [1, 2, 5]
    rejects = result.parse_rejects.to_pylist()
    assert [(r["raw"], r["line"]) for r in rejects] == [
        (b"<html>gateway hiccup</html>", None),
        (b'"not an object"', 2),
    ]
    assert "page=2" in rejects[0]["file"] and "not JSON" in rejects[0]["reason"]
    assert "a JSON string, not an object" in rejects[1]["reason"]
    assert result.rows_in == 5  # 3 rows + 2 rejects: every record accounted for


# --- rate limit ------------------------------------------------------------------------


def test_the_rate_limit_holds_the_request_rate(ctx: RunContext, api: ApiServer) -> None:
    api.routes["/things"] = lambda q, _: ok(items(range(int(q["page"]), int(q["page"]) + 1)))
    spec = {
        "url": api.url("/things"),
        "paginate": {"type": "page", "page_size": 1, "max_pages": 41},
        "rate_limit": {"requests_per_s": 20, "burst": 1},
    }
    with pytest.raises(SourceError, match="max_pages"):
        read(ctx, spec)
    times = [h.at for h in api.hits]
    measured = (len(times) - 1) / (times[-1] - times[0])
    assert len(times) == 41
    assert 12 <= measured <= 20 * 1.05, f"{measured:.1f} requests/s"


def test_a_burst_goes_at_once_then_the_rate_applies(ctx: RunContext, api: ApiServer) -> None:
    api.routes["/things"] = lambda q, _: ok(items(range(int(q["page"]), int(q["page"]) + 1)))
    spec = {
        "url": api.url("/things"),
        "paginate": {"type": "page", "page_size": 1, "max_pages": 10},
        "rate_limit": {"requests_per_s": 10, "burst": 5},
    }
    with pytest.raises(SourceError, match="max_pages"):
        read(ctx, spec)
    times = [h.at - api.hits[0].at for h in api.hits]
    assert times[4] < 0.25  # the burst
    assert 0.45 <= times[9] <= 0.9  # then 5 more at 10/s


# --- incremental, flattening, secrets --------------------------------------------------


def _changes(rows: list[dict[str, Any]]) -> Route:
    def answer(query: dict[str, str], _: dict[str, str]) -> Reply:
        since = query.get("updated_since", "")
        return ok({"data": [r for r in rows if r["updated_at"] >= since]})

    return answer


def test_incremental_sends_the_largest_cursor_seen_on_the_next_run(
    ctx: RunContext, api: ApiServer
) -> None:
    rows = [
        {"id": 1, "updated_at": "2024-01-01T10:00:00Z"},
        {"id": 2, "updated_at": "2024-01-03T09:00:00Z"},
        {"id": 3, "updated_at": "2024-01-02T12:00:00Z"},
    ]
    api.routes["/changes"] = _changes(rows)
    spec = {
        "url": api.url("/changes"),
        "records_path": "data",
        "incremental": {"param": "updated_since", "cursor_field": "updated_at"},
    }
    first, got = read(ctx, spec)
    assert len(got) == 3
    assert first.position == {"cursor": "2024-01-03T09:00:00Z"}
    rows.append({"id": 4, "updated_at": "2024-01-04T08:00:00Z"})
    second, got = read(ctx, spec, position=first.position)
    assert api.hits[0].query.get("updated_since") is None
    assert api.hits[1].query["updated_since"] == "2024-01-03T09:00:00Z"
    assert sorted(int(r["id"]) for r in got) == [2, 4]  # the API's `>=` repeats the last one
    assert second.position == {"cursor": "2024-01-04T08:00:00Z"}
    third, got = read(ctx, spec, position={"cursor": "2024-02-01"})
    assert got == [] and third.position == {"cursor": "2024-02-01"}


def test_a_cursor_value_of_another_type_than_the_contracts_never_moves_the_cursor(
    ctx: RunContext, api: ApiServer
) -> None:
    rows = [
        {"id": 1, "updated_at": "2024-01-03T08:00:00Z"},
        {"id": 2, "updated_at": "zzz-bad-date"},  # sorts after every date as text
        {"id": 3, "updated_at": "2024-01-03T09:00:00+02:00"},  # 07:00 UTC: earlier than 1
    ]
    api.routes["/changes"] = lambda _, __: ok({"data": rows})
    spec = {
        "url": api.url("/changes"),
        "records_path": "data",
        "incremental": {"param": "updated_since", "cursor_field": "updated_at"},
        "contract": {"columns": {"updated_at": {"type": "timestamp"}}},
    }

    result, got = read(ctx, spec)

    assert len(got) == 3  # the bad one is the contract's to reject, not the source's to drop
    assert result.position == {"cursor": "2024-01-03T08:00:00Z"}  # as the server wrote it


@pytest.mark.parametrize(
    ("column", "values", "newest"),
    [
        (  # forms the contract's cast reads, beyond ISO 8601
            {"type": "timestamp"},
            ["2024-03-05 10:00:00 UTC", "2024-3-6 09:00:00", "junk"],
            "2024-3-6 09:00:00",
        ),
        (  # the contract's own format
            {"type": "timestamp", "strftime": "%d/%m/%Y %H:%M"},
            ["05/03/2024 10:00", "06/03/2024 09:00", "2024-12-31"],
            "06/03/2024 09:00",
        ),
        ({"type": "double"}, ["1.5", "NaN", "2.5", "inf"], "2.5"),  # NaN never wins
    ],
)
def test_cursor_values_are_ordered_as_the_contract_casts_them(
    ctx: RunContext, api: ApiServer, column: dict[str, Any], values: list[str], newest: str
) -> None:
    api.routes["/changes"] = lambda _, __: ok({"data": [{"at": v} for v in values]})
    spec = {
        "url": api.url("/changes"),
        "records_path": "data",
        "incremental": {"param": "since", "cursor_field": "at"},
        "contract": {"columns": {"at": column}},
    }

    result, _ = read(ctx, spec)

    assert result.position == {"cursor": newest}


def test_a_numeric_cursor_sent_as_text_compares_as_a_number(
    ctx: RunContext, api: ApiServer
) -> None:
    api.routes["/changes"] = lambda _, __: ok({"data": [{"seq": "9"}, {"seq": "10"}]})
    spec = {
        "url": api.url("/changes"),
        "records_path": "data",
        "fields": {"sequence": "seq"},
        "incremental": {"param": "after", "cursor_field": "seq"},
        "contract": {"columns": {"sequence": {"type": "bigint"}}},
    }

    result, _ = read(ctx, spec)

    assert result.position == {"cursor": "10"}


def test_a_dead_lettered_page_holds_the_cursor_where_it_was_and_says_so(
    ctx: RunContext, api: ApiServer
) -> None:
    bodies = {
        "1": ok({"data": [{"id": 1, "updated_at": "2024-01-01"}]}),
        "2": (200, {}, b"<html>gateway hiccup</html>"),  # records of 2024-01-02, never seen
        "3": ok({"data": [{"id": 3, "updated_at": "2024-01-03"}]}),
        "4": ok({"data": []}),
    }
    api.routes["/changes"] = lambda q, _: bodies[q["page"]]
    events: list[Any] = []
    ctx.events.subscribe(events.append)
    spec = {
        "url": api.url("/changes"),
        "records_path": "data",
        "paginate": {"type": "page", "page_size": 1},
        "on_malformed_page": "dead_letter",
        "incremental": {"param": "updated_since", "cursor_field": "updated_at"},
    }

    result, got = read(ctx, spec, position={"cursor": "2023-12-31"})

    assert [int(r["id"]) for r in got] == [1, 3]
    assert result.position == {"cursor": "2023-12-31"}
    held = [e for e in events if e.name == "cursor_held"]
    assert len(held) == 1 and "1 page(s) went to the dead letters" in held[0].fields["hint"]


def test_a_key_written_into_the_url_is_masked_wherever_the_url_is_shown(
    ctx: RunContext, api: ApiServer
) -> None:
    api.routes["/things"] = lambda _, __: (404, {}, b"no such thing")
    spec = {"url": api.url("/things?access_key=S3cretURLKEY&limit=5")}

    with pytest.raises(SourceError) as caught:
        read(ctx, spec)

    message = str(caught.value)
    assert "access_key=***" in message and "limit=5" in message
    assert "S3cret" not in message and "S3cret" not in repr(caught.value.context)
    assert api.hits[0].query["access_key"] == "S3cretURLKEY"  # the server still gets it


def test_fields_flatten_nested_records_and_missing_paths_are_null(
    ctx: RunContext, api: ApiServer
) -> None:
    records = [
        {"id": 1, "user": {"id": 7, "address": {"city": "Lyon"}}, "tags": ["a"], "ok": True},
        {"id": 2, "user": {"id": 8}, "extra": "dropped"},
    ]
    api.routes["/things"] = lambda _, __: ok(records)
    spec = {
        "url": api.url("/things"),
        "fields": {"id": "id", "user_id": "user.id", "city": "user.address.city", "tag": "tags.0"},
        "keep_raw": True,
    }
    result, rows = read(ctx, spec)
    columns = [c for c, _ in ctx.engine.columns(result.table)]
    assert columns == ["id", "user_id", "city", "tag", "raw_json", "__sw_file", "__sw_row"]
    assert [(r["id"], r["user_id"], r["city"], r["tag"]) for r in rows] == [
        ("1", "7", "Lyon", "a"),
        ("2", "8", None, None),
    ]
    assert [json.loads(r["raw_json"]) for r in rows] == records


def test_without_fields_the_top_level_keys_become_text_columns(
    ctx: RunContext, api: ApiServer
) -> None:
    records = [{"id": 1, "user": {"id": 7}, "ok": True}, {"id": 2, "note": None, "late": 1.5}]
    api.routes["/things"] = lambda _, __: ok(records)
    result, rows = read(ctx, {"url": api.url("/things")})
    assert [c for c, _ in ctx.engine.columns(result.table)] == [
        "id",
        "user",
        "ok",
        "note",
        "late",
        "__sw_file",
        "__sw_row",
    ]
    assert rows[0] | {"__sw_file": None} == {
        "id": "1",
        "user": '{"id": 7}',
        "ok": "true",
        "note": None,
        "late": None,
        "__sw_file": None,
        "__sw_row": 1,
    }
    assert (rows[1]["user"], rows[1]["late"]) == (None, "1.5")


def test_an_empty_answer_gives_an_empty_table_with_the_declared_columns(
    ctx: RunContext, api: ApiServer
) -> None:
    api.routes["/things"] = lambda _, __: ok({"data": None})
    result, rows = read(
        ctx, {"url": api.url("/things"), "records_path": "data", "fields": {"id": "id"}}
    )
    assert rows == [] and result.rows_in == 0
    assert ctx.engine.columns(result.table) == [
        ("id", "VARCHAR"),
        ("__sw_file", "VARCHAR"),
        ("__sw_row", "BIGINT"),
    ]


def test_secrets_reach_the_server_but_never_messages_or_rows(
    ctx: RunContext, api: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", "tok-SECRET-123")
    monkeypatch.setenv("API_KEY", "key-SECRET-456")
    monkeypatch.setenv("TENANT_SECRET", "tenant-SECRET-789")
    spec = {
        "url": api.url("/things"),
        "bearer_env": "API_TOKEN",
        "header_env": {"X-Tenant": "TENANT_SECRET"},
        "param_env": {"api_key": "API_KEY"},
    }
    api.routes["/things"] = lambda _, __: ok(items(range(1, 2)))
    result, rows = read(ctx, spec)
    hit = api.hits[0]
    assert hit.headers["authorization"] == "Bearer tok-SECRET-123"
    assert hit.headers["x-tenant"] == "tenant-SECRET-789"
    assert hit.query["api_key"] == "key-SECRET-456"
    assert rows[0]["__sw_file"] == api.url("/things?api_key=***")
    assert "SECRET" not in repr(result)

    def echo(_: dict[str, str], headers: dict[str, str]) -> Reply:
        return 401, {}, f"bad token {headers['authorization']} / {headers['x-tenant']}".encode()

    api.routes["/things"] = echo
    with pytest.raises(SourceError) as caught:
        read(ctx, spec)
    message = str(caught.value)
    assert "HTTP 401" in message and "api_key=***" in message and "bad token *** / ***" in message
    assert "SECRET" not in message and "SECRET" not in repr(caught.value.context)


def test_a_missing_credential_variable_is_a_config_error_naming_it(
    ctx: RunContext, api: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"NO_SUCH_TOKEN .*bearer_env.* is not set"):
        read(ctx, {"url": api.url("/things"), "bearer_env": "NO_SUCH_TOKEN"})
    assert api.hits == []


def test_pagination_options_of_another_type_are_refused() -> None:
    with pytest.raises(ValueError, match="page_size do\\(es\\) not apply to pagination 'cursor'"):
        ApiSourceConfig.model_validate(
            {
                "type": "api",
                "url": "http://x/",
                "paginate": {"type": "cursor", "cursor_path": "next", "page_size": 5},
            }
        )
    with pytest.raises(ValueError, match="needs cursor_path"):
        ApiSourceConfig.model_validate(
            {"type": "api", "url": "http://x/", "paginate": {"type": "cursor"}}
        )


# --- a whole pipeline ------------------------------------------------------------------

PIPELINE = """
version: 1
pipeline: api_orders
sources:
  orders:
    type: api
    url: {url}
    bearer_env: ORDERS_API_TOKEN
    records_path: data.orders
    paginate: {{type: cursor, cursor_path: next_cursor}}
    incremental: {{param: updated_since, cursor_field: updated_at}}
    on_malformed_page: dead_letter
    fields:
      order_id: id
      amount: amount
      updated_at: updated_at
      customer_id: customer.id
      city: customer.address.city
    contract:
      columns:
        order_id: {{type: bigint, nullable: false}}
        amount: {{type: double, min: 0}}
        updated_at: {{type: timestamp}}
        customer_id: {{type: bigint}}
        city: {{type: string}}
steps:
  - dedup: {{keys: [order_id], order_by: updated_at, keep: last}}
sinks:
  - type: delta
    path: lake/orders
    mode: merge
    merge_keys: [order_id]
dead_letter:
  path: lake/dead_letter
"""


def _order(i: int, day: int, amount: float = 10.0) -> dict[str, Any]:
    return {
        "id": i,
        "amount": amount,
        "updated_at": f"2024-01-{day:02d}T00:00:00Z",
        "customer": {"id": 100 + i, "address": {"city": f"city-{i}"}},
    }


def test_a_yaml_pipeline_loads_the_api_into_delta_incrementally(
    tmp_path: Path, api: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERS_API_TOKEN", "tok-pipeline-SECRET")
    orders = [_order(1, 1), _order(2, 2), _order(3, 3, amount=-5), _order(4, 4)]

    def answer(query: dict[str, str], headers: dict[str, str]) -> Reply:
        assert headers["authorization"] == "Bearer tok-pipeline-SECRET"
        since = query.get("updated_since", "")
        todo = [o for o in orders if o["updated_at"] >= since]
        start = int(query.get("cursor", "0"))
        page = todo[start : start + 2]
        following = str(start + 2) if start + 2 < len(todo) else None
        return ok({"data": {"orders": page}, "next_cursor": following})

    api.routes["/orders"] = answer
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(PIPELINE.format(url=api.url("/orders")))

    first = sluiceway.run(spec, logical_date=date(2024, 1, 5), state_dir=tmp_path / ".sluice")
    assert first.status == "succeeded", first.error
    assert first.accounting.rows_in == 4 and first.accounting.rows_rejected == 1
    table = DeltaTable(str(tmp_path / "lake" / "orders")).to_pyarrow_table()
    assert table.schema.field("order_id").type == pa.int64()
    assert table.schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    assert sorted(table.column("order_id").to_pylist()) == [1, 2, 4]
    assert dict(zip(table["order_id"].to_pylist(), table["city"].to_pylist(), strict=True)) == {
        1: "city-1",
        2: "city-2",
        4: "city-4",
    }

    orders[1] = _order(2, 5, amount=99.0)
    orders.append(_order(5, 6))
    api.hits.clear()
    second = sluiceway.run(spec, logical_date=date(2024, 1, 6), state_dir=tmp_path / ".sluice")
    assert second.status == "succeeded", second.error
    assert api.hits[0].query["updated_since"] == "2024-01-04T00:00:00Z"
    assert second.accounting.rows_in == 3  # order 4 again (>=), 2 updated, 5 new
    table = DeltaTable(str(tmp_path / "lake" / "orders")).to_pyarrow_table()
    amounts = dict(zip(table["order_id"].to_pylist(), table["amount"].to_pylist(), strict=True))
    assert amounts == {1: 10.0, 2: 99.0, 4: 10.0, 5: 10.0}

    dead = DeltaTable(str(tmp_path / "lake" / "dead_letter")).to_pyarrow_table().to_pylist()
    assert [(d["source"], d["stage"]) for d in dead] == [("orders", "contract")]
    assert "cursor=" in dead[0]["file"] and "SECRET" not in json.dumps(dead, default=str)


def test_credentials_follow_a_redirect_on_the_same_host_but_never_to_another(
    ctx: RunContext, api: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", "tok-SECRET-123")
    other_host = api.url("/elsewhere").replace("127.0.0.1", "localhost")
    api.routes["/things"] = lambda _, __: (302, {"Location": "/moved"}, b"")
    api.routes["/moved"] = lambda _, __: (302, {"Location": other_host}, b"")
    api.routes["/elsewhere"] = lambda _, __: ok(items(range(1, 2)))
    _, rows = read(ctx, {"url": api.url("/things"), "bearer_env": "API_TOKEN"})
    assert len(rows) == 1
    assert [(h.path, h.headers.get("authorization")) for h in api.hits] == [
        ("/things", "Bearer tok-SECRET-123"),
        ("/moved", "Bearer tok-SECRET-123"),
        ("/elsewhere", None),
    ]


def test_an_api_key_param_rides_next_links_on_the_same_host_only(
    ctx: RunContext, api: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_KEY", "key-SECRET-456")
    other_host = api.url("/p3").replace("127.0.0.1", "localhost")
    api.routes["/things"] = lambda _, __: ok(items(range(1, 2)), {"Link": '</p2>; rel="next"'})
    api.routes["/p2"] = lambda _, __: ok(
        items(range(2, 3)), {"Link": f'<{other_host}>; rel="next"'}
    )
    api.routes["/p3"] = lambda _, __: ok(items(range(3, 4)))
    spec = {
        "url": api.url("/things"),
        "param_env": {"api_key": "API_KEY"},
        "paginate": {"type": "link"},
    }
    _, rows = read(ctx, spec)
    assert len(rows) == 3
    assert [(h.path, h.query.get("api_key")) for h in api.hits] == [
        ("/things", "key-SECRET-456"),
        ("/p2", "key-SECRET-456"),
        ("/p3", None),
    ]
    assert not any("SECRET" in r["__sw_file"] for r in rows)


def test_a_malformed_page_that_echoes_the_token_does_not_leak_it(
    ctx: RunContext, api: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", "tok-SECRET-123")
    api.routes["/things"] = lambda _, headers: (200, {}, f"<p>{headers['authorization']}".encode())
    with pytest.raises(SourceError, match="not JSON") as caught:
        read(ctx, {"url": api.url("/things"), "bearer_env": "API_TOKEN"})
    assert "<p>***" in str(caught.value) and "SECRET" not in str(caught.value)


def test_a_dead_lettered_page_that_echoes_credentials_keeps_them_masked(
    ctx: RunContext, api: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", "tok-SECRET-123")
    monkeypatch.setenv("API_KEY", "key-SECRET-456")
    api.routes["/things"] = lambda query, headers: (
        200,
        {},
        f"<html>debug: {headers['authorization']} key={query['api_key']}</html>".encode(),
    )
    api.routes["/odd"] = lambda query, _: ok([f"echo {query['api_key']}", {"id": 1}])
    spec = {
        "bearer_env": "API_TOKEN",
        "param_env": {"api_key": "API_KEY"},
        "on_malformed_page": "dead_letter",
    }

    page, _ = read(ctx, {"url": api.url("/things"), **spec})
    record, rows = read(ctx, {"url": api.url("/odd"), **spec})

    raws = [r["raw"] for r in [*page.parse_rejects.to_pylist(), *record.parse_rejects.to_pylist()]]
    assert raws == [b"<html>debug: *** key=***</html>", b'"echo ***"']
    assert len(rows) == 1


def test_credentials_never_follow_a_next_link_to_another_host(
    ctx: RunContext, api: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", "tok-SECRET-123")
    other_host = api.url("/p2").replace("127.0.0.1", "localhost")
    api.routes["/things"] = lambda _, __: ok(
        items(range(1, 2)), {"Link": f'<{other_host}>; rel="next"'}
    )
    api.routes["/p2"] = lambda _, __: ok(items(range(2, 3)))
    spec = {"url": api.url("/things"), "bearer_env": "API_TOKEN", "paginate": {"type": "link"}}

    _, rows = read(ctx, spec)

    assert len(rows) == 2
    assert [(h.path, h.headers.get("authorization")) for h in api.hits] == [
        ("/things", "Bearer tok-SECRET-123"),
        ("/p2", None),
    ]


def test_a_401_from_another_host_says_the_credentials_were_not_sent_there(
    ctx: RunContext, api: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", "tok-SECRET-123")
    other_host = api.url("/elsewhere").replace("127.0.0.1", "localhost")
    api.routes["/things"] = lambda _, __: (302, {"Location": other_host}, b"")
    api.routes["/elsewhere"] = lambda _, headers: (
        (401, {}, b"who are you") if "authorization" not in headers else ok([])
    )

    with pytest.raises(SourceError, match="HTTP 401") as caught:
        read(ctx, {"url": api.url("/things"), "bearer_env": "API_TOKEN"})

    message = str(caught.value)
    assert "another host (localhost" in message and "never sent to another host" in message
    assert "SECRET" not in message


def test_decimals_keep_every_digit_the_server_wrote(ctx: RunContext, api: ApiServer) -> None:
    api.routes["/things"] = lambda _, __: (
        200,
        {},
        b'[{"id": 1, "amount": 1234567890.123456789, "nested": {"x": 0.1}}, '
        b'{"id": 2, "amount": 99999999999999999999.99, "nested": null}, {"id": 3, "amount": 1e-7}]',
    )

    _, rows = read(ctx, {"url": api.url("/things")})

    assert [r["amount"] for r in rows] == [
        "1234567890.123456789",
        "99999999999999999999.99",
        "1e-7",
    ]
    assert rows[0]["nested"] == '{"x": 0.1}'


def test_a_record_with_a_lone_surrogate_is_a_dead_letter_not_a_failed_read(
    ctx: RunContext, api: ApiServer
) -> None:
    api.routes["/things"] = lambda _, __: (
        200,
        {},
        b'[{"id": 1, "name": "ok"}, {"id": 2, "name": "lone \\ud83d surrogate"}, '
        b'{"id": 3, "name": "pair \\ud83d\\ude00"}]',
    )

    result, rows = read(ctx, {"url": api.url("/things")})

    assert [(r["id"], r["name"]) for r in rows] == [("1", "ok"), ("3", "pair \U0001f600")]
    [reject] = result.parse_rejects.to_pylist()
    assert (
        reject["line"] == 2 and "['name']" in reject["reason"] and "surrogate" in reject["reason"]
    )
    assert b"\\ud83d" in reject["raw"]
    assert result.rows_in == 3


def test_an_empty_answer_without_columns_succeeds_when_incremental_and_fails_when_full(
    tmp_path: Path, api: ApiServer
) -> None:
    api.routes["/things"] = lambda _, __: ok({"items": []})
    base = {
        "version": 1,
        "pipeline": "things",
        "sources": {"things": {"type": "api", "url": api.url("/things"), "records_path": "items"}},
        "checks": [{"row_count_between": {"min_value": 1}}],
        "sinks": [{"type": "delta", "path": "lake/things", "mode": "append"}],
    }
    full = tmp_path / "full.yaml"
    full.write_text(yaml.safe_dump(base))
    incremental = tmp_path / "incremental.yaml"
    base["sources"]["things"]["incremental"] = {"param": "since", "cursor_field": "at"}
    base["sources"]["things"]["incremental"]["initial_value"] = "2024-01-01"
    incremental.write_text(yaml.safe_dump(base))

    empty_full = sluiceway.run(full, logical_date=date(2024, 1, 5), state_dir=tmp_path / "s1")
    nothing_new = sluiceway.run(
        incremental, logical_date=date(2024, 1, 5), state_dir=tmp_path / "s2"
    )

    assert empty_full.status == "failed"
    assert "returned no row, and no column is known" in (empty_full.error or "")
    assert nothing_new.status == "succeeded", nothing_new.error
    assert "read nothing new" in (nothing_new.note or "")
