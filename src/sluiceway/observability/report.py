"""Static HTML quality reports from the stored results of runs (`sluice report`).

The site is built from the run store (`<state_dir>/runs.db`, or PostgreSQL: see
`core.store_db`) and the results files
(`<state_dir>/results/<run_id>.json`), reading only what each page needs:

- `index.html`, `runs-2.html`, ...: every run, newest first, one summary row each; SQLite
  counts the passed checks, no results file is opened;
- `runs/<run_id>.html`: one run's accounting, checks and error, for the most recent
  `runs_limit` runs; a page written after its run ended and after its results file is kept;
- `trends/<pipeline>.html`: rows per logical date and every check's observed value and
  pass/fail over the most recent `runs_limit` runs, as inline SVG.

This module reads the store and lays out the pages; the HTML pieces they are made of (page
shell, CSS, tables, escaping) are in `report_html`, the SVG charts in `report_charts`.

Pages are self-contained (inline CSS and SVG, no script, nothing fetched), so the report opens
offline. Every stored text goes through `html.escape` on its way into a page (`_cell`,
`_esc` in `report_html`). Results hold no row values except each check's capped sample of
unexpected values, masked when it was written: the report shows it as given.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sluiceway.core.results import was_published
from sluiceway.core.runstore import RunRecord
from sluiceway.core.store_db import (
    NOT_A_REPLAY,
    StoreLocation,
    connect,
    db_errors,
    resolve_location,
)
from sluiceway.errors import ConfigError
from sluiceway.observability.report_charts import line_chart, status_strip
from sluiceway.observability.report_html import (
    Html,
    _esc,
    _facts,
    _fmt,
    _href,
    _page,
    _seconds,
    _status,
    _table,
)
from sluiceway.observability.report_sql import CHECK_POINTS, NEWEST_FIRST, SUMMARY_COLUMNS

__all__ = ["ReportSummary", "RunIndex", "build_report", "render_run"]

RUNS_LIMIT = 500
PAGE_SIZE = 50
_INDEX_HEADERS = (
    *("run", "pipeline", "logical date", "status", "in", "written", "rejected", "deduplicated"),
    *("checks passed", "checks failed", "duration"),
)
_CHECK_HEADERS = (
    *("name", "check", "column", "severity", "status", "observed", "unexpected"),
    *("unexpected %", "rows checked", "message", "unexpected sample", "time"),
)
_INDEX_PAGE = re.compile(r"runs-(\d+)\.html")


@dataclass(frozen=True)
class RunSummary:
    """One row of the runs list."""

    run_id: str
    pipeline: str
    logical_date: str
    status: str
    duration_s: float | None
    rows_in: int | None
    rows_written: int | None
    rows_rejected: int | None
    rows_deduplicated: int | None
    checks_passed: int
    checks_total: int


@dataclass(frozen=True)
class RunPoint:
    """A run on a trend chart: its logical date and row counts."""

    run_id: str
    logical_date: str
    status: str
    rows_in: int | None
    rows_written: int | None
    rows_rejected: int | None


@dataclass(frozen=True)
class CheckPoint:
    """One check of one run on a trend chart."""

    run_id: str
    check_id: str
    name: str
    check: str
    column: str | None
    status: str
    observed_value: float | None


@dataclass(frozen=True)
class ReportSummary:
    """What `build_report` wrote."""

    index: Path
    index_pages: int
    runs: int
    run_pages_written: int
    run_pages_kept: int
    trend_pages: list[Path]


class RunIndex:
    """Read-only queries on a state folder's run store and results files.

    Args:
        state_dir: the `.sluice` folder that holds `results/` (and `runs.db`).
        location: the run store (default: $SLUICE_RUN_STORE, else `<state_dir>/runs.db`).

    Raises:
        ConfigError: there is no run store in `state_dir`.
    """

    def __init__(self, state_dir: Path, *, location: StoreLocation | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.location = location or resolve_location(self.state_dir)
        self.dialect = self.location.dialect
        self.db = self.location.label
        if not self.location.exists():
            raise ConfigError(
                f"no run store at {self.db}: run a pipeline first (`sluice run SPEC`), or point "
                "--state-dir (or $SLUICE_HOME) at the folder that holds runs.db"
            )

    def _query(
        self, sql: str, params: Sequence[Any] = (), *, as_dict: bool = False
    ) -> Iterator[Any]:
        try:
            with connect(self.location, read_only=True, timeout=30) as con:
                for row in con.execute(sql, tuple(params)):
                    yield dict(row) if as_dict else tuple(row)
        except db_errors() as exc:
            raise ConfigError(
                f"cannot read the run store {self.db}: {self.location.scrub(str(exc))}; "
                "is it a sluice run store?"
            ) from exc

    @staticmethod
    def _where(pipeline: str | None) -> tuple[str, tuple[str, ...]]:
        return ("WHERE pipeline = ?", (pipeline,)) if pipeline else ("", ())

    def count(self, pipeline: str | None = None) -> int:
        """How many runs are stored (of `pipeline` only, when given)."""
        where, params = self._where(pipeline)
        [(count,)] = list(self._query(f"SELECT count(*) FROM runs {where}", params))
        return int(count)

    def pipelines(self, pipeline: str | None = None) -> list[str]:
        """The pipelines that have runs, by name."""
        where, params = self._where(pipeline)
        sql = f"SELECT DISTINCT pipeline FROM runs {where} ORDER BY pipeline"
        return [row[0] for row in self._query(sql, params)]

    def summaries(self, pipeline: str | None = None) -> Iterator[RunSummary]:
        """Every run's summary row, newest first, streamed."""
        where, params = self._where(pipeline)
        sql = (
            f"SELECT {SUMMARY_COLUMNS[self.dialect]} FROM runs {where} {NEWEST_FIRST[self.dialect]}"
        )
        return (RunSummary(*row) for row in self._query(sql, params))

    def recent_records(self, pipeline: str | None, limit: int) -> Iterator[RunRecord]:
        """The most recent `limit` runs, whole, newest first, streamed."""
        where, params = self._where(pipeline)
        sql = f"SELECT * FROM runs {where} {NEWEST_FIRST[self.dialect]} LIMIT ?"
        return (_record(row) for row in self._query(sql, (*params, limit), as_dict=True))

    def record(self, run_id: str) -> RunRecord | None:
        """A run by its exact id, else by a unique prefix of it; None when there is none or
        several."""
        exact = list(self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,), as_dict=True))
        sql = "SELECT * FROM runs WHERE substr(run_id, 1, ?) = ? LIMIT 2"
        rows = exact or list(self._query(sql, (len(run_id), run_id), as_dict=True))
        return _record(rows[0]) if len(rows) == 1 else None

    def run_points(self, pipeline: str, limit: int) -> list[RunPoint]:
        """The most recent `limit` runs of a pipeline, oldest first."""
        sql = (
            "SELECT run_id, logical_date, status, rows_in, rows_written, rows_rejected FROM runs "
            f"WHERE pipeline = ? AND {NOT_A_REPLAY} {NEWEST_FIRST[self.dialect]} LIMIT ?"
        )
        return [RunPoint(*row) for row in reversed(list(self._query(sql, (pipeline, limit))))]

    def check_points(self, pipeline: str, limit: int) -> list[CheckPoint]:
        """Every check of the most recent `limit` runs of a pipeline."""
        sql = CHECK_POINTS[self.dialect]
        return [CheckPoint(*row) for row in self._query(sql, (pipeline, limit))]

    def results_path(self, run_id: str) -> Path:
        """Where a run's results file is (it may not exist)."""
        return self.state_dir / "results" / f"{run_id}.json"


def _record(data: dict[str, Any]) -> RunRecord:
    data["details"] = json.loads(data.get("details") or "{}")
    known = RunRecord.__dataclass_fields__
    return RunRecord(**{k: v for k, v in data.items() if k in known})


# --- the site ---------------------------------------------------------------------------------


def build_report(
    state_dir: Path,
    out_dir: Path,
    *,
    pipeline: str | None = None,
    page_size: int = PAGE_SIZE,
    runs_limit: int = RUNS_LIMIT,
    rewrite: bool = False,
    location: StoreLocation | None = None,
) -> ReportSummary:
    """Write the whole report: the paginated runs list, run pages and trend pages.

    Args:
        state_dir: the `.sluice` folder with `runs.db` and `results/`.
        out_dir: where the site goes (created).
        pipeline: only this pipeline's runs.
        page_size: runs per index page.
        runs_limit: run pages and trend points for at most this many of the newest runs.
        rewrite: rewrite run pages even when they are up to date.
        location: the run store (default: $SLUICE_RUN_STORE, else `<state_dir>/runs.db`).

    Returns:
        What was written.

    Raises:
        ConfigError: no run store, or no runs (of `pipeline`) in it.
    """
    index = RunIndex(state_dir, location=location)
    total = index.count(pipeline)
    if total == 0:
        scope = f" of pipeline '{pipeline}'" if pipeline else ""
        known = ", ".join(index.pipelines()) or "none"
        raise ConfigError(
            f"no runs{scope} in {index.db} (pipelines with runs: {known}); "
            "run one with `sluice run SPEC`"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    pipelines = index.pipelines(pipeline)
    written = kept = 0
    detailed: set[str] = set()
    for record in index.recent_records(pipeline, runs_limit):
        detailed.add(record.run_id)
        if _write_run_page(index, record, out_dir, rewrite=rewrite):
            written += 1
        else:
            kept += 1
    trends = [_write_trends(index, name, out_dir, runs_limit) for name in pipelines]
    pages = _write_index(index, out_dir, pipeline, pipelines, total, page_size, detailed)
    return ReportSummary(out_dir / "index.html", pages, total, written, kept, trends)


def render_run(
    state_dir: Path, out_dir: Path, run_id: str, *, location: StoreLocation | None = None
) -> Path:
    """Write one run's page (always) and return its path.

    Raises:
        ConfigError: no run store, or no run with that id (or unique prefix).
    """
    index = RunIndex(state_dir, location=location)
    record = index.record(run_id)
    if record is None:
        raise ConfigError(
            f"no run '{run_id}' in {index.db} (or the prefix is ambiguous); "
            "list runs with `sluice runs`"
        )
    _write_run_page(index, record, out_dir, rewrite=True)
    return run_page_path(out_dir, record.run_id)


def run_page_path(out_dir: Path, run_id: str) -> Path:
    """Where a run's page is written."""
    return out_dir / "runs" / f"{file_name(run_id)}.html"


def file_name(name: str) -> str:
    """A file name for a run id or pipeline: the name itself when it is safe, else its safe
    characters and a hash (two names never share a file)."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}", name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60] + "-" + digest


def _write_run_page(index: RunIndex, record: RunRecord, out_dir: Path, *, rewrite: bool) -> bool:
    page = run_page_path(out_dir, record.run_id)
    results = index.results_path(record.run_id)
    if not rewrite and _is_up_to_date(page, results, record):
        return False
    document, problem = _read_results(results)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(run_page(record, document, problem), encoding="utf-8")
    return True


def _is_up_to_date(page: Path, results: Path, record: RunRecord) -> bool:
    if record.status == "running" or not page.is_file():
        return False
    written = page.stat().st_mtime
    if results.is_file() and results.stat().st_mtime > written:
        return False
    try:
        finished = datetime.strptime(record.finished_at or "", "%Y%m%dT%H%M%S")
    except ValueError:
        return False
    return finished.replace(tzinfo=UTC).timestamp() <= written


def _read_results(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    if not path.is_file():
        return None, None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return (
            None,
            f"the results file {path} cannot be read ({exc}); checks come from the run store",
        )
    if not isinstance(document, dict) or not isinstance(document.get("checks"), list):
        return None, f"the results file {path} has no checks list; checks come from the run store"
    return document, None


def _write_index(
    index: RunIndex,
    out_dir: Path,
    pipeline: str | None,
    pipelines: list[str],
    total: int,
    page_size: int,
    detailed: set[str],
) -> int:
    pages = max(1, -(-total // page_size))
    rows: list[RunSummary] = []
    number = 1
    for summary in index.summaries(pipeline):
        rows.append(summary)
        if len(rows) == page_size:
            _write_index_page(out_dir, rows, number, pages, total, pipelines, detailed)
            rows, number = [], number + 1
    if rows or number == 1:
        _write_index_page(out_dir, rows, number, pages, total, pipelines, detailed)
    for stale in out_dir.glob("runs-*.html"):
        match = _INDEX_PAGE.fullmatch(stale.name)
        if match and int(match.group(1)) > pages:
            stale.unlink()
    return pages


def index_page_name(number: int) -> str:
    """The file of the n-th page of the runs list (1-based)."""
    return "index.html" if number == 1 else f"runs-{number}.html"


def _write_index_page(
    out_dir: Path,
    rows: list[RunSummary],
    number: int,
    pages: int,
    total: int,
    pipelines: list[str],
    detailed: set[str],
) -> None:
    nav = _pager(number, pages)
    trends = " · ".join(
        f'<a href="trends/{_href(file_name(p))}.html">{_esc(p)}</a>' for p in pipelines
    )
    note = ""
    if total > len(detailed):
        note = (
            f'<p class="note">Run pages exist for the newest {len(detailed):,} of {total:,} runs '
            "(<code>--runs-limit</code>); older runs are listed without one.</p>"
        )
    table = _table(
        _INDEX_HEADERS,
        [_index_row(r, r.run_id in detailed) for r in rows],
        numeric=range(4, 11),
    )
    body = f"<p>{total:,} run(s), newest first. Trends: {trends}</p>{note}{nav}{table}{nav}"
    title = "Runs" if pages == 1 else f"Runs — page {number} of {pages}"
    (out_dir / index_page_name(number)).write_text(_page(title, body, root=""), encoding="utf-8")


def _index_row(run: RunSummary, has_page: bool) -> list[Any]:
    href = f"runs/{_href(file_name(run.run_id))}.html"
    link = Html(f'<a href="{href}">{_esc(run.run_id)}</a>') if has_page else run.run_id
    failed = run.checks_total - run.checks_passed
    return [
        link,
        run.pipeline,
        run.logical_date,
        _status(run.status),
        run.rows_in,
        run.rows_written,
        run.rows_rejected,
        run.rows_deduplicated,
        run.checks_passed,
        Html(f'<span class="failed">{failed:,}</span>') if failed else failed,
        _seconds(run.duration_s),
    ]


def _pager(number: int, pages: int) -> str:
    if pages == 1:
        return ""
    prev = f'<a rel="prev" href="{index_page_name(number - 1)}">← newer</a>' if number > 1 else ""
    following = (
        f'<a rel="next" href="{index_page_name(number + 1)}">older →</a>' if number < pages else ""
    )
    first = f'<a href="{index_page_name(1)}">first</a>'
    last = f'<a href="{index_page_name(pages)}">last</a>'
    return f'<nav class="pager">{first} {prev} page {number} of {pages} {following} {last}</nav>'


# --- a run's page -----------------------------------------------------------------------------


def run_page(record: RunRecord, document: dict[str, Any] | None, problem: str | None) -> str:
    """The HTML page of one run.

    Args:
        record: the run as the run store keeps it.
        document: its results file (checks with samples), or None when it has none.
        problem: why a results file that exists could not be used, if so.
    """
    details = record.details or {}
    trend = f"../trends/{_href(file_name(record.pipeline))}.html"
    facts = [
        ("pipeline", Html(f'<a href="{trend}">{_esc(record.pipeline)}</a>')),
        ("status", _status(record.status)),
        ("logical date", record.logical_date),
        ("started", record.started_at),
        ("finished", record.finished_at),
        ("duration", _seconds(record.duration_s)),
        ("spec hash", record.spec_hash),
    ]
    parts = [_facts(facts)]
    if record.error:
        parts.append(f'<h2>Error</h2><pre class="error">{_esc(record.error)}</pre>')
    parts.append(_accounting(record))
    parts.append(_outputs(details))
    parts.append(_checks_section(details, document, problem))
    return _page(f"Run {record.run_id}", "".join(parts), root="../")


def _accounting(record: RunRecord) -> str:
    terms = ("rows_written", "rows_rejected", "rows_deduplicated", "rows_filtered")
    values = [getattr(record, name) for name in ("rows_in", *terms, "rows_warned")]
    accounted = sum(getattr(record, name) or 0 for name in terms)
    balanced = record.rows_in is not None and record.rows_in == accounted
    verdict = (
        '<span class="passed">balanced</span>'
        if balanced
        else f'<span class="failed">not balanced: {accounted:,} accounted for</span>'
    )
    kept = "written"
    if record.status != "running" and not was_published(record.status, record.details or {}):
        kept = "staged, not published"  # a failed run: its rows never reached the table
    table = _table(
        ["in", kept, "rejected", "deduplicated", "filtered", "warned"],
        [values],
        numeric=range(6),
    )
    return (
        f"<h2>Rows</h2>{table}<p>in = {kept} + rejected + deduplicated + filtered → {verdict}</p>"
    )


def _outputs(details: dict[str, Any]) -> str:
    parts = []
    sources = details.get("sources") or {}
    if sources:
        names = sorted({key for counts in sources.values() for key in counts})
        rows = [[name, *(counts.get(k) for k in names)] for name, counts in sources.items()]
        parts.append("<h2>Sources</h2>" + _table(["source", *names], rows, numeric=range(1, 9)))
    sinks = details.get("sinks") or []
    if sinks:
        rows = [
            [s.get("uri"), s.get("version"), s.get("skipped"), s.get("rows_written")] for s in sinks
        ]
        parts.append("<h2>Sinks</h2>" + _table(["table", "version", "skipped", "rows"], rows))
    if details.get("dead_letter_uri"):
        parts.append(
            f"<p>Dead-letter table: <code>{_esc(details['dead_letter_uri'])}</code> "
            f"({_fmt(details.get('dead_letter_rows'))} row(s) this run)</p>"
        )
    by_rule = details.get("rejected_by_rule") or {}
    if by_rule:
        rows = [[rule, count] for rule, count in by_rule.items()]
        rows.sort(key=lambda row: -int(row[1] or 0))
        parts.append("<h2>Rejected by rule</h2>" + _table(["rule", "rows"], rows, numeric={1}))
    return "".join(parts)


def _checks_section(
    details: dict[str, Any], document: dict[str, Any] | None, problem: str | None
) -> str:
    checks = document["checks"] if document else details.get("checks") or []
    notes = [problem] if problem else []
    if document:
        notes.append(
            f"Audited in {_seconds(document.get('duration_s'))} with "
            f"{_fmt(document.get('statements'))} engine statement(s)."
        )
    elif checks:
        notes.append(
            "No results file for this run: checks come from the run store, without samples."
        )
    if not checks:
        return "<h2>Checks</h2><p>No table checks ran.</p>"
    rows = [_check_row(c) for c in checks if isinstance(c, dict)]
    passed = sum(c.get("status") == "passed" for c in checks if isinstance(c, dict))
    summary = f"<p>{passed} passed, {len(rows) - passed} failed.</p>"
    notes_html = "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)
    return (
        f"<h2>Checks</h2>{summary}{notes_html}{_table(_CHECK_HEADERS, rows, numeric=range(5, 9))}"
    )


def _check_row(check: dict[str, Any]) -> list[Any]:
    message = check.get("message") or ""
    if check.get("error"):
        message = f"{message}\n{check['error']}".strip()
    sample = check.get("unexpected_sample") or []
    sample_html = Html(
        "".join(f"<code>{_esc(value)}</code> " for value in sample)
        if isinstance(sample, list)
        else ""
    )
    percent = check.get("unexpected_percent")
    return [
        check.get("name"),
        check.get("check"),
        check.get("column"),
        check.get("severity"),
        _status(check.get("status") or ""),
        check.get("observed_value"),
        check.get("unexpected_count"),
        None if percent is None else f"{_fmt(percent)} %",
        check.get("rows_checked"),
        message,
        sample_html,
        _seconds(check.get("duration_s")),
    ]


# --- trends -----------------------------------------------------------------------------------


def _write_trends(index: RunIndex, pipeline: str, out_dir: Path, limit: int) -> Path:
    runs = _latest_per_date(index.run_points(pipeline, limit))
    dates = [run.logical_date for run in runs]
    by_run = {run.run_id: i for i, run in enumerate(runs)}
    # Tiers of one metric (warn at 3, error at 6) share a check id: the name tells them apart.
    series: dict[tuple[str, str], list[CheckPoint | None]] = {}
    for point in index.check_points(pipeline, limit):
        if point.run_id in by_run:
            key = (point.check_id, point.name)
            series.setdefault(key, [None] * len(runs))[by_run[point.run_id]] = point
    rows = {
        "in": [r.rows_in for r in runs],
        "written": [r.rows_written for r in runs],
        "rejected": [r.rows_rejected for r in runs],
    }
    parts = [
        f"<p>{len(runs):,} logical date(s) from the newest {limit:,} runs; a date run more than "
        "once shows its latest run.</p>",
        "<h2>Rows per logical date</h2>",
        line_chart(dates, rows),
        "<h3>Run status</h3>",
        status_strip(dates, [r.status for r in runs]),
    ]
    for (check_id, name), points in series.items():
        parts.append(_check_trend(check_id, name, dates, points))
    page = out_dir / "trends" / f"{file_name(pipeline)}.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(_page(f"Trends: {pipeline}", "".join(parts), root="../"), encoding="utf-8")
    return page


def _latest_per_date(runs: list[RunPoint]) -> list[RunPoint]:
    latest = {run.logical_date: run for run in runs}
    return [latest[day] for day in sorted(latest)]


def _check_trend(
    check_id: str, name: str, dates: list[str], points: list[CheckPoint | None]
) -> str:
    last = next(p for p in reversed(points) if p is not None)
    what = " · ".join(_esc(v) for v in (last.check, last.column) if v)
    observed = [p.observed_value if p else None for p in points]
    statuses = [p.status if p else "" for p in points]
    failed = sum(s in ("failed", "error") for s in statuses)
    return (
        f'<h2 id="check-{_esc(check_id)}-{_esc(file_name(name))}">{_esc(name)}</h2>'
        f"<p>{what} · <code>{_esc(check_id)}</code> · failed on {failed} of "
        f"{sum(bool(s) for s in statuses)} date(s)</p>"
        + line_chart(dates, {"observed value": observed})
        + status_strip(dates, statuses)
    )
