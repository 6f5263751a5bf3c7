"""A decoder of PostgreSQL's `pgoutput` logical replication messages (protocol version 1).

Only what a change-data-capture source needs: transaction boundaries (Begin, Commit),
table descriptions (Relation), row changes (Insert, Update, Delete) and Truncate. Values
arrive in their text form (the type's output function); the decoder keeps them as `str`.
Origin, Type and logical Message messages are recognised and skipped (`None`).
`change_payload` turns a change into the JSON object the `postgres_cdc` source emits.

Format: https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
IDENTITY_FLAG = 1
"""Relation column flag: the column is part of the replica identity (every column under
REPLICA IDENTITY FULL)."""

TupleKind = Literal["key", "old", "new"]


class Unchanged:
    """An unchanged TOASTed value the server did not send (`u` in the tuple data)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = Unchanged()
Value = str | None | Unchanged


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    """The LSN of the transaction's commit record."""
    commit_time: datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    """The end of the commit record: acknowledging it skips this transaction on restart."""
    commit_time: datetime


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    replica_identity: str
    columns: list[str]
    flags: list[int]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def identity_columns(self) -> list[str]:
        return [c for c, f in zip(self.columns, self.flags, strict=True) if f & IDENTITY_FLAG]


@dataclass(frozen=True)
class Change:
    op: Literal["i", "u", "d"]
    relation_oid: int
    new: list[Value] | None = None
    old: list[Value] | None = None
    old_kind: TupleKind | None = None
    """'key' (the replica identity columns only), 'old' (the whole row: REPLICA IDENTITY
    FULL), or None when the server sent no old tuple."""


@dataclass(frozen=True)
class Truncate:
    relation_oids: list[int] = field(default_factory=list)


Message = Begin | Commit | Relation | Change | Truncate


class Decoder:
    """Decodes one replication session's messages; remembers the Relation messages, which
    the server sends once per session before the first change of each table (and again when
    the table's columns change)."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}

    def decode(self, data: bytes) -> Message | None:
        """The message in `data`, or None for the kinds a CDC source ignores.

        Raises:
            ValueError: an unknown message kind, or a change of a relation never described.
        """
        kind = data[:1]
        reader = _DECODERS.get(kind)
        if reader is None:
            if kind in _IGNORED:
                return None
            raise ValueError(f"unknown pgoutput message kind {kind!r}")
        message = reader(self, data)
        if isinstance(message, Relation):
            self.relations[message.oid] = message
        elif isinstance(message, Change) and message.relation_oid not in self.relations:
            raise ValueError(
                f"pgoutput change of relation {message.relation_oid} before its Relation"
            )
        return message

    def _begin(self, data: bytes) -> Begin:
        final_lsn, micros, xid = struct.unpack_from("!QqI", data, 1)
        return Begin(final_lsn, _timestamp(micros), xid)

    def _commit(self, data: bytes) -> Commit:
        _flags, commit_lsn, end_lsn, micros = struct.unpack_from("!bQQq", data, 1)
        return Commit(commit_lsn, end_lsn, _timestamp(micros))

    def _relation(self, data: bytes) -> Relation:
        (oid,) = struct.unpack_from("!I", data, 1)
        schema, offset = _cstring(data, 5)
        name, offset = _cstring(data, offset)
        identity = chr(data[offset])
        (count,) = struct.unpack_from("!h", data, offset + 1)
        offset += 3
        columns, flags = [], []
        for _ in range(count):
            flags.append(data[offset])
            column, offset = _cstring(data, offset + 1)
            columns.append(column)
            offset += 8  # type oid, type modifier
        return Relation(oid, schema or "pg_catalog", name, identity, columns, flags)

    def _insert(self, data: bytes) -> Change:
        (oid,) = struct.unpack_from("!I", data, 1)
        new, _ = _tuple(data, 6)  # 'N'
        return Change("i", oid, new=new)

    def _update(self, data: bytes) -> Change:
        (oid,) = struct.unpack_from("!I", data, 1)
        old, old_kind, offset = self._old_tuple(data, 5)
        new, _ = _tuple(data, offset + 1)  # 'N'
        return Change("u", oid, new=new, old=old, old_kind=old_kind)

    def _delete(self, data: bytes) -> Change:
        (oid,) = struct.unpack_from("!I", data, 1)
        old, old_kind, _ = self._old_tuple(data, 5)
        return Change("d", oid, old=old, old_kind=old_kind)

    def _old_tuple(
        self, data: bytes, offset: int
    ) -> tuple[list[Value] | None, TupleKind | None, int]:
        marker = data[offset : offset + 1]
        if marker not in _OLD_KINDS:
            return None, None, offset
        old, offset = _tuple(data, offset + 1)
        return old, _OLD_KINDS[marker], offset

    def _truncate(self, data: bytes) -> Truncate:
        (count,) = struct.unpack_from("!i", data, 1)
        oids = struct.unpack_from(f"!{count}I", data, 6)
        return Truncate(list(oids))


_DECODERS: dict[bytes, Callable[[Decoder, bytes], Message]] = {
    b"B": Decoder._begin,
    b"C": Decoder._commit,
    b"R": Decoder._relation,
    b"I": Decoder._insert,
    b"U": Decoder._update,
    b"D": Decoder._delete,
    b"T": Decoder._truncate,
}
_IGNORED = {b"O", b"Y", b"M"}  # origin, type, logical decoding message
_OLD_KINDS: dict[bytes, TupleKind] = {b"K": "key", b"O": "old"}


def _tuple(data: bytes, offset: int) -> tuple[list[Value], int]:
    (count,) = struct.unpack_from("!h", data, offset)
    offset += 2
    values: list[Value] = []
    for _ in range(count):
        kind = data[offset : offset + 1]
        offset += 1
        if kind == b"t":
            (length,) = struct.unpack_from("!i", data, offset)
            offset += 4
            values.append(data[offset : offset + length].decode())
            offset += length
        elif kind == b"n":
            values.append(None)
        elif kind == b"u":
            values.append(UNCHANGED)
        else:
            raise ValueError(f"unknown pgoutput tuple value kind {kind!r}")
    return values, offset


def _cstring(data: bytes, offset: int) -> tuple[str, int]:
    end = data.index(b"\0", offset)
    return data[offset:end].decode(), end + 1


def _timestamp(micros: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=micros)


def change_payload(
    change: Change, relation: Relation, key_columns: Sequence[str] = ()
) -> dict[str, Any]:
    """The JSON object of one change: the row's columns as text, `__op`, and `__unchanged`
    (unchanged TOASTed columns no old row holds; left out of the object).

    Inserts and updates carry the new row, unchanged TOASTed values taken from the old row
    when the server sent it whole (REPLICA IDENTITY FULL). Deletes carry what the replica
    identity gives: the key columns, or the whole old row. An update that moved the row to
    another key carries the old key as `__old_key`: from the key the server sent (default
    identity), or, under REPLICA IDENTITY FULL, from the old row's `key_columns` (the merge
    keys) when they differ from the new row's.
    """
    columns = relation.columns
    if change.op == "d":
        values = change.old or []
        keep = set(relation.identity_columns) if change.old_kind == "key" else set(columns)
        row = [(c, v) for c, v in zip(columns, values, strict=True) if c in keep]
    else:
        old = dict(zip(columns, change.old or [], strict=True)) if change.old_kind == "old" else {}
        row = [
            (c, old.get(c, v) if v is UNCHANGED else v)
            for c, v in zip(columns, change.new or [], strict=True)
        ]
    payload: dict[str, Any] = {c: v for c, v in row if v is not UNCHANGED}
    payload["__op"] = change.op
    if change.op == "u" and change.old_kind == "key":
        key = zip(columns, change.old or [], strict=True)
        payload["__old_key"] = {c: v for c, v in key if c in relation.identity_columns}
    elif change.op == "u" and change.old_kind == "old" and key_columns:
        was = dict(zip(columns, change.old or [], strict=True))
        if any(was.get(k) != payload.get(k) for k in key_columns):
            payload["__old_key"] = {k: was.get(k) for k in key_columns}
    unchanged = [c for c, v in row if v is UNCHANGED]
    if unchanged:
        payload["__unchanged"] = unchanged
    return payload
