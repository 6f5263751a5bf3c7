"""Kafka (the protocol mock cluster) into Delta through `sluice run`, exactly once across a
SIGKILL between the commit and the offset commit."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml

from .test_kafka_source import _produce, bootstrap, make_topic  # noqa: F401
from .test_stream_exactly_once import dead_lettered, landed, sluice_run


def write_spec(folder: Path, servers: str, topic: str) -> None:
    data = {
        "version": 1,
        "pipeline": "clicks_kafka",
        "mode": "stream",
        "stream": {"max_batch_rows": 200, "max_batch_seconds": 0.5},
        "sources": {
            "events": {
                "type": "kafka",
                "bootstrap_servers": servers,
                "topic": topic,
                "group_id": f"g-{topic}",
                "options": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
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
def test_kafka_messages_land_exactly_once_after_a_kill_before_the_offset_commit(
    tmp_path,
    bootstrap,  # noqa: F811
    make_topic,  # noqa: F811
) -> None:
    topic = make_topic(3)
    write_spec(tmp_path, bootstrap, topic)
    values = [
        b"oops" if i % 100 == 3 else json.dumps({"event_id": f"e{i}", "amount": i}).encode()
        for i in range(1200)
    ]
    _produce(bootstrap, topic, values, 3)

    run = sluice_run(tmp_path, "--idle-exit", "8", fault="after_commit:2")
    run.wait(timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr.read().decode()[-1500:]
    summary = finish_slowly(tmp_path)

    rows = landed(tmp_path)
    assert len(rows) == len(set(rows)) == 1188
    assert set(rows) == {f"e{i}" for i in range(1200) if i % 100 != 3}
    assert sorted(dead_lettered(tmp_path)) == ["oops"] * 12
    assert summary["already_committed"] > 0, "the kill left no committed, unacknowledged batch"


def finish_slowly(folder: Path) -> dict:
    """A clean run; the killed consumer's session must expire before its partitions move."""
    done = sluice_run(folder, "--idle-exit", "12")
    out, err = done.communicate(timeout=180)
    assert done.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.mark.integration
def test_a_kafka_batch_failing_a_check_is_dead_lettered_after_max_deliveries(
    tmp_path,
    bootstrap,  # noqa: F811
    make_topic,  # noqa: F811
) -> None:
    """Kafka counts no deliveries: the runner does, so a batch that fails an error check
    at every run ends in the dead letters after max_deliveries instead of blocking."""
    topic = make_topic(1)
    write_spec(tmp_path, bootstrap, topic)
    path = tmp_path / "pipeline.yaml"
    data = yaml.safe_load(path.read_text())
    data["sources"]["events"]["max_deliveries"] = 2
    data["checks"] = [{"not_null": {"column": "amount"}}]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    values = [
        json.dumps({"event_id": f"e{i}", "amount": None if i == 5 else i}).encode()
        for i in range(20)
    ]
    _produce(bootstrap, topic, values, 1)

    codes = []
    for _ in range(2):
        run = sluice_run(tmp_path, "--idle-exit", "4")
        _, err = run.communicate(timeout=180)
        codes.append(run.returncode)
        assert "not_null" in err.decode()
    summary = finish_quickly(tmp_path)

    assert codes == [1, 1]
    assert landed(tmp_path) == []
    assert sorted(dead_lettered(tmp_path)) == sorted(f"e{i}" for i in range(20))
    assert summary["status"] == "succeeded"

    more = [json.dumps({"event_id": f"n{i}", "amount": i}).encode() for i in range(3)]
    _produce(bootstrap, topic, more, 1)
    finish_quickly(tmp_path)
    assert sorted(landed(tmp_path)) == ["n0", "n1", "n2"]  # counted deliveries were cleared


def finish_quickly(folder: Path) -> dict:
    """A clean run after runs that ended by themselves (no session left to expire)."""
    done = sluice_run(folder, "--idle-exit", "4")
    out, err = done.communicate(timeout=180)
    assert done.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])
