"""The `postgres_cdc` source: row changes of one PostgreSQL table, by logical replication.

A publication (FOR TABLE) selects the table, a logical replication slot (`pgoutput`) keeps
the server's place. On the first `open()` the slot is created with an exported snapshot; the
table is read in that snapshot (`snapshot: initial`) and its rows are emitted as `r`
messages before the changes streamed from the slot, so the rows and the changes meet
exactly at the slot's consistent point.

Each message's payload is a JSON object of the row's columns as text, plus `__op`
(`r`, `i`, `u`, `d`, `t` for a TRUNCATE) and, when the server did not send unchanged TOASTed
values and no old row holds them, `__unchanged` (their names); an update of the key under
the default identity adds `__old_key` (docs/streaming/postgres_cdc.md). `msg_id` is
`<commit LSN, 16 hex digits>:<change number in the transaction, 8 digits>`. The slot is
acknowledged only up to the end of the last transaction a batch holds entirely.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import pyarrow as pa
from pydantic import Field, field_validator

from sluiceway.connectors import postgres as pgc
from sluiceway.core import registry
from sluiceway.errors import ConfigError, SluicewayError, SourceError, TransientError
from sluiceway.streaming import pgoutput
from sluiceway.streaming.base import MESSAGE_SCHEMA, Fetched, StreamSourceConfig

START_SCRIPT = "bash scripts/services/postgres.sh"
SNAPSHOT_END = 10**18 - 1
"""The seq of the initial snapshot's last row (no snapshot comes near it; seqs compare as
numbers): committed, it says the snapshot landed whole."""
_END_MARKS = frozenset({SNAPSHOT_END, 99_999_999})
"""The end marks a committed snapshot may carry (the second, of an earlier version)."""
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MSG_ID = re.compile(r"^([0-9A-F]{16}):(\d+)$")
_NO_REPLICATION = re.compile(
    r"must be superuser or replication role|permission denied to start WAL sender|"
    r"must be superuser or have the REPLICATION",
    re.IGNORECASE,
)
_AUTH_FAILED = re.compile(
    r"password authentication failed|no pg_hba.conf entry|"
    r"role .* does not exist|database .* does not exist",
    re.IGNORECASE,
)
_SLOT_LOST = re.compile(
    r"invalidated|can no longer get changes|requested WAL segment .* has already been removed",
    re.IGNORECASE,
)


class PostgresCdcSourceConfig(StreamSourceConfig, pgc.PostgresConnection):
    """Row changes of one PostgreSQL table through a logical replication slot (pgoutput)."""

    change_capture: ClassVar[bool] = True

    type: Literal["postgres_cdc"] = Field(
        "postgres_cdc", description="PostgreSQL logical replication (pgoutput) of one table."
    )
    table: str = Field(description="The table to capture: 'schema.table' (or 'table' in public).")
    publication: str | None = Field(
        None, description="Publication naming the table (default sluice_<schema>_<table>)."
    )
    slot: str | None = Field(
        None, description="Logical replication slot (default sluice_<schema>_<table>)."
    )
    create: bool = Field(
        True, description="Create the publication (FOR TABLE) and the slot when missing."
    )
    snapshot: Literal["initial", "never"] = Field(
        "initial",
        description="initial: when the slot is created, first emit every row of the table "
        "(op 'r') as of the slot's consistent point; never: only changes from then on.",
    )
    on_slot_lost: Literal["fail", "resnapshot"] = Field(
        "fail",
        description="When the server invalidated the slot (max_slot_wal_keep_size): fail, or "
        "drop and re-create it and read the table again.",
    )
    status_interval_s: float = Field(
        10.0, gt=0, description="How often the client reports its position while streaming."
    )

    @field_validator("table")
    @classmethod
    def _table_has_one_or_two_parts(cls, table: str) -> str:
        pgc.split_table(table)
        return table

    @field_validator("publication", "slot")
    @classmethod
    def _is_a_plain_name(cls, name: str | None) -> str | None:
        if name is not None and not _NAME.match(name):
            raise ValueError(
                f"{name!r} is not a valid name: lowercase letters, digits and '_', at most 63"
            )
        return name

    @property
    def schema_and_table(self) -> tuple[str, str]:
        parts = pgc.split_table(self.table)
        return ("public", parts[0]) if len(parts) == 1 else (parts[0], parts[1])

    @property
    def partition(self) -> str:
        return ".".join(self.schema_and_table)

    @property
    def publication_name(self) -> str:
        return self.publication or _default_name(*self.schema_and_table)

    @property
    def slot_name(self) -> str:
        return self.slot or _default_name(*self.schema_and_table)


def _default_name(schema: str, table: str) -> str:
    name = re.sub(r"[^a-z0-9_]", "_", f"sluice_{schema}_{table}".lower())
    return name[:63]


@dataclass
class _Snapshot:
    """The table read in the slot's exported snapshot, chunk by chunk."""

    connection: Any
    cursor: Any
    lsn: int
    taken_at: datetime
    seq: int = 0
    ahead: list[Any] = field(default_factory=list)
    """Rows read past the last fetch: the snapshot's last row is known as the last."""


@dataclass
class _Transaction:
    commit_lsn: int
    commit_time: datetime
    seq: int = 0


@dataclass(frozen=True)
class _Handle:
    flush_lsn: int | None
    """The end of the last transaction the batch (with the batches before it) holds whole."""
    snapshot_lsn: int | None = None
    """Set on a chunk of the initial snapshot taken at this LSN."""


class PostgresCdcSource:
    """One consumer of a logical replication slot over one table."""

    def __init__(self, config: PostgresCdcSourceConfig) -> None:
        self.config = config
        self.merge_keys: list[str] = []
        """The sink's merge keys (set by the stream runner): they must be the primary key."""
        self._sql: Any = None
        self._replication: Any = None
        self._stream: Any = None
        self._snapshot: _Snapshot | None = None
        self._has_committed = False
        self._resumed = False  # told the committed position by `resuming`
        self._committed_id: str | None = None
        self._snapshot_reading = False
        self._snapshot_chunks_unacked = 0
        self._snapshot_lsn: int | None = None
        self._decoder = pgoutput.Decoder()
        self._transaction: _Transaction | None = None
        self._last_commit_end = 0
        self._outstanding = 0
        self._reported = 0
        self._carry: _Row | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, create the publication and the slot when missing (`create: true`), and
        start the initial snapshot of a newly created slot; re-entrant.

        A slot that exists is streamed from its confirmed position without a snapshot, except
        when this object snapshotted it and the snapshot's end was never acknowledged: then
        the slot is re-created and the table read again.

        Raises:
            TransientError: the server cannot be reached, or the slot is busy.
            SourceError: the table, publication or slot is missing (`create: false`), the
                publication does not hold the table, or the slot was lost
                (`on_slot_lost: fail`).
            ConfigError: the login was refused, or a credential variable is not set.
        """
        self.close()
        self._decoder = pgoutput.Decoder()
        self._transaction = None
        self._last_commit_end = self._reported = 0
        self._carry = None
        # `_outstanding` survives: batches fetched before a reopen are still to be acked,
        # and no heartbeat may confirm past them meanwhile.
        self._sql = self._connect()
        with self._db_errors("opening"):
            self._check_table()
            self._ensure_publication()
            status = self._slot_status()
            if status is not None and (
                self._snapshot_owed or self._slot_is_lost(status) or self._snapshot_cut_short()
            ):
                self._drop_slot()
                status = None
            elif status is None and self._has_committed and self.config.on_slot_lost == "fail":
                raise self._slot_lost_error(
                    "it does not exist, yet the table holds changes committed from it (was it "
                    "dropped?)"
                )
            self._replication = self._connect(replication=True)
            if status is None:
                self._create_slot()

    def resuming(self, committed: Mapping[str, str]) -> None:
        """Told by the runner before `open`: the positions the table holds for this source.
        With some, a slot that is then missing was lost (dropped, or never kept), and a new
        snapshot must replace the table's rows, not merge into them."""
        self._has_committed = bool(committed)
        self._resumed, self._committed_id = True, committed.get(self.config.partition)

    def _snapshot_cut_short(self) -> bool:
        """The slot's initial snapshot was never wholly committed (the run that made it was
        killed or stopped): nothing was committed since the slot was made, or the committed
        position lies in the snapshot (just before the slot's consistent point, which no
        acknowledgement moved) and is not its last row. The table is then read again (a
        snapshot replacing committed rows starts with a TRUNCATE)."""
        if not self._resumed or self.config.snapshot != "initial" or not self.config.create:
            return False
        if self._committed_id is None:
            return True
        lsn, seq = _id_key(self._committed_id)
        rows = self._query(
            "SELECT pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (self.config.slot_name,),
        )
        confirmed = int(rows[0][0]) if rows and rows[0][0] is not None else None
        return confirmed is not None and lsn == confirmed - 1 and seq not in _END_MARKS

    def close(self) -> None:
        """Disconnect; never raises. An unfinished snapshot stays owed (see `open`)."""
        snapshot, self._snapshot = self._snapshot, None
        connections = [snapshot.connection if snapshot else None, self._replication, self._sql]
        self._stream = self._replication = self._sql = None
        for connection in connections:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()

    def reset(self) -> None:
        """Drop the slot, so that the next `open()` creates it again and, with
        `snapshot: initial`, reads the whole table again (after an interrupted first run).

        Raises:
            TransientError: the server cannot be reached, or the slot is in use.
        """
        self.close()
        self._sql = self._connect()
        try:
            with self._db_errors("dropping the slot of"):
                if self._slot_status() is not None:
                    self._drop_slot()
        finally:
            self.close()
        self._snapshot_reading = False
        self._snapshot_chunks_unacked = 0

    @property
    def _snapshot_owed(self) -> bool:
        """This object started a snapshot whose rows are not all read and acknowledged."""
        return self._snapshot_reading or self._snapshot_chunks_unacked > 0

    def _connect(self, *, replication: bool = False) -> Any:
        dsn, secrets = pgc.resolve_dsn(self.config)
        factory = psycopg2.extras.LogicalReplicationConnection if replication else None
        try:
            connection = psycopg2.connect(dsn, connection_factory=factory, connect_timeout=5)
        except psycopg2.Error as exc:
            raise self._connect_error(pgc.scrub(str(exc), secrets)) from None
        if not replication:
            connection.autocommit = True
        return connection

    def _check_table(self) -> None:
        """The table exists and has a replica identity: publishing a table without one makes
        the server refuse every UPDATE and DELETE of it."""
        found = self._query(
            "SELECT c.relreplident, EXISTS (SELECT 1 FROM pg_index i "
            "WHERE i.indrelid = c.oid AND i.indisprimary) "
            "FROM pg_class c WHERE c.oid = to_regclass(%s)",
            (pgc.qualified(self.config.partition),),
        )
        if not found:
            raise SourceError(
                f"postgres_cdc: table {self.config.partition} does not exist at "
                f"{self.config.where()}; check `table`.",
                context=self._context(),
            )
        identity, has_primary_key = found[0]
        if has_primary_key and self.merge_keys:
            self._check_merge_keys()
        if identity == "n" or (identity == "d" and not has_primary_key):
            raise SourceError(
                f"postgres_cdc: table {self.config.partition} has no replica identity (no "
                "primary key), so once published the server would refuse its UPDATEs and "
                "DELETEs; add a primary key or run ALTER TABLE "
                f"{pgc.qualified(self.config.partition)} REPLICA IDENTITY FULL.",
                context=self._context(),
            )

    def _check_merge_keys(self) -> None:
        """Merge keys other than the primary key would fold distinct rows into one (or
        leave a row behind when its key changes): refused before anything is created."""
        keys = [
            str(name)
            for (name,) in self._query(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = "
                "i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(%s) "
                "AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)",
                (pgc.qualified(self.config.partition),),
            )
        ]
        if set(keys) != set(self.merge_keys):
            raise ConfigError(
                f"postgres_cdc: the sink's merge_keys {self.merge_keys} are not the primary key "
                f"of {self.config.partition} {keys}: changes are applied by key, so other keys "
                f"would fold distinct rows into one. Set merge_keys: {keys}.",
                context=self._context(),
            )

    def _ensure_publication(self) -> None:
        cfg = self.config
        schema, table = cfg.schema_and_table
        name = cfg.publication_name
        if self._query("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)):
            held = self._query(
                "SELECT 1 FROM pg_publication_tables "
                "WHERE pubname = %s AND schemaname = %s AND tablename = %s",
                (name, schema, table),
            )
            if not held:
                raise SourceError(
                    f"postgres_cdc: publication {name} does not publish {cfg.partition}; "
                    f"run ALTER PUBLICATION {name} ADD TABLE {pgc.qualified(cfg.partition)} "
                    "or name another `publication`.",
                    context=self._context(),
                )
            return
        self._require_create(f"publication {name}")
        self._query(
            f"CREATE PUBLICATION {pgc.quote_pg_ident(name)} "
            f"FOR TABLE {pgc.qualified(cfg.partition)}",
            fetch=False,
        )

    def _slot_status(self) -> tuple[str, str | None] | None:
        """(plugin, wal_status) of the slot in this database, or None when it is missing."""
        rows = self._query(
            "SELECT plugin, wal_status FROM pg_replication_slots "
            "WHERE slot_name = %s AND database = current_database()",
            (self.config.slot_name,),
        )
        if not rows:
            return None
        plugin, wal_status = rows[0]
        if plugin != "pgoutput":
            raise SourceError(
                f"postgres_cdc: slot {self.config.slot_name} uses the {plugin} plugin, not "
                "pgoutput; name another `slot` or drop that one.",
                context=self._context(),
            )
        return plugin, wal_status

    def _slot_is_lost(self, status: tuple[str, str | None]) -> bool:
        if status[1] != "lost":
            return False
        if self.config.on_slot_lost == "resnapshot":
            return True
        raise self._slot_lost_error("the server invalidated it (wal_status lost)")

    def _slot_lost_error(self, reason: str) -> SourceError:
        return SourceError(
            f"postgres_cdc: replication slot {self.config.slot_name} is lost: {reason}. The "
            "changes since the last acknowledged position are gone: set `on_slot_lost: "
            "resnapshot` and run again, to re-create the slot and read the table again (a "
            "TRUNCATE first, so the Delta table ends equal to the source); raise "
            "max_slot_wal_keep_size to keep it from happening again.",
            context=self._context(),
        )

    def _drop_slot(self) -> None:
        self._query("SELECT pg_drop_replication_slot(%s)", (self.config.slot_name,), attempts=20)

    def _create_slot(self) -> None:
        """Create the slot with an exported snapshot and, with `snapshot: initial`, import
        that snapshot in a reading transaction before the replication connection moves on."""
        self._require_create(f"replication slot {self.config.slot_name}")
        cursor = self._replication.cursor()
        cursor.execute(
            f"CREATE_REPLICATION_SLOT {pgc.quote_pg_ident(self.config.slot_name)} "
            "LOGICAL pgoutput EXPORT_SNAPSHOT"
        )
        _slot, consistent_point, snapshot_name, _plugin = cursor.fetchone()
        if self.config.snapshot == "initial":
            self._snapshot_reading = True  # until read: a failure re-creates the slot
            self._snapshot_chunks_unacked = 0
            self._snapshot = self._start_snapshot(snapshot_name, _parse_lsn(consistent_point))
            self._snapshot_lsn = self._snapshot.lsn

    def _start_snapshot(self, snapshot_name: str, consistent_point: int) -> _Snapshot:
        connection = self._connect()
        try:
            return self._read_in_snapshot(connection, snapshot_name, consistent_point)
        except BaseException:
            connection.close()
            raise

    def _read_in_snapshot(
        self, connection: Any, snapshot_name: str, consistent_point: int
    ) -> _Snapshot:
        connection.autocommit = False
        connection.set_session(isolation_level="REPEATABLE READ", readonly=True)
        cursor = connection.cursor()
        cursor.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_name,))
        cursor.execute("SELECT now()")
        (taken_at,) = cursor.fetchone()
        columns = self._snapshot_columns(cursor)
        names = ", ".join(pgc.quote_pg_literal(c) for c in [*columns, "__op"])
        values = ", ".join(f"{pgc.quote_pg_ident(c)}::text" for c in columns)
        reader = connection.cursor(name="sluice_cdc_snapshot")
        reader.execute(
            f"SELECT json_object(ARRAY[{names}]::text[], ARRAY[{values}, 'r']::text[])::text "
            f"FROM {pgc.qualified(self.config.partition)}"
        )
        # One before the consistent point: a transaction that commits exactly there is
        # streamed, and its changes must still sort after every snapshot row.
        return _Snapshot(connection, reader, consistent_point - 1, taken_at)

    def _snapshot_columns(self, cursor: Any) -> list[str]:
        cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
            "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            (pgc.qualified(self.config.partition),),
        )
        return [name for (name,) in cursor.fetchall()]

    def _require_create(self, what: str) -> None:
        if not self.config.create:
            raise SourceError(
                f"postgres_cdc: {what} does not exist at {self.config.where()} and `create` "
                "is false; create it or set `create: true`.",
                context=self._context(),
            )

    def _start_streaming(self) -> None:
        cursor = self._replication.cursor()
        cursor.start_replication(
            slot_name=self.config.slot_name,
            decode=False,
            options={"proto_version": "1", "publication_names": self.config.publication_name},
            status_interval=self.config.status_interval_s,
        )
        self._stream = cursor

    # -- fetch -------------------------------------------------------------------------------

    def fetch(self, max_messages: int, timeout_s: float) -> Fetched:
        """Up to `max_messages` messages: rows of the initial snapshot until it is read, then
        changes from the slot, waiting at most `timeout_s` for the first one.

        Raises:
            TransientError: the connection failed; the runner reopens, and the slot
                redelivers every change after its confirmed position.
            SourceError: not opened, or the slot is lost.
        """
        if self._sql is None:
            raise SourceError(f"postgres_cdc source {self.config.partition} used before open()")
        if max_messages <= 0:
            return _empty()
        with self._db_errors("fetching"):
            if self._snapshot is not None:
                return self._fetch_snapshot(max_messages)
            if self._stream is None:
                self._start_streaming()
            rows = self._read_changes(max_messages, timeout_s)
            if not rows:
                self._heartbeat()
                return _empty()
        self._outstanding += 1
        return _to_fetched(self.config.partition, rows, _Handle(self._last_commit_end or None))

    def _fetch_snapshot(self, max_messages: int) -> Fetched:
        snapshot = self._snapshot
        assert snapshot is not None
        rows = []
        if snapshot.seq == 0 and self._has_committed:
            # A snapshot replacing committed rows starts with a TRUNCATE: the rows deleted
            # while the slot was gone must not stay in the table.
            rows.append((f"{snapshot.lsn:016X}:{0:08d}", b'{"__op":"t"}', snapshot.taken_at))
            snapshot.seq = 1
            max_messages -= 1
        last = False
        fetched: list[Any] = []
        if max_messages > 0:
            # One row more than asked: when none is left over, these are the last rows, and
            # the last one is numbered SNAPSHOT_END so that a restart knows it committed.
            fetched = snapshot.ahead + snapshot.cursor.fetchmany(
                max_messages + 1 - len(snapshot.ahead)
            )
            fetched, snapshot.ahead = fetched[:max_messages], fetched[max_messages:]
            last = not snapshot.ahead
        payloads = [row[0].encode() for row in fetched]
        for index, payload in enumerate(payloads):
            seq = SNAPSHOT_END if last and index == len(payloads) - 1 else snapshot.seq
            rows.append((f"{snapshot.lsn:016X}:{seq:08d}", payload, snapshot.taken_at))
            snapshot.seq += 1
        if last:
            self._snapshot = None
            self._snapshot_reading = False
            with contextlib.suppress(Exception):
                snapshot.connection.close()
        if not rows:
            return _empty()
        self._outstanding += 1
        self._snapshot_chunks_unacked += 1
        return _to_fetched(self.config.partition, rows, _Handle(None, snapshot_lsn=snapshot.lsn))

    def _read_changes(self, max_messages: int, timeout_s: float) -> list[_Row]:
        rows: list[_Row] = [self._carry] if self._carry is not None else []
        self._carry = None
        deadline = time.monotonic() + max(0.0, timeout_s)
        while len(rows) < max_messages:
            message = self._stream.read_message()
            if message is not None:
                row = self._handle_message(message.payload)
                if row is not None:
                    rows.append(row)
                continue
            wait = deadline - time.monotonic()
            if rows or wait <= 0:
                break
            select.select([self._stream], [], [], min(wait, self.config.status_interval_s))
        if len(rows) == max_messages:
            self._read_ahead()
        return rows

    def _read_ahead(self) -> None:
        """Read what already arrived up to the next change (kept for the next fetch), so a
        batch that ends with a transaction's last change also holds its COMMIT."""
        while self._carry is None:
            message = self._stream.read_message()
            if message is None:
                return
            self._carry = self._handle_message(message.payload)

    def _handle_message(self, data: bytes) -> _Row | None:
        try:
            message = self._decoder.decode(data)
        except (ValueError, IndexError, UnicodeDecodeError) as exc:
            raise SourceError(
                f"postgres_cdc: cannot decode a pgoutput message of slot "
                f"{self.config.slot_name}: {exc}",
                context=self._context(),
            ) from exc
        if isinstance(message, pgoutput.Begin):
            self._transaction = _Transaction(message.final_lsn, message.commit_time)
        elif isinstance(message, pgoutput.Commit):
            self._transaction = None
            self._last_commit_end = max(self._last_commit_end, message.end_lsn)
        elif isinstance(message, pgoutput.Change | pgoutput.Truncate):
            return self._row(message)
        return None

    def _row(self, message: pgoutput.Change | pgoutput.Truncate) -> _Row | None:
        transaction = self._transaction
        if transaction is None:
            raise SourceError("postgres_cdc: pgoutput sent a change outside a transaction")
        if isinstance(message, pgoutput.Truncate):
            mine = [self._decoder.relations.get(oid) for oid in message.relation_oids]
            if not any(r is not None and r.qualified == self.config.partition for r in mine):
                return None
            payload: dict[str, Any] = {"__op": "t"}
        else:
            relation = self._decoder.relations[message.relation_oid]
            if relation.qualified != self.config.partition:
                return None
            payload = pgoutput.change_payload(message, relation, self.merge_keys)
        msg_id = f"{transaction.commit_lsn:016X}:{transaction.seq:08d}"
        transaction.seq += 1
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return msg_id, body, transaction.commit_time

    def _heartbeat(self) -> None:
        """Idle and every delivered change acknowledged: confirm the server's position, so
        the slot does not hold WAL written by other tables' transactions."""
        if self._outstanding or self._carry is not None or self._transaction is not None:
            return
        position = max(self._last_commit_end, self._stream.wal_end or 0)
        if position > self._reported:
            self._stream.send_feedback(write_lsn=position, flush_lsn=position, force=True)
            self._reported = position

    # -- acknowledge and positions -----------------------------------------------------------

    def ack(self, fetched: Fetched) -> None:
        """Confirm the slot up to the end of the last transaction `fetched` (with the batches
        before it) holds whole; a transaction split over batches is confirmed with its last.

        Raises:
            TransientError: the connection failed (the changes come back after a reopen and
                the runner recognises them).
        """
        handle = fetched.handle
        if not isinstance(handle, _Handle):
            return
        if handle.flush_lsn is not None:
            with self._db_errors("acknowledging"):
                if self._stream is None:
                    self._start_streaming()
                self._stream.send_feedback(
                    write_lsn=handle.flush_lsn, flush_lsn=handle.flush_lsn, force=True
                )
            self._reported = max(self._reported, handle.flush_lsn)
        if handle.snapshot_lsn is not None and handle.snapshot_lsn == self._snapshot_lsn:
            self._snapshot_chunks_unacked = max(0, self._snapshot_chunks_unacked - 1)
        self._outstanding = max(0, self._outstanding - 1)
        if fetched.count:  # acknowledged after its commit: the newest committed position
            self._committed_id = fetched.messages.column("msg_id")[-1].as_py()

    def positions(self, fetched: Fetched) -> dict[str, str]:
        """The last msg_id of `fetched` (one partition: the table)."""
        if not fetched.count:
            return {}
        return {self.config.partition: fetched.messages.column("msg_id")[-1].as_py()}

    def position_after(self, msg_id: str, committed: str) -> bool:
        """True when `msg_id` comes after `committed`, comparing (LSN, seq) as numbers.

        Raises:
            SourceError: either value is not a postgres_cdc msg_id.
        """
        return _id_key(msg_id) > _id_key(committed)

    def lag(self) -> int | None:
        """Bytes of WAL between the server's current position and the slot's confirmed one."""
        with self._db_errors("reading the slot lag of"):
            rows = self._query(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (self.config.slot_name,),
            )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    # -- SQL and errors ----------------------------------------------------------------------

    def _query(
        self, sql: str, params: tuple[Any, ...] = (), *, fetch: bool = True, attempts: int = 1
    ) -> list[tuple[Any, ...]]:
        """Run `sql` on the catalog connection; retry 'object in use' (a slot whose previous
        reader is still exiting) up to `attempts` times."""
        if self._sql is None:
            raise SourceError(f"postgres_cdc source {self.config.partition} used before open()")
        for attempt in range(attempts):
            try:
                with self._sql.cursor() as cursor:
                    cursor.execute(sql, params)
                    return cursor.fetchall() if fetch else []
            except psycopg2.errors.ObjectInUse:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.25)
        return []

    def _context(self) -> dict[str, Any]:
        return {
            "source": "postgres_cdc",
            "table": self.config.partition,
            "slot": self.config.slot_name,
        }

    def _connect_error(self, message: str) -> SluicewayError:
        where = self.config.where()
        if _NO_REPLICATION.search(message):
            return ConfigError(
                f"postgres_cdc {self.config.partition}: the user may not stream changes from "
                f"{where}: {message}. Grant it the REPLICATION attribute (ALTER ROLE <user> "
                "WITH REPLICATION) and SELECT on the table, or connect as a user who has them.",
                context=self._context(),
            )
        if _AUTH_FAILED.search(message):
            return ConfigError(
                f"postgres_cdc {self.config.partition}: {where} refused the connection: "
                f"{message}. Check the user, the database and the password variable.",
                context=self._context(),
            )
        return TransientError(
            f"postgres_cdc {self.config.partition}: cannot reach {where}: {message}. Start "
            f"the server (a local one: `{START_SCRIPT}` in a sluiceway checkout) or fix host/port.",
            context=self._context(),
        )

    @contextlib.contextmanager
    def _db_errors(self, doing: str) -> Iterator[None]:
        """Turn psycopg2 errors into sluiceway's: retry connection trouble, fail the rest."""
        try:
            yield
        except SluicewayError:
            raise
        except psycopg2.Error as exc:
            message = pgc.driver_message(exc, self.config)
            if _SLOT_LOST.search(message):
                raise self._slot_lost_error(message) from exc
            if isinstance(exc, psycopg2.errors.ObjectInUse):
                raise TransientError(
                    f"postgres_cdc: slot {self.config.slot_name} is in use while {doing} "
                    f"{self.config.partition}: {message}. Another reader holds it (or is "
                    "still exiting); one runner per slot.",
                    context=self._context(),
                ) from exc
            if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
                raise TransientError(
                    f"postgres_cdc: connection to {self.config.where()} failed while {doing} "
                    f"{self.config.partition}: {message}. Is the server running? Start it "
                    f"with `{START_SCRIPT}`.",
                    context=self._context(),
                ) from exc
            raise SourceError(
                f"postgres_cdc: the server refused a command while {doing} "
                f"{self.config.partition}: {message}.",
                context=self._context(),
            ) from exc


_Row = tuple[str, bytes, datetime]


def _to_fetched(partition: str, rows: list[_Row], handle: _Handle) -> Fetched:
    ids, payloads, times = zip(*rows, strict=True)
    table = pa.Table.from_arrays(
        [
            pa.array([partition] * len(rows), pa.string()),
            pa.array(ids, pa.string()),
            pa.array(payloads, pa.binary()),
            pa.array(times, pa.timestamp("us", tz="UTC")).cast(
                pa.timestamp("ms", tz="UTC"), safe=False
            ),
            pa.nulls(len(rows), pa.int32()),
        ],
        schema=MESSAGE_SCHEMA,
    )
    return Fetched(table, handle)


def _empty() -> Fetched:
    return Fetched(MESSAGE_SCHEMA.empty_table(), None)


def _parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def _id_key(msg_id: str) -> tuple[int, int]:
    match = _MSG_ID.match(msg_id)
    if match is None:
        raise SourceError(f"{msg_id!r} is not a postgres_cdc msg_id ('<16 hex LSN>:<seq>')")
    return int(match[1], 16), int(match[2])


registry.register("source", "postgres_cdc", PostgresCdcSourceConfig, PostgresCdcSource)
