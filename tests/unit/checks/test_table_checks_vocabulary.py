"""The Great Expectations vocabulary beyond the first seven checks, on a six-row table."""

from __future__ import annotations

import importlib
import math
import sys
import types
from collections.abc import Iterator
from decimal import Decimal

import pyarrow as pa
import pytest
from pydantic import ValidationError

from sluiceway.checks import table
from sluiceway.checks.table import CheckResult, evaluate_checks
from sluiceway.checks.vocabulary import (
    ColumnsMatchListConfig,
    ColumnsMatchSetConfig,
    CompoundUniqueConfig,
    DistinctCountBetweenConfig,
    IsNullConfig,
    JsonParseableConfig,
    LengthBetweenConfig,
    MaxBetweenConfig,
    MeanBetweenConfig,
    MedianBetweenConfig,
    MinBetweenConfig,
    MulticolumnSumConfig,
    NotInSetConfig,
    NotRegexConfig,
    PairEqualConfig,
    PairGreaterConfig,
    SqlMetricConfig,
    SqlPredicateConfig,
    StdevBetweenConfig,
    StrftimeFormatConfig,
    SumBetweenConfig,
    UniqueProportionBetweenConfig,
)
from sluiceway.core import registry
from sluiceway.core.spec import CheckConfig
from sluiceway.engines.duckdb import DuckDBEngine

COLUMNS = {
    "id": [1, 2, 3, 4, 5, 6],
    "all_null": pa.array([None] * 6, pa.int64()),
    "one_set": [None, None, None, None, None, 1],  # 1 of 6 not NULL
    "status": ["a", "a", "b", "c", None, "secret-x"],  # 1 of 5 is 'secret-x'
    "code": ["ab", "abc", "abcd", None, "abcde", "a"],  # lengths 2,3,4,5,1
    "num": [1.0, 2.0, 3.0, 4.0, None, 10.0],  # mean 4, median 3, stdev sqrt(12.5), sum 20
    "dup": [1, 1, 2, 2, 3, None],  # 3 distinct of 5
    "day": ["2024-01-02", "2024-13-01", "2024-02-03", None, "20240101", "2024-03-04"],
    "doc": ['{"a": 1}', "[1, 2]", "{bad", None, '"s"', "3"],  # 1 of 5 not JSON
    "k1": [1, 1, 2, 2, None, None],
    "k2": ["x", "x", "y", "z", None, None],  # (1, 'x') twice; 2 rows NULL in both
    "hi": [2, 3, 4, 5, None, 6],
    "hi_copy": [2, 3, 4, 5, None, 6],
    "lo": [1, 2, 3, 5, None, None],  # equal in row 4, NULL beside 6 in row 6
    "p": [1, 2, 3, None, None, 5],
    "q": [9, 8, 7, 10, None, 6],  # sums 10,10,10,10,–,11
}
NAMES = list(COLUMNS)


@pytest.fixture
def engine() -> Iterator[DuckDBEngine]:
    eng = DuckDBEngine()
    eng.register_arrow("t", pa.table(COLUMNS))
    yield eng
    eng.close()


def run_one(engine: DuckDBEngine, check: CheckConfig) -> CheckResult:
    (result,) = evaluate_checks(engine, "t", [check])
    return result


# (check, status, unexpected_count) for the row-level checks, one passing and one failing each.
ROW_CASES: list[tuple[str, CheckConfig, str, int]] = [
    ("is_null passes", IsNullConfig(column="all_null"), "passed", 0),
    ("is_null fails", IsNullConfig(column="one_set"), "failed", 1),
    ("not_in_set passes", NotInSetConfig(column="status", value_set=["z", "q"]), "passed", 0),
    ("not_in_set fails", NotInSetConfig(column="status", value_set=["secret-x"]), "failed", 1),
    ("length passes", LengthBetweenConfig(column="code", min_value=1, max_value=5), "passed", 0),
    ("length fails", LengthBetweenConfig(column="code", min_value=2, max_value=4), "failed", 2),
    ("not_regex passes", NotRegexConfig(column="code", regex="z.*"), "passed", 0),
    ("not_regex fails", NotRegexConfig(column="code", regex="abc.*"), "failed", 3),
    ("strftime no dates", StrftimeFormatConfig(column="code", strftime_format="%y"), "failed", 5),
    ("strftime fails", StrftimeFormatConfig(column="day", strftime_format="%Y-%m-%d"), "failed", 2),
    (
        "strftime passes",
        StrftimeFormatConfig(column="day", strftime_format="%Y%m%d", mostly=0.2),
        "passed",
        4,
    ),
    ("json passes", JsonParseableConfig(column="dup"), "passed", 0),
    ("json fails", JsonParseableConfig(column="doc"), "failed", 1),
    ("compound passes", CompoundUniqueConfig(column_list=["k2", "id"]), "passed", 0),
    ("compound fails", CompoundUniqueConfig(column_list=["k1", "k2"]), "failed", 1),
    (
        "greater or equal",
        PairGreaterConfig(column_A="hi", column_B="lo", or_equal=True),
        "failed",
        1,
    ),
    ("greater fails", PairGreaterConfig(column_A="hi", column_B="lo"), "failed", 2),
    (
        "greater passes with mostly",
        PairGreaterConfig(column_A="hi", column_B="lo", or_equal=True, mostly=0.8),
        "passed",
        1,
    ),
    ("equal passes", PairEqualConfig(column_A="hi", column_B="hi_copy"), "passed", 0),
    ("equal fails", PairEqualConfig(column_A="hi", column_B="lo"), "failed", 4),
    ("sum fails", MulticolumnSumConfig(column_list=["p", "q"], sum_total=10), "failed", 1),
    (
        "sum passes with mostly",
        MulticolumnSumConfig(column_list=["p", "q"], sum_total=10, mostly=0.8),
        "passed",
        1,
    ),
    ("predicate passes", SqlPredicateConfig(name="hi≥lo", predicate="hi >= lo"), "passed", 0),
    ("predicate fails", SqlPredicateConfig(name="hi>lo", predicate="hi > lo"), "failed", 1),
]


@pytest.mark.parametrize(
    ("check", "status", "unexpected"),
    [case[1:] for case in ROW_CASES],
    ids=[case[0] for case in ROW_CASES],
)
def test_row_level_checks_count_their_unexpected_rows(
    engine: DuckDBEngine, check: CheckConfig, status: str, unexpected: int
) -> None:
    result = run_one(engine, check)
    assert (result.status, result.unexpected_count) == (status, unexpected)


def test_strftime_passes_on_values_in_the_format() -> None:
    eng = DuckDBEngine()
    eng.register_arrow("t", pa.table({"day": ["2024-01-02", None, "2023-12-31"]}))
    (result,) = evaluate_checks(
        eng, "t", [StrftimeFormatConfig(column="day", strftime_format="%Y-%m-%d")]
    )
    assert (result.status, result.unexpected_count, result.observed_value) == ("passed", 0, 1.0)


@pytest.mark.parametrize(
    ("check", "judged"),
    [
        (NotInSetConfig(column="status", value_set=["secret-x"]), 5),
        (LengthBetweenConfig(column="code", max_value=9), 5),
        (StrftimeFormatConfig(column="day", strftime_format="%Y-%m-%d"), 5),
        (JsonParseableConfig(column="doc"), 5),
        (CompoundUniqueConfig(column_list=["k1", "k2"]), 4),
        (PairGreaterConfig(column_A="hi", column_B="lo"), 5),
        (MulticolumnSumConfig(column_list=["p", "q"], sum_total=10), 5),
        (SqlPredicateConfig(name="hi>lo", predicate="hi > lo"), 4),
        (IsNullConfig(column="one_set"), 6),
    ],
    ids=lambda v: getattr(v, "key", str(v)),
)
def test_nulls_are_left_out_of_the_judged_rows_where_great_expectations_ignores_them(
    engine: DuckDBEngine, check: CheckConfig, judged: int
) -> None:
    result = run_one(engine, check)
    assert result.unexpected_count is not None and result.unexpected_percent is not None
    assert result.unexpected_count / judged * 100 == pytest.approx(result.unexpected_percent)


def test_multicolumn_sum_adds_decimals_exactly_and_counts_null_as_zero() -> None:
    # As doubles 0.10 + 0.20 is 0.30000000000000004, not 0.3.
    engine = DuckDBEngine()
    a = pa.array([Decimal("0.10"), Decimal("0.20"), None], pa.decimal128(18, 2))
    b = pa.array([Decimal("0.20"), Decimal("0.10"), Decimal("0.30")], pa.decimal128(18, 2))
    engine.register_arrow("cents", pa.table({"a": a, "b": b}))
    check = MulticolumnSumConfig(column_list=["a", "b"], sum_total=0.3)

    (result,) = evaluate_checks(engine, "cents", [check])

    assert (result.status, result.unexpected_count) == ("passed", 0)


def test_mostly_lets_is_null_pass_at_the_ratio_and_fail_above_it(engine: DuckDBEngine) -> None:
    at = run_one(engine, IsNullConfig(column="one_set", mostly=0.8))
    above = run_one(engine, IsNullConfig(column="one_set", mostly=0.9))
    assert (at.status, above.status) == ("passed", "failed")
    assert at.observed_value == pytest.approx(5 / 6)
    assert "1 of 6 (16.67%) were not NULL" in above.message


# (check, status, observed_value) for the aggregate checks.
AGGREGATE_CASES: list[tuple[str, CheckConfig, str, float]] = [
    ("mean passes", MeanBetweenConfig(column="num", min_value=4, max_value=4), "passed", 4.0),
    ("mean fails", MeanBetweenConfig(column="num", min_value=4, strict_min=True), "failed", 4.0),
    ("median passes", MedianBetweenConfig(column="num", max_value=3), "passed", 3.0),
    ("median fails", MedianBetweenConfig(column="num", max_value=3, strict_max=True), "failed", 3),
    ("stdev passes", StdevBetweenConfig(column="num", min_value=3.5, max_value=3.6), "passed", 0),
    ("stdev fails", StdevBetweenConfig(column="num", max_value=3), "failed", 0),
    ("min passes", MinBetweenConfig(column="num", min_value=1), "passed", 1.0),
    ("min fails", MinBetweenConfig(column="num", min_value=1, strict_min=True), "failed", 1.0),
    ("max passes", MaxBetweenConfig(column="num", max_value=10), "passed", 10.0),
    ("max fails", MaxBetweenConfig(column="num", max_value=9.5), "failed", 10.0),
    ("sum passes", SumBetweenConfig(column="num", min_value=20, max_value=20), "passed", 20.0),
    ("sum fails", SumBetweenConfig(column="num", min_value=21), "failed", 20.0),
    ("distinct passes", DistinctCountBetweenConfig(column="dup", min_value=3), "passed", 3),
    ("distinct fails", DistinctCountBetweenConfig(column="dup", min_value=4), "failed", 3),
    (
        "proportion passes",
        UniqueProportionBetweenConfig(column="dup", min_value=0.6, max_value=0.6),
        "passed",
        0.6,
    ),
    ("proportion fails", UniqueProportionBetweenConfig(column="dup", min_value=0.7), "failed", 0.6),
    (
        "metric passes",
        SqlMetricConfig(name="avg per row", expression="sum(num) / count(*)", max_value=3.4),
        "passed",
        20 / 6,
    ),
    (
        "metric fails",
        SqlMetricConfig(
            name="paid", expression="count(*) FILTER (WHERE status = 'a')", min_value=3
        ),
        "failed",
        2,
    ),
]
STDEV = math.sqrt(12.5)


@pytest.mark.parametrize(
    ("check", "status", "observed"),
    [case[1:] for case in AGGREGATE_CASES],
    ids=[case[0] for case in AGGREGATE_CASES],
)
def test_aggregate_checks_judge_the_aggregate_of_the_non_null_values(
    engine: DuckDBEngine, check: CheckConfig, status: str, observed: float
) -> None:
    result = run_one(engine, check)
    expected = STDEV if check.key == "stdev_between" else observed
    assert result.status == status
    assert result.observed_value == pytest.approx(expected)


def test_an_aggregate_of_no_values_fails_without_an_observed_value(engine: DuckDBEngine) -> None:
    result = run_one(engine, MeanBetweenConfig(column="all_null", min_value=0))
    assert (result.status, result.observed_value) == ("failed", None)
    assert "there was no value to judge" in result.message


def test_aggregate_messages_show_counts_and_ratios_but_not_values(engine: DuckDBEngine) -> None:
    maximum = run_one(engine, MaxBetweenConfig(column="num", max_value=9.5))
    distinct = run_one(engine, DistinctCountBetweenConfig(column="dup", min_value=4))
    assert maximum.message == (
        "Expected the max of column 'num' to be <= 9.5; it was above the maximum."
    )
    assert distinct.message.endswith("it was below the minimum (3).")


def test_columns_match_set_passes_in_any_order_and_lists_the_differences(
    engine: DuckDBEngine,
) -> None:
    same = run_one(engine, ColumnsMatchSetConfig(column_set=list(reversed(NAMES))))
    subset = run_one(engine, ColumnsMatchSetConfig(column_set=["id", "num"], exact_match=False))
    wrong = run_one(engine, ColumnsMatchSetConfig(column_set=[*NAMES[1:], "extra"]))
    assert (same.status, same.observed_value, subset.status) == ("passed", len(NAMES), "passed")
    assert (wrong.status, wrong.unexpected_count) == ("failed", 2)
    assert "missing: ['extra']; unexpected: ['id']" in wrong.message


def test_columns_match_list_needs_the_order_too(engine: DuckDBEngine) -> None:
    same = run_one(engine, ColumnsMatchListConfig(column_list=NAMES))
    swapped = run_one(engine, ColumnsMatchListConfig(column_list=[NAMES[1], NAMES[0], *NAMES[2:]]))
    shorter = run_one(engine, ColumnsMatchListConfig(column_list=NAMES[:-1]))
    assert same.status == "passed"
    assert (swapped.status, swapped.unexpected_count) == ("failed", 2)
    assert (shorter.status, shorter.unexpected_count) == ("failed", 1)


def test_table_columns_are_read_from_a_temp_view_too(engine: DuckDBEngine) -> None:
    engine.create_view("v", "SELECT num, id FROM t")
    (result,) = evaluate_checks(engine, "v", [ColumnsMatchListConfig(column_list=["num", "id"])])
    assert result.status == "passed"


# --- one statement, errors alone -----------------------------------------------------------

ALL_NEW = [case[1] for case in ROW_CASES + AGGREGATE_CASES] + [
    ColumnsMatchSetConfig(column_set=NAMES),
    ColumnsMatchListConfig(column_list=NAMES),
]


def test_all_the_new_checks_together_send_exactly_one_statement(engine: DuckDBEngine) -> None:
    before = engine.statements
    results = evaluate_checks(engine, "t", ALL_NEW)
    assert engine.statements - before == 1
    assert [r.status for r in results] == [
        *(case[2] for case in ROW_CASES + AGGREGATE_CASES),
        "passed",
        "passed",
    ]


def test_fused_results_equal_the_results_of_each_new_check_alone(engine: DuckDBEngine) -> None:
    assert evaluate_checks(engine, "t", ALL_NEW) == [run_one(engine, c) for c in ALL_NEW]


@pytest.mark.parametrize(
    "broken",
    [
        StrftimeFormatConfig(column="day", strftime_format="%Q"),
        SqlPredicateConfig(name="typo", predicate="hi >> lo AND"),
        SqlMetricConfig(name="typo", expression="sum(no_such_column)", min_value=0),
        MeanBetweenConfig(column="status", min_value=0),
    ],
    ids=["strftime", "predicate", "metric", "mean of text"],
)
def test_a_broken_check_reports_error_alone(engine: DuckDBEngine, broken: CheckConfig) -> None:
    good = evaluate_checks(engine, "t", ALL_NEW)
    mixed = evaluate_checks(engine, "t", [*ALL_NEW[:3], broken, *ALL_NEW[3:]])
    assert mixed[3].status == "error"
    assert mixed[:3] + mixed[4:] == good


def test_a_sql_comment_in_a_predicate_cannot_swallow_the_rest_of_the_query(
    engine: DuckDBEngine,
) -> None:
    result = run_one(engine, SqlPredicateConfig(name="c", predicate="hi > lo -- strict"))
    assert (result.status, result.unexpected_count) == ("failed", 1)


def test_new_results_never_carry_row_values(engine: DuckDBEngine) -> None:
    text = repr([r.to_dict() for r in evaluate_checks(engine, "t", ALL_NEW)])
    for value in ("secret-x", "{bad", "2024-13-01", "abcde"):
        assert value not in text


# --- vocabulary ----------------------------------------------------------------------------


@pytest.fixture
def plugins_module(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        importlib.import_module("sluiceway.plugins")
    except ModuleNotFoundError:
        monkeypatch.setitem(sys.modules, "sluiceway.plugins", types.ModuleType("sluiceway.plugins"))


GE_NAMES = {
    "is_null": "expect_column_values_to_be_null",
    "not_in_set": "expect_column_values_to_not_be_in_set",
    "length_between": "expect_column_value_lengths_to_be_between",
    "not_regex": "expect_column_values_to_not_match_regex",
    "mean_between": "expect_column_mean_to_be_between",
    "median_between": "expect_column_median_to_be_between",
    "stdev_between": "expect_column_stdev_to_be_between",
    "min_between": "expect_column_min_to_be_between",
    "max_between": "expect_column_max_to_be_between",
    "sum_between": "expect_column_sum_to_be_between",
    "distinct_count_between": "expect_column_unique_value_count_to_be_between",
    "unique_proportion_between": "expect_column_proportion_of_unique_values_to_be_between",
    "strftime_format": "expect_column_values_to_match_strftime_format",
    "json_parseable": "expect_column_values_to_be_json_parseable",
    "compound_unique": "expect_compound_columns_to_be_unique",
    "pair_greater": "expect_column_pair_values_a_to_be_greater_than_b",
    "pair_equal": "expect_column_pair_values_to_be_equal",
    "multicolumn_sum": "expect_multicolumn_sum_to_equal",
    "columns_match_set": "expect_table_columns_to_match_set",
    "columns_match_list": "expect_table_columns_to_match_ordered_list",
}


@pytest.mark.usefixtures("plugins_module")
@pytest.mark.parametrize(("short", "ge_name"), GE_NAMES.items())
def test_the_registry_resolves_the_short_and_the_great_expectations_name(
    short: str, ge_name: str
) -> None:
    by_short = registry.lookup("check", short)
    assert by_short is not None and by_short is registry.lookup("check", ge_name)
    assert by_short.config.key == short
    assert by_short.impl is table.IMPLEMENTATIONS[by_short.config]


@pytest.mark.usefixtures("plugins_module")
@pytest.mark.parametrize("short", ["sql_predicate", "sql_metric"])
def test_the_custom_sql_checks_have_short_names_only(short: str) -> None:
    plugin = registry.lookup("check", short)
    assert plugin is not None and plugin.aliases == ()


def test_pair_columns_accept_the_great_expectations_and_the_snake_case_keys() -> None:
    ge = PairEqualConfig.model_validate({"column_A": "a", "column_B": "b"})
    snake = PairEqualConfig.model_validate({"column_a": "a", "column_b": "b"})
    assert ge == snake


@pytest.mark.parametrize(
    ("model", "data", "needle"),
    [
        (MeanBetweenConfig, {"column": "x", "min_value": 1, "mostly": 0.9}, "takes no 'mostly'"),
        (MeanBetweenConfig, {"column": "x"}, "set min_value, max_value or both"),
        (SumBetweenConfig, {"column": "x", "min_value": 5, "max_value": 1}, "greater than"),
        (LengthBetweenConfig, {"column": "x", "min_value": -1}, "greater than or equal to 0"),
        (ColumnsMatchSetConfig, {"column_set": ["a"], "mostly": 0.5}, "takes no 'mostly'"),
        (CompoundUniqueConfig, {"column_list": ["a"]}, "at least 2 items"),
        (SqlPredicateConfig, {"predicate": "a > 0"}, "name"),
        (SqlPredicateConfig, {"name": "n", "predicate": "1; DROP TABLE t"}, "without ';'"),
        (SqlMetricConfig, {"name": "n", "expression": "count(*)"}, "set min_value, max_value"),
        (NotInSetConfig, {"column": "x", "value_set": []}, "at least 1 item"),
    ],
)
def test_invalid_new_check_configs_are_rejected(
    model: type[CheckConfig], data: dict[str, object], needle: str
) -> None:
    with pytest.raises(ValidationError, match=needle):
        model.model_validate(data)
