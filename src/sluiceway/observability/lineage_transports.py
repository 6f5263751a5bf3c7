"""Where OpenLineage events go: a JSON-lines file, an HTTP endpoint (Marquez-compatible, with
bounded retries), the console, or nowhere. Delivery never fails a run."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sluiceway.core.project import LineageSettings
from sluiceway.errors import ConfigError

HTTP_ATTEMPTS = 3
HTTP_TIMEOUT_S = 5.0


def _file_transport(settings: LineageSettings, root: Path) -> Callable[[dict[str, Any]], None]:
    path = Path(settings.path) if Path(settings.path).is_absolute() else root / settings.path
    lock = threading.Lock()

    def send(event: dict[str, Any]) -> None:
        line = json.dumps(event, sort_keys=True, default=str) + "\n"
        with lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as handle:
                handle.write(line)

    return send


def _console_transport(settings: LineageSettings, root: Path) -> Callable[[dict[str, Any]], None]:
    def send(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()

    return send


def _http_transport(settings: LineageSettings, root: Path) -> Callable[[dict[str, Any]], None]:
    if not settings.url:
        raise ConfigError(
            "lineage.transport is http but lineage.url is not set in sluice.yaml; "
            "set it to the OpenLineage server, e.g. url: http://marquez:5000"
        )
    endpoint = settings.url.rstrip("/") + "/api/v1/lineage"
    parts = urlsplit(endpoint)
    port = f":{parts.port}" if parts.port else ""
    shown = parts._replace(netloc=f"{parts.hostname or ''}{port}")
    headers = {"Content-Type": "application/json"}
    if settings.api_key:
        headers["Authorization"] = f"Bearer {settings.api_key}"

    def send(event: dict[str, Any]) -> None:
        body = json.dumps(event, default=str).encode()
        reason = ""
        for attempt in range(HTTP_ATTEMPTS):
            request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                    if response.status < 300:
                        return
                    reason = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code}"
                if exc.code < 500 and exc.code != 429:
                    break
            except (OSError, urllib.error.URLError) as exc:
                reason = type(exc).__name__
            if attempt + 1 < HTTP_ATTEMPTS:
                time.sleep(0.2 * 2**attempt)
        sys.stderr.write(
            f"sluice: warning: OpenLineage {event.get('eventType')} event of "
            f"{event['job']['name']} not delivered to {shown.geturl()} ({reason}); the run goes on\n"
        )

    return send


def _no_transport(settings: LineageSettings, root: Path) -> Callable[[dict[str, Any]], None]:
    return lambda event: None


TRANSPORTS: dict[str, Callable[[LineageSettings, Path], Callable[[dict[str, Any]], None]]] = {
    "file": _file_transport,
    "http": _http_transport,
    "console": _console_transport,
    "none": _no_transport,
}
