"""The `nats` stream source against a real NATS JetStream server (start it with
`bash scripts/services/nats.sh`; URL: SLUICE_TEST_NATS_URL)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import StreamConfig

from sluiceway.core import registry
from sluiceway.errors import ConfigError, SourceError, TransientError
from sluiceway.streaming.base import MESSAGE_SCHEMA
from sluiceway.streaming.nats_js import NatsSource, NatsSourceConfig

NATS_URL = os.environ.get("SLUICE_TEST_NATS_URL", "nats://127.0.0.1:4222")
START = "bash scripts/services/nats.sh"


@pytest.fixture(scope="session")
def nats_url() -> str:
    """The URL, after checking a JetStream server greets us there (fails, never skips)."""
    host, _, port = NATS_URL.removeprefix("nats://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            greeting = sock.recv(4096).decode(errors="replace")
    except OSError as exc:
        pytest.fail(f"NATS not reachable at {NATS_URL} ({exc}): start it with `{START}`")
    if '"jetstream":true' not in greeting:
        pytest.fail(f"NATS at {NATS_URL} runs without JetStream: start it with `{START}`")
    return NATS_URL


@pytest.fixture
def stream(nats_url: str) -> Iterator[str]:
    """A fresh stream `T<hex>` holding subjects `T<hex>.>`; deleted after the test."""
    name = f"T{uuid.uuid4().hex[:12]}"
    asyncio.run(
        _admin(nats_url, lambda js: js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"])))
    )
    yield name
    asyncio.run(_admin(nats_url, lambda js: js.delete_stream(name)))


@pytest.fixture
def make_source(nats_url: str) -> Iterator[Callable[..., NatsSource]]:
    """Builds and opens sources; closes every one after the test."""
    opened: list[NatsSource] = []

    def build(stream: str, **options: Any) -> NatsSource:
        config = NatsSourceConfig(url=nats_url, stream=stream, subject=f"{stream}.>", **options)
        source = NatsSource(config)
        source.open()
        opened.append(source)
        return source

    yield build
    for source in opened:
        source.close()


async def _admin(url: str, action: Callable[[Any], Any]) -> Any:
    nc = await nats.connect(url)
    try:
        return await action(nc.jetstream())
    finally:
        await nc.close()


def publish(url: str, subject: str, payloads: list[bytes]) -> None:
    """Core-publishes `payloads` and waits until the stream holds them all."""

    async def run() -> None:
        nc = await nats.connect(url)
        for start in range(0, len(payloads), 1000):
            for body in payloads[start : start + 1000]:
                await nc.publish(subject, body)
            await nc.flush()
        js = nc.jetstream()
        stream = await js.find_stream_name_by_subject(subject)
        deadline = time.monotonic() + 30
        while (await js.stream_info(stream)).state.messages < len(payloads):
            assert time.monotonic() < deadline, "the stream did not store every message"
            await asyncio.sleep(0.02)
        await nc.close()

    asyncio.run(run())


def events(n: int) -> list[bytes]:
    return [json.dumps({"id": i, "type": "click", "user": f"u{i % 97}"}).encode() for i in range(n)]


def drain(source: NatsSource, expected: int, *, batch: int = 1000) -> list[Any]:
    """Fetches and acknowledges until `expected` messages came; returns the tables."""
    tables, got, deadline = [], 0, time.monotonic() + 120
    while got < expected and time.monotonic() < deadline:
        fetched = source.fetch(batch, 2.0)
        source.ack(fetched)
        tables.append(fetched.messages)
        got += fetched.count
    return tables


def fetch_ids(source: NatsSource, count: int, *, within_s: float = 10) -> list[str]:
    """Fetch and acknowledge until `count` messages came (or `within_s` passed); their ids."""
    ids: list[str] = []
    deadline = time.monotonic() + within_s
    while len(ids) < count and time.monotonic() < deadline:
        fetched = source.fetch(count, 0.5)
        source.ack(fetched)
        ids += fetched.messages.column("msg_id").to_pylist()
    return ids


def test_source_registers_as_nats_with_its_config() -> None:
    plugin = registry.lookup("source", "nats")
    assert plugin is not None
    assert plugin.config is NatsSourceConfig and plugin.impl is NatsSource


def test_ten_thousand_messages_round_trip_without_loss_or_duplicate(
    nats_url: str, stream: str, make_source: Callable[..., NatsSource]
) -> None:
    sent = events(10_000)
    publish(nats_url, f"{stream}.click", sent)
    source = make_source(stream)
    assert source.lag() == 10_000

    tables = drain(source, 10_000)
    ids = [int(i) for t in tables for i in t.column("msg_id").to_pylist()]
    payloads = [p for t in tables for p in t.column("payload").to_pylist()]

    assert all(t.schema.equals(MESSAGE_SCHEMA) for t in tables)
    assert ids == list(range(1, 10_001))
    assert payloads == sent
    assert {p for t in tables for p in t.column("partition").to_pylist()} == {stream}
    assert {d for t in tables for d in t.column("deliveries").to_pylist()} == {1}
    stamps = [s for t in tables for s in t.column("enqueued_at").to_pylist()]
    assert all(abs((datetime.now(UTC) - s).total_seconds()) < 120 for s in stamps)
    assert source.lag() == 0
    assert source.fetch(100, 0.3).count == 0
    info = asyncio.run(_admin(nats_url, lambda js: js.consumer_info(stream, "sluiceway")))
    assert info.num_ack_pending == 0


def test_positions_are_the_highest_sequence_and_compare_as_integers(
    nats_url: str, stream: str, make_source: Callable[..., NatsSource]
) -> None:
    publish(nats_url, f"{stream}.click", events(12))
    source = make_source(stream)
    fetched = source.fetch(12, 2.0)

    assert source.positions(fetched) == {stream: "12"}
    assert source.position_after("10", "9") and not source.position_after("9", "10")
    assert not source.position_after("12", "12")
    assert source.positions(source.fetch(5, 0.2)) == {}


def test_fetch_returns_what_is_there_without_waiting_for_a_full_batch(
    nats_url: str, stream: str, make_source: Callable[..., NatsSource]
) -> None:
    publish(nats_url, f"{stream}.click", events(12))
    source = make_source(stream)

    started = time.monotonic()
    fetched = source.fetch(5000, 5.0)

    assert fetched.count == 12
    assert time.monotonic() - started < 1.0


def test_fetch_waits_for_the_first_message_up_to_the_timeout(
    nats_url: str, stream: str, make_source: Callable[..., NatsSource]
) -> None:
    source = make_source(stream)
    started = time.monotonic()
    assert source.fetch(10, 0.5).count == 0
    assert 0.4 < time.monotonic() - started < 2.0

    later = threading.Timer(0.5, publish, (nats_url, f"{stream}.click", [b"late"]))
    later.start()
    started = time.monotonic()
    fetched = source.fetch(10, 5.0)
    later.join()

    assert fetched.messages.column("payload").to_pylist() == [b"late"]
    assert time.monotonic() - started < 3.0


def test_unacked_messages_come_back_to_a_new_source_after_ack_wait(
    nats_url: str, stream: str, make_source: Callable[..., NatsSource]
) -> None:
    publish(nats_url, f"{stream}.click", events(5))
    first = make_source(stream, ack_wait_s=1.0)
    assert first.fetch(5, 2.0).count == 5
    first.close()

    second = make_source(stream, ack_wait_s=1.0)
    time.sleep(1.2)
    again = second.fetch(10, 3.0)
    second.ack(again)

    assert again.messages.column("msg_id").to_pylist() == ["1", "2", "3", "4", "5"]
    assert min(again.messages.column("deliveries").to_pylist()) >= 2
    assert second.fetch(10, 1.5).count == 0


def test_after_a_crash_unacked_messages_come_before_newer_ones(
    nats_url: str, stream: str, make_source: Callable[..., NatsSource]
) -> None:
    publish(nats_url, f"{stream}.click", events(5))
    crashed = make_source(stream, ack_wait_s=1.0)
    assert crashed.fetch(5, 2.0).count == 5
    crashed.close()
    publish(nats_url, f"{stream}.click", events(5))

    source = make_source(stream, ack_wait_s=1.0)
    ids = fetch_ids(source, 10)

    assert ids == [str(i) for i in range(1, 11)]


def test_one_fetch_pulls_at_most_ten_thousand_so_the_client_buffer_never_overflows(
    nats_url: str, stream: str, make_source: Callable[..., NatsSource]
) -> None:
    publish(nats_url, f"{stream}.click", events(12_000))
    source = make_source(stream)
    first = source.fetch(50_000, 2.0)
    assert first.count == 10_000
    source.ack(first)
    assert source.fetch(50_000, 2.0).count == 2_000


def test_messages_the_client_dropped_make_it_reopen_and_come_back_first(
    nats_url: str, stream: str, make_source: Callable[..., NatsSource]
) -> None:
    publish(nats_url, f"{stream}.click", events(5))
    source = make_source(stream, ack_wait_s=1.0)
    assert source.fetch(3, 2.0).count == 3  # delivered, never acknowledged: as if dropped
    source._dropped = True  # what nats-py's slow-consumer report sets
    with pytest.raises(TransientError, match="dropped messages"):
        source.fetch(10, 0.5)
    publish(nats_url, f"{stream}.click", events(5))
    source.open()  # what the runner does after a TransientError
    ids = fetch_ids(source, 10)
    assert ids[:3] == ["1", "2", "3"], "the undelivered ones came after newer messages"
    assert sorted(ids, key=int) == [str(i) for i in range(1, 11)]


def test_last_delivery_is_max_deliveries_plus_one_then_the_server_stops(
    nats_url: str, stream: str, make_source: Callable[..., NatsSource]
) -> None:
    publish(nats_url, f"{stream}.click", events(1))
    source = make_source(stream, ack_wait_s=1.0, max_deliveries=2)
    info = asyncio.run(_admin(nats_url, lambda js: js.consumer_info(stream, "sluiceway")))
    assert info.config.max_deliver == 3

    seen = []
    for _ in range(4):
        seen += source.fetch(10, 1.6).messages.column("deliveries").to_pylist()

    assert seen == [1, 2, 3]


def test_ack_returns_after_the_server_has_every_ack(
    nats_url: str, stream: str, make_source: Callable[..., NatsSource]
) -> None:
    publish(nats_url, f"{stream}.click", events(3000))
    source = make_source(stream)
    fetched = source.fetch(3000, 2.0)
    source.ack(fetched)
    source.ack(fetched)

    info = asyncio.run(_admin(nats_url, lambda js: js.consumer_info(stream, "sluiceway")))
    assert fetched.count == 3000
    assert info.num_ack_pending == 0 and info.ack_floor.stream_seq == 3000


def test_a_batch_fetched_before_a_reopen_is_acknowledged_after_it(
    nats_url: str, stream: str, make_source: Callable[..., NatsSource]
) -> None:
    """The runner reopens after a failed fetch or ack and acknowledges the batch in hand
    afterwards; the old connection is gone by then, the new one carries the acks."""
    publish(nats_url, f"{stream}.click", events(5))
    source = make_source(stream, ack_wait_s=1.0)
    fetched = source.fetch(10, 2.0)
    assert fetched.count == 5

    source.open()
    source.ack(fetched)

    info = asyncio.run(_admin(nats_url, lambda js: js.consumer_info(stream, "sluiceway")))
    assert info.num_ack_pending == 0 and info.ack_floor.stream_seq == 5
    time.sleep(1.6)  # past ack_wait and the hold open() puts on fetches
    assert source.fetch(10, 0.5).count == 0
    source.ack(fetched)  # a second ack of the same batch is still harmless


def test_a_stream_whose_subject_another_stream_holds_is_a_source_error_naming_both(
    nats_url: str, stream: str
) -> None:
    name = f"T{uuid.uuid4().hex[:12]}"
    config = NatsSourceConfig(url=nats_url, stream=name, subject=f"{stream}.>", create_stream=True)
    source = NatsSource(config)
    try:
        with pytest.raises(SourceError) as caught:
            source.open()
    finally:
        source.close()
    message = str(caught.value)
    assert "overlap" in message
    assert f"'{name}'" in message and f"'{stream}.>'" in message
    assert f"set `stream` to '{stream}'" in message


def test_missing_stream_is_a_source_error_naming_it(nats_url: str) -> None:
    name = f"missing{uuid.uuid4().hex[:8]}"
    source = NatsSource(NatsSourceConfig(url=nats_url, stream=name, subject=f"{name}.>"))
    try:
        with pytest.raises(SourceError, match=f"'{name}' does not exist.*create_stream"):
            source.open()
    finally:
        source.close()


def test_create_stream_creates_it_with_the_subject(
    nats_url: str, make_source: Callable[..., NatsSource]
) -> None:
    name = f"T{uuid.uuid4().hex[:12]}"
    try:
        source = make_source(name, create_stream=True)
        publish(nats_url, f"{name}.a.b", [b"x", b"y"])
        assert source.fetch(5, 2.0).messages.column("payload").to_pylist() == [b"x", b"y"]
    finally:
        asyncio.run(_admin(nats_url, lambda js: js.delete_stream(name)))


def test_subject_outside_the_stream_is_a_source_error(nats_url: str, stream: str) -> None:
    config = NatsSourceConfig(url=nats_url, stream=stream, subject="elsewhere.>")
    source = NatsSource(config)
    try:
        with pytest.raises(SourceError, match="elsewhere"):
            source.open()
    finally:
        source.close()


def test_closed_port_is_a_transient_error_naming_the_start_script() -> None:
    port = free_port()
    source = NatsSource(NatsSourceConfig(url=f"nats://127.0.0.1:{port}", stream="s", subject="s.>"))
    try:
        with pytest.raises(TransientError) as caught:
            source.open()
    finally:
        source.close()
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "bash scripts/services/nats.sh" in str(caught.value)
    assert "stream 's'" in str(caught.value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_private_server(port: int, store: Path, *options: str) -> subprocess.Popen[bytes]:
    """A nats-server of this test's own (the shared one must not be restarted)."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    args = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store), *options]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    pytest.fail(f"could not start {binary} on port {port}")


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(10)


def test_open_again_after_a_server_restart_resumes_the_consumer(tmp_path: Path) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    server = start_private_server(port, tmp_path)
    source = NatsSource(NatsSourceConfig(url=url, stream="R", subject="r.>", create_stream=True))
    try:
        source.open()
        publish(url, "r.x", [b"1", b"2"])
        source.ack(source.fetch(1, 2.0))
        stop(server)
        with pytest.raises(TransientError, match=f"127.0.0.1:{port}"):
            for _ in range(20):
                source.fetch(1, 0.5)
        server = start_private_server(port, tmp_path)
        source.open()
        publish(url, "r.x", [b"3"])
        got = source.fetch(10, 2.0).messages.column("payload").to_pylist()
    finally:
        source.close()
        stop(server)
    assert got == [b"2", b"3"]


def test_token_comes_from_the_named_variable_and_a_wrong_one_is_a_source_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    server = start_private_server(port, tmp_path, "--auth", "s3cret-token")
    config = NatsSourceConfig(
        url=f"nats://127.0.0.1:{port}",
        stream="A",
        subject="a.>",
        create_stream=True,
        token_env="SLUICE_TEST_NATS_TOKEN",
    )
    try:
        monkeypatch.delenv("SLUICE_TEST_NATS_TOKEN", raising=False)
        with pytest.raises(ConfigError, match="SLUICE_TEST_NATS_TOKEN"):
            NatsSource(config).open()

        monkeypatch.setenv("SLUICE_TEST_NATS_TOKEN", "wrong-token")
        refused = NatsSource(config)
        with pytest.raises(SourceError, match="refused the credentials") as caught:
            refused.open()
        refused.close()
        assert "wrong-token" not in str(caught.value)

        monkeypatch.setenv("SLUICE_TEST_NATS_TOKEN", "s3cret-token")
        accepted = NatsSource(config)
        accepted.open()
        lag = accepted.lag()
        accepted.close()
    finally:
        stop(server)
    assert lag == 0


def test_fetch_and_ack_of_100k_small_json_messages(
    nats_url: str, stream: str, make_source: Callable[..., NatsSource]
) -> None:
    publish(nats_url, f"{stream}.click", events(100_000))
    source = make_source(stream)

    started = time.perf_counter()
    tables = drain(source, 100_000, batch=5000)
    elapsed = time.perf_counter() - started

    ids = {i for t in tables for i in t.column("msg_id").to_pylist()}
    print(f"\nnats fetch+ack: 100,000 messages in {elapsed:.2f} s = {100_000 / elapsed:,.0f} msg/s")
    assert len(ids) == 100_000 and sum(t.num_rows for t in tables) == 100_000
    assert source.lag() == 0


def test_a_recreated_stream_behind_the_committed_sequence_is_refused(
    nats_url: str, stream: str
) -> None:
    publish(nats_url, f"{stream}.e", events(3))
    config = NatsSourceConfig(url=nats_url, stream=stream, subject=f"{stream}.>")
    source = NatsSource(config)
    source.resuming({stream: "2"})
    source.open()  # the stream holds sequences up to 3: fine
    source.close()
    asyncio.run(_admin(nats_url, lambda js: js.delete_stream(stream)))
    asyncio.run(
        _admin(
            nats_url, lambda js: js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"]))
        )
    )
    publish(nats_url, f"{stream}.e", events(1))
    again = NatsSource(config)
    again.resuming({stream: "2"})

    with pytest.raises(SourceError, match="recreated or truncated"):
        again.open()
    again.close()
