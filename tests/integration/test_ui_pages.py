"""`sluice ui` over HTTP: every page answers, the token rules hold, stored text is escaped,
no PII or secret reaches a page, and pages stay fast with 10,000 runs in the store."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from sluiceway.cli_ui import build_dashboard
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline
from sluiceway.core.runstore import RunStore
from sluiceway.ui.server import UiServer

KEYS = {
    "SLUICE_HMAC_KEY": "ui-hmac-key",
    "SLUICE_MASK_SALT": "ui-salt",
    "SLUICE_ENCRYPTION_KEY": "4d" * 32,
}
TOKEN = "ui-test-token-0123456789abcdef"
EVENTS = (
    "event_id,event_type,email,amount\n"
    "e1,view,alice@example.com,10\n"
    "e2,buy,bob@example.org,20\n"
    "e3,refund,carol@example.net,30\n"
    "e4,view,dave@example.com,-5\n"
)
CLEAR_PII = ("alice@example.com", "bob@example.org", "carol@example.net", "dave@example.com")
SECRETS = ("s3cretpass", "SECRETKEY123", "HEADERSECRET")
HOSTILE = "<img src=x onerror=alert(1)>"


def orders_spec() -> dict:
    return {
        "version": 1,
        "pipeline": "orders",
        "owner": "sales-data",
        "description": f"Orders for finance {HOSTILE}",
        "sla": {"freshness": "1d", "latency": "10m"},
        "sources": {
            "events": {
                "type": "files",
                "path": "../data/",
                "format": "csv",
                "contract": {
                    "columns": {
                        "event_id": {"type": "string", "nullable": False, "description": "Id"},
                        "event_type": {"type": "string", "values": ["view", "buy"]},
                        "email": {"type": "string", "description": f"Buyer {HOSTILE}"},
                        "amount": {"type": "double", "min": 0, "description": "Order total"},
                    }
                },
            }
        },
        "pii": {"email": "hmac"},
        "sinks": [{"type": "delta", "path": "../lake/orders", "mode": "append"}],
    }


DAILY_SPEC = {
    "version": 1,
    "pipeline": "daily_orders",
    "owner": "finance",
    "sources": {"orders": {"type": "delta", "path": "../lake/orders"}},
    "steps": [{"sql": "SELECT event_type, count(*) AS n FROM orders GROUP BY event_type"}],
    "sinks": [{"type": "delta", "path": "../lake/daily", "mode": "append"}],
}
PARTNER_SPEC = {
    "version": 1,
    "pipeline": "partner_feed",
    "sources": {
        "items": {
            "type": "api",
            "url": "https://robot:s3cretpass@api.example.com/v1/items?api_key=SECRETKEY123",
            "headers": {"X-Api-Key": "HEADERSECRET"},
        }
    },
    "sinks": [{"type": "delta", "path": "../lake/partner", "mode": "append"}],
}


@dataclass
class Site:
    root: Path
    url: str
    orders_run: RunResult
    daily_run: RunResult


def write_project(root: Path) -> None:
    (root / "pipelines").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "events.csv").write_text(EVENTS)
    specs = {"orders": orders_spec(), "daily": DAILY_SPEC, "partner": PARTNER_SPEC}
    for name, spec in specs.items():
        (root / "pipelines" / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    (root / "sluice.yaml").write_text("version: 1\nproject: shop\npipelines: [pipelines/]\n")


def run_spec(root: Path, name: str) -> RunResult:
    spec = root / "pipelines" / f"{name}.yaml"
    options = RunOptions(
        logical_date=date(2025, 1, 15),
        base_dir=spec.parent,
        state_dir=root / ".sluice",
        environ=dict(KEYS),
    )
    return run_pipeline(load_spec(spec), options)


def serve(root: Path, *, host: str = "127.0.0.1", token: str | None = None) -> UiServer:
    app = build_dashboard(root / "sluice.yaml", (), str(root / ".sluice"))
    server = UiServer(app, host, 0, token)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture()
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    write_project(tmp_path)
    orders = run_spec(tmp_path, "orders")
    daily = run_spec(tmp_path, "daily")
    server = serve(tmp_path)
    yield Site(tmp_path, f"http://127.0.0.1:{server.server_port}", orders, daily)
    server.shutdown()
    server.server_close()


def fetch(
    url: str, *, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def every_page(site: Site) -> list[str]:
    run_id = quote(site.orders_run.run_id)
    return [
        "/",
        "/pipelines/orders",
        "/pipelines/daily_orders",
        "/pipelines/partner_feed",
        f"/runs/{run_id}",
        f"/runs/{quote(site.daily_run.run_id)}",
        "/dlq/orders",
        f"/dlq/orders?run={run_id}&rule=values",
        "/lineage",
        "/catalog",
        "/catalog?q=email",
    ]


def test_every_page_answers_200_with_its_content(site: Site) -> None:
    bodies = {path: fetch(site.url + path) for path in every_page(site)}

    assert {path: status for path, (status, _, _) in bodies.items()} == dict.fromkeys(bodies, 200)
    run_page = bodies[f"/runs/{quote(site.orders_run.run_id)}"][1]
    assert 'class="waterfall"' in run_page and "rejected" in run_page
    assert "failed" in bodies["/"][1] or "succeeded" in bodies["/"][1]
    assert "2 dead-letter row(s)" in bodies["/dlq/orders"][1]
    assert (
        "1 dead-letter row(s)"
        in bodies[f"/dlq/orders?run={quote(site.orders_run.run_id)}&rule=values"][1]
    )
    assert "pii: hmac" in bodies["/catalog?q=email"][1]


def test_the_overview_shows_last_status_freshness_and_sla_of_each_pipeline(site: Site) -> None:
    status, body, _ = fetch(site.url + "/")

    assert status == 200
    row = body[body.index('href="/pipelines/orders"') :].split("</tr>")[0]
    assert site.orders_run.status in row
    assert "/ 1d" in row and "/ 10m" in row
    partner = body[body.index('href="/pipelines/partner_feed"') :].split("</tr>")[0]
    assert "never run" in partner


def test_lineage_links_the_pipeline_that_reads_a_table_to_the_one_that_writes_it(
    site: Site,
) -> None:
    status, body, _ = fetch(site.url + "/lineage")

    assert status == 200
    assert "<svg" in body and 'marker-end="url(#arrow)"' in body
    links = body[body.index("<h2>Links</h2>") :]
    assert links.index("orders") < links.index("lake/orders") < links.index("daily_orders")
    assert "partner_feed" not in links


def test_the_catalog_lists_every_dataset_and_searches_columns_and_descriptions(site: Site) -> None:
    _, everything, _ = fetch(site.url + "/catalog")
    _, by_description, _ = fetch(site.url + "/catalog?q=order+total")
    _, by_nothing, _ = fetch(site.url + "/catalog?q=no-such-thing")

    assert "5 of 5 dataset(s)" in everything
    for label in ("data", "lake/orders", "lake/daily", "lake/partner", "api.example.com"):
        assert label in everything
    assert "2 of 5 dataset(s)" in by_description  # the csv source and the orders table
    assert "0 of 5 dataset(s)" in by_nothing
    orders = everything[everything.index("<h2>lake/orders</h2>") :].split("</section>")[0]
    assert "sales-data" in orders and "lake/daily" in orders and "Order total" in orders


def test_no_page_shows_pii_secrets_or_raw_payloads(site: Site) -> None:
    bodies = [fetch(site.url + path)[1] for path in every_page(site)]

    for body in bodies:
        assert not [value for value in CLEAR_PII if value in body]
        assert not [value for value in SECRETS if value in body]
        assert "raw_payload" not in body
    dlq = bodies[6]
    assert "e3" in dlq and "payload (masked)" in dlq


def test_stored_text_is_escaped_not_rendered_as_markup(site: Site) -> None:
    for path in ("/pipelines/orders", "/catalog"):
        _, body, _ = fetch(site.url + path)

        assert HOSTILE not in body
        assert "&lt;img src=x onerror=alert(1)&gt;" in body


def test_unknown_pipelines_and_runs_answer_404(site: Site) -> None:
    assert fetch(site.url + "/pipelines/nope")[0] == 404
    assert fetch(site.url + "/runs/nope")[0] == 404
    assert fetch(site.url + "/dlq/nope")[0] == 404
    assert fetch(site.url + "/nowhere")[0] == 404


def test_specs_added_removed_or_broken_while_the_server_runs_show_as_they_are_now(
    site: Site,
) -> None:
    folder = site.root / "pipelines"
    extra = {
        **DAILY_SPEC,
        "pipeline": "weekly_orders",
        "sinks": [{"type": "delta", "path": "../lake/weekly", "mode": "append"}],
    }
    (folder / "weekly.yaml").write_text(yaml.safe_dump(extra))
    (folder / "typo.yaml").write_text("version: 1\npipeline: typo\nsources: {}\nsinkz: []\n")
    (folder / "orders.yaml").unlink()

    _, lineage, _ = fetch(site.url + "/lineage")
    _, home, _ = fetch(site.url + "/")
    status, run_page, _ = fetch(site.url + f"/runs/{quote(site.orders_run.run_id)}")

    assert "weekly_orders" in lineage
    assert "typo.yaml: 3 problem(s)" in home and "sinks (line 1): Field required" in home
    assert "the spec file is missing" not in home
    assert status == 200 and "/dlq/orders" not in run_page
    assert "sluice dlq SPEC --run" in run_page


def test_a_replay_post_without_the_form_token_is_refused(site: Site) -> None:
    url = f"{site.url}/dlq/orders/replay?run={quote(site.orders_run.run_id)}"

    status, _, _ = fetch(url, data=b"csrf=guess")
    _, after, _ = fetch(site.url + "/dlq/orders")

    assert status == 403
    assert "2 dead-letter row(s)" in after


def outward_address() -> str:
    """This machine's non-loopback address (no packet is sent by a UDP connect)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        address = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.fail("no non-loopback IPv4 address on this machine to test remote access")
    return address


def test_remote_clients_need_the_token_and_loopback_clients_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_project(tmp_path)
    server = serve(tmp_path, host="0.0.0.0", token=TOKEN)
    port = server.server_port
    remote = f"http://{outward_address()}:{port}/"
    try:
        local = fetch(f"http://127.0.0.1:{port}/")[0]
        anonymous = fetch(remote)[0]
        wrong = fetch(remote, headers={"Authorization": "Bearer nope"})[0]
        bearer = fetch(remote, headers={"Authorization": f"Bearer {TOKEN}"})[0]
        bad_login = fetch(remote + "login?token=nope")[0]
        login_status, _, login_headers = fetch(remote + f"login?token={TOKEN}")
        with_cookie = fetch(remote, headers={"Cookie": login_headers.get("Set-Cookie", "")})[0]
        proxied = fetch(f"http://127.0.0.1:{port}/", headers={"X-Forwarded-For": "1.2.3.4"})[0]
        rebound = fetch(f"http://127.0.0.1:{port}/", headers={"Host": f"evil.example:{port}"})[0]
    finally:
        server.shutdown()
        server.server_close()

    assert (local, anonymous, wrong, bearer) == (200, 401, 401, 200)
    assert (bad_login, login_status, with_cookie) == (401, 303, 200)
    assert "HttpOnly" in login_headers["Set-Cookie"]
    assert (proxied, rebound) == (401, 401)


def test_sluice_ui_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    write_project(tmp_path)
    environ = {k: v for k, v in os.environ.items() if k != "SLUICE_UI_TOKEN"}
    sluice = Path(sys.executable).parent / "sluice"

    done = subprocess.run(
        [str(sluice), "ui", "--host", "0.0.0.0", "--port", "0"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert "SLUICE_UI_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr


def test_sluice_ui_says_how_many_specs_the_project_has_and_where_its_runs_are(
    tmp_path: Path,
) -> None:
    write_project(tmp_path)
    sluice = Path(sys.executable).parent / "sluice"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    process = subprocess.Popen(
        [str(sluice), "ui", "--port", "0"],
        cwd=tmp_path,
        env={**environ, "COLUMNS": "300"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
    finally:
        process.terminate()
        process.communicate(timeout=30)

    assert "(3 spec(s), runs in " in line, line
    assert str(tmp_path / ".sluice" / "runs.db") in line


def test_an_internal_error_is_logged_with_where_it_happened(
    site: Site, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sluiceway.ui import pages

    def broken(*_: object) -> str:
        raise ImportError("cannot import name 'gone' from 'sluiceway.ui.nowhere'")

    monkeypatch.setattr(pages, "overview", broken)
    server = serve(site.root)
    try:
        status, body, _ = fetch(f"http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
        server.server_close()

    logged = capsys.readouterr().err
    assert status == 500 and "Internal error (ImportError)" in body
    assert "cannot import name 'gone'" in logged and "test_ui_pages.py" in logged
    assert "cannot import" not in body


def fill_store(state: Path, runs: int) -> None:
    """`runs` batch and stream runs of 'orders' with checks, steps and metrics."""
    RunStore(state / "runs.db")
    details = json.dumps(
        {
            "checks": [{"check_id": "c1", "name": "row count", "status": "passed"}],
            "steps": [{"step": "sql", "index": 0, "duration_s": 0.2}],
            "dead_letter_rows": 1,
        }
    )
    rows = []
    for n in range(runs):
        day = date.fromordinal(date(2000, 1, 1).toordinal() + n % 3000)
        started = f"{day:%Y%m%d}T02{n % 60:02d}00" if n % 2 else f"{day}T03:00:00+00:00"
        rows.append(
            (
                f"{started[:15]}-{n:08x}",
                "orders",
                str(day),
                "succeeded",
                started,
                1.5,
                100,
                90,
                10,
                details,
            )
        )
    metrics = [
        (r[0], "orders", "staged", "__run__", "rows_in", r[2], 100.0, "2025-01-01T00:00:00")
        for r in rows
    ]
    with sqlite3.connect(state / "runs.db") as con:
        con.executemany(
            "INSERT INTO runs (run_id, pipeline, logical_date, status, started_at, duration_s, "
            "rows_in, rows_written, rows_rejected, details) VALUES (?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        con.executemany(
            "INSERT INTO metrics (run_id, pipeline, dataset, check_id, metric, logical_date, "
            "value, recorded_at) VALUES (?,?,?,?,?,?,?,?)",
            metrics,
        )


def test_every_page_renders_in_under_a_second_with_10000_runs(site: Site) -> None:
    fill_store(site.root / ".sluice", 10_000)
    paths = [*every_page(site), "/pipelines/orders?page=150"]

    timings = {}
    for path in paths:
        started = time.perf_counter()
        status, _, _ = fetch(site.url + path)
        timings[path] = time.perf_counter() - started
        assert status == 200, path

    assert {p: t for p, t in timings.items() if t >= 1.0} == {}
    _, first_page, _ = fetch(site.url + "/pipelines/orders")
    assert "page 1 of 201" in first_page
    assert "10,001" in first_page


def test_check_verdicts_and_the_rows_of_an_unpublished_run_show_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An aggregate check that failed shows failed (it has no unexpected rows, which the
    strip used to go by); a failed run wrote nothing and its page says how to rerun it."""
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    write_project(tmp_path)
    spec = orders_spec()
    spec["checks"] = [
        {"row_count_between": {"min_value": 1, "max_value": 2}},
        {
            "in_set": {
                "column": "event_type",
                "value_set": ["view", "buy"],
                "on_fail": "dead_letter",
            }
        },
    ]
    (tmp_path / "pipelines" / "orders.yaml").write_text(yaml.safe_dump(spec))
    first = run_spec(tmp_path, "orders")  # 2 valid rows pass; 3 fail the count below
    assert first.ok, first.error
    (tmp_path / "data" / "more.csv").write_text(
        "event_id,event_type,email,amount\ne9,buy,x@y.z,1\n"
    )
    options = RunOptions(
        logical_date=date(2025, 1, 16),
        base_dir=tmp_path / "pipelines",
        state_dir=tmp_path / ".sluice",
        environ=dict(KEYS),
    )
    second = run_pipeline(load_spec(tmp_path / "pipelines" / "orders.yaml"), options)
    assert not second.ok
    server = serve(tmp_path)
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        _, pipeline, _ = fetch(f"{base}/pipelines/orders")
        _, run, _ = fetch(f"{base}/runs/{quote(second.run_id)}")
    finally:
        server.shutdown()
        server.server_close()

    strips = re.findall(r"<title>(2025-01-1[56]): (\w+)</title>", pipeline)
    assert ("2025-01-16", "failed") in strips and ("2025-01-15", "passed") in strips
    assert strips.count(("2025-01-16", "failed")) == 1  # the count check only, not in_set
    second_row = pipeline.split(second.run_id, 2)[2].split("</tr>", 1)[0]
    assert "–" in second_row
    assert "staged, not published" in run and "Nothing was published" in run
    assert "sluice run orders --date 2025-01-16" in run
