"""A whole pipeline on a real S3-compatible server: gzip CSV and NDJSON files read from a
bucket, dead letters and the Delta table written to it, rerun idempotently.

Start the server with `bash scripts/services/moto.sh` (endpoint: SLUICE_TEST_S3_ENDPOINT).
"""

from __future__ import annotations

import gzip
import os
import socket
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from sluiceway.core.loader import parse_spec
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.core.storage import delta_storage_options
from sluiceway.sinks.dead_letter import DeadLetterTable

pytestmark = pytest.mark.integration

ENDPOINT = os.environ.get("SLUICE_TEST_S3_ENDPOINT", "http://127.0.0.1:5000")
ENV = {
    "AWS_ACCESS_KEY_ID": "pipeline-key",
    "AWS_SECRET_ACCESS_KEY": "pipeline-secret",
    "AWS_REGION": "us-east-1",
}

SPEC = """
version: 1
pipeline: s3_orders
sources:
  orders:
    type: files
    path: s3://{bucket}/landing/orders/
    storage_options: {{endpoint_url: "{endpoint}"}}
    contract:
      columns:
        order_id: {{type: integer, nullable: false}}
        amount:   {{type: double, min: 0}}
        day:      {{type: date}}
steps:
  - dedup: {{keys: [order_id]}}
checks:
  - row_count_between: {{min_value: 1}}
sinks:
  - type: delta
    path: s3://{bucket}/lake/orders
    storage_options: {{endpoint_url: "{endpoint}"}}
    partition_by: [day]
    mode: overwrite_partition
dead_letter:
  path: s3://{bucket}/lake/dead_letter
  storage_options: {{endpoint_url: "{endpoint}"}}
"""


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def bucket(s3_client: Any, make_bucket: Callable[[str], str]) -> str:
    name = make_bucket("sluice-pipe")
    client = s3_client
    csv = (
        b"order_id,amount,day\n1,10.5,2025-01-15\n2,-3,2025-01-15\n2,7,2025-01-15\n"
        b"3,oops,2025-01-15\n4,1,2025-01-16\n"
    )
    client.put_object(Bucket=name, Key="landing/orders/a.csv.gz", Body=gzip.compress(csv))
    client.put_object(
        Bucket=name,
        Key="landing/orders/b.ndjson",
        Body=b'{"order_id": 5, "amount": 2, "day": "2025-01-16"}\n{"order_id": 6, "amo\n',
    )
    return name


def _run(bucket: str, tmp_path: Path):
    environ = {**os.environ, **ENV}
    spec = parse_spec(SPEC.format(bucket=bucket, endpoint=ENDPOINT), environ=environ)
    options = RunOptions(
        logical_date=date(2025, 1, 16),
        base_dir=tmp_path,
        state_dir=tmp_path / ".sluice",
        environ=environ,
    )
    return run_pipeline(spec, options)


def test_pipeline_reads_from_and_writes_to_s3_with_dead_letters(
    bucket: str, tmp_path: Path
) -> None:
    result = _run(bucket, tmp_path)
    assert result.ok, result.error
    acc = result.accounting
    assert (acc.rows_in, acc.rows_written, acc.rows_rejected, acc.rows_deduplicated) == (7, 4, 3, 0)
    options = delta_storage_options(f"s3://{bucket}/lake/orders", {"endpoint_url": ENDPOINT})
    table = DeltaTable(f"s3://{bucket}/lake/orders", storage_options=options).to_pyarrow_table()
    assert sorted(table["order_id"].to_pylist()) == [1, 2, 4, 5]
    letters = DeadLetterTable(f"s3://{bucket}/lake/dead_letter", {"endpoint_url": ENDPOINT}).read(
        pipeline="s3_orders"
    )
    rules = sorted(
        e["column"] + "." + e["rule"] if e["column"] else e["rule"]
        for errors in letters["errors"].to_pylist()
        for e in errors
    )
    assert rules == ["amount.min", "amount.type", "parse"]


def test_rerun_on_s3_converges_to_the_same_table(bucket: str, tmp_path: Path) -> None:
    first = _run(bucket, tmp_path)
    second = _run(bucket, tmp_path)
    assert first.ok and second.ok
    options = delta_storage_options(f"s3://{bucket}/lake/orders", {"endpoint_url": ENDPOINT})
    table = DeltaTable(f"s3://{bucket}/lake/orders", storage_options=options).to_pyarrow_table()
    assert table.num_rows == 4
    letters = DeadLetterTable(f"s3://{bucket}/lake/dead_letter", {"endpoint_url": ENDPOINT}).read(
        pipeline="s3_orders"
    )
    assert letters.num_rows == 3


def test_local_copies_of_remote_files_do_not_outlive_the_run(bucket: str, tmp_path: Path) -> None:
    """Copies of the input (raw, PII in clear) go with the run; a killed run's copies go
    after a day; a folder another run may still use stays."""
    cache = tmp_path / ".sluice" / "cache"
    stale, busy = cache / "killed-run" / "x" / "a.csv", cache / "running" / "x" / "a.csv"
    for path in (stale, busy):
        path.parent.mkdir(parents=True)
        path.write_text("order_id\n1\n")
    two_days_ago = time.time() - 2 * 86_400
    os.utime(cache / "killed-run", (two_days_ago, two_days_ago))

    result = _run(bucket, tmp_path)

    assert result.ok, result.error
    assert sorted(p.name for p in cache.iterdir()) == ["running"]
    assert busy.exists()


def _run_spec(spec_text: str, tmp_path: Path):
    environ = {**os.environ, **ENV}
    options = RunOptions(
        logical_date=date(2025, 1, 16),
        base_dir=tmp_path,
        state_dir=tmp_path / ".sluice",
        environ=environ,
    )
    return run_pipeline(parse_spec(spec_text, environ=environ), options)


def test_an_unreachable_source_endpoint_fails_the_run_as_retryable(
    bucket: str, tmp_path: Path
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    spec = SPEC.format(bucket=bucket, endpoint=ENDPOINT).replace(
        f'path: s3://{bucket}/landing/orders/\n    storage_options: {{endpoint_url: "{ENDPOINT}"}}',
        f'path: s3://{bucket}/landing/orders/\n    storage_options: {{endpoint_url: "http://127.0.0.1:{port}"}}',
    )
    assert f"127.0.0.1:{port}" in spec

    result = _run_spec(spec, tmp_path)

    assert result.status == "failed" and result.retryable
    assert result.error_type == "StorageUnavailable"
    assert f"cannot list s3://{bucket}/landing/orders" in (result.error or "")
    assert "could not be reached" in (result.error or "")
    assert "please report" not in (result.error or "")


def test_a_missing_source_bucket_is_named(bucket: str, tmp_path: Path) -> None:
    spec = SPEC.format(bucket=bucket, endpoint=ENDPOINT).replace(
        f"path: s3://{bucket}/landing/orders/", "path: s3://sluice-no-such-bucket/landing/"
    )

    result = _run_spec(spec, tmp_path)

    assert result.status == "failed" and not result.retryable
    assert "the bucket 'sluice-no-such-bucket' of s3://sluice-no-such-bucket/landing" in (
        result.error or ""
    )
