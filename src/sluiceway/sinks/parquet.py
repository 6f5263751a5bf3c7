"""The Parquet sink: a hive-partitioned Parquet dataset (zstd), local or on s3://.

Parquet has no transaction log, so unlike Delta it cannot commit the data and the source
positions atomically. The sink writes the data first and then the positions to a sidecar
``_sluice/positions-<key>.json``; a crash between the two leaves data without positions, and
the rerun (same key) rewrites the same files, so the dataset still converges. Readers of the
dataset ignore the ``_sluice`` folder (pyarrow, DuckDB and Spark skip names starting with '_').

How each mode stays idempotent:

- ``overwrite_partition``: the partitions present in the data are deleted and rewritten
  (``existing_data_behavior="delete_matching"``).
- ``append``: files are named after the idempotency key (``part-<key>-<i>.parquet``), so a
  rerun with the same key overwrites the same files instead of adding new ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Literal, Self

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from pydantic import Field, model_validator

from sluiceway.core import registry
from sluiceway.core.context import RunContext, WriteRequest, WriteResult
from sluiceway.core.spec import SinkConfig
from sluiceway.core.storage import (
    StorageOptions,
    arrow_filesystem,
    merge_positions,
    storage_errors,
)
from sluiceway.errors import SinkError

ParquetMode = Literal["overwrite_partition", "append"]

SIDECAR_DIR = "_sluice"
_SAFE_KEY = re.compile(r"[A-Za-z0-9_.\-]+")
_BEHAVIOUR: dict[ParquetMode, Literal["delete_matching", "overwrite_or_ignore"]] = {
    "overwrite_partition": "delete_matching",
    "append": "overwrite_or_ignore",
}


class ParquetSinkConfig(SinkConfig):
    """A hive-partitioned Parquet dataset (local path or s3://)."""

    type: Literal["parquet"] = Field(default="parquet", description="The sink plug-in: parquet.")
    path: str = Field(
        description="Dataset folder: a path (relative to the spec) or s3://bucket/path."
    )
    partition_by: list[str] = Field(
        default_factory=list, description="Hive partition columns, e.g. [event_date]."
    )
    mode: ParquetMode = Field(
        default="overwrite_partition",
        description="overwrite_partition: replace the partitions present in the data; "
        "append: add files named after the idempotency key.",
    )
    storage_options: StorageOptions = Field(
        default_factory=dict,
        repr=False,
        description="Object-store options (endpoint_url, region, access_key_id, "
        "secret_access_key, allow_http or AWS_* names; use ${ENV} for secrets).",
    )

    @model_validator(mode="after")
    def _check_partitions(self) -> Self:
        if self.mode == "overwrite_partition" and not self.partition_by:
            raise ValueError(
                "mode: overwrite_partition needs partition_by (the partitions to replace); "
                "set partition_by or use mode: append"
            )
        return self


class ParquetSink:
    """Writes audited rows as Parquet files, then the positions in a sidecar.

    Args:
        config: the validated sink config.
    """

    def __init__(self, config: ParquetSinkConfig) -> None:
        self.config = config

    def __repr__(self) -> str:
        return f"ParquetSink(path={self.config.path!r}, mode={self.config.mode!r})"

    def write(self, ctx: RunContext, request: WriteRequest) -> WriteResult:
        """Write `request.data`, then its positions to ``_sluice/positions-<key>.json``.

        Raises:
            SinkError: a partition column is missing or the storage refused the write.
        """
        uri = ctx.resolve(self.config.path)
        missing = [c for c in self.config.partition_by if c not in request.data.column_names]
        if missing:
            raise SinkError(
                f"Parquet sink {uri}: partition column(s) {missing} are not in the data "
                f"(columns: {request.data.column_names}); fix partition_by or add them in a step.",
                context={"sink": "parquet", "uri": uri},
            )
        key = file_key(request.idempotency_key)
        sidecar = _sidecar(ctx, request)
        with self._errors("write to", uri):
            filesystem, path = arrow_filesystem(uri, self.config.storage_options)
            if request.data.num_rows:
                mode: ParquetMode = "append" if request.append_only else self.config.mode
                self._write_files(request.data, filesystem, path, key, mode)
            _write_sidecar(filesystem, path, key, sidecar)
        return WriteResult(uri=uri, rows_written=request.data.num_rows)

    def is_committed(self, ctx: RunContext, idempotency_key: str) -> bool:
        """Always False: a rerun rewrites the same files of its key, so it converges."""
        return False

    def committed_positions(self, ctx: RunContext) -> dict[str, Any]:
        """Positions of every sidecar of this pipeline, merged oldest to newest."""
        uri = ctx.resolve(self.config.path)
        with self._errors("read the positions of", uri):
            filesystem, path = arrow_filesystem(uri, self.config.storage_options)
            sidecars = sorted(_read_sidecars(filesystem, path), key=lambda s: s["committed_at"])
        positions: dict[str, Any] = {}
        for sidecar in sidecars:
            if sidecar.get("pipeline") == ctx.pipeline.pipeline:
                positions = merge_positions(positions, sidecar.get("positions", {}))
        return positions

    def _write_files(
        self, data: pa.Table, filesystem: pafs.FileSystem, path: str, key: str, mode: ParquetMode
    ) -> None:
        parquet = ds.ParquetFileFormat()
        partitioning = (
            ds.partitioning(data.select(self.config.partition_by).schema, flavor="hive")
            if self.config.partition_by
            else None
        )
        ds.write_dataset(
            data,
            path,
            filesystem=filesystem,
            format=parquet,
            file_options=parquet.make_write_options(compression="zstd"),
            partitioning=partitioning,
            basename_template=f"part-{key}-{{i}}.parquet",
            existing_data_behavior=_BEHAVIOUR[mode],
        )

    def _errors(self, action: str, uri: str) -> AbstractContextManager[None]:
        return storage_errors(
            f"Parquet sink could not {action} {uri}",
            self.config.storage_options,
            advice="Check the path and storage_options (endpoint, region, credentials).",
            context={"sink": "parquet", "uri": uri},
        )


def file_key(idempotency_key: str) -> str:
    """The idempotency key made safe for a file name (unsafe keys become a digest)."""
    if _SAFE_KEY.fullmatch(idempotency_key) and len(idempotency_key) <= 100:
        return idempotency_key
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def _sidecar(ctx: RunContext, request: WriteRequest) -> bytes:
    """The sidecar's bytes, built before any data is written so bad positions write nothing."""
    sidecar = {
        "pipeline": ctx.pipeline.pipeline,
        "idempotency_key": request.idempotency_key,
        "committed_at": datetime.now(UTC).isoformat(),
        "positions": request.positions,
        "metadata": request.metadata,
    }
    try:
        return json.dumps(sidecar, sort_keys=True).encode()
    except TypeError as exc:
        raise SinkError(
            f"Source positions must be JSON values to be committed: {exc}. "
            "Store cursors as strings or numbers in SourceRead.position.",
            context={"sink": "parquet"},
        ) from exc


def _write_sidecar(filesystem: pafs.FileSystem, path: str, key: str, sidecar: bytes) -> None:
    folder = f"{path}/{SIDECAR_DIR}"
    if isinstance(filesystem, pafs.LocalFileSystem):
        filesystem.create_dir(folder, recursive=True)
    with filesystem.open_output_stream(f"{folder}/positions-{key}.json") as out:
        out.write(sidecar)


def _read_sidecars(filesystem: pafs.FileSystem, path: str) -> Iterator[dict[str, Any]]:
    selector = pafs.FileSelector(f"{path}/{SIDECAR_DIR}", allow_not_found=True)
    for info in filesystem.get_file_info(selector):
        if info.type == pafs.FileType.File and info.base_name.startswith("positions-"):
            with filesystem.open_input_stream(info.path) as stream:
                yield json.loads(stream.read())


registry.register("sink", "parquet", ParquetSinkConfig, ParquetSink)
