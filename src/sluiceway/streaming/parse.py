"""Messages to rows, in bulk: the JSON payloads of a micro-batch parsed by DuckDB.

A batch arrives as one Arrow table (`MESSAGE_SCHEMA`). One statement decodes every payload,
judges it (delivered too often, not UTF-8, not JSON, not a JSON object) and another extracts
the contract's fields as text, so the contract then types them exactly as it types a CSV
file. Messages that cannot become rows are parse rejects: dead letters with their raw bytes.

Each row is identified by `<partition>#<message id>` (in `__sw_file`), so a dead letter says
which message it was.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sluiceway.checks.contract import Shape
from sluiceway.core.context import PARSE_REJECT_SCHEMA, ROW_FILE, ROW_NUMBER, SourceRead
from sluiceway.core.spec import Contract
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident, quote_literal
from sluiceway.streaming.base import SOURCE_REASON

CHANGE_FIELDS = {
    "__sw_op": "string",
    "__sw_order": "bigint",
    "__sw_unchanged": "string",
    "__sw_old_key": "string",
}
"""Columns a change-capture batch carries to the sink (see `sinks.delta.CHANGE_COLUMNS`)."""


def parse_messages(
    engine: DuckDBEngine,
    messages: pa.Table,
    contract: Contract,
    *,
    max_deliveries: int,
    change_capture: bool = False,
) -> SourceRead:
    """The rows of `messages` with the contract's columns as text, and the parse rejects.

    Args:
        engine: the batch's engine.
        messages: `MESSAGE_SCHEMA` rows.
        contract: names the JSON fields to extract (top-level keys of each object).
        max_deliveries: a message delivered more often than this is rejected, whatever it holds.
        change_capture: the payloads are row changes: `__op` becomes `__sw_op`, the batch
            order `__sw_order`, and `__unchanged` (a JSON list) `__sw_unchanged` as ',a,b,'.
    """
    numbered = messages.append_column(
        ROW_NUMBER, pa.array(np.arange(1, messages.num_rows + 1, dtype=np.int64))
    )
    arrived = engine.register_view(engine.new_name("messages"), numbered)
    source_reason = quote_ident(SOURCE_REASON) if SOURCE_REASON in messages.column_names else "NULL"
    names = [name for name in contract.columns if name not in CHANGE_FIELDS]
    keys = {name: [name] for name in names}
    if contract.evolution != "discard_column":
        keys = _payload_keys(engine, arrived, names)
        names = list(keys)
    spelled = [key for spellings in keys.values() for key in spellings]
    paths = ", ".join(quote_literal(_json_path(key)) for key in spelled)
    # One pass over the Arrow batch: the payload is validated once and parsed once more to
    # extract every field; raw bytes are kept for the rejects only. Valid JSON that starts
    # with '{' is an object, so json_type runs on the other rows only.
    judged = engine.create_table(
        engine.new_name("judged"),
        f"""
        SELECT {ROW_FILE}, {ROW_NUMBER}, reason,
               CASE WHEN reason IS NOT NULL THEN payload END AS payload,
               CASE WHEN reason IS NULL THEN json_extract_string(text, [{paths}]) END
                 AS __sw_fields,
               {_CHANGE_TEXT if change_capture else "NULL"} AS __sw_change
        FROM (
          SELECT partition || '#' || msg_id AS {ROW_FILE}, {ROW_NUMBER}, payload, text,
                 CASE
                   WHEN deliveries > {int(max_deliveries)}
                     THEN 'delivered ' || deliveries || ' times (max_deliveries: {int(max_deliveries)})'
                   WHEN {source_reason} IS NOT NULL THEN {source_reason}
                   WHEN payload IS NULL THEN 'the message has no payload'
                   WHEN text IS NULL THEN 'the payload is not valid UTF-8'
                   WHEN NOT json_valid(text) THEN 'the payload is not valid JSON'
                   WHEN NOT starts_with(ltrim(text, ' ' || chr(9) || chr(10) || chr(13)), '{{')
                     THEN 'the payload is a JSON ' || lower(json_type(text)) || ', not an object'
                   {_TRUNCATE if change_capture else ""}
                 END AS reason
          FROM (SELECT *, TRY(decode(payload)) AS text FROM {quote_ident(arrived)})
        )
        """,
        purpose="judge the messages of a batch",
    )
    engine.unregister(arrived)
    rejects = engine.fetch_arrow(
        f"SELECT {ROW_FILE} AS file, {ROW_NUMBER} AS line, payload AS raw, reason "
        f"FROM {quote_ident(judged)} WHERE reason IS NOT NULL ORDER BY {ROW_NUMBER}",
        purpose="collect unparseable messages",
    ).cast(PARSE_REJECT_SCHEMA)
    fields, index = [], 1
    for name, spellings in keys.items():
        # A field spelled two ways in one batch (`email` and `Email`) is one column.
        read = [f"__sw_fields[{index + n}]" for n in range(len(spellings))]
        index += len(spellings)
        value = read[0] if len(read) == 1 else f"coalesce({', '.join(read)})"
        fields.append(f"{value} AS {quote_ident(name)}")
    if change_capture:
        fields += [
            "__sw_change[1] AS __sw_op",
            f"{ROW_NUMBER} AS __sw_order",
            "',' || coalesce(array_to_string(CAST(__sw_change[2] AS VARCHAR[]), ','), '') "
            "|| ',' AS __sw_unchanged",
            "__sw_change[3] AS __sw_old_key",
        ]
    rows = engine.create_table(
        engine.new_name("parsed"),
        f"SELECT {', '.join([*fields, ROW_FILE, ROW_NUMBER])} "
        f"FROM {quote_ident(judged)} WHERE reason IS NULL",
        purpose="extract the contract's fields",
    )
    engine.drop(judged)
    return SourceRead(
        table=rows,
        rows_in=messages.num_rows,
        parse_rejects=rejects,
        fingerprint=batch_fingerprint(messages),
    )


@dataclass(frozen=True)
class Parsed:
    """A batch parsed ahead of its turn, as Arrow (see `parse_ahead`)."""

    rows: pa.Table
    rejects: pa.Table
    rows_in: int
    fingerprint: str
    shaped: bool = False
    """The rows are already flagged by the contract (its `flagging_query`)."""

    def read(self, engine: DuckDBEngine) -> SourceRead:
        """The batch as the source read of a run on `engine` (the rows copied in)."""
        table = engine.register_arrow(engine.new_name("parsed"), self.rows)
        return SourceRead(
            table=table,
            rows_in=self.rows_in,
            parse_rejects=self.rejects,
            fingerprint=self.fingerprint,
            is_shaped=self.shaped,
        )


def parse_ahead(
    engine: DuckDBEngine,
    messages: pa.Table,
    contract: Contract,
    *,
    max_deliveries: int,
    shape: Shape | None = None,
) -> Parsed:
    """`parse_messages` on an engine of its own (the stream runner's fetch thread), with the
    rows handed back as Arrow: the batch's run then starts at the contract — or, given the
    contract's `shape` (`checks.contract.flagging_query`), with the contract applied too."""
    read = parse_messages(engine, messages, contract, max_deliveries=max_deliveries)
    table = read.table
    try:
        if shape is not None:
            columns = [name for name, _ in engine.columns(read.table)]
            table = engine.create_table(
                engine.new_name("flagged"),
                shape(quote_ident(read.table), columns),
                purpose="apply the contract ahead",
            )
        rows = engine.fetch_arrow(
            f"SELECT * FROM {quote_ident(table)}", purpose="hand over the parsed rows"
        )
    finally:
        engine.drop(*{read.table, table})
    return Parsed(rows, read.parse_rejects, read.rows_in, read.fingerprint, shape is not None)


def batch_fingerprint(messages: pa.Table) -> str:
    """Identifies a batch: its first and last message ids and its size."""
    first, last = (messages.column("msg_id")[i].as_py() for i in (0, -1))
    return hashlib.sha256(f"{first}|{last}|{messages.num_rows}".encode()).hexdigest()[:20]


TRUNCATE_PAYLOAD = b'{"__op":"t"}'
"""The payload of a change source's TRUNCATE (the stream runner commits it on its own)."""

_TRUNCATE = (
    "WHEN json_extract_string(text, '$.\"__op\"') = 't' THEN 'a TRUNCATE of the source table: "
    "the Delta table was not emptied; to follow it, restore or recreate the table and take a "
    "new snapshot (reset the slot)'"
)
"""A change source's TRUNCATE becomes a dead letter with what to do, never a silent skip."""

_CHANGE_TEXT = (
    "CASE WHEN reason IS NULL THEN [json_extract_string(text, '$.\"__op\"'), "
    "json_extract_string(text, '$.\"__unchanged\"'), "
    "json_extract(text, '$.\"__old_key\"')::VARCHAR] END"
)
"""A change's operation, unchanged columns (a JSON list as text) and old key (JSON text)."""


_CHANGE_KEYS = ("__op", "__unchanged", "__old_key")


def _payload_keys(engine: DuckDBEngine, arrived: str, names: list[str]) -> dict[str, list[str]]:
    """Column → the JSON keys to read it from: the contract's columns, then the top-level
    keys of the batch's objects that the contract does not name. A field the contract does
    not list (a new field of the producer, a column a change source added) reaches the
    contract, which keeps (`evolve`) or rejects (`freeze`) it instead of it being dropped
    unseen. Keys that differ only in case are one column, as SQL resolves names (`Email` is
    the contract's `email`; both in one batch are read as one, the exact spelling first).
    Keys that cannot be a column (empty, or a reserved `__sw_` name) are left out."""
    found = engine.fetch_arrow(
        "SELECT DISTINCT unnest(json_keys(text)) AS key FROM "
        f"(SELECT TRY(decode(payload)) AS text FROM {quote_ident(arrived)}) "
        "WHERE json_valid(text) AND starts_with(ltrim(text), '{') ORDER BY key",
        purpose="columns beyond the contract",
    )
    present = [
        k
        for k in found.column("key").to_pylist()
        if k and k not in _CHANGE_KEYS and not k.lower().startswith("__sw_")
    ]
    by_fold: dict[str, list[str]] = {}
    for key in present:
        by_fold.setdefault(key.casefold(), []).append(key)
    keys: dict[str, list[str]] = {}
    for name in names:
        others = [k for k in by_fold.pop(name.casefold(), []) if k != name]
        keys[name] = [name, *others]
    for spellings in by_fold.values():
        keys[spellings[0]] = spellings
    return keys


def _json_path(field: str) -> str:
    """A JSON path to a top-level key, quoted so dots and spaces in the key are literal."""
    return '$."' + field.replace("\\", "\\\\").replace('"', '\\"') + '"'
