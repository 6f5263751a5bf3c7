"""What a stream run checks before it reads anything, and what it says of checks that
warned. Real Redis (`bash scripts/services/redis.sh`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import redis
import yaml

from .test_stream_exactly_once import SLUICE, Producer, sluice_run, spec

pytestmark = pytest.mark.integration


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


def test_a_warn_check_failed_by_batches_is_said_and_counted(
    tmp_path: Path, stream: str, redis_bytes: redis.Redis
) -> None:
    path = spec(tmp_path, stream, batch_rows=100)
    data = yaml.safe_load(path.read_text())
    data["checks"] = [{"row_count_between": {"max_value": 10, "severity": "warn"}}]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    Producer(redis_bytes, stream).add(300)

    run = sluice_run(tmp_path, "--idle-exit", "1.5")
    out, err = run.communicate(timeout=120)

    assert run.returncode == 0, err.decode()[-2000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    [(name, batches)] = summary["checks_warned"].items()
    assert batches == summary["batches"] >= 3
    said = [json.loads(line) for line in err.decode().splitlines() if "check_warned" in line]
    assert len(said) == 1 and said[0]["check"] == name


def test_a_message_without_a_payload_is_shown_as_such_in_the_dead_letters(
    tmp_path: Path, stream: str, redis_bytes: redis.Redis
) -> None:
    spec(tmp_path, stream)
    redis_bytes.xadd(stream, {"other": "x"})  # no `data` field: nothing to parse
    run = sluice_run(tmp_path, "--idle-exit", "1")
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err.decode()[-2000:]

    listed = subprocess.run(
        [SLUICE, "dlq", "pipeline.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "SLUICE_HOME": str(tmp_path / ".sluice"), "COLUMNS": "250"},
        timeout=60,
    )

    assert "the message has no payload" in listed.stdout
    assert "(no payload)" in listed.stdout and "(encrypted)" not in listed.stdout
