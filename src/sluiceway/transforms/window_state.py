"""The keys a windowed stream dedup has seen: in memory per process, saved after each commit.

One `KeyState` per (state folder, pipeline, dedup keys). The table it holds has the key
columns and `__sw_seen_at` (naive UTC timestamp of the key's first sighting). It only
changes through `commit`, which a dedup step registers as an `after_commit` callback, so the
state never holds the keys of a batch that was not committed. `commit` replaces the file
atomically (temporary file, fsync, os.replace) on a writer thread, so the stream does not
wait for it; a process that starts later reloads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sluiceway.core.durations import parse_duration

SEEN_AT = "__sw_seen_at"

_LOADED: dict[tuple[str, str, str], KeyState] = {}
_LOCK = threading.Lock()
_PENDING: list[Future[None]] = []
_WRITER: ThreadPoolExecutor | None = None


def parse_window(text: str) -> timedelta:
    """A dedup window such as '5m' or '1h30m' (see `core.durations`)."""
    return parse_duration(text, what="window")


def keys_hash(keys: list[str]) -> str:
    """A short stable name for a list of key columns (names the state file)."""
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:12]


class KeyState:
    """The seen keys of one dedup step of one pipeline; `table` is None before any commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.table: pa.Table | None = pq.read_table(path) if path.is_file() else None

    def commit(self, table: pa.Table, on_error: Callable[[OSError], None] | None = None) -> None:
        """Make `table` the state: in memory now, on disk (atomically) on the writer thread,
        so the stream goes on with its next batch meanwhile. Writes happen in commit order;
        a write overtaken by a newer commit is skipped (the newer one follows). `flush`
        waits for them.

        `on_error` gets the OSError of a file that could not be written; the state in
        memory is updated anyway (the next commit writes the whole state again).
        """
        self.table = table
        with _LOCK:
            _PENDING.append(_writer().submit(self._write, table, on_error))

    def _write(self, table: pa.Table, on_error: Callable[[OSError], None] | None) -> None:
        if table is not self.table:
            return  # a newer state was committed since; its write comes next
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            if on_error is not None:
                on_error(exc)
        finally:
            tmp.unlink(missing_ok=True)


def flush() -> None:
    """Wait until every committed state is on disk (the stream runner calls it at the end
    of a run)."""
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
    """The state of `keys` for `pipeline` in this process, loaded from its file the first time.

    The file is `<state_dir>/stream_state/<pipeline>/dedup-<keys hash>.parquet`.
    """
    digest = keys_hash(keys)
    ident = (str(Path(state_dir).resolve()), pipeline, digest)
    with _LOCK:
        state = _LOADED.get(ident)
        if state is None:
            path = Path(ident[0]) / "stream_state" / pipeline / f"dedup-{digest}.parquet"
            state = _LOADED[ident] = KeyState(path)
        return state


def forget_loaded() -> None:
    """Drop every state held in memory, as a new process would start (tests use it)."""
    flush()
    with _LOCK:
        _LOADED.clear()
