"""`sluice forget`: erase one data subject from every table of the pipelines given.

For each Delta table (delta sinks, their tiers, the dead-letter table) the rows whose
subject column holds the subject's value — raw, or masked as that pipeline masks it
(hash, hmac, email, encrypt are deterministic; redact and truncate_ip cannot identify
anyone) — are deleted; dead letters whose payload or decrypted raw payload holds it too.
Every touched table is then vacuumed with retention 0 (time travel to the erased versions
is gone) and its Delta log is cut at a fresh checkpoint (the log's statistics and delete
predicates held the value). Finally every file under every table folder is scanned; a
table forget deleted nothing from whose history still holds the subject (its rows left by
a tier move or an overwrite) is then sealed the same way and scanned again.

The value itself is never printed, logged or audited: only `subject_fingerprint`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable

from sluiceway import masking
from sluiceway.cli_storage import TableTarget
from sluiceway.connectors import postgres as pgc
from sluiceway.core.spec import Pipeline
from sluiceway.core.storage import arrow_filesystem
from sluiceway.engines.duckdb import quote_ident, quote_literal
from sluiceway.errors import ConfigError, SluicewayError
from sluiceway.ops.audit import AuditLog, subject_fingerprint
from sluiceway.ops.forget_scan import ScanResult, SubjectForms, pipeline_forms, scan_table
from sluiceway.ops.retention import GovernedTable, governed_tables, open_table, other_sinks
from sluiceway.ops.tiering import recover_manifests, tier_layout
from sluiceway.sinks.dead_letter import DeadLetterTable
from sluiceway.sinks.delta import (
    COMPLETE_KEY,
    PIPELINE_KEY,
    POSITIONS_KEY,
    DeltaSinkConfig,
    read_positions,
)

_METADATA_KEY = "sluice.forget_subject"


@dataclass
class TableErasure:
    """What forget did to one table."""

    table: GovernedTable
    rows_deleted: int = 0
    files_rewritten: int = 0
    scan: ScanResult | None = None
    problem: str | None = None

    @property
    def is_clean(self) -> bool:
        return self.problem is None and self.scan is not None and self.scan.is_clean


@dataclass
class ForgetReport:
    """What forget did: per table, the notes on masking, and what it could not handle."""

    fingerprint: str
    column: str
    tables: list[TableErasure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unhandled: list[str] = field(default_factory=list)

    @property
    def rows_deleted(self) -> int:
        return sum(t.rows_deleted for t in self.tables)

    @property
    def is_clean(self) -> bool:
        return not self.unhandled and all(t.is_clean for t in self.tables)


def forget_subject(
    pipelines: Sequence[tuple[Pipeline, Path]],
    column: str,
    value: str,
    *,
    state_dir: Path | None,
    environ: Mapping[str, str] | None = None,
    is_dry_run: bool = False,
) -> ForgetReport:
    """Erase the subject `column = value` from every table of `pipelines`, then verify.

    Args:
        pipelines: each spec with its folder (relative paths resolve against it).
        column: the subject column.
        value: the subject's value (never shown anywhere).
        state_dir: the state folder (audit log, default dead-letter table).
        environ: where the masking keys are read (default: os.environ).
        is_dry_run: count the rows only; delete, vacuum and scan nothing.

    Returns:
        The report; `is_clean` only when every table verified clean.

    Raises:
        ConfigError: the column is in no table, or a needed key is not set.
    """
    keys = masking.MaskKeys.from_env(os.environ if environ is None else environ)
    report = ForgetReport(subject_fingerprint(column, value, keys.hmac_key), column)
    plan = _plan(pipelines, column, value, keys, state_dir, report)
    everything = SubjectForms(
        column,
        frozenset(f for forms, _ in plan for f in forms),
        _number(value),
        keys.encryption_key,
    )
    touched: dict[str, GovernedTable] = {}
    for forms, tables in plan:
        subject = SubjectForms(column, frozenset(forms), _number(value), keys.encryption_key)
        for table in tables:
            erasure = _erase(table, subject, report.fingerprint, is_dry_run, everything)
            report.tables.append(erasure)
            if erasure.rows_deleted and not is_dry_run and table.kind != "postgres":
                touched[table.target.uri] = table
    staged = _erase_staged(state_dir, everything, is_dry_run) if state_dir else 0
    if staged:
        verb = "would be deleted" if is_dry_run else "deleted"
        report.notes.append(
            f"{staged} row(s) {verb} from the staged results kept by runs that failed their "
            f"checks ({state_dir}/staging)"
        )
    if not is_dry_run:
        _record_moves(pipelines, report, everything)
        _seal(touched, report, everything)
        _verify(report, everything)
        stale = _holding_history(report, touched)
        if stale:
            _seal(stale, report, everything)
            _verify(report, everything, only=stale)
        _audit(report, pipelines, state_dir)
    return report


def _plan(
    pipelines: Sequence[tuple[Pipeline, Path]],
    column: str,
    value: str,
    keys: masking.MaskKeys,
    state_dir: Path | None,
    report: ForgetReport,
) -> list[tuple[list[str], list[GovernedTable]]]:
    plan: list[tuple[list[str], list[GovernedTable]]] = []
    has_column = False
    for pipeline, base_dir in pipelines:
        forms, note = pipeline_forms(pipeline, column, value, keys)
        if note:
            report.notes.append(note)
        if pipeline.pii and keys.encryption_key is None:
            raise ConfigError(
                f"pipeline '{pipeline.pipeline}' has PII, so its dead letters' raw payloads "
                "are encrypted: set SLUICE_ENCRYPTION_KEY to the key its runs used."
            )
        unhandled = other_sinks(pipeline, ("delta", "postgres"))
        report.unhandled += [f"{pipeline.pipeline} {s}" for s in unhandled]
        tables = governed_tables(pipeline, base_dir, state_dir) + postgres_tables(pipeline)
        has_column = (
            has_column
            or any(_column_of(t, column) for t in tables)
            or (
                _declares(pipeline, column)
                and (
                    any(_has_letters(t) for t in tables)
                    or (state_dir is not None and any((state_dir / "staging").glob("*/*.parquet")))
                )
            )
        )
        plan.append((forms, tables))
    if not has_column:
        raise ConfigError(
            f"column '{column}' is in no table of the pipeline(s) given "
            f"({', '.join(p.pipeline for p, _ in pipelines)}); pass the subject column as "
            "--subject COLUMN=VALUE, or run the pipelines first."
        )
    return plan


def _declares(pipeline: Pipeline, column: str) -> bool:
    """The spec names `column`: its subject key, or a column of a source's contract."""
    folded = column.casefold()
    if pipeline.compliance and (pipeline.compliance.subject_key or "").casefold() == folded:
        return True
    return any(
        name.casefold() == folded
        for source in pipeline.sources.values()
        if getattr(source, "contract", None) is not None
        for name in source.contract.columns  # type: ignore[union-attr]
    )


def _has_letters(table: GovernedTable) -> bool:
    """A dead-letter table exists: rows rejected before any sink table was made may hold
    the subject (a first run that failed its gate, say)."""
    return table.kind == "dead_letter" and open_table(table.target) is not None


def _column_of(table: GovernedTable, column: str) -> str | None:
    if table.kind == "dead_letter":
        return None
    if table.kind == "postgres":
        return postgres_column(table, column)
    delta = open_table(table.target)
    if delta is None:
        return None
    names = delta.schema().to_arrow().names
    return next((n for n in names if n.casefold() == column.casefold()), None)


def _erase(
    table: GovernedTable,
    forms: SubjectForms,
    fingerprint: str,
    is_dry_run: bool,
    everything: SubjectForms,
) -> TableErasure:
    erasure = TableErasure(table)
    try:
        _ERASERS[table.kind](erasure, forms, fingerprint, is_dry_run)
    except SluicewayError as exc:
        erasure.problem = _scrub(exc.message, everything)
    return erasure


def _erase_rows(
    erasure: TableErasure, forms: SubjectForms, fingerprint: str, is_dry_run: bool
) -> None:
    target = erasure.table.target
    column = _column_of(erasure.table, forms.column)
    delta = open_table(target)
    if column is None or delta is None:
        return
    values = pa.array(sorted(forms.values))
    matching = ds.field(column).cast(pa.string()).isin(values)
    erasure.rows_deleted = delta.to_pyarrow_dataset().count_rows(filter=matching)
    if is_dry_run or not erasure.rows_deleted:
        return
    listed = ", ".join(quote_literal(v) for v in sorted(forms.values))
    with target.errors("delete the subject's rows from"):
        metrics = delta.delete(
            f"CAST({quote_ident(column)} AS VARCHAR) IN ({listed})",
            commit_properties=CommitProperties(custom_metadata={_METADATA_KEY: fingerprint}),
        )
    erasure.rows_deleted = int(metrics.get("num_deleted_rows", erasure.rows_deleted))
    erasure.files_rewritten = int(metrics.get("num_removed_files", 0))


def _erase_dead_letters(
    erasure: TableErasure, forms: SubjectForms, fingerprint: str, is_dry_run: bool
) -> None:
    target = erasure.table.target
    letters = DeadLetterTable(target.uri, target.spec_options)
    rows = letters.read(pipeline=erasure.table.pipeline)
    ids = []
    for row in rows.select(["dlq_id", "payload", "raw_payload"]).to_pylist():
        in_raw = forms.in_raw_payload(row["raw_payload"])
        if in_raw is None:
            raise ConfigError(
                f"dead letter {row['dlq_id']}: its raw payload cannot be decrypted with "
                "SLUICE_ENCRYPTION_KEY; set the key the run used."
            )
        if in_raw or forms.in_raw_payload((row["payload"] or "").encode()):
            ids.append(row["dlq_id"])
    erasure.rows_deleted = len(ids)
    if is_dry_run or not ids:
        return
    before = len(open_table(target).file_uris())  # type: ignore[union-attr]
    letters.delete(ids, metadata={_METADATA_KEY: fingerprint})
    after = open_table(target)
    erasure.files_rewritten = max(before - len(after.file_uris()), 0) if after else 0


def _erase_postgres(
    erasure: TableErasure, forms: SubjectForms, fingerprint: str, is_dry_run: bool
) -> None:
    column = postgres_column(erasure.table, forms.column)
    if column is None:
        erasure.scan = ScanResult()
        return
    erasure.rows_deleted, left = erase_postgres_rows(
        erasure.table, column, sorted(forms.values), is_dry_run=is_dry_run
    )
    erasure.scan = ScanResult(dirty=[f"{left} row(s) still match"] if left else [])


_ERASERS = {
    "sink": _erase_rows,
    "tier": _erase_rows,
    "dead_letter": _erase_dead_letters,
    "postgres": _erase_postgres,
}


def _seal(
    touched: Mapping[str, GovernedTable], report: ForgetReport, everything: SubjectForms
) -> None:
    """Vacuum every touched table with retention 0, then cut its log at a checkpoint."""
    for uri, table in touched.items():
        try:
            delta = table.target.open()
            with table.target.errors("vacuum"):
                delta.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
            _cut_log(table)
        except SluicewayError as exc:
            for erasure in report.tables:
                if erasure.table.target.uri == uri:
                    erasure.problem = _scrub(exc.message, everything)


def _record_moves(
    pipelines: Sequence[tuple[Pipeline, Path]], report: ForgetReport, everything: SubjectForms
) -> None:
    """Copy the tier moves a crash left only in a warmer tier's history into the manifests:
    cutting that history would otherwise hide the moved rows from every reader."""
    for pipeline, base_dir in pipelines:
        for sink in pipeline.sinks:
            if not (isinstance(sink, DeltaSinkConfig) and sink.tiers):
                continue
            try:
                recover_manifests(tier_layout(sink, base_dir))
            except SluicewayError as exc:
                report.unhandled.append(
                    f"{pipeline.pipeline} {sink.path}: tier moves not recorded "
                    f"({_scrub(exc.message, everything)}); run `sluice tier` first"
                )


def _cut_log(table: GovernedTable) -> None:
    """Checkpoint the latest version, then delete every log file older than it: the old
    commits' statistics (minValues/maxValues) and delete predicates hold the value."""
    target = table.target
    delta = target.open()
    with target.errors("carry the pipeline's positions past the cut of"):
        if _carry_positions(delta, table.pipeline):
            delta = target.open()
    version = delta.version()
    with target.errors("checkpoint"):
        delta.create_checkpoint()
        filesystem, root = arrow_filesystem(target.uri, target.spec_options)
        log = f"{root}/_delta_log"
        for info in filesystem.get_file_info(pafs.FileSelector(log)):
            name = info.base_name
            head = name.split(".", 1)[0]
            if info.type == pafs.FileType.File and head.isdigit() and int(head) < version:
                filesystem.delete_file(info.path)


def _erase_staged(state_dir: Path, forms: SubjectForms, is_dry_run: bool) -> int:
    """Rows of the subject in `staging/<run>/staged.parquet` (what a run that failed its
    checks kept for inspection): rewritten without them. Returns the rows found."""
    found = 0
    values = pa.array(sorted(forms.values))
    for path in sorted((state_dir / "staging").glob("*/staged.parquet")):
        table = pq.read_table(path)
        column = next(
            (n for n in table.column_names if n.casefold() == forms.column.casefold()), None
        )
        if column is None:
            continue
        hit = pc.fill_null(pc.is_in(table[column].cast(pa.string()), value_set=values), False)
        count = int(pc.sum(hit).as_py() or 0)
        found += count
        if count and not is_dry_run:
            pq.write_table(table.filter(pc.invert(hit)), path, compression="zstd")
    return found


def _carry_positions(delta: DeltaTable, pipeline: str) -> bool:
    """Make the newest commit hold `pipeline`'s positions when it does not (forget's delete,
    an optimize): the cut removes the older commits that hold them, and a run (a stream
    above all) would else read its sources again from the start. Returns True when a
    commit was made (a table property change that carries them)."""
    newest = delta.history(1)
    if newest and newest[0].get(PIPELINE_KEY) == pipeline and newest[0].get(COMPLETE_KEY) == "true":
        return False
    positions = read_positions(delta, pipeline)
    if not positions:
        return False
    delta.alter.set_table_properties(
        {"sluice.positions_carried_from": str(delta.version())},
        raise_if_not_exists=False,
        commit_properties=CommitProperties(
            custom_metadata={
                PIPELINE_KEY: pipeline,
                POSITIONS_KEY: json.dumps(positions, sort_keys=True),
                COMPLETE_KEY: "true",
            }
        ),
    )
    return True


def _holding_history(
    report: ForgetReport, touched: Mapping[str, GovernedTable]
) -> dict[str, GovernedTable]:
    """Tables forget deleted nothing from whose older files or log still hold the subject:
    a tier move or an overwrite removed its rows from the current version, not from the
    history. They are sealed like the touched ones."""
    return {
        erasure.table.target.uri: erasure.table
        for erasure in report.tables
        if erasure.table.kind != "postgres"
        and erasure.table.target.uri not in touched
        and erasure.problem is None
        and erasure.scan is not None
        and not erasure.scan.is_clean
    }


def _verify(
    report: ForgetReport, everything: SubjectForms, *, only: Mapping[str, Any] | None = None
) -> None:
    scans: dict[str, ScanResult] = {}
    for erasure in report.tables:
        target = erasure.table.target
        if erasure.table.kind == "postgres" or (only is not None and target.uri not in only):
            continue
        if open_table(target) is None:
            erasure.scan = ScanResult()
            continue
        if target.uri not in scans:
            try:
                scans[target.uri] = scan_table(target.uri, target.spec_options, everything)
            except SluicewayError as exc:
                erasure.problem = _scrub(exc.message, everything)
                continue
        erasure.scan = scans[target.uri]


def _audit(
    report: ForgetReport, pipelines: Sequence[tuple[Pipeline, Path]], state_dir: Path | None
) -> None:
    if state_dir is None:
        return
    log = AuditLog(state_dir)
    for pipeline, _ in pipelines:
        if pipeline.compliance is not None and not pipeline.compliance.audit:
            continue
        mine = [t for t in report.tables if t.table.pipeline == pipeline.pipeline]
        log.append(
            "forget",
            pipeline=pipeline.pipeline,
            tables=[t.table.target.uri for t in mine],
            rows_affected=sum(t.rows_deleted for t in mine),
            details=_details(report, mine),
        )


def _details(report: ForgetReport, mine: list[TableErasure]) -> dict[str, Any]:
    return {
        "subject": report.fingerprint,
        "column": report.column,
        "verified": all(t.is_clean for t in mine),
        "per_table": {
            t.table.target.uri: {
                "rows_deleted": t.rows_deleted,
                "files_rewritten": t.files_rewritten,
                "verified": t.is_clean,
            }
            for t in mine
        },
        "not_handled": report.unhandled,
    }


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _scrub(text: str, forms: SubjectForms) -> str:
    for value in sorted(forms.values, key=len, reverse=True):
        text = text.replace(value, "<subject>")
    return text


def postgres_tables(pipeline: Pipeline) -> list[GovernedTable]:
    """The pipeline's postgres sinks, as tables forget erases from with DELETE."""
    tables = []
    for index, sink in enumerate(pipeline.sinks):
        if sink.type == "postgres":
            schema, name = sink.schema_and_name()  # type: ignore[attr-defined]
            where = f"postgres {sink.where()}/{schema}.{name}"  # type: ignore[attr-defined]
            target = TableTarget(f"sinks[{index}] (postgres)", where, {})
            tables.append(GovernedTable(pipeline.pipeline, target, "postgres", config=sink))
    return tables


def postgres_column(table: GovernedTable, column: str) -> str | None:
    """The table's column named `column` (case-insensitively), or None.

    Raises:
        TransientError, ConfigError: the server cannot be reached or refused the login.
    """
    schema, name = table.config.schema_and_name()
    with pgc.connect(table.config, role=f"sink {schema}.{name}") as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = $2",
            (schema, name),
        )
        names = [row[0] for row in cursor.fetchall()]
    return next((n for n in names if n.casefold() == column.casefold()), None)


def erase_postgres_rows(
    table: GovernedTable, column: str, forms: list[str], *, is_dry_run: bool
) -> tuple[int, int]:
    """DELETE the rows whose `column` (as text) is one of `forms`, in one transaction; the
    values travel as a bound parameter, never in the SQL text.

    Returns:
        (rows deleted or, dry run, matching; rows still matching afterwards).
    """
    schema, name = table.config.schema_and_name()
    relation = f"{quote_ident(schema)}.{quote_ident(name)}"
    match = f"{quote_ident(column)}::text = ANY($1)"
    with pgc.connect(table.config, role=f"sink {schema}.{name}") as conn:
        cursor = conn.cursor()
        if is_dry_run:
            cursor.execute(f"SELECT count(*) FROM {relation} WHERE {match}", (forms,))
            return int(cursor.fetchone()[0]), 0
        cursor.execute(
            f"WITH gone AS (DELETE FROM {relation} WHERE {match} RETURNING 1) "
            "SELECT count(*) FROM gone",
            (forms,),
        )
        deleted = int(cursor.fetchone()[0])
        conn.commit()
        cursor.execute(f"SELECT count(*) FROM {relation} WHERE {match}", (forms,))
        return deleted, int(cursor.fetchone()[0])
