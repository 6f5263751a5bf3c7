"""Fields a stream's contract does not name: kept (evolve, with a warning) or their rows
rejected (freeze), never dropped unseen. Real Redis (`bash scripts/services/redis.sh`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
import yaml
from deltalake import DeltaTable

from .test_stream_exactly_once import finish, sluice_run, spec

pytestmark = pytest.mark.integration


def with_evolution(folder: Path, stream: str, evolution: str) -> None:
    path = spec(folder, stream)
    data = yaml.safe_load(path.read_text())
    data["sources"]["events"]["contract"]["evolution"] = evolution
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def produce(client: redis.Redis, stream: str) -> None:
    for payload in (
        {"event_id": "e1", "amount": 1.5},
        {"event_id": "e2", "amount": 2.5, "country": "FR"},
    ):
        client.xadd(stream, {"data": json.dumps(payload)})


def test_evolve_lands_a_new_field_and_says_so(
    tmp_path: Path, redis_bytes: redis.Redis, stream: str
) -> None:
    with_evolution(tmp_path, stream, "evolve")
    produce(redis_bytes, stream)

    run = sluice_run(tmp_path, "--idle-exit", "1.5")
    out, err = run.communicate(timeout=120)

    rows = DeltaTable(str(tmp_path / "lake" / "clicks")).to_pyarrow_table().to_pylist()
    assert sorted((r["event_id"], r["country"]) for r in rows) == [("e1", None), ("e2", "FR")]
    warnings = [json.loads(line) for line in (out + err).decode().splitlines() if "beyond" in line]
    assert [w["columns"] for w in warnings] == [["country"]]


def test_freeze_rejects_a_row_with_a_new_field(
    tmp_path: Path, redis_bytes: redis.Redis, stream: str
) -> None:
    with_evolution(tmp_path, stream, "freeze")
    produce(redis_bytes, stream)

    summary = finish(tmp_path)

    rows = DeltaTable(str(tmp_path / "lake" / "clicks")).to_pyarrow_table().to_pylist()
    assert [r["event_id"] for r in rows] == ["e1"]
    assert "country" not in rows[0]
    assert summary["status"] == "succeeded"
    letters = DeltaTable(str(tmp_path / "lake" / "dead_letter")).to_pyarrow_table().to_pylist()
    assert [e["rule"] for row in letters for e in row["errors"]] == ["unknown_column"]
