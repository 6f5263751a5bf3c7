"""Where a stream source stands: the committed position of each partition, and the
comparisons of a whole batch against it.

Sources whose message ids map to integer columns in id order (`order_keys`: Redis entry
ids, Kafka and NATS sequence numbers) are compared with Arrow compute over the batch; the
others message by message through the source's `position_after`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sluiceway.streaming.base import MESSAGE_SCHEMA, StreamSource


class PartitionPositions:
    """The committed position of each partition of one stream source.

    Attributes:
        source: the stream source (its `order_keys` and `position_after`).
        committed: partition → the newest message id committed to the sink.
    """

    def __init__(self, source: StreamSource, committed: dict[str, str] | None = None) -> None:
        self.source = source
        self.committed: dict[str, str] = dict(committed or {})

    def not_committed(self, messages: pa.Table) -> pa.Table:
        """The messages after the committed position of their partition."""
        return self.fresh(messages, None)[0]

    def fresh(
        self, messages: pa.Table, keys: list[pa.Array] | None
    ) -> tuple[pa.Table, list[pa.Array] | None]:
        """The messages after the committed position of their partition, with their order
        keys (`keys`: those of `messages`, computed here when None and the source has them).

        Delivery counts are no shortcut: a broker that lost its consumer state (a group or
        durable consumer recreated) hands out committed messages again as first deliveries.
        """
        if keys is None:
            keys = self.order_keys(messages.column("msg_id"))
        if not self.committed or not messages.num_rows:
            return messages, keys
        if keys is None:
            partitions = messages.column("partition").to_pylist()
            ids = messages.column("msg_id").to_pylist()
            keep = [
                p not in self.committed or self.source.position_after(i, self.committed[p])
                for p, i in zip(partitions, ids, strict=True)
            ]
            return messages.filter(pa.array(keep, pa.bool_())), None
        column = messages.column("partition")
        partitions = pc.unique(column).to_pylist()
        mask: Any = None
        for partition in partitions:
            committed = self.committed.get(partition)
            after = (
                True if committed is None else _after(keys, self.order_keys(pa.array([committed])))
            )
            if len(partitions) > 1:
                after = pc.and_(pc.equal(column, partition), after)
            mask = after if mask is None else pc.or_(mask, after)
        if mask is True or pc.all(mask).as_py():
            return messages, keys
        mask = mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask
        return messages.filter(mask), [k.filter(mask) for k in keys]

    def order_keys(self, ids: pa.ChunkedArray | pa.Array) -> list[pa.Array] | None:
        """The source's integer columns ordering `ids`, or None if it has none."""
        order_keys = getattr(self.source, "order_keys", None)
        if order_keys is None:
            return None
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        keys: list[pa.Array] = order_keys(ids)
        return keys

    def newest(self, messages: pa.Table, keys: list[pa.Array] | None = None) -> dict[str, str]:
        """The newest message id of each partition (a batch made of several fetches, e.g.
        new entries then reclaimed older ones, is not in id order); `keys`: the order keys
        of `messages`, if known."""
        ids = messages.column("msg_id").combine_chunks()
        if keys is None:
            keys = self.order_keys(ids)
        if keys is not None:
            column = messages.column("partition").combine_chunks()
            partitions = pc.unique(column).to_pylist()
            newest = {}
            for partition in partitions:
                rows = pc.equal(column, partition) if len(partitions) > 1 else None
                newest[partition] = _newest(ids, keys, rows)
            return newest
        slow: dict[str, str] = {}
        for partition, msg_id in zip(
            messages.column("partition").to_pylist(), ids.to_pylist(), strict=True
        ):
            if partition not in slow or self.source.position_after(msg_id, slow[partition]):
                slow[partition] = msg_id
        return slow


def first_of_each(messages: pa.Table) -> pa.Table:
    """`messages` (cast to MESSAGE_SCHEMA) without repeats of a (partition, msg_id): a fetch
    after a reconnect may hand out again what the batch already holds."""
    messages = messages.cast(MESSAGE_SCHEMA)
    partition, msg_id = messages.column("partition"), messages.column("msg_id")
    pairs = msg_id
    if len(pc.unique(partition)) > 1:
        pairs = pc.binary_join_element_wise(partition, msg_id, "\x00")
    if len(pc.unique(pairs)) == messages.num_rows:
        return messages
    seen: set[tuple[str, str]] = set()
    keep = []
    for key in zip(partition.to_pylist(), msg_id.to_pylist(), strict=True):
        keep.append(key not in seen)
        seen.add(key)
    return messages.filter(pa.array(keep, pa.bool_()))


def _after(keys: list[pa.Array], position: list[pa.Array] | None) -> Any:
    """Rows whose keys come after the one-row `position` (lexicographic over the columns)."""
    assert position is not None, "a source with order keys orders positions too"
    after: Any = None
    same: Any = None
    for column, value in zip(keys, position, strict=True):
        scalar = value[0]
        greater = pc.greater(column, scalar)
        step = greater if same is None else pc.and_(same, greater)
        after = step if after is None else pc.or_(after, step)
        equal = pc.equal(column, scalar)
        same = equal if same is None else pc.and_(same, equal)
    return after


def _newest(ids: pa.Array, keys: list[pa.Array], rows: Any) -> str:
    """The id with the greatest keys among `rows` (a mask; None: every row)."""
    if rows is not None:
        ids, keys = ids.filter(rows), [k.filter(rows) for k in keys]
    for index in range(len(keys)):
        top = pc.equal(keys[index], pc.max(keys[index]))
        ids, keys = ids.filter(top), [k.filter(top) for k in keys]
    return str(ids[0].as_py())
