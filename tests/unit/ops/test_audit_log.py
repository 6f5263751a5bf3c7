"""The audit log: entries append in a hash chain, filter by pipeline and action, and any
edit, removal or reordering of a line breaks the chain at that line."""

from __future__ import annotations

import json
from pathlib import Path

from sluiceway.ops.audit import GENESIS, AuditLog, subject_fingerprint


def filled(tmp_path: Path) -> AuditLog:
    log = AuditLog(tmp_path)
    log.append("retention", pipeline="orders", tables=["/lake/orders"], rows_affected=5, who="ann")
    log.append("forget", pipeline="users", rows_affected=2, details={"subject": "sha256:x"})
    log.append("retention", pipeline="users", rows_affected=0, who="bob")
    return log


def lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines()


def test_entries_are_numbered_and_each_links_to_the_one_before(tmp_path: Path) -> None:
    entries = list(filled(tmp_path).entries())

    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev == GENESIS
    assert [e.prev for e in entries[1:]] == [e.hash for e in entries[:-1]]
    assert entries[0].who == "ann"


def test_entries_filter_by_pipeline_and_by_action(tmp_path: Path) -> None:
    log = filled(tmp_path)

    assert [e.seq for e in log.entries(pipeline="users")] == [2, 3]
    assert [e.seq for e in log.entries(action="retention")] == [1, 3]
    assert [e.seq for e in log.entries(pipeline="users", action="forget")] == [2]


def test_an_untouched_log_verifies_intact(tmp_path: Path) -> None:
    check = filled(tmp_path).verify_chain()

    assert check.is_intact
    assert check.entries == 3


def test_an_edited_line_breaks_the_chain_at_that_line(tmp_path: Path) -> None:
    log = filled(tmp_path)
    text = lines(log)
    edited = json.loads(text[1])
    edited["rows_affected"] = 0
    text[1] = json.dumps(edited, sort_keys=True)
    log.path.write_text("\n".join(text) + "\n")

    check = log.verify_chain()

    assert check.broken_at == 2
    assert "changed" in check.reason


def test_a_removed_line_breaks_the_chain_at_the_line_after_it(tmp_path: Path) -> None:
    log = filled(tmp_path)
    text = lines(log)
    log.path.write_text("\n".join([text[0], text[2]]) + "\n")

    assert log.verify_chain().broken_at == 2


def test_a_line_that_is_not_json_breaks_the_chain(tmp_path: Path) -> None:
    log = filled(tmp_path)
    log.path.write_text(log.path.read_text() + "not json\n")

    check = log.verify_chain()

    assert check.broken_at == 4
    assert "not JSON" in check.reason


def test_a_subject_fingerprint_is_stable_and_never_holds_the_value() -> None:
    first = subject_fingerprint("user_id", "u90210417")

    assert first == subject_fingerprint("user_id", "u90210417")
    assert first != subject_fingerprint("user_id", "u90210418")
    assert first != subject_fingerprint("customer_id", "u90210417")
    assert "u90210417" not in first


def test_with_the_hmac_key_the_fingerprint_is_keyed() -> None:
    plain = subject_fingerprint("user_id", "u42")
    keyed = subject_fingerprint("user_id", "u42", b"key-one")

    assert plain.startswith("sha256:") and keyed.startswith("hmac:")
    assert keyed == subject_fingerprint("user_id", "u42", b"key-one")
    assert keyed != subject_fingerprint("user_id", "u42", b"key-two")
    assert keyed.split(":")[1] != plain.split(":")[1]
