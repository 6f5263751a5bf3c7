"""The pipeline pages of the dashboard: the overview, one pipeline's runs and trends, a run.

Every page is a function of a `Dashboard` and the request's parameters returning HTML; no
page reads row data, only the run store's counts, check results and metric history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sluiceway.core.durations import parse_duration
from sluiceway.core.spec import Pipeline
from sluiceway.observability.report_charts import line_chart, status_strip
from sluiceway.observability.report_html import Html, _esc, _facts, _status, _table
from sluiceway.ui.catalog import SpecCatalog, redact
from sluiceway.ui.data import RUN_SERIES, PipelineState, RunRow, StoreReader
from sluiceway.ui.html import age, link, page, pager, segment, when
from sluiceway.ui.svg import timing_bars, waterfall

RUNS_PER_PAGE = 50
TREND_DATES = 90
MAX_CHECK_CHARTS = 12


@dataclass(frozen=True)
class Dashboard:
    """What every page reads: the run store, the project's specs, the state folder (dead
    letters) and the form token that POST forms must carry."""

    reader: StoreReader
    catalog: SpecCatalog
    state_dir: Path
    form_token: str


class NotFound(Exception):
    """The page's subject does not exist (answered with 404)."""


def overview(app: Dashboard) -> str:
    """`/`: every pipeline with its last status, last success, freshness and SLA."""
    states = app.reader.pipeline_states()
    specs = app.catalog.pipelines()
    rows = [
        _overview_row(name, states.get(name), specs.get(name)) for name in sorted({*states, *specs})
    ]
    problems = [s for s in app.catalog.specs() if s.problem]
    notes = "".join(
        f'<p class="error">{_esc(p.path.name)}: {_esc(p.problem)}</p>' for p in problems
    )
    headers = ["pipeline", "owner", "last run", "status", "last success", "freshness", "latency"]
    return page("Pipelines", notes + _table([*headers, "runs"], rows, numeric={7}))


def _overview_row(name: str, state: PipelineState | None, spec: Any) -> list[Any]:
    pipeline: Pipeline | None = spec.pipeline if spec else None
    last = state.last if state else None
    success = state.last_success if state else None
    return [
        link(f"/pipelines/{segment(name)}", name),
        pipeline.owner if pipeline else "",
        link(f"/runs/{segment(last.run_id)}", when(last.started)) if last else "never run",
        _status(last.status) if last else "",
        when((success.finished or success.started) if success else None),
        freshness(pipeline, state),
        latency(pipeline, last),
        state.runs if state else 0,
    ]


def freshness(pipeline: Pipeline | None, state: PipelineState | None) -> Html:
    """Age of the newest data published (`PipelineState.data_time`: the newest logical date
    that succeeded, as the freshness monitor judges tables) against `sla.freshness`."""
    target = pipeline.sla.freshness if pipeline and pipeline.sla else None
    instant = state.data_time if state else None
    if instant is None:
        return Html(f'<span class="late">no success</span>{_target(target)}')
    seconds = (datetime.now(UTC) - instant).total_seconds()
    if target is None:
        return Html(_esc(age(seconds)))
    is_late = seconds > parse_duration(target).total_seconds()
    css = "late" if is_late else "ok"
    return Html(f'<span class="{css}">{_esc(age(seconds))}</span>{_target(target)}')


def latency(pipeline: Pipeline | None, last: RunRow | None) -> Html:
    """The last run's duration against `sla.latency`."""
    target = pipeline.sla.latency if pipeline and pipeline.sla else None
    if last is None or last.duration_s is None:
        return Html(_target(target))
    text = _esc(f"{last.duration_s:.1f} s")
    if target is None:
        return Html(text)
    css = "late" if last.duration_s > parse_duration(target).total_seconds() else "ok"
    return Html(f'<span class="{css}">{text}</span>{_target(target)}')


def _target(target: str | None) -> str:
    return f' <span class="note">/ {_esc(target)}</span>' if target else ""


def pipeline_page(app: Dashboard, name: str, page_no: int) -> str:
    """`/pipelines/<name>`: facts, quality trends and the runs, `RUNS_PER_PAGE` a page."""
    spec = app.catalog.pipelines().get(name)
    offset = (max(page_no, 1) - 1) * RUNS_PER_PAGE
    runs, total = app.reader.runs(name, offset=offset, limit=RUNS_PER_PAGE)
    if spec is None and total == 0:
        raise NotFound(f"no pipeline '{name}' in the project or the run store")
    pages = max((total + RUNS_PER_PAGE - 1) // RUNS_PER_PAGE, 1)
    body = [
        _pipeline_facts(spec.pipeline if spec else None, total),
        f"<p>{link(f'/dlq/{segment(name)}', 'Dead-letter rows')}</p>",
        "<h2>Runs</h2>",
        pager(f"/pipelines/{segment(name)}", page_no, pages),
        _table(
            ["run", "logical date", "status", "started", "duration", "in", "written", "rejected"],
            [_run_row(r) for r in runs],
            numeric={4, 5, 6, 7},
        ),
        "<h2>Quality trends</h2>",
        trends(app.reader, name),
    ]
    return page(f"Pipeline {name}", "".join(body))


def _pipeline_facts(pipeline: Pipeline | None, total: int) -> str:
    if pipeline is None:
        return _facts([("spec", "not in the project (runs only)"), ("runs", total)])
    sla = pipeline.sla
    return _facts(
        [
            ("description", pipeline.description or ""),
            ("owner", pipeline.owner or ""),
            ("layer", pipeline.layer or ""),
            ("mode", pipeline.mode),
            ("schedule", pipeline.schedule.cron if pipeline.schedule else ""),
            ("sla freshness", sla.freshness if sla else ""),
            ("sla latency", sla.latency if sla else ""),
            ("runs", total),
        ]
    )


def _run_row(run: RunRow) -> list[Any]:
    return [
        link(f"/runs/{segment(run.run_id)}", run.run_id),
        run.logical_date,
        _run_status(run),
        when(run.started),
        f"{run.duration_s:.2f} s" if run.duration_s is not None else "",
        run.rows_in,
        "–" if run.written is None else run.written,
        run.rows_rejected,
    ]


def _run_status(run: RunRow) -> Html:
    """The run's status; a replay of dead letters says so (its counts are the replayed
    rows, not a run of the date)."""
    replay = ' <span class="note">(replay)</span>' if run.details.get("replay") else ""
    return Html(f"{_status(run.status)}{replay}")


def trends(reader: StoreReader, pipeline: str) -> str:
    """Line charts of row counts and of each check's observed value per logical date."""
    series = reader.metric_series(pipeline)
    dates = sorted({d for points in series.values() for d in points})[-TREND_DATES:]
    if not dates:
        return '<p class="note">No metric history yet.</p>'
    rows = {
        m.removeprefix("rows_"): [series.get((RUN_SERIES, m), {}).get(d) for d in dates]
        for m in ("rows_in", "rows_written", "rows_rejected")
    }
    parts = ["<h3>Rows per logical date</h3>", line_chart(dates, rows)]
    names = reader.check_names(pipeline)
    verdicts = reader.check_verdicts(pipeline)
    checks = sorted({c for c, m in series if c != RUN_SERIES and m == "observed_value"})
    for check_id in checks[:MAX_CHECK_CHARTS]:
        observed = series[(check_id, "observed_value")]
        failed = verdicts.get(check_id, {})
        parts += [
            f"<h3>{_esc(names.get(check_id, check_id))} <code>{_esc(check_id)}</code></h3>",
            line_chart(dates, {"observed value": [observed.get(d) for d in dates]}),
            status_strip(dates, [_point_status(d, observed, failed) for d in dates]),
        ]
    return "".join(parts)


def _point_status(day: str, observed: dict[str, float], failed: dict[str, bool]) -> str:
    """The check's verdict that date: not its unexpected count (an aggregate check fails
    with none; a routing check, or one with `mostly`, passes with some)."""
    if day not in observed:
        return ""
    return "failed" if failed.get(day) else "passed"


def _letters_link(app: Dashboard, run: RunRow) -> str:
    """The dead-letter browser needs the pipeline's spec (it says where the table is)."""
    if run.pipeline in app.catalog.pipelines():
        return link(f"/dlq/{segment(run.pipeline)}", "Show dead-letter rows", run=run.run_id)
    return (
        f"No spec of the project defines '{_esc(run.pipeline)}' now: "
        f"<code>sluice dlq SPEC --run {_esc(run.run_id)}</code> with its spec shows them."
    )


def run_page(app: Dashboard, run_id: str) -> str:
    """`/runs/<id>`: accounting waterfall, step timings, checks, outputs and the error."""
    run = app.reader.run(run_id)
    if run is None:
        raise NotFound(f"no run '{run_id}' in the run store")
    details = run.details
    stages = [
        ("in", run.rows_in or 0),
        ("rejected", run.rows_rejected or 0),
        ("deduplicated", run.rows_deduplicated or 0),
        ("filtered", run.rows_filtered or 0),
        ("written" if run.written is not None else "staged, not published", run.rows_written or 0),
    ]
    steps = [
        (f"{s.get('index', i)}. {s.get('step', '?')}", float(s.get("duration_s") or 0))
        for i, s in enumerate(details.get("steps") or [])
    ]
    letters = int(details.get("dead_letter_rows") or 0)
    body = [
        _facts(_run_facts(run)),
        f'<pre class="error">{_esc(redact(run.error))}</pre>' if run.error else "",
        "<h2>Row accounting</h2>",
        waterfall(stages),
        _rejected_by_rule(details.get("rejected_by_rule") or {}),
        "<h2>Dead letters</h2>",
        f"<p>{letters:,} dead-letter row(s) written. {_letters_link(app, run)}</p>",
        "<h2>Step timings</h2>",
        timing_bars(steps),
        "<h2>Checks</h2>",
        _checks(details.get("checks") or []),
        "<h2>Outputs</h2>",
        _outputs(run),
    ]
    return page(f"Run {run.run_id}", "".join(body))


def _outputs(run: RunRow) -> str:
    sinks = run.details.get("sinks") or []
    if run.status == "failed" and run.written is None:
        return (
            '<p class="note">Nothing was published: the run failed before its commit, so its '
            "tables are as they were. Fix what the error says, then run the date again: "
            f"<code>sluice run {_esc(run.pipeline)} --date {_esc(run.logical_date)}</code>.</p>"
        )
    return _table(
        ["sink", "rows written", "version"],
        [[redact(str(s.get("uri", ""))), s.get("rows_written"), s.get("version")] for s in sinks],
        numeric={1, 2},
    )


def _run_facts(run: RunRow) -> list[tuple[str, Any]]:
    return [
        ("pipeline", link(f"/pipelines/{segment(run.pipeline)}", run.pipeline)),
        ("status", _run_status(run)),
        ("logical date", run.logical_date),
        ("started", when(run.started)),
        ("finished", when(run.finished)),
        ("duration", f"{run.duration_s:.2f} s" if run.duration_s is not None else ""),
    ]


def _rejected_by_rule(by_rule: dict[str, Any]) -> str:
    if not by_rule:
        return ""
    rows = [[rule, count] for rule, count in sorted(by_rule.items())]
    return _table(["rejected by rule", "rows"], rows, numeric={1})


def _checks(checks: list[dict[str, Any]]) -> str:
    if not checks:
        return '<p class="note">No checks ran.</p>'
    headers = ["check", "column", "severity", "status", "observed", "unexpected", "message"]
    rows = [
        [
            c.get("name") or c.get("check"),
            c.get("column"),
            c.get("severity"),
            _status(str(c.get("status") or ("passed" if c.get("success") else "failed"))),
            c.get("observed_value"),
            c.get("unexpected_count"),
            redact(str(c.get("message") or c.get("error") or "")),
        ]
        for c in checks
    ]
    return _table(headers, rows, numeric={4, 5})
