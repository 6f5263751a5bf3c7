"""Storage tiers of a Delta sink: move old partitions from the hot table to colder tables,
without losing or duplicating a row even when the process dies at any point.

A move of one partition (the rows of one `tier_by` value in one source tier):

1. copy the rows, tagged ``_sluice_move = <move id>``, into the destination tier, in one
   commit carrying the Delta app transaction ``sluice-tier:<move id>`` (a rerun that finds
   it does not copy again);
2. delete the partition from the source tier, in one commit whose metadata names the move
   (``sluice.tier_move``): only the files that were copied are removed (a concurrent append
   makes the commit fail, and the move is planned again);
3. record the move in the destination's manifest ``_sluice_moves.json``.

The move id hashes the source tier, the partition value and the exact data files of the
partition, so a rerun after a crash finds the same move while the partition is unchanged.
See `tier_read` for the read rule that makes every intermediate state read correctly.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError

from sluiceway.core.durations import parse_duration
from sluiceway.core.storage import prepare_local, storage_errors
from sluiceway.engines.duckdb import quote_ident, quote_literal
from sluiceway.errors import ConfigError, SinkError
from sluiceway.ops.tier_read import (
    COPY_KEY,
    HOT,
    MOVE_COLUMN,
    MOVE_DEST_KEY,
    MOVE_KEY,
    MOVE_PARTITION_KEY,
    TIER_STORAGE_PROPERTY,
    TIERS_PROPERTY,
    TierLocation,
    moves_in_history,
    public_options,
    read_manifest,
    read_tiered_table,
    read_tiers,
    write_manifest,
)
from sluiceway.sinks.delta import DeltaSinkConfig

FAULT_ENV = "SLUICE_TIER_FAULT"
_MOVE_ATTEMPTS = 3
_fault_counts: dict[str, int] = {}


class _Replan(RuntimeError):
    """A writer changed the partition between the copy and the delete: plan it again."""


@dataclass(frozen=True)
class TierLayout:
    """Where a sink's tiers live: index 0 is hot, then colder and colder."""

    locations: tuple[TierLocation, ...]
    afters: tuple[Any, ...]
    levels: tuple[int, ...]
    tier_by: str
    partition_by: tuple[str, ...]

    @property
    def hot(self) -> TierLocation:
        return self.locations[0]


@dataclass(frozen=True)
class Move:
    """One partition to move from tier `source` to tier `dest` (indexes in the layout)."""

    source: int
    dest: int
    value: Any
    rows: int
    bytes: int


@dataclass(frozen=True)
class MoveOutcome:
    """A done move: its id, rows and whether a crashed run had already copied it."""

    move: Move
    move_id: str
    rows: int
    was_copied_before: bool


def tier_layout(sink: DeltaSinkConfig, base_dir: Path) -> TierLayout:
    """The tiers of `sink`, paths resolved against the spec's folder.

    Raises:
        ConfigError: the sink declares no tiers.
    """
    if not sink.tiers:
        raise ConfigError(
            f"the delta sink at {sink.path} declares no tiers; add `tiers:` (name, path, "
            "after) to the sink, or pick another with --sink."
        )
    hot = TierLocation(HOT, _resolve(sink.path, base_dir), dict(sink.storage_options))
    colder = [
        TierLocation(t.name, _resolve(t.path, base_dir), t.storage_options) for t in sink.tiers
    ]
    return TierLayout(
        locations=(hot, *colder),
        afters=(None, *(parse_duration(t.after) for t in sink.tiers)),
        levels=(0, *(t.compression_level for t in sink.tiers)),
        tier_by=sink.tier_by or sink.partition_by[0],
        partition_by=tuple(sink.partition_by),
    )


def read_tiered(sink: DeltaSinkConfig, base_dir: Path) -> pa.Table:
    """The sink's rows across all its tiers, as one table (without ``_sluice_move``).

    Raises:
        SourceError: the hot table does not exist or the tiers' schemas clash.
    """
    layout = tier_layout(sink, base_dir)
    return read_tiered_table(layout.hot, layout.locations[1:])


def declare_tiers(layout: TierLayout) -> None:
    """Record the tiers' locations in the hot table's properties, so a reader of the hot
    path alone finds them (credentials are never recorded)."""
    table = _open(layout.hot)
    tiers = {loc.name: loc.uri for loc in layout.locations[1:]}
    storage = {loc.name: public_options(loc.spec_options) for loc in layout.locations[1:]}
    wanted = {
        TIERS_PROPERTY: json.dumps(tiers, sort_keys=True),
        TIER_STORAGE_PROPERTY: json.dumps(storage, sort_keys=True),
    }
    current = table.metadata().configuration
    if all(current.get(key) == value for key, value in wanted.items()):
        return
    with _errors(layout.hot, "record the tiers in"):
        table.alter.set_table_properties(wanted, raise_if_not_exists=False)


def recover_manifests(layout: TierLayout) -> int:
    """Step 3 of moves a crash interrupted: copy step-2 commits into the manifests.

    Returns:
        How many moves were added to manifests.
    """
    added = 0
    names = {loc.name: i for i, loc in enumerate(layout.locations)}
    found: dict[int, dict[str, dict[str, Any]]] = {}
    for location in layout.locations[:-1]:
        with _errors(location, "read the moves of"):
            table = location.open()
        for move_id, facts in ({} if table is None else moves_in_history(table)).items():
            dest = names.get(str(facts.get("dest")))
            if dest is not None:
                found.setdefault(dest, {})[move_id] = {**facts, "source": location.name}
    for dest, moves in found.items():
        manifest = read_manifest(layout.locations[dest])
        missing = {k: v for k, v in moves.items() if k not in manifest}
        if missing:
            write_manifest(layout.locations[dest], {**manifest, **missing})
            added += len(missing)
    return added


def plan_moves(layout: TierLayout, as_of: date) -> list[Move]:
    """Every partition older than a colder tier's `after` (relative to `as_of`), with the
    coldest tier it qualifies for as destination; partitions with no date stay."""
    moves = []
    for source, location in enumerate(layout.locations[:-1]):
        with _errors(location, "open"):
            table = location.open()
        if table is None:
            continue
        for value, (rows, size) in _partition_sizes(table, layout.tier_by).items():
            dest = _destination(layout, as_of, value)
            if dest > source:
                moves.append(Move(source, dest, value, rows, size))
    return moves


def execute_move(layout: TierLayout, move: Move) -> MoveOutcome | None:
    """Do one move (copy, delete, record); None when the partition is gone already.

    A commit conflict (a writer appended to the partition meanwhile) replans the move.

    Raises:
        SinkError: the storage refused a read or a commit.
    """
    for _ in range(_MOVE_ATTEMPTS - 1):
        try:
            return _move_once(layout, move)
        except _Replan:
            continue
    try:
        return _move_once(layout, move)
    except _Replan as exc:
        raise SinkError(
            f"tier '{layout.locations[move.source].name}': partition {move.value} kept "
            f"changing while being moved ({_MOVE_ATTEMPTS} attempts); rerun `sluice tier` "
            "when no pipeline writes old partitions."
        ) from exc.__cause__


@contextmanager
def tier_lock(state_dir: Path, uri: str) -> Iterator[None]:
    """Hold the lock that keeps one `sluice tier` at a time on a table (this machine).

    Raises:
        ConfigError: another `sluice tier` holds it.
    """
    folder = state_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(uri.encode()).hexdigest()[:16]
    with open(folder / f"tier-{name}.lock", "w", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another `sluice tier` is moving partitions of {uri}; wait for it to finish."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fault_point(point: str) -> None:
    """Test hook: SIGKILL this process at the n-th `point` when $SLUICE_TIER_FAULT is
    `<point>:<n>` (points: after_copy, after_delete, after_manifest)."""
    wanted = os.environ.get(FAULT_ENV, "")
    if not wanted.startswith(f"{point}:"):
        return
    _fault_counts[point] = _fault_counts.get(point, 0) + 1
    if _fault_counts[point] == int(wanted.split(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)


def partition_date(value: Any) -> date | None:
    """A partition value as a date: a date, a timestamp, or an ISO string; else None."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    return None


def _move_once(layout: TierLayout, move: Move) -> MoveOutcome | None:
    source, dest = layout.locations[move.source], layout.locations[move.dest]
    table = _open(source)
    files = _partition_files(table, layout.tier_by, move.value)
    if not files:
        return None
    move_id = _move_id(source.name, move.value, files)
    with _errors(dest, "open"):
        target = dest.open()
    was_copied = target is not None and target.transaction_version(_app_id(move_id)) is not None
    rows = _partition_rows(table, layout.tier_by, move.value)
    if not was_copied:
        _copy(layout, move, table, target, move_id)
    fault_point("after_copy")
    with _errors(source, "delete the moved partition from"):
        try:
            table.delete(
                _equals(layout.tier_by, move.value),
                commit_properties=_move_commit(dest, move, move_id),
            )
        except CommitFailedError as exc:
            raise _Replan from exc
    fault_point("after_delete")
    manifest = read_manifest(dest)
    manifest[move_id] = {
        "source": source.name,
        "source_version": table.version(),
        "partition": str(move.value),
        "rows": rows,
    }
    write_manifest(dest, manifest)
    fault_point("after_manifest")
    return MoveOutcome(move, move_id, rows, was_copied)


def _copy(
    layout: TierLayout, move: Move, table: DeltaTable, target: DeltaTable | None, move_id: str
) -> None:
    dest = layout.locations[move.dest]
    data = _partition_table(table, layout.tier_by, move.value)
    if MOVE_COLUMN in data.column_names:
        data = data.drop_columns([MOVE_COLUMN])
    data = data.append_column(MOVE_COLUMN, pa.array([move_id] * data.num_rows, pa.string()))
    prepare_local(dest.uri)
    with _errors(dest, "copy a partition into"):
        write_deltalake(
            target if target is not None else dest.uri,
            data,
            mode="append",
            schema_mode="merge",
            partition_by=list(layout.partition_by),
            storage_options=dest.options if target is None else None,
            writer_properties=WriterProperties(
                compression="ZSTD", compression_level=layout.levels[move.dest]
            ),
            commit_properties=CommitProperties(
                custom_metadata={COPY_KEY: move_id},
                app_transactions=[Transaction(app_id=_app_id(move_id), version=1)],
            ),
        )


def _move_commit(dest: TierLocation, move: Move, move_id: str) -> CommitProperties:
    return CommitProperties(
        custom_metadata={
            MOVE_KEY: move_id,
            MOVE_DEST_KEY: dest.name,
            MOVE_PARTITION_KEY: str(move.value),
        }
    )


def _partition_sizes(table: DeltaTable, column: str) -> dict[Any, tuple[int, int]]:
    actions = pa.table(table.get_add_actions(flatten=True))
    sizes: dict[Any, tuple[int, int]] = {}
    values = actions[f"partition.{column}"].to_pylist()
    records = actions["num_records"].to_pylist()
    for value, rows, size in zip(values, records, actions["size_bytes"].to_pylist(), strict=True):
        before = sizes.get(value, (0, 0))
        sizes[value] = (before[0] + int(rows or 0), before[1] + int(size))
    return sizes


def _partition_files(table: DeltaTable, column: str, value: Any) -> list[str]:
    actions = pa.table(table.get_add_actions(flatten=True))
    paths = actions["path"].to_pylist()
    values = actions[f"partition.{column}"].to_pylist()
    return sorted(p for p, v in zip(paths, values, strict=True) if v == value)


def _partition_table(table: DeltaTable, column: str, value: Any) -> pa.Table:
    dataset = table.to_pyarrow_dataset()
    scalar = pa.scalar(value, dataset.schema.field(column).type)
    return dataset.to_table(filter=pc.field(column) == scalar)


def _partition_rows(table: DeltaTable, column: str, value: Any) -> int:
    return _partition_sizes(table, column).get(value, (0, 0))[0]


def _destination(layout: TierLayout, as_of: date, value: Any) -> int:
    day = partition_date(value)
    if day is None:
        return 0
    start = datetime.combine(as_of, time(), UTC)
    passed = [i for i in range(1, len(layout.locations)) if day < (start - layout.afters[i]).date()]
    return max(passed, default=0)


def _move_id(source: str, value: Any, files: Sequence[str]) -> str:
    blob = json.dumps([source, str(value), list(files)])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _app_id(move_id: str) -> str:
    return f"sluice-tier:{move_id}"


def _equals(column: str, value: Any) -> str:
    if isinstance(value, datetime | date):
        return f"{quote_ident(column)} = {quote_literal(value.isoformat())}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{quote_ident(column)} = {value}"
    return f"{quote_ident(column)} = {quote_literal(str(value))}"


def _open(location: TierLocation) -> DeltaTable:
    with _errors(location, "open"):
        table = location.open()
    if table is None:
        raise ConfigError(
            f"tier '{location.name}': no Delta table at {location.uri} yet; run the "
            "pipeline first (`sluice run SPEC`), or check the path in the spec."
        )
    return table


def _errors(location: TierLocation, action: str) -> Any:
    return storage_errors(
        f"Could not {action} tier '{location.name}' ({location.uri})",
        location.spec_options,
        advice="Check the tier's path and storage_options (endpoint, region, credentials).",
        context={"tier": location.name},
    )


def _resolve(path: str, base_dir: Path) -> str:
    return path if "://" in path else str((base_dir / Path(path).expanduser()).resolve())


__all__ = [
    "FAULT_ENV",
    "Move",
    "MoveOutcome",
    "TierLayout",
    "declare_tiers",
    "execute_move",
    "fault_point",
    "partition_date",
    "plan_moves",
    "read_tiered",
    "read_tiers",
    "recover_manifests",
    "tier_layout",
    "tier_lock",
]
