"""The operating pages of the dashboard: dead letters and replay, lineage, the catalog.

Dead-letter rows show only their masked `payload`; `raw_payload` is dropped as soon as the
table is read. Replay runs `sluiceway.core.replay.replay`, the code path of `sluice replay`,
with the spec as it is on disk now (so a fixed spec lets the rows pass).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sluiceway.core.replay import ReplayResult, dead_letter_table, replay
from sluiceway.core.runner import RunOptions
from sluiceway.observability.report_html import Html, _esc, _facts, _table
from sluiceway.ui.catalog import Dataset, LoadedSpec, lineage_edges
from sluiceway.ui.html import link, page, pager, segment
from sluiceway.ui.pages import Dashboard, NotFound, freshness
from sluiceway.ui.svg import lineage_graph

LETTERS_PER_PAGE = 50
_REPLAY_LOCK = threading.Lock()


def _spec(app: Dashboard, name: str) -> LoadedSpec:
    spec = app.catalog.pipelines().get(name)
    if spec is None or spec.pipeline is None:
        raise NotFound(f"no pipeline '{name}' in the project's specs")
    return spec


def _options(app: Dashboard, spec: LoadedSpec) -> RunOptions:
    return RunOptions(base_dir=spec.path.parent, state_dir=app.state_dir)


def dlq_page(app: Dashboard, name: str, *, run_id: str, rule: str, page_no: int) -> str:
    """`/dlq/<pipeline>`: dead-letter rows (masked), filtered by `?run=` and `?rule=`."""
    spec = _spec(app, name)
    assert spec.pipeline is not None
    table = dead_letter_table(spec.pipeline, _options(app, spec))
    letters = table.read(pipeline=name, run_id=run_id or None)
    rows = letters.drop_columns(["raw_payload"]).to_pylist()
    del letters
    rules = sorted({e["rule"] for r in rows for e in r["errors"] or [] if e["rule"]})
    if rule:
        rows = [r for r in rows if any(e["rule"] == rule for e in r["errors"] or [])]
    pages = max((len(rows) + LETTERS_PER_PAGE - 1) // LETTERS_PER_PAGE, 1)
    start = (max(page_no, 1) - 1) * LETTERS_PER_PAGE
    shown = rows[start : start + LETTERS_PER_PAGE]
    path = f"/dlq/{segment(name)}"
    body = [
        f'<p id="dlq-count">{len(rows):,} dead-letter row(s)'
        f"{' of run ' + _esc(run_id) if run_id else ''}"
        f"{' failing rule ' + _esc(rule) if rule else ''}.</p>",
        _rule_filter(path, rules, run_id, rule),
        _replay_forms(app, name, sorted({r["run_id"] for r in rows if r["stage"] == "contract"})),
        pager(path, page_no, pages, run=run_id, rule=rule),
        _table(
            ["dlq id", "run", "where", "stage", "errors", "payload (masked)"],
            [_letter_row(r) for r in shown],
        ),
    ]
    return page(f"Dead letters: {name}", "".join(body))


def _rule_filter(path: str, rules: list[str], run_id: str, rule: str) -> str:
    links = [link(path, "all rules", run=run_id)] + [
        Html(f"<strong>{_esc(r)}</strong>") if r == rule else link(path, r, run=run_id, rule=r)
        for r in rules
    ]
    return f'<nav class="sub">Filter by rule: {" · ".join(links)}</nav>' if rules else ""


def _replay_forms(app: Dashboard, name: str, runs: list[str]) -> str:
    forms = [
        f'<form class="inline" method="post" action="/dlq/{_esc(segment(name))}/replay?run='
        f'{_esc(segment(run))}"><input type="hidden" name="csrf" value="{_esc(app.form_token)}">'
        f'<button type="submit" name="replay" value="{_esc(run)}">Replay run {_esc(run)}'
        "</button></form> "
        for run in runs[:20]
    ]
    return f"<p>{''.join(forms)}</p>" if forms else ""


def _letter_row(row: dict[str, Any]) -> list[Any]:
    where = f"{Path(row['file'] or '').name}:{row['line'] or row['row'] or '?'}"
    errors = "; ".join(
        f"{e['column'] or '*'}.{e['rule']}: {e['reason']}" for e in row["errors"] or []
    )
    return [
        row["dlq_id"][:12],
        link(f"/runs/{segment(row['run_id'] or '')}", row["run_id"]),
        where,
        row["stage"],
        errors,
        row["payload"] if row["payload"] is not None else "(encrypted)",
    ]


def run_replay(app: Dashboard, name: str, run_id: str) -> ReplayResult:
    """Replay `run_id`'s contract dead letters through the spec as it is on disk now; one
    replay at a time.

    Raises:
        NotFound: the pipeline is not in the project.
        SluicewayError: the replay could not run (e.g. encrypted letters without the key).
    """
    spec = _spec(app, name)
    assert spec.pipeline is not None
    with _REPLAY_LOCK:
        return replay(spec.pipeline, run_id, _options(app, spec))


def replay_page(name: str, run_id: str, outcome: ReplayResult) -> str:
    """The outcome of a replay, with links to the replay run and the remaining letters."""
    replay_run = outcome.run
    facts = [
        ("replayed", outcome.replayed),
        ("passed", outcome.passed),
        ("deleted from dead letters", outcome.deleted),
        ("still failing", outcome.still_failing),
        (
            "replay run",
            link(f"/runs/{segment(replay_run.run_id)}", replay_run.run_id)
            if replay_run
            else "none",
        ),
    ]
    return page(
        f"Replay of {run_id}",
        f'<p class="outcome" id="replay-outcome">Replayed {outcome.replayed:,} dead letter(s): '
        f"{outcome.passed:,} passed and left the dead-letter table ({outcome.deleted:,} deleted), "
        f"{outcome.still_failing:,} still fail.</p>"
        + _facts(facts)
        + f"<p>{link(f'/dlq/{segment(name)}', 'Remaining dead letters of this run', run=run_id)}</p>",
    )


def lineage_page(app: Dashboard) -> str:
    """`/lineage`: pipelines linked by the datasets one writes and another reads."""
    datasets = app.catalog.datasets()
    edges = lineage_edges(datasets)
    names = sorted(app.catalog.pipelines())
    rows = [
        [
            link(f"/pipelines/{segment(u)}", u),
            link("/catalog", label, q=label),
            link(f"/pipelines/{segment(d)}", d),
        ]
        for u, d, label in edges
    ]
    return page(
        "Lineage",
        lineage_graph(names, edges)
        + "<h2>Links</h2>"
        + (
            _table(["upstream", "dataset", "downstream"], rows)
            if rows
            else '<p class="note">No pipeline reads a dataset another writes.</p>'
        ),
    )


def catalog_page(app: Dashboard, query: str) -> str:
    """`/catalog?q=`: every dataset with columns, types, descriptions, PII tags, owner,
    freshness and neighbours; `q` matches names, columns, descriptions and pipelines."""
    datasets = sorted(app.catalog.datasets().values(), key=lambda d: d.label)
    shown = [d for d in datasets if _matches(d, query.strip().lower())]
    states = app.reader.pipeline_states()
    specs = app.catalog.pipelines()
    search = (
        '<form method="get" action="/catalog"><input type="search" name="q" '
        f'value="{_esc(query)}" placeholder="name, column or description"> '
        "<button>Search</button></form>"
        f'<p id="catalog-count">{len(shown):,} of {len(datasets):,} dataset(s)</p>'
    )
    sections = [_dataset_section(d, datasets, states, specs) for d in shown]
    return page("Catalog", search + "".join(sections))


def _matches(data: Dataset, query: str) -> bool:
    if not query:
        return True
    words = [data.label, data.kind, *data.producers, *data.consumers, *data.owners]
    words += [c.name for c in data.columns] + [c.description or "" for c in data.columns]
    return any(query in w.lower() for w in words)


def _dataset_section(
    data: Dataset, every: list[Dataset], states: dict[str, Any], specs: dict[str, LoadedSpec]
) -> str:
    upstream = sorted(
        {d.label for d in every for p in data.producers if p in d.consumers} - {data.label}
    )
    downstream = sorted(
        {d.label for d in every for p in data.consumers if p in d.producers} - {data.label}
    )
    fresh: Any = ""
    if data.producers:
        producer = data.producers[0]
        state = states.get(producer)
        spec = specs.get(producer)
        fresh = freshness(spec.pipeline if spec else None, state)
    facts = [
        ("kind", data.kind),
        ("owner", ", ".join(data.owners)),
        ("written by", _pipeline_links(data.producers)),
        ("read by", _pipeline_links(data.consumers)),
        ("freshness", fresh),
        ("freshness target", data.freshness_target or ""),
        ("upstream", ", ".join(upstream)),
        ("downstream", ", ".join(downstream)),
    ]
    columns = _table(
        ["column", "type", "description", "PII"],
        [
            [
                c.name,
                c.type,
                c.description,
                Html(f'<span class="tag">pii: {_esc(c.pii)}</span>') if c.pii else "",
            ]
            for c in data.columns
        ],
    )
    return f'<section class="dataset"><h2>{_esc(data.label)}</h2>{_facts(facts)}{columns}</section>'


def _pipeline_links(names: list[str]) -> Html:
    return Html(", ".join(link(f"/pipelines/{segment(n)}", n) for n in names))
