"""The `kafka` stream source: a confluent-kafka consumer in a consumer group.

Offsets are never committed automatically: `ack` commits, synchronously, the offset after the
last message of each topic-partition of a batch, once the runner has committed the batch to
the sink. On `open` the consumer resumes from the group's committed offsets, so messages that
reached the sink but were not acknowledged come again; the runner recognises them by position.

Payloads stay raw bytes. Avro (schemaless binary) is the one exception: it cannot be parsed
in bulk by DuckDB, so each message is decoded with fastavro and re-encoded as JSON bytes.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import io
import json
import logging
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from fastavro import schemaless_reader
from fastavro.schema import load_schema
from pydantic import Field, model_validator

from sluiceway.core import registry
from sluiceway.errors import ConfigError, SourceError, TransientError
from sluiceway.streaming.base import (
    MESSAGE_SCHEMA,
    SOURCE_REASON,
    Fetched,
    StreamSourceConfig,
    behind_committed,
    integer_order_keys,
)

START_HINT = (
    "check that the brokers are up and reachable from here (the local test cluster: "
    "`bash scripts/services/kafka.sh`)"
)
_MANAGED_OPTIONS = frozenset(
    {
        "bootstrap.servers",
        "group.id",
        "auto.offset.reset",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "logger",
    }
)
_SECRET_OPTIONS = frozenset(
    {
        "sasl.password",
        "sasl.oauthbearer.client.secret",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.key.pem",
    }
)

KafkaFormat = Literal["json", "avro"]
OffsetReset = Literal["earliest", "latest"]
Partition = tuple[str, int]
_REBALANCED_CODES = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.FENCED_INSTANCE_ID,
    }
)
_FILL_WAIT_S = 0.1
_LAG_TIMEOUT_S = 1.0


class _Repeats(logging.Filter):
    """librdkafka says the same thing (a broker down: FAIL, connection refused) several
    times a second: let each message through once a minute. The runner's own `retrying`
    events say what is being retried and for how long."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self.said: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())
        now = time.monotonic()
        if now - self.said.get(key, -self.every_s) < self.every_s:
            return False
        self.said[key] = now
        return True


_LOG = logging.getLogger(__name__)
_LOG.addFilter(_Repeats())
_TRANSIENT_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


class KafkaSourceConfig(StreamSourceConfig):
    """Messages of one or more Kafka topics, read by a consumer group."""

    type: Literal["kafka"] = Field("kafka", description="A Kafka consumer group.")
    bootstrap_servers: str = Field(
        description="Comma-separated host:port list of brokers, e.g. '127.0.0.1:9092'."
    )
    topic: str | list[str] = Field(description="The topic to read, or a list of topics.")
    group_id: str = Field(
        "sluiceway", min_length=1, description="Consumer group whose committed offsets are used."
    )
    format: KafkaFormat = Field(
        "json",
        description="json: message values are JSON documents (kept as raw bytes); avro: "
        "schemaless Avro binary, decoded to JSON bytes with `avro_schema`.",
    )
    avro_schema: str | None = Field(
        None, description="Path to the .avsc file of the messages (format: avro only)."
    )
    avro_writer_schemas: list[str] = Field(
        default_factory=list,
        description="Older .avsc files the topic's messages may have been written with: a "
        "value is decoded with the first schema (avro_schema, then these) that reads it whole, "
        "and resolved to avro_schema (fields it added get their defaults).",
    )
    auto_offset_reset: OffsetReset = Field(
        "earliest", description="Where a group without committed offsets starts."
    )
    open_timeout_s: float = Field(
        10.0, gt=0, description="How long `open` waits for the brokers' metadata."
    )
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        repr=False,
        description="Extra librdkafka consumer settings (e.g. security.protocol); no secrets.",
    )
    secret_options: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka setting → name of the environment variable holding its value "
        "(e.g. sasl.password: KAFKA_PASSWORD).",
    )

    @property
    def topics(self) -> list[str]:
        return [self.topic] if isinstance(self.topic, str) else list(self.topic)

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSourceConfig:
        if not self.topics or not all(self.topics):
            raise ValueError("topic must name at least one topic, and no empty name")
        if (self.format == "avro") != (self.avro_schema is not None):
            raise ValueError("avro_schema is required with format: avro, and only with it")
        if self.avro_writer_schemas and self.format != "avro":
            raise ValueError("avro_writer_schemas go with format: avro only")
        managed = sorted(_MANAGED_OPTIONS & (set(self.options) | set(self.secret_options)))
        if managed:
            raise ValueError(
                f"options {managed} are set by the source itself; use bootstrap_servers and "
                "group_id (offsets are committed only by ack)"
            )
        secrets = sorted(_SECRET_OPTIONS & set(self.options))
        if secrets:
            raise ValueError(
                f"options {secrets} hold secrets; name an environment variable in "
                "secret_options instead"
            )
        return self


class KafkaSource:
    """A `StreamSource` over a confluent-kafka `Consumer` (see the module docstring)."""

    payload_format: Literal["json"] = "json"
    """What `payload` holds: JSON for both formats (Avro is decoded to JSON bytes)."""

    def __init__(self, config: KafkaSourceConfig) -> None:
        self.config = config
        self.skipped: Counter[str] = Counter()
        """Messages skipped because the broker delivered an error instead, by error name."""
        self.undecodable = 0
        """Avro messages the schema could not decode; their payload is left as raw bytes."""
        self.unacknowledged = 0
        """Messages whose ack the group refused after a rebalance (they come again)."""
        self._consumer: Any = None
        self._avro_schema: Any = None
        self._avro_writers: list[Any] = []

    @property
    def _where(self) -> str:
        return f"{self.config.bootstrap_servers}, topic {', '.join(self.config.topics)}"

    def open(self) -> None:
        """Connect, check the topics exist and subscribe the group.

        Called again while open (the runner does so after a transient error), it keeps the
        consumer, its group membership and its fetch positions, and only checks that a broker
        answers: librdkafka reconnects by itself, and a new consumer would have to rejoin the
        group, which makes the acknowledgement of fetched messages fail.

        Raises:
            TransientError: no broker answered within `open_timeout_s`.
            SourceError: a topic does not exist, or the Avro schema cannot be read.
            ConfigError: an environment variable of `secret_options` is not set.
        """
        if self._consumer is not None:
            self._metadata(self._consumer)
            return
        if self.config.format == "avro":
            self._avro_schema = _load_avro_schema(self.config.avro_schema or "")
            self._avro_writers = [
                None,  # avro_schema itself: no resolution needed
                *(_load_avro_schema(path) for path in self.config.avro_writer_schemas),
            ]
        consumer = self._new_consumer()
        try:
            metadata = self._metadata(consumer)
        except TransientError:
            consumer.close()
            raise
        missing = [t for t in self.config.topics if t not in metadata.topics]
        if missing:
            consumer.close()
            raise SourceError(
                f"Kafka topic(s) {missing} do not exist at {self.config.bootstrap_servers}; "
                "create them (the test mock: `bash scripts/services/kafka.sh create-topic "
                "NAME`) or fix `topic`"
            )
        try:
            self._check_not_behind(consumer)
        except SourceError:
            consumer.close()
            raise
        consumer.subscribe(self.config.topics)
        self._consumer = consumer

    def resuming(self, committed: Mapping[str, str]) -> None:
        """Told by the runner before `open`: the offsets the table holds ("topic:partition"
        → last offset), so a recreated topic is recognised instead of skipped."""
        self._committed = dict(committed)

    def _check_not_behind(self, consumer: Consumer) -> None:
        """A partition whose high watermark is not past the committed offset was recreated
        or truncated: refuse, since its new messages would look committed."""
        for key, offset in getattr(self, "_committed", {}).items():
            topic, _, partition = key.rpartition(":")
            if topic not in self.config.topics:
                continue
            tp = TopicPartition(topic, int(partition))
            try:
                _low, high = consumer.get_watermark_offsets(tp, timeout=self.config.open_timeout_s)
            except KafkaException:
                continue  # unknown partition: nothing was produced to it since
            if high <= int(offset):
                raise behind_committed("Kafka", self._where, key, offset, high - 1)

    def _metadata(self, consumer: Consumer) -> Any:
        try:
            return consumer.list_topics(timeout=self.config.open_timeout_s)
        except KafkaException as exc:
            raise TransientError(
                f"no Kafka broker answered at {self._where} within "
                f"{self.config.open_timeout_s:g} s ({exc.args[0].str()}); {START_HINT}"
            ) from None

    def _new_consumer(self) -> Consumer:
        settings = self._consumer_settings()
        try:
            return Consumer(settings)
        except KafkaException as exc:
            message = exc.args[0].str()
            for option in self.config.secret_options:
                message = message.replace(str(settings[option]), f"<{option}>")
            raise SourceError(
                f"the Kafka consumer settings of {self._where} are invalid: {message}; "
                "fix `options` (librdkafka setting names, e.g. session.timeout.ms)"
            ) from None

    def _consumer_settings(self) -> dict[str, Any]:
        secrets = {}
        for option, variable in self.config.secret_options.items():
            value = os.environ.get(variable)
            if not value:
                raise ConfigError(
                    f"environment variable {variable} (for Kafka setting {option}) is not set; "
                    "export it before running the pipeline"
                )
            secrets[option] = value
        return {
            **self.config.options,
            **secrets,
            "bootstrap.servers": self.config.bootstrap_servers,
            "group.id": self.config.group_id,
            "auto.offset.reset": self.config.auto_offset_reset,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "logger": _LOG,
        }

    def fetch(self, max_messages: int, timeout_s: float) -> Fetched:
        """Up to `max_messages` messages, waiting at most `timeout_s` for the first one.

        Raises:
            TransientError: the broker reported a retriable or fatal error.
            SourceError: a topic vanished or access to it is denied.
        """
        consumer = self._open_consumer()
        try:
            messages = consumer.consume(1, timeout_s)
            if messages and max_messages > 1:
                # A short wait fills the batch while the prefetch catches up: one sink commit
                # per handful of messages would cost far more than the wait.
                messages += consumer.consume(max_messages - 1, min(timeout_s, _FILL_WAIT_S))
        except KafkaException as exc:
            raise TransientError(
                f"Kafka fetch failed at {self._where}: {exc.args[0].str()}; {START_HINT}"
            ) from None
        return self._to_fetched(messages)

    def _to_fetched(self, messages: list[Any]) -> Fetched:
        partitions: list[str] = []
        offsets: list[int] = []
        payloads: list[bytes | None] = []
        timestamps: list[int | None] = []
        last: dict[Partition, int] = {}
        for message in messages:
            if message.error() is not None:
                self._on_error(message.error())
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            partitions.append(f"{topic}:{partition}")
            offsets.append(offset)
            payloads.append(message.value())
            kind, stamp = message.timestamp()
            timestamps.append(stamp if kind else None)
            last[(topic, partition)] = offset
        reasons: list[str | None] = []
        if self._avro_schema is not None:
            payloads, reasons = self._avro_to_json(payloads)
        table = pa.Table.from_arrays(
            [
                pa.array(partitions, pa.string()),
                pa.array(offsets, pa.int64()).cast(pa.string()),
                pa.array(payloads, pa.binary()),
                pa.array(timestamps, pa.timestamp("ms", tz="UTC")),
                pa.nulls(len(partitions), pa.int32()),
            ],
            schema=MESSAGE_SCHEMA,
        )
        if any(reasons):
            table = table.append_column(SOURCE_REASON, pa.array(reasons, pa.string()))
        return Fetched(messages=table, handle=last)

    def _on_error(self, error: Any) -> None:
        code = error.code()
        if code == KafkaError._PARTITION_EOF:
            return
        if code in (
            KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.GROUP_AUTHORIZATION_FAILED,
        ):
            raise SourceError(f"Kafka refused {self._where}: {error.str()}; fix `topic` or ACLs")
        if error.fatal():
            self.close()  # a fatal error ends this consumer: the next open makes a new one
            raise TransientError(f"Kafka fatal error at {self._where}: {error.str()}")
        if error.retriable() or code in _TRANSIENT_CODES:
            raise TransientError(f"Kafka error at {self._where}: {error.str()}; {START_HINT}")
        self.skipped[error.name()] += 1

    def _avro_to_json(
        self, payloads: list[bytes | None]
    ) -> tuple[list[bytes | None], list[str | None]]:
        """Each value decoded to JSON bytes, and why a value could not be (its raw bytes
        are kept for the dead letter; the reason goes with it)."""
        decoded: list[bytes | None] = []
        reasons: list[str | None] = []
        for raw in payloads:
            record = None if raw is None else self._avro_record(raw)
            if raw is not None and record is None:
                self.undecodable += 1
                reasons.append(
                    "the value is not Avro of avro_schema"
                    + (" or avro_writer_schemas" if len(self._avro_writers) > 1 else "")
                    + " (it cannot be read whole with any of them)"
                )
                decoded.append(raw)
                continue
            reasons.append(None)
            decoded.append(None if record is None else record)
        return decoded, reasons

    def _avro_record(self, raw: bytes) -> bytes | None:
        """JSON bytes of the value, read with the first writer schema that reads it to its
        last byte (a value left half read was written with another schema)."""
        for writer in self._avro_writers:
            buffer = io.BytesIO(raw)
            try:
                record = schemaless_reader(
                    buffer, writer or self._avro_schema, self._avro_schema if writer else None
                )
            except Exception:
                continue
            if buffer.tell() == len(raw):
                return json.dumps(record, default=_json_default).encode()
        return None

    def ack(self, fetched: Fetched) -> None:
        """Commit, synchronously, the offset after the last message of each partition.

        A commit the group refuses because it has rebalanced since the fetch (the partitions
        may belong to another consumer now) is counted in `unacknowledged`, not raised: those
        messages are delivered again from the last committed offset and the runner recognises
        them as committed. Retrying would not help: the consumer rejoins only when it fetches.

        Raises:
            TransientError: the commit failed for another reason (a lost broker).
        """
        last: dict[Partition, int] = fetched.handle or {}
        if not last:
            return
        offsets = [TopicPartition(t, p, offset + 1) for (t, p), offset in last.items()]
        try:
            results = self._open_consumer().commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() in _REBALANCED_CODES:
                self.unacknowledged += fetched.count
                return
            raise TransientError(
                f"Kafka offset commit failed at {self._where}: {exc.args[0].str()}"
            ) from None
        failed = [f"{r.topic}:{r.partition} ({r.error.str()})" for r in results or [] if r.error]
        if failed:
            raise TransientError(f"Kafka offset commit failed at {self._where}: {failed}")

    def positions(self, fetched: Fetched) -> dict[str, str]:
        """The last offset of each topic-partition in `fetched` ("topic:partition" → offset)."""
        last: dict[Partition, int] = fetched.handle or {}
        return {f"{t}:{p}": str(offset) for (t, p), offset in last.items()}

    def position_after(self, msg_id: str, committed: str) -> bool:
        """Offsets are integers: True when `msg_id` is greater than `committed`."""
        return int(msg_id) > int(committed)

    def order_keys(self, msg_ids: pa.Array) -> list[pa.Array]:
        """Integer columns ordering `msg_ids`, for comparing a whole batch at once."""
        return integer_order_keys(msg_ids)

    def is_assigned(self) -> bool:
        """True once the group gave this consumer partitions to read."""
        return self._consumer is not None and bool(self._consumer.assignment())

    def lag(self) -> int | None:
        """Sum over assigned partitions of high watermark minus position; None if unknown.

        A partition this consumer has not read from yet counts from the group's committed
        offset, or from where `auto_offset_reset` starts when the group has none.
        """
        if self._consumer is None or not self._consumer.assignment():
            return None
        try:
            positions = self._consumer.position(self._consumer.assignment())
            unread = [tp for tp in positions if tp.offset < 0]
            committed: dict[Partition, int] = {}
            if unread:
                committed = {
                    (tp.topic, tp.partition): tp.offset
                    for tp in self._consumer.committed(unread, timeout=_LAG_TIMEOUT_S)
                }
            total = 0
            for tp in positions:
                low, high = self._watermarks(tp)
                start = tp.offset if tp.offset >= 0 else committed[(tp.topic, tp.partition)]
                if start < 0:
                    start = low if self.config.auto_offset_reset == "earliest" else high
                total += max(high - start, 0)
        except KafkaException:
            return None
        return total

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        low, high = self._consumer.get_watermark_offsets(tp, cached=True)
        if low is None or high is None or low < 0 or high < 0:
            low, high = self._consumer.get_watermark_offsets(tp, timeout=_LAG_TIMEOUT_S)
        return low, high

    def close(self) -> None:
        """Leave the group (offsets are not committed) and disconnect; never raises."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close()

    def _open_consumer(self) -> Any:
        if self._consumer is None:
            raise SourceError(f"the Kafka source for {self._where} is not open; call open()")
        return self._consumer


def _load_avro_schema(path: str) -> Any:
    try:
        return load_schema(path)
    except FileNotFoundError:
        raise SourceError(
            f"Avro schema file '{path}' not found; set avro_schema to an .avsc path"
        ) from None
    except Exception as exc:
        raise SourceError(f"Avro schema '{path}' is not valid: {exc}") from None


def _json_default(value: Any) -> Any:
    """JSON for the Avro values json.dumps does not know (bytes, decimals, dates, uuids)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


registry.register("source", "kafka", KafkaSourceConfig, KafkaSource)
