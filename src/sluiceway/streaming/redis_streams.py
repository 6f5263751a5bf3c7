"""The `redis_streams` source: entries of Redis streams, read through a consumer group.

One runner reads a group. On open it takes over every entry pending in the group, whichever
consumer name it was delivered to (a crash, a renamed consumer), so they come back before any
new entry and in id order: the runner's committed position stays sound. A fetch then returns,
in this order of preference, one kind of entry: this consumer's pending entries, entries other
consumers left pending longer than `claim_idle_ms` since (XAUTOCLAIM, only while nothing
fetched is unacknowledged), then new entries. Entries are acknowledged (XACK) only when the
runner says they are committed.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from typing import Any, Literal
from urllib.parse import urlsplit

import hiredis
import pyarrow as pa
import pyarrow.compute as pc
import redis
from pydantic import Field, field_validator, model_validator
from redis.backoff import NoBackoff
from redis.retry import Retry

from sluiceway.connectors.redis import check_url
from sluiceway.core import registry
from sluiceway.errors import ConfigError, SourceError, TransientError
from sluiceway.streaming.base import MESSAGE_SCHEMA, Fetched, StreamSourceConfig, integer_order_keys

START_SCRIPT = "bash scripts/services/redis.sh"
_ENTRY_ID = re.compile(r"^(\d+)(?:-(\d+))?$")
_RAW_REPLY_COMMANDS = ("XREADGROUP", "XAUTOCLAIM", "XPENDING")
_SCAN_DONE = b"0-0"
_TAKEOVER_COUNT = 1000
_READ_COUNT = 10_000
"""Most entries one XREADGROUP asks for: a larger reply costs more per entry to read and
parse (measured: 10,000 per call read 1M entries ~10% faster than 50,000)."""


class RedisStreamsSourceConfig(StreamSourceConfig):
    """Entries of one or more Redis streams, read by a consumer of a consumer group."""

    type: Literal["redis_streams"] = Field(
        "redis_streams", description="Redis Streams through a consumer group."
    )
    url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis://[user@]host:port/db, rediss:// (TLS) or unix://path; "
        "never a password (use password_env).",
    )
    password_env: str | None = Field(
        None, description="Name of the environment variable that holds the Redis password."
    )
    stream: str | None = Field(None, description="The stream key to read (or use `streams`).")
    streams: list[str] | None = Field(
        None, min_length=1, description="Several stream keys to read (or use `stream`)."
    )
    group: str = Field("sluiceway", min_length=1, description="Consumer group name.")
    consumer: str = Field(
        "sluice-1", min_length=1, description="This consumer's name within the group."
    )
    field: str = Field(
        "data",
        min_length=1,
        description="The entry field holding the payload; an entry without it gets a NULL "
        "payload (the runner dead-letters it).",
    )
    start_id: str = Field(
        "0",
        description="Where a new group starts: '0' every entry, '$' only entries added "
        "after the group is created, or an entry id.",
    )
    claim_idle_ms: int = Field(
        60_000,
        ge=1,
        description="Take over (XAUTOCLAIM) entries other consumers left unacknowledged "
        "for longer than this.",
    )
    block_ms: int = Field(
        5_000,
        ge=0,
        description="Longest one read waits for new entries (the runner's fetch timeout "
        "caps it further); the socket timeout is this plus 10 s.",
    )

    @field_validator("url")
    @classmethod
    def _url_has_no_password(cls, url: str) -> str:
        return check_url(url)

    @field_validator("start_id")
    @classmethod
    def _start_id_is_an_id(cls, start_id: str) -> str:
        if start_id != "$" and not _ENTRY_ID.match(start_id):
            raise ValueError(f"start_id {start_id!r} is not '0', '$' or an entry id 'ms-seq'")
        return start_id

    @model_validator(mode="after")
    def _one_of_stream_or_streams(self) -> RedisStreamsSourceConfig:
        if (self.stream is None) == (self.streams is None):
            raise ValueError("set exactly one of `stream` (a key) or `streams` (a list)")
        if self.streams is not None and len(set(self.streams)) != len(self.streams):
            raise ValueError("`streams` lists a key twice")
        return self

    @property
    def keys(self) -> list[str]:
        """The stream keys, in configuration order."""
        return [self.stream] if self.stream is not None else list(self.streams or [])


class RedisStreamsSource:
    """One consumer of a Redis consumer group over the configured streams."""

    fetch_ahead = True
    """The runner may fetch the next batch on another thread while it commits this one:
    `fetch` and `lag` use the client's connection pool, one connection each."""

    def __init__(self, config: RedisStreamsSourceConfig) -> None:
        self.config = config
        self._keys = config.keys
        self._client: redis.Redis | None = None
        self._pending_from: dict[str, bytes] = {}
        self._claim_from: dict[str, bytes] = {}
        self._next_claim_at = 0.0
        self._unacked = 0
        self._turn = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, create the group on every stream (MKSTREAM) if missing, and take over
        every entry pending in the group; re-entrant.

        The takeover makes the entries other consumer names left unacknowledged (a renamed
        consumer, `consumer: ${HOSTNAME}`) this consumer's pending ones, delivered first and
        in id order. Had they been claimed later, after newer entries were committed, the
        runner would take them for committed. It assumes one runner per group.

        Reopening forgets what was delivered in flight: the next fetches start again with
        this consumer's pending entries, so nothing delivered but unacknowledged is skipped.

        Raises:
            TransientError: Redis cannot be reached or is loading.
            SourceError: a key is not a stream, or Redis refuses the credentials.
            ConfigError: `password_env` names a variable that is not set.
        """
        self.close()
        client = self._connect()
        with self._broker_errors("connecting"):
            client.ping()
            for key in self._keys:
                self._create_group(client, key)
                self._take_over_pending(client, key)
        self._client = client
        self._pending_from = dict.fromkeys(self._keys, b"0")
        self._claim_from = dict.fromkeys(self._keys, _SCAN_DONE)
        self._next_claim_at = 0.0
        self._unacked = 0

    def close(self) -> None:
        """Disconnect; never raises."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def _connect(self) -> redis.Redis:
        cfg = self.config
        password = None
        if cfg.password_env is not None:
            password = os.environ.get(cfg.password_env)
            if password is None:
                raise ConfigError(
                    f"password_env names ${cfg.password_env}, which is not set: export it "
                    f"before running (stream {self._where()})"
                )
        # No client-side retries: a failed command surfaces as TransientError, the runner
        # reopens, and the pending entries of a lost reply are delivered again.
        client = redis.Redis.from_url(
            cfg.url,
            password=password,
            protocol=2,
            decode_responses=False,
            socket_connect_timeout=5,
            socket_timeout=cfg.block_ms / 1000 + 10,
            retry=Retry(NoBackoff(), 0),
            client_name=f"sluice:{cfg.group}:{cfg.consumer}",
        )
        for command in _RAW_REPLY_COMMANDS:
            client.set_response_callback(command, _raw_reply)
        return client

    def _create_group(self, client: redis.Redis, key: str) -> None:
        cfg = self.config
        try:
            client.execute_command("XGROUP", "CREATE", key, cfg.group, cfg.start_id, "MKSTREAM")
        except redis.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    def _take_over_pending(self, client: redis.Redis, key: str) -> None:
        """Make every entry pending in the group on `key` this consumer's.

        JUSTID leaves the delivery counts alone; reading them from the pending list counts
        the delivery.
        """
        cfg = self.config
        cursor = b"0-0"
        while True:
            reply = client.execute_command(
                "XAUTOCLAIM", key, cfg.group, cfg.consumer, 0, cursor,
                "COUNT", _TAKEOVER_COUNT, "JUSTID",
            )  # fmt: skip
            cursor = reply[0]
            if cursor == _SCAN_DONE:
                return

    # -- fetch -------------------------------------------------------------------------------

    def fetch(self, max_messages: int, timeout_s: float) -> Fetched:
        """Up to `max_messages` entries: own pending ones, else claimed ones, else new ones.

        Waits at most min(`timeout_s`, `block_ms`) for new entries; returns an empty batch
        when none arrive.

        Raises:
            TransientError: the connection failed, or the group vanished (a restart without
                persistence); the runner reopens.
            SourceError: not opened, or Redis refused a command (a key is not a stream).
        """
        if max_messages <= 0:
            return _empty()
        with self._broker_errors("fetching"):
            chunks = self._read_pending(max_messages)
            if not chunks and self._may_claim():
                chunks = self._claim_stale(max_messages)
            if not chunks:
                chunks = self._read_new(max_messages, timeout_s)
        fetched = _to_fetched(chunks)
        self._unacked += fetched.count
        return fetched

    def _may_claim(self) -> bool:
        """Whether to look for stale entries of other consumers now.

        Not before this consumer's own pending entries are all read, and not while entries
        it fetched are unacknowledged: XAUTOCLAIM would take those in-flight entries from
        this very consumer once they are idle long enough, and deliver them twice.
        """
        return (
            not self._pending_from
            and self._unacked == 0
            and time.monotonic() >= self._next_claim_at
        )

    def _read_pending(self, max_messages: int) -> list[_Chunk]:
        """This consumer's pending entries after the cursor, with their delivery counts.

        Empty only once every pending entry was read: a page holding nothing but deleted
        entries is skipped, so no newer entry overtakes the pending ones.
        """
        chunks: list[_Chunk] = []
        while self._pending_from and not chunks:
            chunks = self._read_pending_page(max_messages)
        return chunks

    def _read_pending_page(self, max_messages: int) -> list[_Chunk]:
        keys = list(self._pending_from)[:max_messages]
        count = max(1, max_messages // len(keys))
        ids = [self._pending_from[k] for k in keys]
        reply = self._redis.execute_command(
            "XREADGROUP", "GROUP", self.config.group, self.config.consumer,
            "COUNT", count, "STREAMS", *keys, *ids,
        )  # fmt: skip
        chunks = []
        for key_raw, entries in reply or []:
            key = key_raw.decode()
            if not entries:
                del self._pending_from[key]
                continue
            self._pending_from[key] = entries[-1][0]
            chunks.append(self._chunk(key, [e for e in entries if e[1] is not None]))
            self._ack_deleted(key, [e[0] for e in entries if e[1] is None])
        return self._with_deliveries([c for c in chunks if c.ids])

    def _claim_stale(self, max_messages: int) -> list[_Chunk]:
        """Entries idle longer than `claim_idle_ms` in other consumers, now this one's."""
        cfg = self.config
        keys = self._keys[:max_messages]
        count = max(1, max_messages // len(keys))
        chunks = []
        for key in keys:
            reply = self._redis.execute_command(
                "XAUTOCLAIM", key, cfg.group, cfg.consumer, cfg.claim_idle_ms,
                self._claim_from[key], "COUNT", count,
            )  # fmt: skip
            self._claim_from[key] = reply[0]
            entries = [e for e in reply[1] if e is not None and e[1] is not None]
            if entries:
                chunks.append(self._chunk(key, entries))
        if all(cursor == _SCAN_DONE for cursor in self._claim_from.values()):
            self._next_claim_at = time.monotonic() + min(cfg.claim_idle_ms, 1000) / 1000
        return self._with_deliveries(chunks)

    def _read_new(self, max_messages: int, timeout_s: float) -> list[_Chunk]:
        """Entries never delivered to the group, spread fairly over the streams."""
        start = self._turn % len(self._keys)
        self._turn += 1
        keys = (self._keys[start:] + self._keys[:start])[:max_messages]
        count = max(1, min(_READ_COUNT, max_messages // len(keys)))
        block_ms = int(min(timeout_s * 1000, self.config.block_ms))
        block = ["BLOCK", block_ms] if block_ms > 0 else []  # BLOCK 0 would wait forever
        reply = self._redis.execute_command(
            "XREADGROUP", "GROUP", self.config.group, self.config.consumer,
            "COUNT", count, *block, "STREAMS", *keys, *([">"] * len(keys)),
        )  # fmt: skip
        return [self._chunk(k.decode(), entries) for k, entries in reply or [] if entries]

    def _chunk(self, key: str, entries: list[Any]) -> _Chunk:
        field = self.config.field.encode()
        ids = [entry[0] for entry in entries]
        payloads = [_field_value(entry[1], field) for entry in entries]
        return _Chunk(key, ids, payloads)

    def _with_deliveries(self, chunks: list[_Chunk]) -> list[_Chunk]:
        """Fill each chunk's delivery counts from one pipelined XPENDING range per stream."""
        if not chunks:
            return chunks
        cfg = self.config
        pipe = self._redis.pipeline(transaction=False)
        for chunk in chunks:
            # This consumer's PEL between the first and last id holds the chunk's entries
            # and at most the ones still in flight.
            count = len(chunk.ids) + self._unacked
            pipe.execute_command(
                "XPENDING", chunk.key, cfg.group, chunk.ids[0], chunk.ids[-1], count,
                cfg.consumer,
            )  # fmt: skip
        for chunk, reply in zip(chunks, pipe.execute(), strict=True):
            times = {row[0]: row[3] for row in reply}
            chunk.deliveries = [times.get(i) for i in chunk.ids]
        return chunks

    def _ack_deleted(self, key: str, ids: list[bytes]) -> None:
        """Entries deleted while pending carry no data: acknowledge them so they leave."""
        if ids:
            self._redis.execute_command("XACK", key, self.config.group, *ids)

    # -- acknowledge and positions -----------------------------------------------------------

    def ack(self, fetched: Fetched) -> None:
        """XACK every entry of `fetched`: one pipelined XACK per stream.

        Raises:
            TransientError: the connection failed (the entries stay pending and come back
                after the runner reopens).
        """
        handle: dict[str, list[bytes]] = fetched.handle or {}
        if not handle:
            return
        group = self.config.group.encode()
        commands = [(b"XACK", key.encode(), group, *ids) for key, ids in handle.items()]
        with self._broker_errors("acknowledging"):
            _pipelined(self._redis, commands)
        self._unacked = max(0, self._unacked - fetched.count)

    def positions(self, fetched: Fetched) -> dict[str, str]:
        """The last entry id of each stream in `fetched`."""
        handle: dict[str, list[bytes]] = fetched.handle or {}
        return {key: ids[-1].decode() for key, ids in handle.items()}

    def position_after(self, msg_id: str, committed: str) -> bool:
        """True when entry id `msg_id` comes after `committed`, comparing (ms, seq) as numbers.

        Raises:
            SourceError: either value is not an entry id.
        """
        return _id_key(msg_id) > _id_key(committed)

    def order_keys(self, msg_ids: pa.Array) -> list[pa.Array]:
        """Integer columns ordering `msg_ids`, for comparing a whole batch at once."""
        return integer_order_keys(msg_ids, with_sequence=True)

    def lag(self) -> int | None:
        """Entries of all streams not yet delivered to the group (Redis 7 XINFO GROUPS).

        None when Redis does not say (before 7.0, or after deletions it cannot count).
        """
        with self._broker_errors("reading the group lag"):
            pipe = self._redis.pipeline(transaction=False)
            for key in self._keys:
                pipe.xinfo_groups(key)
            replies = pipe.execute()
        group = self.config.group.encode()
        lags = [g.get("lag") for groups in replies for g in groups if g.get("name") == group]
        if len(lags) != len(self._keys) or any(lag is None for lag in lags):
            return None
        return sum(lags)

    # -- errors ------------------------------------------------------------------------------

    @property
    def _redis(self) -> redis.Redis:
        if self._client is None:
            raise SourceError(f"redis_streams source {self._where()} used before open()")
        return self._client

    def _where(self) -> str:
        parts = urlsplit(self.config.url)
        server = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
        return f"{', '.join(self._keys)} (group {self.config.group}) at {server}"

    @contextlib.contextmanager
    def _broker_errors(self, doing: str) -> Iterator[None]:
        """Turn redis-py errors into sluiceway's: retry connection trouble, fail the rest."""
        context = {"source": "redis_streams", "stream": ",".join(self._keys)}
        try:
            yield
        except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
            raise SourceError(
                f"Redis refused the credentials while {doing} stream {self._where()}: "
                f"{_reason(exc)}. "
                "Check the user in `url` and the variable named by `password_env`.",
                context=context,
            ) from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise TransientError(
                f"Redis unreachable while {doing} stream {self._where()}: {_reason(exc)}. "
                f"Is it running? Start it with `{START_SCRIPT}`, or fix `url`.",
                context=context,
            ) from exc
        except redis.ResponseError as exc:
            if str(exc).startswith("NOGROUP"):
                raise TransientError(
                    f"Consumer group vanished while {doing} stream {self._where()} (Redis "
                    "restarted without persistence, or the group was destroyed); reopening "
                    "creates it again.",
                    context=context,
                ) from exc
            raise SourceError(
                f"Redis refused a command while {doing} stream {self._where()}: "
                f"{_reason(exc)}. "
                "Check that every key is a stream (or absent).",
                context=context,
            ) from exc


class _Chunk:
    """The entries of one stream in one batch, as parallel lists."""

    __slots__ = ("deliveries", "ids", "key", "payloads")

    def __init__(self, key: str, ids: list[bytes], payloads: list[bytes | None]) -> None:
        self.key = key
        self.ids = ids
        self.payloads = payloads
        self.deliveries: list[int | None] | None = None  # None: first delivery of each


def _pipelined(client: redis.Redis, commands: list[tuple[bytes, ...]]) -> list[Any]:
    """Send `commands` on one connection and read their replies, packing each in C: a XACK
    of 50,000 ids spends most of its time in redis-py's per-argument packing otherwise.

    Raises:
        redis.ConnectionError, redis.TimeoutError: the connection failed (it is dropped).
        redis.ResponseError: Redis refused a command.
    """
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        packed = [hiredis.pack_command(command) for command in commands]  # type: ignore[arg-type]
        connection.send_packed_command(packed)
        replies = [connection.read_response() for _ in commands]
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            raise reply
    return replies


def _raw_reply(response: Any, **_options: Any) -> Any:
    return response


def _reason(exc: Exception) -> str:
    """redis-py's message without its closing period (ours follows it)."""
    return str(exc).strip().rstrip(".")


def _field_value(fields: list[bytes], field: bytes) -> bytes | None:
    """The value of `field` in a flat [name, value, ...] reply, or None."""
    if fields and fields[0] == field:
        return fields[1]
    for i in range(2, len(fields) - 1, 2):
        if fields[i] == field:
            return fields[i + 1]
    return None


def _to_fetched(chunks: list[_Chunk]) -> Fetched:
    """One `MESSAGE_SCHEMA` table built column-wise; the handle maps stream → ids to ack."""
    if not chunks:
        return _empty()
    partitions: list[str] = []
    ids: list[bytes] = []
    payloads: list[bytes | None] = []
    deliveries: list[int | None] = []
    for chunk in chunks:
        partitions += [chunk.key] * len(chunk.ids)
        ids += chunk.ids
        payloads += chunk.payloads
        deliveries += chunk.deliveries or [1] * len(chunk.ids)
    msg_ids = pa.array(ids, pa.binary()).cast(pa.string())
    millis = pc.list_element(pc.split_pattern(msg_ids, "-", max_splits=1), 0)
    table = pa.Table.from_arrays(
        [
            pa.array(partitions, pa.string()),
            msg_ids,
            pa.array(payloads, pa.binary()),
            millis.cast(pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            pa.array(deliveries, pa.int32()),
        ],
        schema=MESSAGE_SCHEMA,
    )
    return Fetched(table, {chunk.key: chunk.ids for chunk in chunks})


def _empty() -> Fetched:
    return Fetched(MESSAGE_SCHEMA.empty_table(), {})


def _id_key(entry_id: str) -> tuple[int, int]:
    match = _ENTRY_ID.match(entry_id)
    if match is None:
        raise SourceError(f"{entry_id!r} is not a Redis stream entry id ('ms-seq')")
    return int(match[1]), int(match[2] or 0)


registry.register("source", "redis_streams", RedisStreamsSourceConfig, RedisStreamsSource)
