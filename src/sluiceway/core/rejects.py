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
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident
from sluiceway.masking import encrypt_value


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


def contract_rejects_rows(
    engine: DuckDBEngine, table: str, source: str, ctx: RejectContext
) -> list[dict[str, object]]:
    """Rows for records that broke the contract (few by nature: fetched into Python)."""
    data = engine.fetch_arrow(
        f"SELECT {ROW_FILE}, {ROW_NUMBER}, {ROW_ERRORS}, payload, raw FROM {quote_ident(table)} "
        f"ORDER BY {ROW_FILE}, {ROW_NUMBER}",
        purpose="fetch rejected rows",
    )
    return [
        _row(
            ctx,
            source=source,
            file=r[ROW_FILE],
            line=None,
            row=r[ROW_NUMBER],
            stage="contract",
            errors=r[ROW_ERRORS],
            payload=r["payload"],
            raw=(r["raw"] or "").encode(),
        )
        for r in data.to_pylist()
    ]


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
