"""`sluice forget` on real lakes: a subject present in bronze, silver (email masked with
hmac), gold (aggregated per user) and in the dead-letter tables is erased everywhere, the
scan of every file proves it, and the value shows up nowhere — output and audit included."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from deltalake import DeltaTable

import sluiceway.sources.delta  # noqa: F401  (registers the source)
from sluiceway.cli import main
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.core.storage import delta_storage_options
from sluiceway.masking import MaskKeys
from sluiceway.ops.audit import AuditLog, subject_fingerprint
from sluiceway.ops.forget_scan import pipeline_forms

SUBJECT = "u90210417"
SUBJECT_EMAIL = "ada.lovelace@example.com"
KEYS = {
    "SLUICE_HMAC_KEY": "forget-test-hmac-key",
    "SLUICE_ENCRYPTION_KEY": "ab" * 32,
}
DAYS = (date(2025, 4, 1), date(2025, 4, 2))
HEADER = "event_id,user_id,email,amount,event_date\n"
DAY_ROWS = (
    [
        f"e1,{SUBJECT},{SUBJECT_EMAIL},10.5,2025-04-01",
        "e2,u1001,bob@example.com,3,2025-04-01",
        "e3,u1002,cy@example.com,4,2025-04-01",
    ],
    [
        f"e4,{SUBJECT},{SUBJECT_EMAIL},7,2025-04-02",
        "e5,u1002,cy@example.com,4.5,2025-04-02",
        f"e6,{SUBJECT},{SUBJECT_EMAIL},-5,2025-04-02",  # bronze contract: amount >= 0
        f"e7,{SUBJECT},{SUBJECT_EMAIL},5000,2025-04-02",  # silver contract: amount <= 1000
        "e8,u1001,bob@example.com,2,2025-04-02",
        "e9,u1001,bob@example.com,6000,2025-04-02",
    ],
)
OTHER_EVENTS = {"e2", "e3", "e5", "e8"}


def bronze_spec() -> dict[str, Any]:
    columns = {
        "event_id": {"type": "string", "nullable": False},
        "user_id": {"type": "string", "nullable": False},
        "email": {"type": "string"},
        "amount": {"type": "double", "min": 0},
        "event_date": {"type": "date"},
    }
    return {
        "version": 1,
        "pipeline": "events_bronze",
        "sources": {
            "events": {
                "type": "files",
                "path": "data/",
                "format": "csv",
                "incremental": True,
                "contract": {"columns": columns, "on_violation": "dead_letter"},
            }
        },
        "sinks": [
            {"type": "delta", "path": "lake/bronze", "partition_by": ["event_date"]},
        ],
        "dead_letter": {"path": "lake/dead_letter"},
        "compliance": {"subject_key": "user_id"},
    }


def silver_spec(bronze_path: str, silver_path: str, options: dict[str, str]) -> dict[str, Any]:
    source: dict[str, Any] = {"type": "delta", "path": bronze_path}
    source["contract"] = {
        "columns": {"amount": {"type": "double", "max": 1000}},
        "on_violation": "dead_letter",
    }
    return {
        "version": 1,
        "pipeline": "events_silver",
        "sources": {"bronze": source},
        "pii": {"email": "hmac"},
        "sinks": [{"type": "delta", "path": silver_path, "storage_options": options}],
        "dead_letter": {"path": "lake/dead_letter"},
    }


def gold_spec(silver_path: str, options: dict[str, str]) -> dict[str, Any]:
    sql = "SELECT user_id, count(*) AS events, sum(amount) AS amount FROM input GROUP BY user_id"
    return {
        "version": 1,
        "pipeline": "users_gold",
        "sources": {"silver": {"type": "delta", "path": silver_path, "storage_options": options}},
        "steps": [{"sql": {"query": sql, "rows": "filter"}}],
        "sinks": [{"type": "delta", "path": "lake/gold"}],
        "dead_letter": {"path": "lake/dead_letter"},
    }


@dataclass(frozen=True)
class Lake:
    """Three pipelines that ran: bronze (two days), silver and gold, one folder each."""

    root: Path
    specs: dict[str, Path]
    silver_uri: str
    silver_options: dict[str, str]

    @property
    def state(self) -> Path:
        return self.root / ".sluice"

    def table(self, layer: str) -> pa.Table:
        if layer == "silver":
            options = delta_storage_options(self.silver_uri, self.silver_options)
            return DeltaTable(self.silver_uri, storage_options=options).to_pyarrow_table()
        return DeltaTable(str(self.root / layer / "lake" / layer)).to_pyarrow_table()

    def dead_letters(self, layer: str) -> pa.Table:
        return DeltaTable(str(self.root / layer / "lake" / "dead_letter")).to_pyarrow_table()


def run(spec: Path, day: date, state: Path) -> None:
    options = RunOptions(logical_date=day, base_dir=spec.parent, state_dir=state, environ=KEYS)
    result = run_pipeline(load_spec(spec), options)
    assert result.ok, result.error


def build_lake(
    root: Path, silver_uri: str | None = None, options: dict[str, str] | None = None
) -> Lake:
    """Write the three specs and run them; silver goes to `silver_uri` when given (S3)."""
    options = options or {}
    silver_path = silver_uri or "lake/silver"
    specs = {
        "bronze": bronze_spec(),
        "silver": silver_spec("../bronze/lake/bronze", silver_path, options),
        "gold": gold_spec(silver_uri or "../silver/lake/silver", options),
    }
    paths = {}
    for layer, spec in specs.items():
        (root / layer).mkdir(parents=True)
        paths[layer] = root / layer / "pipeline.yaml"
        paths[layer].write_text(yaml.safe_dump(spec, sort_keys=False))
    state = root / ".sluice"
    for index, day in enumerate(DAYS):
        data = root / "bronze" / "data" / f"events-{index}.csv"
        data.parent.mkdir(exist_ok=True)
        data.write_text(HEADER + "\n".join(DAY_ROWS[index]) + "\n")
        run(paths["bronze"], day, state)
    run(paths["silver"], DAYS[1], state)
    run(paths["gold"], DAYS[1], state)
    uri = silver_uri or str((root / "silver" / "lake" / "silver").resolve())
    return Lake(root, paths, uri, options)


def files_holding(folder: Path, needle: str) -> list[str]:
    return [
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and needle.encode() in path.read_bytes()
    ]


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return build_lake(tmp_path / "lake")


@pytest.fixture
def sluice(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_the_lake_holds_the_subject_everywhere_before_forget(lake: Lake) -> None:
    for layer in ("bronze", "silver", "gold"):
        assert SUBJECT in lake.table(layer)["user_id"].to_pylist(), layer
    assert lake.dead_letters("bronze").num_rows == 1
    assert lake.dead_letters("silver").num_rows == 2
    assert files_holding(lake.root / "bronze" / "lake", SUBJECT)


def test_forget_erases_the_subject_from_every_table_and_keeps_everyone_else(
    lake: Lake, sluice: Callable[..., Any]
) -> None:
    (lake.root / "notes.yaml").write_text("owner: data-platform\n")

    result = sluice(
        "forget", "--subject", f"user_id={SUBJECT}", str(lake.root), "--state-dir", str(lake.state)
    )

    assert result.exit_code == 0, result.output
    for layer, others in (("bronze", OTHER_EVENTS | {"e9"}), ("silver", OTHER_EVENTS)):
        rows = lake.table(layer)
        assert SUBJECT not in rows["user_id"].to_pylist(), layer
        assert set(rows["event_id"].to_pylist()) == others, layer
    assert sorted(lake.table("gold")["user_id"].to_pylist()) == ["u1001", "u1002"]
    assert lake.dead_letters("bronze").num_rows == 0
    remaining = lake.dead_letters("silver")
    assert remaining.num_rows == 1
    assert '"e9"' in remaining["payload"][0].as_py()
    assert "notes.yaml is not a pipeline spec; skipped" in result.output
    assert "verified clean" in result.output
    assert result.output.count("clean (") == 6


def test_forget_leaves_no_byte_of_the_subject_in_any_file_of_the_lakes(
    lake: Lake, sluice: Callable[..., Any]
) -> None:
    result = sluice(
        "forget", "--subject", f"user_id={SUBJECT}", str(lake.root), "--state-dir", str(lake.state)
    )

    assert result.exit_code == 0, result.output
    for layer in ("bronze", "silver", "gold"):
        folder = lake.root / layer / "lake"
        assert files_holding(folder, SUBJECT) == [], layer
        assert files_holding(folder, SUBJECT_EMAIL) == [], layer
    assert SUBJECT not in result.output


def test_forget_records_the_fingerprint_and_never_the_value_in_the_audit_log(
    lake: Lake, sluice: Callable[..., Any]
) -> None:
    sluice(
        "forget", "--subject", f"user_id={SUBJECT}", str(lake.root), "--state-dir", str(lake.state)
    )

    entries = list(AuditLog(lake.state).entries(action="forget"))
    rows = {e.pipeline: e.rows_affected for e in entries}
    assert rows == {"events_bronze": 4, "events_silver": 3, "users_gold": 1}
    fingerprint = subject_fingerprint("user_id", SUBJECT, KEYS["SLUICE_HMAC_KEY"].encode())
    assert fingerprint.startswith("hmac:")  # a keyed fingerprint: guesses cannot be tested
    assert [e.details["subject"] for e in entries] == [fingerprint] * 3
    assert all(e.details["verified"] for e in entries)
    assert SUBJECT.encode() not in (lake.state / "audit.jsonl").read_bytes()
    assert AuditLog(lake.state).verify_chain().is_intact


def test_a_dry_run_counts_the_subjects_rows_and_changes_nothing(
    lake: Lake, sluice: Callable[..., Any]
) -> None:
    before = {layer: lake.table(layer).num_rows for layer in ("bronze", "silver", "gold")}

    result = sluice(
        "forget",
        "--subject",
        SUBJECT,
        str(lake.specs["bronze"]),
        "--dry-run",
        "--state-dir",
        str(lake.state),
    )

    assert result.exit_code == 0, result.output
    assert "4 row(s) would be deleted" in result.output
    assert {layer: lake.table(layer).num_rows for layer in before} == before
    assert not (lake.state / "audit.jsonl").exists()


def test_forget_refuses_a_column_that_is_in_no_table(
    lake: Lake, sluice: Callable[..., Any]
) -> None:
    result = sluice(
        "forget", "--subject", "customer_id=42", str(lake.root), "--state-dir", str(lake.state)
    )

    assert result.exit_code == 2
    assert "column 'customer_id' is in no table" in result.output
    assert SUBJECT in lake.table("bronze")["user_id"].to_pylist()


def test_forget_without_the_hmac_key_stops_before_deleting(
    lake: Lake, sluice: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLUICE_HMAC_KEY")

    result = sluice(
        "forget",
        "--subject",
        "email=" + SUBJECT_EMAIL,
        str(lake.root),
        "--state-dir",
        str(lake.state),
    )

    assert result.exit_code == 2
    assert "SLUICE_HMAC_KEY" in result.output
    assert SUBJECT_EMAIL not in result.output
    assert SUBJECT in lake.table("bronze")["user_id"].to_pylist()


def test_forget_by_a_masked_column_matches_its_hmac_form(
    lake: Lake, sluice: Callable[..., Any]
) -> None:
    result = sluice(
        "forget",
        "--subject",
        f"email={SUBJECT_EMAIL}",
        str(lake.root),
        "--state-dir",
        str(lake.state),
    )

    assert result.exit_code == 0, result.output
    assert "masked with hmac" in result.output
    assert SUBJECT not in lake.table("silver")["user_id"].to_pylist()
    assert SUBJECT not in lake.table("bronze")["user_id"].to_pylist()
    assert SUBJECT_EMAIL not in result.output


def test_a_copy_of_the_subjects_data_left_in_a_table_folder_fails_the_verification(
    lake: Lake, sluice: Callable[..., Any]
) -> None:
    table = lake.root / "bronze" / "lake" / "bronze"
    data_file = next(p for p in table.rglob("*.parquet") if "_delta_log" not in p.parts)
    stray = table / "_backup" / "copy.parquet"
    stray.parent.mkdir()
    stray.write_bytes(data_file.read_bytes())

    result = sluice(
        "forget", "--subject", f"user_id={SUBJECT}", str(lake.root), "--state-dir", str(lake.state)
    )

    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output
    assert "FAILED: _backup/copy.parquet still holds the subject" in result.output
    assert SUBJECT not in result.output
    (bronze,) = AuditLog(lake.state).entries(pipeline="events_bronze")
    assert bronze.details["verified"] is False


def test_forget_deletes_the_subject_from_a_postgres_sink_too(
    tmp_path: Path, schema: str, pg: Any, sluice: Callable[..., Any]
) -> None:
    spec = bronze_spec()
    spec["sinks"].append({"type": "postgres", "table": f"{schema}.events", "keys": ["event_id"]})
    folder = tmp_path / "pg"
    (folder / "data").mkdir(parents=True)
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (folder / "data" / "events.csv").write_text(HEADER + "\n".join(DAY_ROWS[1]) + "\n")
    run(folder / "pipeline.yaml", DAYS[1], tmp_path / ".sluice")

    result = sluice(
        "forget", "--subject", f"user_id={SUBJECT}", str(folder), "--state-dir", str(tmp_path)
    )

    assert result.exit_code == 0, result.output
    rows = pg.execute(f"SELECT user_id FROM {schema}.events ORDER BY event_id").fetchall()
    assert [r[0] for r in rows] == ["u1002", "u1001", "u1001"]
    (entry,) = AuditLog(tmp_path).entries(action="forget")
    postgres = [v for k, v in entry.details["per_table"].items() if k.endswith(f"{schema}.events")]
    assert postgres == [{"rows_deleted": 2, "files_rewritten": 0, "verified": True}]


def test_a_sink_forget_cannot_reach_is_reported_not_handled_and_fails(
    tmp_path: Path, sluice: Callable[..., Any]
) -> None:
    spec = bronze_spec()
    spec["sinks"].append({"type": "parquet", "path": "out/", "mode": "append"})
    folder = tmp_path / "pq"
    (folder / "data").mkdir(parents=True)
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (folder / "data" / "events.csv").write_text(HEADER + "\n".join(DAY_ROWS[0]) + "\n")
    run(folder / "pipeline.yaml", DAYS[0], tmp_path / ".sluice")

    result = sluice(
        "forget", "--subject", f"user_id={SUBJECT}", str(folder), "--state-dir", str(tmp_path)
    )

    assert result.exit_code == 1
    assert "NOT HANDLED: events_bronze sinks[1] (parquet)" in result.output
    assert (
        SUBJECT
        not in DeltaTable(str(folder / "lake" / "bronze")).to_pyarrow_table()["user_id"].to_pylist()
    )


def test_the_masked_forms_are_the_values_the_runner_stored(lake: Lake) -> None:
    silver = load_spec(lake.specs["silver"])
    keys = MaskKeys.from_env(KEYS)

    forms, note = pipeline_forms(silver, "email", SUBJECT_EMAIL, keys)

    stored = lake.table("silver").to_pylist()
    subject_emails = {row["email"] for row in stored if row["user_id"] == SUBJECT}
    assert len(subject_emails) == 1
    assert forms == [SUBJECT_EMAIL, *subject_emails]
    assert note is not None and "hmac" in note


def run_once(root: Path, spec_data: dict[str, Any], rows: str) -> tuple[Path, Path, Any]:
    """Write the spec and one day's events under `root`, run it: (spec, state, result)."""
    (root / "data").mkdir(parents=True)
    spec = root / "pipeline.yaml"
    spec.write_text(yaml.safe_dump(spec_data, sort_keys=False))
    (root / "data" / "events.csv").write_text(HEADER + rows)
    state = root / ".sluice"
    options = RunOptions(logical_date=DAYS[0], base_dir=root, state_dir=state, environ=KEYS)
    return spec, state, run_pipeline(load_spec(spec), options)


def gated_spec() -> dict[str, Any]:
    """bronze with PII (so raw payloads are encrypted) and a pass rate its input misses."""
    spec = bronze_spec()
    spec["pipeline"] = "events_gated"
    spec["sources"]["events"].pop("incremental")
    spec["pii"] = {"email": "hmac"}
    spec["quality"] = {"pass_rate": 0.9}
    return spec


def test_forget_erases_unparseable_lines_and_dead_letters_of_a_run_that_published_nothing(
    tmp_path: Path, sluice: Callable[..., Any]
) -> None:
    """A malformed CSV line's raw payload is encrypted text, not JSON: it is decrypted and
    searched for the subject as a whole token. The run failed its gate, so no sink table
    exists: the dead letters are still erased."""
    spec, state, result = run_once(
        tmp_path / "gated",
        gated_spec(),
        f"e1,{SUBJECT},{SUBJECT_EMAIL},10,2025-04-01,extra\n"  # unparseable: one field too many
        + f"e2,{SUBJECT}0,x@example.com,-1,2025-04-01\n"  # someone else: u902104170
        + "e3,u1001,bob@example.com,3,2025-04-01\n",
    )
    assert result.status == "failed"
    root = spec.parent
    letters = root / "lake" / "dead_letter"
    assert DeltaTable(str(letters)).to_pyarrow_table().num_rows == 2
    assert not (root / "lake" / "bronze").exists()

    dry = sluice(
        "forget",
        "--subject",
        f"user_id={SUBJECT}",
        str(spec),
        "--dry-run",
        "--state-dir",
        str(state),
    )
    assert dry.exit_code == 0, dry.output
    assert "1 row(s) would be deleted" in dry.output

    result = sluice(
        "forget", "--subject", f"user_id={SUBJECT}", str(spec), "--state-dir", str(state)
    )

    assert result.exit_code == 0, result.output
    assert "verified clean" in result.output and "FAILED" not in result.output
    kept = DeltaTable(str(letters)).to_pyarrow_table()
    assert kept.num_rows == 1
    assert f'"{SUBJECT}0"' in kept.column("payload")[0].as_py()  # u902104170 is someone else


def test_a_dry_run_shows_what_would_stop_the_real_one(
    tmp_path: Path, sluice: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, state, _ = run_once(
        tmp_path / "gated", gated_spec(), f"e1,{SUBJECT},{SUBJECT_EMAIL},-1,2025-04-01\n"
    )
    monkeypatch.setenv("SLUICE_ENCRYPTION_KEY", "cd" * 32)  # not the key the run used

    result = sluice(
        "forget",
        "--subject",
        f"user_id={SUBJECT}",
        str(spec),
        "--dry-run",
        "--state-dir",
        str(state),
    )

    assert result.exit_code == 1
    assert "cannot be decrypted" in result.output and "a real run would fail" in result.output


def test_forget_erases_the_subject_from_the_staged_result_a_failed_gate_kept(
    tmp_path: Path, sluice: Callable[..., Any]
) -> None:
    spec_data = bronze_spec()
    spec_data["sources"]["events"].pop("incremental")
    spec_data["checks"] = [{"row_count_between": {"max_value": 1}}]
    spec, state, result = run_once(tmp_path / "gated", spec_data, "\n".join(DAY_ROWS[0]) + "\n")
    assert result.status == "failed" and result.staged_path
    staged = Path(result.staged_path) / "staged.parquet"
    assert SUBJECT in pq.read_table(staged)["user_id"].to_pylist()

    done = sluice("forget", "--subject", f"user_id={SUBJECT}", str(spec), "--state-dir", str(state))

    assert done.exit_code == 0, done.output
    assert "1 row(s) deleted from the staged results" in done.output
    assert sorted(pq.read_table(staged)["user_id"].to_pylist()) == ["u1001", "u1002"]
