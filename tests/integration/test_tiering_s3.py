"""`sluice tier` with the hot tier local and the cold tier in an S3 bucket (moto server)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pytest
import yaml
from click.testing import CliRunner
from deltalake import DeltaTable

import sluiceway.sources.delta  # noqa: F401  (registers the source)
from sluiceway.cli_tier import tier
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.core.storage import arrow_filesystem, delta_storage_options
from sluiceway.ops.tier_read import MANIFEST, TIERS_PROPERTY
from sluiceway.ops.tiering import FAULT_ENV, read_tiered

pytestmark = pytest.mark.integration

ACCESS_KEY = "sluice-test-key"
SECRET_KEY = "sluice-test-secret-value"
AS_OF = date(2026, 1, 31)


def _local_helpers() -> ModuleType:
    """The lake builders of test_tiering.py (one definition of the test data)."""
    path = Path(__file__).with_name("test_tiering.py")
    spec = importlib.util.spec_from_file_location("tiering_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helpers = _local_helpers()


@pytest.fixture
def cold_uri(make_bucket: Callable[[str], str]) -> str:
    return f"s3://{make_bucket('sluice-tier')}/{uuid.uuid4().hex[:8]}/cold"


def options(endpoint: str) -> dict[str, str]:
    return {"endpoint_url": endpoint, "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}


def cold_table(uri: str, endpoint: str) -> DeltaTable:
    return DeltaTable(uri, storage_options=delta_storage_options(uri, options(endpoint)))


def cold_partitions(uri: str, endpoint: str) -> set[date]:
    actions = pa.table(cold_table(uri, endpoint).get_add_actions(flatten=True))
    return set(actions["partition.event_date"].to_pylist())


def make_s3_lake(folder: Path, uri: str, endpoint: str) -> Path:
    return helpers.make_lake(folder, cold_path=uri, cold_options=options(endpoint))


def tiered(spec: Path) -> Any:
    table = read_tiered(load_spec(spec).sinks[0], spec.parent)  # type: ignore[arg-type]
    return helpers.rows_of(table)


def test_old_partitions_move_to_the_bucket_and_read_as_one_table(
    tmp_path: Path, cold_uri: str, s3_endpoint: str
) -> None:
    spec = make_s3_lake(tmp_path, cold_uri, s3_endpoint)
    state = tmp_path / ".sluice"
    result = CliRunner().invoke(
        tier, [str(spec), "--as-of", AS_OF.isoformat(), "--state-dir", str(state)]
    )
    assert result.exit_code == 0, result.output
    old = {d for d in helpers.DAYS if d < AS_OF - timedelta(days=365)}
    assert cold_partitions(cold_uri, s3_endpoint) == old
    assert not old & helpers.partitions(tmp_path / "lake/hot")
    assert tiered(spec) == helpers.original_rows()
    filesystem, path = arrow_filesystem(cold_uri, options(s3_endpoint))
    with filesystem.open_input_stream(f"{path}/{MANIFEST}") as stream:
        assert len(json.loads(stream.read())["moves"]) == len(old)


def test_the_hot_table_records_the_bucket_tier_without_credentials(
    tmp_path: Path, cold_uri: str, s3_endpoint: str
) -> None:
    spec = make_s3_lake(tmp_path, cold_uri, s3_endpoint)
    CliRunner().invoke(
        tier, [str(spec), "--as-of", AS_OF.isoformat(), "--state-dir", str(tmp_path)]
    )
    configuration = DeltaTable(str(tmp_path / "lake/hot")).metadata().configuration
    assert json.loads(configuration[TIERS_PROPERTY])["cold"] == cold_uri
    assert SECRET_KEY not in json.dumps(configuration)
    assert ACCESS_KEY not in json.dumps(configuration)


def test_a_delta_source_reads_the_bucket_tier_with_credentials_from_the_environment(
    tmp_path: Path, cold_uri: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_s3_lake(tmp_path / "up", cold_uri, s3_endpoint)
    CliRunner().invoke(
        tier, [str(spec), "--as-of", AS_OF.isoformat(), "--state-dir", str(tmp_path)]
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    down = tmp_path / "down"
    down.mkdir()
    reader = {
        "version": 1,
        "pipeline": "events_copy",
        "sources": {"events": {"type": "delta", "path": "../up/lake/hot"}},
        "sinks": [{"type": "delta", "path": "lake/copy", "mode": "append"}],
        "dead_letter": {"path": "lake/dead_letter"},
    }
    (down / "pipeline.yaml").write_text(yaml.safe_dump(reader))
    options_ = RunOptions(logical_date=AS_OF, base_dir=down, state_dir=down / ".sluice")
    result = run_pipeline(load_spec(down / "pipeline.yaml"), options_)
    assert result.status == "succeeded", result.error
    copy = DeltaTable(str(down / "lake/copy")).to_pyarrow_table()
    assert helpers.rows_of(copy) == helpers.original_rows()


@pytest.mark.parametrize("fault", ["after_copy:2", "after_delete:1"])
def test_a_sigkill_mid_move_to_the_bucket_loses_and_duplicates_no_row(
    tmp_path: Path, cold_uri: str, s3_endpoint: str, fault: str
) -> None:
    spec = make_s3_lake(tmp_path, cold_uri, s3_endpoint)
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    command = [sys.executable, "-c", "from sluiceway.cli import entry; entry()", "tier", str(spec)]
    command += ["--as-of", AS_OF.isoformat(), "--state-dir", str(tmp_path / ".sluice")]
    killed = subprocess.run(
        command, env={**env, FAULT_ENV: fault}, capture_output=True, timeout=300
    )
    assert killed.returncode == -9
    assert tiered(spec) == helpers.original_rows()
    finished = subprocess.run(command, env=env, capture_output=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert tiered(spec) == helpers.original_rows()
    old = {d for d in helpers.DAYS if d < AS_OF - timedelta(days=365)}
    assert cold_partitions(cold_uri, s3_endpoint) == old
