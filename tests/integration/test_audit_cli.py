"""`sluice audit`: entries newest first, filters, JSON output, and --verify catching a line
edited after it was written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sluiceway.cli import main
from sluiceway.ops.audit import AuditLog


@pytest.fixture
def state(tmp_path: Path) -> Path:
    log = AuditLog(tmp_path)
    log.append("retention", pipeline="orders", tables=["/lake/orders"], rows_affected=5)
    log.append("forget", pipeline="users", rows_affected=2, details={"subject": "sha256:ab"})
    log.append("retention", pipeline="users", rows_affected=1)
    return tmp_path


def audit(state: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main, ["audit", "--state-dir", str(state), *args], catch_exceptions=False
    )


def listed(result: Result) -> list[dict[str, object]]:
    assert result.exit_code == 0, result.output
    entries: list[dict[str, object]] = json.loads(result.output)
    return entries


def test_entries_are_listed_newest_first(state: Path) -> None:
    entries = listed(audit(state, "--format", "json"))

    assert [e["seq"] for e in entries] == [3, 2, 1]
    assert entries[1]["details"] == {"subject": "sha256:ab"}


def test_entries_filter_by_pipeline_action_and_limit(state: Path) -> None:
    assert [e["seq"] for e in listed(audit(state, "--pipeline", "users", "--format", "json"))] == [
        3,
        2,
    ]
    assert [
        e["seq"] for e in listed(audit(state, "--action", "retention", "--format", "json"))
    ] == [
        3,
        1,
    ]
    assert [e["seq"] for e in listed(audit(state, "--limit", "1", "--format", "json"))] == [3]


def test_the_table_format_shows_each_entry(state: Path) -> None:
    result = CliRunner().invoke(
        main, ["audit", "--state-dir", str(state)], env={"COLUMNS": "250"}, catch_exceptions=False
    )

    assert result.exit_code == 0
    assert result.output.index("forget") < result.output.index("orders")
    assert "sha256:ab" in result.output


def test_verify_passes_on_an_untouched_log(state: Path) -> None:
    result = audit(state, "--verify")

    assert result.exit_code == 0
    assert "intact (3 entries)" in result.output


def test_verify_names_the_first_line_edited_after_it_was_written(state: Path) -> None:
    path = state / "audit.jsonl"
    text = path.read_text().splitlines()
    text[1] = text[1].replace('"rows_affected": 2', '"rows_affected": 0')
    assert text[1] != path.read_text().splitlines()[1]
    path.write_text("\n".join(text) + "\n")

    result = audit(state, "--verify")

    assert result.exit_code == 1
    assert "line 2" in result.output


def test_an_empty_state_folder_lists_nothing_and_verifies(tmp_path: Path) -> None:
    assert listed(audit(tmp_path, "--format", "json")) == []
    assert audit(tmp_path, "--verify").exit_code == 0
