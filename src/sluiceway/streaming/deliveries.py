"""Deliveries counted by the runner for brokers that do not count them (Kafka).

A batch that fails for good (a gate, a bad row the contract cannot route) leaves its
messages unacknowledged, and the next run reads them again: Redis and NATS count those
deliveries, so `max_deliveries` ends the loop by dead-lettering them. A Kafka consumer only
has offsets. The ledger remembers, per partition, the offsets of the batch that failed and
how many times; the next read of those offsets carries that count as its deliveries, so the
same `max_deliveries` rule applies. It lives in the state folder
(`stream_state/<pipeline>/deliveries-<source>-<hash of group and topics>.json`) because a
failed batch ends the run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

DELIVERIES = "deliveries"


class DeliveryLedger:
    """Failed deliveries of one source's messages, per partition: the first and last
    order key of the batch that failed and the number of times it did."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, int]] = {}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text())
            except (OSError, ValueError):
                loaded = {}
            self.entries = {
                str(p): {k: int(v) for k, v in e.items()}
                for p, e in (loaded.items() if isinstance(loaded, dict) else [])
                if isinstance(e, dict) and {"first", "last", "attempts"} <= set(e)
            }

    @staticmethod
    def applies(messages: pa.Table, keys: list[pa.Array] | None) -> bool:
        """The broker gave no delivery count, and ids order as one integer."""
        return (
            keys is not None
            and len(keys) == 1
            and messages.num_rows > 0
            and messages.column(DELIVERIES).null_count == messages.num_rows
        )

    def counted(self, messages: pa.Table, keys: list[pa.Array] | None) -> pa.Table:
        """`messages` with the deliveries of those a failed batch held: attempts + 1."""
        if not self.entries or not self.applies(messages, keys):
            return messages
        assert keys is not None
        partitions = messages.column("partition")
        counts = pa.nulls(messages.num_rows, pa.int32())
        for partition, entry in self.entries.items():
            inside = pc.and_(
                pc.equal(partitions, partition),
                pc.and_(
                    pc.greater_equal(keys[0], pa.scalar(entry["first"], keys[0].type)),
                    pc.less_equal(keys[0], pa.scalar(entry["last"], keys[0].type)),
                ),
            )
            counts = pc.if_else(inside, pa.scalar(entry["attempts"] + 1, pa.int32()), counts)
        index = messages.schema.get_field_index(DELIVERIES)
        return messages.set_column(index, DELIVERIES, counts)

    def failed(self, messages: pa.Table, keys: list[pa.Array] | None) -> None:
        """Count one more failed delivery of the batch `messages`."""
        # Counted here when the broker gave none, or when this ledger set the counts (a
        # batch it counted failed again).
        counted_here = bool(self.entries) and keys is not None and len(keys) == 1
        if not self.applies(messages, keys) and not counted_here:
            return
        assert keys is not None
        grouped = pa.table({"p": messages.column("partition"), "k": keys[0]}).group_by("p")
        for row in grouped.aggregate([("k", "min"), ("k", "max")]).to_pylist():
            first, last = int(row["k_min"]), int(row["k_max"])
            entry = self.entries.get(row["p"])
            attempts = entry["attempts"] + 1 if entry and entry["first"] == first else 1
            self.entries[row["p"]] = {
                "first": first,
                "last": max(last, entry["last"]) if entry and attempts > 1 else last,
                "attempts": attempts,
            }
        self._save()

    def committed(self, messages: pa.Table) -> None:
        """The partitions of a committed batch moved past what failed before."""
        if not self.entries:
            return
        done = set(messages.column("partition").unique().to_pylist())
        if done & set(self.entries):
            self.entries = {p: e for p, e in self.entries.items() if p not in done}
            self._save()

    def prune(self, committed: dict[str, Any]) -> None:
        """Forget the partitions whose committed position is past what failed there (the
        batch was dead-lettered by another consumer, or the offsets were reset)."""
        stale = [
            p for p, entry in self.entries.items() if _as_int(committed.get(p)) >= entry["last"]
        ]
        if stale:
            self.entries = {p: e for p, e in self.entries.items() if p not in stale}
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        data: dict[str, Any] = self.entries
        temporary.write_text(json.dumps(data, sort_keys=True))
        os.replace(temporary, self.path)


def _as_int(value: Any) -> int:
    """An offset as a number; -1 (before every offset) when there is none."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
