"""The `redis_streams` source against a real Redis (start it with
`bash scripts/services/redis.sh`; URL: SLUICE_TEST_REDIS_URL)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pydantic
import pytest
import redis

from sluiceway.core import registry
from sluiceway.errors import ConfigError, SourceError, TransientError
from sluiceway.streaming.base import MESSAGE_SCHEMA, Fetched
from sluiceway.streaming.redis_streams import RedisStreamsSource, RedisStreamsSourceConfig

REDIS_URL = os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_SCRIPT = Path(__file__).parents[2] / "scripts" / "services" / "redis.sh"


@pytest.fixture(scope="session")
def redis_client(redis_bytes: redis.Redis) -> redis.Redis:
    return redis_bytes


@pytest.fixture
def stream(redis_client: redis.Redis) -> Iterator[str]:
    """A unique stream key, deleted after the test (with its groups)."""
    key = f"sluice-test-{uuid.uuid4().hex[:12]}"
    yield key
    redis_client.delete(key)


def make_source(stream: str, **options: Any) -> RedisStreamsSource:
    source = RedisStreamsSource(RedisStreamsSourceConfig(url=REDIS_URL, stream=stream, **options))
    source.open()
    return source


def produce(client: redis.Redis, key: str, count: int, *, start: int = 0) -> list[str]:
    """XADD `count` small JSON entries (pipelined); their ids in order."""
    ids: list[str] = []
    for first in range(start, start + count, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(first, min(first + 1000, start + count)):
            pipe.xadd(key, {"data": json.dumps({"i": i, "kind": "click", "user": f"u{i % 97}"})})
        ids += [raw.decode() for raw in pipe.execute()]
    return ids


def drain(source: RedisStreamsSource, batch: int, *, ack: bool = True) -> list[Fetched]:
    """Fetch (and ack) until a fetch comes back empty."""
    batches = []
    while (fetched := source.fetch(batch, 0.05)).count:
        batches.append(fetched)
        if ack:
            source.ack(fetched)
    return batches


def pending_count(client: redis.Redis, key: str, group: str = "sluiceway") -> int:
    return int(client.xpending(key, group)["pending"])


def test_source_registers_as_redis_streams() -> None:
    plugin = registry.lookup("source", "redis_streams")
    assert plugin is not None
    assert (plugin.config, plugin.impl) == (RedisStreamsSourceConfig, RedisStreamsSource)


def test_fetch_returns_message_rows_in_stream_order(redis_client: redis.Redis, stream: str) -> None:
    ids = produce(redis_client, stream, 20)
    no_field = redis_client.xadd(stream, {"other": "x"}).decode()
    source = make_source(stream)
    try:
        fetched = source.fetch(100, 0.5)
        table = fetched.messages
        assert table.schema == MESSAGE_SCHEMA
        assert table.column("msg_id").to_pylist() == [*ids, no_field]
        assert table.column("partition").to_pylist() == [stream] * 21
        payloads = table.column("payload").to_pylist()
        assert [json.loads(p)["i"] for p in payloads[:20]] == list(range(20))
        assert payloads[20] is None
        first_ms = int(ids[0].split("-")[0])
        assert table.column("enqueued_at")[0].as_py() == datetime.fromtimestamp(
            first_ms / 1000, UTC
        )
        assert set(table.column("deliveries").to_pylist()) == {1}
        assert source.positions(fetched) == {stream: no_field}
        assert source.lag() == 0
    finally:
        source.close()


def test_ten_thousand_messages_arrive_exactly_once_across_batches(
    redis_client: redis.Redis, stream: str
) -> None:
    ids = produce(redis_client, stream, 10_000)
    source = make_source(stream)
    try:
        batches = drain(source, 777)
        got = [i for b in batches for i in b.messages.column("msg_id").to_pylist()]
        assert got == ids
        assert all(b.count <= 777 for b in batches)
        assert pending_count(redis_client, stream) == 0
        assert source.fetch(100, 0.05).count == 0
        assert source.lag() == 0
    finally:
        source.close()


def test_unacked_messages_come_back_first_after_a_restart(
    redis_client: redis.Redis, stream: str
) -> None:
    ids = produce(redis_client, stream, 10)
    crashed = make_source(stream)
    assert crashed.fetch(6, 0.5).messages.column("msg_id").to_pylist() == ids[:6]
    crashed.close()
    later = produce(redis_client, stream, 5, start=10)

    restarted = make_source(stream)
    try:
        first = restarted.fetch(100, 0.5)
        assert first.messages.column("msg_id").to_pylist() == ids[:6]
        assert first.messages.column("deliveries").to_pylist() == [2] * 6
        restarted.ack(first)
        rest = drain(restarted, 100)
        assert [i for b in rest for i in b.messages.column("msg_id").to_pylist()] == [
            *ids[6:],
            *later,
        ]
        assert {d for b in rest for d in b.messages.column("deliveries").to_pylist()} == {1}
        assert pending_count(redis_client, stream) == 0
    finally:
        restarted.close()


def test_stale_messages_of_another_consumer_are_claimed(
    redis_client: redis.Redis, stream: str
) -> None:
    """Entries another consumer leaves pending after this one opened (a second runner on
    the group, which is not supported) are claimed once idle for `claim_idle_ms`."""
    ids = produce(redis_client, stream, 5)
    taker = make_source(stream, consumer="taker", claim_idle_ms=200)
    dead = make_source(stream, consumer="dead-one")
    assert dead.fetch(100, 0.5).count == 5
    dead.close()

    try:
        assert taker.fetch(100, 0).count == 0
        time.sleep(0.3)
        claimed = taker.fetch(100, 0)
        assert claimed.messages.column("msg_id").to_pylist() == ids
        assert claimed.messages.column("deliveries").to_pylist() == [2] * 5
        owners = {
            row["consumer"]
            for row in redis_client.xpending_range(stream, "sluiceway", "-", "+", 10)
        }
        assert owners == {b"taker"}
        taker.ack(claimed)
        assert pending_count(redis_client, stream) == 0
    finally:
        taker.close()


def test_entries_pending_for_a_renamed_consumer_come_first_in_id_order(
    redis_client: redis.Redis, stream: str
) -> None:
    """A consumer renamed between runs (`consumer: ${HOSTNAME}`) takes over on open what the
    old name left pending, and delivers it before any newer entry."""
    old = produce(redis_client, stream, 5)
    crashed = make_source(stream, consumer="pod-a")
    assert crashed.fetch(3, 0.5).count == 3
    assert crashed.fetch(2, 0.5).count == 2
    crashed.close()
    new = produce(redis_client, stream, 4, start=5)

    renamed = make_source(stream, consumer="pod-b")
    try:
        owners = {
            row["consumer"]
            for row in redis_client.xpending_range(stream, "sluiceway", "-", "+", 10)
        }
        assert owners == {b"pod-b"}
        batches = drain(renamed, 3)
        got = [i for b in batches for i in b.messages.column("msg_id").to_pylist()]
        assert got == [*old, *new]
        deliveries = [d for b in batches for d in b.messages.column("deliveries").to_pylist()]
        assert deliveries == [2] * 5 + [1] * 4
        assert pending_count(redis_client, stream) == 0
    finally:
        renamed.close()


def test_entries_of_the_batch_in_hand_are_not_claimed_again_while_unacknowledged(
    redis_client: redis.Redis, stream: str
) -> None:
    ids = produce(redis_client, stream, 5)
    source = make_source(stream, consumer="filling", claim_idle_ms=100)
    try:
        first = source.fetch(100, 0.2)
        assert first.messages.column("msg_id").to_pylist() == ids
        time.sleep(0.3)
        later = produce(redis_client, stream, 1, start=5)
        second = source.fetch(100, 0.2)
        assert second.messages.column("msg_id").to_pylist() == later
        time.sleep(0.3)
        assert source.fetch(100, 0.1).count == 0
        source.ack(first)
        source.ack(second)
        time.sleep(0.3)
        assert source.fetch(100, 0.1).count == 0
        assert pending_count(redis_client, stream) == 0
    finally:
        source.close()


def test_several_streams_are_read_with_one_position_each(
    redis_client: redis.Redis, stream: str
) -> None:
    other = f"{stream}-b"
    ids_a = produce(redis_client, stream, 30)
    ids_b = produce(redis_client, other, 40)
    source = RedisStreamsSource(RedisStreamsSourceConfig(url=REDIS_URL, streams=[stream, other]))
    source.open()
    try:
        batches = drain(source, 20)
        by_stream: dict[str, list[str]] = {stream: [], other: []}
        for fetched in batches:
            table = fetched.messages
            for key, msg_id in zip(
                table.column("partition").to_pylist(),
                table.column("msg_id").to_pylist(),
                strict=True,
            ):
                by_stream[key].append(msg_id)
            for key, last in source.positions(fetched).items():
                assert last == by_stream[key][-1]
        assert by_stream == {stream: ids_a, other: ids_b}
    finally:
        source.close()
        redis_client.delete(other)


def test_position_after_compares_ms_and_seq_as_numbers(stream: str) -> None:
    source = RedisStreamsSource(RedisStreamsSourceConfig(stream=stream))
    assert source.position_after("10-0", "9-5")
    assert source.position_after("5-10", "5-9")
    assert not source.position_after("5-9", "5-10")
    assert not source.position_after("7-3", "7-3")
    assert source.position_after("7-1", "7")
    with pytest.raises(SourceError, match="not a Redis stream entry id"):
        source.position_after("abc", "1-0")


def test_closed_port_raises_transient_error_naming_the_start_script(stream: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = RedisStreamsSource(
        RedisStreamsSourceConfig(url=f"redis://127.0.0.1:{port}/0", stream=stream)
    )
    with pytest.raises(TransientError) as caught:
        source.open()
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert stream in message
    assert "bash scripts/services/redis.sh" in message
    assert ".." not in message, message


def test_a_broker_restart_is_survived_by_reopening(tmp_path: Path, stream: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "REDIS_PORT": str(port), "SLUICE_SERVICES_DIR": str(tmp_path)}

    def service(action: str) -> None:
        subprocess.run(["bash", str(START_SCRIPT), action], env=env, check=True, timeout=30)

    service("start")
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    source = RedisStreamsSource(RedisStreamsSourceConfig(url=url, stream=stream))
    try:
        source.open()
        source.ack(source.fetch(10, 0.5))
        service("stop")
        with pytest.raises(TransientError, match=r"scripts/services/redis\.sh"):
            source.fetch(10, 0.1)
        service("start")
        source.open()
        ids = produce(client, stream, 3)
        assert source.fetch(10, 0.5).messages.column("msg_id").to_pylist() == ids
    finally:
        source.close()
        client.close()
        service("stop")


def test_password_comes_from_the_environment_and_never_shows(
    monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis, stream: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match="password_env"):
        RedisStreamsSourceConfig(url="redis://:hunter2@127.0.0.1:6379/0", stream=stream)
    with pytest.raises(ConfigError, match="SLUICE_TEST_REDIS_PASSWORD_UNSET"):
        make_source(stream, password_env="SLUICE_TEST_REDIS_PASSWORD_UNSET")
    if redis_client.config_get("requirepass").get("requirepass"):
        return  # a server with a password would accept or reject it differently
    secret = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("SLUICE_TEST_REDIS_PASSWORD", secret)
    with pytest.raises(SourceError) as caught:
        make_source(stream, password_env="SLUICE_TEST_REDIS_PASSWORD")
    assert secret not in str(caught.value)
    assert "password_env" in str(caught.value)


def test_config_needs_exactly_one_of_stream_or_streams() -> None:
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        RedisStreamsSourceConfig()
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        RedisStreamsSourceConfig(stream="a", streams=["b"])
    with pytest.raises(pydantic.ValidationError, match="start_id"):
        RedisStreamsSourceConfig(stream="a", start_id="latest")


def test_throughput_of_fetch_and_ack_for_100k_messages(
    redis_client: redis.Redis, stream: str
) -> None:
    produce(redis_client, stream, 100_000)
    source = make_source(stream)
    try:
        started = time.perf_counter()
        batches = drain(source, 5000)
        seconds = time.perf_counter() - started
        total = sum(b.count for b in batches)
        print(
            f"\nredis_streams fetch+ack: {total} messages in {seconds:.2f}s = "
            f"{total / seconds:,.0f} msg/s"
        )
        assert total == 100_000
        assert pending_count(redis_client, stream) == 0
    finally:
        source.close()


def test_connections_killed_between_fetch_and_ack_lose_and_duplicate_nothing(
    redis_client: redis.Redis, stream: str
) -> None:
    ids = produce(redis_client, stream, 3000)
    consumer = f"killed-{uuid.uuid4().hex[:6]}"
    source = make_source(stream, consumer=consumer)
    committed: list[str] = []
    position: str | None = None
    reopened = 0
    try:
        for step in range(200):
            try:
                fetched = source.fetch(250, 0.05)
                if not fetched.count:
                    break
                fresh = [
                    msg_id
                    for msg_id in fetched.messages.column("msg_id").to_pylist()
                    if position is None or source.position_after(msg_id, position)
                ]
                committed += fresh
                position = source.positions(fetched)[stream] if fresh else position
                if step % 3 == 1:
                    kill_clients(redis_client, f"sluice:sluiceway:{consumer}")
                source.ack(fetched)
            except TransientError:
                reopened += 1
                source.open()
        print(f"\nreopened after {reopened} killed connection(s)")
        assert committed == ids
        assert pending_count(redis_client, stream) == 0
    finally:
        source.close()


def kill_clients(client: redis.Redis, name: str) -> None:
    for info in client.client_list():
        if info.get("name") == name:
            client.execute_command("CLIENT", "KILL", "ID", info["id"])


def test_a_connection_killed_during_a_blocked_fetch_is_transient_and_reopen_redelivers(
    redis_client: redis.Redis, stream: str
) -> None:
    ids = produce(redis_client, stream, 5)
    consumer = f"blocked-{uuid.uuid4().hex[:6]}"
    source = make_source(stream, consumer=consumer)
    try:
        assert source.fetch(10, 0.5).count == 5
        killer = threading.Timer(0.3, kill_clients, (redis_client, f"sluice:sluiceway:{consumer}"))
        killer.start()
        started = time.perf_counter()
        with pytest.raises(TransientError, match=r"scripts/services/redis\.sh"):
            source.fetch(10, 5.0)
        killer.join()
        assert time.perf_counter() - started < 4.0
        source.open()
        again = source.fetch(10, 0.5)
        assert again.messages.column("msg_id").to_pylist() == ids
        assert again.messages.column("deliveries").to_pylist() == [2] * 5
        source.ack(again)
        assert pending_count(redis_client, stream) == 0
    finally:
        source.close()


def test_entries_deleted_while_pending_are_acknowledged_not_delivered(
    redis_client: redis.Redis, stream: str
) -> None:
    ids = produce(redis_client, stream, 3)
    crashed = make_source(stream)
    assert crashed.fetch(10, 0.5).count == 3
    crashed.close()
    redis_client.xdel(stream, ids[1])
    restarted = make_source(stream)
    try:
        again = restarted.fetch(10, 0.5)
        assert again.messages.column("msg_id").to_pylist() == [ids[0], ids[2]]
        restarted.ack(again)
        assert pending_count(redis_client, stream) == 0
    finally:
        restarted.close()


def test_ack_refused_by_redis_is_a_source_error_and_the_client_still_works(
    redis_client: redis.Redis, stream: str
) -> None:
    produce(redis_client, stream, 3)
    source = make_source(stream)
    try:
        fetched = source.fetch(10, 1.0)
        redis_client.delete(stream)
        redis_client.set(stream, "not a stream any more")
        with pytest.raises(SourceError, match="Redis refused a command while acknowledging"):
            source.ack(fetched)
        redis_client.delete(stream)
        produce(redis_client, stream, 2)
        source.open()
        again = source.fetch(10, 1.0)
        source.ack(again)
        assert again.count == 2
        assert redis_client.xpending(stream, "sluiceway")["pending"] == 0
    finally:
        source.close()


def test_order_keys_agree_with_position_after_on_real_entry_ids(
    redis_client: redis.Redis, stream: str
) -> None:
    ids = produce(redis_client, stream, 50)
    source = make_source(stream)
    try:
        keys = source.order_keys(pa.array(ids))
        pairs = list(zip(*(k.to_pylist() for k in keys), strict=True))
        for index in range(1, len(ids)):
            assert pairs[index] > pairs[index - 1]
            assert source.position_after(ids[index], ids[index - 1])
    finally:
        source.close()
