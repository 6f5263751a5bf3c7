"""OpenLineage events of real runs, validated against the vendored OpenLineage JSON schemas
(tests/fixtures/openlineage): START and COMPLETE/FAIL, column lineage, quality facets, and
the file and http transports."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pytest
from referencing import Registry, Resource

from sluiceway.core.events import Event
from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.project import Project
from sluiceway.core.retry import run_with_policy
from sluiceway.core.runner import RunOptions
from sluiceway.errors import ConfigError
from sluiceway.observability.lineage import FACET_SCHEMAS, LineageEmitter, ParentRun

SCHEMAS = Path(__file__).parents[1] / "fixtures" / "openlineage"
ENVIRON = {"SLUICE_HMAC_KEY": "lineage-test-hmac-key", "SLUICE_ENCRYPTION_KEY": "ab" * 32}


def _retrieve(uri: str) -> Resource[Any]:
    """Every $id / $ref of the vendored schemas, resolved to its local file (never the web)."""
    name = uri.rsplit("/", 1)[-1]
    path = SCHEMAS / "OpenLineage.json" if name == "OpenLineage.json" else SCHEMAS / "facets" / name
    if not path.is_file():
        raise LookupError(f"schema {uri} is not vendored in {SCHEMAS}")
    return Resource.from_contents(json.loads(path.read_text()))


REGISTRY: Registry[Any] = Registry(retrieve=_retrieve)  # type: ignore[call-arg]
CORE = json.loads((SCHEMAS / "OpenLineage.json").read_text())


def validate(event: dict[str, Any]) -> None:
    """Validate a RunEvent against the core spec and each standard facet against its schema."""
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    run_event = {"$id": CORE["$id"], "$ref": "#/$defs/RunEvent", "$defs": CORE["$defs"]}
    jsonschema.Draft202012Validator(run_event, registry=REGISTRY, format_checker=checker).validate(
        event
    )
    facets = [*event["run"]["facets"].items()]
    for dataset in event["inputs"] + event["outputs"]:
        facets += [*dataset.get("facets", {}).items(), *dataset.get("outputFacets", {}).items()]
    for name, body in facets:
        if name not in FACET_SCHEMAS:
            assert name == "sluiceway_run", f"facet {name} has no vendored schema"
            continue
        schema = {"$ref": FACET_SCHEMAS[name]}
        validator = jsonschema.Draft202012Validator(
            schema, registry=REGISTRY, format_checker=checker
        )
        validator.validate({name: body})


def write_inputs(folder: Path) -> None:
    (folder / "orders.csv").write_text(
        "order_id,customer_id,amount\n1,10,5.0\n2,11,7.5\n3,10,2.5\n"
    )
    (folder / "customers.csv").write_text("id,email\n10,ann@example.com\n11,bob@example.com\n")


def spec(folder: Path, *, checks: list[Any] | None = None) -> Any:
    return pipeline_from_dict(
        {
            "version": 1,
            "pipeline": "orders_enriched",
            "sources": {
                "orders": {
                    "type": "files",
                    "path": "orders.csv",
                    "contract": {
                        "columns": {
                            "order_id": {"type": "integer"},
                            "customer_id": {"type": "integer"},
                            "amount": {"type": "double"},
                        }
                    },
                },
                "customers": {
                    "type": "files",
                    "path": "customers.csv",
                    "contract": {
                        "columns": {"id": {"type": "integer"}, "email": {"type": "string"}}
                    },
                },
            },
            "steps": [
                {
                    "sql": "SELECT o.order_id, o.amount * 2 AS gross, c.email "
                    "FROM input o JOIN customers c ON o.customer_id = c.id"
                },
                {"rename": {"gross": "total"}},
            ],
            "pii": {"email": "hmac"},
            "checks": checks if checks is not None else [{"not_null": {"column": "total"}}],
            "sinks": [{"type": "delta", "path": "out/orders_enriched"}],
        }
    )


def project(**lineage: Any) -> Project:
    return Project.model_validate({"version": 1, "project": "shop", "lineage": lineage})


def run(folder: Path, pipeline: Any, emitter: LineageEmitter) -> Any:
    options = RunOptions(
        base_dir=folder, state_dir=folder / ".sluice", environ=ENVIRON, subscribers=[emitter]
    )
    return run_with_policy(pipeline, options)


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_successful_run_emits_start_and_complete_that_follow_the_openlineage_schemas(
    tmp_path: Path,
) -> None:
    write_inputs(tmp_path)
    emitter = LineageEmitter(project(), tmp_path, spec(tmp_path), base_dir=tmp_path)
    result = run(tmp_path, spec(tmp_path), emitter)
    assert result.ok, result.error
    events = read_events(tmp_path / ".sluice" / "lineage.jsonl")
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    for event in events:
        validate(event)
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"]
    assert uuid.UUID(events[1]["run"]["runId"])
    assert events[1]["run"]["facets"]["sluiceway_run"]["runId"] == result.run_id
    assert events[1]["job"] == {"namespace": "sluiceway", "name": "orders_enriched"}
    inputs = {e["name"]: e for e in events[1]["inputs"]}
    assert set(inputs) == {str(tmp_path / "orders.csv"), str(tmp_path / "customers.csv")}
    assert {e["namespace"] for e in inputs.values()} == {"file"}


def test_column_lineage_maps_total_to_amount_and_masked_email_to_the_source_email(
    tmp_path: Path,
) -> None:
    write_inputs(tmp_path)
    emitter = LineageEmitter(project(), tmp_path, spec(tmp_path), base_dir=tmp_path)
    run(tmp_path, spec(tmp_path), emitter)
    complete = read_events(tmp_path / ".sluice" / "lineage.jsonl")[-1]
    (output,) = complete["outputs"]
    fields = output["facets"]["columnLineage"]["fields"]
    assert set(fields) == {"order_id", "total", "email"}
    (total,) = fields["total"]["inputFields"]
    assert (total["name"], total["field"]) == (str(tmp_path / "orders.csv"), "amount")
    assert total["transformations"][0]["subtype"] == "TRANSFORMATION"
    (email,) = fields["email"]["inputFields"]
    assert (email["name"], email["field"]) == (str(tmp_path / "customers.csv"), "email")
    assert email["transformations"][-1]["masking"] is True
    assert "hmac" in email["transformations"][-1]["description"]
    assert fields["email"]["transformationType"] == "MASKED"
    assert fields["order_id"]["inputFields"][0]["transformations"][0]["subtype"] == "IDENTITY"


def test_complete_carries_the_written_schema_row_count_and_check_results(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    emitter = LineageEmitter(project(), tmp_path, spec(tmp_path), base_dir=tmp_path)
    run(tmp_path, spec(tmp_path), emitter)
    (output,) = read_events(tmp_path / ".sluice" / "lineage.jsonl")[-1]["outputs"]
    assert output["namespace"] == "file"
    assert output["name"] == str(tmp_path / "out" / "orders_enriched")
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 3
    names = [f["name"] for f in output["facets"]["schema"]["fields"]]
    assert names[:3] == ["order_id", "total", "email"]
    metrics = output["facets"]["dataQualityMetrics"]
    assert metrics["rowCount"] == 3
    assert metrics["columnMetrics"]["total"]["nullCount"] == 0
    (assertion,) = output["facets"]["dataQualityAssertions"]["assertions"]
    assert assertion["assertion"] == "not_null"
    assert assertion["success"] is True
    assert assertion["column"] == "total"


def test_a_failed_run_emits_fail_with_the_error_message(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    failing = spec(tmp_path, checks=[{"row_count_between": {"min_value": 10}}])
    emitter = LineageEmitter(project(), tmp_path, failing, base_dir=tmp_path)
    result = run(tmp_path, failing, emitter)
    assert not result.ok
    events = read_events(tmp_path / ".sluice" / "lineage.jsonl")
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    validate(events[1])
    error = events[1]["run"]["facets"]["errorMessage"]
    assert "row_count_between" in error["message"]
    assert error["programmingLanguage"] == "python"
    (output,) = events[1]["outputs"]
    assert "outputStatistics" not in output.get("outputFacets", {})
    (assertion,) = output["facets"]["dataQualityAssertions"]["assertions"]
    assert assertion["success"] is False


def test_a_parent_run_from_the_environment_is_named_in_the_parent_facet(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    parent_id = str(uuid.uuid4())
    environ = {"OPENLINEAGE_PARENT_ID": f"scheduler/nightly/{parent_id}"}
    emitter = LineageEmitter(
        project(), tmp_path, spec(tmp_path), base_dir=tmp_path, environ=environ
    )
    run(tmp_path, spec(tmp_path), emitter)
    start = read_events(tmp_path / ".sluice" / "lineage.jsonl")[0]
    validate(start)
    parent = start["run"]["facets"]["parent"]
    assert parent["run"] == {"runId": parent_id}
    assert parent["job"] == {"namespace": "scheduler", "name": "nightly"}
    assert ParentRun.from_env({"OPENLINEAGE_PARENT_ID": "bad"}) is None


class _Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, str | None, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        self.bodies.append((self.path, self.headers.get("Authorization"), body))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Any:
    _Receiver.bodies = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_http_transport_posts_each_event_to_the_marquez_endpoint_with_the_key(
    tmp_path: Path, receiver: HTTPServer
) -> None:
    write_inputs(tmp_path)
    url = f"http://127.0.0.1:{receiver.server_address[1]}"
    settings = project(transport="http", url=url, api_key="secret-token", namespace="shop")
    emitter = LineageEmitter(settings, tmp_path, spec(tmp_path), base_dir=tmp_path)
    run(tmp_path, spec(tmp_path), emitter)
    assert [(p, a, b["eventType"]) for p, a, b in _Receiver.bodies] == [
        ("/api/v1/lineage", "Bearer secret-token", "START"),
        ("/api/v1/lineage", "Bearer secret-token", "COMPLETE"),
    ]
    for _, _, body in _Receiver.bodies:
        validate(body)
        assert body["job"]["namespace"] == "shop"
    assert not (tmp_path / ".sluice" / "lineage.jsonl").exists()


def test_an_unreachable_lineage_server_warns_on_stderr_and_the_run_still_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_inputs(tmp_path)
    settings = project(transport="http", url="http://127.0.0.1:9")
    emitter = LineageEmitter(settings, tmp_path, spec(tmp_path), base_dir=tmp_path)
    result = run(tmp_path, spec(tmp_path), emitter)
    assert result.ok, result.error
    err = capsys.readouterr().err
    assert (
        "START event of orders_enriched not delivered to http://127.0.0.1:9/api/v1/lineage" in err
    )
    assert "COMPLETE event" in err


def test_no_masked_value_or_clear_email_appears_in_any_event(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    emitter = LineageEmitter(project(), tmp_path, spec(tmp_path), base_dir=tmp_path)
    run(tmp_path, spec(tmp_path), emitter)
    text = (tmp_path / ".sluice" / "lineage.jsonl").read_text()
    assert "ann@example.com" not in text
    assert "bob@example.com" not in text


def test_the_schema_validation_rejects_a_broken_event_and_a_broken_facet(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    emitter = LineageEmitter(project(), tmp_path, spec(tmp_path), base_dir=tmp_path)
    run(tmp_path, spec(tmp_path), emitter)
    complete = read_events(tmp_path / ".sluice" / "lineage.jsonl")[-1]
    no_run_id = json.loads(json.dumps(complete))
    del no_run_id["run"]["runId"]
    with pytest.raises(jsonschema.ValidationError, match="runId"):
        validate(no_run_id)
    no_row_count = json.loads(json.dumps(complete))
    del no_row_count["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"]
    with pytest.raises(jsonschema.ValidationError, match="rowCount"):
        validate(no_row_count)


def test_a_stream_run_ends_with_complete_from_its_run_succeeded_event(tmp_path: Path) -> None:
    emitter = LineageEmitter(project(), tmp_path, spec(tmp_path), base_dir=tmp_path)
    emitter(Event("run_started", "orders_enriched", "s1", {"logical_date": "2025-01-15"}))
    emitter(Event("run_succeeded", "orders_enriched", "s1", {"error": None, "batches": 3}))
    events = read_events(tmp_path / ".sluice" / "lineage.jsonl")
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    for event in events:
        validate(event)
    nominal = events[1]["run"]["facets"]["nominalTime"]
    assert nominal["nominalStartTime"] == "2025-01-15T00:00:00Z"


def test_the_http_transport_without_a_url_is_a_config_error_that_says_what_to_set(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"lineage\.url is not set"):
        LineageEmitter(project(transport="http"), tmp_path, spec(tmp_path), base_dir=tmp_path)
