"""`sluice import-gx`: Great Expectations suites (0.x and 1.x JSON) → checks files that run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from click.testing import CliRunner, Result
from pydantic import Field

from sluiceway.checks.gx_import import convert_suite, full_match_regex
from sluiceway.checks.standalone import check_data
from sluiceway.checks.table import NotNullCheck
from sluiceway.checks.vocabulary import TableCheckConfig
from sluiceway.cli_gx import import_gx
from sluiceway.core import registry
from sluiceway.core.loader import load_checks

# A 0.x suite as `suite.to_json_dict()` wrote it: every expectation has an equivalent.
SUITE_0X: dict[str, Any] = {
    "expectation_suite_name": "orders.warning",
    "data_asset_type": "Dataset",
    "ge_cloud_id": None,
    "meta": {"great_expectations_version": "0.18.12"},
    "expectations": [
        {
            "expectation_type": "expect_column_values_to_not_be_null",
            "kwargs": {"column": "order_id", "result_format": "COMPLETE"},
            "meta": {},
        },
        {
            "expectation_type": "expect_column_values_to_be_unique",
            "kwargs": {"column": "order_id", "catch_exceptions": True, "include_config": True},
            "meta": {},
        },
        {
            "expectation_type": "expect_column_values_to_be_between",
            "kwargs": {
                "column": "amount",
                "min_value": 0,
                "max_value": 1000,
                "mostly": 0.75,
                "parse_strings_as_datetimes": False,
            },
            "meta": {"notes": {"format": "markdown", "content": "refunds are positive too"}},
        },
        {
            "expectation_type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "status", "value_set": ["paid", "refunded"]},
            "meta": {},
        },
        {
            "expectation_type": "expect_column_values_to_match_regex",
            "kwargs": {"column": "email", "regex": "@example\\."},
            "meta": {},
        },
        {
            "expectation_type": "expect_table_row_count_to_be_between",
            "kwargs": {"min_value": 1, "max_value": None},
            "meta": {},
        },
        {
            "expectation_type": "expect_table_row_count_to_equal",
            "kwargs": {"value": 5},
            "meta": {},
        },
        {
            "expectation_type": "expect_column_to_exist",
            "kwargs": {"column": "status"},
            "meta": {},
        },
    ],
}

# A 1.x suite: severities, an expectation with a row condition, types with no equivalent and
# arguments the check refuses.
SUITE_1X: dict[str, Any] = {
    "name": "orders_suite",
    "id": "0b7c2f5e-8d41-4c0e-9a53-2f1f7f4a9d10",
    "meta": {"great_expectations_version": "1.3.5"},
    "notes": None,
    "expectations": [
        {
            "type": "expect_column_values_to_not_be_null",
            "kwargs": {"column": "order_id"},
            "meta": {},
            "id": "3f0a1b8e-1f4c-4ad2-9d7e-6b1e2c3d4e5f",
            "severity": "critical",
        },
        {
            "type": "expect_column_mean_to_be_between",
            "kwargs": {"column": "amount", "min_value": 50, "max_value": 100},
            "meta": {},
            "severity": "warning",
        },
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {
                "column": "amount",
                "min_value": 0,
                "row_condition": 'status=="paid"',
                "condition_parser": "pandas",
            },
            "meta": {},
        },
        {
            "type": "expect_column_kl_divergence_to_be_less_than",
            "kwargs": {
                "column": "amount",
                "partition_object": {"bins": [0, 10, 100], "weights": [0.5, 0.5]},
                "threshold": 0.1,
            },
            "meta": {},
        },
        {
            "type": "expect_table_row_count_to_be_between",
            "kwargs": {"min_value": 10, "max_value": 1},
            "meta": {},
        },
    ],
}

CLEAN = (
    "order_id,amount,status,email\n"
    "o1,10.5,paid,alice@example.com\n"
    "o2,3.25,paid,bob@example.org\n"
    "o3,7,refunded,carol@example.net\n"
    "o4,12,paid,dave@example.com\n"
    "o5,1,paid,erin@example.com\n"
)
# o2 twice, a negative amount (1 of 5, within mostly 0.75), an unknown status, no '@example.'
DIRTY = (
    "order_id,amount,status,email\n"
    "o1,10.5,paid,alice@example.com\n"
    "o2,-3.25,paid,bob@example.org\n"
    "o2,7,lost,carol@example.net\n"
    "o4,12,paid,dave-at-example\n"
    "o5,1,paid,erin@example.com\n"
)


def write(folder: Path, name: str, content: Any) -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(import_gx, list(args), env={"COLUMNS": "250"})


def statuses(checks_file: Path, data: Path) -> dict[str, str]:
    results = check_data(checks_file, str(data), base_dir=data.parent)
    return {r.name: r.status for r in results}


def test_a_0x_suite_converts_completely_and_runs_on_data(tmp_path: Path) -> None:
    suite = write(tmp_path, "suite.json", SUITE_0X)
    output = tmp_path / "checks.yaml"

    result = invoke(str(suite), "-o", str(output))

    assert result.exit_code == 0, result.stderr
    assert "8 of 8 expectation(s) converted" in result.stderr
    assert [c.key for c in load_checks(output)] == [
        "not_null",
        "unique",
        "between",
        "in_set",
        "regex",
        "row_count_between",
        "row_count_between",
        "columns_match_set",
    ]
    clean = statuses(output, write(tmp_path, "clean.csv", CLEAN))
    assert set(clean.values()) == {"passed"}, clean
    dirty = statuses(output, write(tmp_path, "dirty.csv", DIRTY))
    assert dirty == {
        "not_null(order_id)": "passed",
        "unique(order_id)": "failed",
        "between(amount)": "passed",
        "in_set(status)": "failed",
        "regex(email)": "failed",
        "row_count_between": "passed",
        "columns_match_set": "passed",
    }


def test_ge_arguments_carry_over_with_their_meaning(tmp_path: Path) -> None:
    conversion = convert_suite(SUITE_0X)

    data = yaml.safe_load(conversion.to_yaml())

    assert data["version"] == 1
    assert data["checks"][0] == {"not_null": "order_id"}
    assert data["checks"][2] == {
        "between": {"mostly": 0.75, "column": "amount", "min_value": 0, "max_value": 1000}
    }
    assert data["checks"][4] == {
        "regex": {"column": "email", "regex": "[\\s\\S]*(?:@example\\.)[\\s\\S]*"}
    }
    assert data["checks"][6] == {"row_count_between": {"min_value": 5, "max_value": 5}}
    assert data["checks"][7] == {
        "columns_match_set": {"column_set": ["status"], "exact_match": False}
    }


def test_a_1x_suite_converts_what_it_can_and_reports_the_rest(tmp_path: Path) -> None:
    suite = write(tmp_path, "suite.json", SUITE_1X)
    output = tmp_path / "checks.yaml"

    result = invoke(str(suite), "-o", str(output))

    assert result.exit_code == 2
    report = result.stderr
    assert "2 of 5 expectation(s) converted, 3 skipped (not written)" in report
    assert "row_condition=" in report and "condition_parser=" in report
    assert "expect_column_kl_divergence_to_be_less_than" in report
    assert "no equivalent check" in report and "threshold=0.1" in report
    assert "min_value 10 is greater than max_value 1" in report
    checks = load_checks(output)
    assert [(c.key, c.severity) for c in checks] == [
        ("not_null", "error"),
        ("mean_between", "warn"),
    ]
    written = output.read_text()
    assert "# Not converted: #2 expect_column_values_to_be_between" in written
    assert "# Not converted: #3 expect_column_kl_divergence_to_be_less_than" in written


def test_the_converted_1x_checks_judge_the_data(tmp_path: Path) -> None:
    suite = write(tmp_path, "suite.json", SUITE_1X)
    output = tmp_path / "checks.yaml"
    invoke(str(suite), "-o", str(output))

    results = check_data(output, str(write(tmp_path, "clean.csv", CLEAN)), base_dir=tmp_path)

    assert [(r.name, r.status, r.severity) for r in results] == [
        ("not_null(order_id)", "passed", "error"),
        ("mean_between(amount)", "failed", "warn"),
    ]


def test_without_output_the_yaml_goes_to_stdout_and_the_report_to_stderr(tmp_path: Path) -> None:
    suite = write(tmp_path, "suite.json", SUITE_0X)

    result = invoke(str(suite))

    assert result.exit_code == 0, result.stderr
    assert yaml.safe_load(result.stdout)["checks"][0] == {"not_null": "order_id"}
    assert "expect_column_values_to_not_be_null" in result.stderr
    assert "expect_" not in result.stdout.split("checks:")[1]


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (None, "cannot read"),
        ("{not json", "is not valid JSON (line 1, column 2"),
        ('{"name": "x", "checks": []}', "with an 'expectations' list"),
        ("[1, 2]", "is not a Great Expectations expectation suite"),
    ],
)
def test_an_unreadable_suite_exits_1_with_the_reason(
    tmp_path: Path, content: str | None, complaint: str
) -> None:
    suite = tmp_path / "suite.json"
    if content is not None:
        suite.write_text(content)

    result = invoke(str(suite))

    assert result.exit_code == 1
    assert complaint in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_a_suite_with_nothing_convertible_writes_nothing_and_exits_2(tmp_path: Path) -> None:
    only_unknown = {"name": "odd", "expectations": [SUITE_1X["expectations"][3]]}
    suite = write(tmp_path, "suite.json", only_unknown)
    output = tmp_path / "checks.yaml"

    result = invoke(str(suite), "-o", str(output))

    assert result.exit_code == 2
    assert "nothing written" in result.stderr
    assert not output.exists()


def test_an_unknown_severity_is_reported_not_guessed() -> None:
    suite = {
        "name": "s",
        "expectations": [
            {
                "type": "expect_column_values_to_be_unique",
                "kwargs": {"column": "a"},
                "severity": "x",
            }
        ],
    }

    conversion = convert_suite(suite)

    assert conversion.checks == []
    [report] = conversion.skipped
    assert "unknown severity 'x'" in report.detail


def test_unique_with_mostly_converts_with_a_note_on_how_the_counts_differ() -> None:
    suite = {
        "name": "s",
        "expectations": [
            {
                "type": "expect_column_values_to_be_unique",
                "kwargs": {"column": "a", "mostly": 0.99},
            },
            {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "b"}},
        ],
    }

    with_mostly, plain = convert_suite(suite).reports

    assert with_mostly.outcome == "converted" and "NOTE: sluiceway counts each repeat" in (
        with_mostly.detail
    )
    assert "NOTE" not in plain.detail  # without mostly both fail on any repeat


class PositiveConfig(TableCheckConfig):
    """A check another module registers with a GE alias."""

    key: ClassVar[str] = "positive_test_only"
    ge_name: ClassVar[str | None] = "expect_column_values_to_be_positive_test_only"

    column: str = Field(description="The column.")


def test_checks_registered_later_with_a_ge_name_are_picked_up(monkeypatch) -> None:
    plugin = registry.Plugin("check", PositiveConfig.key, PositiveConfig, NotNullCheck)
    for name in (PositiveConfig.key, PositiveConfig.ge_name):
        monkeypatch.setitem(registry._PLUGINS["check"], name, plugin)
    suite = {
        "name": "s",
        "expectations": [
            {"type": "expect_column_values_to_be_positive_test_only", "kwargs": {"column": "a"}}
        ],
    }

    conversion = convert_suite(suite)

    assert [c.key for c in conversion.checks] == ["positive_test_only"]


@pytest.mark.parametrize(
    ("ge_regex", "whole_value"),
    [
        ("abc", "[\\s\\S]*(?:abc)[\\s\\S]*"),
        ("^abc", "[\\s\\S]*(?:^abc)[\\s\\S]*"),
        ("^a|b$", "[\\s\\S]*(?:^a|b$)[\\s\\S]*"),
    ],
)
def test_a_ge_regex_becomes_a_whole_value_regex(ge_regex: str, whole_value: str) -> None:
    assert full_match_regex(ge_regex) == whole_value
