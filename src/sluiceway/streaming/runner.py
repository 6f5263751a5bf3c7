"""The stream runner: micro-batches from a broker into Delta, exactly once.

Each micro-batch (bounded by `stream.max_batch_rows` and `stream.max_batch_seconds`) goes
through the batch runner unchanged — contract, steps, routing, masking, checks, dead letters,
row accounting — and is committed to the Delta sink with:
- the source positions after the batch (`sluice.positions`), and
- one Delta app transaction per partition in the batch, `stream:<source>:<partition>`, whose
  version is the batch sequence; a sink already holding that version writes nothing.

Only then are the messages acknowledged. After a crash the broker redelivers what was not
acknowledged; the runner reads the committed positions back from the table and acknowledges
the messages at or before them without writing them again (they are counted as
`already_committed`), so the table holds every message exactly once. Dead letters are written
under the batch's run key `stream:<source>:<sequence>`, replaced when that batch is retried.

SIGTERM or SIGINT finishes the batch in hand — commit, then acknowledge — and stops.
Broker and storage errors are retried with exponential backoff and jitter, a bounded number
of times; the broker is reopened after a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sluiceway import masking
from sluiceway.checks.contract import Shape, flagging_query
from sluiceway.checks.table import compile_check
from sluiceway.core import registry
from sluiceway.core.accounting import RowAccounting
from sluiceway.core.context import RunContext, SourceRead, WriteRequest
from sluiceway.core.events import EventBus
from sluiceway.core.pii import PiiMasking
from sluiceway.core.results import RunResult
from sluiceway.core.runner import RunOptions, StreamBatch, run_pipeline
from sluiceway.core.runstore import RunRecord, RunStore, StreamBatchRecord
from sluiceway.core.spec import Contract, Pipeline
from sluiceway.core.store_db import resolve_location
from sluiceway.engines.duckdb import DuckDBEngine
from sluiceway.errors import ConfigError, SluicewayError, SpecError, TransientError
from sluiceway.streaming.base import Fetched, StreamSource
from sluiceway.streaming.deliveries import DeliveryLedger
from sluiceway.streaming.parse import (
    TRUNCATE_PAYLOAD,
    Parsed,
    parse_ahead,
    parse_messages,
)
from sluiceway.streaming.positions import PartitionPositions, first_of_each
from sluiceway.streaming.spec_rules import stream_problems, with_change_columns
from sluiceway.transforms import window_state

FAULT_ENV = "SLUICE_STREAM_FAULT"
"""Fault injection for crash tests: `<point>:<batch>` kills the process with SIGKILL at that
point of that batch sequence; points: before_write, after_dead_letters, after_commit."""


@dataclass
class StreamOptions:
    """When a stream run stops (besides SIGTERM / SIGINT).

    Attributes:
        max_batches: stop after committing this many batches.
        idle_exit_s: stop once no message has arrived for this long.
        retries: attempts for a broker or storage operation before the run fails.
        backoff_s: first retry delay; doubles per attempt, with jitter, up to `backoff_cap_s`.
    """

    max_batches: int | None = None
    idle_exit_s: float | None = None
    retries: int = 8
    backoff_s: float = 0.2
    backoff_cap_s: float = 5.0


@dataclass
class StreamResult:
    """What a stream run did, in total."""

    run_id: str
    pipeline: str
    status: str = "running"
    batches: int = 0
    accounting: RowAccounting = field(default_factory=RowAccounting)
    already_committed: int = 0
    last_version: int | None = None
    error: str | None = None
    stopped_by: str | None = None
    duration_s: float = 0.0
    checks_warned: dict[str, int] = field(default_factory=dict)
    """Check name → batches it failed in as a warning (they were committed)."""

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


ASSIGNMENT_WAIT_S = 30.0
"""Longest wait for a consumer group's partitions that `--idle-exit` does not count."""


@dataclass(frozen=True)
class _Prepared:
    """A batch as the fetch thread hands it over."""

    batch: list[Fetched]
    started: float
    messages: pa.Table | None = None
    """The batch's messages, without repeats (None when the batch is empty)."""
    parsed: Parsed | None = None
    """The messages parsed ahead (None: parse them in the batch's run)."""
    keys: list[pa.Array] | None = None
    """The messages' order keys (None: the source has none)."""


def run_stream(
    pipeline: Pipeline, options: RunOptions | None = None, stream: StreamOptions | None = None
) -> StreamResult:
    """Run a `mode: stream` pipeline until it is stopped or a limit is reached.

    Raises:
        SpecError: the pipeline is not a stream pipeline it can run.
        ConfigError: a key the pipeline needs is missing from the environment.
    """
    return _StreamRunner(pipeline, options or RunOptions(), stream or StreamOptions()).run()


class _Stop(Exception):
    """Raised inside the loop to end the run with a reason."""


class _Stopped(Exception):
    """A stop was requested while waiting to retry: the run ends cleanly, nothing is lost
    (unacknowledged messages are redelivered and recognised)."""


class _StreamRunner:
    def __init__(self, pipeline: Pipeline, options: RunOptions, stream: StreamOptions) -> None:
        problems = stream_problems(pipeline)
        if problems:
            raise SpecError(problems, source=pipeline.pipeline)
        self.pipeline, self.options, self.stream = pipeline, options, stream
        self.name = pipeline.primary_source
        self.config = pipeline.sources[self.name]
        self.change_capture = bool(getattr(self.config, "change_capture", False))
        self.beyond_said: set[str] = set()  # columns beyond the contract already warned of
        self.server = "database" if self.change_capture else "broker"  # for messages
        if self.change_capture:
            self.pipeline = with_change_columns(pipeline, self.name)
            self.config = self.pipeline.sources[self.name]
        environ = os.environ if options.environ is None else options.environ
        self.environ = environ
        self.state_dir = Path(
            options.state_dir or environ.get("SLUICE_HOME") or Path.cwd() / ".sluice"
        ).resolve()
        self.run_id = (
            datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8] + "-stream"
        )
        self.result = StreamResult(self.run_id, pipeline.pipeline)
        # Per consumer group and topics: another group reads the same offsets afresh.
        reader = json.dumps(
            [getattr(self.config, "group_id", None), getattr(self.config, "topics", None)]
        )
        self.deliveries = DeliveryLedger(
            self.state_dir
            / "stream_state"
            / pipeline.pipeline
            / f"deliveries-{self.name}-{hashlib.sha256(reader.encode()).hexdigest()[:8]}.json"
        )
        self.store = RunStore(
            options.run_store or resolve_location(self.state_dir, environ=environ)
        )
        self.events = EventBus(pipeline.pipeline, self.run_id)
        for subscriber in options.subscribers:
            self.events.subscribe(subscriber)
        plugin = registry.lookup("source", self.config.type)
        assert plugin is not None, "the loader validated the source type"
        self.source: StreamSource = plugin.impl(self.config)
        if hasattr(self.source, "state_dir"):  # a source that keeps a file of its own
            self.source.state_dir = self.state_dir
        if hasattr(self.source, "merge_keys"):  # a change source checks them against its key
            self.source.merge_keys = list(getattr(pipeline.sinks[0], "merge_keys", None) or [])
        sink_plugin = registry.lookup("sink", pipeline.sinks[0].type)
        assert sink_plugin is not None, "the loader validated the sink type"
        self.sink = sink_plugin.impl(pipeline.sinks[0])
        self.stopping: str | None = None
        self.prefetch = bool(getattr(self.source, "fetch_ahead", False))
        self.parse_engine: DuckDBEngine | None = None  # the fetch thread's, for parse_ahead
        self.parse_shape: Shape | None = None  # the contract, applied ahead on that engine
        self.wake = threading.Event()
        self.positions = PartitionPositions(self.source)
        self.other_positions: dict[str, Any] = {}
        self.sequence = 0
        self.started = time.monotonic()
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.fault = _fault(environ.get(FAULT_ENV))

    def run(self) -> StreamResult:
        window_state.forget_loaded()  # the dedup state loads with this run's committed batch
        interrupted = self.store.mark_interrupted(self.pipeline.pipeline, mode="stream")
        if interrupted:
            self.events.emit("runs_interrupted", runs=interrupted)
        self._save("running")
        self.events.emit("run_started", logical_date=str(datetime.now(UTC).date()))
        try:
            with _signals(self._request_stop):
                # Before anything is read: a missing masking key would else show only at
                # the first message, and an idle run would end "succeeded".
                pii = self.pipeline.pii
                keys = masking.MaskKeys.from_env(self.environ)
                masking.check_keys(sorted(set(pii.values())), keys, dead_letters=bool(pii))
                self._load_committed()
                resuming = getattr(self.source, "resuming", None)
                if resuming is not None:  # a lost slot or a recreated topic must not go unseen
                    resuming(dict(self.positions.committed))
                self._retrying(f"connect to the {self.server}", self.source.open)
                self._loop()
            self.result.status = "succeeded"
        except _Stopped:
            self.result.status = "succeeded"
            self.result.stopped_by = self.stopping
        except _Stop as stop:
            self.result.status = "failed"
            self.result.error = str(stop)
        except SluicewayError as exc:
            self.result.status = "failed"
            self.result.error = str(exc)
        except Exception as exc:
            self.result.status = "failed"
            self.result.error = f"unexpected {type(exc).__name__}: {exc} (please report it)"
        finally:
            self.source.close()
            if self.parse_engine is not None:
                self.parse_engine.close()
            window_state.forget_loaded()  # the last commit's dedup state on disk, released
            self.result.duration_s = round(time.monotonic() - self.started, 3)
            self._save(self.result.status)
            self.events.emit(
                "run_succeeded" if self.result.ok else "run_failed",
                error=self.result.error,
                batches=self.result.batches,
            )
        return self.result

    def _request_stop(self, reason: str) -> None:
        self.stopping = reason
        self.wake.set()

    def _load_committed(self) -> None:
        ctx = self._ctx()
        positions = self._retrying(
            "read the committed positions", lambda: self.sink.committed_positions(ctx)
        )
        self.positions.committed = dict(positions.get(self.name, {}))
        self.deliveries.prune(self.positions.committed)
        # Kept in every commit: a commit holds all the pipeline's positions (see sinks.delta).
        self.other_positions = {k: v for k, v in positions.items() if k != self.name}
        versions = [
            self.sink.transaction_version(ctx, _app_key(self.name, partition)) or 0
            for partition in self.positions.committed
        ]
        self.sequence = max(versions, default=0)
        self.events.emit(
            "stream_resumed", positions=len(self.positions.committed), batch=self.sequence
        )

    def _loop(self) -> None:
        last_message = opened = time.monotonic()
        ahead: Future[_Prepared] | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="sluice-fetch") as fetcher:
            try:
                while self.stopping is None or ahead is not None:
                    # A batch fetched ahead is handled even after a stop request: SIGTERM
                    # leaves nothing delivered and unacknowledged.
                    prepared = ahead.result() if ahead is not None else self._prepare(False)
                    ahead = None
                    if not prepared.batch:
                        if self._awaiting_partitions(opened):
                            last_message = time.monotonic()
                        idle = time.monotonic() - last_message
                        if self.stream.idle_exit_s is not None and idle >= self.stream.idle_exit_s:
                            self.result.stopped_by = "idle"
                            self._said_waiting()
                            return
                        continue
                    limit = self.stream.max_batches
                    last = limit is not None and self.result.batches + 1 >= limit
                    if self.prefetch and not last and self.stopping is None:
                        ahead = fetcher.submit(self._prepare, True)
                    self._handle(prepared, ahead)
                    # Idle counts from here: a fetch running ahead may come back empty
                    # just because the batch in hand took longer than its wait.
                    last_message = time.monotonic()
                    if limit is not None and self.result.batches >= limit:
                        self.result.stopped_by = "max_batches"
                        return
            finally:
                if ahead is not None:  # fetched ahead, not committed: redelivered next time
                    self.wake.set()  # a fetch waiting to retry gives up now
                    wait([ahead])
        self.result.stopped_by = self.stopping

    def _prepare(self, ahead: bool) -> _Prepared:
        """The next batch: fetched, without repeats, and — on the fetch thread, while the
        batch in hand is committed — already parsed (DuckDB releases the GIL)."""
        batch, started = self._collect()
        if not batch:
            return _Prepared(batch, started)
        tables = [f.messages for f in batch]
        messages = first_of_each(pa.concat_tables(tables, promote_options="default"))
        keys = self.positions.order_keys(messages.column("msg_id"))
        messages = self.deliveries.counted(messages, keys)
        parsed = None
        if ahead and not self.change_capture:
            contract = self.config.contract
            assert contract is not None, "stream_problems requires a contract"
            if self.parse_engine is None:
                self.parse_engine = DuckDBEngine(
                    threads=self.options.threads, redact_values=bool(self.pipeline.pii)
                )
                self.parse_shape = self._ahead_shape(self.parse_engine, contract)
            parsed = parse_ahead(
                self.parse_engine,
                messages,
                contract,
                max_deliveries=self.config.max_deliveries,  # type: ignore[attr-defined]
                shape=self.parse_shape,
            )
        return _Prepared(batch, started, messages, parsed, keys)

    def _ahead_shape(self, engine: DuckDBEngine, contract: Contract) -> Shape | None:
        """The contract as a flagging query on the fetch thread's engine, masking the dead
        letters' payloads as the batch's run would; None without the masking keys (the
        batch's run then applies the contract, and reports the missing key)."""
        keys = masking.MaskKeys.from_env(self.environ)
        try:
            masking.check_keys(sorted(set(self.pipeline.pii.values())), keys)
        except ConfigError:
            return None
        masking.register_functions(engine.con, keys)
        pii = PiiMasking(self.pipeline, keys, engine)
        return flagging_query(contract, pii=self.pipeline.pii, masked_payload=pii.payload_sql)

    def _collect(self) -> tuple[list[Fetched], float]:
        """Fetch until the batch is full, its time is up, or the stream is idle; the batch
        and when its first fetch was asked for (its latency includes reading it)."""
        settings = self.pipeline.stream
        fetched: list[Fetched] = []
        count, deadline, started = 0, None, time.monotonic()
        while count < settings.max_batch_rows and self.stopping is None:
            wait_s = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
            if deadline is not None and wait_s == 0:
                break
            want = settings.max_batch_rows - count
            asked = time.monotonic()
            got: Fetched = self._retrying(
                f"fetch from the {self.server}", partial(self.source.fetch, want, wait_s)
            )
            if got.count == 0:
                if fetched:
                    break
                return [], started
            if deadline is None:
                started = asked
                deadline = time.monotonic() + settings.max_batch_seconds
            fetched.append(got)
            count += got.count
        return fetched, started

    def _handle(self, prepared: _Prepared, ahead: Future[_Prepared] | None = None) -> None:
        """Commit the batch, then acknowledge it. A fetch running ahead (`ahead`) is waited
        for before acknowledging: the source is never used by two threads at once for
        anything but `fetch` and `lag`."""
        batch, started, messages = prepared.batch, prepared.started, prepared.messages
        assert messages is not None, "a batch with messages is prepared with them"
        fresh, keys = self.positions.fresh(messages, prepared.keys)
        stale = messages.num_rows - fresh.num_rows
        parts = self._split_at_truncates(fresh)
        # The rows parsed ahead are those of the whole batch: usable when nothing was
        # filtered out (filters only drop rows, so equal counts mean the same rows).
        whole = len(parts) == 1
        parsed = prepared.parsed if stale == 0 and whole else None
        for index, (part, is_truncate) in enumerate(parts):
            counts = (
                self._truncate(part)
                if is_truncate
                else self._commit(part, parsed, keys if whole else None)
            )
            self._record_batch(part, counts, stale if index == 0 else 0, started)
            self._save("running")
        if not parts and stale:
            self.events.emit("already_committed", messages=stale)
        self._fault_at("after_commit")
        if ahead is not None:
            wait([ahead])
        for fetched in batch:
            self._retrying("acknowledge the batch", partial(self.source.ack, fetched))
        self.result.already_committed += stale

    def _split_at_truncates(self, messages: pa.Table) -> list[tuple[pa.Table, bool]]:
        """The batch in order, cut around a change source's TRUNCATEs: each becomes a commit
        of its own that empties the table, between the changes before and after it."""
        if not messages.num_rows:
            return []
        if not self.change_capture:
            return [(messages, False)]
        marks = pc.equal(messages.column("payload"), pa.scalar(TRUNCATE_PAYLOAD, pa.binary()))
        flags = marks.fill_null(False).to_pylist()
        if not any(flags):
            return [(messages, False)]
        parts: list[tuple[pa.Table, bool]] = []
        start = 0
        for index in range(1, len(flags) + 1):
            if index == len(flags) or flags[index] != flags[start]:
                parts.append((messages.slice(start, index - start), flags[start]))
                start = index
        return parts

    def _truncate(self, messages: pa.Table) -> RowAccounting:
        """Commit a TRUNCATE: the Delta sink empties the table, with the positions and the
        batch's app transactions in the same commit (a redelivery finds it committed)."""
        self.sequence += 1
        sequence = self.sequence
        partitions = sorted(set(messages.column("partition").to_pylist()))
        positions = {
            **self.other_positions,
            self.name: {**self.positions.committed, **self.positions.newest(messages)},
        }
        [config] = self.pipeline.sinks
        sink = registry.lookup("sink", config.type).impl(config)  # type: ignore[union-attr]
        request = WriteRequest(
            data=pa.table({}),
            idempotency_key=f"stream:{self.name}:{sequence}",
            metadata={"sluice.run_id": self.run_id, "sluice.truncate": self.name},
            positions=positions,
            transactions=tuple((_app_key(self.name, p), sequence) for p in partitions),
            truncate=True,
        )
        self._fault_at("before_write")
        written = self._retrying(
            "empty the table (TRUNCATE)", lambda: sink.write(self._ctx(), request)
        )
        self.positions.committed = positions[self.name]
        self.result.batches += 1
        self.result.last_version = written.version
        self.events.emit(
            "batch_committed",
            batch=sequence,
            rows=0,
            rejected=0,
            truncate=True,
            version=written.version,
        )
        return RowAccounting()

    def _commit(
        self,
        messages: pa.Table,
        parsed: Parsed | None = None,
        keys: list[pa.Array] | None = None,
    ) -> RowAccounting:
        """Run the batch through the pipeline and commit it; its row accounting."""
        self.sequence += 1
        sequence = self.sequence
        partitions = sorted(set(messages.column("partition").to_pylist()))
        last = self.positions.newest(messages, keys)
        positions = {**self.other_positions, self.name: {**self.positions.committed, **last}}
        batch = StreamBatch(
            run_key=f"stream:{self.name}:{sequence}",
            positions=positions,
            transactions=tuple((_app_key(self.name, p), sequence) for p in partitions),
            run_id=self.run_id,
        )
        contract, limit = self.config.contract, self.config.max_deliveries  # type: ignore[attr-defined]
        assert contract is not None, "stream_problems requires a contract"

        def override(ctx: RunContext, name: str) -> SourceRead | None:
            if name != self.name:
                return None
            self._fault_at("before_write")
            if parsed is not None:
                self._said_beyond_contract(contract, parsed.rows.column_names)
                return parsed.read(ctx.engine)
            read = parse_messages(
                ctx.engine,
                messages,
                contract,
                max_deliveries=limit,
                change_capture=self.change_capture,
            )
            self._said_beyond_contract(contract, [c for c, _ in ctx.engine.columns(read.table)])
            return read

        options = replace(
            self.options,
            source_override=override,
            batch=batch,
            logical_date=datetime.now(UTC).date(),
            subscribers=[self._fault_subscriber, *self.options.subscribers],
        )
        for attempt in range(1, self.stream.retries + 1):
            result = run_pipeline(self.pipeline, options)
            if result.ok:
                break
            if not result.retryable or attempt == self.stream.retries:
                self.deliveries.failed(messages, keys)
                hint = ""
                if result.error_type == "GateFailed":
                    hint = (
                        ". The same rows fail that check at every delivery, and after "
                        f"max_deliveries ({limit}) the whole batch goes to the dead letters: "
                        "to keep the stream flowing, give the check `severity: warn`"
                        + (
                            ", or `on_fail: dead_letter` to route only its failing rows"
                            if self._failed_checks_can_route(result)
                            else ""
                        )
                    )
                raise _Stop(
                    f"batch {sequence} failed; its messages stay unacknowledged: "
                    f"{result.error}{hint}"
                )
            self._sleep(attempt, f"commit batch {sequence}", result.error or "")
        written = result.sinks[0] if result.sinks else None
        if written is not None and written.skipped:
            raise _Stop(
                f"batch {sequence} is already in the table: another runner is consuming "
                f"'{self.name}' with the same pipeline; stopping this one"
            )
        self.positions.committed = positions[self.name]
        self.deliveries.committed(messages)
        self._warned(sequence, [c for c in result.checks if c.status != "passed"])
        acc = self.result.accounting
        for term in (
            "rows_in",
            "rows_written",
            "rows_rejected",
            "rows_deduplicated",
            "rows_filtered",
        ):
            setattr(acc, term, getattr(acc, term) + getattr(result.accounting, term))
        self.result.batches += 1
        self.result.last_version = written.version if written else None
        self.events.emit(
            "batch_committed",
            batch=sequence,
            rows=result.accounting.rows_written,
            rejected=result.accounting.rows_rejected,
            version=self.result.last_version,
        )
        return result.accounting

    def _fault_subscriber(self, event: Any) -> None:
        if event.name == "dead_letter_written":
            self._fault_at("after_dead_letters")

    def _fault_at(self, point: str) -> None:
        if self.fault == (point, self.sequence):
            os.kill(os.getpid(), signal.SIGKILL)

    def _record_batch(
        self, messages: pa.Table, counts: RowAccounting, stale: int, started: float
    ) -> None:
        now = datetime.now(UTC)
        latencies = _e2e_latencies(messages, now)
        lag = self._lag()
        self.store.save_batch(
            StreamBatchRecord(
                run_id=self.run_id,
                pipeline=self.pipeline.pipeline,
                batch=self.sequence,
                committed_at=now.isoformat(timespec="milliseconds"),
                events_in=counts.rows_in,
                written=counts.rows_written,
                rejected=counts.rows_rejected,
                deduplicated=counts.rows_deduplicated,
                already_committed=stale,
                batch_latency_s=round(time.monotonic() - started, 4),
                e2e_p50_s=latencies[0],
                e2e_p99_s=latencies[1],
                lag=lag,
                table_version=self.result.last_version,
            )
        )
        acc = self.result.accounting
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.events.emit(
            "stream_status",
            events=counts.rows_in,
            events_per_s=round(acc.rows_in / elapsed),
            written=acc.rows_written,
            rejected=acc.rows_rejected,
            lag=lag,
            version=self.result.last_version,
            e2e_p99_s=latencies[1],
        )

    def _failed_checks_can_route(self, result: RunResult) -> bool:
        """Whether every failed error check of `result` judges rows one by one (so that
        `on_fail: dead_letter` could route them): a table-level check cannot."""
        failed = [
            config
            for config, check in zip(self.pipeline.checks, result.checks, strict=False)
            if check.status == "failed" and check.severity == "error"
        ]
        return bool(failed) and all(
            compile_check(config).row_condition() is not None for config in failed
        )

    def _said_beyond_contract(self, contract: Contract, columns: list[str]) -> None:
        """Warn (once per stream run and column) when messages bring fields their contract
        does not name (a new field of the producer, a column added at a change source): they
        land as text, not masked unless in `pii:`, or their rows are rejected (`freeze`)."""
        if contract.evolution == "discard_column":
            return
        new = [
            c
            for c in columns
            if not c.startswith("__sw_") and c not in contract.columns and c not in self.beyond_said
        ]
        if not new:
            return
        self.beyond_said.update(new)
        effect = (
            "rows with a value in them go to the dead letters (evolution: freeze)"
            if contract.evolution == "freeze"
            else "they land in the table as text columns (evolution: evolve), not masked "
            "unless named in pii:"
        )
        self.events.emit(
            "columns_beyond_contract",
            source=self.name,
            columns=new,
            hint=f"source {self.name}: column(s) {', '.join(new)} are not in its contract: "
            f"{effect}. Declare them in the contract (and PII in pii:), or set "
            "evolution: discard_column to leave them out",
        )

    def _warned(self, sequence: int, failed: list[Any]) -> None:
        """Checks a committed batch failed as warnings: counted in the run record, and said
        the first time each fails in this run."""
        for check in failed:
            first = check.name not in self.result.checks_warned
            self.result.checks_warned[check.name] = self.result.checks_warned.get(check.name, 0) + 1
            if first:
                self.events.emit(
                    "check_warned",
                    check=check.name,
                    batch=sequence,
                    hint=f"check {check.name} failed on batch {sequence} (severity: warn: the "
                    "batch was committed): "
                    + (check.message or "see the check's result")
                    + ". Its count per run is in `sluice show RUN`",
                )

    def _awaiting_partitions(self, opened: float) -> bool:
        """The consumer group has not assigned this consumer its partitions yet (a Kafka
        rebalance takes seconds): an empty fetch then says nothing about the stream being
        idle. At most `ASSIGNMENT_WAIT_S` is waited, so a consumer the group leaves without
        partitions still ends by `--idle-exit`."""
        is_assigned = getattr(self.source, "is_assigned", None)
        if is_assigned is None or time.monotonic() - opened > ASSIGNMENT_WAIT_S:
            return False
        return not is_assigned()

    def _said_waiting(self) -> None:
        """An idle stop with messages still waiting (they were not delivered to this
        consumer in time) says so: the run ends but the stream is not drained."""
        lag = self._lag()
        if lag:
            self.events.emit(
                "stopped_with_lag",
                lag=lag,
                hint=f"stopped by --idle-exit with {lag:,} message(s) still waiting in the "
                f"{self.server}: no message came within the idle time. Run again (or raise "
                "--idle-exit) to read them",
            )

    def _lag(self) -> int | None:
        try:
            return self.source.lag()
        except SluicewayError:
            return None

    def _retrying(self, what: str, action: Callable[[], Any]) -> Any:
        """`action`, retried on transient errors with backoff; after a failure the source is
        reopened first (a reopen that fails counts as a failed attempt)."""
        reopen = False
        for attempt in range(1, self.stream.retries + 1):
            try:
                if reopen:
                    self.source.open()
                return action()
            except TransientError as exc:
                if attempt == self.stream.retries:
                    raise _Stop(f"could not {what} after {attempt} attempts: {exc}") from exc
                self._sleep(attempt, what, str(exc))
                reopen = what != f"connect to the {self.server}"
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int, what: str, reason: str) -> None:
        delay = min(self.stream.backoff_cap_s, self.stream.backoff_s * 2 ** (attempt - 1))
        delay *= 0.5 + random.random() / 2
        self.events.emit(
            "retrying",
            what=what,
            attempt=attempt,
            of=self.stream.retries,
            delay_s=round(delay, 2),
            reason=reason.splitlines()[0] if reason else "",
        )
        if self.wake.wait(delay):
            raise _Stopped()

    def _ctx(self) -> RunContext:
        return RunContext(
            pipeline=self.pipeline,
            run_id=self.run_id,
            logical_date=datetime.now(UTC).date(),
            engine=None,  # type: ignore[arg-type]
            base_dir=(self.options.base_dir or Path.cwd()).resolve(),
            state_dir=self.state_dir,
            events=self.events,
        )

    def _save(self, status: str) -> None:
        acc = self.result.accounting
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self.store.save(
            RunRecord(
                run_id=self.run_id,
                pipeline=self.pipeline.pipeline,
                logical_date=str(datetime.now(UTC).date()),
                status=status,
                started_at=self.started_at,
                finished_at=None if status == "running" else now,
                duration_s=self.result.duration_s or None,
                spec_hash=self.pipeline.spec_hash(),
                rows_in=acc.rows_in,
                rows_written=acc.rows_written,
                rows_rejected=acc.rows_rejected,
                rows_deduplicated=acc.rows_deduplicated,
                rows_filtered=acc.rows_filtered,
                details={
                    "mode": "stream",
                    "batches": self.result.batches,
                    "already_committed": self.result.already_committed,
                    "stopped_by": self.result.stopped_by,
                    **(
                        {"checks_warned": dict(self.result.checks_warned)}
                        if self.result.checks_warned
                        else {}
                    ),
                },
                error=self.result.error,
            )
        )


def _app_key(source: str, partition: str) -> str:
    return f"stream:{source}:{partition}"


def _e2e_latencies(messages: pa.Table, now: datetime) -> tuple[float | None, float | None]:
    """p50 and p99 of the seconds from enqueue to commit."""
    enqueued = messages.column("enqueued_at").drop_null()
    if len(enqueued) == 0:
        return None, None
    now_ms = int(now.timestamp() * 1000)
    ages = pc.divide(
        pc.subtract(pa.scalar(now_ms, pa.int64()), enqueued.cast(pa.int64())).cast(pa.float64()),
        1000.0,
    )
    p50, p99 = pc.quantile(ages, q=[0.5, 0.99]).to_pylist()
    return round(p50, 3), round(p99, 3)


def _fault(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    point, _, batch = spec.partition(":")
    if point not in ("before_write", "after_dead_letters", "after_commit") or not batch.isdigit():
        raise ConfigError(
            f"{FAULT_ENV}={spec!r}: expected <point>:<batch> with point one of before_write, "
            "after_dead_letters, after_commit"
        )
    return point, int(batch)


@contextmanager
def _signals(stop: Callable[[str], None]) -> Iterator[None]:
    """SIGTERM and SIGINT ask the loop to stop after the batch in hand."""
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stop(signal.Signals(signum).name))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
