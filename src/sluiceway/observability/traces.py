"""OpenTelemetry spans of runs: one span per run, with child spans per source read, step,
check phase, sink commit and stream batch.

Spans are built from run events after the fact, with the events' times: a step span ends
at its `step_done` and starts `duration_s` earlier; a source read, the check phase and a
sink commit start at the progress event that announces them. Attributes: `sluice.pipeline`,
`sluice.run_id`, and on the run span `sluice.rows_in`, `sluice.rows_written`,
`sluice.rows_rejected`; a failed run's span has status ERROR with the error message.

A run started by another process joins its trace: a W3C `TRACEPARENT` in the environment
(`00-<trace id>-<span id>-<flags>`) becomes the run span's parent. Stream micro-batch runs
nest under the stream's run span.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sluiceway.core.events import Event
from sluiceway.core.project import Project
from sluiceway.core.spec import Pipeline
from sluiceway.errors import ConfigError

TRACER_NAME = "sluiceway"
PARENT_ENV = "TRACEPARENT"
ACCOUNTING_ATTRIBUTES = ("rows_in", "rows_written", "rows_rejected")


def _ns(at: float) -> int:
    return int(at * 1_000_000_000)


@dataclass
class _OpenRun:
    span: Span
    context: Context
    last_at: float
    batch_started: float
    attributes: dict[str, Any] = field(default_factory=dict)


class TraceSubscriber:
    """Turns run events into OpenTelemetry spans.

    Args:
        pipeline: the pipeline name (the `sluice.pipeline` attribute).
        tracer_provider: where spans go; default: a new provider fed by `span_processor`.
        span_processor: a processor for the new provider (e.g. a BatchSpanProcessor with an
            OTLP exporter, or a SimpleSpanProcessor with an in-memory exporter in tests).
        service_name: the `service.name` of the new provider's resource.
        environ: where TRACEPARENT is read (default: the process environment).
    """

    def __init__(
        self,
        pipeline: str,
        *,
        tracer_provider: TracerProvider | None = None,
        span_processor: SpanProcessor | None = None,
        service_name: str = "sluiceway",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if tracer_provider is None:
            tracer_provider = TracerProvider(
                resource=Resource.create({"service.name": service_name})
            )
        if span_processor is not None:
            tracer_provider.add_span_processor(span_processor)
        self.provider = tracer_provider
        self.tracer = tracer_provider.get_tracer(TRACER_NAME)
        self.pipeline = pipeline
        environ = os.environ if environ is None else environ
        carrier = {"traceparent": environ[PARENT_ENV]} if environ.get(PARENT_ENV) else {}
        self.parent = TraceContextTextMapPropagator().extract(carrier)
        self.runs: dict[str, _OpenRun] = {}

    @classmethod
    def for_project(cls, project: Project, pipeline: Pipeline) -> TraceSubscriber:
        """Spans exported over OTLP/HTTP to `traces.endpoint`, in batches.

        Args:
            project: the project (its `traces` settings; `endpoint` must be set).
            pipeline: the spec being run.

        Raises:
            ConfigError: `traces.endpoint` is not set.
        """
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        settings = project.traces
        if not settings.endpoint:
            raise ConfigError(
                "traces.endpoint is not set in sluice.yaml; set it to an OTLP/HTTP traces "
                "endpoint, e.g. http://127.0.0.1:4318/v1/traces"
            )
        exporter = OTLPSpanExporter(endpoint=settings.endpoint, headers=dict(settings.headers))
        return cls(
            pipeline.pipeline,
            span_processor=BatchSpanProcessor(exporter),
            service_name=settings.service_name,
        )

    def __call__(self, event: Event) -> None:
        """Handle one run event (a subscriber)."""
        handler = _HANDLERS.get(event.name)
        if handler is not None:
            handler(self, event)
        run = self.runs.get(event.run_id)
        if run is not None:
            run.last_at = event.at

    def _base(self, event: Event) -> dict[str, Any]:
        return {"sluice.pipeline": self.pipeline, "sluice.run_id": event.run_id}

    def _started(self, event: Event) -> None:
        outer = next(reversed(self.runs.values()), None)
        context = outer.context if outer is not None else self.parent
        attributes = {
            **self._base(event),
            "sluice.logical_date": str(event.fields.get("logical_date")),
        }
        span = self.tracer.start_span(
            f"run {self.pipeline}", context=context, start_time=_ns(event.at), attributes=attributes
        )
        self.runs[event.run_id] = _OpenRun(
            span, trace.set_span_in_context(span), event.at, event.at
        )

    def _child(self, event: Event, name: str, start: float, **attributes: Any) -> None:
        run = self.runs.get(event.run_id)
        if run is None:
            return
        values = {k: v for k, v in attributes.items() if v is not None}
        span = self.tracer.start_span(
            name,
            context=run.context,
            start_time=_ns(start),
            attributes={**self._base(event), **values},
        )
        span.end(end_time=_ns(event.at))

    def _source_read(self, event: Event) -> None:
        run = self.runs.get(event.run_id)
        source = event.fields.get("source")
        self._child(
            event,
            f"read {source}",
            run.last_at if run else event.at,
            **{"sluice.source": source, "sluice.rows_in": event.fields.get("rows_in")},
        )

    def _step_done(self, event: Event) -> None:
        fields = event.fields
        self._child(
            event,
            f"step {fields.get('index')}: {fields.get('step')}",
            event.at - float(fields.get("duration_s") or 0.0),
            **{
                "sluice.step": fields.get("step"),
                "sluice.step_index": fields.get("index"),
                "sluice.rows_deduplicated": fields.get("deduplicated"),
                "sluice.rows_filtered": fields.get("filtered"),
            },
        )

    def _checks_done(self, event: Event) -> None:
        run = self.runs.get(event.run_id)
        self._child(
            event,
            "checks",
            run.last_at if run else event.at,
            **{
                "sluice.checks_passed": event.fields.get("passed"),
                "sluice.checks_failed": event.fields.get("failed"),
            },
        )

    def _commit_done(self, event: Event) -> None:
        run = self.runs.get(event.run_id)
        self._child(
            event,
            "commit",
            run.last_at if run else event.at,
            **{
                "sluice.sink": event.fields.get("sink"),
                "sluice.rows_written": event.fields.get("rows"),
                "sluice.version": event.fields.get("version"),
            },
        )

    def _batch_committed(self, event: Event) -> None:
        run = self.runs.get(event.run_id)
        if run is None:
            return
        fields = event.fields
        self._child(
            event,
            f"batch {fields.get('batch')}",
            run.batch_started,
            **{
                "sluice.batch": fields.get("batch"),
                "sluice.rows_written": fields.get("rows"),
                "sluice.rows_rejected": fields.get("rejected"),
                "sluice.version": fields.get("version"),
            },
        )
        run.batch_started = event.at

    def _finished(self, event: Event) -> None:
        run = self.runs.pop(event.run_id, None)
        if run is None:
            return
        fields = event.fields
        accounting = fields.get("accounting") or {}
        for name in ACCOUNTING_ATTRIBUTES:
            if accounting.get(name) is not None:
                run.span.set_attribute(f"sluice.{name}", int(accounting[name]))
        if fields.get("batches") is not None:
            run.span.set_attribute("sluice.batches", int(fields["batches"]))
        status = fields.get("status") or ("failed" if event.name == "run_failed" else "succeeded")
        run.span.set_attribute("sluice.status", str(status))
        if status != "succeeded":
            run.span.set_status(Status(StatusCode.ERROR, str(fields.get("error") or status)))
        run.span.end(end_time=_ns(event.at))
        if not self.runs:
            self.provider.force_flush()

    def _stream_finished(self, event: Event) -> None:
        """A stream run ends with run_succeeded / run_failed (it has no run_finished)."""
        if "batches" in event.fields:
            self._finished(event)


_HANDLERS = {
    "run_started": TraceSubscriber._started,
    "source_read": TraceSubscriber._source_read,
    "step_done": TraceSubscriber._step_done,
    "checks_done": TraceSubscriber._checks_done,
    "commit_done": TraceSubscriber._commit_done,
    "batch_committed": TraceSubscriber._batch_committed,
    "run_finished": TraceSubscriber._finished,
    "run_succeeded": TraceSubscriber._stream_finished,
    "run_failed": TraceSubscriber._stream_finished,
}
