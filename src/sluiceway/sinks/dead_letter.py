"""The dead-letter table: every rejected row with its reasons, as a Delta table.

The runner writes here directly (this is not a registered sink). Rows are keyed by
``(pipeline, run_key)``: writing a run key replaces what an earlier attempt of the same
inputs wrote, so reruns never duplicate dead letters. The table is partitioned by pipeline.

A row keeps the payload as JSON with PII columns masked (``payload``); the original bytes are
kept only encrypted when the pipeline has PII (``raw_payload`` with ``raw_encrypted``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from functools import reduce

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake

from sluiceway.core.storage import (
    delta_storage_options,
    prepare_local,
    storage_errors,
)
from sluiceway.engines.duckdb import quote_literal
from sluiceway.errors import SinkError

ERROR_TYPE = pa.struct([("rule", pa.string()), ("column", pa.string()), ("reason", pa.string())])

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("dlq_id", pa.string(), nullable=False),
        ("pipeline", pa.string()),
        ("run_id", pa.string()),
        ("run_key", pa.string()),
        ("logical_date", pa.date32()),
        ("source", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
        ("row", pa.int64()),
        ("stage", pa.string()),
        ("errors", pa.list_(ERROR_TYPE)),
        ("payload", pa.string()),
        ("raw_payload", pa.binary()),
        ("raw_encrypted", pa.bool_()),
        ("dead_lettered_at", pa.timestamp("us", tz="UTC")),
    ]
)
PARTITION_BY = ["pipeline"]
STAGES = ("parse", "contract", "check")
DELETE_CHUNK = 500

_WRITER_PROPERTIES = WriterProperties(compression="ZSTD")


class DeadLetterTable:
    """The Delta table of dead-letter rows.

    Args:
        uri: absolute path or s3:// URI of the table.
        storage_options: object-store options (as in a sink's `storage_options`).
    """

    def __init__(self, uri: str, storage_options: Mapping[str, str] | None = None) -> None:
        self.uri = uri
        self._spec_options = dict(storage_options or {})
        self._options = delta_storage_options(uri, self._spec_options)

    def __repr__(self) -> str:
        return f"DeadLetterTable({self.uri!r})"

    def exists(self) -> bool:
        """True when the Delta table exists."""
        with self._errors("open"):
            return DeltaTable.is_deltatable(self.uri, storage_options=self._options)

    def write(
        self, rows: pa.Table, *, pipeline: str, run_key: str, metadata: dict[str, str]
    ) -> int:
        """Replace the dead letters of `(pipeline, run_key)` with `rows`; returns rows written.

        Idempotent: a rerun of the same run key replaces, never duplicates. Empty `rows` still
        clears that run key's earlier rows (when the table exists).

        Raises:
            SinkError: `rows` do not fit DEAD_LETTER_SCHEMA, belong to another pipeline or run
                key, or the table refused the write.
        """
        data = conform(rows)
        self._check_keys(data, pipeline, run_key)
        predicate = f"pipeline = {quote_literal(pipeline)} AND run_key = {quote_literal(run_key)}"
        with self._errors("write"):
            table = self._open()
            if table is None and data.num_rows == 0:
                return 0
            if table is None:
                prepare_local(self.uri)
            write_deltalake(
                table if table is not None else self.uri,
                data,
                mode="overwrite",
                predicate=predicate,
                partition_by=PARTITION_BY,
                storage_options=self._options if table is None else None,
                writer_properties=_WRITER_PROPERTIES,
                commit_properties=CommitProperties(custom_metadata=dict(metadata)),
            )
        return data.num_rows

    def read(
        self, *, pipeline: str | None = None, run_id: str | None = None, limit: int | None = None
    ) -> pa.Table:
        """Dead letters, oldest first (by dead_lettered_at, then dlq_id), optionally filtered.

        Returns an empty table with DEAD_LETTER_SCHEMA when the table does not exist.
        """
        with self._errors("read"):
            table = self._open()
            if table is None:
                return DEAD_LETTER_SCHEMA.empty_table()
            conditions = [
                pc.field(column) == value
                for column, value in (("pipeline", pipeline), ("run_id", run_id))
                if value is not None
            ]
            condition = reduce(lambda a, b: a & b, conditions) if conditions else None
            found = table.to_pyarrow_dataset().to_table(filter=condition)
        ordered = found.sort_by([("dead_lettered_at", "ascending"), ("dlq_id", "ascending")])
        return conform(ordered if limit is None else ordered.slice(0, limit))

    def delete(self, dlq_ids: Sequence[str], *, metadata: Mapping[str, str]) -> int:
        """Delete the dead letters with these ids (e.g. after a replay); returns rows deleted."""
        ids = list(dict.fromkeys(dlq_ids))
        with self._errors("delete from"):
            table = self._open()
            if table is None or not ids:
                return 0
            deleted = 0
            for chunk in _chunks(ids, DELETE_CHUNK):
                metrics = table.delete(
                    f"dlq_id IN ({', '.join(quote_literal(i) for i in chunk)})",
                    writer_properties=_WRITER_PROPERTIES,
                    commit_properties=CommitProperties(custom_metadata=dict(metadata)),
                )
                deleted += int(metrics.get("num_deleted_rows", 0))
        return deleted

    def _open(self) -> DeltaTable | None:
        if not DeltaTable.is_deltatable(self.uri, storage_options=self._options):
            return None
        return DeltaTable(self.uri, storage_options=self._options)

    def _check_keys(self, data: pa.Table, pipeline: str, run_key: str) -> None:
        for column, expected in (("pipeline", pipeline), ("run_key", run_key)):
            matches = pc.fill_null(pc.equal(data[column], expected), False)
            stray = data.num_rows - int(pc.sum(matches.cast(pa.int64())).as_py() or 0)
            if stray:
                raise SinkError(
                    f"Dead-letter write for {column} {expected!r}: {stray} row(s) carry another "
                    f"or no {column}; set the {column} column of every row to the one written.",
                    context={"uri": self.uri},
                )

    def _errors(self, action: str) -> AbstractContextManager[None]:
        return storage_errors(
            f"Could not {action} the dead-letter table {self.uri}",
            self._spec_options,
            advice="Check the dead_letter path and storage_options (endpoint, region, credentials).",
            context={"uri": self.uri},
        )


def conform(rows: pa.Table) -> pa.Table:
    """`rows` with DEAD_LETTER_SCHEMA's columns, order and types.

    Raises:
        SinkError: columns are missing or extra, a column cannot be cast, dlq_id is NULL or
            a stage is not one of STAGES. Messages name columns, never row values.
    """
    missing = [n for n in DEAD_LETTER_SCHEMA.names if n not in rows.column_names]
    extra = [n for n in rows.column_names if n not in DEAD_LETTER_SCHEMA.names]
    if missing or extra:
        raise SinkError(
            f"Dead-letter rows do not match DEAD_LETTER_SCHEMA: missing {missing}, "
            f"unexpected {extra}. Build them with exactly the schema's columns."
        )
    columns = [_cast_column(rows[f.name], f) for f in DEAD_LETTER_SCHEMA]
    data = pa.Table.from_arrays(columns, schema=DEAD_LETTER_SCHEMA)
    if data["dlq_id"].null_count:
        nulls = data["dlq_id"].null_count
        raise SinkError(f"{nulls} dead-letter row(s) have no dlq_id; every row needs one.")
    stages = pc.is_in(data["stage"], value_set=pa.array(STAGES))
    unknown = data.num_rows - int(pc.sum(stages.cast(pa.int64())).as_py() or 0)
    if unknown:
        raise SinkError(f"{unknown} dead-letter row(s) have a stage other than {list(STAGES)}.")
    return data


def _cast_column(column: pa.ChunkedArray, target: pa.Field) -> pa.ChunkedArray:
    try:
        return column.cast(target.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise SinkError(
            f"Dead-letter column {target.name!r} has type {column.type}, which cannot be cast "
            f"to {target.type}; build it with the type of DEAD_LETTER_SCHEMA."
        ) from exc


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
