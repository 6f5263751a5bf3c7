"""A broker that lost its consumer state (a Redis group or a NATS durable consumer
recreated) hands out committed messages again as first deliveries: the runner recognises
them by position and writes them only once. Real Redis (`bash scripts/services/redis.sh`)
and NATS (`bash scripts/services/nats.sh`)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from deltalake import DeltaTable

from sluiceway import plugins  # noqa: F401  (registers the plug-ins)
from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.runner import RunOptions
from sluiceway.streaming.runner import StreamOptions, run_stream

REDIS_URL = os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def client(redis_bytes: redis.Redis) -> redis.Redis:
    return redis_bytes


@pytest.fixture
def stream(client: redis.Redis) -> Iterator[str]:
    name = f"sluice-recreated-{uuid.uuid4().hex[:10]}"
    yield name
    client.delete(name)


def _spec(stream: str) -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "recreated_stream",
        "mode": "stream",
        "stream": {"max_batch_rows": 1000, "max_batch_seconds": 0.3},
        "sources": {
            "events": {
                "type": "redis_streams",
                "url": REDIS_URL,
                "stream": stream,
                "group": "recreated",
                "contract": {"columns": {"event_id": {"type": "string", "nullable": False}}},
            }
        },
        "sinks": [{"type": "delta", "path": "lake/events", "mode": "append"}],
        "dead_letter": {"path": "lake/dead_letter"},
    }


def _run(tmp_path: Path, stream: str) -> Any:
    result = run_stream(
        pipeline_from_dict(_spec(stream)),
        RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice"),
        StreamOptions(idle_exit_s=1.0, retries=3, backoff_s=0.05),
    )
    assert result.ok, result.error
    return result


def _landed(tmp_path: Path) -> list[str]:
    table = DeltaTable(str(tmp_path / "lake" / "events")).to_pyarrow_table()
    return sorted(table.column("event_id").to_pylist())


def test_a_recreated_group_does_not_write_committed_entries_again(
    tmp_path: Path, client: redis.Redis, stream: str
) -> None:
    # docs/streaming/redis_streams.md: a vanished group (Redis restarted without
    # persistence, group destroyed) is created again with start_id (default 0), so every
    # entry is delivered again -- as a first delivery (deliveries == 1). The committed
    # positions in the table must still keep them from being written twice; the fast path
    # in `_not_committed` (all deliveries == 1 => skip the comparison) writes them again.
    for i in range(20):
        client.xadd(stream, {"data": json.dumps({"event_id": f"e{i}"})})
    _run(tmp_path, stream)
    assert _landed(tmp_path) == sorted(f"e{i}" for i in range(20))

    client.execute_command("XGROUP", "DESTROY", stream, "recreated")
    for i in range(20, 25):
        client.xadd(stream, {"data": json.dumps({"event_id": f"e{i}"})})
    second = _run(tmp_path, stream)

    assert _landed(tmp_path) == sorted(f"e{i}" for i in range(25)), "entries written twice"
    assert second.already_committed == 20


NATS_URL = "nats://127.0.0.1:4222"


def _nats(action: Any) -> None:
    import asyncio

    import nats

    async def main() -> None:
        nc = await nats.connect(NATS_URL, connect_timeout=3, max_reconnect_attempts=0)
        try:
            await action(nc.jetstream())
        finally:
            await nc.close()

    try:
        asyncio.run(main())
    except (nats.errors.NoServersError, OSError) as exc:
        pytest.fail(
            f"NATS not reachable at {NATS_URL} ({exc}): start it with "
            "`bash scripts/services/nats.sh`"
        )


def test_a_recreated_nats_consumer_does_not_write_committed_messages_again(
    tmp_path: Path,
) -> None:
    # A durable consumer deleted (by an operator, or lost with the server's state) is
    # created again by `open` with DeliverPolicy.ALL: every message comes back as a first
    # delivery. Before the fast path they were recognised by position; now written twice.
    name = f"SLUICE_R2_{uuid.uuid4().hex[:8].upper()}"

    def publish(first: int, last: int) -> Any:
        async def go(js: Any) -> None:
            try:
                await js.stream_info(name)
            except Exception:
                await js.add_stream(name=name, subjects=[f"{name}.>"])
            for i in range(first, last):
                await js.publish(f"{name}.x", json.dumps({"event_id": f"e{i}"}).encode())

        return go

    spec = _spec("unused")
    spec["sources"]["events"] = {
        "type": "nats",
        "url": NATS_URL,
        "stream": name,
        "subject": f"{name}.>",
        "durable": "recreated",
        "ack_wait_s": 1,
        "contract": {"columns": {"event_id": {"type": "string", "nullable": False}}},
    }

    def run() -> Any:
        result = run_stream(
            pipeline_from_dict(spec),
            RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice"),
            StreamOptions(idle_exit_s=1.0, retries=3, backoff_s=0.05),
        )
        assert result.ok, result.error
        return result

    async def delete_consumer(js: Any) -> None:
        await js.delete_consumer(name, "recreated")

    async def delete_stream(js: Any) -> None:
        await js.delete_stream(name)

    try:
        _nats(publish(0, 20))
        run()
        assert _landed(tmp_path) == sorted(f"e{i}" for i in range(20))
        _nats(delete_consumer)
        _nats(publish(20, 25))
        second = run()
        assert _landed(tmp_path) == sorted(f"e{i}" for i in range(25)), "written twice"
        assert second.already_committed == 20
    finally:
        _nats(delete_stream)
