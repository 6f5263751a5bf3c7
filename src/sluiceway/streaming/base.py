"""What a streaming source is: it fetches messages as Arrow and acknowledges them later.

A stream source never parses messages one by one in Python: `fetch` returns the raw payloads
as one Arrow table (`MESSAGE_SCHEMA`), and the stream runner parses them in bulk in DuckDB.
Acknowledgement is separate from fetching: the runner acknowledges a batch only after its rows
are committed to the sink together with the batch's positions, so a crash between the two
redelivers messages that the runner then recognises as committed (their position is at or
before the committed one) and acknowledges without writing them again.

Positions are per partition (a Redis stream key, a NATS stream, a Kafka topic-partition) and
are plain JSON values; `position_after(a, b)` orders them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from sluiceway.core.spec import SourceConfig
from sluiceway.errors import SourceError

MESSAGE_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.string(), nullable=False),
        pa.field("msg_id", pa.string(), nullable=False),
        pa.field("payload", pa.binary()),
        pa.field("enqueued_at", pa.timestamp("ms", tz="UTC")),
        pa.field("deliveries", pa.int32()),
    ]
)
"""One row per message: where it came from, its id there (the position it stands for, as
text), its raw bytes, when the broker received it (None if unknown), and how many times it has
been delivered (1 on first delivery; None if the broker does not say)."""

SOURCE_REASON = "reason"
"""An optional column after MESSAGE_SCHEMA's: why the source could not decode a message
(kept raw); the parse dead-letters it with that reason."""


def behind_committed(
    kind: str, where: str, partition: str, committed: str, newest: int
) -> SourceError:
    """A partition whose newest message is older than the committed position: the topic or
    stream was recreated (or truncated). New messages would look committed and be skipped,
    so the source refuses to start."""
    return SourceError(
        f"{kind} {where}: partition {partition} ends at {newest}, before position {committed} "
        "that this pipeline already committed: it was recreated or truncated. Its new messages "
        "would look committed and be skipped, so the run stops. To consume it from the "
        "start, point the sink at a new Delta table (or delete the table); if this is the "
        "wrong server, fix the source's settings.",
        context={"source": kind, "partition": partition},
    )


def integer_order_keys(msg_ids: pa.Array, with_sequence: bool = False) -> list[pa.Array]:
    """Order keys for ids that are a non-negative integer ("42"), or with `with_sequence`
    two joined by a dash (Redis "1700000000000-3"; a missing "-seq" counts as 0): one
    unsigned 64-bit column per number, compared in order (the first decides, then the next).

    Raises:
        SourceError: an id is not of that form, or a number does not fit 64 bits.
    """
    ids = msg_ids.cast(pa.string())
    try:
        if not with_sequence:
            return [ids.cast(pa.uint64())]
        dashed = pc.match_substring(ids, "-")
        if not pc.all(dashed).as_py():
            ids = pc.if_else(dashed, ids, pc.binary_join_element_wise(ids, "0", "-"))
        pieces = pc.split_pattern(ids, "-", max_splits=1)
        return [pc.list_element(pieces, i).cast(pa.uint64()) for i in (0, 1)]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        bad = _first_bad(msg_ids, with_sequence)
        raise SourceError(f"{bad!r} is not a message position of the expected form") from exc


def _first_bad(msg_ids: pa.Array, with_sequence: bool) -> str | None:
    form = re.compile(r"^\d+(-\d+)?$" if with_sequence else r"^\d+$")
    for value in msg_ids.to_pylist():
        if (
            value is None
            or not form.match(value)
            or any(int(part) >= 2**64 for part in value.split("-"))
        ):
            return value
    return None


class StreamSourceConfig(SourceConfig):
    """Base of every streaming source config."""

    streaming: ClassVar[bool] = True
    change_capture: ClassVar[bool] = False
    """True for a source of row changes: payloads carry `__op` (r, i, u, d) and may carry
    `__unchanged` (columns the change left as they were); the runner applies them to a
    Delta `merge` sink instead of appending."""

    max_deliveries: int = Field(
        5,
        ge=1,
        description="A message delivered more than this many times goes to the dead letters "
        "instead of blocking the stream.",
    )


@dataclass(frozen=True)
class Fetched:
    """A batch of messages and what acknowledging it needs."""

    messages: pa.Table
    """`MESSAGE_SCHEMA` rows, in broker order within each partition."""
    handle: Any = None
    """Whatever the source needs to acknowledge exactly these messages later."""

    @property
    def count(self) -> int:
        return self.messages.num_rows


class StreamSource(Protocol):
    """A streaming source: one consumer of a broker, owned by one stream runner."""

    def open(self) -> None:
        """Connect, and create the consumer group / durable consumer if it does not exist.

        Raises:
            TransientError: the broker cannot be reached (the runner retries with backoff).
            SourceError: the configuration is wrong (an unknown stream, a bad credential).
        """
        ...

    def fetch(self, max_messages: int, timeout_s: float) -> Fetched:
        """Up to `max_messages` messages, waiting at most `timeout_s` for the first one.

        Messages delivered before and never acknowledged (a crash, another consumer that died)
        come first. Returns an empty batch on timeout.
        """
        ...

    def ack(self, fetched: Fetched) -> None:
        """Acknowledge every message of `fetched` (committed, or recognised as committed)."""
        ...

    def positions(self, fetched: Fetched) -> dict[str, str]:
        """The last position of each partition in `fetched` (partition → msg_id)."""
        ...

    def position_after(self, msg_id: str, committed: str) -> bool:
        """True when `msg_id` comes after the `committed` position of the same partition."""
        ...

    def lag(self) -> int | None:
        """Messages waiting in the broker for this consumer, if the broker says."""
        ...

    # Optional: `fetch_ahead = True` — `fetch` may run on another thread while the runner
    # commits the previous batch and calls `lag`; everything else stays on one thread.
    # Optional: `order_keys(msg_ids: pa.Array) -> list[pa.Array]` — integer columns whose
    # lexicographic order is the position order (`position_after`). With it the runner
    # compares whole batches at once instead of calling `position_after` per message; see
    # `integer_order_keys`.
    # Optional: `is_assigned() -> bool` — False while a consumer group has not given this
    # consumer its partitions yet (Kafka): `--idle-exit` does not count that wait.

    def close(self) -> None:
        """Disconnect; never raises."""
        ...
