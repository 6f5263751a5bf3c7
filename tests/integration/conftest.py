"""Services the integration tests share: the S3-compatible server (start it with
`bash scripts/services/moto.sh`; endpoint: SLUICE_TEST_S3_ENDPOINT) and PostgreSQL
(`bash scripts/services/postgres.sh`)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import psycopg
import pytest

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
