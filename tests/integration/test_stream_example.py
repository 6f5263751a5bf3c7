"""The headline stream example, end to end: `examples/clickstream_stream/` on a real Redis.

`produce.py` fills a fresh stream with 2,000 events (12% defective) and loads the lookup
hashes; `sluice run --idle-exit` drains it in batches of 400, so the 5-minute dedup window
has to catch duplicates of events committed in earlier batches. The run must account for
every event, mask email and IP, enrich from the hashes, dead-letter each defect with its
reason and partition the table by event date and hour.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pytest
import redis
from deltalake import DeltaTable

REDIS_URL = os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SLUICE = str(Path(sys.executable).parent / "sluice")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "clickstream_stream"
HMAC_KEY = "stream-example-test-hmac-key"
EVENTS = 2_000


def load_producer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "clickstream_stream_produce", EXAMPLE / "produce.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


produce = load_producer()


@pytest.fixture(scope="module")
def client(redis_bytes: redis.Redis) -> redis.Redis:
    return redis_bytes


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory, client: redis.Redis) -> Iterator[Any]:
    """The example run once on a fresh stream: its folder, manifest, summary and stream."""
    folder = tmp_path_factory.mktemp("clickstream_stream")
    shutil.copyfile(EXAMPLE / "pipeline.yaml", folder / "pipeline.yaml")
    stream = f"sluice-test-example-{uuid.uuid4().hex[:10]}"
    manifest = produce.produce(client, stream, count=EVENTS, defects=0.12, seed=11)
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "CLICKSTREAM_STREAM": stream,
        "CLICKSTREAM_BATCH_ROWS": "400",
        "CLICKSTREAM_BATCH_SECONDS": "0.5",
        "SLUICE_HOME": str(folder / ".sluice"),
        "SLUICE_HMAC_KEY": HMAC_KEY,
        "SLUICE_ENCRYPTION_KEY": "ab" * 32,
    }
    env.pop("SLUICE_STREAM_FAULT", None)
    try:
        run = subprocess.run(
            [SLUICE, "run", "pipeline.yaml", "--idle-exit", "1", "--log-format", "json"],
            cwd=folder,
            env=env,
            capture_output=True,
            timeout=90,
        )
        assert run.returncode == 0, run.stderr.decode()[-3000:]
        summary = json.loads(run.stdout.decode().strip().splitlines()[-1])
        yield folder, manifest, summary, stream
    finally:
        client.delete(stream)


def table(folder: Path, name: str) -> pa.Table:
    return DeltaTable(str(folder / "lake" / name)).to_pyarrow_table()


@pytest.mark.integration
def test_every_event_is_written_rejected_or_deduplicated(landed: Any) -> None:
    folder, manifest, summary, _ = landed
    acc = summary["accounting"]

    assert summary["status"] == "succeeded"
    assert acc["rows_in"] == EVENTS
    assert acc["rows_written"] == manifest.valid
    assert acc["rows_rejected"] == (
        manifest.malformed_json + manifest.bad_event_type + manifest.negative_price
    )
    assert acc["rows_deduplicated"] == manifest.duplicate
    assert acc["rows_filtered"] == 0
    assert table(folder, "silver/clickstream_stream").num_rows == manifest.valid


@pytest.mark.integration
def test_committed_batches_add_up_to_the_run(landed: Any) -> None:
    folder, _, summary, _ = landed
    with sqlite3.connect(folder / ".sluice" / "runs.db") as con:
        rows = con.execute(
            "SELECT events_in, written, rejected, deduplicated, e2e_p99_s FROM stream_batches "
            "WHERE run_id = ?",
            (summary["run_id"],),
        ).fetchall()
    acc = summary["accounting"]

    assert len(rows) == summary["batches"] >= 4
    assert sum(r[0] for r in rows) == acc["rows_in"]
    assert sum(r[1] for r in rows) == acc["rows_written"]
    assert sum(r[2] for r in rows) == acc["rows_rejected"]
    assert sum(r[3] for r in rows) == acc["rows_deduplicated"]
    assert all(r[4] is not None and r[4] >= 0 for r in rows)


@pytest.mark.integration
def test_duplicates_from_earlier_batches_never_land(landed: Any) -> None:
    folder, manifest, summary, _ = landed
    ids = table(folder, "silver/clickstream_stream").column("event_id").to_pylist()

    assert summary["batches"] > 1 and manifest.duplicate > 0
    assert len(ids) == len(set(ids))


@pytest.mark.integration
def test_email_is_an_hmac_token_and_ip_is_truncated(landed: Any) -> None:
    folder, *_ = landed
    rows = table(folder, "silver/clickstream_stream").select(["user_id", "email", "ip"])

    for row in rows.to_pylist():
        user = int(row["user_id"][1:])
        address = f"u{user}@example.com".encode()
        assert row["email"] == hmac.new(HMAC_KEY.encode(), address, hashlib.sha256).hexdigest()
        octets = row["ip"].split(".")
        assert octets[:2] == ["10", str(user % 256)] and octets[3] == "0", row["ip"]


@pytest.mark.integration
def test_user_segment_and_product_details_come_from_the_hashes(landed: Any) -> None:
    folder, manifest, *_ = landed
    rows = table(folder, "silver/clickstream_stream").to_pylist()
    unknown = 0

    for row in rows:
        user = int(row["user_id"][1:])
        known = user <= manifest.users
        unknown += not known
        assert row["user_segment"] == (produce.segment_of(user) if known else "unknown")
        if row["product_id"] is None:
            assert row["product_category"] is None and row["list_price"] is None
        else:
            category, price = produce.product_of(int(row["product_id"][1:]))
            assert (row["product_category"], row["list_price"]) == (category, price)
    assert unknown == manifest.unknown_user > 0


@pytest.mark.integration
def test_each_defect_reaches_the_dead_letters_with_its_reason(landed: Any) -> None:
    folder, manifest, *_ = landed
    letters = table(folder, "dead_letter").to_pylist()
    reasons = Counter(
        (row["stage"], tuple((e["rule"], e["column"]) for e in row["errors"])) for row in letters
    )

    assert reasons == {
        ("parse", (("parse", None),)): manifest.malformed_json,
        ("contract", (("values", "event_type"),)): manifest.bad_event_type,
        ("contract", (("min", "price"),)): manifest.negative_price,
    }
    assert all(row["raw_encrypted"] for row in letters)
    payloads = [row["payload"] for row in letters if row["payload"]]
    assert payloads and not any("@example.com" in p for p in payloads)


@pytest.mark.integration
def test_table_is_partitioned_by_event_date_and_hour(landed: Any) -> None:
    folder, *_ = landed
    dt = DeltaTable(str(folder / "lake" / "silver" / "clickstream_stream"))
    rows = dt.to_pyarrow_table(columns=["event_time", "event_date", "event_hour"]).to_pylist()
    files = pa.table(dt.get_add_actions(flatten=True)).to_pylist()

    assert dt.metadata().partition_columns == ["event_date", "event_hour"]
    assert {(r["event_date"], r["event_hour"]) for r in rows} == {
        (r["event_time"].date(), r["event_time"].hour) for r in rows
    }
    assert {(f["partition.event_date"], f["partition.event_hour"]) for f in files} == {
        (r["event_date"], r["event_hour"]) for r in rows
    }
    assert all(
        f["path"].startswith(f"event_date={f['partition.event_date']}/event_hour=") for f in files
    )


@pytest.mark.integration
def test_the_stream_is_fully_acknowledged(landed: Any, client: redis.Redis) -> None:
    _, _, _, stream = landed
    group = next(g for g in client.xinfo_groups(stream) if g["name"] == b"clickstream_stream")

    assert group["pending"] == 0
    assert group["lag"] == 0
