"""The pre-flight review: readiness checks, production gates, credentials, prod enforcement."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluiceway.core.loader import parse_spec
from sluiceway.core.project import AlertRoute, Project
from sluiceway.core.spec import ColumnContract
from sluiceway.errors import ConfigError
from sluiceway.gates.findings import GATES, READINESS_CHECKS, Finding, Review
from sluiceway.gates.readiness import looks_like_pii
from sluiceway.gates.review import enforce_review, review
from sluiceway.ops.audit import AuditLog

READY = """
version: 1
pipeline: orders_ready
owner: data-platform@example.com
description: Orders, cleaned, for finance
layer: silver
sla: {latency: 30m, freshness: 1d, availability: 99.9%}
quality: {completeness: 0.99, pass_rate: 0.98}
compliance: {retention: 400d, subject_key: user_id, regulations: [GDPR]}
cost: {budget_per_month: 100, growth_per_year: 1.5}
retries: {max_attempts: 3, backoff: 30s}
timeout: 2h
sources:
  orders:
    type: files
    path: data/orders/
    format: csv
    inventory: {volume: 2M rows/day, freshness: 1d, owner: shop@example.com, access_pattern: full}
    contract:
      columns:
        order_id: {type: string, nullable: false}
        user_id: {type: string, nullable: false}
        email: {type: string, format: email}
        amount: {type: double, min: 0}
        order_date: {type: date}
      on_violation: dead_letter
pii: {email: hmac}
checks:
  - not_null: {column: order_id}
sinks:
  - type: delta
    path: lake/orders
    partition_by: [order_date]
    mode: overwrite_partition
dead_letter: {path: lake/dead_letter}
"""

STREAM = """
version: 1
pipeline: clicks_live
owner: data-platform@example.com
description: Live clicks
mode: stream
sla: {latency: 10s, freshness: 5m, availability: 99.9%}
quality: {completeness: 0.99, pass_rate: 0.98}
compliance: {retention: 30d}
cost: {budget_per_month: 100, growth_per_year: 1.5}
sources:
  clicks:
    type: redis_streams
    url: redis://127.0.0.1:6379/0
    stream: clicks
    inventory: {volume: 10/s, freshness: 10s, owner: web@example.com, access_pattern: stream}
    contract:
      columns:
        click_id: {type: string, nullable: false}
        click_date: {type: date}
checks:
  - not_null: {column: click_id}
sinks:
  - {type: delta, path: lake/clicks, partition_by: [click_date], mode: append}
"""

Mutation = Callable[[dict[str, Any]], None]

ALERTED = Project(
    version=1,
    project="tests",
    alerts=[AlertRoute(name="on-call", type="webhook", url="http://127.0.0.1:9/hook")],
)


def spec_data(text: str = READY) -> dict[str, Any]:
    return yaml.safe_load(text)


def reviewed(data: dict[str, Any], environ: dict[str, str] | None = None) -> Review:
    pipeline = parse_spec(yaml.safe_dump(data, sort_keys=False), environ=environ or {})
    return review(pipeline, raw=data, project=ALERTED)


def mutated(change: Mutation, text: str = READY) -> Review:
    data = copy.deepcopy(spec_data(text))
    change(data)
    return reviewed(data)


def matching(result: Review, check: str, group: str) -> list[Finding]:
    return [f for f in result.findings if f.check == check and f.group == group]


def source(data: dict[str, Any]) -> dict[str, Any]:
    return data["sources"]["orders"]


def columns(data: dict[str, Any]) -> dict[str, Any]:
    return source(data)["contract"]["columns"]


def test_a_fully_ready_spec_passes_every_check_and_gate() -> None:
    result = reviewed(spec_data())

    assert [f.status for f in result.findings] == ["pass"] * 10, result.findings
    assert [f.check for f in result.findings] == [*READINESS_CHECKS, *GATES]
    assert all(f.reason and not f.fix for f in result.findings)
    assert not result.has_failed


def test_the_review_data_counts_findings_by_status() -> None:
    data = spec_data()
    del data["timeout"]

    summary = reviewed(data).to_data()

    assert summary["passed"] is True
    assert summary["counts"] == {"pass": 9, "warn": 1, "fail": 0}


READINESS_CASES: list[tuple[str, Mutation, str, str]] = [
    (
        "source inventory",
        lambda d: source(d).pop("inventory"),
        "fail",
        "sources.orders.inventory is missing volume, freshness, owner, access_pattern",
    ),
    (
        "source inventory",
        lambda d: source(d)["inventory"].pop("owner"),
        "fail",
        "sources.orders.inventory is missing owner",
    ),
    ("sla", lambda d: d.pop("sla"), "fail", "the spec has no sla"),
    ("sla", lambda d: d["sla"].pop("availability"), "warn", "sla is missing availability"),
    ("quality standards", lambda d: d.pop("quality"), "fail", "the spec has no quality"),
    (
        "quality standards",
        lambda d: d["quality"].pop("pass_rate"),
        "warn",
        "quality is missing pass_rate",
    ),
    (
        "quality standards",
        lambda d: source(d).pop("contract"),
        "fail",
        "source(s) without a contract: orders",
    ),
    (
        "compliance",
        lambda d: columns(d).update(phone_number={"type": "string"}),
        "fail",
        "not declared in pii: sources.orders.contract.columns.phone_number",
    ),
    (
        "compliance",
        lambda d: columns(d).update(client_ip={"type": "string", "format": "ip"}),
        "fail",
        "sources.orders.contract.columns.client_ip",
    ),
    (
        "compliance",
        lambda d: d["compliance"].pop("retention"),
        "fail",
        "compliance.retention is not stated",
    ),
    (
        "compliance",
        lambda d: d["compliance"].pop("subject_key"),
        "fail",
        "the pipeline has PII (email) but no compliance.subject_key",
    ),
    (
        "compliance",
        lambda d: d["compliance"].update(subject_key="customer_ref"),
        "warn",
        "compliance.subject_key 'customer_ref' is not a contract column",
    ),
    (
        "compliance",
        lambda d: d["compliance"].update(audit=False),
        "fail",
        "compliance.audit is false on a pipeline with PII",
    ),
    ("cost", lambda d: d.pop("cost"), "fail", "cost.budget_per_month is not stated"),
    (
        "cost",
        lambda d: d["cost"].pop("growth_per_year"),
        "warn",
        "cost.growth_per_year is not stated",
    ),
    (
        "cost",
        lambda d: source(d)["inventory"].pop("volume"),
        "warn",
        "source(s) without inventory.volume: orders; no volume projection possible",
    ),
]


@pytest.mark.parametrize(("check", "change", "status", "text"), READINESS_CASES)
def test_a_spec_missing_a_readiness_item_gets_the_finding_with_a_fix(
    check: str, change: Mutation, status: str, text: str
) -> None:
    found = matching(mutated(change), check, "readiness")

    hits = [f for f in found if text in f.reason]
    assert hits, [f.reason for f in found]
    assert hits[0].status == status
    assert hits[0].fix, "a finding that is not a pass says how to fix it"


def _append_sink(d: dict[str, Any]) -> None:
    d["sinks"][0]["mode"] = "append"


def _incremental_append(d: dict[str, Any]) -> None:
    _append_sink(d)
    source(d)["incremental"] = True


def _postgres_append(d: dict[str, Any]) -> None:
    d["sinks"] = [{"type": "postgres", "table": "orders", "mode": "append"}]


def _merge_on_nullable(d: dict[str, Any]) -> None:
    d["sinks"][0].update(mode="merge", merge_keys=["amount"])


def _big_unpartitioned(d: dict[str, Any]) -> None:
    source(d)["inventory"]["volume"] = "5M rows/day"
    d["sinks"][0] = {"type": "delta", "path": "lake/o", "mode": "merge", "merge_keys": ["order_id"]}


GATE_CASES: list[tuple[str, Mutation, str, str]] = [
    (
        "data quality",
        lambda d: d["checks"][0]["not_null"].update(severity="warn"),
        "fail",
        "none of the 1 table check(s) has severity error",
    ),
    (
        "data quality",
        lambda d: source(d)["contract"].update(on_violation="warn"),
        "fail",
        "sources.orders.contract.on_violation is warn: rows breaking the contract would be "
        "published",
    ),
    (
        "data quality",
        lambda d: source(d)["contract"].update(on_violation="fail"),
        "warn",
        "sources.orders.contract.on_violation is fail: one bad row stops the whole pipeline",
    ),
    (
        "data quality",
        lambda d: source(d).pop("contract"),
        "fail",
        "source(s) without a contract: orders",
    ),
    ("idempotency", _append_sink, "fail", "blind append"),
    ("idempotency", _incremental_append, "warn", "every source reads incrementally"),
    (
        "idempotency",
        _postgres_append,
        "fail",
        "sinks[0] (postgres orders, mode append) has no keys",
    ),
    ("idempotency", _merge_on_nullable, "warn", "['amount'] not declared nullable: false"),
    ("cost", _big_unpartitioned, "fail", "sinks[0].partition_by is empty"),
    (
        "cost",
        lambda d: source(d)["inventory"].update(volume="40GB/day"),
        "warn",
        "sinks[0] grows to about",
    ),
    ("observability", lambda d: d.pop("owner"), "fail", "owner is not declared"),
    ("observability", lambda d: d.pop("description"), "warn", "description is not declared"),
    (
        "observability",
        lambda d: d["sla"].pop("freshness"),
        "warn",
        "neither sla.freshness nor a freshness check",
    ),
    ("reliability", lambda d: d.pop("retries"), "fail", "retries is not declared"),
    ("reliability", lambda d: d.pop("timeout"), "warn", "timeout is not declared"),
    (
        "reliability",
        lambda d: source(d)["contract"].update(on_violation="fail"),
        "warn",
        "source(s) orders have no dead-letter route",
    ),
]


@pytest.mark.parametrize(("check", "change", "status", "text"), GATE_CASES)
def test_a_spec_unsafe_for_production_fails_or_warns_at_the_gate(
    check: str, change: Mutation, status: str, text: str
) -> None:
    found = matching(mutated(change), check, "gate")

    hits = [f for f in found if text in f.reason]
    assert hits, [f.reason for f in found]
    assert hits[0].status == status
    assert hits[0].fix


def test_a_freshness_check_is_enough_to_watch_staleness() -> None:
    def change(d: dict[str, Any]) -> None:
        d["sla"].pop("freshness")
        d["checks"].append({"freshness": {"column": "order_date", "max_age": "2d"}})

    found = matching(mutated(change), "observability", "gate")

    assert [f.status for f in found] == ["pass"]


def test_a_stream_appending_to_delta_is_idempotent_but_is_told_to_schedule_optimize() -> None:
    result = reviewed(spec_data(STREAM))

    assert [f.status for f in matching(result, "idempotency", "gate")] == ["pass"]
    cost = matching(result, "cost", "gate")
    assert [f.status for f in cost] == ["warn"]
    assert "sluice optimize" in cost[0].fix
    reliability = matching(result, "reliability", "gate")
    assert reliability[0].status == "pass"
    assert "max_deliveries 5" in reliability[0].reason


def test_a_stream_without_error_checks_only_warns_at_the_data_quality_gate() -> None:
    data = spec_data(STREAM)
    data["checks"][0]["not_null"]["severity"] = "warn"

    found = matching(reviewed(data), "data quality", "gate")

    assert [f.status for f in found] == ["warn"]


SECRET = "Sup3rSecretValue-9f2c"


@pytest.mark.parametrize(
    ("where", "change"),
    [
        (
            "sinks[0].storage_options.secret_access_key",
            lambda d: d["sinks"][0].update(storage_options={"secret_access_key": SECRET}),
        ),
        (
            "dead_letter.storage_options.AWS_ACCESS_KEY_ID",
            lambda d: d["dead_letter"].update(storage_options={"AWS_ACCESS_KEY_ID": SECRET}),
        ),
        (
            "sources.orders.storage_options.token",
            lambda d: source(d).update(storage_options={"token": f"${{TOKEN:-{SECRET}}}"}),
        ),
    ],
)
def test_a_credential_written_in_clear_fails_without_showing_its_value(
    where: str, change: Mutation
) -> None:
    result = mutated(change)

    found = [f for f in matching(result, "source inventory", "readiness") if f.where == where]
    assert [f.status for f in found] == ["fail"], result.findings
    assert "${" in found[0].fix
    assert SECRET not in repr(result.to_data())


def test_a_password_inside_a_url_fails_and_a_referenced_one_passes() -> None:
    literal = spec_data()
    literal["sinks"][0]["storage_options"] = {"endpoint_url": f"http://minio:{SECRET}@s3:9000"}
    referenced = spec_data()
    referenced["sinks"][0]["storage_options"] = {
        "endpoint_url": "http://minio:${MINIO_PASSWORD}@s3:9000"
    }

    leaked = matching(reviewed(literal), "source inventory", "readiness")
    clean = matching(
        reviewed(referenced, environ={"MINIO_PASSWORD": "from-env"}),
        "source inventory",
        "readiness",
    )

    assert [f.status for f in leaked] == ["fail"]
    assert "sinks[0].storage_options.endpoint_url" in leaked[0].reason
    assert SECRET not in repr(leaked)
    assert [f.status for f in clean] == ["pass"]


def test_credentials_by_env_reference_pass() -> None:
    data = spec_data()
    data["sinks"][0]["storage_options"] = {
        "secret_access_key": "${AWS_SECRET_ACCESS_KEY}",
        "endpoint_url": "http://127.0.0.1:5000",
    }

    found = matching(
        reviewed(data, environ={"AWS_SECRET_ACCESS_KEY": "xyz"}), "source inventory", "readiness"
    )

    assert [f.status for f in found] == ["pass"]
    assert "${ENV} references" in found[0].reason


def write_spec(tmp_path: Path, data: dict[str, Any]) -> tuple[Path, Any]:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, parse_spec(path.read_text(), environ={})


def test_prod_refuses_a_failing_spec_listing_each_failure_and_the_override(tmp_path) -> None:
    data = spec_data()
    del data["retries"], data["sla"]
    path, pipeline = write_spec(tmp_path, data)

    with pytest.raises(ConfigError) as refused:
        enforce_review(pipeline, path, env="prod", override_reason=None, state_dir=tmp_path)

    message = str(refused.value)
    assert "retries is not declared" in message
    assert "the spec has no sla" in message
    assert "add retries: {max_attempts: 3, backoff: 30s}" in message
    assert '--override-review "reason"' in message
    assert not (tmp_path / "audit.jsonl").exists()


def test_an_overridden_prod_run_is_recorded_in_the_audit_log(tmp_path) -> None:
    data = spec_data()
    del data["retries"]
    path, pipeline = write_spec(tmp_path, data)

    result = enforce_review(
        pipeline, path, env="prod", override_reason="hotfix INC-42", state_dir=tmp_path
    )

    assert result is not None and result.has_failed
    entries = list(AuditLog(tmp_path).entries(action="review_override"))
    assert len(entries) == 1
    assert entries[0].pipeline == "orders_ready"
    assert entries[0].details == {
        "reason": "hotfix INC-42",
        "failed": ["reliability"],
        "spec": str(path),
        "env": "prod",
    }


def test_a_blank_override_reason_is_refused(tmp_path) -> None:
    data = spec_data()
    del data["retries"]
    path, pipeline = write_spec(tmp_path, data)

    with pytest.raises(ConfigError):
        enforce_review(pipeline, path, env="prod", override_reason="  ", state_dir=tmp_path)


def test_other_environments_are_not_reviewed(tmp_path) -> None:
    data = spec_data()
    del data["retries"]
    path, pipeline = write_spec(tmp_path, data)

    outcome = enforce_review(pipeline, path, env="dev", override_reason=None, state_dir=tmp_path)

    assert outcome is None
    assert not (tmp_path / "audit.jsonl").exists()


def test_a_passing_spec_runs_in_prod_without_an_audit_entry(tmp_path) -> None:
    path, pipeline = write_spec(tmp_path, spec_data())

    outcome = enforce_review(pipeline, path, env="prod", override_reason=None, state_dir=tmp_path)

    assert outcome is not None and not outcome.has_failed
    assert not (tmp_path / "audit.jsonl").exists()


@pytest.mark.parametrize(
    ("column", "rules", "expected"),
    [
        ("email", {}, True),
        ("CustomerName", {}, True),
        ("home_zip_code", {}, True),
        ("client_ip", {}, True),
        ("contact", {"format": "email"}, True),
        ("email_opt_in", {"type": "boolean"}, False),
        ("user_id", {}, False),
        ("page_url", {"format": "url"}, False),
        ("zipper_count", {"type": "integer"}, False),
    ],
)
def test_pii_looking_columns_are_told_by_name_words_and_format(
    column: str, rules: dict[str, Any], expected: bool
) -> None:
    assert looks_like_pii(column, ColumnContract(**rules)) is expected


def observability_of(project: Project | None) -> list[tuple[str, str]]:
    pipeline = parse_spec(READY, environ={})
    found = review(pipeline, raw=spec_data(), project=project).findings
    return [(f.status, f.reason) for f in found if f.check == "observability"]


def test_failures_must_reach_an_alert_route_of_the_project() -> None:
    [(status, reason)] = observability_of(ALERTED)
    assert status == "pass" and "failures alert on-call" in reason


def test_without_a_project_the_missing_alert_route_is_a_warning() -> None:
    [(status, reason)] = observability_of(None)
    assert status == "warn" and "no sluice.yaml project found" in reason


def test_a_route_for_other_pipelines_only_or_other_events_does_not_count() -> None:
    elsewhere = AlertRoute(name="x", type="webhook", url="http://h", pipelines=["another"])
    quiet = AlertRoute(name="y", type="webhook", url="http://h", on=["freshness"])
    project = Project(version=1, project="tests", alerts=[elsewhere, quiet])
    [(status, reason)] = observability_of(project)
    assert status == "fail" and "no alert route receives" in reason
