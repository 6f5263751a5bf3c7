"""The dashboard's HTTP server: stdlib `ThreadingHTTPServer`, a route table, access rules.

Access: loopback clients that name a loopback host pass; any other client (or a request
forwarded by a proxy, which carries `Forwarded` / `X-Forwarded-For`, or one naming another
host, as a DNS-rebinding page would) needs `Authorization: Bearer <SLUICE_UI_TOKEN>` or
the `token` cookie that `/login?token=...` sets. Binding to anything but loopback without a
token is refused. POST requests also need the per-server form token (CSRF) or the bearer
header, so a page on another site cannot make a logged-in browser replay dead letters.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from sluiceway.errors import ConfigError, SluicewayError
from sluiceway.observability.report_html import _esc
from sluiceway.ui import pages, pages_ops
from sluiceway.ui.catalog import redact
from sluiceway.ui.html import page

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_BODY = 64 * 1024
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class Request:
    """One request as a page handler sees it."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    params: dict[str, str]
    headers: dict[str, str]

    def page_no(self) -> int:
        """`?page=` as a positive int (1 when absent or invalid)."""
        value = self.query.get("page", "1")
        return max(int(value), 1) if value.isdigit() else 1


@dataclass
class Response:
    """Status, HTML body and extra headers."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[pages.Dashboard, Request], Response]


def _ok(html: str) -> Response:
    return Response(200, html)


def _replay(app: pages.Dashboard, req: Request) -> Response:
    run_id = req.query.get("run", "")
    if not run_id:
        return Response(400, page("Bad request", "<p>replay needs ?run=RUN_ID</p>"))
    outcome = pages_ops.run_replay(app, req.params["name"], run_id)
    return _ok(pages_ops.replay_page(req.params["name"], run_id, outcome))


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("GET", re.compile(r"/"), lambda app, req: _ok(pages.overview(app))),
    (
        "GET",
        re.compile(r"/pipelines/(?P<name>[^/]+)"),
        lambda app, req: _ok(pages.pipeline_page(app, req.params["name"], req.page_no())),
    ),
    (
        "GET",
        re.compile(r"/runs/(?P<run_id>[^/]+)"),
        lambda app, req: _ok(pages.run_page(app, req.params["run_id"])),
    ),
    (
        "GET",
        re.compile(r"/dlq/(?P<name>[^/]+)"),
        lambda app, req: _ok(
            pages_ops.dlq_page(
                app,
                req.params["name"],
                run_id=req.query.get("run", ""),
                rule=req.query.get("rule", ""),
                page_no=req.page_no(),
            )
        ),
    ),
    ("POST", re.compile(r"/dlq/(?P<name>[^/]+)/replay"), _replay),
    ("GET", re.compile(r"/lineage"), lambda app, req: _ok(pages_ops.lineage_page(app))),
    (
        "GET",
        re.compile(r"/catalog"),
        lambda app, req: _ok(pages_ops.catalog_page(app, req.query.get("q", ""))),
    ),
]


@dataclass(frozen=True)
class Access:
    """Who may use the dashboard: loopback clients, and holders of `token`."""

    token: str | None

    def has_token(self, req: Request) -> bool:
        """True when the request carries the token as a bearer header or cookie."""
        if not self.token:
            return False
        bearer = req.headers.get("authorization", "")
        if bearer.lower().startswith("bearer ") and _same(bearer[7:].strip(), self.token):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(req.headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is treated as no cookie
            return False
        return "token" in cookie and _same(cookie["token"].value, self.token)

    def allows(self, client: str, req: Request) -> bool:
        """True when `client` (its IP) may read pages."""
        return is_loopback(client, req.headers) or self.has_token(req)

    def login(self, req: Request) -> Response:
        """`/login?token=`: set the token cookie when it matches, then go to `/`."""
        given = req.query.get("token", "")
        if not self.token or not _same(given, self.token):
            return Response(401, page("Login", "<p>That token is not SLUICE_UI_TOKEN.</p>"))
        cookie = f"token={self.token}; HttpOnly; SameSite=Strict; Path=/"
        return Response(303, "", {"Location": "/", "Set-Cookie": cookie})


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def is_loopback(client: str, headers: dict[str, str]) -> bool:
    """True for a loopback client that no proxy forwarded, asking for a loopback host name
    (a page of another site whose name was rebound to 127.0.0.1 sends its own name)."""
    if "forwarded" in headers or "x-forwarded-for" in headers:
        return False
    host = urlsplit("//" + headers.get("host", "")).hostname or ""
    if host not in LOOPBACK_HOSTS:
        return False
    try:
        return ipaddress.ip_address(client.removeprefix("::ffff:")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token.

    Raises:
        ConfigError: `host` is not loopback and `token` is empty.
    """
    if host not in LOOPBACK_HOSTS and not token:
        raise ConfigError(
            f"refusing to serve the dashboard on '{host}' without a token: set SLUICE_UI_TOKEN "
            "to a long random secret (clients send it as 'Authorization: Bearer <token>' or "
            "log in at /login?token=...), or bind to 127.0.0.1"
        )


class Dispatcher:
    """Routes a request, applies the access and CSRF rules, renders errors as pages."""

    def __init__(self, app: pages.Dashboard, access: Access) -> None:
        self.app = app
        self.access = access

    def handle(self, client: str, req: Request) -> Response:
        """The response to `req` from `client`."""
        if req.path == "/login" and req.method == "GET":
            return self.access.login(req)
        if not self.access.allows(client, req):
            body = "<p>Send 'Authorization: Bearer &lt;token&gt;' or log in at /login?token=…</p>"
            return Response(401, page("Token required", body), {"WWW-Authenticate": "Bearer"})
        if req.method == "POST" and not (
            _same(req.form.get("csrf", ""), self.app.form_token) or self.access.has_token(req)
        ):
            return Response(
                403,
                page(
                    "Forbidden",
                    "<p>The form token is missing or stale: reload the page and try again.</p>",
                ),
            )
        for method, pattern, handler in ROUTES:
            match = pattern.fullmatch(req.path)
            if match:
                if method != req.method:
                    continue
                req.params = {k: unquote(v) for k, v in match.groupdict().items()}
                return self._run(handler, req)
        return Response(404, page("Not found", f"<p>No page at {_esc(req.path)}.</p>"))

    def _run(self, handler: Handler, req: Request) -> Response:
        try:
            return handler(self.app, req)
        except pages.NotFound as exc:
            return Response(404, page("Not found", f"<p>{_esc(exc)}</p>"))
        except SluicewayError as exc:
            return Response(
                500, page("Error", f'<pre class="error">{_esc(redact(str(exc)))}</pre>')
            )
        except Exception as exc:  # the page reports the failure; the server keeps serving
            print(f"sluice ui: {req.path}: {_diagnosis(exc)}", file=sys.stderr)
            return Response(
                500, page("Error", f"<p>Internal error ({_esc(type(exc).__name__)}).</p>")
            )


_CODE_ERRORS = (ImportError, AttributeError, NameError, TypeError, KeyError, IndexError)


def _diagnosis(exc: Exception) -> str:
    """What the operator needs to act on an internal error: where it happened (the
    traceback's frames) and, for an error of the code itself, its message. Other messages
    may quote stored values, so only their type is shown."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    said = f"{type(exc).__name__}: {exc}" if isinstance(exc, _CODE_ERRORS) else type(exc).__name__
    return f"{said} (please report it)\n{frames}".rstrip()


class _RequestHandler(BaseHTTPRequestHandler):
    server: UiServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve("GET", {})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(Response(413, page("Too large", "<p>Request body too large.</p>")))
            return
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        self._serve("POST", {k: v[-1] for k, v in parse_qs(body).items()})

    def _serve(self, method: str, form: dict[str, str]) -> None:
        url = urlsplit(self.path)
        req = Request(
            method=method,
            path=url.path.rstrip("/") or "/",
            query={k: v[-1] for k, v in parse_qs(url.query).items()},
            form=form,
            params={},
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        self._send(self.server.dispatcher.handle(self.client_address[0], req))

    def _send(self, response: Response) -> None:
        data = response.body.encode("utf-8")
        self.send_response(response.status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in {**_HEADERS, **response.headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(redact(f"{self.address_string()} {format % args}") + "\n")


class UiServer(ThreadingHTTPServer):
    """The dashboard server; `serve_forever()` runs it.

    Args:
        app: what the pages read.
        host: interface to bind ('127.0.0.1' unless a token is set).
        port: TCP port (0 picks a free one; see `server_port`).
        token: SLUICE_UI_TOKEN, or None.

    Raises:
        ConfigError: a non-loopback host without a token.
    """

    daemon_threads = True

    def __init__(self, app: pages.Dashboard, host: str, port: int, token: str | None) -> None:
        check_binding(host, token)
        self.dispatcher = Dispatcher(app, Access(token or None))
        if ":" in host:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__((host, port), _RequestHandler)


def new_form_token() -> str:
    """A random token for the POST forms of one server run."""
    return secrets.token_urlsafe(24)
