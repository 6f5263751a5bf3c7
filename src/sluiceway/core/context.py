"""What plug-ins receive from the runner, and the contracts (Protocols) they fulfil."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from sluiceway.core.events import EventBus
from sluiceway.core.spec import Pipeline
from sluiceway.engines.duckdb import DuckDBEngine

ROW_FILE = "__sw_file"
ROW_NUMBER = "__sw_row"
ROW_ERRORS = "__sw_errors"
META_COLUMNS = (ROW_FILE, ROW_NUMBER)

PARSE_REJECT_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("line", pa.int64()),
        ("raw", pa.binary()),
        ("reason", pa.string()),
    ]
)


@dataclass
class RunContext:
    """One run's shared state, handed to every plug-in.

    Attributes:
        pipeline: the validated spec.
        run_id: unique id of this run.
        logical_date: the date the run is for; transforms never call now().
        engine: the run's DuckDB engine.
        base_dir: relative paths in the spec resolve against it (the spec's folder).
        state_dir: the .sluice folder (run store, staging, caches).
        events: the run's event bus.
    """

    pipeline: Pipeline
    run_id: str
    logical_date: date
    engine: DuckDBEngine
    base_dir: Path
    state_dir: Path
    events: EventBus
    secrets: Any = None
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    """Called once every sink has committed the run (a step's state that must only move
    forward with the data, e.g. the keys a streaming dedup has seen)."""
    batch_sequence: int | None = None
    """In a stream, the sequence of this micro-batch (its Delta app-transaction version);
    the batches before it are committed. None outside a stream."""

    def resolve(self, path: str) -> str:
        """A spec path made absolute against base_dir (URLs such as s3:// are kept)."""
        if "://" in path:
            return path
        p = Path(path).expanduser()
        return str(p if p.is_absolute() else (self.base_dir / p).resolve())


Shape = Callable[[str, list[str]], str]
"""A query shape: (relation SQL, its columns) → the SELECT that reshapes it, such as the
contract's flagging query, which a source can run in the statement that loads its rows."""


@dataclass
class SourceRead:
    """What a source hands to the runner.

    Attributes:
        table: DuckDB temp table with the source's columns plus __sw_file and __sw_row.
        rows_in: every record seen, parsed or not.
        parse_rejects: records that could not be parsed (PARSE_REJECT_SCHEMA).
        position: what to commit with the data so the next run resumes after it.
        typed: True when the columns carry real types (Parquet, Avro); False for text.
        fingerprint: identifies exactly what was read (same inputs → same fingerprint).
        temp_tables: tables behind `table` (when it is a view) that the runner may drop
            once the rows are validated.
        is_shaped: the rows were shaped (flagged by the contract) as they were read.
    """

    table: str
    rows_in: int
    parse_rejects: pa.Table
    position: dict[str, Any] = field(default_factory=dict)
    typed: bool = False
    fingerprint: str = ""
    temp_tables: list[str] = field(default_factory=list)
    is_shaped: bool = False


class Source(Protocol):
    """A source reads into a DuckDB table."""

    def read(self, ctx: RunContext, name: str, *, position: dict[str, Any] | None) -> SourceRead:
        """Read everything after `position` (the last committed one, or None)."""
        ...


@dataclass
class StepOutput:
    """A step's result: the new table (or view), the rows it removed on purpose, and how
    many rows it holds when the step knows without computing it again (None: as many as
    its input, by construction or by the step's promise)."""

    table: str
    deduplicated: int = 0
    filtered: int = 0
    rows: int | None = None


class Step(Protocol):
    """A step turns one DuckDB table into another."""

    def apply(self, ctx: RunContext, table: str, *, rows_in: int | None = None) -> StepOutput:
        """Transform `table` (holding `rows_in` rows, when known); the result is new."""
        ...


@dataclass(frozen=True)
class WriteRequest:
    """What the runner asks a sink to write.

    Attributes:
        data: the audited rows.
        idempotency_key: same inputs → same key; a sink that already committed it does nothing.
        metadata: commit metadata (run id, pipeline, spec hash, accounting).
        positions: source positions committed in the same commit as the data: every
            source's, after this commit (see `positions_complete`).
        append_only: add rows, never replace a partition (replays of dead letters use it;
            a merge sink still merges).
        transactions: (key, version) pairs a stream batch commits instead of the
            idempotency key: one per source partition, the version being the batch sequence;
            a sink that holds any of them at that version or later writes nothing.
        truncate: empty the table (a change source's TRUNCATE), committing the positions;
            `data` is ignored.
        positions_complete: `positions` are all the pipeline's (a reader may stop at this
            commit); False for a replay, which read nothing new and commits none.
    """

    data: pa.Table
    idempotency_key: str
    metadata: dict[str, str]
    positions: dict[str, Any]
    append_only: bool = False
    transactions: tuple[tuple[str, int], ...] = ()
    truncate: bool = False
    positions_complete: bool = True


@dataclass(frozen=True)
class WriteResult:
    """What a sink did."""

    uri: str
    rows_written: int
    version: int | None = None
    skipped: bool = False


class Sink(Protocol):
    """A sink commits audited rows, atomically with the positions."""

    def write(self, ctx: RunContext, request: WriteRequest) -> WriteResult:
        """Commit `request.data` (or nothing, when its idempotency key is already committed)."""
        ...

    def committed_positions(self, ctx: RunContext) -> dict[str, Any]:
        """The source positions committed so far (merged over all commits of this pipeline)."""
        ...

    def is_committed(self, ctx: RunContext, idempotency_key: str) -> bool:
        """True when this exact input already landed and a write would be skipped."""
        ...
