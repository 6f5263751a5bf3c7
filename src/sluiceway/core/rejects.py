"""Dead-letter rows: from parse failures and contract violations to the dead-letter schema.

The masked payload is readable; the raw payload is encrypted whenever the pipeline declares
PII (AES-GCM, key SLUICE_ENCRYPTION_KEY), so a dead-letter table never holds PII in clear.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.compute as pc

from sluiceway.core.context import ROW_ERRORS, ROW_FILE, ROW_NUMBER
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident, quote_literal
from sluiceway.masking import encrypt_value, encrypt_values


@dataclass(frozen=True)
class RejectContext:
    """What every dead-letter row of a run shares."""

    pipeline: str
    run_id: str
    run_key: str
    logical_date: date
    encryption_key: bytes | None
    has_pii: bool


def parse_rejects_rows(
    rejects: pa.Table, source: str, ctx: RejectContext
) -> list[dict[str, object]]:
    """Rows for records that could not be parsed at all."""
    return [
        _row(
            ctx,
            source=source,
            file=r["file"],
            line=r["line"],
            row=None,
            stage="parse",
            errors=[{"rule": "parse", "column": None, "reason": r["reason"]}],
            payload=None if ctx.has_pii else _text(r["raw"]),
            raw=r["raw"] or b"",
        )
        for r in rejects.to_pylist()
    ]


def contract_rejects_table(
    engine: DuckDBEngine,
    table: str,
    source: str,
    ctx: RejectContext,
    *,
    stage: str = "contract",
) -> pa.Table:
    """Dead-letter rows for records that broke the contract (or, with `stage='check'`, a
    check routing its failing rows), built in SQL in one query; the raw payload is still
    clear text: `seal` finishes them.

    The dlq_id is the same hash `_row` computes for parse rejects.
    """
    identity = " || '|' || ".join(
        [
            quote_literal(f"{ctx.pipeline}|{ctx.run_key}|{source}"),
            f"coalesce({ROW_FILE}, 'None')",
            "'None'",
            f"coalesce({ROW_NUMBER}::VARCHAR, 'None')",
            quote_literal(stage),
        ]
    )
    data = engine.fetch_arrow(
        f"SELECT left(sha256({identity}), 24) AS dlq_id, {quote_literal(ctx.pipeline)} AS pipeline, "
        f"{quote_literal(ctx.run_id)} AS run_id, {quote_literal(ctx.run_key)} AS run_key, "
        f"DATE {quote_literal(str(ctx.logical_date))} AS logical_date, {quote_literal(source)} AS source, "
        f"{ROW_FILE} AS file, NULL::BIGINT AS line, {ROW_NUMBER} AS row, {quote_literal(stage)} AS stage, "
        f"{ROW_ERRORS} AS errors, payload, raw FROM {quote_ident(table)} ORDER BY {ROW_FILE}, {ROW_NUMBER}",
        purpose="build dead-letter rows",
    )
    return data


def seal(data: pa.Table, ctx: RejectContext, schema: pa.Schema) -> pa.Table:
    """Finish dead-letter rows from `contract_rejects_table`: encrypt the raw payloads when the
    pipeline has PII, stamp them, and cast to `schema`. Pure Python and Arrow, no engine:
    the runner runs it on a worker thread while DuckDB goes on with the next stage."""
    raw = pc.fill_null(data["raw"], "").cast(pa.binary())
    if ctx.has_pii:
        assert ctx.encryption_key is not None, "runner checks the key before any read"
        raw = pa.array(encrypt_values(raw.to_pylist(), ctx.encryption_key), pa.binary())
    data = data.drop_columns(["raw"]).append_column("raw_payload", raw)
    data = data.append_column("raw_encrypted", pa.repeat(pa.scalar(ctx.has_pii), data.num_rows))
    now = pa.scalar(datetime.now(UTC), pa.timestamp("us", tz="UTC"))
    data = data.append_column("dead_lettered_at", pa.repeat(now, data.num_rows))
    return data.select(schema.names).cast(schema)


def _row(
    ctx: RejectContext,
    *,
    source: str,
    file: object,
    line: object,
    row: object,
    stage: str,
    errors: object,
    payload: object,
    raw: bytes,
) -> dict[str, object]:
    identity = f"{ctx.pipeline}|{ctx.run_key}|{source}|{file}|{line}|{row}|{stage}"
    encrypted = ctx.has_pii
    if encrypted:
        assert ctx.encryption_key is not None, "runner checks the key before any read"
        raw = encrypt_value(raw, ctx.encryption_key)
    return {
        "dlq_id": hashlib.sha256(identity.encode()).hexdigest()[:24],
        "pipeline": ctx.pipeline,
        "run_id": ctx.run_id,
        "run_key": ctx.run_key,
        "logical_date": ctx.logical_date,
        "source": source,
        "file": file,
        "line": line,
        "row": row,
        "stage": stage,
        "errors": errors,
        "payload": payload,
        "raw_payload": raw,
        "raw_encrypted": encrypted,
        "dead_lettered_at": datetime.now(UTC),
    }


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")


def to_table(rows: list[dict[str, object]], schema: pa.Schema) -> pa.Table:
    """Rows as an Arrow table of the dead-letter schema."""
    return pa.Table.from_pylist(rows, schema=schema)


def combine(parts: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """All dead-letter rows of a run as one table (empty with the schema when there are none)."""
    return pa.concat_tables([p.cast(schema) for p in parts]) if parts else schema.empty_table()


def rule_counts(table: pa.Table) -> dict[str, int]:
    """How many dead-letter rows broke each rule (column.rule), for summaries."""
    if table.num_rows == 0:
        return {}
    flat = pc.list_flatten(table["errors"])
    keys = pc.binary_join_element_wise(
        pc.fill_null(pc.struct_field(flat, "column"), "*"), pc.struct_field(flat, "rule"), "."
    )
    counts = pc.value_counts(keys).to_pylist()
    return dict(sorted(((c["values"], c["counts"]) for c in counts), key=lambda kv: -kv[1]))
