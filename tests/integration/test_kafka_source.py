"""The `kafka` stream source against librdkafka's mock cluster (a real Kafka wire-protocol
server in its own process; start it with `bash scripts/services/kafka.sh`)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from fastavro import parse_schema, schemaless_writer
from pydantic import ValidationError

from sluiceway.core import registry
from sluiceway.errors import ConfigError, SourceError, TransientError
from sluiceway.streaming.base import MESSAGE_SCHEMA, Fetched
from sluiceway.streaming.kafka import KafkaSource, KafkaSourceConfig

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services" / "kafka.sh"
SERVICES_DIR = Path(
    os.environ.get("SLUICE_SERVICES_DIR")
    or Path(os.environ.get("TMPDIR", "/tmp")) / "sluice-services"
)
BOOTSTRAP_FILE = SERVICES_DIR / "kafka-mock" / "bootstrap.txt"
START = "start it with `bash scripts/services/kafka.sh`"


@pytest.fixture(scope="session")
def bootstrap() -> str:
    """The mock cluster's bootstrap servers, after checking it answers (fails, never skips)."""
    if not BOOTSTRAP_FILE.exists():
        pytest.fail(f"Kafka mock cluster not running (no {BOOTSTRAP_FILE}): {START}")
    servers = BOOTSTRAP_FILE.read_text().strip()
    host, port = servers.split(",")[0].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"Kafka mock cluster not reachable at {servers} ({exc}): {START}")
    return servers


@pytest.fixture
def make_topic(bootstrap: str) -> Iterator[Callable[[int], str]]:
    """Creates topics with a unique name and the given partition count; deletes them after."""
    created: list[str] = []

    def create(partitions: int) -> str:
        name = f"sluice-test-{uuid.uuid4().hex[:12]}"
        _script("create-topic", name, str(partitions))
        created.append(name)
        return name

    yield create
    for name in created:
        _script("delete-topic", name)


def _script(*args: str) -> None:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True)
    assert done.returncode == 0, f"kafka.sh {' '.join(args)}: {done.stderr}"


def _produce(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for index, value in enumerate(values):
        producer.produce(topic, value, partition=index % partitions)
        if index % 10_000 == 9_999:
            producer.poll(0)
    assert producer.flush(30) == 0, "messages still undelivered after 30 s"


def _json_values(count: int) -> list[bytes]:
    return [
        json.dumps({"n": n, "kind": "click", "user": f"u{n % 97}"}).encode() for n in range(count)
    ]


def _source(bootstrap: str, topic: str, **settings: object) -> KafkaSource:
    # The mock keeps a closed consumer in the group until its session times out (45 s by
    # default), so a second consumer of the group would wait that long for its partitions.
    config = KafkaSourceConfig(
        bootstrap_servers=bootstrap,
        topic=topic,
        group_id=f"g-{topic}",
        options={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
        **settings,
    )
    source = KafkaSource(config)
    source.open()
    return source


def _drain(
    source: KafkaSource, expected: int, *, batch: int = 5000, is_ack: bool = True
) -> list[Fetched]:
    """Fetch (and ack) until `expected` messages arrived or 60 s passed."""
    batches: list[Fetched] = []
    deadline = time.monotonic() + 60
    while sum(b.count for b in batches) < expected and time.monotonic() < deadline:
        fetched = source.fetch(batch, 1.0)
        if fetched.count:
            batches.append(fetched)
            if is_ack:
                source.ack(fetched)
    return batches


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = probe.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in sorted(found, key=lambda tp: tp.partition)]
    finally:
        probe.close()


def test_ten_thousand_messages_arrive_once_each_and_their_offsets_are_committed(
    bootstrap: str, make_topic: Callable[[int], str]
) -> None:
    topic = make_topic(3)
    _produce(bootstrap, topic, _json_values(10_000), partitions=3)
    source = _source(bootstrap, topic)
    try:
        batches = _drain(source, 10_000)
        assert source.fetch(1000, 0.5).count == 0
        lag = source.lag()
    finally:
        source.close()
    rows = [row for b in batches for row in b.messages.to_pylist()]
    numbers = sorted(json.loads(row["payload"])["n"] for row in rows)
    assert numbers == list(range(10_000))
    assert all(b.messages.schema == MESSAGE_SCHEMA for b in batches)
    by_partition: dict[str, list[int]] = {}
    for row in rows:
        by_partition.setdefault(row["partition"], []).append(int(row["msg_id"]))
    assert sorted(by_partition) == [f"{topic}:0", f"{topic}:1", f"{topic}:2"]
    assert all(ids == list(range(len(ids))) for ids in by_partition.values())
    assert all(row["enqueued_at"] is not None and row["deliveries"] is None for row in rows)
    assert lag == 0
    committed = _committed(bootstrap, f"g-{topic}", topic, 3)
    assert committed == [len(by_partition[f"{topic}:{p}"]) for p in range(3)]


def test_positions_name_the_last_offset_of_each_partition(
    bootstrap: str, make_topic: Callable[[int], str]
) -> None:
    topic = make_topic(3)
    _produce(bootstrap, topic, _json_values(30), partitions=3)
    source = _source(bootstrap, topic)
    try:
        batches = _drain(source, 30, is_ack=False)
    finally:
        source.close()
    positions: dict[str, str] = {}
    for fetched in batches:
        positions.update(source.positions(fetched))
    assert positions == {f"{topic}:{p}": "9" for p in range(3)}


def test_a_new_consumer_of_the_group_gets_the_unacknowledged_messages_again(
    bootstrap: str, make_topic: Callable[[int], str]
) -> None:
    topic = make_topic(3)
    _produce(bootstrap, topic, _json_values(300), partitions=3)
    first = _source(bootstrap, topic)
    try:
        acked = _drain(first, 1, batch=40)
        unacked = _drain(first, 300 - acked[0].count, is_ack=False)
    finally:
        first.close()
    assert acked[0].count == 40
    second = _source(bootstrap, topic)
    try:
        again = _drain(second, 260, is_ack=False)
        assert second.fetch(100, 0.5).count == 0
    finally:
        second.close()

    def ids(batches: list[Fetched]) -> set[tuple[str, str]]:
        return {(r["partition"], r["msg_id"]) for b in batches for r in b.messages.to_pylist()}

    assert len(ids(unacked)) == 260
    assert ids(again) == ids(unacked)
    assert not ids(again) & ids(acked)


def test_opening_again_keeps_the_consumer_so_fetched_messages_can_still_be_acked(
    bootstrap: str, make_topic: Callable[[int], str]
) -> None:
    topic = make_topic(3)
    _produce(bootstrap, topic, _json_values(60), partitions=3)
    source = _source(bootstrap, topic)
    try:
        fetched = _drain(source, 60, is_ack=False)
        source.open()  # what the runner does after a transient error
        for batch in fetched:
            source.ack(batch)
        assert source.unacknowledged == 0
        assert source.fetch(100, 0.5).count == 0
    finally:
        source.close()
    assert _committed(bootstrap, f"g-{topic}", topic, 3) == [20, 20, 20]


def test_an_ack_refused_after_a_rebalance_is_counted_and_the_messages_come_again(
    bootstrap: str, make_topic: Callable[[int], str]
) -> None:
    topic = make_topic(3)
    _produce(bootstrap, topic, _json_values(30), partitions=3)
    first = _source(bootstrap, topic)
    try:
        fetched = _drain(first, 30, is_ack=False)
        second = _source(bootstrap, topic)
        try:
            # The group rebalances; `first` does not fetch, so `second` takes every partition.
            again = _drain(second, 30)
            first.ack(fetched[0])
        finally:
            second.close()
    finally:
        first.close()
    assert sum(b.count for b in again) == 30
    assert first.unacknowledged == fetched[0].count
    assert _committed(bootstrap, f"g-{topic}", topic, 3) == [10, 10, 10]


def test_avro_messages_arrive_as_json_and_undecodable_ones_stay_raw(
    bootstrap: str, make_topic: Callable[[int], str], tmp_path: Path
) -> None:
    schema = {
        "type": "record",
        "name": "Order",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "customer", "type": "string"},
            {"name": "amount", "type": ["null", "double"]},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "blob", "type": "bytes"},
        ],
    }
    schema_path = tmp_path / "order.avsc"
    schema_path.write_text(json.dumps(schema))
    records = [
        {
            "id": n,
            "customer": f"c{n}",
            "amount": None if n % 2 else n * 1.5,
            "tags": ["a"] * n,
            "blob": b"\x00\x01",
        }
        for n in range(5)
    ]
    values = []
    for record in records:
        buffer = io.BytesIO()
        schemaless_writer(buffer, parse_schema(schema), record)
        values.append(buffer.getvalue())
    topic = make_topic(1)
    _produce(bootstrap, topic, [*values, b""], partitions=1)
    source = _source(bootstrap, topic, format="avro", avro_schema=str(schema_path))
    try:
        rows = [r for b in _drain(source, 6) for r in b.messages.to_pylist()]
    finally:
        source.close()
    decoded = [json.loads(row["payload"]) for row in rows[:5]]
    assert decoded == [{**r, "blob": "AAE="} for r in records]
    assert rows[5]["payload"] == b""
    assert rows[5]["reason"].startswith("the value is not Avro of avro_schema")
    assert source.undecodable == 1
    assert source.payload_format == "json"


def test_avro_values_of_an_older_writer_schema_are_resolved_and_others_carry_a_reason(
    bootstrap: str, make_topic: Callable[[int], str], tmp_path: Path
) -> None:
    """v1 values read with v2 (one field added, with a default) via avro_writer_schemas; a
    JSON document or a value of an unrelated schema is not read half: it keeps its raw
    bytes and says why."""
    v1 = {
        "type": "record",
        "name": "Click",
        "fields": [{"name": "event_id", "type": "string"}, {"name": "amount", "type": "double"}],
    }
    v2 = {
        **v1,
        "fields": [*v1["fields"], {"name": "country", "type": ["null", "string"], "default": None}],
    }
    other = {"type": "record", "name": "X", "fields": [{"name": "n", "type": "long"}]}
    (tmp_path / "v1.avsc").write_text(json.dumps(v1))
    (tmp_path / "v2.avsc").write_text(json.dumps(v2))

    def encode(schema: dict, record: dict) -> bytes:
        buffer = io.BytesIO()
        schemaless_writer(buffer, parse_schema(schema), record)
        return buffer.getvalue()

    values = [
        encode(v1, {"event_id": "a", "amount": 1.5}),
        encode(v2, {"event_id": "b", "amount": 2.5, "country": "FR"}),
        b'{"event_id": "c", "amount": 3}',
        encode(other, {"n": 7}),
    ]
    topic = make_topic(1)
    _produce(bootstrap, topic, values, partitions=1)
    source = _source(
        bootstrap,
        topic,
        format="avro",
        avro_schema=str(tmp_path / "v2.avsc"),
        avro_writer_schemas=[str(tmp_path / "v1.avsc")],
    )
    try:
        rows = [r for b in _drain(source, 4) for r in b.messages.to_pylist()]
    finally:
        source.close()

    assert [json.loads(r["payload"]) for r in rows[:2]] == [
        {"event_id": "a", "amount": 1.5, "country": None},
        {"event_id": "b", "amount": 2.5, "country": "FR"},
    ]
    assert [r["reason"] for r in rows] == [
        None,
        None,
        *[
            "the value is not Avro of avro_schema or avro_writer_schemas (it cannot be read "
            "whole with any of them)"
        ]
        * 2,
    ]
    assert [r["payload"] for r in rows[2:]] == values[2:]
    assert source.undecodable == 2


def test_open_raises_a_transient_error_naming_the_address_when_nothing_listens() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    source = KafkaSource(
        KafkaSourceConfig(bootstrap_servers=f"127.0.0.1:{port}", topic="t", open_timeout_s=1)
    )
    started = time.monotonic()
    with pytest.raises(TransientError) as raised:
        source.open()
    assert time.monotonic() - started < 5
    assert f"127.0.0.1:{port}" in str(raised.value)
    assert "scripts/services/kafka.sh" in str(raised.value)
    source.close()


def test_open_raises_a_source_error_for_a_topic_that_does_not_exist(bootstrap: str) -> None:
    missing = f"sluice-missing-{uuid.uuid4().hex[:8]}"
    source = KafkaSource(KafkaSourceConfig(bootstrap_servers=bootstrap, topic=missing))
    with pytest.raises(SourceError, match=missing):
        source.open()


def test_a_secret_option_comes_from_the_named_environment_variable(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLUICE_TEST_KAFKA_PASSWORD", raising=False)
    config = KafkaSourceConfig(
        bootstrap_servers=bootstrap,
        topic="t",
        secret_options={"sasl.password": "SLUICE_TEST_KAFKA_PASSWORD"},
    )
    with pytest.raises(ConfigError, match="SLUICE_TEST_KAFKA_PASSWORD"):
        KafkaSource(config).open()
    with pytest.raises(ValidationError, match="secret_options"):
        KafkaSourceConfig(bootstrap_servers=bootstrap, topic="t", options={"sasl.password": "x"})


@pytest.mark.parametrize(
    "settings",
    [
        {"format": "avro"},
        {"avro_schema": "x.avsc"},
        {"options": {"enable.auto.commit": True}},
        {"topic": []},
    ],
)
def test_inconsistent_configs_are_rejected(settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        KafkaSourceConfig.model_validate({"bootstrap_servers": "h:1", "topic": "t", **settings})


def test_an_unknown_consumer_setting_is_a_source_error_naming_it() -> None:
    config = KafkaSourceConfig(bootstrap_servers="h:1", topic="t", options={"no.such.knob": 1})
    with pytest.raises(SourceError, match=r"no\.such\.knob"):
        KafkaSource(config).open()


def test_offsets_compare_as_integers_and_the_source_is_registered() -> None:
    source = KafkaSource(KafkaSourceConfig(bootstrap_servers="h:1", topic="t"))
    assert source.position_after("10", "9")
    assert not source.position_after("9", "9")
    plugin = registry.lookup("source", "kafka")
    assert plugin is not None and plugin.config is KafkaSourceConfig


def test_fetch_and_ack_of_100k_messages_reports_throughput(
    bootstrap: str, make_topic: Callable[[int], str]
) -> None:
    topic = make_topic(3)
    _produce(bootstrap, topic, _json_values(100_000), partitions=3)
    source = _source(bootstrap, topic)
    try:
        first = source.fetch(1, 10.0)  # joins the group (~3 s on the mock): not measured
        source.ack(first)
        started = time.monotonic()
        batches = _drain(source, 100_000 - first.count, batch=10_000)
        elapsed = time.monotonic() - started
    finally:
        source.close()
    drained = sum(b.count for b in batches)
    print(
        f"\nkafka fetch+ack: {drained} messages in {elapsed:.2f} s = {drained / elapsed:,.0f} msg/s"
    )
    assert first.count == 1
    assert first.count + drained == 100_000


def test_a_partition_behind_the_committed_offset_is_refused(
    bootstrap: str, make_topic: Callable[[int], str]
) -> None:
    topic = make_topic(1)
    _produce(bootstrap, topic, _json_values(5), partitions=1)
    config = KafkaSourceConfig(bootstrap_servers=bootstrap, topic=topic, group_id=f"g-{topic}")
    healthy = KafkaSource(config)
    healthy.resuming({f"{topic}:0": "4"})  # offsets 0-4 were committed: the topic is there
    healthy.open()
    healthy.close()
    recreated = KafkaSource(config)
    recreated.resuming({f"{topic}:0": "1000"})  # committed from a former life of the topic

    with pytest.raises(SourceError, match=r"partition .*:0 ends at 4, before position 1000"):
        recreated.open()
