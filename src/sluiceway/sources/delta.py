"""The `delta` source: a Delta table (local or s3://), at its latest version or time-travelled.

One pipeline reads another's table: `version` or `timestamp` pins the read to a table
version, so a rerun reads exactly the same rows. The version read is the source's
fingerprint (same version → same run key, so an append sink skips a rerun) and its
position. Reading only the versions after the committed one (incremental, through the
table's change data feed) is not built yet: every run reads the whole table version.

A table tiered by `sluice tier` (its hot table records the colder tiers in the property
``sluice.tiers``) reads as ONE table: the hot rows plus the rows whose moves completed (see
`sluiceway.ops.tier_read`). A pinned version pins the hot tier; the colder tiers are read as
they were when that version was committed.

Rows stream into DuckDB as Arrow record batches with their Delta types (`typed=True`);
``__sw_file`` is ``<uri>@v<version>`` and ``__sw_row`` numbers the rows of the read from 1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal, Self

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable
from pydantic import Field, field_validator, model_validator

from sluiceway.core import registry
from sluiceway.core.context import PARSE_REJECT_SCHEMA, ROW_FILE, ROW_NUMBER, RunContext, SourceRead
from sluiceway.core.spec import SourceConfig
from sluiceway.core.storage import (
    StorageOptions,
    delta_storage_options,
    error_summary,
    is_storage_error,
)
from sluiceway.engines.duckdb import quote_ident, quote_literal
from sluiceway.errors import SourceError, StepError
from sluiceway.ops.tier_read import HOT, TierLocation, declared_tiers, read_tiers

BATCH_ROWS = 128 * 1024


class DeltaSourceConfig(SourceConfig):
    """A Delta Lake table, at its latest version or at a fixed version or time."""

    type: Literal["delta"] = Field("delta", description="A Delta Lake table.")
    path: str = Field(
        description="Table location: a path (relative to the spec) or s3://bucket/path."
    )
    version: int | None = Field(
        None, ge=0, description="Read this table version (time travel); default: the latest."
    )
    timestamp: str | None = Field(
        None,
        description="Read the version current at this ISO 8601 time (UTC when no offset), "
        "e.g. '2025-01-15T00:00:00Z'; default: the latest.",
    )
    columns: list[str] | None = Field(
        None, min_length=1, description="Only these columns (default: every column)."
    )
    storage_options: StorageOptions = Field(
        default_factory=dict,
        repr=False,
        description="Object-store options (endpoint_url, region, access_key_id, "
        "secret_access_key, allow_http or AWS_* names; use ${ENV} for secrets).",
    )

    @field_validator("timestamp")
    @classmethod
    def _check_timestamp(cls, value: str | None) -> str | None:
        if value is not None:
            parse_timestamp(value)
        return value

    @model_validator(mode="after")
    def _one_pin(self) -> Self:
        if self.version is not None and self.timestamp is not None:
            raise ValueError("set version or timestamp, not both (each pins the table version)")
        return self


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 time as an aware datetime (UTC when `text` has no offset).

    Raises:
        ValueError: `text` is not ISO 8601.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"timestamp '{text}' is not an ISO 8601 time: write e.g. '2025-01-15T08:30:00Z'"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class DeltaSource:
    """Reads a `DeltaSourceConfig` into one DuckDB table."""

    def __init__(self, config: DeltaSourceConfig) -> None:
        self.config = config

    def read(self, ctx: RunContext, name: str, *, position: dict[str, Any] | None) -> SourceRead:
        """Read the table version the config pins (or the latest); `position` is not used.

        Raises:
            SourceError: there is no Delta table at the path, the version or time is not
                in its history, a column is unknown, or the storage refused the read.
        """
        uri = ctx.resolve(self.config.path)
        table = self._open(uri, name)
        version = table.version()
        self._check_columns(table, name, uri)
        target = ctx.engine.new_name(f"src_{name}")
        tiers = declared_tiers(table, self.config.storage_options)
        if tiers:
            reader, version, label = self._tiered(table, tiers, uri, name)
        else:
            reader, label = self._scan(table, name, f"{uri}@v{version}"), f"{uri}@v{version}"
        self._load(ctx, reader, name, label, target)
        return SourceRead(
            table=target,
            rows_in=ctx.engine.count(target),
            parse_rejects=PARSE_REJECT_SCHEMA.empty_table(),
            position={"version": version},
            typed=True,
            fingerprint=self._fingerprint(label if tiers else uri, version),
        )

    def _tiered(
        self, table: DeltaTable, tiers: list[TierLocation], uri: str, name: str
    ) -> tuple[pa.RecordBatchReader, int, str]:
        """The rows of every storage tier (see ops.tier_read), as one table."""
        is_pinned = self.config.version is not None or self.config.timestamp is not None
        hot = TierLocation(HOT, uri, self.config.storage_options)
        with self._errors(name, uri, "read the tiers of"):
            read = read_tiers(
                hot,
                tiers,
                version=table.version() if is_pinned else None,
                columns=self.config.columns,
            )
        version = read.versions[HOT]
        stamp = "+".join(f"{tier}@v{v}" for tier, v in sorted(read.versions.items()))
        return _numbered(read.reader), version, f"{uri}@v{version} ({stamp})"

    def _scan(self, table: DeltaTable, name: str, label: str) -> pa.RecordBatchReader:
        with self._errors(name, label, "read"):
            dataset = table.to_pyarrow_dataset()
            scanner = dataset.scanner(columns=self.config.columns, batch_size=BATCH_ROWS)
            return _numbered(scanner.to_reader())

    def _open(self, uri: str, name: str) -> DeltaTable:
        options = delta_storage_options(uri, self.config.storage_options)
        with self._errors(name, uri, "open"):
            if not DeltaTable.is_deltatable(uri, storage_options=options):
                raise SourceError(
                    f"delta source {name}: no Delta table at '{self.config.path}' (resolved to "
                    f"'{uri}'); run the pipeline that writes it first, or fix path.",
                    context={"source": name},
                )
            table = DeltaTable(uri, storage_options=options)
        latest = table.version()
        if self.config.version is not None and self.config.version > latest:
            raise SourceError(
                f"delta source {name}: version {self.config.version} does not exist in '{uri}' "
                f"(latest is {latest}); pick a version from `sluice history`.",
                context={"source": name},
            )
        pin = self.config.version
        if self.config.timestamp is not None:
            pin = self._version_at(table, name, uri, parse_timestamp(self.config.timestamp))
        if pin is not None and pin != latest:
            with self._errors(name, uri, f"load version {pin} of"):
                table.load_as_version(pin)
        return table

    def _version_at(self, table: DeltaTable, name: str, uri: str, moment: datetime) -> int:
        """The newest version committed at or before `moment`."""
        with self._errors(name, uri, "read the history of"):
            commits = table.history()
        stamp = moment.timestamp() * 1000
        versions = [int(c["version"]) for c in commits if c.get("timestamp", 0) <= stamp]
        if versions:
            return max(versions)
        first = min(int(c.get("timestamp", 0)) for c in commits)
        raise SourceError(
            f"delta source {name}: '{uri}' has no version at or before timestamp "
            f"{self.config.timestamp}; its first commit is at "
            f"{datetime.fromtimestamp(first / 1000, UTC).isoformat()}. Use a later timestamp.",
            context={"source": name},
        )

    def _check_columns(self, table: DeltaTable, name: str, uri: str) -> None:
        present = [field.name for field in table.schema().fields]
        missing = [c for c in self.config.columns or [] if c not in present]
        if missing:
            raise SourceError(
                f"delta source {name}: column(s) {missing} are not in '{uri}' at version "
                f"{table.version()} (columns: {present}); fix columns in the spec.",
                context={"source": name},
            )

    def _load(
        self, ctx: RunContext, stream: pa.RecordBatchReader, name: str, label: str, target: str
    ) -> None:
        """Stream the numbered rows into DuckDB table `target`, with their label."""
        view = f"__delta_{target}"
        ctx.engine.con.register(view, stream)
        columns = ", ".join(quote_ident(c) for c in stream.schema.names if c != ROW_NUMBER)
        try:
            ctx.engine.create_table(
                target,
                f"SELECT {columns}, {quote_literal(label)} AS {ROW_FILE}, {ROW_NUMBER} "
                f"FROM {quote_ident(view)}",
                purpose=f"load delta source {name}",
            )
        except StepError as exc:
            raise SourceError(
                f"delta source {name}: cannot load {label} into DuckDB: {exc.message}",
                context={"source": name},
            ) from exc
        finally:
            ctx.engine.con.unregister(view)

    def _fingerprint(self, label: str, version: int) -> str:
        blob = f"{label}|{version}|{self.config.columns}"
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def _errors(self, name: str, uri: str, action: str) -> _SourceErrors:
        return _SourceErrors(name, uri, action, self.config.storage_options)


class _SourceErrors:
    """Turns a storage library error into a SourceError naming the source and table."""

    def __init__(self, name: str, uri: str, action: str, options: dict[str, str]) -> None:
        self.name, self.uri, self.action, self.options = name, uri, action, options

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if exc is None or isinstance(exc, SourceError) or not is_storage_error(exc):
            return
        raise SourceError(
            f"delta source {self.name}: could not {self.action} '{self.uri}': "
            f"{error_summary(exc, self.options)}. Check path, version / timestamp (they must "
            "be in the table's history, see `sluice history`) and storage_options.",
            context={"source": self.name},
        ) from exc


def _numbered(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """`reader`'s batches with a ``__sw_row`` column numbering the rows from 1."""
    schema = pa.schema([*reader.schema, pa.field(ROW_NUMBER, pa.int64())])

    def batches() -> Iterator[pa.RecordBatch]:
        done = 0
        for batch in reader:
            numbers = pa.array(np.arange(done + 1, done + 1 + batch.num_rows, dtype=np.int64))
            done += batch.num_rows
            yield pa.RecordBatch.from_arrays([*batch.columns, numbers], schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


registry.register("source", "delta", DeltaSourceConfig, DeltaSource)

__all__ = ["DeltaSource", "DeltaSourceConfig", "parse_timestamp"]
