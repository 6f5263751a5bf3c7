"""The `dedup` step: one row per key, the first or last by an order column.

In a `mode: stream` pipeline with a `window`, a key seen in an earlier committed batch within
the window is a duplicate too. The seen keys live in `window_state`: the step saves the
batch's new keys before the batch commits (tagged with its sequence, so only committed
batches count on reload) and hands the next state to `ctx.after_commit`, so the state in
memory moves forward only with committed data.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Literal, cast

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from sluiceway.core import registry
from sluiceway.core.context import ROW_FILE, ROW_NUMBER, RunContext, StepOutput
from sluiceway.core.events import EventName
from sluiceway.core.spec import StepConfig
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident, quote_literal
from sluiceway.errors import StepError
from sluiceway.masking.crypto import hmac_pads
from sluiceway.transforms.window_state import SEEN_AT, KeyState, key_state, parse_window

_STATE_UNSAVED = cast(EventName, "dedup_state_unsaved")
_STATE_MISSING = cast(EventName, "dedup_state_missing")


class DedupStepConfig(StepConfig):
    """Keep one row per key."""

    key: ClassVar[str] = "dedup"
    shorthand: ClassVar[str | None] = "keys"
    keys: list[str] = Field(min_length=1, description="Columns that identify a row.")
    order_by: str | None = Field(
        None, description="Column that orders duplicates (default: arrival order: file, then row)."
    )
    keep: Literal["first", "last"] = Field(
        "first", description="Which duplicate to keep within a batch (across batches: the first)."
    )
    window: str | None = Field(
        None,
        description="Streams only: a key seen in an earlier committed batch within this long "
        "('5m', '1h', '1d') is a duplicate too. Batch runs (and replays) dedup the whole run "
        "and ignore it.",
    )
    time_column: str | None = Field(
        None,
        description="Event-time column the window is measured on (default: arrival time).",
    )
    max_keys: int = Field(
        1_000_000,
        ge=1,
        description="Most keys the window remembers; beyond it the oldest are forgotten first.",
    )

    @field_validator("window")
    @classmethod
    def _window_is_a_duration(cls, window: str | None) -> str | None:
        if window is not None:
            parse_window(window)
        return window


class DedupStep:
    """Deterministic dedup: ties on the order column break by arrival order."""

    def __init__(self, config: DedupStepConfig) -> None:
        self.config = config
        self.keys_sql = ", ".join(quote_ident(k) for k in config.keys)

    def apply(self, ctx: RunContext, table: str, *, rows_in: int | None = None) -> StepOutput:
        """Keep the first (or last) row of every key.

        The result is a view (the window runs once, when the result is staged); the number
        of rows it keeps is the number of distinct keys, counted by an aggregate. With a
        `window` in a stream, keys of earlier committed batches count as seen (see
        `_apply_windowed`).
        """
        engine = ctx.engine
        in_batch = self._dedup_view(engine, table)
        before = engine.count(table) if rows_in is None else rows_in
        if (
            self.config.window is not None
            and ctx.pipeline.mode == "stream"
            and ctx.batch_sequence is not None
        ):
            return self._apply_windowed(ctx, table, in_batch, before, ctx.batch_sequence)
        kept = int(
            engine.fetch_one(
                f"SELECT count(*) FROM (SELECT DISTINCT {self.keys_sql} FROM {quote_ident(table)})",
                purpose="count distinct keys",
            )[0]
        )
        return StepOutput(in_batch, deduplicated=before - kept, rows=kept)

    def _dedup_view(self, engine: DuckDBEngine, table: str) -> str:
        direction = "ASC" if self.config.keep == "first" else "DESC"
        order = (
            [f"{quote_ident(self.config.order_by)} {direction} NULLS LAST"]
            if self.config.order_by
            else []
        )
        present = {c for c, _ in engine.columns(table)}
        order += [f"{c} {direction}" for c in (ROW_FILE, ROW_NUMBER) if c in present]
        over = f"PARTITION BY {self.keys_sql}" + (f" ORDER BY {', '.join(order)}" if order else "")
        return engine.create_view(
            engine.new_name("dedup"),
            f"SELECT * FROM {quote_ident(table)} QUALIFY row_number() OVER ({over}) = 1",
            purpose="dedup step",
        )

    def _apply_windowed(
        self, ctx: RunContext, table: str, in_batch: str, before: int, sequence: int
    ) -> StepOutput:
        """Drop the keys seen in earlier committed batches within the window.

        The rows kept are a table (read several times by the steps after), not a view. The
        seen keys older than the window (measured back from the newest time seen) are
        evicted; the batch's new keys, with the time of their first row, are added; past
        `max_keys` the oldest go. That next state is handed to `ctx.after_commit`: a batch
        that never commits leaves the state as it was.
        """
        engine = ctx.engine
        pii = {name.casefold() for name in ctx.pipeline.pii}
        hashed = {k for k in self.config.keys if k.casefold() in pii}
        # The state is on disk: a PII key is kept as a keyed digest, never in clear nor as a
        # plain hash a dictionary reverses. Its own state folder (the digest of the keys,
        # the marks included, names it), so a new key starts a new window.
        digest = _state_digest(ctx, hashed)
        marks = [f"{digest.mark}:{k}" for k in sorted(hashed)] if digest else []
        state = key_state(ctx.state_dir, ctx.pipeline.pipeline, [*self.config.keys, *marks])
        state.load(sequence - 1)
        if state.is_missing:
            state.is_missing = False  # said once per stream run
            ctx.events.emit(
                _STATE_MISSING,
                path=str(state.folder),
                committed=sequence - 1,
                hint=f"dedup on {', '.join(self.config.keys)}: the stream committed "
                f"{sequence - 1} batch(es) but this folder holds no dedup state, so keys "
                "seen before this run are unknown and their duplicates within the window are "
                "written. If earlier runs kept it under another state folder, run from the "
                "same folder or pass --state-dir (or SLUICE_HOME) pointing at it; after a "
                "change of the dedup keys this is expected once",
            )
        row_time, watermark = self._row_time(engine, table, state.table)
        cutoff = _timestamp(watermark - parse_window(self.config.window or ""))
        stored = ", ".join(
            f"{_stored(k, hashed, digest)} AS {quote_ident(k)}" for k in self.config.keys
        )
        first_seen = (
            f"SELECT {stored}, min({row_time}) AS {SEEN_AT} FROM {quote_ident(table)} GROUP BY ALL"
        )
        seen = None
        if state.table is not None:
            arrow = engine.register_view(engine.new_name("dedup_state"), state.table)
            seen = engine.create_view(
                engine.new_name("dedup_seen"),
                f"SELECT * FROM {quote_ident(arrow)} WHERE {SEEN_AT} >= {cutoff}",
                purpose="keys seen within the window",
            )
        # Materialised once: in a stream the steps after dedup (enrichment lookups, staging)
        # read its rows several times, and each read of a view would redo the window.
        if seen is not None and self._kept_row_is_first_seen(engine, table):
            # The row kept for a key is its earliest: its time is the key's first-seen time,
            # so one anti-join of the kept rows against the window gives both the rows and
            # the new keys (no group-by of the batch, no second join).
            in_batch = engine.create_table(
                engine.new_name("dedup_kept"),
                self._anti_join(f"SELECT * FROM {quote_ident(in_batch)}", seen, hashed, digest),
                purpose="keep the first row of each new key",
            )
            fresh = engine.create_table(
                engine.new_name("dedup_fresh"),
                f"SELECT {stored}, {row_time} AS {SEEN_AT} FROM {quote_ident(in_batch)}",
                purpose="new keys of the batch",
            )
        else:
            if seen is not None:
                first_seen = self._anti_join(first_seen, seen, set(), None)
            fresh = engine.create_table(
                engine.new_name("dedup_fresh"), first_seen, purpose="new keys of the batch"
            )
            # The rows kept are those of the batch's new keys: a semi-join on `fresh` (the
            # batch's keys) instead of a second anti-join against every key of the window.
            on = " AND ".join(
                f"{_stored(k, hashed, digest, 'b')} IS NOT DISTINCT FROM f.{quote_ident(k)}"
                for k in self.config.keys
            )
            in_batch = engine.create_table(
                engine.new_name("dedup_kept"),
                f"SELECT b.* FROM {quote_ident(in_batch)} b SEMI JOIN {quote_ident(fresh)} f "
                f"ON {on}"
                if seen is not None
                else f"SELECT * FROM {quote_ident(in_batch)}",
                purpose="keep the first row of each new key",
            )
        kept = engine.count(fresh)
        new_keys = engine.fetch_arrow(
            f"SELECT * FROM {quote_ident(fresh)} WHERE {SEEN_AT} >= {cutoff}",
            purpose="new keys within the window",
        )
        engine.drop(fresh)
        # On disk before the batch commits: a committed batch always has its keys saved.
        state.record(sequence, new_keys)
        next_state = self._next_state(engine, seen, new_keys)
        ctx.after_commit.append(lambda: _save(ctx, state, sequence, next_state))
        return StepOutput(in_batch, deduplicated=before - kept, rows=kept)

    def _kept_row_is_first_seen(self, engine: DuckDBEngine, table: str) -> bool:
        """True when the row the step keeps for a key carries the key's first-seen time:
        arrival time (every row of a batch has the same), or `keep: first` ordered by the
        time column itself when it is a typed time (ordered as the window measures it)."""
        column = self.config.time_column
        if column is None:
            return True
        if self.config.keep != "first" or self.config.order_by != column:
            return False
        types = dict(engine.columns(table))
        return str(types.get(column, "")).upper().startswith(("TIMESTAMP", "DATE"))

    def _row_time(
        self, engine: DuckDBEngine, table: str, seen: pa.Table | None
    ) -> tuple[str, datetime]:
        """The SQL time of a row and the newest time known (the window ends there)."""
        now = datetime.now(UTC).replace(tzinfo=None)
        column = self.config.time_column
        if column is None:
            return _timestamp(now), now
        if column not in {c for c, _ in engine.columns(table)}:
            raise StepError(
                f"dedup time_column '{column}' is not a column of the step's input: name the "
                "event-time column, or leave time_column out to use arrival time"
            )
        event_time = f"CAST({quote_ident(column)} AS TIMESTAMP)"
        newest = engine.fetch_one(
            f"SELECT max({event_time}) FROM {quote_ident(table)}", purpose="newest event time"
        )[0]
        known = [t for t in (newest, _newest(seen)) if t is not None]
        watermark = max(known) if known else now
        return f"coalesce({event_time}, {_timestamp(newest or watermark)})", watermark

    def _anti_join(self, select: str, seen: str, hashed: set[str], digest: _Digest | None) -> str:
        """Rows of `select` whose key is not in the state `seen` (`hashed`: key columns of
        `select` still in clear, which the state holds as their `digest`)."""
        on = " AND ".join(
            f"{_stored(k, hashed, digest, 'b')} IS NOT DISTINCT FROM s.{quote_ident(k)}"
            for k in self.config.keys
        )
        return f"SELECT b.* FROM ({select}) b ANTI JOIN {quote_ident(seen)} s ON {on}"

    def _next_state(self, engine: DuckDBEngine, seen: str | None, new_keys: pa.Table) -> pa.Table:
        """Keys seen within the window plus the batch's new ones within it, the newest
        `max_keys` of them."""
        table = new_keys
        if seen is not None:
            added = engine.register_view(engine.new_name("dedup_new"), new_keys)
            table = engine.fetch_arrow(
                f"SELECT * FROM {quote_ident(seen)} UNION ALL BY NAME "
                f"SELECT * FROM {quote_ident(added)}",
                purpose="next dedup state",
            )
            engine.unregister(added)
        if table.num_rows <= self.config.max_keys:
            return table
        newest_first = pc.sort_indices(table, sort_keys=[(SEEN_AT, "descending")])
        return table.take(newest_first[: self.config.max_keys])


@dataclass(frozen=True)
class _Digest:
    """HMAC-SHA-256 under a key of the state's own, derived from a masking key."""

    inner: bytes
    outer: bytes
    mark: str  # names the key in the state folder's digest, never reveals it

    def sql(self, column_sql: str) -> str:
        text = f"encode(CAST({column_sql} AS VARCHAR))"
        inner = f"unhex(sha256(from_hex('{self.inner.hex()}') || {text}))"
        return f"sha256(from_hex('{self.outer.hex()}') || {inner})"


def _state_digest(ctx: RunContext, hashed: set[str]) -> _Digest | None:
    """The digest of PII keys in the state, keyed by a key derived from the pipeline's
    masking keys (a PII pipeline always has SLUICE_ENCRYPTION_KEY, for its dead letters)."""
    if not hashed:
        return None
    keys = ctx.secrets
    secret = None
    if keys is not None:
        secret = keys.encryption_key or keys.hmac_key or keys.salt
    if secret is None:
        raise StepError(
            f"dedup on the PII column(s) {', '.join(sorted(hashed))} keeps their keys on disk "
            "as a keyed digest: set SLUICE_ENCRYPTION_KEY (the key the dead letters use)"
        )
    derived = hmac.digest(secret, b"sluiceway dedup state", "sha256")
    inner, outer = hmac_pads(derived)
    return _Digest(inner, outer, "hmac-" + hmac.digest(derived, b"mark", "sha256")[:4].hex())


def _stored(key: str, hashed: set[str], digest: _Digest | None, alias: str | None = None) -> str:
    """A key column as the state holds it: a PII key as its keyed digest."""
    column = f"{alias}.{quote_ident(key)}" if alias else quote_ident(key)
    return digest.sql(column) if key in hashed and digest is not None else column


def _save(ctx: RunContext, state: KeyState, sequence: int, table: pa.Table) -> None:
    """Commit the next state; a base file that cannot be written is reported, not raised
    (the batch is committed and its keys are on disk as a segment already)."""

    def unsaved(exc: OSError) -> None:
        ctx.events.emit(_STATE_UNSAVED, path=str(state.folder), error=str(exc), keys=table.num_rows)

    state.commit(sequence, table, on_error=unsaved)


def _newest(seen: pa.Table | None) -> datetime | None:
    if seen is None or seen.num_rows == 0:
        return None
    return cast(datetime | None, pc.max(seen.column(SEEN_AT)).as_py())


def _timestamp(value: datetime | timedelta) -> str:
    return f"TIMESTAMP {quote_literal(str(value))}"


registry.register("step", "dedup", DedupStepConfig, DedupStep)
