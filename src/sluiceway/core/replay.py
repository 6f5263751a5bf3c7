"""`sluice replay`: send a run's dead letters back through the (fixed) pipeline.

Contract rejects of the primary source are rebuilt from their raw payload (decrypted with
SLUICE_ENCRYPTION_KEY when encrypted) and run through contract, steps, masking and checks.
Rows that now pass are appended to the sinks under an idempotency key made of the
dead-letter ids and of which of them still fail (the runner's `_replay_key`), then deleted
from the dead-letter table. A crash between the two is safe: the next replay with the same
spec finds the same rows passing, the sink skips the committed key, and the delete runs.
So each row leaves the dead-letter table exactly once. A replay where nothing passes
commits nothing; one after a spec fix, where more rows pass, writes under a new key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from dataclasses import replace as with_changes
from pathlib import Path

import pyarrow as pa

from sluiceway import masking
from sluiceway.core.context import PARSE_REJECT_SCHEMA, ROW_FILE, ROW_NUMBER, RunContext, SourceRead
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline
from sluiceway.core.spec import Pipeline
from sluiceway.errors import ConfigError, SluicewayError
from sluiceway.sinks.dead_letter import DeadLetterTable


@dataclass
class ReplayResult:
    """What a replay did."""

    replayed: int
    passed: int
    still_failing: int
    deleted: int
    run: RunResult | None
    not_replayable: int = 0
    """Dead letters of the run that replay cannot rerun: unparseable records or pages (no
    row to rebuild), rejects of other sources, rows a check routed; reading the source
    again (a rerun) brings those back."""


def dead_letter_table(pipeline: Pipeline, options: RunOptions) -> DeadLetterTable:
    """The pipeline's dead-letter table, as the runner would resolve it."""
    config = pipeline.dead_letter
    base = (options.base_dir or Path.cwd()).resolve()
    if config is None:
        environ = os.environ if options.environ is None else options.environ
        state = options.state_dir or Path(environ.get("SLUICE_HOME") or Path.cwd() / ".sluice")
        return DeadLetterTable(str(Path(state).resolve() / "dead_letter"), {})
    if "://" in config.path:
        return DeadLetterTable(config.path, config.storage_options)
    path = str((base / Path(config.path).expanduser()).resolve())
    return DeadLetterTable(path, config.storage_options)


def replay(pipeline: Pipeline, run_id: str, options: RunOptions) -> ReplayResult:
    """Replay the contract dead letters of `run_id` (primary source) through `pipeline`.

    Raises:
        ConfigError: the pipeline captures changes: a dead-lettered change is older than the
            changes applied since, so applying it now could undo them.
    """
    if getattr(pipeline.sources[pipeline.primary_source], "change_capture", False):
        raise ConfigError(
            f"pipeline {pipeline.pipeline} captures row changes: a dead-lettered change cannot "
            "be replayed, since changes applied after it would be undone. Fix the contract, "
            "then let the next change of each row bring it, or read the table anew (delete the "
            "sink's table and take a new snapshot: docs/streaming/postgres_cdc.md, "
            "mysql_cdc.md). `sluice dlq SPEC` lists the changes."
        )
    table = dead_letter_table(pipeline, options)
    everything = table.read(pipeline=pipeline.pipeline, run_id=run_id)
    letters = everything.filter(
        pa.compute.and_(
            pa.compute.equal(everything["stage"], "contract"),
            pa.compute.equal(everything["source"], pipeline.primary_source),
        )
    )
    others = everything.num_rows - letters.num_rows
    if letters.num_rows == 0:
        return ReplayResult(0, 0, 0, 0, None, others)
    rows = _rebuild(letters, options)
    ids = {
        (r["file"], r["row"]): r["dlq_id"]
        for r in letters.select(["file", "row", "dlq_id"]).to_pylist()
    }
    fingerprint = hashlib.sha256("|".join(sorted(ids.values())).encode()).hexdigest()[:20]

    def override(ctx: RunContext, name: str) -> SourceRead | None:
        if name != pipeline.primary_source:
            return None
        loaded = ctx.engine.register_arrow(ctx.engine.new_name("replay"), rows)
        return SourceRead(
            table=loaded,
            rows_in=rows.num_rows,
            parse_rejects=PARSE_REJECT_SCHEMA.empty_table(),
            position={},
            fingerprint=fingerprint,
        )

    # The rows belong to the run they came from: its date, not today's (logical_date() in the
    # steps, the partition, and the idempotency key a retried replay must find again).
    logical_date = options.logical_date or letters["logical_date"][0].as_py()
    result = run_pipeline(
        pipeline,
        with_changes(options, logical_date=logical_date, source_override=override, is_replay=True),
    )
    if not result.ok or result.dead_letters is None:  # no verdict on the rows: keep them all
        return ReplayResult(letters.num_rows, 0, letters.num_rows, 0, result, others)
    failing = {
        (r["file"], r["row"])
        for r in _rows(result.dead_letters, ["source", "file", "row"])
        if r["source"] == pipeline.primary_source
    }
    passed = [dlq_id for key, dlq_id in ids.items() if key not in failing]
    deleted = table.delete(passed, metadata={"sluice.replay_run_id": result.run_id})
    return ReplayResult(
        letters.num_rows, len(passed), letters.num_rows - len(passed), deleted, result, others
    )


def _rebuild(letters: pa.Table, options: RunOptions) -> pa.Table:
    """The original source rows (text columns) with their file and row number."""
    environ = os.environ if options.environ is None else options.environ
    key = masking.MaskKeys.from_env(environ).encryption_key
    records = []
    for letter in letters.to_pylist():
        raw: bytes = letter["raw_payload"]
        if letter["raw_encrypted"]:
            if key is None:
                raise ConfigError(
                    "these dead letters are encrypted: set SLUICE_ENCRYPTION_KEY to the key "
                    "the run used to replay them"
                )
            try:
                raw = masking.decrypt_value(raw, key)
            except Exception as exc:
                raise ConfigError(
                    "cannot decrypt the dead letters: SLUICE_ENCRYPTION_KEY is not the key "
                    "the run used"
                ) from exc
        try:
            record = json.loads(raw)
        except ValueError as exc:
            raise SluicewayError(
                f"dead letter {letter['dlq_id']} has no JSON payload to replay"
            ) from exc
        records.append(
            {
                **{k: None if v is None else str(v) for k, v in record.items()},
                ROW_FILE: letter["file"],
                ROW_NUMBER: letter["row"],
            }
        )
    return pa.Table.from_pylist(records)


def _rows(table: pa.Table | None, columns: list[str]) -> list[dict[str, object]]:
    return [] if table is None else table.select(columns).to_pylist()
