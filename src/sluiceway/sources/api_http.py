"""HTTP for the `api` source: GET with a token-bucket rate limit and bounded retries.

Standard library only (urllib). Retries cover what a later attempt can fix — 408, 425,
429, 5xx, timeouts, refused or dropped connections — with exponential backoff and jitter;
a 429 or 503 that says `Retry-After` (seconds or an HTTP date) waits that long instead.
Any other 4xx is a `SourceError` at once. Secrets never leave this module in clear:
every URL and body quoted in an error goes through `Redactor`.
"""

from __future__ import annotations

import hashlib
import http.client
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from sluiceway.errors import SourceError, TransientError

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
RETRY_AFTER_STATUS = frozenset({429, 503})
BODY_QUOTE_CHARS = 200
_MASK = "***"
SECRET_PARAM = re.compile(r"key|token|secret|passw|signature|sig$|auth", re.IGNORECASE)
"""Names of query parameters and headers whose values are credentials."""


@dataclass(frozen=True)
class Response:
    """One successful response: the final URL, its headers and body."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry (see `ApiRetryConfig` for the YAML side)."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 300.0

    def backoff(self, attempt: int) -> float:
        """Seconds before attempt `attempt + 1`: exponential, with equal jitter."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class Redactor:
    """Replaces secret values (tokens, keys, URL credentials) with '***' in text."""

    def __init__(
        self,
        secrets: Iterable[str],
        secret_params: Iterable[str] = (),
        *,
        shown_params: Iterable[str] = (),
    ) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.secret_params = {p.lower() for p in secret_params}
        self.shown_params = {p.lower() for p in shown_params}

    def text(self, value: str) -> str:
        """`value` with every secret replaced, including its URL-encoded form."""
        for secret in self.secrets:
            value = value.replace(secret, _MASK)
            value = value.replace(urllib.parse.quote(secret, safe=""), _MASK)
        return value

    def url(self, url: str) -> str:
        """`url` without user info and with secret query parameters masked: the configured
        ones as `***`; others named like a credential (a presigned `X-Amz-Signature`, an
        `access_token` in a server's next link) as `***` and a short hash of the value, so
        that two pages still differ; `shown_params` (the pager's own) are left as they are."""
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        shown = [(k, self._shown(k, v)) for k, v in query]
        clean = urllib.parse.urlunsplit(
            (parts.scheme, netloc, parts.path, urllib.parse.urlencode(shown, safe="*"), "")
        )
        return self.text(clean)

    def _shown(self, name: str, value: str) -> str:
        lowered = name.lower()
        if lowered in self.secret_params:
            return _MASK
        if lowered in self.shown_params or not SECRET_PARAM.search(name):
            return value
        return _MASK + hashlib.sha256(value.encode()).hexdigest()[:6]


class TokenBucket:
    """At most `rate` requests per second on average, `burst` at once."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.sleep = sleep
        self.updated = clock()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        """Take one token, waiting until one is available."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens < 1:
                wait = (1 - self.tokens) / self.rate
                self.sleep(wait)
                self.tokens = 1.0
                self.updated = self.clock()
            self.tokens -= 1


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass
class HttpClient:
    """GETs URLs for one source read.

    Args:
        headers: sent with every request (auth included; never shown).
        timeout_s: per attempt, for connecting and for each read.
        retry: the retry policy.
        bucket: the rate limit, or None.
        redactor: hides secrets in error messages.
        label: the source, for messages ("source 'orders'").
    """

    headers: Mapping[str, str]
    timeout_s: float
    retry: RetryPolicy
    redactor: Redactor
    label: str
    bucket: TokenBucket | None = None
    sleep: Callable[[float], None] = time.sleep
    secret_headers: frozenset[str] = frozenset()
    home: str = ""
    """The configured URL: a request to another host (a next-page link, a redirect) goes
    without the secret headers."""
    on_retry: Callable[[int, float, str], object] | None = None
    """Told (next attempt, seconds to wait, why) before each wait between attempts."""
    requests: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.opener = urllib.request.build_opener(_OffHostRedirect(self.secret_headers))

    def get(self, url: str) -> Response:
        """GET `url`, retrying what a later attempt can fix.

        Raises:
            SourceError: a 4xx that retrying will not change (status, URL, start of body).
            TransientError: every attempt failed on a timeout, a connection or a 5xx/429.
        """
        shown = self.redactor.url(url)
        last = ""
        for attempt in range(1, self.retry.max_attempts + 1):
            wait, last = self._attempt(url, shown)
            if isinstance(wait, Response):
                return wait
            if attempt < self.retry.max_attempts:
                delay = wait if wait is not None else self.retry.backoff(attempt)
                if self.on_retry is not None:
                    self.on_retry(attempt + 1, delay, f"GET {shown}: {last}")
                self.sleep(delay)
        raise TransientError(
            f"{self.label}: GET {shown} failed {self.retry.max_attempts} time(s), last: {last}. "
            "Check that the server is up and reachable, or raise retry.max_attempts",
            context={"url": shown},
        )

    def _attempt(self, url: str, shown: str) -> tuple[Response | float | None, str]:
        """One try: the response, or (seconds to wait or None for backoff, why it failed)."""
        if self.bucket is not None:
            self.bucket.acquire()
        self.requests += 1
        headers = dict(self.headers)
        if self.home and _host(url) != _host(self.home):
            headers = {k: v for k, v in headers.items() if k.lower() not in self.secret_headers}
        request = urllib.request.Request(url, headers=headers, method="GET")
        try:
            with self.opener.open(request, timeout=self.timeout_s) as reply:
                body = reply.read()
                return Response(reply.geturl(), reply.status, dict(reply.headers), body), ""
        except urllib.error.HTTPError as exc:
            return self._http_error(exc, shown, url)
        except TimeoutError:
            return None, f"timed out after {self.timeout_s:g}s"
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                return None, f"timed out after {self.timeout_s:g}s"
            return None, self.redactor.text(f"connection failed: {type(reason).__name__}: {reason}")

    def _http_error(
        self, exc: urllib.error.HTTPError, shown: str, url: str
    ) -> tuple[float | None, str]:
        try:
            body = exc.read()
        except (OSError, http.client.HTTPException):
            body = b""
        quoted = self.redactor.text(body[:BODY_QUOTE_CHARS].decode("utf-8", "replace"))
        if exc.code not in RETRYABLE_STATUS:
            raise SourceError(
                f"{self.label}: GET {shown} answered HTTP {exc.code} {exc.reason}; body starts "
                f"with: {quoted!r}. {self._withheld(url, exc.geturl(), exc.code)}"
                f"{_advice(exc.code)}",
                context={"url": shown, "status": exc.code},
            )
        why = f"HTTP {exc.code}: {quoted!r}"
        if exc.code not in RETRY_AFTER_STATUS:
            return None, why
        wait = retry_after_seconds(exc.headers.get("Retry-After"))
        if wait is not None and wait > self.retry.max_retry_after_s:
            raise TransientError(
                f"{self.label}: GET {shown} answered HTTP {exc.code} with Retry-After "
                f"{wait:g}s, more than retry.max_retry_after_s ({self.retry.max_retry_after_s:g}s); "
                "run again later",
                context={"url": shown, "status": exc.code},
            )
        return wait, why

    def _withheld(self, url: str, answered: str, status: int) -> str:
        """Why a 401/403 may not be the credentials' fault: the answer came from another
        host (a redirect or a next-page link), which the credentials are never sent to."""
        if status not in (401, 403) or not self.secret_headers:
            return ""
        home = _host(self.home or url)
        other = next((_host(u) for u in (answered, url) if u and _host(u) != home), None)
        if other is None:
            return ""
        return (
            f"The request went to another host ({other}) than the configured url's ({home}), "
            "and credentials are never sent to another host: point url (or the server's "
            "next links / redirects) at the host that holds the data. "
        )


class _OffHostRedirect(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never carries credentials to another host (urllib would)."""

    def __init__(self, secret_headers: frozenset[str]) -> None:
        self.secret_headers = secret_headers

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _host(newurl) != _host(req.full_url):
            for name in [n for n in new.headers if n.lower() in self.secret_headers]:
                del new.headers[name]
        return new


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc.rsplit("@", 1)[-1].lower()


def _advice(status: int) -> str:
    hints = {
        400: "Check params and the pagination parameters.",
        401: "Check the credentials (bearer_env / header_env) and that the variable is set.",
        403: "The credentials lack access to this resource.",
        404: "Check the url (and records / pagination paths that build the next URL).",
    }
    return hints.get(status, "Fix the request; retrying will not change the answer.")


__all__ = [
    "HttpClient",
    "Redactor",
    "Response",
    "RetryPolicy",
    "TokenBucket",
    "retry_after_seconds",
]
