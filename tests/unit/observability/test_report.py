"""`sluice report` builds a static HTML site from a state folder's run store and results."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from dataclasses import asdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from sluiceway.cli_report import report
from sluiceway.core.runstore import RunRecord, RunStore
from sluiceway.observability.report import build_report, file_name, render_run

START = datetime(2020, 1, 1)
SCRIPT = "<script>alert(1)</script>"


def check(
    name: str = "amount in range",
    status: str = "passed",
    observed: float = 1.0,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "check_id": f"id-{name.replace(' ', '-')}",
        "name": name,
        "check": "between",
        "column": "amount",
        "severity": "error",
        "success": status == "passed",
        "observed_value": observed,
        "unexpected_count": 0 if status == "passed" else 3,
        "unexpected_percent": 0.0 if status == "passed" else 37.5,
        "rows_checked": 8,
        "message": "values between 0 and 100",
        "error": None,
        "status": status,
        **extra,
    }


def save_run(state: Path, store: RunStore, n: int, **options: Any) -> str:
    """Saves run n with RunStore.save (and its results file, unless told not to)."""
    record = make_run(state, n, **options)
    store.save(record)
    return record.run_id


def make_run(
    state: Path,
    n: int,
    *,
    pipeline: str = "orders",
    checks: list[dict[str, Any]] | None = None,
    status: str = "succeeded",
    error: str | None = None,
    with_results: bool = True,
    logical_date: date | None = None,
) -> RunRecord:
    """Run n (started n hours after START) as the store keeps it; writes its results file."""
    started = (START + timedelta(hours=n)).strftime("%Y%m%dT%H%M%S")
    run_id = f"{started}-{n:08x}"
    checks = [check()] if checks is None else checks
    day = logical_date or (START + timedelta(days=n)).date()
    stored_checks = [{k: v for k, v in c.items() if k != "unexpected_sample"} for c in checks]
    if with_results:
        document = {
            "version": 1,
            "run_id": run_id,
            "pipeline": pipeline,
            "logical_date": str(day),
            "status": status,
            "statements": 1,
            "duration_s": 0.25,
            "checks": [{"unexpected_sample": [], **c} for c in checks],
        }
        path = state / "results" / f"{run_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document))
    return RunRecord(
        run_id=run_id,
        pipeline=pipeline,
        logical_date=str(day),
        status=status,
        started_at=started,
        finished_at=started,
        duration_s=1.5,
        rows_in=100 + n,
        rows_written=90 + n,
        rows_rejected=7,
        rows_deduplicated=3,
        rows_filtered=0,
        rows_warned=0,
        details={"checks": stored_checks},
        error=error,
    )


def save_runs(store: RunStore, records: list[RunRecord]) -> None:
    """What RunStore.save does for each record (same columns, same details encoding), in one
    transaction: thousands of separate commits would cost a disk sync each."""
    rows = [
        {**asdict(r), "details": json.dumps(r.details, default=str, sort_keys=True)}
        for r in records
    ]
    columns = list(rows[0])
    marks = ", ".join(f":{c}" for c in columns)
    con = sqlite3.connect(store.path)
    with con:
        con.executemany(f"INSERT INTO runs ({', '.join(columns)}) VALUES ({marks})", rows)
    con.close()


def new_state(tmp_path: Path) -> tuple[Path, RunStore]:
    state = tmp_path / ".sluice"
    return state, RunStore(state / "runs.db")


def hrefs(page: Path) -> list[str]:
    return re.findall(r'href="([^"]+)"', page.read_text())


def test_three_thousand_runs_render_fast_with_paginated_index_and_resolving_links(
    tmp_path: Path,
) -> None:
    state, store = new_state(tmp_path)
    records = [
        make_run(state, n, checks=[check(status="failed" if n % 7 else "passed")])
        for n in range(3000)
    ]
    save_runs(store, records)
    assert store.get(records[1234].run_id) == records[1234]
    out = tmp_path / "site"

    started = time.perf_counter()
    summary = build_report(state, out)
    elapsed = time.perf_counter() - started

    assert elapsed < 5, f"report took {elapsed:.1f}s"
    assert (summary.runs, summary.index_pages) == (3000, 60)
    assert (summary.run_pages_written, summary.run_pages_kept) == (500, 0)
    index_pages = [*sorted(out.glob("runs-*.html")), out / "index.html"]
    assert len(index_pages) == 60
    assert len(list((out / "runs").glob("*.html"))) == 500
    linked = set()
    for page in index_pages:
        for href in hrefs(page):
            assert (page.parent / href).is_file(), f"{page.name} links to missing {href}"
            linked.add(href)
    assert "trends/orders.html" in linked and "runs-60.html" in linked
    assert sum(h.startswith("runs/") for h in linked) == 500
    assert "newest 500 of 3,000 runs" in (out / "index.html").read_text()
    run_page = out / "runs" / f"{records[-1].run_id}.html"
    assert {"../index.html", "../trends/orders.html"} == set(hrefs(run_page))
    assert all((run_page.parent / href).is_file() for href in hrefs(run_page))


def test_the_index_lists_runs_newest_first_with_counts_and_pager_links(tmp_path: Path) -> None:
    state, store = new_state(tmp_path)
    ids = [
        save_run(state, store, n, checks=[check("a"), check("b", status="failed")])
        for n in range(5)
    ]
    out = tmp_path / "site"

    build_report(state, out, page_size=2)

    first, second, third = (out / name for name in ("index.html", "runs-2.html", "runs-3.html"))
    text = first.read_text()
    assert text.index(ids[4]) < text.index(ids[3])
    assert ids[2] not in text
    assert "runs-2.html" in hrefs(first) and 'rel="prev"' not in text
    assert {"index.html", "runs-3.html"} <= set(hrefs(second))
    assert ids[0] in third.read_text() and 'rel="next"' not in third.read_text()
    row = re.search(rf"<tr><td><a[^>]*>{ids[4]}</a>.*?</tr>", text)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0))
    assert cells[4:10] == ["104", "94", "7", "3", "1", '<span class="failed">1</span>']
    assert cells[10] == "1.50 s"


def test_fewer_runs_remove_index_pages_left_from_an_earlier_build(tmp_path: Path) -> None:
    state, store = new_state(tmp_path)
    for n in range(5):
        save_run(state, store, n, pipeline="orders" if n < 2 else "events")
    out = tmp_path / "site"
    build_report(state, out, page_size=1)
    assert (out / "runs-5.html").is_file()

    summary = build_report(state, out, page_size=1, pipeline="orders")

    assert summary.index_pages == 2
    assert sorted(p.name for p in out.glob("runs-*.html")) == ["runs-2.html"]
    assert "events" not in (out / "index.html").read_text()


def test_a_run_page_shows_accounting_every_check_its_sample_and_the_error(
    tmp_path: Path,
) -> None:
    state, store = new_state(tmp_path)
    failing = check(
        "email allowed",
        status="failed",
        observed=0.625,
        unexpected_sample=["tok_1a2b", "tok_9f"],
        duration_s=0.125,
    )
    run_id = save_run(
        state,
        store,
        1,
        checks=[check("amount in range"), failing],
        status="failed",
        error="1 error check(s) failed, nothing was published: email allowed",
    )
    out = tmp_path / "site"

    build_report(state, out)

    page = (out / "runs" / f"{run_id}.html").read_text()
    assert "nothing was published: email allowed" in page
    assert "<td>amount in range</td>" in page and "<td>email allowed</td>" in page
    assert "<code>tok_1a2b</code> <code>tok_9f</code>" in page
    assert '<td class="num">37.5 %</td>' in page
    assert "0.12 s" in page and "Audited in 0.25 s with 1 engine statement(s)" in page
    assert "1 passed, 1 failed" in page
    assert '<span class="failed">not balanced' not in page
    assert '<td class="num">101</td><td class="num">91</td>' in page


def test_a_run_without_results_file_takes_its_checks_from_the_run_store(tmp_path: Path) -> None:
    state, store = new_state(tmp_path)
    run_id = save_run(state, store, 1, checks=[check("kept in store")], with_results=False)
    out = tmp_path / "site"

    build_report(state, out)

    page = (out / "runs" / f"{run_id}.html").read_text()
    assert "<td>kept in store</td>" in page
    assert "No results file for this run" in page


def test_names_messages_errors_and_samples_are_escaped(tmp_path: Path) -> None:
    state, store = new_state(tmp_path)
    hostile = check(
        SCRIPT, status="failed", message=f"bad {SCRIPT}", unexpected_sample=[SCRIPT, '"><img>']
    )
    run_id = save_run(state, store, 1, checks=[hostile], error=SCRIPT, pipeline=f"p{SCRIPT}")
    out = tmp_path / "site"

    build_report(state, out)

    pages = [out / "index.html", out / "runs" / f"{run_id}.html"]
    pages += list((out / "trends").glob("*.html"))
    assert len(pages) == 3
    for page in pages:
        text = page.read_text()
        assert "<script" not in text and "<img" not in text, page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, page
    assert "<code>&quot;&gt;&lt;img&gt;</code>" in pages[1].read_text()
    assert "/" not in file_name(f"p{SCRIPT}")


def test_trend_page_charts_rows_and_each_check_per_logical_date_offline(tmp_path: Path) -> None:
    state, store = new_state(tmp_path)
    day = date(2025, 1, 1)
    for n, status in enumerate(["passed", "failed", "passed"]):
        checks = [check("amount in range", status=status, observed=0.5 + n / 10)]
        save_run(state, store, n, checks=checks, logical_date=day + timedelta(days=n))
    rerun = [check("amount in range", status="passed", observed=0.9)]
    save_run(state, store, 3, checks=rerun, logical_date=day + timedelta(days=1))
    out = tmp_path / "site"

    build_report(state, out)

    text = (out / "trends" / "orders.html").read_text()
    assert "<script" not in text and "http" not in text and " src=" not in text
    assert text.count("<svg") == 4
    assert "3 logical date(s)" in text
    assert "<title>2025-01-02: passed</title>" in text
    assert "<title>2025-01-02: failed</title>" not in text
    assert "failed on 0 of 3 date(s)" in text
    assert "<title>2025-01-02: observed value 0.9</title>" in text
    assert "<title>2025-01-03: written 92</title>" in text


def test_an_up_to_date_run_page_is_kept_and_a_newer_results_file_rewrites_it(
    tmp_path: Path,
) -> None:
    state, store = new_state(tmp_path)
    old, new = (save_run(state, store, n) for n in range(2))
    out = tmp_path / "site"
    build_report(state, out)
    pages = {run_id: out / "runs" / f"{run_id}.html" for run_id in (old, new)}
    for page in pages.values():
        page.write_text(page.read_text() + "<!-- earlier build -->")
    later = time.time() + 10
    os.utime(state / "results" / f"{new}.json", (later, later))

    summary = build_report(state, out)

    assert (summary.run_pages_written, summary.run_pages_kept) == (1, 1)
    assert "earlier build" in pages[old].read_text()
    assert "earlier build" not in pages[new].read_text()
    assert build_report(state, out, rewrite=True).run_pages_written == 2


def test_render_run_writes_only_that_run_page(tmp_path: Path) -> None:
    state, store = new_state(tmp_path)
    first, second = (save_run(state, store, n) for n in range(2))
    out = tmp_path / "site"

    page = render_run(state, out, second[:17])

    assert page == out / "runs" / f"{second}.html"
    assert [p.name for p in out.rglob("*.html")] == [f"{second}.html"]
    assert first not in page.read_text()


def test_cli_run_option_prints_the_page_path(tmp_path: Path) -> None:
    state, store = new_state(tmp_path)
    run_id = save_run(state, store, 1)
    out = tmp_path / "site"

    result = CliRunner().invoke(
        report, ["--state-dir", str(state), "-o", str(out), "--run", run_id]
    )

    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out / "runs" / f"{run_id}.html")


def test_cli_builds_the_site_and_says_what_it_wrote(tmp_path: Path) -> None:
    state, store = new_state(tmp_path)
    for n in range(3):
        save_run(state, store, n)

    result = CliRunner().invoke(report, ["--state-dir", str(state), "--page-size", "2"])

    assert result.exit_code == 0, result.output
    assert f"report: {state.resolve() / 'report' / 'index.html'}" in result.output
    assert "3 run(s) on 2 index page(s); run pages: 3 written, 0 up to date" in result.output
    assert (state / "report" / "runs-2.html").is_file()


def test_cli_without_a_state_dir_says_how_to_get_one_and_exits_1(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    result = CliRunner().invoke(report, ["--state-dir", str(missing)])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert f"no run store at {missing.resolve() / 'runs.db'}" in result.stderr
    assert "sluice run SPEC" in result.stderr and "Traceback" not in result.stderr
    assert not missing.exists()


def test_cli_with_no_runs_of_the_pipeline_names_the_pipelines_that_have_runs(
    tmp_path: Path,
) -> None:
    state, store = new_state(tmp_path)
    save_run(state, store, 1, pipeline="orders")

    result = CliRunner().invoke(report, ["--state-dir", str(state), "--pipeline", "clicks"])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "no runs of pipeline 'clicks'" in result.stderr
    assert "pipelines with runs: orders" in result.stderr


def test_cli_with_an_unknown_run_id_exits_1_with_a_hint(tmp_path: Path) -> None:
    state, store = new_state(tmp_path)
    save_run(state, store, 1)

    result = CliRunner().invoke(report, ["--state-dir", str(state), "--run", "nope"])

    assert result.exit_code == 1
    assert "no run 'nope'" in result.stderr and "sluice runs" in result.stderr


def test_a_file_that_is_not_a_run_store_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / ".sluice"
    state.mkdir()
    (state / "runs.db").write_text("not sqlite at all, just text " * 100)

    result = CliRunner().invoke(report, ["--state-dir", str(state)])

    assert result.exit_code == 1
    assert "cannot read the run store" in result.stderr


def test_runs_started_in_the_same_second_list_the_one_saved_last_first(tmp_path: Path) -> None:
    state, store = new_state(tmp_path)
    earlier, later = make_run(state, 1), make_run(state, 1)
    earlier.run_id, later.run_id = "20200101T010000-ffffffff", "20200101T010000-00000000"
    store.save(earlier)
    store.save(later)

    build_report(state, tmp_path / "site")

    text = (tmp_path / "site" / "index.html").read_text()
    assert text.index(later.run_id) < text.index(earlier.run_id)


def test_cli_takes_the_pipeline_from_the_spec_and_refuses_a_different_one(tmp_path: Path) -> None:
    state, store = new_state(tmp_path)
    save_run(state, store, 1, pipeline="orders")
    save_run(state, store, 2, pipeline="clicks")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        "version: 1\npipeline: clicks\nsources:\n  clicks: {type: files, path: in/}\n"
        "sinks:\n  - {type: delta, path: lake/clicks}\n"
    )

    built = CliRunner().invoke(report, [str(spec), "--state-dir", str(state)])
    refused = CliRunner().invoke(report, [str(spec), "--state-dir", str(state), "--pipeline", "x"])

    assert built.exit_code == 0, built.output + built.stderr
    assert "1 run(s)" in built.output
    assert "orders" not in (state / "report" / "index.html").read_text()
    assert refused.exit_code == 1
    assert "--pipeline 'x' differs from the pipeline of" in refused.stderr
