"""NATS JetStream into Delta through `sluice run`, exactly once across SIGKILLs."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from .test_stream_exactly_once import dead_lettered, finish, landed, sluice_run

NATS_URL = "nats://127.0.0.1:4222"


def publish(stream: str, payloads: list[bytes]) -> None:
    async def main() -> None:
        try:
            nc = await nats.connect(NATS_URL, connect_timeout=3, max_reconnect_attempts=0)
        except Exception as exc:
            pytest.fail(
                f"NATS not reachable at {NATS_URL} ({exc}): start it with `bash scripts/services/nats.sh`"
            )
        js = nc.jetstream()
        try:
            await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        for payload in payloads:
            await js.publish(f"{stream}.click", payload)
        await nc.close()

    asyncio.run(main())


def drop(stream: str) -> None:
    async def main() -> None:
        nc = await nats.connect(NATS_URL)
        await nc.jetstream().delete_stream(stream)
        await nc.close()

    asyncio.run(main())


@pytest.fixture
def stream() -> Any:
    name = f"SLUICE_{uuid.uuid4().hex[:8].upper()}"
    yield name
    drop(name)


def write_spec(folder: Path, stream: str) -> None:
    data = {
        "version": 1,
        "pipeline": "clicks_nats",
        "mode": "stream",
        "stream": {"max_batch_rows": 150, "max_batch_seconds": 0.3},
        "sources": {
            "events": {
                "type": "nats",
                "url": NATS_URL,
                "stream": stream,
                "subject": f"{stream}.>",
                "durable": "sluice",
                "ack_wait_s": 1,
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
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.integration
def test_nats_messages_land_exactly_once_across_kills(tmp_path, stream) -> None:
    write_spec(tmp_path, stream)
    valid, poison = set(), set()
    payloads = []
    for i in range(900):
        if i % 60 == 5:
            payloads.append(b"{broken")
            poison.add("{broken")
        else:
            payloads.append(json.dumps({"event_id": f"e{i}", "amount": i}).encode())
            valid.add(f"e{i}")
    publish(stream, payloads)

    for fault in ("after_commit:1", "before_write:3", "after_dead_letters:4", "after_commit:5"):
        run = sluice_run(tmp_path, "--idle-exit", "3", fault=fault)
        run.wait(timeout=120)
        assert run.returncode == -signal.SIGKILL, run.stderr.read().decode()[-1500:]

    summary = finish(tmp_path)

    rows = landed(tmp_path)
    assert len(rows) == len(set(rows)) and set(rows) == valid
    letters = dead_lettered(tmp_path)
    assert len(letters) == len(poison_count := [p for p in payloads if p == b"{broken"])
    assert set(letters) == poison and len(poison_count) == 15
    assert summary["status"] == "succeeded"
