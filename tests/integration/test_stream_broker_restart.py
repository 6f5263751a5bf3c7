"""A stream run survives its broker restarting: it retries with backoff, reconnects and
lands every message exactly once.

The test runs its own redis-server (with an append-only file, so the stream outlives the
restart) on a free port, next to the shared one the other tests use.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from .test_stream_exactly_once import Producer, finish, landed, sluice_run, spec

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server with persistence, started and stopped by the test."""

    def __init__(self, folder: Path) -> None:
        if REDIS_SERVER is None:
            pytest.fail(
                "redis-server is not installed: install it with `bash scripts/services/redis.sh`"
            )
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(
            [
                str(REDIS_SERVER),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--pidfile",
                str(self.folder / "redis.pid"),
                "--logfile",
                str(self.folder / "redis.log"),
            ],
            check=True,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        pytest.fail(
            f"the test's redis-server did not start on {self.port}; see {self.folder}/redis.log"
        )

    def stop(self) -> None:
        with contextlib.suppress(redis.exceptions.ConnectionError):
            redis.Redis.from_url(self.url).shutdown()


@pytest.mark.integration
def test_a_redis_restart_mid_run_loses_and_duplicates_nothing(tmp_path) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        spec(tmp_path, "events", batch_rows=200)
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text(pipeline.read_text().replace("redis://127.0.0.1:6379/0", server.url))
        producer = Producer(client, "events")
        producer.add(4000)
        run = sluice_run(tmp_path, "--idle-exit", "2")
        deadline = time.monotonic() + 60
        while not landed(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)

        server.stop()
        time.sleep(1.5)
        server.start()
        _, err = run.communicate(timeout=120)

        assert run.returncode == 0, err.decode()[-2000:]
        events = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
        assert any(e.get("event") == "retrying" for e in events), "the run never saw the broker go"
        finish(tmp_path)
        rows = landed(tmp_path)
        assert len(rows) == len(set(rows))
        assert set(rows) == producer.valid
    finally:
        server.stop()
