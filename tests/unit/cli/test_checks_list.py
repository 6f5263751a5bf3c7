"""`sluice checks list` prints the registered check vocabulary."""

from __future__ import annotations

import json

from click.testing import CliRunner

from sluiceway.cli import main
from sluiceway.core import registry


def test_checks_list_names_every_registered_check_with_its_ge_alias_and_arguments() -> None:
    result = CliRunner().invoke(main, ["checks", "list", "--format", "json"])

    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["check"] for r in rows] == [p.name for p in registry.canonical("check")]
    not_null = next(r for r in rows if r["check"] == "not_null")
    assert not_null["aliases"] == ["expect_column_values_to_not_be_null"]
    assert "column" in not_null["arguments"] and not_null["arguments"]["column"]
    assert all("severity" not in r["arguments"] for r in rows)


def test_checks_list_renders_a_table_for_people() -> None:
    result = CliRunner().invoke(main, ["checks", "list"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert "expect_column_values_to_be_between" in result.output
    assert "row_count_between" in result.output
