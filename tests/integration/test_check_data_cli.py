"""`sluice check-data`, run as a real process: exit codes, messages, typed reads, S3."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ORDERS_CSV = "order_id,amount,status\n1,10.5,paid\n2,20,paid\n3,,open\n4,7.25,paid\n"
CHECKS = textwrap.dedent(
    """\
    version: 1
    checks:
      - not_null: {column: order_id}
      - between: {column: amount, min_value: 0, max_value: 100}
      - in_set: {column: status, value_set: [paid, open]}
    """
)


def sluice(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    beside = Path(sys.executable).parent / "sluice"
    executable = str(beside) if beside.exists() else shutil.which("sluice")
    assert executable, "the `sluice` console script is not installed: run `pip install -e .`"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    environ.update({"COLUMNS": "300", **(env or {})})
    return subprocess.run(
        [executable, *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def project(tmp_path: Path, checks: str = CHECKS) -> Path:
    (tmp_path / "checks.yaml").write_text(checks)
    (tmp_path / "orders.csv").write_text(ORDERS_CSV)
    return tmp_path


def test_passing_checks_exit_0_and_list_every_check(tmp_path) -> None:
    done = sluice("check-data", "checks.yaml", "--data", "orders.csv", cwd=project(tmp_path))

    assert done.returncode == 0, done.stderr
    for name in ("not_null(order_id)", "between(amount)", "in_set(status)"):
        assert name in done.stdout
    assert "checks: 3 passed, 0 failed" in done.stdout


def test_a_failing_error_check_exits_1_and_names_it(tmp_path) -> None:
    checks = CHECKS.replace("max_value: 100", "max_value: 15")

    done = sluice(
        "check-data", "checks.yaml", "--data", "orders.csv", cwd=project(tmp_path, checks)
    )

    assert done.returncode == 1, done.stderr
    row = next(line for line in done.stdout.splitlines() if "between(amount)" in line)
    assert "failed" in row and "error" in row
    assert "checks: 2 passed, 1 failed" in done.stdout


def test_a_failing_warn_check_exits_0(tmp_path) -> None:
    checks = CHECKS + "  - not_null: {column: amount, severity: warn}\n"

    done = sluice(
        "check-data", "checks.yaml", "--data", "orders.csv", cwd=project(tmp_path, checks)
    )

    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if "not_null(amount)" in line)
    assert "warn" in row and "failed" in row


def test_json_output_holds_every_result_with_its_status(tmp_path) -> None:
    checks = CHECKS.replace("max_value: 100", "max_value: 15")

    done = sluice(
        "check-data",
        "checks.yaml",
        "--data",
        "orders.csv",
        "--format",
        "json",
        cwd=project(tmp_path, checks),
    )

    assert done.returncode == 1, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["ok"] is False
    assert [(c["name"], c["status"]) for c in report["checks"]] == [
        ("not_null(order_id)", "passed"),
        ("between(amount)", "failed"),
        ("in_set(status)", "passed"),
    ]
    assert report["checks"][1]["unexpected_count"] == 1


def test_an_unknown_check_name_exits_2_with_path_line_and_suggestion(tmp_path) -> None:
    checks = CHECKS + "  - mean_betwen: {column: amount, min_value: 1}\n"

    done = sluice(
        "check-data", "checks.yaml", "--data", "orders.csv", cwd=project(tmp_path, checks)
    )

    assert done.returncode == 2
    assert "checks.yaml:6" in done.stderr and "checks[3].mean_betwen" in done.stderr
    assert "Did you mean 'mean_between'?" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_data_exits_2_with_a_one_line_message(tmp_path) -> None:
    done = sluice("check-data", "checks.yaml", "--data", "nowhere/", cwd=project(tmp_path))

    assert done.returncode == 2
    assert done.stderr.startswith("error: no file matches 'nowhere/'")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_parquet_numeric_columns_work_with_mean_between(tmp_path) -> None:
    pq.write_table(pa.table({"amount": [10.0, 20.0, 30.0]}), tmp_path / "orders.parquet")
    (tmp_path / "checks.yaml").write_text(
        "version: 1\nchecks:\n  - mean_between: {column: amount, min_value: 25, max_value: 40}\n"
    )

    done = sluice(
        "check-data", "checks.yaml", "--data", "orders.parquet", "--format", "json", cwd=tmp_path
    )

    assert done.returncode == 1, done.stderr
    [result] = json.loads(done.stdout)["checks"]
    assert (result["status"], result["observed_value"]) == ("failed", 20.0)


def test_csv_columns_are_inferred_for_not_null_and_between(tmp_path) -> None:
    (tmp_path / "checks.yaml").write_text(
        textwrap.dedent(
            """\
            version: 1
            checks:
              - not_null: {column: amount}
              - between: {column: amount, min_value: 7, max_value: 9}
            """
        )
    )
    (tmp_path / "orders.csv").write_text(ORDERS_CSV)

    done = sluice(
        "check-data", "checks.yaml", "--data", "orders.csv", "--format", "json", cwd=tmp_path
    )

    assert done.returncode == 1, done.stderr
    not_null, between = json.loads(done.stdout)["checks"]
    assert (not_null["status"], not_null["unexpected_count"]) == ("failed", 1)
    # 7.25 is within 7..9 as a number; 10.5 and 20 are not (as text, '10.5' < '7').
    assert (between["status"], between["unexpected_count"]) == ("failed", 2)
    assert between["error"] is None


@pytest.mark.integration
def test_a_pipeline_spec_checks_its_primary_source_read_from_s3(
    tmp_path, s3_client, make_bucket, s3_endpoint
) -> None:
    bucket = make_bucket("check-data")
    s3_client.put_object(Bucket=bucket, Key="orders/orders.csv", Body=ORDERS_CSV.encode())
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent(
            f"""\
            version: 1
            pipeline: orders
            sources:
              orders: {{type: files, path: s3://{bucket}/orders/}}
            checks:
              - row_count_between: {{min_value: 4, max_value: 4}}
              - unique: {{column: order_id}}
            sinks:
              - {{type: delta, path: lake/orders}}
            """
        )
    )
    env = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "sluice-test-key",
        "AWS_SECRET_ACCESS_KEY": "sluice-test-secret-value",
        "AWS_REGION": "us-east-1",
    }

    done = sluice("check-data", "pipeline.yaml", "--format", "json", cwd=tmp_path, env=env)

    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["checks"]
    assert [(r["name"], r["status"], r["observed_value"]) for r in results] == [
        ("row_count_between", "passed", 4),
        ("unique(order_id)", "passed", 1.0),
    ]


def test_lines_that_cannot_be_parsed_fail_a_check_of_their_own_and_the_rest_is_checked(
    tmp_path,
) -> None:
    folder = project(tmp_path)
    rows = ORDERS_CSV + "5,1.0,paid,extra\n6,2.5,paid\n"  # line 6 has a field too many
    (folder / "orders.csv").write_text(rows)

    done = sluice("check-data", "checks.yaml", "--data", "orders.csv", cwd=folder)

    assert done.returncode == 1, done.stderr
    assert "every line parses" in done.stdout
    assert "1 line(s) could not be parsed and were not checked: orders.csv:6" in done.stdout
    assert "checks: 3 passed, 1 failed" in done.stdout  # the 5 good rows were checked
    as_json = sluice(
        "check-data", "checks.yaml", "--data", "orders.csv", "--format", "json", cwd=folder
    )
    report = json.loads(as_json.stdout)
    [parse] = [r for r in report["checks"] if r["check"] == "parseable"]
    assert report["ok"] is False
    assert (parse["unexpected_count"], parse["rows_checked"]) == (1, 6)


def test_failed_checks_show_a_few_unexpected_values_but_never_of_a_pii_column(
    tmp_path,
) -> None:
    (tmp_path / "orders.csv").write_text(
        "order_id,status,email\n1,paid,a@example.com\n2,lost,not-an-email\n3,stolen,b@x.org\n"
        + "".join(f"{i},paid,c{i}@example.com\n" for i in range(4, 10_010))
    )
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent(
            """\
            version: 1
            pipeline: orders
            sources:
              orders: {type: files, path: orders.csv, format: csv}
            pii: {email: hmac}
            checks:
              - in_set: {column: status, value_set: [paid]}
              - regex: {column: email, regex: "[^@]+@[^@]+"}
              - row_count_between: {min_value: 1}
            sinks: [{type: delta, path: lake/orders}]
            """
        )
    )

    table = sluice("check-data", "pipeline.yaml", cwd=tmp_path)
    report = json.loads(
        sluice("check-data", "pipeline.yaml", "--format", "json", cwd=tmp_path).stdout
    )

    assert table.returncode == 1
    assert "in_set(status): unexpected values include 'lost', 'stolen'" in table.stdout
    assert "not-an-email" not in table.stdout  # the data is not masked here
    assert "10,009" in table.stdout  # row count in full, not 1e+04
    samples = {c["check"]: c["unexpected_sample"] for c in report["checks"]}
    assert samples == {"in_set": ["lost", "stolen"], "regex": [], "row_count_between": []}


def test_a_reconcile_on_a_pii_key_shows_no_value_of_it(tmp_path) -> None:
    (tmp_path / "orders.csv").write_text("email,amount\nalice@example.com,1\nbob@example.com,2\n")
    (tmp_path / "ledger.csv").write_text("email,amount\nalice@example.com,1\ncarol@example.com,3\n")
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent(
            """\
            version: 1
            pipeline: orders
            sources:
              orders: {type: files, path: orders.csv, format: csv}
            pii: {email: hmac}
            checks:
              - reconcile: {against: ledger.csv, keys: [email]}
            sinks: [{type: delta, path: lake/orders}]
            """
        )
    )

    table = sluice("check-data", "pipeline.yaml", cwd=tmp_path)
    as_json = sluice("check-data", "pipeline.yaml", "--format", "json", cwd=tmp_path)

    assert table.returncode == 1 and "reconcile" in table.stdout
    for output in (table.stdout, as_json.stdout):
        assert "bob@" not in output and "carol@" not in output
