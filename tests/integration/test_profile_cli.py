"""`sluice profile` and `sluice suggest`: the rich table, JSON, a suggested contract and checks
that validate and pass on the data they came from, and clear errors."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner, Result

import sluiceway
from sluiceway.checks.profile import Profile
from sluiceway.checks.standalone import check_data
from sluiceway.cli_profile import profile, suggest
from sluiceway.core.loader import load_spec, pipeline_from_dict

ORDERS_CSV = textwrap.dedent(
    """\
    order_id,amount,status,day
    1,10.5,paid,2024-01-01
    2,20,paid,2024-01-02
    3,,open,2024-01-02
    4,7.25,paid,2024-01-05
    5,3,void,2024-01-03
    6,12,paid,2024-01-03
    """
)


@click.group()
def sluice() -> None:
    """The commands under test, grouped as `sluice` groups them."""


sluice.add_command(profile)
sluice.add_command(suggest)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "orders.csv").write_text(ORDERS_CSV)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(sluice, list(args), env={"COLUMNS": "220"})


def pipeline_with(suggested: dict[str, Any], data: str) -> dict[str, Any]:
    """A minimal pipeline around a suggested contract and checks."""
    return {
        "version": 1,
        "pipeline": "orders",
        "sources": {"orders": {"type": "files", "path": data, "contract": suggested["contract"]}},
        "checks": suggested["checks"],
        "sinks": [{"type": "delta", "path": "lake/orders"}],
    }


def test_profile_prints_one_row_per_column_with_its_numbers(project) -> None:
    result = invoke("profile", "orders.csv")

    assert result.exit_code == 0, result.output
    assert "orders.csv: 6 rows, 4 columns" in result.stdout
    row = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert set(row) == {"order_id", "amount", "status", "day"}
    assert "16.7%" in row["amount"] and "DOUBLE" in row["amount"]
    assert "10.5" in row["amount"] and "20" in row["amount"]  # p50 and max
    assert "paid (4), open (1), void (1)" in row["status"]
    assert "2024-01-01" in row["day"] and "2024-01-05" in row["day"]


def test_profile_json_is_a_profile_document(project) -> None:
    result = invoke("profile", "orders.csv", "--format", "json")

    assert result.exit_code == 0, result.output
    profiled = Profile.from_dict(json.loads(result.stdout))
    assert profiled.rows == 6
    assert profiled.column("amount").nulls == 1
    assert profiled.column("status").top_values == [("paid", 4), ("open", 1), ("void", 1)]


def test_suggested_contract_and_checks_load_and_pass_on_the_same_data(project) -> None:
    result = invoke("suggest", "orders.csv", "-o", "suggested.yaml")

    assert result.exit_code == 0, result.output
    assert "wrote suggested.yaml" in result.stdout
    suggested = yaml.safe_load((project / "suggested.yaml").read_text())
    columns = suggested["contract"]["columns"]
    assert columns["order_id"] == {"type": "bigint", "nullable": False, "min": 1, "max": 6}
    assert columns["amount"] == {"type": "double", "min": 3.0, "max": 20.0}
    assert columns["status"]["values"] == ["open", "paid", "void"]
    assert columns["day"] == {"type": "date", "nullable": False}
    checks = suggested["checks"]
    assert {"unique": {"column": "order_id"}} in checks
    assert {"not_null": {"column": "amount"}} not in checks
    assert {"row_count_between": {"min_value": 3, "max_value": 12}} in checks

    spec = project / "pipeline.yaml"
    spec.write_text(yaml.safe_dump(pipeline_with(suggested, "orders.csv")))
    pipeline = load_spec(spec)
    results = check_data(spec, None, base_dir=project)

    assert len(results) == len(pipeline.checks) == len(checks)
    assert [r.name for r in results if r.status != "passed"] == []


def test_a_pipeline_with_the_suggested_contract_rejects_no_row(project) -> None:
    invoke("suggest", "orders.csv", "-o", "suggested.yaml")
    suggested = yaml.safe_load((project / "suggested.yaml").read_text())
    pipeline = pipeline_from_dict(pipeline_with(suggested, "orders.csv"))

    result = sluiceway.run(
        pipeline, logical_date=date(2024, 1, 6), base_dir=project, state_dir=project / ".sluice"
    )

    assert result.status == "succeeded", result.error
    assert (result.accounting.rows_in, result.accounting.rows_rejected) == (6, 0)


def test_suggest_on_typed_parquet_maps_types_and_its_checks_pass(project) -> None:
    table = pa.table(
        {
            "id": pa.array([1, 2, 3, 4], pa.int32()),
            "price": pa.array(
                [Decimal("1.50"), Decimal("2.25"), None, Decimal("9.99")], pa.decimal128(9, 2)
            ),
            "at": pa.array(
                [datetime(2024, 1, d, 8, tzinfo=UTC) for d in (1, 2, 3, 4)],
                pa.timestamp("us", "UTC"),
            ),
            "active": pa.array([True, False, True, True]),
        }
    )
    pq.write_table(table, project / "items.parquet")

    result = invoke("suggest", "items.parquet")

    assert result.exit_code == 0, result.output
    suggested = yaml.safe_load(result.stdout)
    columns = suggested["contract"]["columns"]
    assert columns["id"]["type"] == "integer"
    assert columns["price"] == {
        "type": "decimal",
        "precision": 9,
        "scale": 2,
        "min": 1.5,
        "max": 9.99,
    }
    assert columns["at"] == {"type": "timestamp", "nullable": False}
    assert columns["active"] == {"type": "boolean", "nullable": False}
    checks_file = project / "checks.yaml"
    checks_file.write_text(yaml.safe_dump({"version": 1, "checks": suggested["checks"]}))
    results = check_data(checks_file, "items.parquet", base_dir=project)
    assert {r.name for r in results} >= {"between(at)", "between(price)", "unique(id)"}
    assert [r.name for r in results if r.status != "passed"] == []


def test_a_pipeline_spec_source_reads_its_primary_source_and_hides_pii(project) -> None:
    (project / "users.csv").write_text("user_id,email\n1,ann@example.com\n2,bob@example.com\n")
    spec = {
        "version": 1,
        "pipeline": "users",
        "sources": {"users": {"type": "files", "path": "users.csv"}},
        "pii": {"email": "hmac"},
        "sinks": [{"type": "delta", "path": "lake/users"}],
    }
    (project / "users.yaml").write_text(yaml.safe_dump(spec))

    shown = invoke("profile", "users.yaml")
    dumped = invoke("profile", "users.yaml", "--format", "json")
    suggested = invoke("suggest", "users.yaml")

    assert shown.exit_code == dumped.exit_code == suggested.exit_code == 0, shown.output
    assert "email (PII)" in shown.stdout
    for output in (shown.stdout, dumped.stdout, suggested.stdout):
        assert "example.com" not in output
    assert json.loads(dumped.stdout)["rows"] == 2


def test_the_pii_option_hides_a_column_of_a_data_path(project) -> None:
    result = invoke("profile", "orders.csv", "--pii", "status", "--format", "json")

    assert result.exit_code == 0, result.output
    assert "paid" not in result.stdout


@pytest.mark.parametrize("command", ["profile", "suggest"])
def test_a_missing_file_exits_1_with_a_clear_message(project, command) -> None:
    result = invoke(command, "nothere.csv")

    assert result.exit_code == 1
    assert "error: no file matches 'nothere.csv'" in result.stderr
    assert "Traceback" not in result.output


def test_unreadable_data_exits_1_with_a_clear_message(project) -> None:
    (project / "broken.parquet").write_bytes(b"this is not parquet at all\n" * 4)

    result = invoke("profile", "broken.parquet")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "broken.parquet" in result.stderr
    assert "Traceback" not in result.output


def test_a_yaml_file_that_is_not_a_pipeline_spec_is_refused(project) -> None:
    (project / "notes.yaml").write_text("just: notes\n")

    result = invoke("suggest", "notes.yaml")

    assert result.exit_code == 1
    assert "notes.yaml is YAML but not a pipeline spec" in result.stderr


def test_a_pipeline_spec_with_problems_lists_them_and_exits_1(project) -> None:
    (project / "bad.yaml").write_text(
        "version: 1\npipeline: bad\nsources: {x: {type: file}}\nsinks: []\n"
    )

    result = invoke("profile", "bad.yaml")

    assert result.exit_code == 1
    assert "unknown source type 'file'. Did you mean 'files'?" in result.stderr


def test_profile_reads_a_folder_on_s3(project, s3_client, make_bucket, s3_endpoint) -> None:
    bucket = make_bucket("profile")
    s3_client.put_object(Bucket=bucket, Key="orders/orders.csv", Body=ORDERS_CSV.encode())
    env = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "sluice-test-key",
        "AWS_SECRET_ACCESS_KEY": "sluice-test-secret-value",
        "AWS_REGION": "us-east-1",
    }

    result = CliRunner().invoke(
        sluice, ["profile", f"s3://{bucket}/orders/", "--format", "json"], env=env
    )

    assert result.exit_code == 0, result.output
    profiled = Profile.from_dict(json.loads(result.stdout))
    assert (profiled.rows, profiled.column("amount").max) == (6, 20.0)
