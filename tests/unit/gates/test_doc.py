"""The specification document: the three example specs, a bare spec, escaping and well-formed
HTML with the inline SVG."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluiceway.core.loader import load_spec
from sluiceway.core.spec import Pipeline
from sluiceway.gates.doc import (
    NOT_DECLARED,
    build_document,
    build_graph,
    mermaid_label,
    mermaid_source,
    render_markdown,
)
from sluiceway.gates.doc_html import render_html
from sluiceway.gates.review import review
from sluiceway.ops.pricing import DEFAULT_PRICES, load_prices

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
VOID_ELEMENTS = {"meta", "br", "hr", "img", "input", "link", "col", "wbr"}


def _example(name: str) -> Pipeline:
    return load_spec(EXAMPLES / name / "pipeline.yaml")


def _markdown(pipeline: Pipeline) -> str:
    return render_markdown(build_document(pipeline, prices=load_prices(pipeline)))


def _html(pipeline: Pipeline) -> str:
    return render_html(build_document(pipeline, prices=load_prices(pipeline)))


def _write_spec(tmp_path: Path, data: dict[str, Any]) -> Pipeline:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_spec(path)


def _bare(tmp_path: Path) -> Pipeline:
    return _write_spec(
        tmp_path,
        {
            "version": 1,
            "pipeline": "bare",
            "sources": {"raw": {"type": "files", "path": "in/", "format": "csv"}},
            "sinks": [{"type": "delta", "path": "out"}],
        },
    )


class _TagBalance(HTMLParser):
    """Collects the tags that are never closed or closed out of order."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID_ELEMENTS:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> while open: {self.open[-3:]}")
            return
        self.open.pop()


def test_sources_table_lists_every_source_with_its_inventory() -> None:
    markdown = _markdown(_example("churn_features"))

    assert "| customers | postgres | 5k rows/day | 1h | full | crm@example.com | 4 |" in markdown
    assert "| tickets | files | 2k rows/day | 1d | full | support-ops@example.com | 6 |" in markdown
    assert "Primary source (feeds `input`): customers." in markdown


def test_stream_example_shows_its_stream_source_and_micro_batch_bounds() -> None:
    markdown = _markdown(_example("clickstream_stream"))

    assert "| events | redis_streams | 200/s | 10s | stream |" in markdown
    assert "stream (micro-batches ≤ 200000 rows or 1 s)" in markdown
    assert "| Redis Streams via redis-py |" in markdown


def test_mermaid_diagram_follows_the_runner_order_with_dead_letters() -> None:
    markdown = _markdown(_example("clickstream_batch"))
    diagram = markdown.split("```mermaid\n", 1)[1].split("```", 1)[0]

    assert diagram.startswith("flowchart LR\n")
    for edge in (
        "src0 --> step0",
        "src1 --> step1",  # products enters at the SQL step that joins it
        "step0 --> step1",
        "step1 --> mask",
        "mask --> checks",
        "checks --> sink0",
        'src0 -.->|"contract violations"| dlq',
    ):
        assert f"    {edge}\n" in diagram + "\n"
    assert "src1 --> step0" not in diagram
    assert 'step0["dedup on event_id"]' in diagram


def test_checks_routing_rows_to_dead_letter_get_a_dashed_edge(tmp_path: Path) -> None:
    data = _bare(tmp_path).to_data() | {
        "checks": [{"not_null": {"column": "id", "on_fail": "dead_letter"}}],
    }
    graph = build_graph(_write_spec(tmp_path, data))

    dashed = [(e.source, e.target) for e in graph.edges if e.is_dashed]
    assert dashed == [("checks", "dlq")]


def test_partitioning_rationale_explains_each_mode() -> None:
    churn = _markdown(_example("churn_features"))
    stream = _markdown(_example("clickstream_stream"))

    assert "overwrite_partition by feature_date makes backfills idempotent" in churn
    assert "append commits each input once" in stream
    assert "Hourly partitions make 24 per day" in stream


def test_an_unpartitioned_sink_below_a_million_rows_a_day_is_fine(tmp_path: Path) -> None:
    markdown = _markdown(_bare(tmp_path))

    assert "No partitioning: fine below ~1M rows/day (not declared)" in markdown


def test_an_unpartitioned_sink_above_a_million_rows_a_day_is_told_to_partition(
    tmp_path: Path,
) -> None:
    data = _bare(tmp_path).to_data()
    data["sources"]["raw"]["inventory"] = {"volume": "5M rows/day"}
    markdown = _markdown(_write_spec(tmp_path, data))

    assert "No partitioning with 5,000,000 rows/day declared: above ~1M rows/day" in markdown


def test_tiers_and_zorder_appear_in_the_partitioning_section(tmp_path: Path) -> None:
    data = _bare(tmp_path).to_data()
    data["sinks"] = [
        {
            "type": "delta",
            "path": "s3://lake/hot",
            "partition_by": ["event_date"],
            "mode": "overwrite_partition",
            "zorder_by": ["user_id"],
            "tiers": [{"name": "cold", "path": "s3://lake/cold", "after": "90d"}],
        }
    ]
    markdown = _markdown(_write_spec(tmp_path, data))

    assert "| tiers | hot s3://lake/hot → cold s3://lake/cold after 90d |" in markdown
    assert "Tiers age partitions by event_date" in markdown
    assert "Z-order by user_id" in markdown
    assert "| Amazon S3 (or S3-compatible) object storage | object storage (sinks[0]) |" in markdown


def test_cost_section_shows_the_hand_computed_figures(tmp_path: Path) -> None:
    data = _bare(tmp_path).to_data()
    data["sources"]["raw"]["inventory"] = {"volume": "2M rows/day", "row_bytes": 100}
    data["compliance"] = {"retention": "400d"}
    data["cost"] = {"budget_per_month": 5, "growth_per_year": 2}
    markdown = _markdown(_write_spec(tmp_path, data))

    # 0.2 GB/day × 400 days = 80 GB at $0.08 (local disk) = $6.40; compute adds $0.0122.
    assert (
        "| storage | sinks[0] local (out, 400 days) | 80.0000 GB-month | 0.08 USD | 6.40 USD |"
        in (markdown)
    )
    assert "| Total per month | 6.41 USD |" in markdown
    assert "| Budget per month | 5.00 USD: OVER by 1.41 |" in markdown
    assert "| Projected per month after 12 months | 12.82 USD |" in markdown
    assert "| storage_local_gb_month | 0.08 |" in markdown


def test_a_spec_missing_everything_optional_still_renders(tmp_path: Path) -> None:
    pipeline = _bare(tmp_path)
    markdown = _markdown(pipeline)
    page = _html(pipeline)

    assert f"| raw | files | {NOT_DECLARED} | {NOT_DECLARED} | {NOT_DECLARED} |" in markdown
    assert f"| SLA | latency | {NOT_DECLARED} |" in markdown
    assert f"| Owner | {NOT_DECLARED} |" in markdown
    assert "No contract: not declared" in markdown
    assert "<svg" in page
    assert markdown.count("\n## ") == 9


def test_every_warning_and_failure_of_the_review_becomes_a_risk(tmp_path: Path) -> None:
    pipeline = _bare(tmp_path)
    findings = [f for f in review(pipeline).findings if f.status != "pass"]
    risks = _markdown(pipeline).split("## 9. Risks and mitigations", 1)[1]

    assert findings, "a bare spec should draw review findings"
    for finding in findings:
        assert f"| {finding.status} | {finding.check} |" in risks
        assert finding.reason.replace("|", "\\|").replace("\n", " ") in risks


def test_mermaid_labels_escape_quotes_and_brackets() -> None:
    label = mermaid_label('out "x" [y] <z> #1; a|b')

    assert label == '"out #quot;x#quot; #91;y#93; #lt;z#gt; #35;1; a#124;b"'


def test_mermaid_node_ids_stay_safe_whatever_the_names(tmp_path: Path) -> None:
    data = _bare(tmp_path).to_data()
    data["sinks"] = [{"type": "delta", "path": 'lake/"odd" [name]'}]
    graph = build_graph(_write_spec(tmp_path, data))
    source = mermaid_source(graph)

    assert all(re.fullmatch(r"[a-z]+[0-9]*", node.id) for node in graph.nodes)
    assert 'sink0[("delta: lake/#quot;odd#quot; #91;name#93;")]' in source


@pytest.mark.parametrize("example", ["churn_features", "clickstream_batch", "clickstream_stream"])
def test_html_page_is_well_formed_self_contained_and_has_the_svg(example: str) -> None:
    page = _html(_example(example))
    parser = _TagBalance()
    parser.feed(page)
    parser.close()

    assert parser.errors == []
    assert parser.open == []
    names = [tag for tag, _ in parser.tags]
    assert "svg" in names and "details" in names
    assert "script" not in names and "link" not in names
    references = [
        value
        for _, attrs in parser.tags
        for key, value in attrs.items()
        if key in ("src", "href", "xlink:href") and value
    ]
    assert not [ref for ref in references if re.match(r"https?://", ref)]
    assert not re.search(r"@import|url\(\s*['\"]?https?:", page)


def test_html_svg_draws_one_box_per_node_and_one_arrow_per_edge() -> None:
    pipeline = _example("churn_features")
    graph = build_graph(pipeline)
    page = _html(pipeline)
    svg = page.split("<svg", 1)[1].split("</svg>", 1)[0]

    assert svg.count("<rect ") == len(graph.nodes)
    assert svg.count('class="edge') == len(graph.edges)
    assert svg.count('class="edge rejected"') == 4
    assert "customers (postgres)" in svg
    assert "flowchart LR" in page.split("<details>", 1)[1]


def test_html_escapes_spec_text(tmp_path: Path) -> None:
    data = _bare(tmp_path).to_data() | {"description": "joins <b>orders</b> & refunds"}
    page = _html(_write_spec(tmp_path, data))

    assert "joins &lt;b&gt;orders&lt;/b&gt; &amp; refunds" in page
    assert "<b>orders</b>" not in page


def test_default_prices_are_used_without_overrides(tmp_path: Path) -> None:
    document = build_document(_bare(tmp_path), prices=DEFAULT_PRICES)

    assert document.estimate.total == 0.0
    assert document.title == "Data Pipeline Specification: bare"
