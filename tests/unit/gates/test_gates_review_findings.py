"""Bugs found reviewing `sluice check` and `sluice doc`: each test failed before its fix.

Fix suggestions are applied literally and the spec reviewed again: the finding they answer
must then pass (or at least not fail), and the spec must still load.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from sluiceway.cli import main
from sluiceway.core.loader import parse_spec
from sluiceway.core.project import AlertRoute, Project
from sluiceway.errors import ConfigError
from sluiceway.gates.doc import build_document, mermaid_label, render_markdown
from sluiceway.gates.doc_html import render_html
from sluiceway.gates.findings import Finding, Review
from sluiceway.gates.review import review
from sluiceway.ops.pricing import load_prices

READY: dict[str, Any] = yaml.safe_load(
    """
version: 1
pipeline: orders_ready
owner: data-platform@example.com
description: Orders, cleaned, for finance
sla: {latency: 30m, freshness: 1d, availability: 99.9%}
quality: {completeness: 0.99, pass_rate: 0.98}
compliance: {retention: 400d, subject_key: user_id}
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
  - {type: delta, path: lake/orders, partition_by: [order_date], mode: overwrite_partition}
dead_letter: {path: lake/dead_letter}
"""
)
SECRET = "Plaintext-Secret-7731"

ALERTED = Project(
    version=1,
    project="tests",
    alerts=[AlertRoute(name="on-call", type="webhook", url="http://127.0.0.1:9/hook")],
)


def spec() -> dict[str, Any]:
    return copy.deepcopy(READY)


def reviewed(data: dict[str, Any], environ: dict[str, str] | None = None) -> Review:
    pipeline = parse_spec(yaml.safe_dump(data, sort_keys=False), environ=environ or {})
    return review(pipeline, raw=data, project=ALERTED)


def not_passed(result: Review, check: str) -> list[Finding]:
    return [f for f in result.findings if f.check == check and f.status != "pass"]


def statuses(result: Review, check: str) -> list[str]:
    return [f.status for f in result.findings if f.check == check]


def document_of(data: dict[str, Any], prices: dict[str, float] | None = None) -> Any:
    pipeline = parse_spec(yaml.safe_dump(data, sort_keys=False), environ={})
    return build_document(pipeline, prices=prices or load_prices(pipeline), raw=data)


def test_the_ready_spec_of_these_tests_passes_every_check() -> None:
    assert not reviewed(spec()).has_failed
    assert [f.status for f in reviewed(spec()).findings] == ["pass"] * 10


# Credentials.


def test_a_bearer_header_holding_an_env_reference_is_not_a_literal_credential() -> None:
    data = spec()
    data["sources"]["orders"] = {
        **data["sources"]["orders"],
        "type": "api",
        "url": "https://api.example.com/orders",
        "headers": {"Authorization": "Bearer ${API_TOKEN}"},
    }
    for key in ("path", "format"):
        data["sources"]["orders"].pop(key)

    result = reviewed(data, environ={"API_TOKEN": "t" * 24})

    assert statuses(result, "source inventory") == ["pass"], result.findings


def test_a_bearer_header_with_the_token_in_clear_still_fails() -> None:
    data = spec()
    data["sources"]["orders"].update(storage_options={"aws_session_token": f"Bearer {SECRET}"})

    [found] = not_passed(reviewed(data), "source inventory")

    assert found.status == "fail"
    assert found.where == "sources.orders.storage_options.aws_session_token"
    assert SECRET not in found.reason + found.fix


def test_an_env_reference_with_an_empty_default_is_a_reference() -> None:
    data = spec()
    data["sources"]["orders"]["storage_options"] = {"aws_secret_access_key": "${AWS_SECRET:-}"}

    assert statuses(reviewed(data), "source inventory") == ["pass"]


def test_an_env_reference_whose_default_is_the_secret_fails_without_showing_it() -> None:
    data = spec()
    data["sources"]["orders"]["storage_options"] = {
        "aws_secret_access_key": "${AWS_SECRET:-" + SECRET + "}"
    }

    [found] = not_passed(reviewed(data), "source inventory")

    assert found.status == "fail"
    assert "default" in found.reason
    assert SECRET not in found.reason + found.fix


def test_a_secret_in_a_url_query_string_fails() -> None:
    data = spec()
    data["sources"]["orders"] = {
        "type": "api",
        "url": f"https://api.example.com/orders?api_key={SECRET}&page=1",
        "inventory": data["sources"]["orders"]["inventory"],
        "contract": data["sources"]["orders"]["contract"],
    }

    [found] = not_passed(reviewed(data), "source inventory")

    assert found.status == "fail"
    assert found.where == "sources.orders.url"
    assert SECRET not in found.reason + found.fix


def test_a_url_query_string_holding_an_env_reference_passes() -> None:
    data = spec()
    data["sources"]["orders"] = {
        "type": "api",
        "url": "https://api.example.com/orders?api_key=${API_KEY}",
        "inventory": data["sources"]["orders"]["inventory"],
        "contract": data["sources"]["orders"]["contract"],
    }

    assert statuses(reviewed(data, environ={"API_KEY": "k" * 20}), "source inventory") == ["pass"]


# Fix suggestions applied literally.


def _fix_value(fix: str, key: str) -> Any:
    """The YAML flow value after `key: ` in a fix text, e.g. `pii: {a: b}` → {'a': 'b'}."""
    match = re.search(re.escape(key) + r": ", fix)
    assert match, f"'{key}: ...' not in the fix {fix!r}"
    text = fix[match.end() :]
    if text[0] not in "{[":
        return yaml.safe_load(re.match(r"[\w.]+", text).group(0))
    depth = 0
    for end, char in enumerate(text):
        depth += (char in "{[") - (char in "}]")
        if depth == 0:
            return yaml.safe_load(text[: end + 1])
    raise AssertionError(f"unbalanced value after '{key}: ' in {fix!r}")


def test_the_undeclared_pii_fix_keeps_the_columns_already_declared() -> None:
    data = spec()
    data["sources"]["orders"]["contract"]["columns"]["phone"] = {"type": "string"}
    [found] = not_passed(reviewed(data), "compliance")

    data["pii"] = _fix_value(found.fix, "pii")

    assert data["pii"] == {"email": "hmac", "phone": "hash"}
    assert statuses(reviewed(data), "compliance") == ["pass"]


def test_the_blocking_check_fix_names_a_column_of_the_contract() -> None:
    data = spec()
    data["checks"] = [{"not_null": {"column": "order_id", "severity": "warn"}}]
    [found] = not_passed(reviewed(data), "data quality")

    data["checks"].append(_fix_value(found.fix, "add to checks"))

    assert data["checks"][-1] == {"not_null": {"column": "order_id"}}
    assert statuses(reviewed(data), "data quality") == ["pass"]


@pytest.mark.parametrize(
    ("sink", "expected_mode"),
    [
        ({"type": "postgres", "table": "orders", "mode": "append", "keys": ["order_id"]}, "upsert"),
        ({"type": "parquet", "path": "out/orders", "mode": "append"}, "overwrite_partition"),
        ({"type": "delta", "path": "lake/o", "mode": "append"}, "merge"),
    ],
    ids=["postgres", "parquet", "delta"],
)
def test_the_blind_append_fix_names_a_mode_the_sink_has(
    sink: dict[str, Any], expected_mode: str
) -> None:
    data = spec()
    data["sinks"] = [sink]
    [found] = [f for f in not_passed(reviewed(data), "idempotency") if f.status == "fail"]

    for key in ("mode", "keys", "merge_keys", "partition_by"):
        if f"sinks[0].{key}: " in found.fix:
            sink[key] = _fix_value(found.fix, f"sinks[0].{key}")

    assert sink["mode"] == expected_mode
    assert "fail" not in statuses(reviewed(data), "idempotency")


def test_a_postgres_append_sink_on_incremental_sources_is_a_warning_like_delta() -> None:
    data = spec()
    data["sources"]["orders"]["incremental"] = True
    data["sinks"] = [{"type": "postgres", "table": "orders", "mode": "append"}]

    assert statuses(reviewed(data), "idempotency") == ["warn"]


def test_an_unpartitioned_parquet_sink_at_high_volume_fails_the_cost_gate() -> None:
    data = spec()
    data["sinks"].append({"type": "parquet", "path": "out/orders", "mode": "append"})
    data["sources"]["orders"]["incremental"] = True
    data["sinks"][0] = {"type": "delta", "path": "lake/o", "mode": "append", "partition_by": ["d"]}

    [found] = [f for f in not_passed(reviewed(data), "cost") if f.status == "fail"]

    assert found.where == "sinks[1].partition_by"
    data["sinks"][1]["partition_by"] = _fix_value(found.fix, "sinks[1].partition_by")
    assert "fail" not in statuses(reviewed(data), "cost")


def test_the_partition_fix_names_a_date_column_of_the_contract() -> None:
    data = spec()
    data["sinks"] = [
        {"type": "delta", "path": "lake/o", "mode": "merge", "merge_keys": ["order_id"]}
    ]
    [found] = not_passed(reviewed(data), "cost")

    assert _fix_value(found.fix, "sinks[0].partition_by") == ["order_date"]


def test_a_single_attempt_retry_policy_is_a_reliability_warning() -> None:
    data = spec()
    data["retries"] = {"max_attempts": 1}

    [found] = not_passed(reviewed(data), "reliability")

    assert found.status == "warn"
    assert found.where == "retries.max_attempts"
    data["retries"]["max_attempts"] = _fix_value(found.fix, "retries.max_attempts")
    assert statuses(reviewed(data), "reliability") == ["pass"]


# Volumes and prices.


def test_a_zero_compute_throughput_price_is_a_clear_error_not_a_crash() -> None:
    data = spec()
    data["cost"]["prices"] = {"rows_per_compute_hour": 0}

    with pytest.raises(ConfigError, match="rows_per_compute_hour"):
        document_of(data)


def test_a_volume_too_large_to_compute_with_fails_the_cost_readiness() -> None:
    data = spec()
    data["sources"]["orders"]["inventory"]["volume"] = "9" * 400 + "TB/s"

    result = reviewed(data)

    assert any(f.where == "sources.orders.inventory.volume" for f in result.of("fail"))
    assert "inf" not in " ".join(f.reason for f in result.findings)


def test_a_zero_volume_renders_a_zero_cost_document() -> None:
    data = spec()
    data["sources"]["orders"]["inventory"]["volume"] = "0/s"

    text = render_markdown(document_of(data))

    assert "| Total per month | 0.00 USD |" in text


# Escaping.


def test_markdown_never_carries_raw_html_from_the_spec() -> None:
    data = spec()
    data["description"] = "<script>alert(1)</script> orders"

    text = render_markdown(document_of(data))

    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; orders" in text


def test_html_escapes_spec_text_everywhere() -> None:
    data = spec()
    data["description"] = "<script>alert(1)</script>"
    data["sinks"][0]["path"] = "lake/<img src=x onerror=alert(1)>"

    page = render_html(document_of(data))

    assert "<script>" not in page
    assert "<img" not in page


def test_a_mermaid_label_cannot_close_the_markdown_fence() -> None:
    label = mermaid_label("lake/```evil```")

    assert "`" not in label
    assert label.startswith('"') and label.endswith('"')


# The CLI.


def _write(tmp_path: Path, name: str, data: dict[str, Any] | str) -> str:
    path = tmp_path / name
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text)
    return str(path)


def test_json_of_several_specs_names_each_spec_and_keeps_the_unloadable_ones(tmp_path) -> None:
    good = _write(tmp_path, "good.yaml", spec())
    bad_data = spec()
    bad_data.pop("retries")
    bad = _write(tmp_path, "bad.yaml", bad_data)
    broken = _write(tmp_path, "broken.yaml", "version: 1\npipeline: [\n")

    result = CliRunner().invoke(main, ["check", good, broken, bad, "--format", "json"])

    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert [entry["spec"] for entry in data] == [good, broken, bad]
    assert [entry["passed"] for entry in data] == [True, False, False]
    assert data[1]["loaded"] is False and data[1]["problems"]
    assert data[0]["loaded"] is True and "findings" in data[0]


def test_check_reviews_a_spec_whose_env_references_are_not_set(tmp_path) -> None:
    data = spec()
    data["sources"]["orders"]["path"] = "${ORDERS_DIR_FOR_REVIEW_TEST}/orders/"
    path = _write(tmp_path, "env.yaml", data)

    result = CliRunner().invoke(main, ["check", path, "--format", "json"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["passed"] is True


def test_doc_renders_a_spec_whose_env_references_are_not_set(tmp_path) -> None:
    data = spec()
    data["sinks"][0]["path"] = "s3://${LAKE_BUCKET_FOR_DOC_TEST}/orders"
    path = _write(tmp_path, "env.yaml", data)

    result = CliRunner().invoke(main, ["doc", path])

    assert result.exit_code == 0, result.output
    assert "s3://${LAKE_BUCKET_FOR_DOC_TEST}/orders" in result.stdout


def test_doc_describes_parquet_append_as_files_named_by_key_not_as_a_delta_commit() -> None:
    data = spec()
    data["sources"]["orders"]["incremental"] = True
    data["sinks"] = [{"type": "parquet", "path": "out/o", "mode": "append", "partition_by": ["d"]}]

    text = render_markdown(document_of(data))

    assert "recorded with the commit" not in text
    assert "named after the run's idempotency key" in text


# Every readiness fix, applied literally.


def _apply_fix(data: dict[str, Any], fix: str) -> None:
    """Apply `add PATH: VALUE`, `add to PATH: {MAPPING}` or `set PATH: VALUE [and PATH: VALUE]`
    as written."""
    match = re.match(r"(add to|add|set) ([A-Za-z_][\w.\[\]]*): ", fix)
    assert match, f"the fix {fix!r} does not say what to write where"
    _write_value(data, match.group(2), fix, is_merge=match.group(1) == "add to")
    for more in re.finditer(r" and ([A-Za-z_][\w.\[\]]*): ", fix):
        _write_value(data, more.group(1), fix, is_merge=False)


def _write_value(data: dict[str, Any], path: str, fix: str, *, is_merge: bool) -> None:
    start = fix.index(f"{path}: ") + len(path) + 2
    if fix[start] in "{[":
        value = _fix_value(fix, path)
    else:
        value = yaml.safe_load(re.split(r" \(|, | or |; | and ", fix[start:])[0].strip())
    node: Any = data
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path)[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
    last = path.split(".")[-1]
    if is_merge:
        node.setdefault(last, {}).update(value)
    else:
        node[last] = value


def _drop(*keys: str) -> Any:
    def change(data: dict[str, Any]) -> None:
        *parents, last = keys
        node = data
        for key in parents:
            node = node[key]
        node.pop(last)

    return change


FIXABLE: list[tuple[str, Any]] = [
    ("no inventory", _drop("sources", "orders", "inventory")),
    ("no sla", _drop("sla")),
    ("sla without latency", _drop("sla", "latency")),
    ("quality without pass_rate", _drop("quality", "pass_rate")),
    ("no retention", _drop("compliance", "retention")),
    ("no subject key", _drop("compliance", "subject_key")),
    ("no budget", _drop("cost", "budget_per_month")),
    ("no owner", _drop("owner")),
    ("no timeout", _drop("timeout")),
    ("no retries", _drop("retries")),
]


@pytest.mark.parametrize(("case", "change"), FIXABLE, ids=[case for case, _ in FIXABLE])
def test_every_fix_applied_as_written_turns_its_finding_into_a_pass(case: str, change: Any) -> None:
    data = spec()
    change(data)
    problems = [f for f in reviewed(data).findings if f.status != "pass"]
    assert problems, case

    for found in problems:
        _apply_fix(data, found.fix)

    assert [f for f in reviewed(data).findings if f.status != "pass"] == []


def test_the_contract_fix_is_valid_yaml_and_loads() -> None:
    data = spec()
    data["sources"]["orders"].pop("contract")
    found = next(f for f in reviewed(data).findings if f.where == "sources.orders.contract")

    _apply_fix(data, found.fix)

    assert data["sources"]["orders"]["contract"]["on_violation"] == "dead_letter"
    result = reviewed(data)
    assert "fail" not in statuses(result, "data quality")
    assert "fail" not in statuses(result, "quality standards")


def test_the_subject_key_fix_names_a_person_column_of_the_contract() -> None:
    data = spec()
    columns = data["sources"]["orders"]["contract"]["columns"]
    columns["customer_id"] = columns.pop("user_id")
    data["compliance"].pop("subject_key")

    [found] = not_passed(reviewed(data), "compliance")

    assert _fix_value(found.fix, "compliance.subject_key") == "customer_id"


# Access patterns.


@pytest.mark.parametrize(
    ("source", "declared", "actual"),
    [
        (
            {"type": "files", "path": "d/", "format": "csv", "incremental": True},
            "full",
            "incremental",
        ),
        ({"type": "delta", "path": "lake/raw"}, "stream", "full"),
        ({"type": "api", "url": "https://api.example.com/o"}, "cdc", "api"),
    ],
    ids=["files", "delta", "api"],
)
def test_an_access_pattern_contradicting_the_source_settings_is_a_warning_with_the_real_one(
    source: dict[str, Any], declared: str, actual: str
) -> None:
    data = spec()
    data["sinks"][0] = {"type": "delta", "path": "lake/o", "mode": "append", "partition_by": ["d"]}
    old = data["sources"]["orders"]
    data["sources"]["orders"] = {
        **source,
        "inventory": old["inventory"],
        "contract": old["contract"],
    }
    data["sources"]["orders"]["inventory"]["access_pattern"] = declared

    [found] = not_passed(reviewed(data), "source inventory")

    assert found.status == "warn"
    assert _fix_value(found.fix, "sources.orders.inventory.access_pattern") == actual


# Every source type, in review and doc.

_STREAMING = {
    "redis_streams": {"url": "redis://127.0.0.1:6379/0", "stream": "orders"},
    "nats": {"url": "nats://127.0.0.1:4222", "stream": "ORDERS", "subject": "orders.>"},
    "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topic": "orders", "group_id": "g"},
    "postgres_cdc": {"table": "public.orders"},
    "mysql_cdc": {"table": "shop.orders", "user": "repl", "password_env": "MYSQL_PW"},
}
_BATCH = {
    "postgres": {
        **{"table": "public.orders", "mode": "incremental", "cursor": "updated_at"},
        "primary_key": ["order_id"],
    },
    "mysql": {"table": "orders", "user": "app", "database": "shop", "password_env": "MY_PW"},
    "api": {"url": "https://api.example.com/o", "headers": {"Authorization": "Bearer ${TOKEN}"}},
    "delta": {"path": "s3://lake/raw/orders"},
    "files": {"path": "s3://lake/in/", "format": "csv", "incremental": True},
}
_PATTERN = {"postgres": "incremental", "files": "incremental", "api": "api", "mysql": "full"}


def _with_source(kind: str) -> dict[str, Any]:
    data = spec()
    old = data["sources"]["orders"]
    settings = {**_STREAMING, **_BATCH}[kind]
    if kind in _STREAMING:
        data.update(mode="stream")
        data.pop("retries")
        data.pop("timeout")
        is_cdc = kind.endswith("_cdc")
        sink = {"type": "delta", "path": "lake/o", "mode": "merge", "merge_keys": ["order_id"]}
        data["sinks"] = [sink if is_cdc else {"type": "delta", "path": "lake/o", "mode": "append"}]
        pattern = "cdc" if is_cdc else "stream"
    else:
        data["sinks"] = [
            {"type": "delta", "path": "lake/o", "mode": "merge", "merge_keys": ["order_id"]},
            {"type": "postgres", "table": "orders", "keys": ["order_id"]},
            {"type": "parquet", "path": "out/o", "partition_by": ["order_date"]},
        ]
        if kind == "files":
            data["sinks"][2]["mode"] = "append"
        pattern = _PATTERN.get(kind, "full")
    data["sources"]["orders"] = {"type": kind, **settings, "contract": old["contract"]}
    data["sources"]["orders"]["inventory"] = {**old["inventory"], "access_pattern": pattern}
    data["sources"]["orders"]["inventory"]["volume"] = "500k rows/day"
    return data


@pytest.mark.parametrize("kind", [*_BATCH, *_STREAMING])
def test_every_source_type_reviews_without_failure_and_renders_both_documents(kind: str) -> None:
    data = _with_source(kind)
    environ = {"TOKEN": "t" * 24}
    pipeline = parse_spec(yaml.safe_dump(data, sort_keys=False), environ=environ)

    result = review(pipeline, raw=data, project=ALERTED)
    document = build_document(pipeline, prices=load_prices(pipeline), raw=data)
    text, page = render_markdown(document), render_html(document)

    assert not result.has_failed, result.of("fail")
    for found in result.of("warn"):
        if found.check == "idempotency" and found.fix.startswith("for reruns that converge: set"):
            _apply_fix(data, found.fix.removeprefix("for reruns that converge: "))
            assert not reviewed(data, environ).has_failed
    assert statuses(result, "source inventory") == ["pass"]
    assert f"| orders | {kind} |" in text
    assert f"orders ({kind})" in page
    assert json.loads(json.dumps(result.to_data()))["passed"] is True


def test_a_document_with_three_sinks_draws_and_partitions_each_of_them() -> None:
    data = _with_source("postgres")

    text = render_markdown(document_of(data))

    for index, kind in enumerate(("delta", "postgres", "parquet")):
        assert f"sink{index}[(" in text and f"### sinks[{index}]: {kind}" in text
    assert "Not a file table: partitioning is the database's concern." in text
    assert text.count("-->") >= 3


def test_the_append_fix_on_incremental_files_never_suggests_overwrite_the_loader_refuses() -> None:
    data = spec()
    data["sources"]["orders"]["incremental"] = True
    data["sources"]["orders"]["inventory"]["access_pattern"] = "incremental"
    data["sinks"][0] = {"type": "delta", "path": "lake/o", "mode": "append", "partition_by": ["d"]}
    [found] = not_passed(reviewed(data), "idempotency")

    _apply_fix(data, found.fix.removeprefix("for reruns that converge: "))

    assert data["sinks"][0]["mode"] == "merge"
    assert statuses(reviewed(data), "idempotency") == ["pass"]


def test_a_password_in_a_connection_url_inside_a_sql_step_fails() -> None:
    data = spec()
    data["steps"] = [
        {"sql": f"SELECT * FROM input WHERE 'postgresql://app:{SECRET}@db/x' IS NOT NULL"}
    ]

    [found] = not_passed(reviewed(data), "source inventory")

    assert found.where == "steps[0].sql"
    assert SECRET not in found.reason + found.fix
