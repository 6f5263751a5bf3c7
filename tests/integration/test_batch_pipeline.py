"""Full batch runs on real Delta tables on local disk: the promises of DESIGN.md, end to end."""

from __future__ import annotations

import copy
import dataclasses
import hmac
import io
import json
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from deltalake import DeltaTable

from sluiceway.core.loader import load_spec
from sluiceway.core.replay import replay
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline
from sluiceway.demo.clickstream import generate_clickstream
from sluiceway.errors import ConfigError
from sluiceway.observability.logs import json_logger

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "clickstream_batch" / "pipeline.yaml"
DAY = date(2025, 1, 15)
ONE_DAY = timedelta(days=1)
NEW_EVENTS = "n1,u1,view,1,a@example.com,203.0.113.1\nn2,u2,buy,2,b@example.com,203.0.113.2\n"
HMAC_KEY = "integration-hmac-key"
KEYS = {
    "SLUICE_HMAC_KEY": HMAC_KEY,
    "SLUICE_MASK_SALT": "integration-salt",
    "SLUICE_ENCRYPTION_KEY": "5a" * 32,
}

HEADER = "event_id,user_id,event_type,amount,email,ip_address\n"
EVENTS = (
    "e1,u1,view,10.5,alice@example.com,203.0.113.57\n"
    "e2,u2,buy,3.25,bob@example.org,198.51.100.23\n"
    "e3,u3,view,-1,carol@example.net,192.0.2.99\n"  # amount below min
    "e4,u4,refund,7,dave@example.com,203.0.113.80\n"  # event_type not allowed
    "e2,u2,buy,3.25,bob@example.org,198.51.100.23\n"  # duplicate of e2
    "e5,,view,1,erin@example.com,192.0.2.10\n"  # user_id null
    "e6,u6,refund,2,frank@example.com,198.51.100.77\n"  # event_type not allowed
)
CLEAR_PII = (
    "alice@example.com",
    "bob@example.org",
    "carol@example.net",
    "dave@example.com",
    "erin@example.com",
    "frank@example.com",
    "203.0.113.57",
    "198.51.100.23",
    "192.0.2.99",
    "203.0.113.80",
    "192.0.2.10",
    "198.51.100.77",
)


def base_spec() -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "orders",
        "sources": {
            "events": {
                "type": "files",
                "path": "data/events/",
                "format": "csv",
                "contract": {
                    "columns": {
                        "event_id": {"type": "string", "nullable": False},
                        "user_id": {"type": "string", "nullable": False},
                        "event_type": {"type": "string", "values": ["view", "buy"]},
                        "amount": {"type": "double", "min": 0},
                        "email": {"type": "string", "format": "email"},
                        "ip_address": {"type": "string", "format": "ip"},
                    }
                },
            }
        },
        "steps": [
            {"dedup": {"keys": ["event_id"]}},
            {"sql": "SELECT *, logical_date() AS event_date FROM input"},
        ],
        "sinks": [
            {
                "type": "delta",
                "path": "lake/orders",
                "partition_by": ["event_date"],
                "mode": "overwrite_partition",
            }
        ],
        "dead_letter": {"path": "lake/dead_letter"},
    }


def write_spec(folder: Path, spec: dict[str, Any], name: str = "pipeline.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def write_events(folder: Path, text: str = EVENTS, name: str = "events-a.csv") -> Path:
    path = folder / "data" / "events" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + text)
    return path


def options(folder: Path, **extra: Any) -> RunOptions:
    return RunOptions(
        logical_date=DAY, base_dir=folder, state_dir=folder / ".sluice", environ=dict(KEYS), **extra
    )


def on_day(folder: Path, days_after: int) -> RunOptions:
    return dataclasses.replace(options(folder), logical_date=DAY + days_after * ONE_DAY)


def run(folder: Path, spec: dict[str, Any] | Path, **extra: Any) -> RunResult:
    path = spec if isinstance(spec, Path) else write_spec(folder, spec)
    return run_pipeline(load_spec(path), options(folder, **extra))


def table(path: Path) -> pa.Table:
    return DeltaTable(str(path)).to_pyarrow_table()


def sorted_rows(data: pa.Table, key: str = "event_id") -> list[dict[str, Any]]:
    return sorted(data.to_pylist(), key=lambda row: str(row[key]))


def dead_letters(folder: Path) -> pa.Table:
    return table(folder / "lake" / "dead_letter")


def hmac_hex(value: str) -> str:
    return hmac.new(HMAC_KEY.encode(), value.encode(), "sha256").hexdigest()


# --- the example pipeline ---------------------------------------------------------------------


@pytest.fixture()
def example(tmp_path: Path) -> tuple[Path, Any]:
    shutil.copyfile(EXAMPLE, tmp_path / "pipeline.yaml")
    sample = generate_clickstream(tmp_path / "data", rows=2000, files=2)
    return tmp_path / "pipeline.yaml", sample


def test_the_example_pipeline_accounts_for_every_generated_defect(example, tmp_path) -> None:
    spec, sample = example
    d = sample.defects

    result = run(tmp_path, spec)

    assert result.ok, result.error
    acc = result.accounting
    assert acc.is_balanced
    assert acc.rows_in == sample.rows
    contract_visible = (
        d.null_user_id
        + d.unknown_event_type
        + d.negative_price
        + d.malformed_timestamp
        + d.bad_email
    )
    assert acc.rows_rejected == contract_visible + d.malformed_lines + d.invalid_utf8_lines
    assert acc.rows_deduplicated == d.duplicates
    assert acc.rows_written == sample.rows - acc.rows_rejected - d.duplicates
    assert table(tmp_path / "lake" / "silver" / "clickstream").num_rows == acc.rows_written


def test_every_rejected_row_of_the_example_is_a_dead_letter_with_its_reason(
    example, tmp_path
) -> None:
    spec, sample = example
    d = sample.defects

    result = run(tmp_path, spec)

    letters = dead_letters(tmp_path).to_pylist()
    events = [r for r in letters if r["source"] == "events"]
    assert len(events) == result.accounting.rows_rejected
    assert len(letters) - len(events) == sample.products_defects
    for letter in letters:
        assert letter["file"] and letter["run_id"] == result.run_id
        assert (letter["row"] if letter["stage"] == "contract" else letter["line"]) is not None
        assert letter["errors"] and all(e["rule"] for e in letter["errors"])
        if letter["stage"] == "contract":
            assert all(e["column"] for e in letter["errors"])
    rules = {(e["column"], e["rule"]) for r in events for e in r["errors"]}
    assert {
        ("user_id", "not_null"),
        ("event_type", "values"),
        ("product_price", "min"),
        ("timestamp", "type"),
        ("email", "format"),
        (None, "parse"),
    } <= rules
    parse = [r for r in events if r["stage"] == "parse"]
    assert len(parse) == d.malformed_lines + d.invalid_utf8_lines


# --- idempotency ------------------------------------------------------------------------------


def test_rerunning_an_overwrite_partition_run_yields_the_same_table_and_dead_letters(
    tmp_path,
) -> None:
    write_events(tmp_path)
    spec = write_spec(tmp_path, base_spec())

    results, contents = [], []
    for _ in range(3):
        results.append(run(tmp_path, spec))
        contents.append(sorted_rows(table(tmp_path / "lake" / "orders")))

    assert all(r.ok for r in results), [r.error for r in results]
    assert [r.accounting.rows_written for r in results] == [2, 2, 2]
    assert contents[0] == contents[1] == contents[2]
    assert [row["event_id"] for row in contents[0]] == ["e1", "e2"]
    letters = dead_letters(tmp_path)
    assert letters.num_rows == 4
    assert len(set(letters["dlq_id"].to_pylist())) == 4


def test_an_append_sink_commits_the_same_inputs_once(tmp_path) -> None:
    write_events(tmp_path)
    spec = base_spec()
    spec["sinks"] = [{"type": "delta", "path": "lake/orders", "mode": "append"}]
    path = write_spec(tmp_path, spec)

    first, second, third = (run(tmp_path, path) for _ in range(3))

    assert first.ok and second.ok and third.ok
    assert [s.skipped for r in (first, second, third) for s in r.sinks] == [False, True, True]
    assert [s.rows_written for r in (first, second, third) for s in r.sinks] == [2, 0, 0]
    assert sorted(table(tmp_path / "lake" / "orders")["event_id"].to_pylist()) == ["e1", "e2"]
    assert dead_letters(tmp_path).num_rows == 4


# --- write-audit-publish ----------------------------------------------------------------------


def failing_gate(spec: dict[str, Any]) -> dict[str, Any]:
    gated = copy.deepcopy(spec)
    gated["checks"] = [{"row_count_between": {"min_value": 10**9}}]
    return gated


def test_a_failed_error_check_publishes_nothing_and_keeps_the_staged_result(tmp_path) -> None:
    write_events(tmp_path)

    result = run(tmp_path, failing_gate(base_spec()))

    assert result.status == "failed"
    assert "row_count_between" in (result.error or "")
    assert not DeltaTable.is_deltatable(str(tmp_path / "lake" / "orders"))
    staged = tmp_path / ".sluice" / "staging" / result.run_id
    assert result.staged_path == str(staged)
    assert sorted(pq.read_table(staged / "staged.parquet")["event_id"].to_pylist()) == ["e1", "e2"]
    [check] = json.loads((staged / "checks.json").read_text())
    assert (check["check"], check["status"], check["observed_value"]) == (
        "row_count_between",
        "failed",
        2,
    )


def test_a_failed_error_check_leaves_the_previous_version_unchanged(tmp_path) -> None:
    write_events(tmp_path)
    assert run(tmp_path, base_spec()).ok
    before = DeltaTable(str(tmp_path / "lake" / "orders"))
    version, rows = before.version(), sorted_rows(before.to_pyarrow_table())
    write_events(tmp_path, "e7,u7,view,1,gina@example.com,192.0.2.1\n", name="events-b.csv")

    result = run(tmp_path, failing_gate(base_spec()))

    assert result.status == "failed"
    after = DeltaTable(str(tmp_path / "lake" / "orders"))
    assert after.version() == version
    assert sorted_rows(after.to_pyarrow_table()) == rows


def test_a_failed_warn_check_still_publishes(tmp_path) -> None:
    write_events(tmp_path)
    spec = base_spec()
    spec["checks"] = [{"row_count_between": {"min_value": 10**9, "severity": "warn"}}]

    result = run(tmp_path, spec)

    assert result.ok, result.error
    assert [(c.name, c.status) for c in result.checks] == [("row_count_between", "failed")]
    assert table(tmp_path / "lake" / "orders").num_rows == 2
    assert result.staged_path is None


# --- accounting enforcement -------------------------------------------------------------------


def with_sql_filter(rows: str | None) -> dict[str, Any]:
    spec = base_spec()
    step: dict[str, Any] = {"query": "SELECT * FROM input WHERE event_type = 'buy'"}
    if rows:
        step["rows"] = rows
    spec["steps"].append({"sql": step})
    return spec


def test_a_sql_step_that_drops_rows_without_saying_so_fails_the_run(tmp_path) -> None:
    write_events(tmp_path)

    result = run(tmp_path, with_sql_filter(None))

    assert result.status == "failed"
    assert "changed the row count from 2 to 1" in (result.error or "")
    assert "rows: filter" in (result.error or "")
    assert "steps[2].sql" in (result.error or "")
    assert not DeltaTable.is_deltatable(str(tmp_path / "lake" / "orders"))


def test_a_sql_step_declared_as_a_filter_counts_the_rows_it_drops(tmp_path) -> None:
    write_events(tmp_path)

    result = run(tmp_path, with_sql_filter("filter"))

    assert result.ok, result.error
    acc = result.accounting
    assert (
        acc.rows_in,
        acc.rows_written,
        acc.rows_rejected,
        acc.rows_deduplicated,
        acc.rows_filtered,
    ) == (7, 1, 4, 1, 1)
    assert table(tmp_path / "lake" / "orders")["event_id"].to_pylist() == ["e2"]


# --- incremental files ------------------------------------------------------------------------


def test_an_incremental_source_reads_each_file_once_and_commits_its_position(tmp_path) -> None:
    spec = base_spec()
    spec["sources"]["events"]["incremental"] = True
    spec["sinks"] = [{"type": "delta", "path": "lake/orders", "mode": "append"}]
    path = write_spec(tmp_path, spec)
    first_file = write_events(tmp_path, "e1,u1,view,1,a@example.com,192.0.2.1\n", name="a.csv")

    first = run(tmp_path, path)
    second_file = write_events(
        tmp_path,
        "e2,u2,buy,2,b@example.com,192.0.2.2\ne3,u3,buy,3,c@example.com,192.0.2.3\n",
        name="b.csv",
    )
    second = run(tmp_path, path)
    third = run(tmp_path, path)

    assert [r.accounting.rows_in for r in (first, second, third)] == [1, 2, 0]
    assert [r.accounting.rows_written for r in (first, second, third)] == [1, 2, 0]
    assert third.ok and third.sinks == []
    orders = DeltaTable(str(tmp_path / "lake" / "orders"))
    assert sorted(orders.to_pyarrow_table()["event_id"].to_pylist()) == ["e1", "e2", "e3"]
    commits = [c for c in orders.history() if "sluice.positions" in c]
    positions = [
        json.loads(c["sluice.positions"]) for c in sorted(commits, key=lambda c: c["version"])
    ]
    assert [p["events"]["files"] for p in positions] == [
        [str(first_file)],
        [str(first_file), str(second_file)],
    ]
    assert [sorted(p["events"]["stamps"]) for p in positions] == [
        [str(first_file)],
        [str(first_file), str(second_file)],
    ]


def test_an_incremental_source_without_a_contract_and_nothing_new_succeeds_writing_nothing(
    tmp_path,
) -> None:
    """No new file and no contract: no column is known, so no step could even be bound; the
    run succeeds, says why nothing was written and leaves the position as it was."""
    spec = base_spec()
    spec["sources"]["events"]["incremental"] = True
    del spec["sources"]["events"]["contract"]
    spec["pii"] = {}
    spec["steps"] = [{"sql": "SELECT event_id, user_id FROM input"}]
    spec["checks"] = []
    spec["sinks"] = [{"type": "delta", "path": "lake/orders", "mode": "append"}]
    path = write_spec(tmp_path, spec)
    write_events(tmp_path, "e1,u1,view,1,a@example.com,192.0.2.1\n", name="a.csv")

    first = run(tmp_path, path)
    idle = run(tmp_path, path)
    write_events(tmp_path, "e2,u2,buy,2,b@example.com,192.0.2.2\n", name="b.csv")
    third = run(tmp_path, path)

    assert first.ok and third.ok, (first.error, third.error)
    assert idle.ok, idle.error
    assert (idle.accounting.rows_in, idle.accounting.rows_written, idle.sinks) == (0, 0, [])
    assert "read nothing new" in (idle.note or "")
    events = DeltaTable(str(tmp_path / "lake" / "orders")).to_pyarrow_table()
    assert sorted(events["event_id"].to_pylist()) == ["e1", "e2"]


def test_a_file_changed_after_it_was_loaded_incrementally_is_said_until_a_run_commits(
    tmp_path,
) -> None:
    """The stamps move with the positions: the warning stops once a run has committed
    (here, one that read a new file)."""
    spec = base_spec()
    spec["sources"]["events"]["incremental"] = True
    spec["sinks"] = [{"type": "delta", "path": "lake/orders", "mode": "append"}]
    path = write_spec(tmp_path, spec)
    loaded = write_events(tmp_path, "e1,u1,view,1,a@example.com,192.0.2.1\n", name="a.csv")
    run(tmp_path, path)
    with loaded.open("a") as handle:  # a row appended to a file already loaded
        handle.write("e9,u9,view,9,z@example.com,192.0.2.9\n")
    write_events(tmp_path, "e2,u2,buy,2,b@example.com,192.0.2.2\n", name="b.csv")

    said: list[Any] = []
    second = run(tmp_path, path, subscribers=[said.append])
    again: list[Any] = []
    third = run(tmp_path, path, subscribers=[again.append])

    assert second.accounting.rows_in == 1  # b.csv only: a.csv is read once
    [warning] = [e for e in said if e.name == "files_changed_since_loaded"]
    assert warning.fields["files"] == 1 and "a.csv" in warning.fields["hint"]
    assert third.ok and not [e for e in again if e.name == "files_changed_since_loaded"]


# --- PII --------------------------------------------------------------------------------------


def pii_spec() -> dict[str, Any]:
    spec = base_spec()
    spec["pii"] = {"email": "hmac", "ip_address": "truncate_ip"}
    return spec


def test_pii_never_appears_in_clear_in_any_output(tmp_path) -> None:
    write_events(tmp_path, EVENTS + "e8,u8,view,1,grace@localhost,192.0.2.200\n")
    logs = io.StringIO()
    published = run(tmp_path, pii_spec(), subscribers=[json_logger(logs)])
    gated = run(tmp_path, failing_gate(pii_spec()), subscribers=[json_logger(logs)])
    assert published.ok, published.error
    assert gated.status == "failed"

    orders = table(tmp_path / "lake" / "orders")
    letters = dead_letters(tmp_path)
    staged = pq.read_table(Path(gated.staged_path or "") / "staged.parquet")
    text_outputs = {
        "delta table": json.dumps(orders.to_pylist(), default=str),
        "dead-letter table": json.dumps(
            letters.drop_columns(["raw_payload"]).to_pylist(), default=str
        ),
        "staged parquet": json.dumps(staged.to_pylist(), default=str),
        "json logs": logs.getvalue(),
        "checks.json": (Path(gated.staged_path or "") / "checks.json").read_text(),
    }
    binary_outputs = {
        "raw payloads": b"".join(letters["raw_payload"].to_pylist()),
        "run store": b"".join(p.read_bytes() for p in (tmp_path / ".sluice").glob("runs.db*")),
        "Delta logs": b"".join(p.read_bytes() for p in (tmp_path / "lake").rglob("*.json")),
    }
    for value in (*CLEAR_PII, "grace@localhost", "192.0.2.200"):
        for where, text in text_outputs.items():
            assert value not in text, f"{value} in clear in the {where}"
        for where, data in binary_outputs.items():
            assert value.encode() not in data, f"{value} in clear in the {where}"
    assert all(letters["raw_encrypted"].to_pylist())
    assert letters.num_rows == 5
    assert '"event": "run_succeeded"' in logs.getvalue()
    assert '"event": "gate_failed"' in logs.getvalue()


def test_pii_columns_are_tokenized_with_hmac_and_ips_truncated(tmp_path) -> None:
    write_events(tmp_path)

    result = run(tmp_path, pii_spec())

    assert result.ok, result.error
    rows = {r["event_id"]: r for r in table(tmp_path / "lake" / "orders").to_pylist()}
    assert rows["e1"]["email"] == hmac_hex("alice@example.com")
    assert rows["e2"]["email"] == hmac_hex("bob@example.org")
    assert (rows["e1"]["ip_address"], rows["e2"]["ip_address"]) == ("203.0.113.0", "198.51.100.0")


def test_a_dead_letter_payload_holds_masked_pii_and_the_reason_hides_the_value(tmp_path) -> None:
    write_events(tmp_path, "e8,u8,view,1,grace@localhost,192.0.2.200\n")

    result = run(tmp_path, pii_spec())

    [letter] = dead_letters(tmp_path).to_pylist()
    assert result.ok and letter["errors"][0]["column"] == "email"
    assert letter["errors"][0]["rule"] == "format"
    assert json.loads(letter["payload"])["email"] == hmac_hex("grace@localhost")
    assert json.loads(letter["payload"])["ip_address"] == "192.0.2.0"
    assert letter["errors"][0]["reason"] == "value is not a valid email"


def test_a_pipeline_with_pii_but_no_encryption_key_raises_a_config_error(tmp_path) -> None:
    write_events(tmp_path)
    path = write_spec(tmp_path, pii_spec())
    environ = {k: v for k, v in KEYS.items() if k != "SLUICE_ENCRYPTION_KEY"}

    with pytest.raises(ConfigError, match="SLUICE_ENCRYPTION_KEY"):
        run_pipeline(
            load_spec(path),
            RunOptions(
                logical_date=DAY, base_dir=tmp_path, state_dir=tmp_path / ".sluice", environ=environ
            ),
        )

    assert not (tmp_path / "lake").exists()


# --- replay -----------------------------------------------------------------------------------


def test_replay_after_a_fix_moves_fixed_rows_from_the_dead_letters_into_the_table(tmp_path) -> None:
    write_events(tmp_path)
    spec = pii_spec()
    first = run(tmp_path, spec)
    fixed = copy.deepcopy(spec)
    fixed["sources"]["events"]["contract"]["columns"]["event_type"]["values"].append("refund")
    fixed_path = write_spec(tmp_path, fixed)

    outcome = replay(load_spec(fixed_path), first.run_id, options(tmp_path))

    assert (outcome.replayed, outcome.passed, outcome.still_failing, outcome.deleted) == (
        4,
        2,
        2,
        2,
    )
    orders = table(tmp_path / "lake" / "orders")
    assert sorted(orders["event_id"].to_pylist()) == ["e1", "e2", "e4", "e6"]
    e4 = next(r for r in orders.to_pylist() if r["event_id"] == "e4")
    assert (e4["email"], e4["ip_address"]) == (hmac_hex("dave@example.com"), "203.0.113.0")
    remaining = dead_letters(tmp_path)
    assert sorted(json.loads(p)["event_id"] for p in remaining["payload"].to_pylist()) == [
        "e3",
        "e5",
    ]


def sluice_cli(folder: Path, *args: str) -> Any:
    """`sluice ARGS --state-dir FOLDER/.sluice` in process, with the test's keys."""
    from click.testing import CliRunner

    from sluiceway.cli import main

    return CliRunner().invoke(main, [*args, "--state-dir", str(folder / ".sluice")], env=KEYS)


def test_replay_counts_the_dead_letters_it_cannot_rerun_and_the_cli_says_why(tmp_path) -> None:
    write_events(tmp_path, EVENTS + 'e9,u9,"view,1,x@example.com,192.0.2.9\n')  # a stray quote
    first = run(tmp_path, base_spec())
    fixed = base_spec()
    fixed["sources"]["events"]["contract"]["columns"]["event_type"]["values"].append("refund")
    fixed_path = write_spec(tmp_path, fixed)

    outcome = replay(load_spec(fixed_path), first.run_id, options(tmp_path))
    said = sluice_cli(tmp_path, "replay", str(fixed_path), "--run", first.run_id)

    assert first.accounting.rows_in == 8 and outcome.replayed == 4
    assert outcome.not_replayable == 1  # the unparseable line: no row to rebuild
    listed = sluice_cli(tmp_path, "runs")
    assert outcome.run is not None and outcome.run.replay
    assert listed.output.count("(replay)") == 2 and "succeeded" in listed.output
    assert "1 other dead letter(s) of this run cannot be replayed" in said.output
    assert f"--run {first.run_id}" in said.output


def test_replay_says_which_passing_rows_the_steps_dropped(tmp_path) -> None:
    write_events(tmp_path)
    spec = base_spec()
    spec["steps"].insert(
        0, {"sql": {"query": "SELECT * FROM input WHERE event_id <> 'e6'", "rows": "filter"}}
    )
    first = run(tmp_path, spec)
    spec["sources"]["events"]["contract"]["columns"]["event_type"]["values"].append("refund")
    fixed_path = write_spec(tmp_path, spec)

    said = sluice_cli(tmp_path, "replay", str(fixed_path), "--run", first.run_id)

    assert said.exit_code == 0, said.output
    assert "2 passed and left the dead-letter table" in said.output  # e4 and e6
    assert "1 were written and 1 were dropped by the steps (1 filtered" in said.output


def test_replaying_again_changes_nothing(tmp_path) -> None:
    write_events(tmp_path)
    first = run(tmp_path, base_spec())
    fixed = base_spec()
    fixed["sources"]["events"]["contract"]["columns"]["event_type"]["values"].append("refund")
    fixed_pipeline = load_spec(write_spec(tmp_path, fixed))
    replay(fixed_pipeline, first.run_id, options(tmp_path))
    rows_after_first = sorted_rows(table(tmp_path / "lake" / "orders"))
    letters_after_first = sorted(dead_letters(tmp_path)["dlq_id"].to_pylist())

    again = replay(fixed_pipeline, first.run_id, options(tmp_path))

    assert (again.passed, again.deleted, again.still_failing) == (0, 0, 2)
    assert sorted_rows(table(tmp_path / "lake" / "orders")) == rows_after_first
    assert [r["event_id"] for r in rows_after_first] == ["e1", "e2", "e4", "e6"]
    assert sorted(dead_letters(tmp_path)["dlq_id"].to_pylist()) == letters_after_first


def test_a_replay_before_the_fix_does_not_keep_the_replay_after_it_from_writing(
    tmp_path,
) -> None:
    # Try a replay, find nothing passes, fix the spec, replay again: the rows that pass now
    # must land before they leave the dead-letter table.
    write_events(tmp_path)
    spec = base_spec()
    first = run(tmp_path, spec)

    unfixed = replay(load_spec(tmp_path / "pipeline.yaml"), first.run_id, options(tmp_path))
    spec["sources"]["events"]["contract"]["columns"]["event_type"]["values"].append("refund")
    fixed = replay(load_spec(write_spec(tmp_path, spec)), first.run_id, options(tmp_path))

    assert (unfixed.passed, unfixed.deleted) == (0, 0)
    assert (fixed.passed, fixed.deleted, fixed.still_failing) == (2, 2, 2)
    in_table = sorted(table(tmp_path / "lake" / "orders")["event_id"].to_pylist())
    assert in_table == ["e1", "e2", "e4", "e6"]


def test_a_replay_that_died_before_deleting_its_dead_letters_is_finished_by_the_next(
    tmp_path,
) -> None:
    write_events(tmp_path)
    spec = base_spec()
    first = run(tmp_path, spec)
    spec["sources"]["events"]["contract"]["columns"]["event_type"]["values"].append("refund")
    fixed = load_spec(write_spec(tmp_path, spec))
    letters = DeltaTable(str(tmp_path / "lake" / "dead_letter"))
    before_delete = letters.version()
    replay(fixed, first.run_id, options(tmp_path))
    # As if the process died after the commit, before the delete: the letters are back.
    DeltaTable(str(tmp_path / "lake" / "dead_letter")).restore(before_delete)

    again = replay(fixed, first.run_id, options(tmp_path))

    assert (again.passed, again.deleted) == (2, 2)
    in_table = sorted(table(tmp_path / "lake" / "orders")["event_id"].to_pylist())
    assert in_table == ["e1", "e2", "e4", "e6"]  # e4 and e6 once
    payloads = dead_letters(tmp_path)["payload"].to_pylist()
    assert sorted(json.loads(p)["event_id"] for p in payloads) == ["e3", "e5"]


def test_a_replay_key_committed_by_an_earlier_version_neither_skips_nor_empties_the_letters(
    tmp_path, monkeypatch
) -> None:
    # Earlier versions committed a replay under its dead-letter ids alone, even when nothing
    # passed. Such a commit must not make the replay after a fix skip its rows and delete
    # every dead letter, the failing ones included.
    from deltalake import CommitProperties, Transaction, write_deltalake

    from sluiceway.core import runner as runner_module
    from sluiceway.sinks.delta import app_id

    write_events(tmp_path)
    spec = base_spec()
    spec["sinks"] = [{"type": "delta", "path": "lake/orders", "mode": "append"}]
    first = run(tmp_path, spec)
    seen: list[str] = []
    real_key = runner_module._replay_key
    monkeypatch.setattr(
        runner_module,
        "_replay_key",
        lambda key, failing: seen.append(key) or real_key(key, failing),
    )
    replay(load_spec(tmp_path / "pipeline.yaml"), first.run_id, options(tmp_path))
    orders = str(tmp_path / "lake" / "orders")
    empty = DeltaTable(orders).to_pyarrow_table().slice(0, 0)
    old_key = CommitProperties(app_transactions=[Transaction(app_id("orders", seen[0]), 1)])
    write_deltalake(orders, empty, mode="append", commit_properties=old_key)

    spec["sources"]["events"]["contract"]["columns"]["event_type"]["values"].append("refund")
    fixed = replay(load_spec(write_spec(tmp_path, spec)), first.run_id, options(tmp_path))

    assert (fixed.passed, fixed.deleted, fixed.still_failing) == (2, 2, 2)
    assert sorted(table(tmp_path / "lake" / "orders")["event_id"].to_pylist()) == [
        "e1",
        "e2",
        "e4",
        "e6",
    ]
    payloads = dead_letters(tmp_path)["payload"].to_pylist()
    assert sorted(json.loads(p)["event_id"] for p in payloads) == ["e3", "e5"]


def test_a_replay_that_overlaps_a_run_does_not_roll_its_positions_back(tmp_path) -> None:
    # The replay read the positions before the run of the next day committed; its own
    # commit must not undo that run's positions (events-b.csv would be read again).
    write_events(tmp_path)
    spec = base_spec()
    spec["sources"]["events"]["incremental"] = True
    spec["sinks"] = [{"type": "delta", "path": "lake/orders", "mode": "append"}]
    first = run(tmp_path, spec)
    spec["sources"]["events"]["contract"]["columns"]["event_type"]["values"].append("refund")
    fixed = load_spec(write_spec(tmp_path, spec))
    ran: list[RunResult] = []

    def next_day_commits_meanwhile(event: Any) -> None:
        stage = str(event.fields.get("stage"))
        if event.name == "progress" and stage.startswith("writing sink") and not ran:
            write_events(tmp_path, NEW_EVENTS, name="events-b.csv")
            ran.append(run_pipeline(fixed, on_day(tmp_path, 1)))

    replay(fixed, first.run_id, options(tmp_path, subscribers=[next_day_commits_meanwhile]))
    later = run_pipeline(fixed, on_day(tmp_path, 2))

    assert ran[0].ok and ran[0].accounting.rows_written == 2
    assert later.accounting.rows_in == 0
    ids = sorted(table(tmp_path / "lake" / "orders")["event_id"].to_pylist())
    assert ids == ["e1", "e2", "e4", "e6", "n1", "n2"]


def test_positions_of_a_source_that_is_not_incremental_do_not_pile_up(tmp_path) -> None:
    spec = base_spec()
    spec["sinks"] = [{"type": "delta", "path": "lake/orders", "mode": "append"}]
    pipeline = load_spec(write_spec(tmp_path, spec))
    for day in range(3):
        for old in (tmp_path / "data" / "events").glob("*.csv"):
            old.unlink()  # yesterday's file was moved away: each run reads one new file
        write_events(tmp_path, name=f"day{day}.csv")
        assert run_pipeline(pipeline, on_day(tmp_path, day)).ok

    newest = DeltaTable(str(tmp_path / "lake" / "orders")).history(1)[0]
    files = json.loads(newest["sluice.positions"])["events"]["files"]
    assert [Path(f).name for f in files] == ["day2.csv"]  # what this run read, not all


def test_a_replay_where_nothing_passes_commits_nothing(tmp_path) -> None:
    write_events(tmp_path)
    first = run(tmp_path, base_spec())
    version_before = DeltaTable(str(tmp_path / "lake" / "orders")).version()

    outcome = replay(load_spec(tmp_path / "pipeline.yaml"), first.run_id, options(tmp_path))

    assert (outcome.replayed, outcome.passed, outcome.deleted) == (4, 0, 0)
    assert DeltaTable(str(tmp_path / "lake" / "orders")).version() == version_before


def test_replay_leaves_the_callers_options_for_normal_runs(tmp_path) -> None:
    write_events(tmp_path)
    first = run(tmp_path, base_spec())
    shared = options(tmp_path)
    replay(load_spec(tmp_path / "pipeline.yaml"), first.run_id, shared)

    after = run_pipeline(load_spec(tmp_path / "pipeline.yaml"), shared)

    assert (shared.is_replay, shared.source_override) == (False, None)
    assert after.ok and after.accounting.rows_in == 7
    assert sorted(table(tmp_path / "lake" / "orders")["event_id"].to_pylist()) == ["e1", "e2"]


def test_rerunning_an_append_sink_after_a_spec_fix_loses_no_row(tmp_path) -> None:
    write_events(tmp_path)
    spec = base_spec()
    spec["sinks"] = [{"type": "delta", "path": "lake/orders", "mode": "append"}]
    assert run(tmp_path, spec).ok
    spec["sources"]["events"]["contract"]["columns"]["event_type"]["values"].append("refund")

    rerun = run(tmp_path, spec)

    in_table = set(table(tmp_path / "lake" / "orders")["event_id"].to_pylist())
    in_dead_letters = {
        json.loads(p)["event_id"] for p in dead_letters(tmp_path)["payload"].to_pylist()
    }
    assert rerun.ok
    assert [s.skipped for s in rerun.sinks] == [True]
    assert in_table | in_dead_letters == {"e1", "e2", "e3", "e4", "e5", "e6"}


# --- python steps -----------------------------------------------------------------------------


def python_step_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, body: str
) -> dict[str, Any]:
    (tmp_path / f"{module}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = base_spec()
    spec["steps"].append({"python": f"{module}:transform"})
    return spec


def test_a_python_step_can_add_a_column(tmp_path, monkeypatch) -> None:
    write_events(tmp_path)
    spec = python_step_spec(
        tmp_path,
        monkeypatch,
        "sw_test_adds_column",
        (
            "import pyarrow as pa\n"
            "import pyarrow.compute as pc\n\n"
            "def transform(batch):\n"
            "    doubled = pc.multiply(batch.column('amount'), 2)\n"
            "    return batch.append_column('amount_doubled', doubled)\n"
        ),
    )

    result = run(tmp_path, spec)

    assert result.ok, result.error
    rows = {
        r["event_id"]: r["amount_doubled"] for r in table(tmp_path / "lake" / "orders").to_pylist()
    }
    assert rows == {"e1": 21.0, "e2": 6.5}


def test_a_python_step_that_raises_fails_the_run_naming_function_batch_and_error(
    tmp_path, monkeypatch
) -> None:
    write_events(tmp_path)
    spec = python_step_spec(
        tmp_path,
        monkeypatch,
        "sw_test_raises",
        ("def transform(batch):\n    raise KeyError('no such thing')\n"),
    )

    result = run(tmp_path, spec)

    assert result.status == "failed"
    error = result.error or ""
    assert "sw_test_raises:transform" in error
    assert "KeyError" in error
    assert "batch=0" in error
    assert not DeltaTable.is_deltatable(str(tmp_path / "lake" / "orders"))


# --- several sources --------------------------------------------------------------------------


def test_sources_join_by_name_in_a_sql_step(tmp_path) -> None:
    write_events(tmp_path)
    users = tmp_path / "data" / "users" / "users.ndjson"
    users.parent.mkdir(parents=True)
    users.write_text(
        '{"user_id": "u1", "segment": "gold"}\n{"user_id": "u2", "segment": "silver"}\n'
    )
    spec = base_spec()
    spec["sources"]["users"] = {"type": "files", "path": "data/users/", "format": "ndjson"}
    spec["steps"].append(
        {"sql": "SELECT input.*, users.segment FROM input LEFT JOIN users USING (user_id)"}
    )

    result = run(tmp_path, spec)

    assert result.ok, result.error
    segments = {
        r["event_id"]: r["segment"] for r in table(tmp_path / "lake" / "orders").to_pylist()
    }
    assert segments == {"e1": "gold", "e2": "silver"}
    assert result.sources["users"] == {"rows_in": 2, "rows_rejected": 0}
    assert result.accounting.rows_in == 7


def test_results_are_recorded_in_the_run_store(tmp_path) -> None:
    from sluiceway.core.runstore import RunStore

    write_events(tmp_path)
    result = run(tmp_path, base_spec())

    record = RunStore(tmp_path / ".sluice" / "runs.db").get(result.run_id)

    assert record is not None
    assert (
        record.status,
        record.rows_in,
        record.rows_written,
        record.rows_rejected,
        record.rows_deduplicated,
    ) == ("succeeded", 7, 2, 4, 1)
    assert record.details["dead_letter_rows"] == 4


def test_a_step_failing_when_its_rows_are_computed_is_named_without_the_staging_sql(
    tmp_path,
) -> None:
    """A row-preserving step is a view until the staging query reads it: its error must
    name the step, not quote the masking SQL that happened to compute it."""
    spec = base_spec()
    spec["steps"] = [
        {"sql": "SELECT *, 1 AS one FROM input"},
        {"sql": "SELECT * REPLACE (CAST(user_id AS INTEGER) AS user_id) FROM input"},
    ]
    write_events(tmp_path)

    result = run(tmp_path, spec)

    assert not result.ok
    assert "steps[1].sql failed when its rows were computed" in (result.error or "")
    assert "Conversion Error" in (result.error or "")
    assert "sha256" not in (result.error or "") and "from_hex" not in (result.error or "")
    assert not (tmp_path / "lake" / "orders").exists()
