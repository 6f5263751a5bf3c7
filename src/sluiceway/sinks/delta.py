"""The Delta Lake sink: append, partition overwrite or keyed merge, positions in the same commit.

Every commit carries the run's metadata, the source positions (``sluice.positions``) and the
idempotency key, plus a Delta app transaction ``(sluice:<pipeline>:<key>, 1)``. The table is
the ledger: `committed_positions` reads where each source stopped from the table history.
The positions of a commit are the pipeline's whole positions after it (marked
``sluice.positions_complete``), so only the newest commits are read: a restart costs the
same after a million commits as after ten, and commits that the log's cleanup removed take
nothing with them. Commits written before the mark are merged, oldest first.

How each mode stays idempotent:

- ``append``: before writing, the sink asks the table for the app transaction of the
  request's idempotency key. If it is already set, that exact input was committed and the
  write is skipped (``WriteResult(skipped=True)``). The same inputs never land twice.
- ``overwrite_partition``: a predicate overwrite (``replace_where``, or the partition values
  present in the data) replaces what a previous run wrote; a rerun recomputes and converges.
- ``merge``: an upsert on ``merge_keys`` is naturally idempotent.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, Self

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, SchemaMismatchError
from pydantic import Field, model_validator

from sluiceway.core import registry
from sluiceway.core.context import RunContext, WriteRequest, WriteResult
from sluiceway.core.durations import parse_duration
from sluiceway.core.spec import SinkConfig
from sluiceway.core.spec_meta import TierConfig
from sluiceway.core.storage import (
    StorageOptions,
    delta_storage_options,
    merge_positions,
    prepare_local,
    storage_errors,
)
from sluiceway.engines.duckdb import quote_ident, quote_literal
from sluiceway.errors import SinkError

DeltaMode = Literal["append", "overwrite_partition", "merge"]

PIPELINE_KEY = "sluice.pipeline"
POSITIONS_KEY = "sluice.positions"
COMPLETE_KEY = "sluice.positions_complete"
IDEMPOTENCY_KEY = "sluice.idempotency_key"
LOGICAL_DATE_PLACEHOLDER = "{logical_date}"

WRITER_PROPERTIES = WriterProperties(compression="ZSTD")


class DeltaSinkConfig(SinkConfig):
    """A Delta Lake table (local path or s3://)."""

    type: Literal["delta"] = Field(default="delta", description="The sink plug-in: delta.")
    path: str = Field(
        description="Table location: a path (relative to the spec) or s3://bucket/path."
    )
    mode: DeltaMode = Field(
        default="append",
        description="append: add rows once per idempotency key; overwrite_partition: replace "
        "the partitions written (or replace_where); merge: upsert on merge_keys.",
    )
    partition_by: list[str] = Field(
        default_factory=list, description="Partition columns of the table, e.g. [event_date]."
    )
    merge_keys: list[str] = Field(
        default_factory=list,
        description="Columns identifying a row for mode: merge (one row per key).",
    )
    replace_where: str | None = Field(
        default=None,
        description="SQL predicate of the rows overwrite_partition replaces; may use "
        "{logical_date}. Default: partition_by IN the values present in the data.",
    )
    storage_options: StorageOptions = Field(
        default_factory=dict,
        repr=False,
        description="Object-store options (endpoint_url, region, access_key_id, "
        "secret_access_key, allow_http or AWS_* names; use ${ENV} for secrets).",
    )
    target_file_size: int | None = Field(
        default=None,
        gt=0,
        description="Target size in bytes of the data files written (delta-rs default when unset).",
    )

    zorder_by: list[str] = Field(
        default_factory=list, description="Columns `sluice optimize` clusters files by (Z-order)."
    )
    tiers: list[TierConfig] = Field(
        default_factory=list,
        description="Colder storage tiers, in order of age; `sluice tier` moves partitions "
        "older than each tier's `after` there. Readers see one table across tiers.",
    )
    tier_by: str | None = Field(
        default=None,
        description="Date partition column that ages partitions (default: the first of "
        "partition_by).",
    )

    @model_validator(mode="after")
    def _check_tiers(self) -> Self:
        if not self.tiers:
            if self.tier_by:
                raise ValueError("tier_by only applies when tiers are declared")
            return self
        if not self.partition_by:
            raise ValueError("tiers move whole partitions: declare partition_by (a date column)")
        if self.tier_by and self.tier_by not in self.partition_by:
            raise ValueError(
                f"tier_by '{self.tier_by}' is not one of partition_by {self.partition_by}"
            )
        names = [tier.name for tier in self.tiers]
        if len(set(names)) != len(names) or "hot" in names:
            raise ValueError(f"tier names must be unique and not 'hot' (got {names})")
        ages = [parse_duration(tier.after) for tier in self.tiers]
        if ages != sorted(ages) or len(set(ages)) != len(ages):
            raise ValueError("tiers must be listed from youngest to oldest `after`")
        return self

    @model_validator(mode="after")
    def _check_mode_options(self) -> Self:
        if self.mode == "merge" and not self.merge_keys:
            raise ValueError(
                "mode: merge needs merge_keys, the columns that identify a row "
                "(e.g. merge_keys: [order_id])"
            )
        if self.mode == "overwrite_partition" and not (self.partition_by or self.replace_where):
            raise ValueError(
                "mode: overwrite_partition needs partition_by (replace the partitions present "
                "in the data) or replace_where (an SQL predicate such as "
                "\"event_date = '{logical_date}'\")"
            )
        if self.replace_where and self.mode != "overwrite_partition":
            raise ValueError("replace_where only applies to mode: overwrite_partition")
        if self.merge_keys and self.mode != "merge":
            raise ValueError("merge_keys only apply to mode: merge")
        return self


@dataclass(frozen=True)
class _Job:
    """One write: the table, the request and the commit it becomes."""

    config: DeltaSinkConfig
    uri: str
    options: dict[str, str] | None
    data: pa.Table
    app_id: str
    commit: CommitProperties
    logical_date: date
    transactions: tuple[tuple[str, int], ...] = ()
    colder: tuple[tuple[str, dict[str, str] | None], ...] = ()
    """The colder tiers' (uri, storage options): rows a write replaces may live there."""

    def is_committed(self, table: DeltaTable) -> bool:
        """True when the table already holds this write's app transaction(s)."""
        if not self.transactions:
            return table.transaction_version(self.app_id) is not None
        return any(
            (table.transaction_version(app) or -1) >= version for app, version in self.transactions
        )

    def open(self) -> DeltaTable | None:
        return _open_table(self.uri, self.options)

    def write(self, table: DeltaTable | None, *, replace: str | None = None) -> int:
        """Append to `table` (None: create it), or overwrite the rows matching `replace`.

        New nullable columns evolve the schema. Returns the new table version.
        """
        settings: dict[str, Any] = {
            "schema_mode": "merge",
            "partition_by": self.config.partition_by or None,
            "storage_options": self.options if table is None else None,
            "target_file_size": self.config.target_file_size,
            "writer_properties": WRITER_PROPERTIES,
            "commit_properties": self.commit,
        }
        target = table if table is not None else self.uri
        if replace is None:
            write_deltalake(target, self.data, mode="append", **settings)
        else:
            write_deltalake(target, self.data, mode="overwrite", predicate=replace, **settings)
        if table is not None:
            return table.version()
        return DeltaTable(self.uri, storage_options=self.options).version()

    def result(self, version: int | None, *, skipped: bool = False) -> WriteResult:
        rows = 0 if skipped else self.data.num_rows
        return WriteResult(uri=self.uri, rows_written=rows, version=version, skipped=skipped)


class DeltaSink:
    """Writes audited rows to a Delta table, atomically with the source positions.

    Idempotency: ``append`` records the request's idempotency key as a Delta app
    transaction in the same commit as the data; a request whose key is already recorded
    writes nothing and returns ``skipped=True``, so the same inputs never land twice.
    ``overwrite_partition`` and ``merge`` always write (a rerun recomputes and converges).

    Args:
        config: the validated sink config.
    """

    def __init__(self, config: DeltaSinkConfig) -> None:
        self.config = config

    def __repr__(self) -> str:
        return f"DeltaSink(path={self.config.path!r}, mode={self.config.mode!r})"

    def write(self, ctx: RunContext, request: WriteRequest) -> WriteResult:
        """Commit `request.data` with its positions (or nothing, for a committed append key).

        Raises:
            SinkError: the table refused the write (schema, predicate, storage), or a
                merge source has duplicate or NULL keys.
        """
        uri = ctx.resolve(self.config.path)
        job = _Job(
            config=self.config,
            uri=uri,
            options=delta_storage_options(uri, self.config.storage_options),
            data=request.data,
            app_id=app_id(ctx.pipeline.pipeline, request.idempotency_key),
            commit=_commit_properties(ctx, request),
            logical_date=ctx.logical_date,
            transactions=tuple(
                (app_id(ctx.pipeline.pipeline, key), version)
                for key, version in request.transactions
            ),
            colder=tuple(
                (tier_uri, delta_storage_options(tier_uri, tier.storage_options))
                for tier in self.config.tiers
                for tier_uri in [ctx.resolve(tier.path)]
            ),
        )
        prepare_local(uri)
        mode = write_mode(self.config.mode, request)
        if (
            mode == "overwrite_partition"
            and request.data.num_rows == 0
            and not request.truncate
            and not self.config.replace_where
        ):
            ctx.events.emit(
                "nothing_replaced",
                sink=uri,
                hint=f"the run wrote no rows, so overwrite_partition replaced no partition of "
                f"{uri}: rows an earlier run of this date wrote there stay. To empty the date "
                "when a rerun finds nothing, name it: replace_where: "
                "\"<date column> = '{logical_date}'\"",
            )
        _check_storable(request.data, uri)
        with self._errors("write to", uri):
            if request.truncate:
                return _truncate(job)
            return _WRITERS[mode](job)

    def is_committed(self, ctx: RunContext, idempotency_key: str) -> bool:
        """True when an append of `idempotency_key` is already in the table (a rerun would be skipped)."""
        if self.config.mode != "append":
            return False
        uri = ctx.resolve(self.config.path)
        with self._errors("read", uri):
            table = _open_table(uri, delta_storage_options(uri, self.config.storage_options))
            return (
                table is not None
                and table.transaction_version(app_id(ctx.pipeline.pipeline, idempotency_key))
                is not None
            )

    def transaction_version(self, ctx: RunContext, key: str) -> int | None:
        """The version committed for the app transaction `key` (a stream partition), if any."""
        uri = ctx.resolve(self.config.path)
        with self._errors("read", uri):
            table = _open_table(uri, delta_storage_options(uri, self.config.storage_options))
            return (
                None
                if table is None
                else table.transaction_version(app_id(ctx.pipeline.pipeline, key))
            )

    def committed_positions(self, ctx: RunContext) -> dict[str, Any]:
        """Positions of this pipeline's newest complete commit, with those of any older
        commit written before commits were complete merged in ({} without a table)."""
        uri = ctx.resolve(self.config.path)
        with self._errors("read the history of", uri):
            table = _open_table(uri, delta_storage_options(uri, self.config.storage_options))
            if table is None:
                return {}
            return read_positions(
                table,
                ctx.pipeline.pipeline,
                cleaned=lambda oldest: ctx.events.emit(
                    "positions_not_found",
                    sink=uri,
                    log_starts_at=oldest,
                    hint="the table's log no longer holds a commit of this pipeline (older "
                    "commits were cleaned up): if it wrote this table before, its inputs are "
                    "read again; keep delta.logRetentionDuration longer than its longest "
                    "pause (docs/storage.md)",
                ),
            )

    def _errors(self, action: str, uri: str) -> AbstractContextManager[None]:
        return storage_errors(
            f"Delta sink could not {action} {uri} (mode {self.config.mode})",
            self.config.storage_options,
            advice=lambda exc: next(
                (h for kind, h in _HINTS if isinstance(exc, kind)), _DEFAULT_HINT
            ),
            context={"sink": "delta", "uri": uri},
        )


def write_mode(mode: DeltaMode, request: WriteRequest) -> DeltaMode:
    """The mode of this write: `append_only` requests (replays) append unless the sink merges."""
    return "append" if request.append_only and mode != "merge" else mode


def app_id(pipeline: str, idempotency_key: str) -> str:
    """The Delta app-transaction id that marks `idempotency_key` as committed."""
    return f"sluice:{pipeline}:{idempotency_key}"


def read_positions(
    table: DeltaTable, pipeline: str, *, cleaned: Callable[[int], object] | None = None
) -> dict[str, Any]:
    """`positions_from_history` over the newest commits only: 32, then 1,024, then all of
    them, until a complete commit of `pipeline` is among those read.

    `cleaned(oldest)` is called when no commit of `pipeline` is left and the log starts
    after version 0: its cleanup may have taken the pipeline's positions with it.
    """
    for limit in (*HISTORY_PAGES, None):
        history = table.history(limit)
        chain, complete = _positions_chain(history, pipeline)
        if complete or limit is None or len(history) < limit:
            oldest = min((int(c.get("version", 0)) for c in history), default=0)
            if not chain and oldest > 0 and cleaned is not None:
                cleaned(oldest)
            return _merged(chain)
    raise AssertionError("the last page is the whole history")


HISTORY_PAGES = (32, 1024)


def positions_from_history(history: list[dict[str, Any]], pipeline: str) -> dict[str, Any]:
    """Where each source of `pipeline` stopped, from the commits in `history`.

    The newest complete commit of `pipeline` holds them all; commits without the mark
    (written before it existed) are merged, oldest first. Commits of other pipelines are
    ignored. A RESTORE to version V undoes the commits after V (their data is gone, so what
    they had read must be read again).
    """
    return _merged(_positions_chain(history, pipeline)[0])


def _positions_chain(
    history: list[dict[str, Any]], pipeline: str
) -> tuple[list[dict[str, Any]], bool]:
    """The positions to merge, newest first, and whether the oldest of them is complete.

    Walks from the newest commit down: a RESTORE to V skips every older commit after V.
    """
    chain: list[dict[str, Any]] = []
    undone_above: int | None = None
    for commit in sorted(history, key=lambda c: int(c.get("version", 0)), reverse=True):
        version = int(commit.get("version", 0))
        if undone_above is not None and version > undone_above:
            continue
        restored = (commit.get("operationParameters") or {}).get("version")
        if commit.get("operation") == "RESTORE" and restored is not None:
            undone_above = int(restored)
            continue
        raw = commit.get(POSITIONS_KEY)
        if commit.get(PIPELINE_KEY) != pipeline or not raw:
            continue
        chain.append(json.loads(raw))
        if commit.get(COMPLETE_KEY) == "true":
            return chain, True
    return chain, False


def _merged(chain: list[dict[str, Any]]) -> dict[str, Any]:
    positions: dict[str, Any] = {}
    for newer in reversed(chain):
        positions = merge_positions(positions, newer)
    return positions


def replace_predicate(config: DeltaSinkConfig, data: pa.Table, logical_date: date) -> str | None:
    """The predicate an overwrite_partition write replaces; None when there is nothing to replace.

    Raises:
        SinkError: neither replace_where nor partition_by is set, or a partition value has a
            type that cannot be written as an SQL literal.
    """
    if config.replace_where:
        return config.replace_where.replace(LOGICAL_DATE_PLACEHOLDER, logical_date.isoformat())
    if not config.partition_by:
        raise SinkError(
            f"Delta sink {config.path}: mode overwrite_partition needs partition_by or "
            "replace_where to know which rows to replace; set one of them in the spec."
        )
    missing = [c for c in config.partition_by if c not in data.column_names]
    if missing:
        raise SinkError(
            f"Delta sink {config.path}: partition column(s) {missing} are not in the data "
            f"(columns: {data.column_names}); fix partition_by or add the column in a step."
        )
    distinct = data.select(config.partition_by).group_by(config.partition_by).aggregate([])
    rows = sorted(distinct.to_pylist(), key=lambda r: [(v is None, str(v)) for v in r.values()])
    if not rows:
        return None
    if len(config.partition_by) == 1:
        return _in_list(config.partition_by[0], [r[config.partition_by[0]] for r in rows])
    return " OR ".join("(" + " AND ".join(_equals(c, r[c]) for c in r) + ")" for r in rows)


def _append(job: _Job) -> WriteResult:
    table = job.open()
    if table is not None and job.is_committed(table):
        return job.result(table.version(), skipped=True)
    _check_fits(table, job.data, job.uri)
    return job.result(job.write(table))


def _overwrite_partition(job: _Job) -> WriteResult:
    predicate = replace_predicate(job.config, job.data, job.logical_date)
    table = job.open()
    _check_fits(table, job.data, job.uri)
    if predicate is None:
        # No partition to replace; the empty commit still records the positions.
        return job.result(job.write(table))
    try:
        result = job.result(job.write(table, replace=predicate))
    except DeltaError as exc:
        if "failed validation check" not in str(exc):
            raise
        raise SinkError(
            f"Delta sink {job.uri}: some rows do not satisfy the overwrite predicate "
            f"{predicate!r}; every row written with overwrite_partition must fall inside "
            "replace_where. Fix replace_where or filter the rows in a step.",
            context={"sink": "delta", "uri": job.uri},
        ) from exc
    _clear_colder(job, lambda cold: cold.delete(predicate, commit_properties=_TIER_CLEAR))
    return result


def _clear_colder(job: _Job, clear: Callable[[DeltaTable], Any]) -> None:
    """Remove from each colder tier the rows this write replaced in the hot table.

    `sluice tier` moves old partitions to colder tables that readers union with the hot
    one, so a replaced partition or an upserted key may still live there; the hot commit
    comes first, so a crash in between shows the old rows twice until the rerun (never
    loses the new ones).
    """
    for uri, options in job.colder:
        cold = _open_table(uri, options)
        if cold is not None:
            clear(cold)


def _delete_keys(keys: list[str], data: pa.Table) -> Callable[[DeltaTable], Any]:
    """A colder-tier clearer deleting every row whose `keys` are in `data`."""
    distinct = data.select(keys).group_by(keys).aggregate([])
    predicate = " AND ".join(f"t.{quote_ident(k)} = s.{quote_ident(k)}" for k in keys)

    def clear(cold: DeltaTable) -> None:
        if distinct.num_rows == 0:
            return
        cold.merge(
            distinct,
            predicate=predicate,
            source_alias="s",
            target_alias="t",
            writer_properties=WRITER_PROPERTIES,
            commit_properties=_TIER_CLEAR,
        ).when_matched_delete().execute()

    return clear


_TIER_CLEAR = CommitProperties(custom_metadata={"sluice.tier_clear": "replaced in hot tier"})


CHANGE_OP = "__sw_op"
"""Column of change rows (from a change-capture source): r, i, u or d."""
CHANGE_ORDER = "__sw_order"
"""Column ordering change rows: the last change of a key wins."""
CHANGE_UNCHANGED = "__sw_unchanged"
"""Column naming the columns a change left as they were (unchanged TOAST values), as
',a,b,' (',' for none): the table keeps its values for them."""
CHANGE_OLD_KEY = "__sw_old_key"
"""Column holding, for an update that changed the key, the old key as a JSON object."""
CHANGE_COLUMNS = (CHANGE_OP, CHANGE_ORDER, CHANGE_UNCHANGED, CHANGE_OLD_KEY)


def _merge(job: _Job) -> WriteResult:
    if CHANGE_OP in job.data.column_names:
        return _apply_changes(job)
    keys = job.config.merge_keys
    _reject_bad_keys(job.data, keys, job.uri)
    table = job.open()
    _check_fits(table, job.data, job.uri)
    if table is None or job.data.num_rows == 0:
        # First write creates the table; an empty merge makes no commit, an empty append
        # still records the positions.
        result = job.result(job.write(table))
        _clear_colder(job, _delete_keys(keys, job.data))
        return result
    predicate = " AND ".join(f"t.{quote_ident(k)} = s.{quote_ident(k)}" for k in keys)
    (
        table.merge(
            job.data,
            predicate=predicate,
            source_alias="s",
            target_alias="t",
            merge_schema=True,
            writer_properties=WRITER_PROPERTIES,
            commit_properties=job.commit,
        )
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    version = table.version()
    _clear_colder(job, _delete_keys(keys, job.data))
    return job.result(version)


def _apply_changes(job: _Job) -> WriteResult:
    """Apply change rows: the last change of each key wins; `d` deletes, others upsert; a
    column listed in `__sw_unchanged` keeps the table's value."""
    keys = job.config.merge_keys
    table = job.open()
    if table is not None and job.transactions and job.is_committed(table):
        return job.result(table.version(), skipped=True)
    carried = _carry_unchanged(job.data, keys, table)
    last = _last_change_per_key(_with_old_key_deletes(carried, keys), keys)
    columns = [c for c in last.column_names if c not in CHANGE_COLUMNS]
    if CHANGE_UNCHANGED not in last.column_names:
        last = last.append_column(CHANGE_UNCHANGED, pa.repeat(pa.scalar(","), last.num_rows))
    if table is None:
        rows = last.filter(pc.not_equal(last[CHANGE_OP], "d")).select(columns)
        result = job.result(replace(job, data=rows).write(None))
        _clear_colder(job, _delete_keys(keys, last))
        return result
    _check_fits(table, last.select(columns), job.uri)
    predicate = " AND ".join(f"t.{quote_ident(k)} = s.{quote_ident(k)}" for k in keys)
    existing = set(table.schema().to_arrow().names)
    # A column new to the table (added at the source: RELATION message, binlog metadata, or
    # the contract) is added by the merge (merge_schema); it has no old value to keep.
    kept = {
        c: f"CASE WHEN strpos(coalesce(s.{CHANGE_UNCHANGED}, ','), {_literal(',' + c + ',')}) > 0 "
        f"THEN t.{quote_ident(c)} ELSE s.{quote_ident(c)} END"
        if c in existing
        else f"s.{quote_ident(c)}"
        for c in columns
    }
    (
        table.merge(
            last,
            predicate=predicate,
            source_alias="s",
            target_alias="t",
            merge_schema=True,
            writer_properties=WRITER_PROPERTIES,
            commit_properties=job.commit,
        )
        .when_matched_delete(predicate=f"s.{CHANGE_OP} = 'd'")
        .when_matched_update(updates=kept, predicate=f"s.{CHANGE_OP} <> 'd'")
        .when_not_matched_insert(
            updates={c: f"s.{quote_ident(c)}" for c in columns},
            predicate=f"s.{CHANGE_OP} <> 'd'",
        )
        .execute()
    )
    version = table.version()
    _clear_colder(job, _delete_keys(keys, last))
    return job.result(version)


def _carry_unchanged(data: pa.Table, keys: list[str], table: DeltaTable | None) -> pa.Table:
    """Fill the columns a change left unchanged (unchanged TOAST values) from where they
    are known, when the table cannot give them at the merge: from the key's earlier change
    in this batch (its insert, or the snapshot row, holds the value; the merge only sees
    the last change, and a key new to the table has no row to keep a value from), and,
    for an update that moved the row to a new key, from the old key's row (in this batch,
    else in the table, read once for every moved key). What is filled is no longer listed
    as unchanged. Only keys that change twice in the batch, or move, are looked at: for a
    key changed once, the merge keeps the table's value."""
    if CHANGE_UNCHANGED not in data.column_names:
        return data
    listed = pc.fill_null(pc.not_equal(data[CHANGE_UNCHANGED], ","), False)
    if not pc.any(listed).as_py():
        return data
    key_values = [tuple(r[k] for k in keys) for r in data.select(keys).to_pylist()]
    old_keys = _typed_old_keys(data, keys)
    seen = Counter(key_values)
    concerned: set[tuple[Any, ...]] = set()
    for index, flag in enumerate(listed.to_pylist()):
        old = old_keys[index]
        if flag and (seen[key_values[index]] > 1 or old is not None):
            concerned.update(k for k in (key_values[index], old) if k is not None)
    if not concerned:
        return data
    picked = [i for i, key in enumerate(key_values) if key in concerned]
    rows = data.take(pa.array(picked, pa.int64())).to_pylist()
    olds = [old_keys[i] for i in picked]
    columns = [c for c in data.column_names if c not in CHANGE_COLUMNS]
    moved_from = {o for o in olds if o is not None}
    stored = _stored_rows(table, keys, moved_from, columns) if table and moved_from else {}
    images: dict[tuple[Any, ...], dict[str, Any]] = {}
    for j in sorted(range(len(rows)), key=lambda j: (rows[j].get(CHANGE_ORDER) or 0, j)):
        row, old = rows[j], olds[j]
        key = tuple(row[k] for k in keys)
        if row[CHANGE_OP] == "d":
            images.pop(key, None)
            continue
        # A moved row: what the batch knows of the old key, over the table's row.
        known = (
            {**stored.get(old, {}), **images.pop(old, {})}
            if old is not None
            else images.get(key, {})
        )
        unchanged = [c for c in (row.get(CHANGE_UNCHANGED) or ",").split(",") if c]
        still = [c for c in unchanged if c not in known]
        row.update({c: known[c] for c in unchanged if c in known})
        row[CHANGE_UNCHANGED] = "," + "".join(f"{c}," for c in still)
        images[key] = {c: row[c] for c in columns if c not in still}
    rest = data.filter(pc.invert(pc.is_in(pa.array(range(data.num_rows)), pa.array(picked))))
    return pa.concat_tables([rest, pa.Table.from_pylist(rows, schema=data.schema)])


def _typed_old_keys(data: pa.Table, keys: list[str]) -> list[tuple[Any, ...] | None]:
    """Each row's old key (`__sw_old_key`, JSON text), in the key columns' own types, so it
    compares with the keys of the rows (a timestamptz spelled `+00` and `+00:00` is one)."""
    if CHANGE_OLD_KEY not in data.column_names:
        return [None] * data.num_rows
    texts = data[CHANGE_OLD_KEY].to_pylist()
    moved = [i for i, text in enumerate(texts) if text]
    if not moved:
        return [None] * data.num_rows
    parsed = [json.loads(str(texts[i])) for i in moved]
    typed = [
        pa.array([None if k.get(name) is None else str(k.get(name)) for k in parsed], pa.string())
        .cast(data.schema.field(name).type)
        .to_pylist()
        for name in keys
    ]
    found: list[tuple[Any, ...] | None] = [None] * data.num_rows
    for position, index in enumerate(moved):
        found[index] = tuple(column[position] for column in typed)
    return found


def _stored_rows(
    table: DeltaTable, keys: list[str], wanted: set[tuple[Any, ...]], columns: list[str]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The table's rows of the `wanted` keys (one read of the table), by key."""
    import duckdb

    present = set(table.schema().to_arrow().names)
    fields = [c for c in columns if c in present]
    probe = pa.table({k: [w[i] for w in wanted] for i, k in enumerate(keys)})
    con = duckdb.connect()
    try:
        con.register("t", table.to_pyarrow_dataset())
        con.register("wanted", probe)
        joined = " AND ".join(f"t.{quote_ident(k)} = wanted.{quote_ident(k)}" for k in keys)
        found: pa.Table = con.sql(
            f"SELECT {', '.join(f't.{quote_ident(c)}' for c in fields)} FROM t "
            f"JOIN wanted ON {joined}"
        ).to_arrow_table()
    finally:
        con.close()
    return {tuple(r[k] for k in keys): r for r in found.to_pylist()}


def _with_old_key_deletes(data: pa.Table, keys: list[str]) -> pa.Table:
    """`data` plus a delete for the old key of every update that changed the key."""
    if CHANGE_OLD_KEY not in data.column_names:
        return data
    moved = data.filter(pc.is_valid(data[CHANGE_OLD_KEY]))
    if moved.num_rows == 0:
        return data
    old_keys = [json.loads(text) for text in moved[CHANGE_OLD_KEY].to_pylist()]
    columns = {}
    for name in data.column_names:
        field = data.schema.field(name)
        if name in keys:
            values = pa.array(
                [str(k.get(name)) if k.get(name) is not None else None for k in old_keys]
            )
            columns[name] = values.cast(field.type)
        elif name == CHANGE_OP:
            columns[name] = pa.array(["d"] * moved.num_rows, field.type)
        elif name in (CHANGE_ORDER,):
            columns[name] = moved[name]
        else:
            columns[name] = pa.nulls(moved.num_rows, field.type)
    deletes = pa.table(columns, schema=data.schema)
    return pa.concat_tables([deletes, data])


def _last_change_per_key(data: pa.Table, keys: list[str]) -> pa.Table:
    """One row per key: the one with the highest `__sw_order` (or the last one)."""
    order = (
        data[CHANGE_ORDER] if CHANGE_ORDER in data.column_names else pa.array(range(data.num_rows))
    )
    indexed = data.append_column("__sw_index", pa.array(range(data.num_rows), pa.int64()))
    indexed = indexed.append_column("__sw_rank", order.cast(pa.int64()))
    newest = indexed.group_by(keys).aggregate([("__sw_rank", "max")])
    joined = indexed.join(newest, keys=keys)
    winners = joined.filter(pc.equal(joined["__sw_rank"], joined["__sw_rank_max"]))
    winners = winners.sort_by("__sw_index")
    return winners.select(data.column_names)


def _truncate(job: _Job) -> WriteResult:
    """Empty the table (and its colder tiers) in one commit carrying the positions; a table
    that holds no file gets an empty append, so the positions are committed all the same."""
    table = job.open()
    if table is None:
        return job.result(None)
    if job.transactions and job.is_committed(table):
        return job.result(table.version(), skipped=True)
    if table.file_uris():
        table.delete(writer_properties=WRITER_PROPERTIES, commit_properties=job.commit)
    else:
        empty = table.schema().to_arrow().empty_table()
        replace(job, data=pa.table(empty)).write(table)
    version = DeltaTable(job.uri, storage_options=job.options).version()
    _clear_colder(job, lambda cold: cold.delete(commit_properties=_TIER_CLEAR))
    return job.result(version)


_WRITERS: dict[DeltaMode, Callable[[_Job], WriteResult]] = {
    "append": _append,
    "overwrite_partition": _overwrite_partition,
    "merge": _merge,
}

_HINTS: tuple[tuple[type[BaseException], str], ...] = (
    (
        SchemaMismatchError,
        "The data's columns do not fit the table's schema: only new nullable columns evolve "
        "it; cast changed columns in a step or write to a new table.",
    ),
    (
        CommitFailedError,
        "Another writer committed at the same time; rerun the pipeline (the write is idempotent).",
    ),
)
_DEFAULT_HINT = "Check the path, partition_by and storage_options (endpoint, region, credentials)."


def _check_storable(data: pa.Table, uri: str) -> None:
    """Refuse columns of a type Delta Lake has no place for (intervals, durations, times of
    day), naming them, before delta-rs fails on the first with a backtrace."""
    unstorable = [
        f"{field.name} ({field.type})" for field in data.schema if not _storable(field.type)
    ]
    if unstorable:
        raise SinkError(
            f"Delta sink {uri}: column(s) {', '.join(unstorable)} have a type Delta Lake cannot "
            "store (it has no interval, duration or time-of-day type). Cast them in the query "
            "or a step: an interval to text (CAST(x AS VARCHAR)) or seconds (epoch(x)), a time "
            "to text.",
            context={"sink": "delta", "uri": uri},
        )


def _storable(kind: pa.DataType) -> bool:
    if pa.types.is_interval(kind) or pa.types.is_duration(kind) or pa.types.is_time(kind):
        return False
    if isinstance(kind, pa.ListType | pa.LargeListType | pa.FixedSizeListType):
        return _storable(kind.value_type)
    if isinstance(kind, pa.MapType):
        return _storable(kind.key_type) and _storable(kind.item_type)
    if isinstance(kind, pa.StructType):
        return all(_storable(kind.field(i).type) for i in range(kind.num_fields))
    return True


def _check_fits(table: DeltaTable | None, data: pa.Table, uri: str) -> None:
    """Refuse columns whose values the table's types cannot hold without loss.

    delta-rs casts data to the table's types silently, even lossily (1.5 lands as 1 in a
    long column); a safe Arrow cast finds such values first.
    """
    if table is None:
        return
    existing = pa.schema(table.schema().to_arrow())
    for name in data.column_names:
        if name not in existing.names or data[name].type == existing.field(name).type:
            continue
        target = existing.field(name).type
        try:
            data[name].cast(target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise SinkError(
                f"Delta sink {uri}: column {name!r} has type {data[name].type}, which the "
                f"table's {target} cannot hold without loss. Cast it in a step (or write "
                "to a new table).",
                context={"sink": "delta", "uri": uri},
            ) from exc


def _reject_bad_keys(data: pa.Table, keys: list[str], uri: str) -> None:
    missing = [k for k in keys if k not in data.column_names]
    if missing:
        raise SinkError(
            f"Delta sink {uri}: merge key(s) {missing} are not in the data "
            f"(columns: {data.column_names}); fix merge_keys or add the column in a step."
        )
    null_rows = _count_null_keys(data, keys)
    if null_rows:
        raise SinkError(
            f"Delta sink {uri}: {null_rows} row(s) have a NULL merge key {keys}; a NULL key "
            "never matches, so a rerun would insert them again. Reject them with a "
            "not_null contract or check on the key columns."
        )
    counts = data.select(keys).group_by(keys).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts["count_all"], 1))
    if repeated.num_rows:
        rows = pc.sum(repeated["count_all"]).as_py()
        raise SinkError(
            f"Delta sink {uri}: the merge source has {repeated.num_rows} duplicate key(s) on "
            f"{keys} ({rows} rows); merge needs one row per key. Add a dedup step on these keys."
        )


def _count_null_keys(data: pa.Table, keys: list[str]) -> int:
    if data.num_rows == 0:
        return 0
    is_null = pc.is_null(data[keys[0]])
    for key in keys[1:]:
        is_null = pc.or_(is_null, pc.is_null(data[key]))
    return int(pc.sum(is_null.cast(pa.int64())).as_py() or 0)


def _commit_properties(ctx: RunContext, request: WriteRequest) -> CommitProperties:
    try:
        positions = json.dumps(request.positions, sort_keys=True)
    except TypeError as exc:
        raise SinkError(
            f"Source positions must be JSON values to be committed: {exc}. "
            "Store cursors as strings or numbers in SourceRead.position.",
            context={"sink": "delta"},
        ) from exc
    metadata: dict[str, Any] = {
        **request.metadata,
        PIPELINE_KEY: ctx.pipeline.pipeline,
        POSITIONS_KEY: positions,
        IDEMPOTENCY_KEY: request.idempotency_key,
    }
    if request.positions_complete:
        metadata[COMPLETE_KEY] = "true"
    pipeline = ctx.pipeline.pipeline
    transactions = [
        Transaction(app_id=app_id(pipeline, key), version=version)
        for key, version in request.transactions
    ] or [Transaction(app_id=app_id(pipeline, request.idempotency_key), version=1)]
    return CommitProperties(custom_metadata=metadata, app_transactions=transactions)


def _open_table(uri: str, options: dict[str, str] | None) -> DeltaTable | None:
    if not DeltaTable.is_deltatable(uri, storage_options=options):
        return None
    return DeltaTable(uri, storage_options=options)


def _in_list(column: str, values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    terms = []
    if present:
        terms.append(f"{quote_ident(column)} IN ({', '.join(_literal(v) for v in present)})")
    if len(present) < len(values):
        terms.append(f"{quote_ident(column)} IS NULL")
    return " OR ".join(terms)


def _equals(column: str, value: Any) -> str:
    if value is None:
        return f"{quote_ident(column)} IS NULL"
    return f"{quote_ident(column)} = {_literal(value)}"


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, str):
        return quote_literal(value)
    if isinstance(value, datetime | date):
        return quote_literal(value.isoformat())
    raise SinkError(
        f"Cannot partition by a value of type {type(value).__name__}: use a string, number, "
        "boolean, date or timestamp partition column."
    )


registry.register("sink", "delta", DeltaSinkConfig, DeltaSink)
