"""Reading a tiered Delta sink as one table: the hot tier plus the completed moves of the
colder tiers.

Read rule: every row of the hot tier is visible. A row of a colder tier is visible iff its
``_sluice_move`` id is *completed*: a step-2 commit (the delete from the source tier, commit
metadata ``sluice.tier_move``) is in the snapshot read of a warmer tier, or the destination's
manifest (``_sluice_moves.json``) records it with a source version at or before that
snapshot. Tiers are opened warmest first, so a move whose delete a reader sees has its copy
in the colder snapshot read after; a latest read is retried when a warmer tier gained a
move while the read was being set up.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from deltalake import DeltaTable

from sluiceway.core.storage import arrow_filesystem, delta_storage_options, is_remote
from sluiceway.errors import SourceError

MOVE_COLUMN = "_sluice_move"
MOVE_KEY = "sluice.tier_move"
MOVE_DEST_KEY = "sluice.tier_dest"
MOVE_PARTITION_KEY = "sluice.tier_partition"
COPY_KEY = "sluice.tier_copy"
TIERS_PROPERTY = "sluice.tiers"
TIER_STORAGE_PROPERTY = "sluice.tier_storage"
MANIFEST = "_sluice_moves.json"
HOT = "hot"
_READ_ATTEMPTS = 5
_SECRET_HINTS = ("secret", "key_id", "token", "password", "access_key", "credential")


@dataclass(frozen=True)
class TierLocation:
    """One tier's table: its name, URI and the spec's storage options for it."""

    name: str
    uri: str
    spec_options: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def options(self) -> dict[str, str] | None:
        """The delta-rs storage options (None for a local path)."""
        return delta_storage_options(self.uri, self.spec_options)

    def open(self, version: int | None = None) -> DeltaTable | None:
        """The table (at `version` when given), or None when there is no table yet."""
        if not DeltaTable.is_deltatable(self.uri, storage_options=self.options):
            return None
        return DeltaTable(self.uri, version=version, storage_options=self.options)


@dataclass(frozen=True)
class TieredRead:
    """A consistent read across tiers: the rows, and the version read of each tier."""

    reader: pa.RecordBatchReader
    versions: dict[str, int]


def public_options(options: Mapping[str, str]) -> dict[str, str]:
    """`options` without credentials: what may be recorded in a table property."""
    return {k: v for k, v in options.items() if not any(h in k.lower() for h in _SECRET_HINTS)}


def declared_tiers(
    table: DeltaTable, extra_options: Mapping[str, str] | None = None
) -> list[TierLocation]:
    """The colder tiers a hot table declares in its `sluice.tiers` property (none: []).

    Args:
        table: the hot table.
        extra_options: storage options (e.g. credentials) added to each remote tier's
            recorded non-secret options; the environment completes the rest.
    """
    configuration = table.metadata().configuration
    raw = configuration.get(TIERS_PROPERTY)
    if not raw:
        return []
    storage = json.loads(configuration.get(TIER_STORAGE_PROPERTY) or "{}")
    tiers = []
    for name, uri in json.loads(raw).items():
        options = dict(storage.get(name, {}))
        if is_remote(uri):
            options.update(extra_options or {})
        tiers.append(TierLocation(name, uri, options))
    return tiers


def read_manifest(location: TierLocation) -> dict[str, dict[str, Any]]:
    """The completed moves recorded next to a destination tier (move id → facts)."""
    filesystem, path = arrow_filesystem(location.uri, location.spec_options)
    target = f"{path}/{MANIFEST}"
    if filesystem.get_file_info(target).type == pafs.FileType.NotFound:
        return {}
    with filesystem.open_input_stream(target) as stream:
        return dict(json.loads(stream.read().decode("utf-8")).get("moves", {}))


def write_manifest(location: TierLocation, moves: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace the manifest atomically (rename locally; a single PUT on an object store)."""
    filesystem, path = arrow_filesystem(location.uri, location.spec_options)
    body = json.dumps({"moves": moves}, sort_keys=True, indent=1).encode("utf-8")
    if is_remote(location.uri):
        with filesystem.open_output_stream(f"{path}/{MANIFEST}") as stream:
            stream.write(body)
        return
    temporary = f"{path}/{MANIFEST}.tmp"
    with filesystem.open_output_stream(temporary) as stream:
        stream.write(body)
    filesystem.move(temporary, f"{path}/{MANIFEST}")


def moves_in_history(table: DeltaTable, *, upto: int | None = None) -> dict[str, dict[str, Any]]:
    """Step-2 commits (deletes of moved partitions) in `table`'s history, by move id.

    Args:
        table: the table opened at its LATEST version: delta-rs labels the history of a
            time-travelled table with wrong version numbers.
        upto: only commits at or before this version.
    """
    found: dict[str, dict[str, Any]] = {}
    for commit in table.history():
        version = int(commit.get("version", -1))
        if commit.get(MOVE_KEY) and (upto is None or version <= upto):
            found[str(commit[MOVE_KEY])] = {
                "source_version": version,
                "dest": commit.get(MOVE_DEST_KEY),
                "partition": commit.get(MOVE_PARTITION_KEY),
            }
    return found


def read_tiers(
    hot: TierLocation,
    tiers: Sequence[TierLocation],
    *,
    version: int | None = None,
    columns: Sequence[str] | None = None,
) -> TieredRead:
    """Read the hot tier and the visible rows of the colder tiers as one stream.

    Args:
        hot: the hot tier (the sink's path).
        tiers: the colder tiers, youngest first.
        version: pin the hot tier to this version; the colder tiers are then read at the
            version each had when that hot version was committed (by commit timestamps).
        columns: only these columns (default: all, without ``_sluice_move``).

    Returns:
        The rows (schema: the union of the tiers' schemas) and the version read per tier.

    Raises:
        SourceError: there is no hot table, or the tiers' schemas cannot be unified.
    """
    for _ in range(_READ_ATTEMPTS):
        snapshots = _open_snapshots(hot, tiers, version)
        if version is not None or not _moved_meanwhile(hot, tiers, snapshots):
            break
    return _stream(snapshots, hot, tiers, columns)


def read_tiered_table(
    hot: TierLocation, tiers: Sequence[TierLocation], *, columns: Sequence[str] | None = None
) -> pa.Table:
    """`read_tiers` at the latest versions, as one Arrow table."""
    return read_tiers(hot, tiers, columns=columns).reader.read_all()


def _open_snapshots(
    hot: TierLocation, tiers: Sequence[TierLocation], version: int | None
) -> dict[str, DeltaTable]:
    table = hot.open(version)
    if table is None:
        raise SourceError(f"no Delta table at {hot.uri}: run the pipeline that writes it first.")
    snapshots = {hot.name: table}
    moment = _commit_time(hot, version) if version is not None else None
    for tier in tiers:
        opened = tier.open()
        if opened is not None and moment is not None:
            pinned = _version_at(opened, moment)
            opened = None if pinned is None else tier.open(pinned)
        if opened is not None:
            snapshots[tier.name] = opened
    return snapshots


def _commit_time(location: TierLocation, version: int) -> int:
    latest = _latest(location)
    commit = next(c for c in latest.history() if int(c["version"]) == version)
    return int(commit["timestamp"])


def _latest(location: TierLocation) -> DeltaTable:
    """The table at its latest version (for its history; see `moves_in_history`)."""
    table = location.open()
    if table is None:
        raise SourceError(f"no Delta table at {location.uri}")
    return table


def _version_at(table: DeltaTable, moment: int) -> int | None:
    versions = [int(c["version"]) for c in table.history() if int(c["timestamp"]) <= moment]
    return max(versions) if versions else None


def _moved_meanwhile(
    hot: TierLocation, tiers: Sequence[TierLocation], snapshots: Mapping[str, DeltaTable]
) -> bool:
    """True when a warmer tier committed a move after its snapshot was taken."""
    for location in [hot, *tiers[:-1]]:
        opened = snapshots.get(location.name)
        latest = location.open()
        if opened is None or latest is None or latest.version() == opened.version():
            continue
        newer = latest.history(latest.version() - opened.version())
        if any(commit.get(MOVE_KEY) for commit in newer):
            return True
    return False


def _completed(
    hot: TierLocation, tiers: Sequence[TierLocation], snapshots: Mapping[str, DeltaTable]
) -> set[str]:
    versions = {name: table.version() for name, table in snapshots.items()}
    done: set[str] = set()
    for location in [hot, *tiers[:-1]]:
        if location.name in snapshots:
            history = moves_in_history(_latest(location), upto=versions[location.name])
            done |= set(history)
    for tier in tiers:
        if tier.name not in snapshots:
            continue
        for move_id, facts in read_manifest(tier).items():
            source_version = versions.get(str(facts.get("source")), -1)
            if int(facts.get("source_version", 1 << 62)) <= source_version:
                done.add(move_id)
    return done


def _stream(
    snapshots: Mapping[str, DeltaTable],
    hot: TierLocation,
    tiers: Sequence[TierLocation],
    columns: Sequence[str] | None,
) -> TieredRead:
    done = pa.array(sorted(_completed(hot, tiers, snapshots)), pa.string())
    scans: list[tuple[pa.Schema, Any]] = []
    for name, table in snapshots.items():
        dataset = table.to_pyarrow_dataset()
        if name == hot.name:
            scans.append((dataset.schema, dataset))
        elif len(done):
            visible = dataset.filter(pc.field(MOVE_COLUMN).isin(done))
            scans.append((dataset.schema, visible))
    schema = _unified([s for s, _ in scans], columns)
    versions = {name: table.version() for name, table in snapshots.items()}
    batches = _conformed(scans, schema)
    return TieredRead(pa.RecordBatchReader.from_batches(schema, batches), versions)


def _unified(schemas: Sequence[pa.Schema], columns: Sequence[str] | None) -> pa.Schema:
    cleaned = [pa.schema([f for f in s if f.name != MOVE_COLUMN]) for s in schemas]
    try:
        schema = pa.unify_schemas(cleaned, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SourceError(
            f"the tiers of the table have incompatible schemas ({exc}); move the partitions "
            "back or cast the columns so every tier agrees."
        ) from exc
    if columns is None:
        return schema
    return pa.schema([schema.field(name) for name in columns])


def _conformed(
    scans: Sequence[tuple[pa.Schema, Any]], schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    for own, dataset in scans:
        present = [name for name in schema.names if name in own.names]
        for batch in dataset.to_batches(columns=present):
            arrays = [
                batch.column(name).cast(schema.field(name).type)
                if name in present
                else pa.nulls(batch.num_rows, schema.field(name).type)
                for name in schema.names
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)


__all__ = [
    "COPY_KEY",
    "HOT",
    "MANIFEST",
    "MOVE_COLUMN",
    "MOVE_KEY",
    "TIERS_PROPERTY",
    "TierLocation",
    "TieredRead",
    "declared_tiers",
    "moves_in_history",
    "public_options",
    "read_manifest",
    "read_tiered_table",
    "read_tiers",
    "write_manifest",
]
