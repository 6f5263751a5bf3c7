"""`reconcile`: the audited table against a source table or a file, in the fused query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from sluiceway.checks import reconcile  # noqa: F401  (registers `reconcile`)
from sluiceway.checks.base import CheckEnv
from sluiceway.checks.reconcile import ReconcileConfig
from sluiceway.checks.table import compile_check, evaluate_checks, sample_unexpected
from sluiceway.checks.vocabulary import NotNullConfig
from sluiceway.core import registry
from sluiceway.engines.duckdb import DuckDBEngine

TARGET = {"id": [1, 2, 3, 4], "amount": [10.0, 20.0, 30.0, 40.0], "region": ["a", "a", "b", "b"]}
# id 5 is missing from the target, id 4 is not in the source; amounts sum to 105 vs 100.
SOURCE = {"id": [1, 2, 3, 5], "amount": [10.0, 20.0, 30.0, 45.0], "region": ["a", "a", "b", "c"]}


@pytest.fixture
def tables(engine: DuckDBEngine) -> CheckEnv:
    engine.register_arrow("target", pa.table(TARGET))
    engine.register_arrow("source_valid", pa.table(SOURCE))
    engine.register_arrow("same_valid", pa.table(TARGET))
    return CheckEnv(pipeline="orders", tables={"orders": "source_valid", "same": "same_valid"})


def reconcile_with(**fields: Any) -> ReconcileConfig:
    return ReconcileConfig.model_validate({"against": "orders", **fields})


def evaluate(engine: DuckDBEngine, env: CheckEnv, *configs: Any) -> list[Any]:
    return evaluate_checks(engine, "target", list(configs), env)


def test_reconcile_is_registered_as_a_check() -> None:
    plugin = registry.lookup("check", "reconcile")

    assert plugin is not None
    assert plugin.config is ReconcileConfig


def test_equal_row_counts_pass_and_the_observed_value_is_the_difference(engine, tables) -> None:
    [result] = evaluate(engine, tables, reconcile_with(against="same", row_count={}))

    assert (result.status, result.observed_value, result.unexpected_count) == ("passed", 0, 0)
    assert result.name == "reconcile(same)"
    assert "row count 4 vs 4" in result.message


def test_a_row_count_difference_beyond_the_tolerance_fails(engine, tables) -> None:
    engine.register_arrow("fewer", pa.table({"id": [1, 2]}))
    env = CheckEnv(tables={"fewer": "fewer"})

    strict, loose, percent = evaluate_checks(
        engine,
        "target",
        [
            reconcile_with(against="fewer", row_count={"tolerance": 1}),
            reconcile_with(against="fewer", row_count={"tolerance": 2}),
            reconcile_with(against="fewer", row_count={"tolerance_percent": 100}),
        ],
        env,
    )

    assert (strict.status, strict.observed_value, strict.unexpected_count) == ("failed", 2, 2)
    assert "difference +2, allowed ±1" in strict.message
    assert loose.status == "passed"
    assert percent.status == "passed"


def test_sums_report_the_worst_relative_difference(engine, tables) -> None:
    checks = [
        reconcile_with(sums=[{"column": "amount"}]),
        reconcile_with(sums=[{"column": "amount", "tolerance": 5}]),
        reconcile_with(sums=[{"column": "amount", "tolerance_percent": 4}]),
        reconcile_with(sums=[{"column": "amount", "tolerance_percent": 5}]),
    ]

    exact, absolute, too_tight, percent = evaluate(engine, tables, *checks)

    assert exact.status == "failed"
    assert exact.observed_value == pytest.approx(5 / 105)
    assert "sum(amount) 100 vs sum(amount) 105: difference -5" in exact.message
    assert absolute.status == "passed"
    assert too_tight.status == "failed"
    assert percent.status == "passed"


def test_a_sum_compares_against_another_column_name(engine, tables) -> None:
    engine.register_arrow("ledger", pa.table({"total": [60.0, 40.0]}))
    env = CheckEnv(tables={"ledger": "ledger"})
    config = reconcile_with(
        against="ledger", sums=[{"column": "amount", "against_column": "total"}]
    )

    [result] = evaluate_checks(engine, "target", [config], env)

    assert (result.status, result.observed_value) == ("passed", 0.0)


def test_keys_count_missing_and_extra_keys_and_mostly_judges_the_matched_share(
    engine, tables
) -> None:
    exact, mostly_low, mostly_high = evaluate(
        engine,
        tables,
        reconcile_with(keys=["id"]),
        reconcile_with(keys=["id"], mostly=0.6),
        reconcile_with(keys=["id"], mostly=0.7),
    )

    assert (exact.status, exact.observed_value, exact.unexpected_count) == ("failed", 2, 2)
    assert exact.unexpected_percent == pytest.approx(40.0)
    assert "1 missing from the target, 1 not in 'orders', 3 of 5 matched" in exact.message
    assert mostly_low.status == "passed"
    assert mostly_high.status == "failed"


def test_compound_keys_compare_whole_tuples(engine, tables) -> None:
    [result] = evaluate(engine, tables, reconcile_with(keys=["id", "region"]))

    assert result.unexpected_count == 2


def test_the_sample_names_mismatched_keys_from_both_sides_outside_a_pipeline(
    engine, tables
) -> None:
    env = CheckEnv(tables=dict(tables.tables))
    configs = [reconcile_with(keys=["id", "region"])]
    results = evaluate_checks(engine, "target", configs, env)

    [sample] = sample_unexpected(engine, "target", configs, results, env)

    assert sample == [
        "in the target, not in 'orders': id=4, region=b",
        "missing from the target: id=5, region=c",
    ]


def test_in_a_pipeline_keys_from_the_unmasked_source_stay_out_of_the_sample(engine, tables) -> None:
    configs = [reconcile_with(keys=["id"])]
    results = evaluate(engine, tables, *configs)

    [sample] = sample_unexpected(engine, "target", configs, results, tables)

    assert sample == ["in the target, not in 'orders': 4"]


def test_all_parts_are_in_the_message_and_keys_give_the_observed_value(engine, tables) -> None:
    config = reconcile_with(row_count={}, sums=[{"column": "amount"}], keys=["id"])

    [result] = evaluate(engine, tables, config)

    assert result.status == "failed"
    assert result.observed_value == 2
    assert "row count 4 vs 4" in result.message
    assert "sum(amount)" in result.message
    assert "keys (id)" in result.message


def test_the_other_checks_still_share_one_query(engine, tables) -> None:
    before = engine.statements
    evaluate(engine, tables, NotNullConfig(column="id"), reconcile_with(keys=["id"], row_count={}))

    assert engine.statements - before == 1


def test_an_unknown_source_is_an_error_listing_the_known_names(engine, tables) -> None:
    checks = [NotNullConfig(column="id"), reconcile_with(against="ordres", row_count={})]

    not_null, result = evaluate(engine, tables, *checks)

    assert not_null.status == "passed"
    assert result.status == "error"
    assert "Did you mean 'orders'?" in (result.error or "")
    assert "Pipeline sources: orders, same" in (result.error or "")


def test_a_missing_file_is_an_error_naming_the_file(engine, tables, tmp_path) -> None:
    missing = tmp_path / "nowhere.parquet"

    [result] = evaluate(engine, tables, reconcile_with(against=str(missing), row_count={}))

    assert result.status == "error"
    assert f"against file '{missing}' not found" in (result.error or "")


@pytest.mark.parametrize("suffix", ["parquet", "csv", "json"])
def test_a_file_of_each_format_is_read_as_against(engine, tmp_path: Path, suffix: str) -> None:
    engine.register_arrow("target", pa.table(TARGET))
    path = tmp_path / f"expected.{suffix}"
    data = pa.table(TARGET)
    if suffix == "parquet":
        pq.write_table(data, path)
    elif suffix == "csv":
        path.write_text("id,amount\n1,10\n2,20\n3,30\n4,40\n")
    else:
        path.write_text(
            '[{"id": 1, "amount": 10}, {"id": 2, "amount": 20}, '
            '{"id": 3, "amount": 30}, {"id": 4, "amount": 40}]'
        )
    config = reconcile_with(
        against=str(path), row_count={}, sums=[{"column": "amount"}], keys=["id"]
    )

    [result] = evaluate_checks(engine, "target", [config])

    assert result.status == "passed", result.message


def test_a_missing_column_is_an_error_not_a_crash(engine, tables) -> None:
    config = reconcile_with(sums=[{"column": "no_such_column"}])

    [result] = evaluate(engine, tables, config)

    assert result.status == "error"
    assert "no_such_column" in (result.error or "")


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({}, "set row_count, sums, keys"),
        ({"row_count": {}, "mostly": 0.9}, "'mostly' applies to the share of matched keys"),
        ({"keys": ["id", "id"]}, "keys repeat a column"),
        ({"row_count": {"tolerance": -1}}, "greater than or equal to 0"),
        ({"row_count": {}, "tolerence": 1}, "Extra inputs are not permitted"),
    ],
)
def test_a_config_that_compares_nothing_or_misuses_a_field_is_rejected(
    fields: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        reconcile_with(**fields)


def test_the_check_id_changes_with_the_tolerance_but_not_the_severity() -> None:
    base = compile_check(reconcile_with(row_count={}))
    looser = compile_check(reconcile_with(row_count={"tolerance": 3}))
    warn = compile_check(reconcile_with(row_count={}, severity="warn"))

    assert (
        base.result({"against_rows": 0}, 0).check_id
        != looser.result({"against_rows": 0}, 0).check_id
    )
    assert (
        base.result({"against_rows": 0}, 0).check_id == warn.result({"against_rows": 0}, 0).check_id
    )
