"""`on_fail` per check: rows that fail a `dead_letter` check leave the result for the
dead-letter table, judged in one pass, counted, and never dropped silently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from deltalake import DeltaTable

from sluiceway.core.loader import load_spec, pipeline_from_dict
from sluiceway.core.replay import replay
from sluiceway.errors import SpecError
from sluiceway.masking import decrypt_value

from .test_batch_pipeline import (
    CLEAR_PII,
    KEYS,
    base_spec,
    dead_letters,
    options,
    run,
    write_events,
    write_spec,
)

# e1..e6 pass the contract except e3 (amount), e4 and e6 (event_type), e5 (user_id); e2 twice.
ROUTED_EVENTS = (
    "e1,u1,view,10.5,alice@example.com,203.0.113.57\n"
    "e2,u2,buy,3.25,bob@example.org,198.51.100.23\n"
    "e7,u7,view,900,grace@example.com,192.0.2.1\n"  # amount above 100: routed by between
    "e8,u8,buy,950,heidi@example.com,192.0.2.2\n"  # amount above 100 and user 'u8' banned
    "e9,u9,view,5,ivan@example.com,192.0.2.3\n"
)


def routed_spec(**overrides: Any) -> dict[str, Any]:
    spec = base_spec()
    spec["pii"] = {"email": "hmac", "ip_address": "truncate_ip"}
    spec["checks"] = [
        {"between": {"column": "amount", "max_value": 100, "on_fail": "dead_letter"}},
        {
            "sql_predicate": {
                "predicate": "user_id <> 'u8'",
                "name": "banned_user",
                "on_fail": "dead_letter",
            }
        },
        {"row_count_between": {"min_value": 1}},
        *overrides.pop("extra_checks", []),
    ]
    spec.update(overrides)
    return spec


def test_rows_failing_dead_letter_checks_leave_the_table_for_the_dead_letters(tmp_path) -> None:
    write_events(tmp_path, ROUTED_EVENTS)

    result = run(tmp_path, routed_spec())

    assert result.status == "succeeded", result.error
    written = DeltaTable(str(tmp_path / "lake" / "orders")).to_pyarrow_table()
    assert sorted(written.column("event_id").to_pylist()) == ["e1", "e2", "e9"]
    acc = result.accounting
    assert (acc.rows_in, acc.rows_written, acc.rows_rejected) == (5, 3, 2)
    assert acc.rows_in == acc.rows_written + acc.rows_rejected + acc.rows_deduplicated
    letters = dead_letters(tmp_path).to_pylist()
    assert {row["stage"] for row in letters} == {"check"}
    by_event = {json.loads(row["payload"])["event_id"]: row for row in letters}
    assert set(by_event) == {"e7", "e8"}
    rules = {event: sorted(e["rule"] for e in row["errors"]) for event, row in by_event.items()}
    assert rules == {"e7": ["check:between"], "e8": ["check:between", "check:sql_predicate"]}
    assert any("banned_user" in e["reason"] for e in by_event["e8"]["errors"])


def test_a_routing_check_reports_what_it_routed_and_passes(tmp_path) -> None:
    write_events(tmp_path, ROUTED_EVENTS)

    result = run(tmp_path, routed_spec())

    between = result.checks[0]
    assert between.status == "passed"
    assert between.unexpected_count == 2
    assert between.rows_checked == 5
    assert "went to the dead-letter table" in between.message
    assert [c.name for c in result.checks] == [
        "between(amount)",
        "banned_user",
        "row_count_between",
    ]


def test_a_routing_check_over_its_mostly_threshold_fails_the_gate(tmp_path) -> None:
    write_events(tmp_path, ROUTED_EVENTS)
    spec = routed_spec()
    spec["checks"][0]["between"]["mostly"] = 0.9

    result = run(tmp_path, spec)

    assert result.status == "failed"
    assert "between(amount)" in (result.error or "")
    assert not (tmp_path / "lake" / "orders").exists()


def test_routed_rows_keep_pii_masked_in_the_payload_and_encrypted_in_the_raw(tmp_path) -> None:
    write_events(tmp_path, ROUTED_EVENTS)

    run(tmp_path, routed_spec())

    letters = dead_letters(tmp_path).to_pylist()
    blob = json.dumps([row["payload"] for row in letters]) + repr(
        [row["raw_payload"] for row in letters]
    )
    for clear in (*CLEAR_PII, "grace@example.com", "heidi@example.com", "192.0.2.1"):
        assert clear not in blob
    assert all(row["raw_encrypted"] for row in letters)
    raw = json.loads(
        decrypt_value(letters[0]["raw_payload"], bytes.fromhex(KEYS["SLUICE_ENCRYPTION_KEY"]))
    )
    assert raw["email"].endswith("@example.com")


def test_rerunning_routed_inputs_writes_neither_rows_nor_dead_letters_twice(tmp_path) -> None:
    write_events(tmp_path, ROUTED_EVENTS)
    spec = routed_spec()

    run(tmp_path, spec)
    second = run(tmp_path, spec)

    assert second.status == "succeeded"
    assert dead_letters(tmp_path).num_rows == 2
    written = DeltaTable(str(tmp_path / "lake" / "orders")).to_pyarrow_table()
    assert written.num_rows == 3


def test_on_fail_warn_records_a_failure_but_publishes(tmp_path) -> None:
    write_events(tmp_path, ROUTED_EVENTS)
    spec = routed_spec(
        extra_checks=[
            {"in_set": {"column": "event_type", "value_set": ["view"], "on_fail": "warn"}}
        ]
    )

    result = run(tmp_path, spec)

    assert result.status == "succeeded"
    in_set = result.checks[-1]
    assert (in_set.severity, in_set.status) == ("warn", "failed")


def test_on_fail_fail_blocks_publishing(tmp_path) -> None:
    write_events(tmp_path, ROUTED_EVENTS)
    spec = routed_spec(
        extra_checks=[
            {"in_set": {"column": "event_type", "value_set": ["view"], "on_fail": "fail"}}
        ]
    )

    result = run(tmp_path, spec)

    assert result.status == "failed"
    assert not (tmp_path / "lake" / "orders").exists()


def test_dead_letter_routing_on_an_aggregate_check_is_a_spec_error(tmp_path) -> None:
    spec = routed_spec(
        extra_checks=[
            {"mean_between": {"column": "amount", "max_value": 5, "on_fail": "dead_letter"}},
            {"unique": {"column": "event_id", "on_fail": "dead_letter"}},
        ]
    )
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))

    with pytest.raises(SpecError) as caught:
        load_spec(path)

    problems = caught.value.problems
    assert [p.path for p in problems] == ["checks[3].on_fail", "checks[4].on_fail"]
    assert "'mean_between' judges the table as a whole" in problems[0].message
    assert problems[0].line is not None


def test_on_fail_contradicting_severity_is_a_spec_error() -> None:
    spec = routed_spec(
        extra_checks=[
            {"not_null": {"column": "email", "on_fail": "warn", "severity": "error"}},
        ]
    )

    with pytest.raises(SpecError) as caught:
        pipeline_from_dict(spec)

    assert "contradicts severity" in str(caught.value)


def test_steps_that_drop_bookkeeping_columns_still_number_routed_rows(tmp_path: Path) -> None:
    write_events(tmp_path, ROUTED_EVENTS)
    spec = routed_spec()
    spec["steps"] = [
        {
            "sql": "SELECT event_id, user_id, amount, email, ip_address, logical_date() AS event_date "
            "FROM input"
        }
    ]

    result = run(tmp_path, spec)

    assert result.status == "succeeded", result.error
    letters = dead_letters(tmp_path).to_pylist()
    assert len({row["dlq_id"] for row in letters}) == 2
    assert all(row["row"] is not None for row in letters)


def fixed_with_routing(step: str | None = None) -> dict[str, Any]:
    fixed = base_spec()
    fixed["sources"]["events"]["contract"]["columns"]["event_type"]["values"].append("refund")
    fixed["checks"] = [
        {
            "sql_predicate": {
                "predicate": "event_id <> 'e6'",
                "name": "not_e6",
                "on_fail": "dead_letter",
            }
        }
    ]
    if step is not None:
        fixed["steps"] = [{"sql": step}]
    return fixed


def test_a_replayed_row_that_fails_a_routing_check_stays_in_the_dead_letters(tmp_path) -> None:
    write_events(tmp_path)
    first = run(tmp_path, base_spec())
    fixed = load_spec(write_spec(tmp_path, fixed_with_routing()))

    outcome = replay(fixed, first.run_id, options(tmp_path))

    assert (outcome.passed, outcome.deleted) == (1, 1)
    orders = DeltaTable(str(tmp_path / "lake" / "orders")).to_pyarrow_table()
    assert sorted(orders["event_id"].to_pylist()) == ["e1", "e2", "e4"]
    remaining = [json.loads(r["payload"])["event_id"] for r in dead_letters(tmp_path).to_pylist()]
    assert "e6" in remaining and "e4" not in remaining


def test_replay_refuses_routed_rows_it_cannot_match_to_their_dead_letters(tmp_path) -> None:
    write_events(tmp_path)
    first = run(tmp_path, base_spec())
    before = sorted(dead_letters(tmp_path)["dlq_id"].to_pylist())
    step = "SELECT event_id, user_id, event_type, amount, email, ip_address, logical_date() AS event_date FROM input"
    fixed = load_spec(write_spec(tmp_path, fixed_with_routing(step)))

    outcome = replay(fixed, first.run_id, options(tmp_path))

    assert outcome.deleted == 0
    assert outcome.run is not None and "cannot be matched" in (outcome.run.error or "")
    assert sorted(dead_letters(tmp_path)["dlq_id"].to_pylist()) == before


def test_a_routing_check_naming_a_column_the_other_table_lacks_stops_with_what_to_fix(
    tmp_path: Path,
) -> None:
    write_events(tmp_path, ROUTED_EVENTS)
    (tmp_path / "data" / "users").mkdir(parents=True)
    (tmp_path / "data" / "users" / "users.csv").write_text("uid,name\nu1,a\nu2,b\n")
    spec = routed_spec(
        extra_checks=[
            {
                "values_exist_in": {
                    "column": "user_id",
                    "to_table": "users",
                    "to_column": "user_idd",
                    "on_fail": "dead_letter",
                }
            }
        ]
    )
    spec["sources"]["users"] = {"type": "files", "path": "data/users/", "format": "csv"}

    result = run(tmp_path, spec)

    assert result.status == "failed"
    assert "checks[3] values_exist_in(user_id) (on_fail: dead_letter) cannot judge" in (
        result.error or ""
    ), result.error
    assert "column 'user_idd' not found in table 'users'" in (result.error or "")
    assert "Binder Error" not in (result.error or "")
    assert not (tmp_path / "lake" / "orders").exists()
