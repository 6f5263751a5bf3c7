"""Bugs found in review, each shown with real data on real Delta tables (and S3 where said)."""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable

from sluiceway.core.loader import load_spec, parse_spec
from sluiceway.core.replay import replay
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline
from sluiceway.observability.logs import json_logger

DAY = date(2025, 1, 15)
KEYS = {
    "SLUICE_HMAC_KEY": "review-hmac-key",
    "SLUICE_MASK_SALT": "review-salt",
    "SLUICE_ENCRYPTION_KEY": "5a" * 32,
}
HEADER = "event_id,user_id,event_type,amount,email\n"
EVENTS = (
    "e1,u1,view,10.5,alice@example.com\n"
    "e2,u2,buy,3.25,bob@example.org\n"
    "e3,u3,refund,7,carol@example.net\n"  # event_type not allowed
)


def base_spec() -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "review",
        "sources": {
            "events": {
                "type": "files",
                "path": "data/events/",
                "format": "csv",
                "contract": {
                    "columns": {
                        "event_id": {"type": "string", "nullable": False},
                        "event_type": {"type": "string", "values": ["view", "buy"]},
                        "amount": {"type": "double", "min": 0},
                    }
                },
            }
        },
        "steps": [{"sql": "SELECT *, logical_date() AS event_date FROM input"}],
        "pii": {"email": "hmac"},
        "sinks": [
            {
                "type": "delta",
                "path": "lake/events",
                "partition_by": ["event_date"],
                "mode": "overwrite_partition",
            }
        ],
        "dead_letter": {"path": "lake/dead_letter"},
    }


def write_events(folder: Path, text: str = EVENTS, header: str = HEADER) -> None:
    path = folder / "data" / "events" / "events-a.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + text)


def options(folder: Path, **extra: Any) -> RunOptions:
    settings: dict[str, Any] = {
        "logical_date": DAY,
        "base_dir": folder,
        "state_dir": folder / ".sluice",
        "environ": dict(KEYS),
    }
    return RunOptions(**{**settings, **extra})


def write_spec(folder: Path, spec: dict[str, Any]) -> Path:
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run(folder: Path, spec: dict[str, Any], **extra: Any) -> RunResult:
    return run_pipeline(load_spec(write_spec(folder, spec)), options(folder, **extra))


def lake(folder: Path, name: str = "events") -> pa.Table:
    return DeltaTable(str(folder / "lake" / name)).to_pyarrow_table()


# --- contract ---------------------------------------------------------------------------------


def test_a_string_column_with_numeric_allowed_values_dead_letters_other_values(tmp_path) -> None:
    write_events(tmp_path, "e1,u1,1,10,a@x.org\ne2,u2,oops,10,b@x.org\ne3,u3,01,10,c@x.org\n")
    spec = base_spec()
    spec["sources"]["events"]["contract"]["columns"]["event_type"] = {"values": [1, 2]}

    result = run(tmp_path, spec)

    assert result.ok, result.error
    assert lake(tmp_path)["event_id"].to_pylist() == ["e1"]
    assert result.accounting.rows_rejected == 2
    assert result.rejected_by_rule == {"event_type.values": 2}


# --- sql step ---------------------------------------------------------------------------------


def test_a_sql_step_whose_last_line_is_a_comment_runs(tmp_path) -> None:
    write_events(tmp_path)
    spec = base_spec()
    spec["steps"] = [{"sql": "SELECT *, logical_date() AS event_date FROM input\n-- partition"}]

    result = run(tmp_path, spec)

    assert result.ok, result.error
    assert sorted(lake(tmp_path)["event_id"].to_pylist()) == ["e1", "e2"]


# --- PII --------------------------------------------------------------------------------------


def test_a_pii_column_is_masked_whatever_the_case_of_its_header(tmp_path) -> None:
    write_events(tmp_path, header=HEADER.replace("email", "Email"))

    result = run(tmp_path, base_spec())

    assert result.ok, result.error
    published = json.dumps(lake(tmp_path).to_pylist(), default=str)
    assert "alice@example.com" not in published and "bob@example.org" not in published
    letters = DeltaTable(str(tmp_path / "lake" / "dead_letter")).to_pyarrow_table()
    assert "carol@example.net" not in json.dumps(letters["payload"].to_pylist())


def test_a_failed_run_keeps_mask_secrets_and_pii_values_out_of_its_error(tmp_path) -> None:
    write_events(tmp_path)
    spec = base_spec()
    spec["steps"] = [{"sql": "SELECT *, CAST(email AS BIGINT) AS n FROM input"}]
    logs = io.StringIO()

    result = run(tmp_path, spec, subscribers=[json_logger(logs)])

    assert result.status == "failed"
    inner_pad = bytes(b ^ 0x36 for b in KEYS["SLUICE_HMAC_KEY"].encode().ljust(64, b"\0"))
    with sqlite3.connect(tmp_path / ".sluice" / "runs.db") as db:
        stored = json.dumps(db.execute("SELECT * FROM runs").fetchall())
    for where, text in {
        "error": result.error or "",
        "logs": logs.getvalue(),
        "store": stored,
    }.items():
        assert inner_pad.hex() not in text, f"the HMAC key is in the {where}"
        assert "alice@example.com" not in text, f"a PII value is in the {where}"
    assert "steps[0].sql failed when its rows were computed: Conversion Error" in (
        result.error or ""
    )


# --- replay -----------------------------------------------------------------------------------


def test_replay_without_a_date_lands_rows_under_the_original_logical_date(tmp_path) -> None:
    write_events(tmp_path)
    first = run(tmp_path, base_spec())
    fixed = copy.deepcopy(base_spec())
    fixed["sources"]["events"]["contract"]["columns"]["event_type"]["values"].append("refund")

    outcome = replay(
        load_spec(write_spec(tmp_path, fixed)), first.run_id, options(tmp_path, logical_date=None)
    )

    assert outcome.passed == 1, outcome.run and outcome.run.error
    rows = {r["event_id"]: r["event_date"] for r in lake(tmp_path).to_pylist()}
    assert rows == {"e1": DAY, "e2": DAY, "e3": DAY}


# --- files on S3 ------------------------------------------------------------------------------

S3_ENDPOINT = os.environ.get("SLUICE_TEST_S3_ENDPOINT", "http://127.0.0.1:5000")
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "pipeline-key",
    "AWS_SECRET_ACCESS_KEY": "pipeline-secret",
    "AWS_REGION": "us-east-1",
}
S3_SPEC = """
version: 1
pipeline: s3_append
sources:
  orders:
    type: files
    path: s3://{bucket}/landing/
    storage_options: {{endpoint_url: "{endpoint}"}}
sinks:
  - type: delta
    path: lake/orders
    mode: append
"""


@pytest.fixture()
def s3_bucket(monkeypatch: pytest.MonkeyPatch, s3_client: Any, make_bucket: Any) -> Any:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    return s3_client, make_bucket("sluice-review")


def test_a_rewritten_s3_file_is_read_again_not_skipped_as_already_committed(
    s3_bucket, tmp_path
) -> None:
    client, bucket = s3_bucket
    environ = {**os.environ, **S3_ENV}
    spec = parse_spec(S3_SPEC.format(bucket=bucket, endpoint=S3_ENDPOINT), environ=environ)
    run_options = RunOptions(
        logical_date=DAY, base_dir=tmp_path, state_dir=tmp_path / ".sluice", environ=environ
    )
    client.put_object(Bucket=bucket, Key="landing/a.csv.gz", Body=gzip.compress(b"id\n1\n2\n"))
    first = run_pipeline(spec, run_options)
    client.put_object(Bucket=bucket, Key="landing/a.csv.gz", Body=gzip.compress(b"id\n3\n4\n5\n"))

    second = run_pipeline(spec, run_options)

    assert first.ok and second.ok, (first.error, second.error)
    assert second.accounting.rows_in == 3
    ids = DeltaTable(str(tmp_path / "lake" / "orders")).to_pyarrow_table()["id"].to_pylist()
    assert sorted(ids) == ["1", "2", "3", "4", "5"]
