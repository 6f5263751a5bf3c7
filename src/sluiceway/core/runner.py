"""The batch runner: read → contract → steps → mask → stage → audit → dead-letter → publish.

Order matters and holds the promises:
- every row is counted into written, rejected, deduplicated or filtered, and the run fails
  before publishing if the terms do not add up;
- table checks run on the staged, masked result; a failed `error` check publishes nothing
  and leaves the staged data and the results in .sluice/staging/<run_id>/;
- the sink commits data and source positions together, under an idempotency key built
  from the pipeline, the logical date and the exact inputs;
- PII is masked before the staged table exists; dead letters keep raw payloads encrypted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from sluiceway import masking
from sluiceway.checks import contract as contract_mod
from sluiceway.checks.base import logical_time_of
from sluiceway.checks.contract import CHANGE_OP
from sluiceway.checks.profile import store_run_profile
from sluiceway.checks.table import (
    CheckEnv,
    CheckResult,
    blocking_failures,
    evaluate_checks,
    sample_unexpected,
)
from sluiceway.core import leases, registry, rejects
from sluiceway.core.accounting import RowAccounting
from sluiceway.core.context import META_COLUMNS, RunContext, SourceRead, WriteRequest, WriteResult
from sluiceway.core.events import EventBus, Subscriber
from sluiceway.core.pii import PiiMasking
from sluiceway.core.results import AuditRecord, RunResult
from sluiceway.core.routing import (
    data_columns,
    failed_rows_sql,
    route_rows,
    routing_checks,
)
from sluiceway.core.runstore import RunStore
from sluiceway.core.spec import Pipeline
from sluiceway.core.step_retry import apply_step
from sluiceway.core.store_db import StoreLocation, resolve_location
from sluiceway.core.watchdog import Watchdog
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident, quote_literal
from sluiceway.errors import (
    AccountingError,
    ConcurrentRunError,
    ConfigError,
    GateFailed,
    SluicewayError,
    SourceError,
    StepError,
    StepTimeout,
    TerminalError,
    TransientError,
)
from sluiceway.sinks.dead_letter import DEAD_LETTER_SCHEMA, DeadLetterTable


def _done(table: pa.Table) -> Future[pa.Table]:
    future: Future[pa.Table] = Future()
    future.set_result(table)
    return future


@dataclass(frozen=True)
class _Deferred:
    """A step whose row-count promise is still to be verified."""

    label: str
    step: Any
    rows_before: int
    table: str


_LOOKUP_REJECTS_WRITTEN: set[tuple[str, str]] = set()
"""(dead-letter uri, lookup key) written by this process: a stream's micro-batches read the
same lookup source again and again; its rejects are written once (and replaced, never
duplicated, by a later process)."""


@dataclass
class RunOptions:
    """How to run: the date, where state lives, what to watch.

    Attributes:
        logical_date: the date the run is for (default: today, UTC).
        base_dir: where relative spec paths resolve (default: the current folder).
        state_dir: the .sluice folder (default: $SLUICE_HOME or ./.sluice).
        environ: environment for keys (default: os.environ).
        subscribers: event subscribers (logs, progress).
        source_override: replaces a source's read (used by replay).
        is_replay: a replay of dead letters: rows still failing stay where they are (no new
            dead letters), table checks only warn (they audited the full load), sinks append.
        batch: set by the stream runner for each micro-batch: the positions to commit, the
            run key and app transactions to commit under; the batch is not a run of its own
            in the run store (the stream records its batches).
        date_range: first and last logical date of a range run (a backfill of a
            `range_capable` pipeline, with logical_date = the last): SQL sees them as
            range_start() and range_end(); without it both are the logical date.
        deadline: time.monotonic() by which the run must have published (the spec's
            `timeout`, set by `run_with_policy`); past it the running query is interrupted
            and the run fails before publishing.
        sleep: waits between the attempts of a step with `retries` (tests pass a fake).
        run_store: where the run is recorded (default: $SLUICE_RUN_STORE, else
            `<state_dir>/runs.db`; a project passes its `run_store` setting here).
    """

    logical_date: date | None = None
    base_dir: Path | None = None
    state_dir: Path | None = None
    environ: Mapping[str, str] | None = None
    subscribers: list[Subscriber] = field(default_factory=list)
    source_override: Callable[[RunContext, str], SourceRead | None] | None = None
    threads: int | None = None
    is_replay: bool = False
    batch: StreamBatch | None = None
    deadline: float | None = None
    date_range: tuple[date, date] | None = None
    attempt: int = 1
    max_attempts: int = 1
    sleep: Callable[[float], None] = time.sleep
    run_store: StoreLocation | None = None


@dataclass(frozen=True)
class StreamBatch:
    """What the stream runner fixes for one micro-batch (see `RunOptions.batch`)."""

    run_key: str
    positions: dict[str, Any]
    transactions: tuple[tuple[str, int], ...]
    run_id: str


def _is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C reached a DuckDB statement (it stops with "Query interrupted"), possibly
    wrapped in the error of the step or source that ran it; a step's own timeout, which
    interrupts the statement too, is not one."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, StepTimeout):
        if isinstance(seen, KeyboardInterrupt | duckdb.InterruptException):
            return True
        if isinstance(seen, RuntimeError) and "Query interrupted" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _replay_key(letters_key: str, failing: pa.Table) -> str:
    """A replay's idempotency key: its dead letters (`letters_key`) and which of them still
    fail, so the key names exactly the rows it writes. Replaying again with the same spec
    (after a crash before the dead letters were deleted) finds the commit; a replay after a
    spec fix, whose rows pass where they failed before, writes them."""
    rows = sorted(
        f"{r['source']}\x00{r['file']}\x00{r['row']}"
        for r in failing.select(["source", "file", "row"]).to_pylist()
    )
    blob = "\n".join([letters_key, *rows])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def reads_from_position(config: Any) -> bool:
    """True for a source that reads on from its committed position (`incremental: true`,
    `incremental:` settings or `mode: incremental`); other sources record what they read,
    but two runs of them may overlap."""
    return bool(getattr(config, "incremental", False)) or getattr(config, "mode", "") == (
        "incremental"
    )


def _batch_sequence(batch: StreamBatch | None) -> int | None:
    """The sequence of a stream micro-batch: the version of its app transactions."""
    versions = {version for _, version in batch.transactions} if batch else set()
    return versions.pop() if len(versions) == 1 else None


def run_pipeline(pipeline: Pipeline, options: RunOptions | None = None) -> RunResult:
    """Run a batch pipeline once. Never raises for data problems: they are in the result.

    Raises:
        ConfigError: a key the pipeline needs is missing from the environment.
    """
    options = options or RunOptions()
    runner = _Runner(pipeline, options)
    return runner.run()


class _Runner:
    def __init__(self, pipeline: Pipeline, options: RunOptions) -> None:
        base_dir = (options.base_dir or Path.cwd()).resolve()
        environ = os.environ if options.environ is None else options.environ
        state_dir = options.state_dir or Path(environ.get("SLUICE_HOME") or Path.cwd() / ".sluice")
        run_id = (
            options.batch.run_id
            if options.batch
            else datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        )
        self.options = options
        self.keys = masking.MaskKeys.from_env(environ)
        self.ctx = RunContext(
            pipeline=pipeline,
            run_id=run_id,
            logical_date=options.logical_date or datetime.now(UTC).date(),
            engine=DuckDBEngine(threads=options.threads, redact_values=bool(pipeline.pii)),
            base_dir=base_dir,
            state_dir=Path(state_dir).resolve(),
            events=EventBus(pipeline.pipeline, run_id),
            secrets=self.keys,
            batch_sequence=_batch_sequence(options.batch),
        )
        for subscriber in options.subscribers:
            self.ctx.events.subscribe(subscriber)
        self.store = RunStore(
            options.run_store or resolve_location(self.ctx.state_dir, environ=environ)
        )
        self.accounting = RowAccounting()
        self.result = RunResult(
            run_id, pipeline.pipeline, self.ctx.logical_date, "running", self.accounting
        )
        self.result.attempt, self.result.max_attempts = options.attempt, options.max_attempts
        self.result.replay = options.is_replay
        if options.date_range:
            self.result.date_range = (str(options.date_range[0]), str(options.date_range[1]))
        self.started = time.monotonic()
        self.contract_failure: TerminalError | None = None
        self.source_tables: set[str] = set()
        self.intermediates: list[str] = []
        self.deferred: list[_Deferred] = []
        self.valid_tables: dict[str, str] = {}
        self.pii = PiiMasking(pipeline, self.keys, self.ctx.engine)
        self.workers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-seal")
        self.expected_rows = 0
        self.staged: pa.Table = pa.table({})
        self.has_audited = False
        self.has_committed = False  # every sink committed: the run's rows are published
        self.audit: AuditRecord | None = None
        self.logical_time = logical_time_of(self.ctx.logical_date)
        self.routed_results: dict[int, CheckResult] = {}
        self.check_env: CheckEnv | None = None
        self.lookup_dead_rows: dict[str, list[Future[pa.Table]]] = {}
        self.has_published = False
        self.publish_turn: leases.Lease | None = None
        self.watchdog = Watchdog(options.deadline, self.ctx.engine.con.interrupt)
        self.step_outputs: list[tuple[str, str]] = []  # (steps[i].key, its result)

    @property
    def pipeline(self) -> Pipeline:
        return self.ctx.pipeline

    def run(self) -> RunResult:
        try:
            self._check_keys()
        except ConfigError as exc:
            self._refused(exc)
            raise
        if self.options.batch is None:
            self._take_lease()
        self.ctx.events.emit("run_started", logical_date=str(self.ctx.logical_date))
        try:
            self._run()
            self._succeeded()
        except KeyboardInterrupt:
            self._interrupted()
        except Exception as exc:
            if _is_interrupt(exc) and not self.watchdog.has_fired:
                self._interrupted()
            elif self.has_committed:
                self._succeeded(f"published, then {type(exc).__name__}: {exc}")
            elif isinstance(exc, SluicewayError):
                if not self._timed_out():
                    self._failed(str(exc), type(exc).__name__)
                    self.result.retryable = isinstance(exc, TransientError)
            elif not self._timed_out():
                self._failed(
                    f"unexpected {type(exc).__name__}: {exc} (please report it)",
                    type(exc).__name__,
                )
        finally:
            self.watchdog.cancel()
            self.result.duration_s = round(time.monotonic() - self.started, 3)
            if self.options.batch is None:
                self._write_results()
                self._record(self.result.status)
                self._release_lease()
            if self.has_audited and not self.options.is_replay and self.options.batch is None:
                self.store.save_metrics(self.result.metric_points())
            self._release_publish_turn()
            self.workers.shutdown(wait=True, cancel_futures=True)
            self.ctx.engine.close()
            # Local copies of remote input files: raw data (PII in clear) not kept past the run.
            shutil.rmtree(self.ctx.state_dir / "cache" / self.ctx.run_id, ignore_errors=True)
            self.ctx.events.emit("run_finished", **self.result.finished_fields())
        return self.result

    def _refused(self, exc: ConfigError) -> None:
        """A run that cannot start (a missing key) is still a failed run for the run store
        and every subscriber (lineage FAIL, alerts), then the error goes to the caller."""
        self.watchdog.cancel()
        self.ctx.engine.close()
        self.result.status, self.result.error = "failed", str(exc)
        if self.options.batch is None:
            self._record("failed")
        self.ctx.events.emit("run_started", logical_date=str(self.ctx.logical_date))
        self.ctx.events.emit("run_failed", error=str(exc), error_type=type(exc).__name__)
        self.ctx.events.emit("run_finished", **self.result.finished_fields())

    def _take_lease(self) -> None:
        """Mark runs whose process died as crashed, then hold a lease on this one."""
        environ = dict(os.environ if self.options.environ is None else self.options.environ)
        ttl = leases.lease_ttl(environ)
        crashed = leases.mark_crashed(self.store.location, self.pipeline.pipeline, ttl_s=ttl)
        if crashed:
            self.ctx.events.emit("runs_interrupted", runs=[c.run_id for c in crashed])
        self._record("running")
        self.lease = leases.Lease(
            self.store.location, self.ctx.run_id, self.pipeline.pipeline, ttl_s=ttl
        )

    def _release_lease(self) -> None:
        self.lease.release()
        environ = os.environ if self.options.environ is None else self.options.environ
        leases.prune_daily(
            self.store.location,
            keep_days=int(environ.get("SLUICE_RUNS_KEEP_DAYS") or leases.DEFAULT_KEEP_DAYS),
            keep_runs=int(environ.get("SLUICE_RUNS_KEEP") or leases.DEFAULT_KEEP_RUNS),
        )

    def _timed_out(self) -> bool:
        """After a failure: when the deadline stopped the run, say so (it is retryable)."""
        if not (self.watchdog.has_fired or self.watchdog.is_past()) or self.has_published:
            return False
        self._failed(
            f"the run exceeded its timeout ({self.pipeline.timeout}) and was stopped before "
            "publishing; nothing was written to the sinks. Raise `timeout:` in the spec or "
            "make the run cheaper.",
            "RunTimeout",
        )
        self.result.retryable = True
        return True

    def _check_deadline(self) -> None:
        if self.watchdog.is_past():
            raise TransientError(f"timeout {self.pipeline.timeout} passed")

    def _succeeded(self, after_commit: str | None = None) -> None:
        """The run published; `after_commit`: what went wrong after its commit (the rows are
        in the table all the same, so the run is not failed for it)."""
        if after_commit is not None:
            note = f"{after_commit} — the commit stands; what came after it was not done"
            self.result.note = f"{self.result.note} {note}" if self.result.note else note
        self.result.status = "succeeded"
        self.ctx.events.emit("run_succeeded", **self.accounting.to_dict())

    def _interrupted(self) -> None:
        self.result.interrupted = True
        if self.has_committed:
            self._succeeded("interrupted (Ctrl-C / SIGINT / SIGTERM)")
        elif self.result.sinks:
            done = ", ".join(sink.uri for sink in self.result.sinks)
            self._failed(
                f"interrupted (Ctrl-C / SIGINT / SIGTERM) between sinks: {done} committed, the others "
                "not; run it again (a sink that committed skips or converges)",
                "Interrupted",
            )
        else:
            self._failed(
                "interrupted (Ctrl-C / SIGINT / SIGTERM) before the commit: the table is as it was; "
                "run it again",
                "Interrupted",
            )

    def _failed(self, message: str, error_type: str) -> None:
        self.result.status = "failed"
        self.result.error, self.result.error_type = message, error_type
        self.ctx.events.emit("run_failed", error=message, error_type=error_type)

    def _check_keys(self) -> None:
        pii = self.pipeline.pii
        masking.check_keys(sorted(set(pii.values())), self.keys, dead_letters=bool(pii))
        masking.register_functions(self.ctx.engine.con, self.keys)

    def _run(self) -> None:
        engine = self.ctx.engine
        engine.run(
            f"CREATE OR REPLACE MACRO logical_date() AS DATE {quote_literal(str(self.ctx.logical_date))}"
        )
        engine.run(
            "CREATE OR REPLACE MACRO logical_time() AS TIMESTAMPTZ "
            f"{quote_literal(self.logical_time.isoformat())}"
        )
        first, last = self.options.date_range or (self.ctx.logical_date, self.ctx.logical_date)
        engine.run(f"CREATE OR REPLACE MACRO range_start() AS DATE {quote_literal(str(first))}")
        engine.run(f"CREATE OR REPLACE MACRO range_end() AS DATE {quote_literal(str(last))}")
        sinks = [registry.lookup("sink", s.type).impl(s) for s in self.pipeline.sinks]  # type: ignore[union-attr]
        batch = self.options.batch
        positions = batch.positions if batch else sinks[0].committed_positions(self.ctx)
        reads = self._read_sources(positions)
        run_key = batch.run_key if batch else self._run_key(reads)
        # A replay's key is known only once it knows which rows still fail (_replay_key).
        replay = self.options.is_replay
        if (
            batch is None
            and not replay
            and all(sink.is_committed(self.ctx, run_key) for sink in sinks)
        ):
            self._skip_committed(sinks, run_key)
            return
        if self._nothing_read(reads[self.pipeline.primary_source]):
            return
        dead_rows: list[Future[pa.Table]] = []
        valid = self._validate_sources(reads, run_key, dead_rows)
        table = self._apply_steps(
            valid[self.pipeline.primary_source],
            rows=self.accounting.rows_in - self.accounting.rows_rejected,
        )
        table = self._route(table, run_key, dead_rows)
        staged = self._stage(table)
        self._verify_deferred(self.staged.num_rows)
        self._drop(table, *reversed(self.intermediates))
        if self.pipeline.pii and self.pipeline.steps:
            self.ctx.events.emit("progress", stage="looking for PII under other names")
            self.pii.guard_renamed(staged, valid)
        self.accounting.rows_written = self.staged.num_rows
        self.result.bytes_written = self.staged.nbytes
        self._take_publish_turn()
        if self._overtaken(sinks, positions, run_key):
            return
        self._write_dead_letters(dead_rows, run_key)
        self.accounting.verify()
        self._audit(staged)
        committed = batch.positions if batch else self._whole_positions(positions, reads)
        if self.options.is_replay:
            run_key = _replay_key(run_key, self.result.dead_letters)
        self._check_deadline()
        if self._overtaken(sinks, positions, run_key):  # a run of another run store
            return
        self.has_published = True
        self._publish(sinks, staged, run_key, committed)
        self._release_publish_turn()
        self.has_committed = True
        for callback in self.ctx.after_commit:
            callback()
        self._keep_profile(staged)

    def _whole_positions(
        self, committed: dict[str, Any], reads: dict[str, SourceRead]
    ) -> dict[str, Any]:
        """What this run's commit records: every source's position after it, so the sink
        reads back only the newest commit. A source's new position replaces its committed
        one (it holds all of it: the files read so far, the highest cursor), unless empty;
        a replay read nothing new and records nothing (its commit is not marked complete)."""
        if self.options.is_replay:
            return {}
        return {**committed, **{n: r.position for n, r in reads.items() if r.position}}

    def _reads_on(self) -> bool:
        """A batch run (not a replay) of a pipeline with a source read from its position."""
        return (
            self.options.batch is None
            and not self.options.is_replay
            and any(reads_from_position(c) for c in self.pipeline.sources.values())
        )

    def _take_publish_turn(self) -> None:
        """Runs of a pipeline that reads on from its positions publish one at a time: from
        the positions check to the commit this run holds the pipeline's publish turn in the
        run store, so a run that read the same positions waits, then finds them moved."""
        if not self._reads_on():
            return
        environ = os.environ if self.options.environ is None else self.options.environ
        self.publish_turn = leases.take_publish_turn(
            self.store.location,
            self.pipeline.pipeline,
            self.ctx.run_id,
            ttl_s=leases.lease_ttl(dict(environ)),
            waiting=lambda holder: self.ctx.events.emit(
                "progress", stage=f"waiting for another run of this pipeline to publish ({holder})"
            ),
            still_waiting=self._check_deadline,
        )

    def _release_publish_turn(self) -> None:
        turn, self.publish_turn = self.publish_turn, None
        if turn is not None:
            turn.release()

    def _overtaken(self, sinks: list[Any], positions: dict[str, Any], run_key: str) -> bool:
        """Whether another run of the pipeline committed new positions since this one read
        them. If it committed these very inputs (the same key), this run writes nothing
        (True); otherwise it fails, retryably: its inputs would land twice, or its commit
        would roll the other run's positions back."""
        if not self._reads_on():
            return False
        now = sinks[0].committed_positions(self.ctx)
        moved = sorted(
            name
            for name, config in self.pipeline.sources.items()
            if reads_from_position(config) and now.get(name) != positions.get(name)
        )
        if not moved:
            return False
        if all(sink.is_committed(self.ctx, run_key) for sink in sinks):
            self._skip_committed(sinks, run_key)
            self.result.note = (
                "another run of this pipeline committed these same inputs while this run "
                "worked; they are in the table once and this run wrote nothing"
            )
            for name in dataclasses.asdict(self.accounting):
                setattr(self.accounting, name, 0)
            return True
        if self.accounting.rows_in == 0:  # nothing new read: nothing to land twice
            self.result.note = "another run of this pipeline committed new inputs meanwhile"
            return True
        path = getattr(sinks[0].config, "path", None)
        uri = self.ctx.resolve(path) if path else getattr(sinks[0], "uri", repr(sinks[0]))
        raise ConcurrentRunError(
            f"another run of pipeline {self.pipeline.pipeline!r} committed new positions of "
            f"source(s) {', '.join(moved)} to {uri} while this run was working from the "
            "earlier ones; this run published nothing (its inputs may be the ones that run "
            "already wrote). Run it again: it reads from the new positions. Schedule runs of "
            "an incremental pipeline so that they do not overlap.",
            context={"sources": moved},
        )

    def _skip_committed(self, sinks: list[Any], run_key: str) -> None:
        """These exact inputs already landed: touch neither the table nor the dead letters."""
        self.result.note = (
            "these inputs were already committed for this date (append is exactly-once); nothing was "
            "written. Rows fixed in the spec since come back with `sluice replay`."
        )
        for sink in sinks:
            uri = self.ctx.resolve(getattr(sink.config, "path", ""))
            self.result.sinks.append(WriteResult(uri=uri, rows_written=0, skipped=True))
        self.ctx.events.emit("commit_skipped", reason="inputs already committed", run_key=run_key)

    def _nothing_read(self, primary: SourceRead) -> bool:
        """The primary source read nothing and knows no column (an incremental source with no
        new file or record, and no contract or declared fields to give its columns): there
        is nothing to validate, transform, check or write, and no step could even be bound.
        The run succeeds with nothing published; the positions stay as they are."""
        if primary.rows_in or primary.parse_rejects.num_rows:
            return False
        columns = [c for c, _ in self.ctx.engine.columns(primary.table)]
        if any(not c.startswith("__sw_") for c in columns):
            return False
        name = self.pipeline.primary_source
        if not primary.position:  # a full read that found nothing: no incremental "nothing new"
            raise SourceError(
                f"source {name} returned no row, and no column is known (neither a contract "
                "nor declared fields name them): there is nothing to check or write. If an "
                "empty answer is normal, declare the source's columns (a contract, or `fields` "
                "for an api source) so the run can check and write an empty result.",
                context={"source": name},
            )
        self.result.primary_source = name
        self.result.sources[name] = {"rows_in": 0, "rows_rejected": 0}
        self.result.note = (
            f"source {name} read nothing new (no row, and no column known without a contract "
            "or declared fields): nothing was checked or written"
        )
        self.ctx.events.emit("commit_skipped", reason="no new input")
        return True

    def _read_sources(self, positions: dict[str, Any]) -> dict[str, SourceRead]:
        reads: dict[str, SourceRead] = {}
        for name, config in self.pipeline.sources.items():
            self.ctx.events.emit("progress", stage=f"reading source {name}")
            override = (
                self.options.source_override(self.ctx, name)
                if self.options.source_override
                else None
            )
            source = registry.lookup("source", config.type).impl(config)  # type: ignore[union-attr]
            read = override or self._read(source, name, config.contract, positions.get(name))
            reads[name] = read
            self.ctx.events.emit(
                "source_read",
                source=name,
                rows_in=read.rows_in,
                unparseable=read.parse_rejects.num_rows,
            )
        return reads

    def _run_key(self, reads: dict[str, SourceRead]) -> str:
        identity = {name: read.fingerprint for name, read in sorted(reads.items())}
        blob = json.dumps(
            [self.pipeline.pipeline, str(self.ctx.logical_date), identity],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def _reject_context(self, run_key: str) -> rejects.RejectContext:
        return rejects.RejectContext(
            self.pipeline.pipeline,
            self.ctx.run_id,
            run_key,
            self.ctx.logical_date,
            self.keys.encryption_key,
            bool(self.pipeline.pii),
        )

    def _validate_sources(
        self, reads: dict[str, SourceRead], run_key: str, dead_rows: list[Future[pa.Table]]
    ) -> dict[str, str]:
        valid: dict[str, str] = {}
        for name, read in reads.items():
            key, rows = run_key, dead_rows
            if self.options.batch is not None and name != self.pipeline.primary_source:
                # A lookup source is read again by every micro-batch: its rejects are kept
                # once per content, not once per batch.
                key = f"lookup:{name}:{read.fingerprint}"
                rows = self.lookup_dead_rows.setdefault(key, [])
            rctx = self._reject_context(key)
            parse_rows = rejects.parse_rejects_rows(read.parse_rejects, name, rctx)
            rows.append(_done(rejects.to_table(parse_rows, DEAD_LETTER_SCHEMA)))
            table, rejected = self._apply_contract(name, read, rctx, rows)
            counts = {
                "rows_in": read.rows_in,
                "rows_rejected": read.parse_rejects.num_rows + rejected,
            }
            self.result.sources[name] = counts
            if name == self.pipeline.primary_source:
                self.result.primary_source = name
                self.accounting.rows_in = read.rows_in
                self.accounting.rows_rejected = counts["rows_rejected"]
            self.ctx.engine.create_view(
                name, f"SELECT * EXCLUDE ({', '.join(META_COLUMNS)}) FROM {quote_ident(table)}"
            )
            valid[name] = table
            self.valid_tables[name] = table
            self.source_tables.add(table)
        return valid

    def _read(
        self, source: Any, name: str, contract: Any, position: dict[str, Any] | None
    ) -> SourceRead:
        """Read a source; a source that can shape rows as it loads them gets the contract's
        flagging query, so the contract costs no pass of its own."""
        if contract is not None and "shape" in inspect.signature(source.read).parameters:
            shape = contract_mod.flagging_query(
                contract, pii=self.pipeline.pii, masked_payload=self._payload_sql
            )
            return source.read(self.ctx, name, position=position, shape=shape)
        return source.read(self.ctx, name, position=position)

    def _apply_contract(
        self,
        name: str,
        read: SourceRead,
        rctx: rejects.RejectContext,
        dead_rows: list[Future[pa.Table]],
    ) -> tuple[str, int]:
        contract = self.pipeline.sources[name].contract
        if contract is None:
            return read.table, 0
        self.ctx.events.emit("progress", stage=f"checking the contract of {name}")
        if read.is_shaped:
            result = replace(
                contract_mod.split_flagged(self.ctx.engine, read.table),
                backing_tables=(read.table, *read.temp_tables),
            )
        else:
            result = contract_mod.apply_contract(
                self.ctx.engine,
                read.table,
                contract,
                pii=self.pipeline.pii,
                masked_payload=self._payload_sql,
            )
        built = rejects.contract_rejects_table(self.ctx.engine, result.rejected, name, rctx)
        dead_rows.append(self.workers.submit(rejects.seal, built, rctx, DEAD_LETTER_SCHEMA))
        self.source_tables.update(result.backing_tables)
        self._drop(read.table, *read.temp_tables, result.rejected)
        self.accounting.rows_warned += (
            result.rows_warned if name == self.pipeline.primary_source else 0
        )
        if result.rows_rejected:
            self.ctx.events.emit(
                "rows_rejected", source=name, rows=result.rows_rejected, stage="contract"
            )
        if contract.on_violation == "fail" and result.rows_rejected:
            self.contract_failure = TerminalError(
                f"source {name}: {result.rows_rejected} row(s) break the contract and on_violation is fail; "
                "they are in the dead-letter table (sluice dlq) for inspection"
            )
        return result.valid, result.rows_rejected

    def _payload_sql(self, columns: list[str]) -> str:
        return self.pii.payload_sql(columns)

    def _apply_steps(self, table: str, *, rows: int) -> str:
        """Run the steps; `rows` is how many rows `table` holds.

        A step that promises to keep the row count (`defers_count`) is not counted on its
        own: its promise is verified by the next count the run makes anyway (a step that
        needs its input's count, or the staged result). At most one promise waits at a time:
        two waiting steps could cancel out (one drops a row, the next adds one), so the
        next step of either kind first counts its input.
        """
        self.expected_rows = rows
        for index, config in enumerate(self.pipeline.steps):
            self.ctx.events.emit(
                "progress", stage=f"step {index + 1}/{len(self.pipeline.steps)}: {config.key}"
            )
            step = registry.lookup("step", config.key).impl(config)  # type: ignore[union-attr]
            label = f"steps[{index}].{config.key}"
            defers = bool(getattr(step, "defers_count", False))
            if self.deferred:
                self._verify_deferred(self.ctx.engine.count(table))
            step_started = time.monotonic()
            try:
                out, attempts = apply_step(
                    step,
                    config,
                    self.ctx,
                    table,
                    rows_in=self.expected_rows,
                    label=label,
                    sleep=self.options.sleep,
                    run_deadline=self.options.deadline,
                )
            except SluicewayError as exc:
                raise exc.with_context(step=label) from exc.__cause__
            if defers:
                self.deferred.append(_Deferred(label, step, self.expected_rows, out.table))
            if out.rows is not None:
                self.expected_rows = out.rows
            self.accounting.rows_deduplicated += out.deduplicated
            self.accounting.rows_filtered += out.filtered
            timing = {
                "step": config.key,
                "index": index,
                "deduplicated": out.deduplicated,
                "filtered": out.filtered,
                "duration_s": round(time.monotonic() - step_started, 3),
                "attempts": attempts,
            }
            self.result.steps.append(timing)
            self.ctx.events.emit("step_done", **timing)
            self.intermediates.append(table)
            self.step_outputs.append((label, out.table))
            table = out.table
        return table

    def _route(self, table: str, run_key: str, dead_rows: list[Future[pa.Table]]) -> str:
        """Send the rows that fail an `on_fail: dead_letter` check to the dead letters."""
        checks = self.pipeline.checks
        if not routing_checks(checks):
            return table
        self.ctx.events.emit("progress", stage="routing rows that fail dead_letter checks")
        engine = self.ctx.engine
        names = {c for c, _ in engine.columns(table)}
        kept_bookkeeping = set(META_COLUMNS) <= names
        judged, deletes = self._without_deletes(table, names)
        routed = route_rows(engine, judged, checks, self._check_env())
        self.intermediates += [routed.failed, routed.kept]
        self._verify_deferred(routed.rows_before + deletes)
        self.expected_rows = routed.rows_before + deletes - routed.rows_routed
        self.routed_results = routed.results
        columns = [c for c, _ in engine.columns(routed.failed)]
        data = data_columns(columns)
        raw = (
            f"to_json(struct_pack({', '.join(quote_ident(c) for c in data)}))::VARCHAR"
            if data
            else "'{}'"
        )
        rejected = engine.create_table(
            engine.new_name("routed_rows"),
            failed_rows_sql(routed, columns, self._payload_sql(data), raw),
            purpose="collect rows that failed dead_letter checks",
        )
        rctx = self._reject_context(run_key)
        built = rejects.contract_rejects_table(
            engine, rejected, self.pipeline.primary_source, rctx, stage="check"
        )
        self._drop(rejected)
        dead_rows.append(self.workers.submit(rejects.seal, built, rctx, DEAD_LETTER_SCHEMA))
        self.accounting.rows_rejected += routed.rows_routed
        if self.options.is_replay and routed.rows_routed and not kept_bookkeeping:
            raise TerminalError(
                f"{routed.rows_routed} replayed row(s) failed on_fail: dead_letter checks, and the "
                "steps drop the bookkeeping columns (__sw_file, __sw_row), so they cannot be matched "
                "to their dead letters; nothing was replayed. Keep the columns in the SQL steps "
                "(SELECT *, ...) or fix the rows first"
            )
        if routed.rows_routed:
            self.ctx.events.emit(
                "rows_rejected", source="checks", rows=routed.rows_routed, stage="check"
            )
        if not deletes:
            return routed.kept
        return engine.create_view(
            engine.new_name("kept"),
            f"SELECT * FROM {quote_ident(routed.kept)} UNION ALL BY NAME "
            f"SELECT * FROM {quote_ident(table)} WHERE {CHANGE_OP} = 'd'",
        )

    def _without_deletes(self, table: str, columns: set[str]) -> tuple[str, int]:
        """`table` (whose columns are `columns`) without its change-capture deletes, which
        checks do not judge (a delete carries the key, not a row: routed or failed for its
        NULLs, it would leave the deleted row in the table), and how many there were."""
        engine = self.ctx.engine
        if CHANGE_OP not in columns:
            return table, 0
        (deletes,) = engine.fetch_one(
            f"SELECT count(*) FROM {quote_ident(table)} WHERE {CHANGE_OP} = 'd'",
            purpose="count change-capture deletes",
        )
        if not deletes:
            return table, 0
        rows = engine.create_view(
            engine.new_name("judged"),
            f"SELECT * FROM {quote_ident(table)} WHERE {CHANGE_OP} IS DISTINCT FROM 'd'",
        )
        return rows, int(deletes)

    def _verify_deferred(self, actual: int) -> None:
        """Check the row-count promises of the steps not counted yet against `actual`."""
        if actual != self.expected_rows:
            for deferred in self.deferred:
                try:
                    deferred.step.verify(
                        deferred.rows_before, self.ctx.engine.count(deferred.table)
                    )
                except SluicewayError as exc:
                    raise exc.with_context(step=deferred.label) from exc.__cause__
            raise AccountingError(
                f"the steps left {actual} rows where {self.expected_rows} were expected; nothing was published"
            )
        self.deferred.clear()

    def _stage(self, table: str) -> str:
        """Drop bookkeeping columns and mask PII into an Arrow table: what checks and sinks see.

        The staged rows leave DuckDB once, as Arrow; checks query them in place (a view over
        the Arrow table) and the sinks write the same table.
        """
        columns = [c for c, _ in self.ctx.engine.columns(table) if c not in META_COLUMNS]
        self.ctx.events.emit("progress", stage="masking and staging")
        source = self.valid_tables.get(self.pipeline.primary_source)
        select, maps = self.pii.staging_select(table, columns, source)
        try:
            self.staged = self.ctx.engine.fetch_arrow(select, purpose="stage the result")
        except StepError as exc:
            if _is_interrupt(exc):
                raise
            raise self._failing_step(exc) from exc.__cause__
        self._drop(*maps)
        return self.ctx.engine.register_view(self.ctx.engine.new_name("staged"), self.staged)

    def _failing_step(self, exc: StepError) -> StepError:
        """The step whose SQL fails when the result is computed. A row-preserving step is a
        view until the staging query (with the masking) reads it, so its error would else
        quote that query and name no step: each step's result is read in order until one
        fails (on this failure path only)."""
        for label, output in self.step_outputs:
            try:
                self.ctx.engine.fetch_one(
                    f"SELECT count(hash(v)) FROM {quote_ident(output)} AS v",
                    purpose=f"{label} (computed at staging)",
                )
            except StepError as failed:
                if _is_interrupt(failed):
                    raise
                cause = failed.message.split(" failed: ", 1)[-1]
                return StepError(
                    f"{label} failed when its rows were computed: {cause}",
                    context={"step": label},
                )
        return exc

    def _drop(self, *tables: str) -> None:
        """Free intermediate tables; a source's valid rows stay (steps join them by name)."""
        self.ctx.engine.drop(*(t for t in tables if t not in self.source_tables))

    def _write_dead_letters(self, rows: list[Future[pa.Table]], run_key: str) -> None:
        self.ctx.events.emit("progress", stage="writing dead letters")
        config = self.pipeline.dead_letter
        uri = self.ctx.resolve(config.path) if config else str(self.ctx.state_dir / "dead_letter")
        table = DeadLetterTable(uri, config.storage_options if config else {})
        data = rejects.combine([row.result() for row in rows], DEAD_LETTER_SCHEMA)
        self.result.dead_letters = data
        if self.options.is_replay:
            self.result.dead_letter_uri = uri
            return
        if data.num_rows or table.exists():
            table.write(
                data,
                pipeline=self.pipeline.pipeline,
                run_key=run_key,
                metadata={"sluice.run_id": self.ctx.run_id},
            )
        self.result.dead_letter_uri = uri
        self.result.dead_letter_rows = data.num_rows
        self.result.rejected_by_rule = rejects.rule_counts(data)
        for key, parts in self.lookup_dead_rows.items():
            lookup = rejects.combine([part.result() for part in parts], DEAD_LETTER_SCHEMA)
            if lookup.num_rows and (uri, key) not in _LOOKUP_REJECTS_WRITTEN:
                _LOOKUP_REJECTS_WRITTEN.add((uri, key))
                table.write(
                    lookup,
                    pipeline=self.pipeline.pipeline,
                    run_key=key,
                    metadata={"sluice.run_id": self.ctx.run_id},
                )
        if data.num_rows:
            self.ctx.events.emit("dead_letter_written", rows=data.num_rows, uri=uri)
        if self.contract_failure is not None:
            raise self.contract_failure

    def _audit(self, staged: str) -> None:
        self.ctx.events.emit("progress", stage="auditing the staged result")
        engine, checks = self.ctx.engine, self.pipeline.checks
        started, statements = time.monotonic(), engine.statements
        env = self._check_env()
        routed = self.routed_results
        audited = [c for i, c in enumerate(checks) if i not in routed]
        staged, _ = self._without_deletes(staged, set(self.staged.column_names))
        found = evaluate_checks(engine, staged, audited, env) if audited else []
        sampled = iter(sample_unexpected(engine, staged, audited, found, env))
        found_iter = iter(found)
        results = [routed[i] if i in routed else next(found_iter) for i in range(len(checks))]
        samples = [[] if i in routed else next(sampled) for i in range(len(checks))]
        self.audit = AuditRecord(
            statements=engine.statements - statements,
            duration_s=round(time.monotonic() - started, 3),
            samples=samples,
        )
        self.result.checks = results
        self.has_audited = True
        self.ctx.events.emit(
            "checks_done",
            passed=sum(r.status == "passed" for r in results),
            failed=sum(r.status != "passed" for r in results),
        )
        blocking = [] if self.options.is_replay else blocking_failures(results)
        if blocking:
            self.result.staged_path = self._keep_staged(staged, results)
            names = [r.name for r in blocking]
            self.ctx.events.emit("gate_failed", checks=names)
            raise GateFailed(
                f"{len(blocking)} error check(s) failed, nothing was published: {', '.join(names)}. "
                f"The staged result and check results are in {self.result.staged_path}",
                failed=names,
            )
        self._check_pass_rate()
        self.check_env = env

    def _check_pass_rate(self) -> None:
        """The spec's `quality.pass_rate` gates the run: below it nothing is published. Any
        run (not a stream batch, nor a replay) that rejected every row also warns."""
        acc = self.accounting
        if acc.rows_in == 0 or self.options.is_replay or self.options.batch is not None:
            return
        passed = (acc.rows_in - acc.rows_rejected) / acc.rows_in
        target = self.pipeline.quality.pass_rate if self.pipeline.quality else None
        worst = sorted(self.result.rejected_by_rule.items(), key=lambda item: -item[1])[:3]
        rules = ", ".join(f"{rule} ({count:,})" for rule, count in worst) or "-"
        said = (
            f"{acc.rows_rejected:,} of {acc.rows_in:,} rows were rejected ({passed:.1%} passed; "
            f"most by {rules}); they are in the dead-letter table {self.result.dead_letter_uri}"
        )
        if target is not None and passed < target:
            self.ctx.events.emit("gate_failed", checks=["quality.pass_rate"])
            raise GateFailed(
                f"{said}. That is below quality.pass_rate {target:.1%}: nothing was published. "
                "Fix the input (or the contract), then run again",
                failed=["quality.pass_rate"],
            )
        if acc.rows_rejected == acc.rows_in:
            self.ctx.events.emit(
                "all_rows_rejected",
                hint=f"{said}. A column missing from every row often means a wrong delimiter "
                "or a renamed header; set quality.pass_rate to fail such a run",
            )

    def _keep_profile(self, staged: str) -> None:
        """Profile the published result: the baseline of the drift checks of later dates.
        A run that published nothing leaves the previous baseline in place."""
        if self.options.is_replay or self.check_env is None or self.staged.num_rows == 0:
            return
        if any(c.key == "drift" for c in self.pipeline.checks):
            self.ctx.events.emit("progress", stage="profiling the result for drift checks")
            store_run_profile(
                self.ctx.engine, staged, self.check_env, pii_columns=self.pipeline.pii
            )

    def _check_env(self) -> CheckEnv:
        """What the checks may know: the logical time, the metric history of earlier dates
        and the pipeline's sources by name."""
        pipeline, before = self.pipeline.pipeline, str(self.ctx.logical_date)

        def history(check_id: str, metric: str) -> list[Any]:
            return self.store.metric_history(
                pipeline, check_id, metric, before=before, limit=20_000
            )

        return CheckEnv(
            pipeline=pipeline,
            logical_date=self.ctx.logical_date,
            logical_time=self.logical_time,
            history=history,
            state_dir=self.ctx.state_dir,
            tables=dict(self.valid_tables),
            base_dir=self.ctx.base_dir,
            pii_columns=frozenset(self.pipeline.pii),
        )

    def _write_results(self) -> None:
        """Write the audited checks to results/<run_id>.json once the run's status is known."""
        if self.audit is None:
            return
        path = self.ctx.state_dir / "results" / f"{self.ctx.run_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        document = self.result.results_document(self.audit)
        path.write_text(json.dumps(document, indent=2, default=str))
        self.result.results_path = str(path)

    def _keep_staged(self, staged: str, results: list[CheckResult]) -> str:
        folder = self.ctx.state_dir / "staging" / self.ctx.run_id
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            self.staged,
            folder / "staged.parquet",
            compression="zstd",
        )
        (folder / "checks.json").write_text(
            json.dumps([r.to_dict() for r in results], indent=2, default=str)
        )
        return str(folder)

    def _publish(
        self, sinks: list[Any], staged: str, run_key: str, positions: dict[str, Any]
    ) -> None:
        if self.accounting.rows_in == 0:
            self.ctx.events.emit("commit_skipped", reason="no new input")
            return
        if self.options.is_replay and self.staged.num_rows == 0:
            self.ctx.events.emit("commit_skipped", reason="no dead letter passed")
            return
        data: pa.Table = self.staged
        metadata = {
            "sluice.pipeline": self.pipeline.pipeline,
            "sluice.run_id": self.ctx.run_id,
            "sluice.spec_hash": self.pipeline.spec_hash(),
            "sluice.logical_date": str(self.ctx.logical_date),
            "sluice.accounting": json.dumps(self.accounting.to_dict(), sort_keys=True),
        }
        for index, sink in enumerate(sinks):
            self.ctx.events.emit("progress", stage=f"writing sink {index + 1}/{len(sinks)}")
            request = WriteRequest(
                data=data,
                idempotency_key=run_key,
                metadata=metadata,
                positions=positions,
                append_only=self.options.is_replay,
                transactions=self.options.batch.transactions if self.options.batch else (),
                positions_complete=not self.options.is_replay,
            )
            try:
                written = sink.write(self.ctx, request)
            except SluicewayError as exc:
                raise exc.with_context(sink=f"sinks[{index}]") from exc.__cause__
            self.result.sinks.append(written)
            self.has_committed = len(self.result.sinks) == len(sinks)
            self.ctx.events.emit(
                "commit_skipped" if written.skipped else "commit_done",
                sink=written.uri,
                version=written.version,
                rows=written.rows_written,
            )

    def _record(self, status: str) -> None:
        self.store.save(self.result.to_record(status, spec_hash=self.pipeline.spec_hash()))
