"""The stream runner fetches the next batch while it commits the one in hand: a fetch that
comes back empty meanwhile is not taken for an idle stream, and a stop request still leaves
nothing fetched and unacknowledged."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import ClassVar, Literal

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from sluiceway.core import registry
from sluiceway.core.loader import parse_spec
from sluiceway.core.runner import RunOptions
from sluiceway.engines.duckdb import DuckDBEngine
from sluiceway.streaming import runner as runner_module
from sluiceway.streaming.base import MESSAGE_SCHEMA, Fetched, StreamSourceConfig
from sluiceway.streaming.runner import StreamOptions, run_stream


class AheadConfig(StreamSourceConfig):
    type: Literal["test_fetch_ahead"] = "test_fetch_ahead"


class AheadSource:
    """Hands out scripted fetches: a list of message counts, 0 meaning an empty fetch that
    waits its timeout like a broker would."""

    fetch_ahead = True
    script: ClassVar[list[int | list[int]]] = []
    acked: ClassVar[list[str]] = []
    threads: ClassVar[set[str]] = set()

    def __init__(self, config: AheadConfig) -> None:
        self.next_id = 1
        self.lock = threading.Lock()

    def open(self) -> None: ...

    def close(self) -> None: ...

    def fetch(self, max_messages: int, timeout_s: float) -> Fetched:
        AheadSource.threads.add(threading.current_thread().name)
        deliveries = 1
        with self.lock:
            step = AheadSource.script.pop(0) if AheadSource.script else 0
            if isinstance(step, list):  # a redelivery of these ids
                ids, deliveries = step, 2
            else:
                ids = list(range(self.next_id, self.next_id + step))
                self.next_id += step
        count = len(ids)
        if not count:
            time.sleep(min(timeout_s, 0.3))
        payloads = [json.dumps({"n": i}).encode() for i in ids]
        table = pa.table(
            {
                "partition": ["p"] * count,
                "msg_id": [str(i) for i in ids],
                "payload": pa.array(payloads, pa.binary()),
                "enqueued_at": pa.array([None] * count, pa.timestamp("ms", tz="UTC")),
                "deliveries": pa.array([deliveries] * count, pa.int32()),
            },
            schema=MESSAGE_SCHEMA,
        )
        return Fetched(table, [str(i) for i in ids])

    def ack(self, fetched: Fetched) -> None:
        AheadSource.acked.extend(fetched.handle)

    def positions(self, fetched: Fetched) -> dict[str, str]:
        return {"p": fetched.handle[-1]} if fetched.handle else {}

    def position_after(self, msg_id: str, committed: str) -> bool:
        return int(msg_id) > int(committed)

    def lag(self) -> int | None:
        return None


registry.register("source", "test_fetch_ahead", AheadConfig, AheadSource)

SPEC = """
version: 1
pipeline: fetch_ahead
mode: stream
stream: {max_batch_rows: 10, max_batch_seconds: 0.05}
sources:
  events:
    type: test_fetch_ahead
    contract:
      columns:
        n: {type: bigint, nullable: false}
sinks:
  - {type: delta, path: lake/out, mode: append}
dead_letter: {path: lake/dead}
"""


def _run(tmp_path: Path, script: list[int | list[int]], **stream: object) -> list[int]:
    AheadSource.script = list(script)
    AheadSource.acked = []
    AheadSource.threads = set()
    result = run_stream(
        parse_spec(SPEC),
        RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice"),
        StreamOptions(**stream),  # type: ignore[arg-type]
    )
    assert result.ok, result.error
    table = DeltaTable(str(tmp_path / "lake" / "out")).to_pyarrow_table()
    return sorted(table.column("n").to_pylist())


def test_an_empty_fetch_ahead_is_not_an_idle_stream(tmp_path: Path) -> None:
    # Batch 1, then an empty fetch made while batch 1 commits (slower than idle_exit_s),
    # then more messages: the run must go on and write them.
    rows = _run(tmp_path, [10, 0, 10], idle_exit_s=0.1)
    assert rows == list(range(1, 21))
    assert sorted(AheadSource.acked, key=int) == [str(i) for i in range(1, 21)]
    assert any(name.startswith("sluice-fetch") for name in AheadSource.threads)


def test_max_batches_leaves_nothing_fetched_ahead(tmp_path: Path) -> None:
    rows = _run(tmp_path, [10, 10, 10, 10], max_batches=2)
    assert rows == list(range(1, 21))
    assert len(AheadSource.acked) == 20
    assert AheadSource.script == [10, 10], "the runner fetched a batch it was not to handle"


def test_a_batch_fetched_ahead_with_committed_redeliveries_is_parsed_again_without_them(
    tmp_path: Path,
) -> None:
    # Batch 2 (fetched ahead) holds redeliveries of batch 1's messages 3 and 4, already
    # committed when batch 2 is handled: the rows parsed ahead cannot be used as they are.
    rows = _run(tmp_path, [10, [3, 4], 5, 0], idle_exit_s=0.2)
    assert rows == list(range(1, 16)), "a redelivered message was written twice or lost"
    assert sorted(AheadSource.acked, key=int) == sorted(
        [str(i) for i in range(1, 16)] + ["3", "4"], key=int
    )


def test_sigterm_during_the_fetch_ahead_commits_and_acks_what_was_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = AheadSource.fetch
    calls = {"n": 0}

    def fetch(self: AheadSource, max_messages: int, timeout_s: float) -> Fetched:
        got = original(self, max_messages, timeout_s)
        calls["n"] += 1
        if threading.current_thread() is not threading.main_thread() and got.count:
            os.kill(os.getpid(), signal.SIGTERM)  # the stop arrives mid-fetch-ahead
        return got

    monkeypatch.setattr(AheadSource, "fetch", fetch)
    AheadSource.script = [10, 7]
    AheadSource.acked = []
    result = run_stream(
        parse_spec(SPEC),
        RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice"),
        StreamOptions(idle_exit_s=5),
    )
    assert result.ok, result.error
    assert result.stopped_by == "SIGTERM"
    rows = sorted(
        DeltaTable(str(tmp_path / "lake" / "out")).to_pyarrow_table().column("n").to_pylist()
    )
    assert rows == list(range(1, 18))
    assert sorted(AheadSource.acked, key=int) == [str(i) for i in range(1, 18)]


def test_the_fetch_thread_engine_honours_the_threads_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `sluice run --threads N` (RunOptions.threads) bounds DuckDB's threads everywhere,
    # the engine parse_ahead uses on the fetch thread included.
    made: list[int | None] = []

    class Recording(DuckDBEngine):
        def __init__(self, **kwargs: object) -> None:
            made.append(kwargs.get("threads"))  # type: ignore[arg-type]
            super().__init__(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner_module, "DuckDBEngine", Recording)
    AheadSource.script = [10, 10, 10]
    AheadSource.acked = []
    result = run_stream(
        parse_spec(SPEC),
        RunOptions(base_dir=tmp_path, state_dir=tmp_path / ".sluice", threads=1),
        StreamOptions(idle_exit_s=0.3),
    )
    assert result.ok, result.error
    assert made, "no batch was parsed ahead"
    assert made == [1] * len(made), f"fetch-thread DuckDB engine made with threads={made}"
