"""`sluice check`: exit codes, table and JSON output, secrets kept out, the examples ready."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from sluiceway.cli import main
from sluiceway.gates.findings import GATES, READINESS_CHECKS
from sluiceway.gates.review import review_file
from sluiceway.ops.audit import AuditLog

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [
    ROOT / "examples" / name / "pipeline.yaml"
    for name in ("clickstream_batch", "clickstream_stream", "churn_features")
]
SECRET = "Plaintext-Secret-7731"

READY: dict[str, Any] = {
    "version": 1,
    "pipeline": "orders_ready",
    "owner": "data-platform@example.com",
    "description": "Orders for finance",
    "sla": {"latency": "30m", "freshness": "1d", "availability": "99.9%"},
    "quality": {"completeness": 0.99, "pass_rate": 0.98},
    "compliance": {"retention": "400d", "subject_key": "user_id"},
    "cost": {"budget_per_month": 100, "growth_per_year": 1.5},
    "retries": {"max_attempts": 3},
    "timeout": "2h",
    "sources": {
        "orders": {
            "type": "files",
            "path": "data/",
            "format": "csv",
            "inventory": {
                "volume": "10k rows/day",
                "freshness": "1d",
                "owner": "shop@example.com",
                "access_pattern": "full",
            },
            "contract": {
                "columns": {
                    "order_id": {"nullable": False},
                    "user_id": {"nullable": False},
                    "email": {"format": "email"},
                    "order_date": {"type": "date"},
                }
            },
        }
    },
    "pii": {"email": "hmac"},
    "checks": [{"not_null": {"column": "order_id"}}],
    "sinks": [
        {
            "type": "delta",
            "path": "lake/orders",
            "partition_by": ["order_date"],
            "mode": "overwrite_partition",
        }
    ],
}


PROJECT = """version: 1
project: tests
alerts:
  - {name: on-call, type: webhook, url: "http://127.0.0.1:9/hook"}
"""


def write(tmp_path: Path, name: str, data: dict[str, Any]) -> str:
    (tmp_path / "sluice.yaml").write_text(PROJECT)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def variant(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(READY))
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return data


def check(*args: str) -> Result:
    return CliRunner().invoke(main, ["check", *args], env={"COLUMNS": "250"})


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.parent.name)
def test_every_example_spec_passes_the_review(spec: Path) -> None:
    _, result = review_file(spec)

    assert not result.has_failed, [f for f in result.findings if f.status == "fail"]
    assert {f.check for f in result.findings} == set(READINESS_CHECKS) | set(GATES)


def test_the_examples_together_exit_0() -> None:
    result = check(*map(str, EXAMPLES))

    assert result.exit_code == 0, result.output
    assert result.output.count("ready —") == 3


def test_a_ready_spec_exits_0_with_a_row_per_check(tmp_path) -> None:
    result = check(write(tmp_path, "ready.yaml", READY))

    assert result.exit_code == 0, result.output
    for name in (*READINESS_CHECKS, *GATES):
        assert name in result.stdout
    assert "10 passed, 0 warning(s), 0 failed" in result.stdout


def test_warnings_alone_exit_0(tmp_path) -> None:
    result = check(write(tmp_path, "warn.yaml", variant(timeout=None, description=None)))

    assert result.exit_code == 0, result.output
    assert "2 warning(s), 0 failed" in result.stdout
    assert "add timeout: 2h" in result.stdout


def test_a_failing_spec_exits_1_with_the_reason_and_fix(tmp_path) -> None:
    result = check(write(tmp_path, "fail.yaml", variant(retries=None, owner=None)))

    assert result.exit_code == 1, result.output
    assert "retries is not declared" in result.stdout
    assert "add owner: team@example.com" in result.stdout
    assert "FAILED" in result.stdout


def test_a_spec_that_does_not_load_exits_2_with_its_problems(tmp_path) -> None:
    broken = variant(sinks=[{"type": "delta", "path": "x", "mode": "apend"}])

    result = check(write(tmp_path, "broken.yaml", broken), write(tmp_path, "ok.yaml", READY))

    assert result.exit_code == 2, result.output
    assert "sinks[0].mode" in result.stderr
    assert "broken.yaml" in result.stderr
    assert "10 passed" in result.stdout


def test_json_for_one_spec_is_one_review_object(tmp_path) -> None:
    result = check(write(tmp_path, "fail.yaml", variant(retries=None)), "--format", "json")

    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["pipeline"] == "orders_ready"
    assert data["passed"] is False
    assert data["counts"] == {"pass": 9, "warn": 0, "fail": 1}
    failed = [f for f in data["findings"] if f["status"] == "fail"]
    assert failed[0]["check"] == "reliability"
    assert failed[0]["group"] == "gate"
    assert set(failed[0]) == {"group", "check", "status", "reason", "fix", "where"}


def test_json_for_several_specs_is_a_list_in_argument_order(tmp_path) -> None:
    first = write(tmp_path, "a.yaml", READY)
    second = write(tmp_path, "b.yaml", variant(pipeline="orders_other"))

    result = check(first, second, "--format", "json")

    assert result.exit_code == 0, result.output
    assert [r["pipeline"] for r in json.loads(result.stdout)] == ["orders_ready", "orders_other"]


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_a_literal_credential_fails_and_is_never_printed(tmp_path, fmt: str) -> None:
    sinks = [{**READY["sinks"][0], "storage_options": {"aws_secret_access_key": SECRET}}]

    result = check(write(tmp_path, "leak.yaml", variant(sinks=sinks)), "--format", fmt)

    assert result.exit_code == 1, result.output
    assert "sinks[0].storage_options.aws_secret_access_key" in result.stdout
    assert SECRET not in result.output


def test_json_for_a_single_spec_that_does_not_load_prints_only_its_problems(tmp_path) -> None:
    result = check(write(tmp_path, "bad.yaml", variant(sinks=None)), "--format", "json")

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "sinks" in result.stderr


def unready_project(tmp_path: Path) -> str:
    data = tmp_path / "data"
    data.mkdir()
    (data / "orders.csv").write_text(
        "order_id,user_id,email,order_date\n1,u1,a@example.com,2024-01-02\n"
    )
    return write(tmp_path, "pipeline.yaml", variant(retries=None))


def test_a_prod_run_of_a_failing_spec_is_refused_before_anything_is_written(tmp_path) -> None:
    spec = unready_project(tmp_path)
    state = tmp_path / ".sluice"

    result = CliRunner().invoke(
        main, ["run", spec, "--env", "prod", "--state-dir", str(state)], env={"COLUMNS": "250"}
    )

    assert result.exit_code == 2, result.output
    assert "retries is not declared" in result.stderr
    assert "--override-review" in result.stderr
    assert not (tmp_path / "lake").exists()


def test_an_overridden_prod_run_publishes_and_leaves_an_audit_entry(tmp_path) -> None:
    spec = unready_project(tmp_path)
    state = tmp_path / ".sluice"
    args = ["run", spec, "--env", "prod", "--state-dir", str(state)]

    result = CliRunner().invoke(
        main,
        [*args, "--date", "2024-01-02", "--override-review", "hotfix INC-7"],
        env={"COLUMNS": "250", "SLUICE_HMAC_KEY": "k" * 32, "SLUICE_ENCRYPTION_KEY": "ab" * 32},
    )

    assert result.exit_code == 0, result.output
    assert (tmp_path / "lake" / "orders" / "_delta_log").is_dir()
    [entry] = AuditLog(state).entries(action="review_override")
    assert entry.details["reason"] == "hotfix INC-7"
    assert entry.details["failed"] == ["reliability"]
