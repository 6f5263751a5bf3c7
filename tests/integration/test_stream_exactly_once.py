"""Exactly-once landing from Redis Streams into Delta, proved by killing the runner.

`sluice run` consumes a real Redis stream in a subprocess; it is killed with SIGKILL at chosen
points (before the write, after the dead letters, after the commit but before the ack) and
at random moments, while more messages keep arriving. After a final clean run the Delta table
must hold every valid message exactly once and the dead-letter table every poison message
exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from deltalake import DeltaTable

REDIS_URL = os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SLUICE = str(Path(sys.executable).parent / "sluice")


@pytest.fixture(scope="module")
def client() -> Any:
    conn = redis.Redis.from_url(REDIS_URL)
    try:
        conn.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(
            f"Redis not reachable at {REDIS_URL} ({exc}): start it with `bash scripts/services/redis.sh`"
        )
    return conn


@pytest.fixture
def stream(client: Any) -> Any:
    name = f"sluice-test-{uuid.uuid4().hex[:10]}"
    yield name
    client.delete(name)


def spec(folder: Path, stream: str, *, batch_rows: int = 150, steps: list | None = None) -> Path:
    data: dict[str, Any] = {
        "version": 1,
        "pipeline": "clicks_stream",
        "mode": "stream",
        "stream": {"max_batch_rows": batch_rows, "max_batch_seconds": 0.3},
        "sources": {
            "events": {
                "type": "redis_streams",
                "url": REDIS_URL,
                "stream": stream,
                "group": "sluice",
                "contract": {
                    "columns": {
                        "event_id": {"type": "string", "nullable": False},
                        "amount": {"type": "double", "min": 0},
                    }
                },
            }
        },
        "sinks": [{"type": "delta", "path": "lake/clicks", "mode": "append"}],
        "dead_letter": {"path": "lake/dead_letter"},
    }
    if steps:
        data["steps"] = steps
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Producer:
    """Adds numbered events; every 50th is not JSON and every 50th+1 breaks the contract."""

    def __init__(self, client: Any, stream: str) -> None:
        self.client, self.stream, self.next = client, stream, 0
        self.valid: set[str] = set()
        self.poison: set[str] = set()

    def add(self, count: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for _ in range(count):
            i, self.next = self.next, self.next + 1
            if i % 50 == 7:
                payload = f"not json {i}"
                self.poison.add(payload)
            elif i % 50 == 8:
                payload = json.dumps({"event_id": f"e{i}", "amount": -1})
                self.poison.add(f"e{i}")
            else:
                payload = json.dumps({"event_id": f"e{i}", "amount": i / 10})
                self.valid.add(f"e{i}")
            pipe.xadd(self.stream, {"data": payload})
        pipe.execute()


def sluice_run(folder: Path, *extra: str, fault: str | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SLUICE_HOME": str(folder / ".sluice")}
    env.pop("SLUICE_STREAM_FAULT", None)
    if fault:
        env["SLUICE_STREAM_FAULT"] = fault
    return subprocess.Popen(
        [SLUICE, "run", str(folder / "pipeline.yaml"), "--log-format", "json", *extra],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def landed(folder: Path) -> list[str]:
    path = folder / "lake" / "clicks"
    if not DeltaTable.is_deltatable(str(path)):
        return []
    return DeltaTable(str(path)).to_pyarrow_table(columns=["event_id"]).column(0).to_pylist()


def dead_lettered(folder: Path) -> list[str]:
    path = folder / "lake" / "dead_letter"
    if not DeltaTable.is_deltatable(str(path)):
        return []
    rows = DeltaTable(str(path)).to_pyarrow_table(columns=["payload", "raw_payload"]).to_pylist()
    out = []
    for row in rows:
        payload = row["payload"] or row["raw_payload"].decode()
        try:
            out.append(json.loads(payload)["event_id"])
        except (ValueError, KeyError, TypeError):
            out.append(payload)
    return out


def finish(folder: Path) -> dict[str, Any]:
    done = sluice_run(folder, "--idle-exit", "1.5")
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.mark.integration
def test_sigkill_at_every_point_loses_and_duplicates_nothing(tmp_path, client, stream) -> None:
    spec(tmp_path, stream)
    producer = Producer(client, stream)
    producer.add(600)
    faults = [
        "before_write:1",
        "after_dead_letters:2",
        "after_commit:2",
        "after_commit:3",
        "before_write:4",
        "after_dead_letters:5",
        "after_commit:6",
    ]
    for fault in faults:
        run = sluice_run(tmp_path, "--idle-exit", "1", fault=fault)
        run.wait(timeout=120)
        assert run.returncode == -signal.SIGKILL, f"{fault}: {run.stderr.read().decode()[-1500:]}"
        producer.add(120)
    random_kills = random.Random(7)
    for _ in range(14):
        run = sluice_run(tmp_path, "--idle-exit", "1")
        time.sleep(random_kills.uniform(0.8, 2.5))
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=60)
        producer.add(60)

    summary = finish(tmp_path)

    rows = landed(tmp_path)
    assert len(rows) == len(set(rows)), "a message landed twice"
    assert set(rows) == producer.valid
    letters = dead_lettered(tmp_path)
    assert len(letters) == len(set(letters)), "a message was dead-lettered twice"
    assert set(letters) == producer.poison
    assert summary["status"] == "succeeded"


@pytest.mark.integration
def test_keys_of_a_batch_committed_right_before_a_kill_still_dedup(tmp_path, client, stream):
    spec(tmp_path, stream, steps=[{"dedup": {"keys": ["event_id"], "window": "1h"}}])
    events = [json.dumps({"event_id": f"e{i}", "amount": 1.0}) for i in range(150)]
    pipe = client.pipeline(transaction=False)
    for payload in events:
        pipe.xadd(stream, {"data": payload})
    pipe.execute()
    # Batch 1 (the 150 events) is committed, then the process dies before anything else.
    run = sluice_run(tmp_path, "--idle-exit", "1", fault="after_commit:1")
    run.wait(timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr.read().decode()[-1500:]
    assert len(landed(tmp_path)) == 150

    pipe = client.pipeline(transaction=False)
    for payload in [*events[100:], json.dumps({"event_id": "new", "amount": 2.0})]:
        pipe.xadd(stream, {"data": payload})  # sent again, as a retrying producer would
    pipe.execute()
    summary = finish(tmp_path)

    rows = landed(tmp_path)
    assert len(rows) == 151 and set(rows) == {f"e{i}" for i in range(150)} | {"new"}
    assert summary["accounting"]["rows_deduplicated"] == 50


@pytest.mark.integration
def test_sigterm_finishes_the_batch_in_hand_and_exits_zero(tmp_path, client, stream) -> None:
    spec(tmp_path, stream, batch_rows=100)
    producer = Producer(client, stream)
    producer.add(3000)
    run = sluice_run(tmp_path)
    deadline = time.monotonic() + 60
    while not landed(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)

    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=60)

    assert run.returncode == 0, err.decode()[-2000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["stopped_by"] == "SIGTERM"
    pending = client.xpending(stream, "sluice")["pending"]
    assert pending == 0, "SIGTERM left messages delivered but not acknowledged"
    assert len(landed(tmp_path)) == summary["accounting"]["rows_written"]
    finish(tmp_path)
    assert sorted(landed(tmp_path)) == sorted(producer.valid)
