"""`sluice forget` on the table of a running stream pipeline: the subject goes, and the
stream goes on from where it stopped (forget cuts the Delta log: the positions are carried
into the commit it keeps). Real Redis (`bash scripts/services/redis.sh`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import redis

from .test_stream_exactly_once import SLUICE, Producer, finish, landed, spec

pytestmark = pytest.mark.integration


def test_a_stream_goes_on_after_a_subject_is_forgotten(
    tmp_path: Path, redis_bytes: redis.Redis, stream: str
) -> None:
    spec(tmp_path, stream)
    producer = Producer(redis_bytes, stream)
    producer.add(300)
    assert finish(tmp_path)["status"] == "succeeded"
    assert "e10" in landed(tmp_path)

    env = {**os.environ, "SLUICE_HOME": str(tmp_path / ".sluice")}
    forgot = subprocess.run(
        [SLUICE, "forget", "--subject", "event_id=e10", "pipeline.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert forgot.returncode == 0, forgot.stdout + forgot.stderr
    producer.add(120)
    summary = finish(tmp_path)

    rows = landed(tmp_path)
    assert summary["status"] == "succeeded"
    assert len(rows) == len(set(rows)), "a message landed twice"
    assert set(rows) == producer.valid - {"e10"}
