"""Services the integration tests share: the S3-compatible server (start it with
`bash scripts/services/moto.sh`; endpoint: SLUICE_TEST_S3_ENDPOINT), PostgreSQL
(`bash scripts/services/postgres.sh`) and Redis (`bash scripts/services/redis.sh`; URL:
SLUICE_TEST_REDIS_URL)."""

from __future__ import annotations

import os
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import redis

from sluiceway.core.store_location import StoreLocation, parse_location

S3_ENDPOINT = os.environ.get("SLUICE_TEST_S3_ENDPOINT", "http://127.0.0.1:5000")


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """The endpoint, after checking a server answers there (the test fails, never skips)."""
    try:
        urllib.request.urlopen(f"{S3_ENDPOINT}/moto-api/", timeout=5).close()
    except urllib.error.HTTPError:
        pass  # any HTTP answer means a server is there
    except OSError as exc:
        pytest.fail(
            f"S3-compatible server not reachable at {S3_ENDPOINT} ({exc}): start it with "
            "`bash scripts/services/moto.sh`"
        )
    return S3_ENDPOINT


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="sluice-test-key",
        aws_secret_access_key="sluice-test-secret-value",
        region_name="us-east-1",
    )


@pytest.fixture(scope="session")
def make_bucket(s3_client: Any) -> Callable[[str], str]:
    """Creates a bucket with a unique name starting with the given prefix."""

    def create(prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        s3_client.create_bucket(Bucket=name)
        return name

    return create


PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@pytest.fixture(scope="module")
def pg() -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test server (the test fails, never skips)."""
    try:
        conn = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL not reachable on 127.0.0.1:5432 ({exc}): start it with "
            "`bash scripts/services/postgres.sh`"
        )
    yield conn
    conn.close()


@pytest.fixture
def schema(pg: psycopg.Connection[Any]) -> Iterator[str]:
    """A schema of this test's own, dropped afterwards."""
    name = f"sw_test_{uuid.uuid4().hex[:10]}"
    pg.execute(f"CREATE SCHEMA {name}")
    yield name
    pg.execute(f"DROP SCHEMA {name} CASCADE")


class TcpForwarder:
    """Forwards a free local port to a real service once `start` is called: the service
    seems unreachable until then (a test of retries starts it during a backoff)."""

    def __init__(self, target_port: int) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.target_port = target_port
        self.server: socket.socket | None = None

    def start(self) -> None:
        if self.server is None:
            self.server = socket.create_server(("127.0.0.1", self.port))
            threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self.server is not None
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
def forwarder() -> Iterator[Callable[[int], TcpForwarder]]:
    """Makes forwarders to a local port (closed after the test)."""
    made: list[TcpForwarder] = []

    def make(target_port: int) -> TcpForwarder:
        made.append(TcpForwarder(target_port))
        return made[-1]

    yield make
    for one in made:
        one.close()


REDIS_URL = os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _connect_redis(*, decode_responses: bool) -> redis.Redis:
    """A client of the test Redis, after checking it answers (the test fails, never skips)."""
    client = redis.Redis.from_url(
        REDIS_URL, socket_connect_timeout=3, decode_responses=decode_responses
    )
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(
            f"Redis not reachable at {REDIS_URL} ({exc}): start it with "
            "`bash scripts/services/redis.sh`"
        )
    return client


@pytest.fixture(scope="session")
def redis_bytes() -> redis.Redis:
    """A client of the test Redis whose replies are bytes."""
    return _connect_redis(decode_responses=False)


@pytest.fixture(scope="session")
def redis_text() -> redis.Redis:
    """A client of the test Redis whose replies are str."""
    return _connect_redis(decode_responses=True)


RUN_STORE_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreLocation]:
    """A fresh run store on each backend: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield parse_location(str(tmp_path / "store" / "runs.db"), base=tmp_path)
        return
    schema = request.getfixturevalue("schema")
    yield parse_location(f"{RUN_STORE_PG_URL}?schema={schema}", base=tmp_path)


@pytest.fixture
def stream(redis_bytes: redis.Redis) -> Iterator[str]:
    """A Redis stream name of this test only, deleted afterwards."""
    name = f"sluice-test-{uuid.uuid4().hex[:10]}"
    yield name
    redis_bytes.delete(name)
