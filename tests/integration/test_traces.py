"""OpenTelemetry spans of real runs, collected with the SDK's in-memory span exporter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from sluiceway.core.events import Event
from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.project import Project
from sluiceway.core.retry import run_with_policy
from sluiceway.core.runner import RunOptions
from sluiceway.observability.traces import TraceSubscriber

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


def spec(*, min_rows: int = 0) -> Any:
    return pipeline_from_dict(
        {
            "version": 1,
            "pipeline": "orders_daily",
            "sources": {
                "orders": {
                    "type": "files",
                    "path": "orders.csv",
                    "contract": {
                        "columns": {"order_id": {"type": "integer"}, "amount": {"type": "double"}}
                    },
                }
            },
            "steps": [
                {"sql": "SELECT order_id, amount * 2 AS total FROM input"},
                {"dedup": {"keys": ["order_id"]}},
            ],
            "checks": [{"row_count_between": {"min_value": min_rows}}],
            "sinks": [{"type": "delta", "path": "out/orders_daily"}],
        }
    )


def run_traced(
    folder: Path, pipeline: Any, environ: dict[str, str] | None = None
) -> tuple[Any, list[ReadableSpan]]:
    (folder / "orders.csv").write_text("order_id,amount\n1,5.0\n1,5.0\n2,7.5\nx,1\n")
    exporter = InMemorySpanExporter()
    subscriber = TraceSubscriber(
        pipeline.pipeline, span_processor=SimpleSpanProcessor(exporter), environ=environ or {}
    )
    options = RunOptions(base_dir=folder, state_dir=folder / ".sluice", subscribers=[subscriber])
    result = run_with_policy(pipeline, options)
    return result, list(exporter.get_finished_spans())


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def test_a_run_is_one_span_with_a_child_span_per_read_step_check_and_commit(
    tmp_path: Path,
) -> None:
    result, spans = run_traced(tmp_path, spec())
    assert result.ok, result.error
    named = by_name(spans)
    assert set(named) == {
        "run orders_daily",
        "read orders",
        "step 0: sql",
        "step 1: dedup",
        "checks",
        "commit",
    }
    run = named["run orders_daily"]
    assert run.parent is None
    for name, span in named.items():
        assert span.attributes is not None
        assert span.attributes["sluice.pipeline"] == "orders_daily"
        assert span.attributes["sluice.run_id"] == result.run_id
        assert span.context is not None and run.context is not None
        assert span.context.trace_id == run.context.trace_id
        if name != "run orders_daily":
            assert span.parent is not None and span.parent.span_id == run.context.span_id
            assert run.start_time is not None and span.start_time is not None
            assert run.start_time <= span.start_time
    attributes = run.attributes or {}
    assert attributes["sluice.rows_in"] == 4
    assert attributes["sluice.rows_rejected"] == 1
    assert attributes["sluice.rows_written"] == 2
    assert run.status.status_code != StatusCode.ERROR
    assert (named["step 1: dedup"].attributes or {})["sluice.rows_deduplicated"] == 1


def test_a_failed_run_span_has_status_error_with_the_message(tmp_path: Path) -> None:
    result, spans = run_traced(tmp_path, spec(min_rows=100))
    assert not result.ok
    run = by_name(spans)["run orders_daily"]
    assert run.status.status_code == StatusCode.ERROR
    assert "row_count_between" in (run.status.description or "")
    assert "commit" not in by_name(spans)


def test_a_traceparent_in_the_environment_becomes_the_run_span_parent(tmp_path: Path) -> None:
    traceparent = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
    result, spans = run_traced(tmp_path, spec(), {"TRACEPARENT": traceparent})
    assert result.ok, result.error
    run = by_name(spans)["run orders_daily"]
    assert run.context is not None and run.parent is not None
    assert format(run.context.trace_id, "032x") == TRACE_ID
    assert format(run.parent.span_id, "016x") == PARENT_SPAN_ID
    assert all(s.context is not None and s.context.trace_id == run.context.trace_id for s in spans)


def test_stream_batches_are_child_spans_of_the_stream_run_span() -> None:
    exporter = InMemorySpanExporter()
    subscriber = TraceSubscriber("clicks", span_processor=SimpleSpanProcessor(exporter), environ={})
    events = [
        Event("run_started", "clicks", "s1", {"logical_date": "2025-01-15"}, at=100.0),
        Event("batch_committed", "clicks", "s1", {"batch": 1, "rows": 5, "rejected": 1}, at=101.0),
        Event("batch_committed", "clicks", "s1", {"batch": 2, "rows": 3, "rejected": 0}, at=103.0),
        Event("run_succeeded", "clicks", "s1", {"error": None, "batches": 2}, at=104.0),
    ]
    for event in events:
        subscriber(event)
    named = by_name(list(exporter.get_finished_spans()))
    assert set(named) == {"run clicks", "batch 1", "batch 2"}
    second = named["batch 2"]
    assert second.start_time == 101_000_000_000 and second.end_time == 103_000_000_000
    assert (second.attributes or {})["sluice.rows_written"] == 3
    assert (named["batch 1"].attributes or {})["sluice.rows_rejected"] == 1
    assert (named["run clicks"].attributes or {})["sluice.batches"] == 2


def test_for_project_builds_an_otlp_exporter_for_the_configured_endpoint() -> None:
    project = Project.model_validate(
        {
            "version": 1,
            "project": "shop",
            "traces": {"endpoint": "http://127.0.0.1:4318/v1/traces", "service_name": "etl"},
        }
    )
    subscriber = TraceSubscriber.for_project(project, spec())
    assert subscriber.pipeline == "orders_daily"
    assert subscriber.provider.resource.attributes["service.name"] == "etl"
    subscriber.provider.shutdown()
