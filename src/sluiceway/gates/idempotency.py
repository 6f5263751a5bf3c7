"""The idempotency gate of the pre-flight review: does every sink make a rerun safe?

Each sink type is judged by its own rule, and every fix names a mode (and keys or partition
columns) that the sink type has, taken from the spec's contracts, so that writing it as
suggested loads and passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sluiceway.core.spec import Pipeline
from sluiceway.gates.findings import Finding, Status

CHECK = "idempotency"
_DATE_TYPES = ("date", "timestamp", "timestamptz", "datetime")


def finding(status: Status, reason: str, fix: str, where: str) -> Finding:
    """An idempotency gate finding."""
    return Finding("gate", CHECK, status, reason, fix if status != "pass" else "", where)


def idempotency(pipeline: Pipeline) -> list[Finding]:
    """Every sink makes a rerun safe.

    Args:
        pipeline: the validated spec.

    Returns:
        One finding per unsafe sink, or one pass finding naming every sink and its mode.
    """
    problems: list[Finding] = []
    safe: list[str] = []
    for index, sink in enumerate(pipeline.sinks):
        judge = _SINK_JUDGES.get(sink.type)
        result = judge(pipeline, sink, f"sinks[{index}]") if judge else None
        if result is None:
            safe.append(f"sinks[{index}] ({sink.type}, {getattr(sink, 'mode', '')})")
        else:
            problems.append(result)
    if problems:
        return problems
    return [Finding("gate", CHECK, "pass", f"reruns are safe: {', '.join(safe)}")]


def key_columns(pipeline: Pipeline) -> list[str]:
    """A key to suggest: the first non-nullable contract column (else the first one, else
    'id')."""
    columns = [
        (column, rules.nullable)
        for source in pipeline.sources.values()
        if source.contract is not None
        for column, rules in source.contract.columns.items()
    ]
    strict = [column for column, nullable in columns if not nullable]
    return [(strict or [column for column, _ in columns] or ["id"])[0]]


def date_column(pipeline: Pipeline) -> str:
    """A partition column to suggest: the first date or timestamp contract column, else
    'event_date'."""
    for source in pipeline.sources.values():
        if source.contract is not None:
            for column, rules in source.contract.columns.items():
                if rules.type in _DATE_TYPES:
                    return column
    return "event_date"


def _flow(values: list[str]) -> str:
    return "[" + ", ".join(values) + "]"


def _delta_sink(pipeline: Pipeline, sink: Any, where: str) -> Finding | None:
    if sink.mode == "merge":
        return _merge_keys_nullable(pipeline, sink.merge_keys, f"{where}.merge_keys")
    if sink.mode != "append":
        return None
    if sink.partition_by and _allows_overwrite(pipeline):
        fix = f"set {where}.mode: overwrite_partition (replaces the partitions of each run)"
    else:
        fix = f"set {where}.mode: merge and {where}.merge_keys: {_flow(key_columns(pipeline))}"
    return _append(pipeline, where, fix)


def _parquet_sink(pipeline: Pipeline, sink: Any, where: str) -> Finding | None:
    if sink.mode != "append":
        return None
    fix = f"set {where}.mode: overwrite_partition"
    if not sink.partition_by:
        fix += f" and {where}.partition_by: [{date_column(pipeline)}]"
    if not _allows_overwrite(pipeline):
        fix = (
            "write to a delta sink with mode: merge instead (parquet has no merge, and "
            "overwrite_partition drops what earlier incremental reads wrote)"
        )
    return _append(pipeline, where, fix)


def _allows_overwrite(pipeline: Pipeline) -> bool:
    """False when a source reads new files or pages only (the loader then refuses
    overwrite_partition: it would drop the rows earlier reads put in the same partition)."""
    return not any(getattr(source, "incremental", None) for source in pipeline.sources.values())


def _postgres_sink(pipeline: Pipeline, sink: Any, where: str) -> Finding | None:
    if sink.mode == "upsert":
        return _merge_keys_nullable(pipeline, sink.keys, f"{where}.keys")
    keys = sink.keys or key_columns(pipeline)
    fix = f"set {where}.mode: upsert and {where}.keys: {_flow(keys)}"
    result = _append(pipeline, where, fix)
    if result is not None and result.status == "fail" and not sink.keys:
        return finding(
            "fail",
            f"{where} (postgres {sink.table}, mode {sink.mode}) has no keys: a rerun inserts "
            "the rows again",
            f"{fix} (the columns identifying a row)",
            f"{where}.keys",
        )
    return result


_SINK_JUDGES: dict[str, Callable[[Pipeline, Any, str], Finding | None]] = {
    "delta": _delta_sink,
    "parquet": _parquet_sink,
    "postgres": _postgres_sink,
}


def _append(pipeline: Pipeline, where: str, fix: str) -> Finding | None:
    if pipeline.mode == "stream":
        return None  # each batch commits once, keyed by an app transaction
    full = [name for name, source in pipeline.sources.items() if not reads_incrementally(source)]
    if full:
        return finding(
            "fail",
            f"{where}.mode is append on a batch pipeline whose source(s) {', '.join(full)} "
            "re-read everything each run: blind append, every run adds the rows again",
            f"{fix}; or read sources.{full[0]} incrementally",
            f"{where}.mode",
        )
    return finding(
        "warn",
        f"{where}.mode is append; every source reads incrementally, so a rerun only adds "
        "what is new, but a reset position or a backfill would duplicate rows",
        f"for reruns that converge: {fix}",
        f"{where}.mode",
    )


def reads_incrementally(source: Any) -> bool:
    """True when the source only reads what no earlier run committed."""
    incremental = getattr(source, "incremental", None)
    if getattr(source, "mode", None) == "incremental" or incremental not in (None, False):
        return True
    return bool(getattr(source, "streaming", False))


def _merge_keys_nullable(pipeline: Pipeline, keys: list[str], where: str) -> Finding | None:
    strict = {
        column.casefold()
        for source in pipeline.sources.values()
        if source.contract is not None
        for column, rules in source.contract.columns.items()
        if not rules.nullable
    }
    loose = [key for key in keys if key.casefold() not in strict]
    if not loose:
        return None
    return finding(
        "warn",
        f"{where} {loose} not declared nullable: false in a contract: rows with a NULL key "
        "never match and are inserted again on each rerun",
        f"declare {loose[0]}: {{nullable: false}} in the source contract",
        where,
    )
