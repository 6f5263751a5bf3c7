"""`sluice forget` with the silver table on S3 (the moto server): the subject's rows are
deleted there, the old objects vacuumed, and the scan of every object proves it."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sluiceway.cli import main
from sluiceway.ops.audit import AuditLog

_SPEC = importlib.util.spec_from_file_location(
    "forget_lake", Path(__file__).with_name("test_forget.py")
)
assert _SPEC is not None and _SPEC.loader is not None
lakes = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("forget_lake", lakes)
_SPEC.loader.exec_module(lakes)

AWS = {
    "AWS_ACCESS_KEY_ID": "forget-s3-key",
    "AWS_SECRET_ACCESS_KEY": "forget-s3-secret",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture
def s3_lake(
    tmp_path: Path,
    s3_endpoint: str,
    make_bucket: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    for name, value in {**AWS, **lakes.KEYS}.items():
        monkeypatch.setenv(name, value)
    bucket = make_bucket("forget")
    options = {"endpoint_url": s3_endpoint}
    return lakes.build_lake(tmp_path / "lake", f"s3://{bucket}/silver", options)


def objects_holding(s3_client: Any, uri: str, needle: str) -> list[str]:
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    listing = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    keys = [item["Key"] for item in listing.get("Contents", [])]
    assert keys, "the silver table has objects"
    return [
        key
        for key in keys
        if needle.encode() in s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    ]


def test_forget_erases_the_subject_from_a_silver_table_on_s3(s3_lake: Any, s3_client: Any) -> None:
    assert lakes.SUBJECT in s3_lake.table("silver")["user_id"].to_pylist()

    result = CliRunner().invoke(
        main,
        [
            "forget",
            "--subject",
            f"user_id={lakes.SUBJECT}",
            str(s3_lake.root),
            "--state-dir",
            str(s3_lake.state),
        ],
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    silver = s3_lake.table("silver")
    assert lakes.SUBJECT not in silver["user_id"].to_pylist()
    assert set(silver["event_id"].to_pylist()) == lakes.OTHER_EVENTS
    assert objects_holding(s3_client, s3_lake.silver_uri, lakes.SUBJECT) == []
    assert lakes.files_holding(s3_lake.root / "bronze" / "lake", lakes.SUBJECT) == []
    assert lakes.SUBJECT not in result.output


def test_the_audit_entry_of_an_s3_forget_names_the_s3_table(s3_lake: Any) -> None:
    result = CliRunner().invoke(
        main,
        [
            "forget",
            "--subject",
            f"user_id={lakes.SUBJECT}",
            str(s3_lake.root / "silver"),
            "--state-dir",
            str(s3_lake.state),
        ],
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    (entry,) = AuditLog(s3_lake.state).entries(action="forget")
    assert s3_lake.silver_uri in entry.tables
    assert entry.rows_affected == 3
