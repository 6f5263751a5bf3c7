"""Review findings on the stream runtime, each a failing test against the real services.

Redis at SLUICE_TEST_REDIS_URL (default 127.0.0.1:6379; start it with
`bash scripts/services/redis.sh`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from deltalake import DeltaTable

from sluiceway import plugins  # noqa: F401  (registers the plug-ins)
from sluiceway.core.loader import load_spec, pipeline_from_dict
from sluiceway.core.runner import RunOptions
from sluiceway.errors import SpecError
from sluiceway.streaming.redis_streams import RedisStreamsSource, RedisStreamsSourceConfig
from sluiceway.streaming.runner import StreamOptions, run_stream

REDIS_URL = os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SLUICE = str(Path(sys.executable).parent / "sluice")


@pytest.fixture(scope="module")
def client(redis_bytes: redis.Redis) -> redis.Redis:
    return redis_bytes


@pytest.fixture
def stream(client: redis.Redis) -> Iterator[str]:
    name = f"sluice-review-{uuid.uuid4().hex[:10]}"
    yield name
    client.delete(name)


def stream_spec(stream: str, *, url: str = REDIS_URL, **source: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "review_stream",
        "mode": "stream",
        "stream": {"max_batch_rows": 1000, "max_batch_seconds": 0.3},
        "sources": {
            "events": {
                "type": "redis_streams",
                "url": url,
                "stream": stream,
                "group": "review",
                "contract": {"columns": {"event_id": {"type": "string", "nullable": False}}},
                **source,
            }
        },
        "sinks": [{"type": "delta", "path": "lake/events", "mode": "append"}],
        "dead_letter": {"path": "lake/dead_letter"},
    }


def add_events(client: redis.Redis, stream: str, names: list[str]) -> None:
    for name in names:
        client.xadd(stream, {"data": json.dumps({"event_id": name})})


def landed(folder: Path) -> list[str]:
    path = str(folder / "lake" / "events")
    if not DeltaTable.is_deltatable(path):
        return []
    table = DeltaTable(path).to_pyarrow_table(columns=["event_id"])
    return sorted(table.column(0).to_pylist())


def run_in_process(folder: Path, spec: dict[str, Any], **stream: Any) -> Any:
    options = RunOptions(base_dir=folder, state_dir=folder / ".sluice")
    return run_stream(pipeline_from_dict(spec), options, StreamOptions(**stream))


def write_spec(folder: Path, spec: dict[str, Any]) -> Path:
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


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


def kill_clients(client: redis.Redis, name: str) -> int:
    killed = 0
    for info in client.client_list():
        if info.get("name") == name:
            client.execute_command("CLIENT", "KILL", "ID", info["id"])
            killed += 1
    return killed


def runs_db(folder: Path) -> sqlite3.Connection:
    con = sqlite3.connect(folder / ".sluice" / "runs.db")
    con.row_factory = sqlite3.Row
    return con


@pytest.mark.integration
def test_a_connection_lost_while_a_batch_fills_does_not_land_its_messages_twice(
    tmp_path: Path, client: redis.Redis, stream: str
) -> None:
    """The first fetch of a batch delivers 10 entries; the connection then drops during the
    next (blocking) fetch of the same batch. The runner reopens, and the source delivers the
    10 entries again as this consumer's pending ones, into the batch still in hand."""
    names = [f"e{i}" for i in range(10)]
    add_events(client, stream, names)
    spec = stream_spec(stream, consumer="refill")
    spec["stream"] = {"max_batch_rows": 1000, "max_batch_seconds": 4.0}
    killer = threading.Timer(1.5, kill_clients, (client, "sluice:review:refill"))
    killer.start()

    result = run_in_process(tmp_path, spec, max_batches=1, backoff_s=0.05)
    killer.join()

    assert result.ok, result.error
    rows = landed(tmp_path)
    assert len(rows) == len(set(rows)), f"messages landed twice: {rows}"
    assert rows == sorted(names)


@pytest.mark.integration
def test_entries_left_pending_by_a_renamed_consumer_are_written_not_taken_for_committed(
    tmp_path: Path, client: redis.Redis, stream: str
) -> None:
    """A runner (consumer 'pod-a') fetched 5 entries and died before committing them; its
    replacement runs as 'pod-b' (consumer: ${HOSTNAME} in a deployment). 'pod-b' reads the
    newer entries first and commits them; when it later claims the old ones their ids are
    below the committed position, so it acknowledges them without writing them: lost."""
    add_events(client, stream, [f"old{i}" for i in range(5)])
    dead = RedisStreamsSource(
        RedisStreamsSourceConfig(url=REDIS_URL, stream=stream, group="review", consumer="pod-a")
    )
    dead.open()
    assert dead.fetch(100, 0.5).count == 5
    dead.close()
    add_events(client, stream, [f"new{i}" for i in range(5)])

    spec = stream_spec(stream, consumer="pod-b", claim_idle_ms=1500)
    result = run_in_process(tmp_path, spec, idle_exit_s=4.0)

    assert result.ok, result.error
    assert landed(tmp_path) == sorted([f"old{i}" for i in range(5)] + [f"new{i}" for i in range(5)])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.integration
def test_sigterm_while_the_broker_is_unreachable_stops_the_run_promptly(tmp_path: Path) -> None:
    """SIGTERM must stop a stream that holds no batch at once; during the connect retries
    (backoff up to 5 s, 8 attempts) it was ignored until the retries ran out (~13 s) and the
    run then failed with exit 1."""
    write_spec(tmp_path, stream_spec("nothing", url=f"redis://127.0.0.1:{closed_port()}/0"))
    run = sluice_run(tmp_path)
    assert run.stderr is not None
    for line in run.stderr:  # the run is in its connect retries (its handler is installed)
        if b'"retrying"' in line:
            break
    time.sleep(0.5)
    run.send_signal(signal.SIGTERM)
    asked = time.monotonic()
    out, _ = run.communicate(timeout=60)
    waited = time.monotonic() - asked

    assert waited < 3.0, f"exited {waited:.1f} s after SIGTERM"
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["stopped_by"] == "SIGTERM", summary


@pytest.fixture
def killed_run(tmp_path: Path, client: redis.Redis, stream: str) -> tuple[Path, str]:
    """A stream run SIGKILLed after committing batch 2 (before acknowledging it), then a clean
    run that finishes the stream. Returns the folder and the killed run's id."""
    add_events(client, stream, [f"e{i}" for i in range(30)])
    spec = stream_spec(stream)
    spec["stream"] = {"max_batch_rows": 10, "max_batch_seconds": 0.3}
    write_spec(tmp_path, spec)
    killed = sluice_run(tmp_path, "--idle-exit", "1", fault="after_commit:2")
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL
    with runs_db(tmp_path) as con:
        (run_id,) = con.execute("SELECT run_id FROM runs").fetchone()
    done = sluice_run(tmp_path, "--idle-exit", "1")
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err.decode()[-2000:]
    assert len(landed(tmp_path)) == 30
    return tmp_path, run_id


@pytest.mark.integration
def test_a_killed_stream_run_is_not_reported_running_forever(killed_run: tuple[Path, str]) -> None:
    folder, run_id = killed_run
    with runs_db(folder) as con:
        status, written = con.execute(
            "SELECT status, rows_written FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
    assert status != "running", "a later run of the pipeline still shows the killed one running"
    assert written == 20, f"the killed run committed 20 rows; its record says {written}"


@pytest.mark.integration
def test_every_committed_batch_has_a_stream_batches_row_after_a_kill_before_the_ack(
    killed_run: tuple[Path, str],
) -> None:
    folder, _ = killed_run
    with runs_db(folder) as con:
        batches = con.execute("SELECT batch, written FROM stream_batches ORDER BY batch").fetchall()
    assert [b["batch"] for b in batches] == [1, 2, 3]
    assert sum(b["written"] for b in batches) == len(landed(folder))


@pytest.mark.integration
def test_a_batch_filling_longer_than_claim_idle_ms_does_not_claim_its_own_entries_again(
    tmp_path: Path, client: redis.Redis, stream: str
) -> None:
    """Entries of the batch in hand stay pending while it fills; once they are idle longer than
    `claim_idle_ms`, the next fetch of the same batch XAUTOCLAIMs them from this very
    consumer and they enter the batch a second time."""
    add_events(client, stream, [f"e{i}" for i in range(5)])
    late = threading.Timer(1.5, add_events, (client, stream, ["e5"]))
    late.start()
    spec = stream_spec(stream, consumer="self", claim_idle_ms=1000)
    spec["stream"] = {"max_batch_rows": 1000, "max_batch_seconds": 3.0}

    result = run_in_process(tmp_path, spec, max_batches=1)
    late.join()

    assert result.ok, result.error
    assert landed(tmp_path) == [f"e{i}" for i in range(6)]


@pytest.mark.integration
def test_the_committed_position_is_the_newest_entry_of_the_batch_not_the_last_fetched(
    tmp_path: Path, client: redis.Redis, stream: str
) -> None:
    """A batch made of several fetches is not in id order: new entries, then (claimed) older
    ones. The runner commits the id of the *last* message as the position, which moves the
    position backwards; after a kill between the commit and the ack, the newer entries come
    back above that position and are written a second time."""
    add_events(client, stream, [f"old{i}" for i in range(5)])
    dead = RedisStreamsSource(
        RedisStreamsSourceConfig(url=REDIS_URL, stream=stream, group="review", consumer="pod-a")
    )
    dead.open()
    assert dead.fetch(100, 0.5).count == 5
    dead.close()
    add_events(client, stream, [f"new{i}" for i in range(5)])
    time.sleep(1.0)
    late = threading.Timer(1.1, add_events, (client, stream, ["new5"]))
    late.start()
    spec = stream_spec(stream, consumer="pod-b", claim_idle_ms=1500)
    spec["stream"] = {"max_batch_rows": 1000, "max_batch_seconds": 3.0}

    result = run_in_process(tmp_path, spec, max_batches=1)
    late.join()

    assert result.ok, result.error
    newest = client.xrevrange(stream, count=1)[0][0].decode()
    history = DeltaTable(str(tmp_path / "lake" / "events")).history()
    committed = [json.loads(c["sluice.positions"]) for c in history if "sluice.positions" in c]
    assert committed[0]["events"][stream] == newest


NATS_URL = os.environ.get("SLUICE_TEST_NATS_URL", "nats://127.0.0.1:4222")


def nats_stream(action: str, name: str, subject: str = "") -> None:
    import asyncio

    import nats

    async def main() -> None:
        try:
            nc = await nats.connect(NATS_URL, connect_timeout=3, max_reconnect_attempts=0)
        except Exception as exc:
            pytest.fail(
                f"NATS not reachable at {NATS_URL} ({exc}): start it with "
                "`bash scripts/services/nats.sh`"
            )
        js = nc.jetstream()
        if action == "add":
            await js.add_stream(name=name, subjects=[subject])
        else:
            await js.delete_stream(name)
        await nc.close()

    asyncio.run(main())


@pytest.mark.integration
def test_a_broker_error_outside_the_sluiceway_tree_fails_the_run_cleanly(tmp_path: Path) -> None:
    """`create_stream: true` with a subject another stream holds: JetStream answers 400
    'subjects overlap'. nats-py's BadRequestError escapes the source and the runner: the CLI
    prints a traceback and the run record stays 'running' forever."""
    taken = f"SLUICE_REVIEW_{uuid.uuid4().hex[:8].upper()}"
    subject = f"review{uuid.uuid4().hex[:8]}.>"
    nats_stream("add", taken, subject)
    try:
        spec = stream_spec("unused")
        spec["sources"]["events"] = {
            "type": "nats",
            "url": NATS_URL,
            "stream": f"{taken}_NEW",
            "subject": subject,
            "create_stream": True,
            "contract": {"columns": {"event_id": {"type": "string"}}},
        }
        write_spec(tmp_path, spec)
        run = sluice_run(tmp_path, "--idle-exit", "1")
        out, err = run.communicate(timeout=60)
    finally:
        nats_stream("delete", taken)

    assert run.returncode == 1
    assert "Traceback" not in err.decode(), err.decode()[-1500:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert "overlap" in (summary["error"] or "")
    with runs_db(tmp_path) as con:
        (status,) = con.execute("SELECT status FROM runs").fetchone()
    assert status == "failed"


def dead_letters(folder: Path) -> list[dict[str, Any]]:
    path = str(folder / "lake" / "dead_letter")
    if not DeltaTable.is_deltatable(path):
        return []
    return DeltaTable(path).to_pyarrow_table(columns=["source", "run_key", "file"]).to_pylist()


@pytest.mark.integration
def test_a_bad_row_of_a_lookup_source_is_dead_lettered_once_not_once_per_batch(
    tmp_path: Path, client: redis.Redis, stream: str
) -> None:
    """A stream joins a lookup file with one row breaking its contract. Every micro-batch
    re-reads the lookup and dead-letters that row again under the batch's run key: after
    3 batches the dead-letter table holds it 3 times (86,400 a day at one batch a second)."""
    (tmp_path / "users.csv").write_text("user_id,segment\n1,gold\nnot-a-number,silver\n")
    spec = stream_spec(stream)
    spec["stream"] = {"max_batch_rows": 2, "max_batch_seconds": 0.2}
    spec["sources"]["events"]["contract"]["columns"]["user_id"] = {"type": "bigint"}
    spec["sources"]["users"] = {
        "type": "files",
        "path": "users.csv",
        "contract": {"columns": {"user_id": {"type": "bigint"}, "segment": {"type": "string"}}},
    }
    spec["steps"] = [
        {"sql": "SELECT e.*, u.segment FROM events e LEFT JOIN users u USING (user_id)"}
    ]
    for i in range(6):
        client.xadd(stream, {"data": json.dumps({"event_id": f"e{i}", "user_id": 1})})

    result = run_in_process(tmp_path, spec, idle_exit_s=1.0)

    assert result.ok, result.error
    assert result.batches == 3
    assert len(landed(tmp_path)) == 6
    lookup_letters = [d for d in dead_letters(tmp_path) if d["source"] == "users"]
    assert len(lookup_letters) == 1, lookup_letters


@pytest.mark.integration
def test_a_stream_with_a_second_sink_is_refused_before_it_reads(
    tmp_path: Path, client: redis.Redis, stream: str
) -> None:
    """A second sink could miss a batch after a crash (the positions live in the Delta
    commits), so a stream pipeline with two sinks is a spec error and reads nothing."""
    add_events(client, stream, [f"e{i}" for i in range(10)])
    spec = stream_spec(stream)
    spec["sinks"].append({"type": "parquet", "path": "lake/events_parquet", "mode": "append"})
    write_spec(tmp_path, spec)

    done = sluice_run(tmp_path, "--idle-exit", "1")
    _, err = done.communicate(timeout=120)

    assert done.returncode != 0
    assert "mode: stream writes one Delta sink (found 2)" in err.decode()
    assert landed(tmp_path) == []


def test_a_second_streaming_source_is_a_spec_error_that_validate_reports(tmp_path: Path) -> None:
    """No batch reads a second streaming source: it would crash at the run, after a CDC
    source had made its slot and publication."""
    spec = stream_spec("events-a")
    spec["sources"]["more"] = {**spec["sources"]["events"], "stream": "events-b"}
    path = write_spec(tmp_path, spec)

    with pytest.raises(SpecError) as raised:
        load_spec(path)

    assert "sources.more.type" in str(raised.value)
    assert "reads one streaming source (events)" in str(raised.value)


@pytest.mark.integration
def test_a_batch_failing_an_error_check_says_how_to_keep_the_stream_flowing(
    tmp_path: Path, client: redis.Redis, stream: str
) -> None:
    add_events(client, stream, ["ok-1", "bad", "ok-2"])
    spec = stream_spec(stream)
    spec["checks"] = [{"in_set": {"column": "event_id", "value_set": ["ok-1", "ok-2"]}}]

    result = run_in_process(tmp_path, spec, idle_exit_s=1.0)

    assert not result.ok
    assert "stay unacknowledged" in (result.error or "")
    assert "max_deliveries (5)" in (result.error or "")
    assert "`severity: warn`" in (result.error or "") and "on_fail: dead_letter" in result.error
    assert landed(tmp_path) == []


@pytest.mark.integration
def test_the_hint_for_a_failed_table_level_check_does_not_offer_routing(
    tmp_path: Path, client: redis.Redis, stream: str
) -> None:
    add_events(client, stream, ["a", "b"])
    spec = stream_spec(stream)
    spec["checks"] = [{"row_count_between": {"min_value": 10}}]

    result = run_in_process(tmp_path, spec, idle_exit_s=1.0)

    assert not result.ok and "`severity: warn`" in (result.error or "")
    assert "on_fail" not in (result.error or "")  # a table-level check cannot route rows
