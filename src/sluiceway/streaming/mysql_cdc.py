"""The `mysql_cdc` source: row changes of one MariaDB table, read from the binary log.

The server writes every committed row change to its binlog (`binlog_format=ROW`, full row
images, full row metadata for column names); mysql-replication reads it as a replica would.
On the first `open()` (no saved position) the table is read in a consistent-snapshot
transaction whose binlog position the server reports (`binlog_snapshot_file/position`), its
rows are emitted as `r` messages, and the binlog is then streamed from exactly that position.

Each message's payload is a JSON object of the row's columns as text, plus `__op`
(`r`, `i`, `u`, `d`): an update carries the row after the change, a delete the row before
it. `msg_id` is `<binlog file number, 6>:<start of the transaction, 12>:<row in it, 9>`
(docs/streaming/mysql_cdc.md). The server keeps no consumer position: `ack()` saves the
start of the last acknowledged transaction to `state_path`, and `open()` resumes there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pymysql
import pymysql.cursors
from pydantic import Field, field_validator, model_validator
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import GtidEvent, MariadbGtidEvent, QueryEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

# Credentials are resolved exactly as for the `mysql` source; this import between plug-ins
# waits for a `connectors/mysql.py` (as `connectors/postgres.py` serves postgres_cdc).
from sluiceway.connectors.mysql import Connection, connection_of
from sluiceway.core import registry
from sluiceway.errors import ConfigError, SluicewayError, SourceError, TransientError
from sluiceway.streaming.base import MESSAGE_SCHEMA, Fetched, StreamSourceConfig

START_SCRIPT = "bash scripts/services/mariadb.sh"
_UNREACHABLE = {2002, 2003, 2005, 2006, 2013}
_REFUSED = {1044, 1045, 1049, 1698}
_BINLOG_GONE = 1236  # the requested binlog file or position is no longer on the server
_MSG_ID = re.compile(r"^(\d+):(\d+):(\d+)$")
_FILE_NUMBER = re.compile(r"\.(\d+)$")
_OPS = {WriteRowsEvent: "i", UpdateRowsEvent: "u", DeleteRowsEvent: "d"}
_EVENTS = [MariadbGtidEvent, GtidEvent, XidEvent, QueryEvent, *_OPS]


class MySqlCdcSourceConfig(StreamSourceConfig):
    """Row changes of one MariaDB table, read from the binlog (mysql-replication)."""

    change_capture: ClassVar[bool] = True

    type: Literal["mysql_cdc"] = Field(
        "mysql_cdc", description="MariaDB binlog (ROW format) of one table."
    )
    dsn_env: str | None = Field(
        None,
        description="Name of the environment variable holding the DSN "
        "mysql://user:password@host:port/database (instead of host/port/user).",
    )
    host: str = Field("127.0.0.1", description="Server host (without dsn_env).")
    port: int = Field(3306, ge=1, le=65535, description="Server port (without dsn_env).")
    user: str | None = Field(None, description="User name (without dsn_env).")
    password_env: str | None = Field(
        None, description="Name of the environment variable holding the password."
    )
    table: str = Field(description="The table to capture: 'database.table'.")
    server_id: int | None = Field(
        None,
        ge=1,
        le=2**32 - 1,
        description="Replica server id, unique among the server's replicas (default: derived "
        "from the table name).",
    )
    state_path: str | None = Field(
        None,
        description="File keeping the acknowledged binlog position (default "
        "<state folder>/mysql_cdc/<database.table>.json: the project's state_dir, --state-dir, "
        "$SLUICE_HOME, else .sluice in the working directory).",
    )
    snapshot: Literal["initial", "never"] = Field(
        "initial",
        description="initial: without a saved position, first emit every row of the table "
        "(op 'r') as of a binlog position, then the changes after it; never: only changes "
        "from the current binlog position.",
    )
    poll_interval_s: float = Field(
        0.2, gt=0, description="Pause between two reads of an idle binlog within a fetch."
    )
    connect_timeout_s: int = Field(10, ge=1, description="Seconds to wait for a connection.")

    @field_validator("table")
    @classmethod
    def _table_has_two_parts(cls, table: str) -> str:
        parts = table.split(".")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{table!r} is not 'database.table'")
        return table

    @model_validator(mode="after")
    def _complete(self) -> MySqlCdcSourceConfig:
        if self.dsn_env is None and self.user is None:
            raise ValueError("set `dsn_env`, or `user` (with host, port)")
        if self.dsn_env is not None and self.user is not None:
            raise ValueError("set `dsn_env` or `user`, not both: the DSN names the user")
        return self

    @property
    def database_and_table(self) -> tuple[str, str]:
        database, table = self.table.split(".")
        return database, table

    @property
    def replica_id(self) -> int:
        return self.server_id or 1_000_000 + zlib.crc32(self.table.encode()) % 1_000_000_000

    def state_file(self, state_dir: Path | None = None) -> Path:
        """`state_path`, else the file in the run's state folder (`state_dir`)."""
        if self.state_path is not None:
            return Path(self.state_path)
        home = os.environ.get("SLUICE_HOME")
        base = state_dir or (Path(home) if home else Path(".sluice"))
        return base / "mysql_cdc" / f"{self.table}.json"

    def connection(self) -> Connection:
        """Where to connect, credentials read from the environment.

        Raises:
            ConfigError: a named variable is not set, or the DSN is not a mysql:// URL.
        """
        database, _ = self.database_and_table
        return connection_of(_Settings(self, database), os.environ)


@dataclass(frozen=True)
class _Settings:
    """The connection fields of a mysql_cdc config, with the table's database."""

    config: MySqlCdcSourceConfig
    database: str

    @property
    def dsn_env(self) -> str | None:
        return self.config.dsn_env

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def user(self) -> str | None:
        return self.config.user

    @property
    def password_env(self) -> str | None:
        return self.config.password_env


@dataclass(frozen=True, order=True)
class _Binlog:
    """A place in the binlog: a file and a byte position in it."""

    file: str
    pos: int

    @property
    def number(self) -> int:
        match = _FILE_NUMBER.search(self.file)
        return int(match[1]) if match else 0


@dataclass
class _Snapshot:
    connection: Any
    cursor: Any
    columns: list[str]
    at: _Binlog
    taken_at: datetime
    seq: int = 0
    peeked: tuple[Any, ...] | None = None


@dataclass
class _Transaction:
    start: _Binlog
    committed_at: datetime
    seq: int = 0


@dataclass(frozen=True)
class _Handle:
    resume: _Binlog | None
    """Where to stream from once this batch is acknowledged (a transaction's start)."""
    last_id: str | None = None


_Row = tuple[str, bytes, datetime, _Binlog]


class MySqlCdcSource:
    """One binlog reader over one table."""

    def __init__(self, config: MySqlCdcSourceConfig) -> None:
        self.config = config
        self._sql: Any = None
        self._conn: Connection | None = None
        self._reader: Any = None
        self._snapshot: _Snapshot | None = None
        self._start: _Binlog | None = None
        self._catch_up: _Binlog | None = None
        self._caught_up = False
        self._transaction: _Transaction | None = None
        self._pending: list[_Row] = []
        self._outstanding = 0
        self._saved: _Binlog | None = None
        self._key_columns: list[str] = []
        self.merge_keys: list[str] = []
        """The sink's merge keys (set by the stream runner): they must be the primary key."""
        self.state_dir: Path | None = None
        """The run's state folder (set by the stream runner): where the position file goes."""
        self._committed_id: str | None = None

    def resuming(self, committed: Mapping[str, str]) -> None:
        """Told by the runner before `open`: the positions the table holds for this source.
        With some, a missing position file is not a first run: it is elsewhere (another
        state folder) or lost, and a new snapshot would merge over rows deleted meanwhile."""
        self._committed_id = committed.get(self.config.table)

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Connect and find where to start: the saved position, else a new snapshot (or the
        current binlog end with `snapshot: never`); re-entrant.

        Raises:
            TransientError: the server cannot be reached.
            SourceError: the table is missing, or the binlog is not in ROW format.
            ConfigError: the login was refused, or a credential variable is not set.
        """
        self.close()
        self._transaction = None
        self._pending = []
        self._catch_up, self._caught_up = None, False
        self._conn = self.config.connection()
        self._sql = self._connect()
        with self._db_errors("opening"):
            self._check_server_and_table()
            self._key_columns = self._primary_key()
            self._check_merge_keys()
            self._saved, interrupted = self._load_state()
            if self._saved is not None and not interrupted:
                self._start = self._saved
            elif self.config.snapshot == "initial":
                self._begin_snapshot(interrupted)
            else:
                self._start = self._master_position()
                self._save_state(self._start, None)

    def close(self) -> None:
        """Disconnect; never raises. An unacknowledged snapshot is taken again on open."""
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is not None:
            # an unfinished unbuffered read: the cursor must not drain it once closed
            snapshot.cursor.connection = None
        reader, self._reader = self._reader, None
        sql, self._sql = self._sql, None
        for closing in (snapshot.connection if snapshot else None, reader, sql):
            if closing is not None:
                with contextlib.suppress(Exception):
                    closing.close()

    def _connect(self, **options: Any) -> Any:
        conn = self._conn
        assert conn is not None
        try:
            return pymysql.connect(
                host=conn.host,
                port=conn.port,
                user=conn.user,
                password=conn.password,
                connect_timeout=self.config.connect_timeout_s,
                autocommit=True,
                **options,
            )
        except pymysql.MySQLError as exc:
            raise self._error(exc, "connecting") from None

    def _check_server_and_table(self) -> None:
        settings = dict(
            self._query(
                "SHOW VARIABLES WHERE Variable_name IN ('binlog_format', "
                "'log_bin', 'binlog_row_image', 'binlog_row_metadata')"
            )
        )
        wanted = {
            "log_bin": "ON",
            "binlog_format": "ROW",
            "binlog_row_image": "FULL",
            "binlog_row_metadata": "FULL",
        }
        wrong = {k: settings.get(k) for k, v in wanted.items() if settings.get(k) != v}
        if wrong:
            raise SourceError(
                f"mysql_cdc {self.config.table}: the server at {self._where()} has {wrong}; "
                f"set {wanted} in its configuration (needs a restart).",
                context=self._context(),
            )
        database, table = self.config.database_and_table
        if not self._query(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
            (database, table),
        ):
            raise SourceError(
                f"mysql_cdc: table {self.config.table} does not exist at {self._where()}; "
                "check `table`.",
                context=self._context(),
            )

    def _master_position(self) -> _Binlog:
        rows = self._query("SHOW MASTER STATUS")
        return _Binlog(str(rows[0][0]), int(rows[0][1]))

    # -- the initial snapshot ----------------------------------------------------------------

    def _begin_snapshot(self, interrupted: _Binlog | None) -> None:
        """Read the table in a new snapshot. When an earlier snapshot (at `interrupted`) was
        cut short, part of it may be committed downstream: the binlog from there up to the new
        snapshot is emitted first, so rows deleted meanwhile are deleted there too."""
        self._snapshot = self._take_snapshot()
        if interrupted is None:
            self._save_state(self._snapshot.at, None, snapshot_pending=True)
            self._start = self._snapshot.at
        elif (interrupted.number, interrupted.pos) < (
            self._snapshot.at.number,
            self._snapshot.at.pos,
        ):
            self._start, self._catch_up = interrupted, self._snapshot.at
        else:
            self._start = self._snapshot.at

    def _take_snapshot(self) -> _Snapshot:
        connection = self._connect(cursorclass=pymysql.cursors.SSCursor)
        try:
            cursor = connection.cursor()
            cursor.execute("SET time_zone = '+00:00'")
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            cursor.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
            status = dict(cursor.fetchall())
            cursor.execute("SELECT UTC_TIMESTAMP(6)")
            ((taken_at,),) = cursor.fetchall()
            at = _Binlog(
                str(status["Binlog_snapshot_file"]), int(status["Binlog_snapshot_position"])
            )
            cursor.execute(self._snapshot_select())
            columns = [d[0] for d in cursor.description]
            return _Snapshot(connection, cursor, columns, at, taken_at.replace(tzinfo=UTC))
        except BaseException:
            connection.close()
            raise

    def _check_merge_keys(self) -> None:
        """Merge keys other than the primary key would fold distinct rows into one."""
        keys = self._key_columns
        if keys and self.merge_keys and set(keys) != set(self.merge_keys):
            raise ConfigError(
                f"mysql_cdc {self.config.table}: the sink's merge_keys {self.merge_keys} are "
                f"not the table's primary key {keys}: changes are applied by key, so other "
                f"keys would fold distinct rows into one. Set merge_keys: {keys}.",
                context=self._context(),
            )

    def _primary_key(self) -> list[str]:
        database, table = self.config.database_and_table
        return [
            str(name)
            for (name,) in self._query(
                "SELECT column_name FROM information_schema.key_column_usage WHERE "
                "table_schema = %s AND table_name = %s AND constraint_name = 'PRIMARY' "
                "ORDER BY ordinal_position",
                (database, table),
            )
        ]

    def _snapshot_select(self) -> str:
        database, table = self.config.database_and_table
        keys = self._key_columns
        order = " ORDER BY " + ", ".join(_quote(k) for k in keys) if keys else ""
        return f"SELECT * FROM {_quote(database)}.{_quote(table)}{order}"

    def _fetch_snapshot(self, max_messages: int) -> Fetched:
        snapshot = self._snapshot
        assert snapshot is not None
        values = [snapshot.peeked] if snapshot.peeked is not None else []
        values += snapshot.cursor.fetchmany(max_messages - len(values))
        snapshot.peeked = snapshot.cursor.fetchone()
        rows: list[_Row] = []
        for value in values:
            row = dict(zip(snapshot.columns, value, strict=True))
            # One before the snapshot's position: a transaction starting exactly there is
            # streamed, and its changes must sort after every snapshot row.
            msg_id = _msg_id(snapshot.at.number, snapshot.at.pos - 1, snapshot.seq)
            rows.append((msg_id, _payload(row, "r"), snapshot.taken_at, snapshot.at))
            snapshot.seq += 1
        done = snapshot.peeked is None
        if done:
            self._snapshot = None
            with contextlib.suppress(Exception):
                snapshot.connection.close()
        if not rows:
            self._save_state(snapshot.at, None)  # an empty table: nothing to acknowledge
            self._close_reader()
            return _empty()
        self._outstanding += 1
        return self._to_fetched(rows, _Handle(snapshot.at if done else None, rows[-1][0]))

    # -- the binlog --------------------------------------------------------------------------

    def _open_reader(self) -> None:
        conn, start = self._conn, self._start
        assert conn is not None and start is not None
        database, table = self.config.database_and_table
        self._reader = BinLogStreamReader(
            connection_settings={
                "host": conn.host,
                "port": conn.port,
                "user": conn.user,
                "password": conn.password,
                "connect_timeout": self.config.connect_timeout_s,
            },
            server_id=self.config.replica_id,
            # is_mariadb=True would make the library ignore log_file/log_pos (it then starts
            # from a GTID state); the classic file/position dump works on MariaDB as well.
            log_file=start.file,
            log_pos=start.pos,
            resume_stream=True,
            blocking=False,
            only_events=_EVENTS,
            only_schemas=[database],
            only_tables=[table],
        )

    def _read_changes(self, max_messages: int, timeout_s: float) -> list[_Row]:
        if self._reader is None:
            self._open_reader()
        rows, self._pending = self._pending, []
        deadline = time.monotonic() + max(0.0, timeout_s)
        while len(rows) < max_messages and not self._caught_up:
            event = self._reader.fetchone()
            if event is not None:
                rows += self._handle_event(event)
                continue
            if self._catch_up is not None:
                self._caught_up = True  # the binlog's end is past the new snapshot
                break
            wait = deadline - time.monotonic()
            if rows or wait <= 0:
                break
            time.sleep(min(wait, self.config.poll_interval_s))
        rows, self._pending = rows[:max_messages], rows[max_messages:]
        return rows

    def _handle_event(self, event: Any) -> list[_Row]:
        if isinstance(event, MariadbGtidEvent | GtidEvent):
            start = _Binlog(self._reader.log_file, event.packet.log_pos - event.packet.event_size)
            end = self._catch_up
            if end is not None and (start.number, start.pos) >= (end.number, end.pos):
                self._caught_up = True
                return []
            self._transaction = _Transaction(start, datetime.fromtimestamp(event.timestamp, UTC))
        elif isinstance(event, XidEvent) or (
            isinstance(event, QueryEvent) and _query_text(event) != "BEGIN"
        ):
            self._transaction = None  # a COMMIT, or a statement (DDL) that is its own transaction
        elif isinstance(event, tuple(_OPS)):
            return self._rows_of(event)
        return []

    def _rows_of(self, event: Any) -> list[_Row]:
        database, table = self.config.database_and_table
        if (event.schema, event.table) != (database, table):
            return []
        transaction = self._transaction
        if transaction is None:
            raise SourceError(
                f"mysql_cdc {self.config.table}: a row change outside a transaction at "
                f"{self._reader.log_file}:{self._reader.log_pos}",
                context=self._context(),
            )
        op = _OPS[type(event)]
        image = {"i": "values", "d": "values", "u": "after_values"}[op]
        rows = []
        for change in event.rows:
            msg_id = _msg_id(transaction.start.number, transaction.start.pos, transaction.seq)
            payload = _payload(change[image], op, old_key=self._moved_key(op, change))
            rows.append((msg_id, payload, transaction.committed_at, transaction.start))
            transaction.seq += 1
        return rows

    def _moved_key(self, op: str, change: dict[str, Any]) -> dict[str, str | None] | None:
        """For an update that changed the primary key: the old key (the sink deletes it)."""
        if op != "u" or not self._key_columns:
            return None
        before, after = change["before_values"], change["after_values"]
        if all(before.get(k) == after.get(k) for k in self._key_columns):
            return None
        return {k: _text(before.get(k)) for k in self._key_columns}

    # -- fetch, acknowledge, positions -------------------------------------------------------

    def fetch(self, max_messages: int, timeout_s: float) -> Fetched:
        """Up to `max_messages` messages: rows of the initial snapshot until it is read, then
        changes from the binlog, waiting at most `timeout_s` for the first one.

        Raises:
            TransientError: the connection failed (the runner reopens; the binlog is read
                again from the last acknowledged transaction).
            SourceError: not opened, or the saved binlog file is no longer on the server.
        """
        if self._sql is None:
            raise SourceError(f"mysql_cdc source {self.config.table} used before open()")
        if max_messages <= 0:
            return _empty()
        with self._db_errors("fetching"):
            if self._catch_up is not None:
                rows = self._read_changes(max_messages, 0)
                if rows:  # the position stays at the interrupted snapshot until the new one
                    self._outstanding += 1
                    return self._to_fetched(rows, _Handle(None, rows[-1][0]))
                self._end_catch_up()
            if self._snapshot is not None:
                return self._fetch_snapshot(max_messages)
            rows = self._read_changes(max_messages, timeout_s)
        if not rows:
            self._heartbeat()
            return _empty()
        self._outstanding += 1
        return self._to_fetched(rows, _Handle(rows[-1][3], rows[-1][0]))

    def _end_catch_up(self) -> None:
        """The binlog up to the new snapshot is delivered: stream from the snapshot next."""
        self._start, self._catch_up, self._caught_up = self._catch_up, None, False
        self._transaction = None
        self._close_reader()

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.close()

    def _heartbeat(self) -> None:
        """Idle, every delivered change acknowledged, between transactions: save the reader's
        position, so a restart does not read again (or lose, once purged) other tables' binlog."""
        if self._outstanding or self._pending or self._transaction is not None:
            return
        if self._saved is None or self._reader is None:
            return
        here = _Binlog(self._reader.log_file, self._reader.log_pos)
        if (here.number, here.pos) > (self._saved.number, self._saved.pos):
            self._save_state(here, None)

    def ack(self, fetched: Fetched) -> None:
        """Save the start of the transaction of `fetched`'s last row (or, for the last chunk
        of the snapshot, its position) as the place to resume from; the server is not told."""
        handle = fetched.handle
        if not isinstance(handle, _Handle):
            return
        if handle.resume is not None:
            self._save_state(handle.resume, handle.last_id)
        self._outstanding = max(0, self._outstanding - 1)

    def positions(self, fetched: Fetched) -> dict[str, str]:
        """The last msg_id of `fetched` (one partition: the table)."""
        if not fetched.count:
            return {}
        return {self.config.table: fetched.messages.column("msg_id")[-1].as_py()}

    def position_after(self, msg_id: str, committed: str) -> bool:
        """True when `msg_id` comes after `committed`, comparing (file, position, row) as
        numbers.

        Raises:
            SourceError: either value is not a mysql_cdc msg_id.
        """
        return _id_key(msg_id) > _id_key(committed)

    def lag(self) -> int | None:
        """Bytes of binlog between the server's end and the saved position (same file only)."""
        if self._saved is None or self._sql is None:
            return None
        with self._db_errors("reading the binlog position of"):
            end = self._master_position()
        return end.pos - self._saved.pos if end.file == self._saved.file else None

    # -- state -------------------------------------------------------------------------------

    def _load_state(self) -> tuple[_Binlog | None, _Binlog | None]:
        """The saved position, and the same position again if it is that of a snapshot that
        was never wholly acknowledged.

        Raises:
            SourceError: there is no position file, but the table holds commits of this
                pipeline (a snapshot now would keep the rows deleted since then).
        """
        path = self.config.state_file(self.state_dir)
        if not path.exists() and self._committed_id is not None:
            raise SourceError(
                f"mysql_cdc {self.config.table}: the position file {path} is missing, but the "
                f"sink's table holds this pipeline's changes up to {self._committed_id} "
                "(binlog file number:position:row). Run it with the state folder of its "
                "earlier runs (the project's state_dir, --state-dir, $SLUICE_HOME or the "
                "folder it ran in), or set state_path to that file. To load the table anew "
                "instead, delete the sink's table (its folder: its history holds these "
                "positions) and run again: a new snapshot merged over the table would keep "
                "the rows deleted since.",
                context=self._context(),
            )
        if not path.exists():
            return None, None
        try:
            state = json.loads(path.read_text())
            at = _Binlog(str(state["log_file"]), int(state["log_pos"]))
            return at, at if state.get("snapshot_pending") else None
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError(
                f"mysql_cdc {self.config.table}: the position file {path} is unreadable "
                f"({exc}); delete it to read the table again from a new snapshot.",
                context=self._context(),
            ) from exc

    def _save_state(
        self, at: _Binlog, last_id: str | None, *, snapshot_pending: bool = False
    ) -> None:
        path = self.config.state_file(self.state_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        body: dict[str, Any] = {"table": self.config.table, "log_file": at.file, "log_pos": at.pos}
        if last_id is not None:
            body["last_acked_msg_id"] = last_id
        if snapshot_pending:
            body["snapshot_pending"] = True
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(body))
        os.replace(temporary, path)
        self._saved = at

    # -- SQL and errors ----------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._sql.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def _to_fetched(self, rows: list[_Row], handle: _Handle) -> Fetched:
        ids = [r[0] for r in rows]
        table = pa.Table.from_arrays(
            [
                pa.array([self.config.table] * len(rows), pa.string()),
                pa.array(ids, pa.string()),
                pa.array([r[1] for r in rows], pa.binary()),
                pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")).cast(
                    pa.timestamp("ms", tz="UTC"), safe=False
                ),
                pa.nulls(len(rows), pa.int32()),
            ],
            schema=MESSAGE_SCHEMA,
        )
        return Fetched(table, handle)

    def _where(self) -> str:
        conn = self._conn
        return f"{conn.host}:{conn.port}" if conn else f"{self.config.host}:{self.config.port}"

    def _context(self) -> dict[str, Any]:
        return {"source": "mysql_cdc", "table": self.config.table, "server": self._where()}

    def _error(self, exc: Exception, doing: str) -> SluicewayError:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        text = str(exc.args[1] if len(exc.args) > 1 else exc)
        message = self._conn.scrub(text) if self._conn else text
        table = self.config.table
        if code in _UNREACHABLE:
            return TransientError(
                f"mysql_cdc {table}: cannot reach {self._where()} while {doing} ({message}). "
                f"Start the server (a local one: `{START_SCRIPT}` in a sluiceway checkout) or fix host/port.",
                context=self._context(),
            )
        if code in _REFUSED:
            return ConfigError(
                f"mysql_cdc {table}: {self._where()} refused the login ({message}); check the "
                "user and the password variable.",
                context=self._context(),
            )
        if code == _BINLOG_GONE:
            saved = f"{self._saved.file}:{self._saved.pos}" if self._saved else "unknown"
            return SourceError(
                f"mysql_cdc {table}: the server cannot stream from the saved binlog position "
                f"{saved} ({message}): that binlog is gone (purged), or the position file "
                "names a place the server never had. Changes since then cannot be read: read "
                "the table anew — stop the pipeline, delete the sink's table (a snapshot merged "
                "over it would keep rows deleted meanwhile), delete "
                f"{self.config.state_file(self.state_dir)}, run again.",
                context=self._context(),
            )
        return SourceError(
            f"mysql_cdc {table}: the server refused a command while {doing} (error {code}): "
            f"{message}.",
            context=self._context(),
        )

    @contextlib.contextmanager
    def _db_errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except SluicewayError:
            raise
        except pymysql.MySQLError as exc:
            raise self._error(exc, doing) from exc
        except (OSError, EOFError) as exc:
            raise TransientError(
                f"mysql_cdc {self.config.table}: connection to {self._where()} failed while "
                f"{doing}: {exc}. Is the server running? Start it with `{START_SCRIPT}`.",
                context=self._context(),
            ) from exc


def _msg_id(file_number: int, pos: int, seq: int) -> str:
    return f"{file_number:06d}:{pos:012d}:{seq:09d}"


def _id_key(msg_id: str) -> tuple[int, int, int]:
    match = _MSG_ID.match(msg_id)
    if match is None:
        raise SourceError(f"{msg_id!r} is not a mysql_cdc msg_id ('<file>:<position>:<row>')")
    return int(match[1]), int(match[2]), int(match[3])


def _query_text(event: Any) -> str:
    query = event.query
    return (query.decode() if isinstance(query, bytes) else str(query)).strip().upper()


def _payload(row: dict[str, Any], op: str, *, old_key: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {name: _text(value) for name, value in row.items()}
    body["__op"] = op
    if old_key is not None:
        body["__old_key"] = old_key
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _text(value: Any) -> str | None:
    """A column value as the text the contract types: the server's text form where Python
    holds the same value (DECIMAL, DATETIME, DATE, TIME, JSON as its text)."""
    if value is None or isinstance(value, str):
        return value
    converter = _TEXT.get(type(value))
    return converter(value) if converter else str(value)


def _time(value: timedelta) -> str:
    sign = "-" if value < timedelta(0) else ""
    micros = abs(value) // timedelta(microseconds=1)
    seconds, fraction = divmod(micros, 1_000_000)
    hours, rest = divmod(seconds, 3600)
    text = f"{sign}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{text}.{fraction:06d}" if fraction else text


_TEXT: dict[type, Any] = {
    datetime: lambda v: v.isoformat(sep=" "),
    date: lambda v: v.isoformat(),
    timedelta: _time,
    Decimal: lambda v: format(v, "f"),
    bytes: lambda v: v.decode("utf-8", errors="backslashreplace"),
    set: lambda v: ",".join(sorted(v)),
    dict: lambda v: json.dumps(v, ensure_ascii=False),
    list: lambda v: json.dumps(v, ensure_ascii=False),
}


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _empty() -> Fetched:
    return Fetched(MESSAGE_SCHEMA.empty_table(), None)


registry.register("source", "mysql_cdc", MySqlCdcSourceConfig, MySqlCdcSource)
