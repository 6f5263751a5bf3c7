"""OpenLineage run events: START when a run starts, COMPLETE or FAIL when it finishes.

Each event names the job (`lineage.namespace` / pipeline), the run (a UUID derived from the
sluice run id), the input datasets (the sources) and the output datasets (the sinks), with
the facets: schema, dataSource, columnLineage (column_lineage.py), dataQualityMetrics and
dataQualityAssertions (the run's checks), outputStatistics (rows written), and the run
facets nominalTime (the logical date), parent (when given) and errorMessage (FAIL).

Transports: `file` appends JSON lines to `lineage.path` (project-relative), `http` POSTs to
`{url}/api/v1/lineage` (Marquez-compatible) with bounded retries, `console` prints to
stdout. Delivery never fails a run: an event that cannot be delivered is reported on stderr.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sluiceway.core.events import Event
from sluiceway.core.project import Project
from sluiceway.core.spec import Pipeline
from sluiceway.observability.column_lineage import (
    CONTRACT_TYPES,
    IDENTITY,
    ColumnLineage,
    Columns,
    column_lineage,
    delta_source_columns,
)
from sluiceway.observability.lineage_datasets import Dataset, datasets_of
from sluiceway.observability.lineage_transports import TRANSPORTS

PRODUCER = "https://github.com/sluiceway/sluiceway"
EVENT_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
_SPEC = "https://openlineage.io/spec"
FACET_SCHEMAS = {
    "schema": f"{_SPEC}/facets/1-0-0/SchemaDatasetFacet.json",
    "dataSource": f"{_SPEC}/1-0-1/DatasourceDatasetFacet.json",
    "columnLineage": f"{_SPEC}/facets/1-1-0/ColumnLineageDatasetFacet.json",
    "dataQualityMetrics": f"{_SPEC}/facets/1-0-1/DataQualityMetricsDatasetFacet.json",
    "dataQualityAssertions": f"{_SPEC}/facets/1-2-0/DataQualityAssertionsDatasetFacet.json",
    "outputStatistics": f"{_SPEC}/facets/1-0-0/OutputStatisticsOutputDatasetFacet.json",
    "nominalTime": f"{_SPEC}/facets/1-0-0/NominalTimeRunFacet.json",
    "parent": f"{_SPEC}/facets/1-1-0/ParentRunFacet.json",
    "errorMessage": f"{_SPEC}/facets/1-0-0/ErrorMessageRunFacet.json",
}
"""Facet name → the `$id` of the schema its events follow (vendored in the tests)."""
CUSTOM_RUN_FACET = "sluiceway_run"
PARENT_ENV = "OPENLINEAGE_PARENT_ID"
"""`namespace/job/runId` of the run that started this one (the dbt-ol convention)."""
FINISHED_TYPES = {"succeeded": "COMPLETE"}


@dataclass(frozen=True)
class ParentRun:
    """The run (of another job) that started this run."""

    namespace: str
    job: str
    run_id: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ParentRun | None:
        """The parent named by OPENLINEAGE_PARENT_ID=namespace/job/runId, if set and valid."""
        parts = environ.get(PARENT_ENV, "").rsplit("/", 2)
        if len(parts) != 3 or not all(parts):
            return None
        try:
            uuid.UUID(parts[2])
        except ValueError:
            return None
        return cls(*parts)


def facet(kind: str, /, **fields: Any) -> dict[str, Any]:
    """A standard facet with its _producer and _schemaURL."""
    url = FACET_SCHEMAS[kind]
    schema_url = f"{url}#/$defs/{url.rsplit('/', 1)[-1].removesuffix('.json')}"
    return {"_producer": PRODUCER, "_schemaURL": schema_url, **fields}


def run_uuid(namespace: str, pipeline: str, run_id: str) -> str:
    """The OpenLineage run id of a sluice run: a UUID derived from its names, so it is stable."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sluiceway:{namespace}:{pipeline}:{run_id}"))


def _schema_fields(columns: Columns) -> list[dict[str, str]]:
    return [{"name": c, "type": t} if t else {"name": c} for c, t in columns.items()]


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LineageEmitter:
    """Sends one OpenLineage RunEvent at the start and at the end of each run.

    Args:
        project: the project (its `lineage` settings).
        root: the project folder (the file transport's path is relative to it).
        pipeline: the spec being run.
        base_dir: the spec's folder (relative source and sink paths resolve against it).
        environ: where OPENLINEAGE_PARENT_ID is read (default: the process environment).
        parent: the parent run (overrides OPENLINEAGE_PARENT_ID).
    """

    def __init__(
        self,
        project: Project,
        root: Path,
        pipeline: Pipeline,
        *,
        base_dir: Path,
        environ: Mapping[str, str] | None = None,
        parent: ParentRun | None = None,
    ) -> None:
        self.settings = project.lineage
        self.pipeline = pipeline
        self.base_dir = Path(base_dir).resolve()
        self.parent = parent or ParentRun.from_env(os.environ if environ is None else environ)
        self.logical_dates: dict[str, str] = {}
        self.send = TRANSPORTS[self.settings.transport](self.settings, Path(root))
        self.source_columns: dict[str, Columns] = {}
        self.lineage: ColumnLineage = column_lineage(pipeline)
        self.inputs = {
            name: datasets_of(config, self._resolve, f"{pipeline.pipeline}.{name}")
            for name, config in pipeline.sources.items()
        }
        self.outputs = [
            (sink, datasets_of(sink, self._resolve, f"{pipeline.pipeline}.sinks[{i}]"))
            for i, sink in enumerate(pipeline.sinks)
        ]

    def _resolve(self, path: str) -> str:
        if "://" in path:
            return path
        candidate = Path(path).expanduser()
        return str(candidate if candidate.is_absolute() else (self.base_dir / candidate).resolve())

    def __call__(self, event: Event) -> None:
        """Handle one run event (a subscriber)."""
        if event.name == "run_started":
            self.logical_dates[event.run_id] = str(event.fields.get("logical_date"))
            self._read_source_schemas()
            self.send(self.run_event("START", event, {}))
        elif event.name == "run_finished":
            kind = FINISHED_TYPES.get(str(event.fields.get("status")), "FAIL")
            self.send(self.run_event(kind, event, event.fields))
        elif event.name in ("run_succeeded", "run_failed") and "batches" in event.fields:
            # A stream run ends with run_succeeded / run_failed; it has no run_finished.
            kind = "COMPLETE" if event.name == "run_succeeded" else "FAIL"
            self.send(self.run_event(kind, event, {}))

    def _read_source_schemas(self) -> None:
        """Columns of Delta sources without a contract, read as the run starts (an upstream
        pipeline of the same project run may have just created the table)."""
        self.source_columns = delta_source_columns(self.pipeline, self._resolve)
        if self.source_columns:
            self.lineage = column_lineage(self.pipeline, self.source_columns)

    def run_event(self, kind: str, event: Event, finished: Mapping[str, Any]) -> dict[str, Any]:
        """The RunEvent of type `kind` for `event` (`finished`: the run_finished fields)."""
        return {
            "eventType": kind,
            "eventTime": _iso(event.at),
            "producer": PRODUCER,
            "schemaURL": EVENT_SCHEMA,
            "run": {"runId": self._run_uuid(event.run_id), "facets": self._run_facets(event, kind)},
            "job": {"namespace": self.settings.namespace, "name": self.pipeline.pipeline},
            "inputs": self._inputs(),
            "outputs": self._outputs(finished),
        }

    def _run_uuid(self, run_id: str) -> str:
        return run_uuid(self.settings.namespace, self.pipeline.pipeline, run_id)

    def _run_facets(self, event: Event, kind: str) -> dict[str, Any]:
        stored = self.logical_dates.pop(event.run_id, None) if kind != "START" else None
        facets: dict[str, Any] = {
            CUSTOM_RUN_FACET: {
                "_producer": PRODUCER,
                "_schemaURL": f"{PRODUCER}/blob/main/docs/lineage.md#sluiceway_run",
                "runId": event.run_id,
            }
        }
        raw = event.fields.get("logical_date") or stored
        if raw:
            logical = date.fromisoformat(str(raw))
            facets[CUSTOM_RUN_FACET]["logicalDate"] = logical.isoformat()
            facets["nominalTime"] = facet(
                "nominalTime",
                nominalStartTime=f"{logical.isoformat()}T00:00:00Z",
                nominalEndTime=f"{(logical + timedelta(days=1)).isoformat()}T00:00:00Z",
            )
        if self.parent is not None:
            facets["parent"] = facet(
                "parent",
                run={"runId": self.parent.run_id},
                job={"namespace": self.parent.namespace, "name": self.parent.job},
            )
        if kind == "FAIL":
            message = str(event.fields.get("error") or "the run failed")
            facets["errorMessage"] = facet(
                "errorMessage", message=message, programmingLanguage="python"
            )
        return facets

    def _inputs(self) -> list[dict[str, Any]]:
        inputs = []
        for name, datasets in self.inputs.items():
            contract = self.pipeline.sources[name].contract
            for dataset in datasets:
                facets = {
                    "dataSource": facet("dataSource", name=dataset.namespace, uri=dataset.uri)
                }
                columns = (
                    column_lineage_columns(contract)
                    if contract is not None
                    else self.source_columns.get(name)
                )
                if columns:
                    facets["schema"] = facet("schema", fields=_schema_fields(columns))
                inputs.append(
                    {"namespace": dataset.namespace, "name": dataset.name, "facets": facets}
                )
        return inputs

    def _outputs(self, finished: Mapping[str, Any]) -> list[dict[str, Any]]:
        written = {s["uri"]: s for s in finished.get("sinks", [])}
        outputs = []
        for sink, datasets in self.outputs:
            for dataset in datasets:
                columns = self._written_columns(sink, dataset) if written else self.lineage.columns
                facets = {
                    "dataSource": facet("dataSource", name=dataset.namespace, uri=dataset.uri),
                    "schema": facet("schema", fields=_schema_fields(columns)),
                    "columnLineage": facet("columnLineage", fields=self._column_fields(columns)),
                    **quality_facets(finished.get("checks", [])),
                }
                output: dict[str, Any] = {
                    "namespace": dataset.namespace,
                    "name": dataset.name,
                    "facets": facets,
                }
                sink_result = written.get(dataset.uri.removeprefix("file://")) or written.get(
                    dataset.uri
                )
                if sink_result is not None:
                    output["outputFacets"] = {
                        "outputStatistics": facet(
                            "outputStatistics", rowCount=int(sink_result["rows_written"] or 0)
                        )
                    }
                outputs.append(output)
        return outputs

    def _written_columns(self, sink: Any, dataset: Dataset) -> Columns:
        """The columns of the written Delta table; the spec's lineage when it cannot be read."""
        if getattr(sink, "type", None) != "delta":
            return self.lineage.columns
        from deltalake import DeltaTable

        from sluiceway.core.storage import delta_storage_options

        uri = dataset.uri.removeprefix("file://")
        try:
            options = delta_storage_options(uri, getattr(sink, "storage_options", {}))
            schema = DeltaTable(uri, storage_options=options).schema()
        except Exception:
            return self.lineage.columns
        return {f.name: str(getattr(f.type, "type", f.type)) for f in schema.fields}

    def _column_fields(self, columns: Columns) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for column in columns:
            origins = self.lineage.origins.get(column)
            if origins is None:
                origins = [o for found in self.lineage.origins.values() for o in found]
            input_fields = []
            for origin in origins:
                for dataset in self.inputs.get(origin.source, [])[:1]:
                    steps = origin.transformations or (IDENTITY,)
                    input_fields.append(
                        {
                            "namespace": dataset.namespace,
                            "name": dataset.name,
                            "field": origin.column,
                            "transformations": [t.to_dict() for t in steps],
                        }
                    )
            fields[column] = {"inputFields": input_fields}
            if any(o.is_masked for o in origins):
                fields[column]["transformationType"] = "MASKED"
        return fields


def column_lineage_columns(contract: Any) -> Columns:
    """A contract's columns and their SQL types."""
    return {c: CONTRACT_TYPES.get(rule.type) for c, rule in contract.columns.items()}


COLUMN_METRICS = {
    "not_null": "nullCount",
    "completeness": "nullCount",
    "min_between": "min",
    "max_between": "max",
    "sum_between": "sum",
    "distinct_count_between": "distinctCount",
}


def quality_facets(checks: list[Mapping[str, Any]]) -> dict[str, Any]:
    """dataQualityMetrics and dataQualityAssertions of a run's check results (none: {})."""
    if not checks:
        return {}
    metrics: dict[str, dict[str, Any]] = {}
    row_count = max(int(c.get("rows_checked") or 0) for c in checks)
    for check in checks:
        column, metric = check.get("column"), COLUMN_METRICS.get(str(check.get("check")))
        value = (
            check.get("unexpected_count") if metric == "nullCount" else check.get("observed_value")
        )
        if column and metric and value is not None:
            kind = int if metric in ("nullCount", "distinctCount") else float
            metrics.setdefault(column, {})[metric] = kind(value)
        if check.get("check") == "row_count_between" and check.get("observed_value") is not None:
            row_count = int(check["observed_value"])
    assertions = [_assertion(c) for c in checks]
    return {
        "dataQualityMetrics": facet(
            "dataQualityMetrics", rowCount=row_count, columnMetrics=metrics
        ),
        "dataQualityAssertions": facet("dataQualityAssertions", assertions=assertions),
    }


def _assertion(check: Mapping[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "assertion": str(check.get("check")),
        "success": bool(check.get("success")),
        "name": str(check.get("name")),
        "severity": str(check.get("severity")),
    }
    if check.get("column"):
        item["column"] = str(check["column"])
    if check.get("observed_value") is not None:
        item["actual"] = str(check["observed_value"])
    return item
