"""The keys a windowed stream dedup has seen: in memory per process, on disk per batch.

One `KeyState` per (state folder, pipeline, dedup keys), kept in the folder
`<state_dir>/stream_state/<pipeline>/dedup-<keys hash>/`:

- `seg-<sequence>.parquet`: the new keys of stream batch <sequence>, with the time of their
  first row. Written (and fsync'd) *before* the batch's Delta commit, so every committed
  batch has its keys on disk; a cost of O(batch), not O(window).
- `base-<sequence>.parquet`: every key of the window as of batch <sequence>, written every
  `COMPACT_EVERY` batches on a writer thread once that batch is committed; it then replaces
  the older base and segments.

The Delta commit decides which files count. A stream run loads the state at its first
batch (and holds the folder's lock until it ends), knowing the last committed sequence:
files of later sequences belong to batches that never committed and are deleted (their
batch is redone under the same sequence), so the state holds exactly the keys of the
committed batches, whatever point a crash hit. A table that was reset
(its sequences start again at 1) takes its state with it.

The table in memory has the key columns and `__sw_seen_at` (naive UTC timestamp of the key's
first sighting); it only changes through `commit`, called after the batch commits.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from sluiceway.core.durations import parse_duration
from sluiceway.errors import StepError

SEEN_AT = "__sw_seen_at"
COMPACT_EVERY = 20
"""Batches between two base files: a restart reads at most this many segments."""

_FILE = re.compile(r"^(base|seg)-(\d+)\.parquet$")
_LOADED: dict[tuple[str, str, str], KeyState] = {}
_LOCK = threading.Lock()
_PENDING: list[Future[None]] = []
_WRITER: ThreadPoolExecutor | None = None


def parse_window(text: str) -> timedelta:
    """A dedup window such as '5m' or '1h30m' (see `core.durations`)."""
    return parse_duration(text, what="window")


def keys_hash(keys: list[str]) -> str:
    """A short stable name for a list of key columns (names the state folder)."""
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:12]


class KeyState:
    """The seen keys of one dedup step of one pipeline; `table` is None when none were seen.

    Args:
        folder: where its files live.
        legacy: the single state file of earlier versions, read when the folder has no base.
    """

    def __init__(self, folder: Path, legacy: Path | None = None) -> None:
        self.folder = folder
        self.legacy = legacy
        self.table: pa.Table | None = None
        self.loaded = False
        self.is_missing = False  # set by `load`: committed batches, but no file of theirs
        self._base: int | None = None  # the sequence of the newest base written or read
        self._lock: TextIO | None = None

    def load(self, committed: int) -> None:
        """Read the state from its files, once per stream run, and hold its folder's lock
        until `release` (a second process would delete this one's segment in flight).

        Args:
            committed: the last committed batch sequence; files of later ones are deleted.

        Raises:
            StepError: another process holds the state, or a file cannot be read or deleted.
        """
        if self.loaded:
            return
        self._take_lock()
        files = self._files()
        stale = [path for _, seq, path in files if seq > committed]
        files = [f for f in files if f[1] <= committed]
        bases = [seq for kind, seq, _ in files if kind == "base"]
        self._base = max(bases) if bases else None
        paths = [
            path
            for kind, seq, path in files
            if (kind == "base" and seq == self._base)
            or (kind == "seg" and (self._base is None or seq > self._base))
        ]
        if self._base is None and self.legacy is not None and self.legacy.is_file():
            paths.insert(0, self.legacy)
        # Batches were committed, yet no file of theirs is here: the state is elsewhere (a
        # run from another folder or state_dir) or was deleted.
        self.is_missing = committed > 0 and not files and not paths
        try:
            for path in stale:
                path.unlink(missing_ok=True)
            parts = [pq.read_table(path) for path in paths]
        except (OSError, pa.ArrowException) as exc:
            raise StepError(
                f"the dedup state in {self.folder} cannot be read ({exc}); fix the file's "
                "permissions, or delete the folder to start the window empty (duplicates of "
                "keys seen within the window may then pass once)"
            ) from exc
        parts = [p for p in parts if p.num_rows]
        self.table = pa.concat_tables(parts, promote_options="permissive") if parts else None
        self.loaded = True

    def _take_lock(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / ".lock", "a")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise StepError(
                f"another process holds the dedup state in {self.folder}: one stream process "
                "per pipeline (stop the other one, or give this one its own SLUICE_HOME and "
                "sink)"
            ) from exc
        self._lock = handle

    def release(self) -> None:
        """Let another process take the state (the end of a stream run)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        self.loaded = False

    def record(self, sequence: int, keys: pa.Table) -> None:
        """Write the new keys of batch `sequence` before it commits.

        Raises:
            StepError: the file cannot be written: the batch must not commit without it.
        """
        try:
            _write_atomically(keys, self.folder / f"seg-{sequence}.parquet")
        except OSError as exc:
            raise StepError(
                f"the dedup state of batch {sequence} cannot be written to {self.folder} "
                f"({exc}); the batch is not committed. Free disk space or fix the folder's "
                "permissions, then run again: the batch is read again"
            ) from exc

    def commit(
        self,
        sequence: int,
        table: pa.Table,
        on_error: Callable[[OSError], None] | None = None,
    ) -> None:
        """Make `table` the state after batch `sequence` committed: in memory now; every
        `COMPACT_EVERY` batches also as a base file, on the writer thread. `flush` waits
        for it.

        `on_error` gets the OSError of a base that could not be written: nothing is lost
        (the segments stay until a base is written).
        """
        self.table = table
        if sequence - (self._base or 0) >= COMPACT_EVERY:
            self._base = sequence
            with _LOCK:
                _PENDING.append(_writer().submit(self._write_base, self._base, table, on_error))

    def _write_base(
        self, sequence: int, table: pa.Table, on_error: Callable[[OSError], None] | None
    ) -> None:
        try:
            _write_atomically(table, self.folder / f"base-{sequence}.parquet")
            for kind, seq, path in self._files():
                if seq < sequence or (kind == "seg" and seq == sequence):
                    path.unlink(missing_ok=True)
            if self.legacy is not None:
                self.legacy.unlink(missing_ok=True)
        except OSError as exc:
            if on_error is not None:
                on_error(exc)

    def _files(self) -> list[tuple[str, int, Path]]:
        """(kind, sequence, path) of the state's files."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.iterdir():
            match = _FILE.match(path.name)
            if match and path.is_file():
                found.append((match[1], int(match[2]), path))
        return found


def _write_atomically(table: pa.Table, path: Path) -> None:
    """Write `table` to `path` so that a reader sees the whole file or none (temporary
    file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def flush() -> None:
    """Wait until every base being written is on disk (the stream runner calls it at the
    end of a run)."""
    with _LOCK:
        pending = list(_PENDING)
        _PENDING.clear()
    wait(pending)


def _writer() -> ThreadPoolExecutor:
    global _WRITER
    if _WRITER is None:
        _WRITER = ThreadPoolExecutor(1, thread_name_prefix="sluice-state")
    return _WRITER


def key_state(state_dir: Path, pipeline: str, keys: list[str]) -> KeyState:
    """The state of `keys` for `pipeline` in this process (`load` reads its files)."""
    digest = keys_hash(keys)
    ident = (str(Path(state_dir).resolve()), pipeline, digest)
    with _LOCK:
        state = _LOADED.get(ident)
        if state is None:
            folder = Path(ident[0]) / "stream_state" / pipeline
            state = _LOADED[ident] = KeyState(
                folder / f"dedup-{digest}", legacy=folder / f"dedup-{digest}.parquet"
            )
        return state


def forget_loaded() -> None:
    """Write what is pending, release every state and drop it from memory: the next batch
    reloads from the files, as a new process would (the stream runner calls it at the start
    and the end of a run, so each run loads with its own committed sequence)."""
    flush()
    with _LOCK:
        for state in _LOADED.values():
            state.release()
        _LOADED.clear()
