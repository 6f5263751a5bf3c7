"""What a stream run checks before it reads anything. Real Redis
(`bash scripts/services/redis.sh`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from .test_stream_exactly_once import sluice_run, spec

pytestmark = pytest.mark.integration


@pytest.fixture
def stream(redis_bytes: redis.Redis) -> Iterator[str]:
    name = f"sluice-test-startup-{uuid.uuid4().hex[:10]}"
    yield name
    redis_bytes.delete(name)


def test_a_missing_masking_key_stops_the_stream_before_it_reads(
    tmp_path: Path, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = spec(tmp_path, stream)
    data = yaml.safe_load(path.read_text())
    data["pii"] = {"event_id": "hmac"}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    for name in ("SLUICE_HMAC_KEY", "SLUICE_ENCRYPTION_KEY", "SLUICE_MASK_SALT"):
        monkeypatch.delenv(name, raising=False)

    run = sluice_run(tmp_path, "--idle-exit", "1")  # the stream is empty: an idle run
    _, err = run.communicate(timeout=120)

    assert run.returncode != 0
    assert "SLUICE_HMAC_KEY" in err.decode()
