from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from pydantic import ValidationError

from sluiceway.checks import extra, table, vocabulary
from sluiceway.checks.base import CheckEnv, sql_literal
from sluiceway.checks.table import CheckResult, blocking_failures, evaluate_checks
from sluiceway.checks.vocabulary import (
    BetweenConfig,
    CompletenessConfig,
    InSetConfig,
    NotNullConfig,
    RegexConfig,
    RowCountBetweenConfig,
    UniqueConfig,
)
from sluiceway.core import registry
from sluiceway.core.spec import CheckConfig
from sluiceway.engines.duckdb import DuckDBEngine, redact_row_values
from sluiceway.errors import StepError

ROWS = 100
EMAILS = [f"user{i}@example.com" for i in range(ROWS - 2)] + ["not-an-email", "alice at home"]


def orders() -> pa.Table:
    """100 orders; each column breaks its check on a known number of rows."""
    return pa.table(
        {
            "order_id": [*range(ROWS - 1), 7],  # one repeat
            "user_id": [None] * 3 + [f"u{i}" for i in range(3, ROWS)],  # 3 NULLs
            "price": [float(i) for i in range(ROWS - 3)] + [500.0] * 3,  # 3 above 100
            "status": ["paid"] * 90 + ["new"] * 7 + ["lost"] + [None] * 2,  # 1 not allowed
            "email": EMAILS,  # 2 not emails
            "coupon": [None] * 10 + ["SAVE"] * 90,  # 90% complete
        }
    )


@pytest.fixture
def engine() -> Iterator[DuckDBEngine]:
    eng = DuckDBEngine()
    eng.register_arrow("orders", orders())
    yield eng
    eng.close()


def run_one(engine: DuckDBEngine, check: CheckConfig, name: str = "orders") -> CheckResult:
    (result,) = evaluate_checks(engine, name, [check])
    return result


SEVEN_CHECKS: list[CheckConfig] = [
    NotNullConfig(column="user_id", mostly=0.95),
    BetweenConfig(column="price", min_value=0, max_value=100),
    InSetConfig(column="status", value_set=["new", "paid", "shipped", "lost"]),
    UniqueConfig(column="order_id"),
    RowCountBetweenConfig(min_value=1, max_value=1000),
    RegexConfig(column="email", regex=r"[^@\s]+@[^@\s]+\.[a-z]+", mostly=0.9),
    CompletenessConfig(column="coupon", min=0.9),
]


# --- each check passes and fails -----------------------------------------------------------


def test_not_null_passes_on_a_column_without_nulls(engine: DuckDBEngine) -> None:
    result = run_one(engine, NotNullConfig(column="order_id"))
    assert (result.status, result.unexpected_count, result.rows_checked) == ("passed", 0, ROWS)


def test_not_null_fails_and_counts_the_nulls_over_all_rows(engine: DuckDBEngine) -> None:
    result = run_one(engine, NotNullConfig(column="user_id"))
    assert result.status == "failed"
    assert result.unexpected_count == 3
    assert result.unexpected_percent == pytest.approx(3.0)
    assert result.observed_value == pytest.approx(0.97)
    assert result.name == "not_null(user_id)"


def test_between_passes_when_every_value_is_inside_the_bounds(engine: DuckDBEngine) -> None:
    result = run_one(engine, BetweenConfig(column="price", min_value=0, max_value=500))
    assert (result.status, result.unexpected_count) == ("passed", 0)


def test_between_fails_on_values_above_max(engine: DuckDBEngine) -> None:
    result = run_one(engine, BetweenConfig(column="price", max_value=100))
    assert (result.status, result.unexpected_count) == ("failed", 3)


def test_between_strict_bounds_make_the_bound_itself_unexpected(engine: DuckDBEngine) -> None:
    inclusive = run_one(engine, BetweenConfig(column="price", min_value=0, max_value=500))
    strict = run_one(
        engine,
        BetweenConfig(column="price", min_value=0, max_value=500, strict_min=True, strict_max=True),
    )
    assert inclusive.unexpected_count == 0
    assert strict.unexpected_count == 4  # the 0.0 and the three 500.0


def test_between_compares_dates_with_date_bounds() -> None:
    from datetime import date

    eng = DuckDBEngine()
    eng.register_arrow("days", pa.table({"day": [date(2024, 1, d) for d in (1, 15, 31)]}))
    result = run_one(eng, BetweenConfig(column="day", max_value=date(2024, 1, 20)), "days")
    assert (result.status, result.unexpected_count) == ("failed", 1)


def test_in_set_passes_when_every_value_is_allowed(engine: DuckDBEngine) -> None:
    result = run_one(engine, InSetConfig(column="status", value_set=["new", "paid", "lost"]))
    assert result.status == "passed"


def test_in_set_fails_and_ignores_nulls(engine: DuckDBEngine) -> None:
    result = run_one(engine, InSetConfig(column="status", value_set=["new", "paid"]))
    assert result.status == "failed"
    assert result.unexpected_count == 1
    assert result.unexpected_percent == pytest.approx(100 / 98)  # over the 98 non-NULL values


def test_unique_passes_on_distinct_values(engine: DuckDBEngine) -> None:
    result = run_one(engine, UniqueConfig(column="email"))
    assert (result.status, result.unexpected_count) == ("passed", 0)


def test_unique_counts_repeats_beyond_the_first_and_not_nulls() -> None:
    eng = DuckDBEngine()
    eng.register_arrow("t", pa.table({"k": [1, 1, 1, 2, None, None]}))
    result = run_one(eng, UniqueConfig(column="k"), "t")
    assert (result.status, result.unexpected_count) == ("failed", 2)
    assert result.unexpected_percent == pytest.approx(50.0)


def test_row_count_between_passes_inside_and_fails_outside(engine: DuckDBEngine) -> None:
    inside = run_one(engine, RowCountBetweenConfig(min_value=ROWS, max_value=ROWS))
    too_few = run_one(engine, RowCountBetweenConfig(min_value=ROWS + 1))
    assert (inside.status, inside.observed_value) == ("passed", ROWS)
    assert (too_few.status, too_few.observed_value) == ("failed", ROWS)
    assert "at least 101 rows; found 100" in too_few.message


def test_regex_passes_when_all_values_match(engine: DuckDBEngine) -> None:
    result = run_one(engine, RegexConfig(column="user_id", regex=r"u\d+"))
    assert (result.status, result.unexpected_count) == ("passed", 0)


def test_regex_must_match_the_whole_value(engine: DuckDBEngine) -> None:
    result = run_one(engine, RegexConfig(column="email", regex=r"[^@\s]+@[^@\s]+\.[a-z]+"))
    partial = run_one(engine, RegexConfig(column="email", regex=r"user"))
    assert (result.status, result.unexpected_count) == ("failed", 2)
    assert partial.unexpected_count == ROWS  # 'user0@example.com' does not fully match 'user'


def test_completeness_passes_at_the_ratio_and_fails_above_it(engine: DuckDBEngine) -> None:
    at_ratio = run_one(engine, CompletenessConfig(column="coupon", min=0.9))
    above = run_one(engine, CompletenessConfig(column="coupon", min=0.91))
    assert (at_ratio.status, at_ratio.observed_value) == ("passed", pytest.approx(0.9))
    assert above.status == "failed"
    assert above.unexpected_count == 10


def test_mostly_lets_a_check_pass_at_95_percent_and_fail_at_99(engine: DuckDBEngine) -> None:
    at_95 = run_one(engine, BetweenConfig(column="price", min_value=0, max_value=100, mostly=0.95))
    at_99 = run_one(engine, BetweenConfig(column="price", min_value=0, max_value=100, mostly=0.99))
    assert at_95.status == "passed"
    assert at_99.status == "failed"
    assert "at least 99% of the non-NULL values of column 'price'" in at_99.message


# --- blocking ------------------------------------------------------------------------------


def test_a_failing_warn_check_does_not_block_but_a_failing_error_check_does(
    engine: DuckDBEngine,
) -> None:
    warn = NotNullConfig(column="user_id", severity="warn")
    error = UniqueConfig(column="order_id")
    passing = NotNullConfig(column="order_id")
    results = evaluate_checks(engine, "orders", [warn, error, passing])
    assert [r.status for r in results] == ["failed", "failed", "passed"]
    assert [r.check for r in blocking_failures(results)] == ["unique"]


def test_a_check_that_could_not_run_blocks_when_its_severity_is_error(engine: DuckDBEngine) -> None:
    broken = RegexConfig(column="email", regex="(unclosed")
    demoted = RegexConfig(column="email", regex="(unclosed", severity="warn")
    results = evaluate_checks(engine, "orders", [broken, demoted])
    assert [r.status for r in results] == ["error", "error"]
    assert blocking_failures(results) == [results[0]]


# --- one scan ------------------------------------------------------------------------------


def test_seven_checks_send_exactly_one_statement(engine: DuckDBEngine) -> None:
    before = engine.statements
    results = evaluate_checks(engine, "orders", SEVEN_CHECKS)
    assert engine.statements - before == 1
    statuses = [r.status for r in results]
    assert statuses == ["passed", "failed", "passed", "failed", "passed", "passed", "passed"]


def test_fused_results_equal_the_results_of_each_check_alone(engine: DuckDBEngine) -> None:
    fused = evaluate_checks(engine, "orders", SEVEN_CHECKS)
    alone = [run_one(engine, check) for check in SEVEN_CHECKS]
    assert fused == alone


# --- errors --------------------------------------------------------------------------------


def test_a_bad_regex_errors_only_its_own_check(engine: DuckDBEngine) -> None:
    bad = RegexConfig(column="email", regex="([a-z]+")
    good = evaluate_checks(engine, "orders", SEVEN_CHECKS)
    mixed = evaluate_checks(engine, "orders", [*SEVEN_CHECKS[:3], bad, *SEVEN_CHECKS[3:]])
    assert mixed[3].status == "error"
    assert mixed[3].error and "missing )" in mixed[3].error
    assert "could not be evaluated on table 'orders'" in mixed[3].message
    assert mixed[:3] + mixed[4:] == good


def test_a_missing_column_errors_with_a_did_you_mean(engine: DuckDBEngine) -> None:
    results = evaluate_checks(engine, "orders", [NotNullConfig(column="usr_id"), SEVEN_CHECKS[3]])
    missing, other = results
    assert missing.status == "error"
    assert missing.error is not None
    assert "column 'usr_id' not found in table 'orders'" in missing.error
    assert "Did you mean 'user_id'?" in missing.error
    assert "order_id, user_id, price" in missing.error
    assert (other.status, other.unexpected_count) == ("failed", 1)


def test_a_missing_table_errors_every_check_without_raising(engine: DuckDBEngine) -> None:
    results = evaluate_checks(engine, "no_such_table", SEVEN_CHECKS[:2])
    assert [r.status for r in results] == ["error", "error"]
    assert all("no_such_table" in (r.error or "") for r in results)


# --- PII safety ----------------------------------------------------------------------------


def test_results_never_carry_row_values(engine: DuckDBEngine) -> None:
    checks: list[CheckConfig] = [
        *SEVEN_CHECKS,
        RegexConfig(column="email", regex=r"\d+"),
        InSetConfig(column="email", value_set=["x"]),
        UniqueConfig(column="email"),
    ]
    text = repr([r.to_dict() for r in evaluate_checks(engine, "orders", checks)])
    assert "alice" not in text
    assert "user0@example.com" not in text
    assert "not-an-email" not in text


def test_an_engine_error_quoting_a_row_value_is_redacted(engine: DuckDBEngine) -> None:
    # Comparing a text column with numbers makes DuckDB cast the rows and quote the first
    # that fails: "Could not convert string 'user0@example.com' to INT32".
    result = run_one(engine, InSetConfig(column="email", value_set=[1, 2]))
    assert result.status == "error"
    assert result.error is not None and "Could not convert string" in result.error
    assert "example.com" not in result.message
    assert "example.com" not in (result.error or "")


@pytest.mark.parametrize(
    ("message", "redacted"),
    [
        (
            "Conversion Error: Type INT64 with value 4111111111111111 can't be cast because "
            "the value is out of range for the destination type INT32",
            "Conversion Error: Type INT64 with value … can't be cast because "
            "the value is out of range for the destination type INT32",
        ),
        (
            "Invalid Input Error: Malformed JSON at byte 24 of input: unexpected character.  "
            'Input: "{"name": "alice smith", x"',
            "Invalid Input Error: Malformed JSON at byte … of input: unexpected character.  "
            'Input: "…"',
        ),
        (
            'Conversion Error: Casting value "12.5" to type DECIMAL(3,2) failed',
            'Conversion Error: Casting value "…" to type DECIMAL(3,2) failed',
        ),
        (
            "Out of Range Error: Overflow in addition of INT32 (2000000123 + -2000000456)!",
            "Out of Range Error: Overflow in addition of INT32 (… + …)!",
        ),
        (
            "Conversion Error: Date out of range: 2024-2-31",
            "Conversion Error: Date out of range: …-…-…",
        ),
        (
            'Binder Error: Referenced column "amount2" not found in FROM clause! '
            "Candidate bindings: \"amount\" 'x'",
            'Binder Error: Referenced column "amount2" not found in FROM clause! '
            "Candidate bindings: \"amount\" '…'",
        ),
    ],
)
def test_redaction_blanks_values_of_rows_but_keeps_names_of_columns(
    message: str, redacted: str
) -> None:
    assert redact_row_values(message) == redacted


def test_an_engine_asked_to_redact_keeps_row_values_out_of_its_errors() -> None:
    engine = DuckDBEngine(redact_values=True)
    engine.run("CREATE TABLE t AS SELECT 2000000123::INTEGER AS a, 'alice' AS b")
    with pytest.raises(StepError) as raised:
        engine.run("SELECT a + a FROM t", purpose="add")
    with pytest.raises(StepError) as cast:
        engine.run("SELECT b::INTEGER FROM t", purpose="cast")
    assert "2000000123" not in str(raised.value)
    assert "alice" not in str(cast.value)
    assert "add failed: Out of Range Error: Overflow in addition of INT32" in str(raised.value)


def test_a_zoned_datetime_bound_is_an_instant_and_a_naive_one_is_not() -> None:
    zoned = datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert sql_literal(zoned) == "TIMESTAMPTZ '2024-01-01 10:00:00+00:00'"
    assert sql_literal(datetime(2024, 1, 1, 10)) == "TIMESTAMP '2024-01-01 10:00:00'"


# --- identity and vocabulary ---------------------------------------------------------------


def test_check_id_is_stable_across_runs_and_changes_with_a_param(engine: DuckDBEngine) -> None:
    first = run_one(engine, BetweenConfig(column="price", min_value=0, max_value=100))
    other = DuckDBEngine()
    other.register_arrow("orders", orders())
    again = run_one(other, BetweenConfig(column="price", min_value=0, max_value=100))
    changed = run_one(engine, BetweenConfig(column="price", min_value=0, max_value=101))
    moved = run_one(engine, BetweenConfig(column="order_id", min_value=0, max_value=100))
    assert first.check_id == again.check_id
    assert len(first.check_id) == 12 and int(first.check_id, 16) >= 0
    assert first.check_id not in {changed.check_id, moved.check_id}


def test_check_id_ignores_the_name_and_severity_labels() -> None:
    plain = NotNullConfig(column="user_id")
    labelled = NotNullConfig(column="user_id", name="users have ids", severity="warn")
    assert table.check_id(plain) == table.check_id(labelled)
    assert table.check_id(plain) != table.check_id(NotNullConfig(column="user_id", mostly=0.5))


def test_the_configured_name_replaces_the_default_one(engine: DuckDBEngine) -> None:
    result = run_one(engine, RowCountBetweenConfig(min_value=1, name="orders arrived"))
    assert result.name == "orders arrived"
    assert result.to_dict()["status"] == "passed"


@pytest.fixture
def plugins_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # registry.lookup imports sluiceway.plugins; until that module exists, an empty one
    # stands in, and the checks are found because importing `table` registered them.
    try:
        importlib.import_module("sluiceway.plugins")
    except ModuleNotFoundError:
        monkeypatch.setitem(sys.modules, "sluiceway.plugins", types.ModuleType("sluiceway.plugins"))


GE_NAMES = {
    "not_null": "expect_column_values_to_not_be_null",
    "between": "expect_column_values_to_be_between",
    "in_set": "expect_column_values_to_be_in_set",
    "unique": "expect_column_values_to_be_unique",
    "row_count_between": "expect_table_row_count_to_be_between",
    "regex": "expect_column_values_to_match_regex",
}


@pytest.mark.usefixtures("plugins_module")
@pytest.mark.parametrize(("short", "ge_name"), GE_NAMES.items())
def test_the_registry_resolves_the_short_and_the_great_expectations_name(
    short: str, ge_name: str
) -> None:
    by_short = registry.lookup("check", short)
    by_ge = registry.lookup("check", ge_name)
    assert by_short is not None and by_short is by_ge
    assert by_short.config.key == short
    assert by_short.impl is table.IMPLEMENTATIONS[by_short.config]


@pytest.mark.usefixtures("plugins_module")
def test_completeness_is_registered_under_its_short_name_only() -> None:
    plugin = registry.lookup("check", "completeness")
    assert plugin is not None and plugin.aliases == ()


@pytest.mark.parametrize(
    ("model", "data", "needle"),
    [
        (BetweenConfig, {"column": "x"}, "set min_value, max_value or both"),
        (BetweenConfig, {"column": "x", "min_value": 5, "max_value": 1}, "greater than max_value"),
        (RowCountBetweenConfig, {}, "set min_value, max_value or both"),
        (RowCountBetweenConfig, {"min_value": 1, "mostly": 0.9}, "takes no 'mostly'"),
        (CompletenessConfig, {"column": "x", "min": 0.9, "mostly": 0.9}, "takes no 'mostly'"),
        (CompletenessConfig, {"column": "x", "min": 1.5}, "less than or equal to 1"),
        (InSetConfig, {"column": "x", "value_set": []}, "at least 1 item"),
        (NotNullConfig, {"column": "x", "colum": "y"}, "Extra inputs are not permitted"),
        (NotNullConfig, {"column": "x", "severity": "fatal"}, "'error' or 'warn'"),
    ],
)
def test_invalid_check_configs_are_rejected(
    model: type[CheckConfig], data: dict[str, object], needle: str
) -> None:
    with pytest.raises(ValidationError, match=needle):
        model.model_validate(data)


def test_every_check_field_has_a_description() -> None:
    undocumented = [
        f"{model.__name__}.{name}"
        for model in vocabulary.CHECK_CONFIGS
        for name, field in model.model_fields.items()
        if not field.description
    ]
    assert undocumented == []


# --- every check kind in one statement -----------------------------------------------------

EVERY_KIND_TABLE = {
    "id": [1, 2, 3, 4, 5, 6],
    "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    "status": ["a", "a", "b", "b", "a", None],
    "nothing": pa.array([None] * 6, pa.string()),
    "day": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", None],
    "doc": ['{"a": 1}', "[1]", "2", '"x"', "null", None],
    "ts": [datetime(2024, 1, 1, h) for h in range(6)],
    "lo": [0, 1, 2, 3, 4, 5],
    "parent": [1, 1, 2, 2, 3, None],
}
NOW = datetime(2024, 1, 1, 6, tzinfo=UTC)


@pytest.fixture
def every_kind_engine() -> Iterator[DuckDBEngine]:
    eng = DuckDBEngine()
    eng.register_arrow("everything", pa.table(EVERY_KIND_TABLE))
    eng.register_arrow("parents", pa.table({"id": [1, 2, 3, 4, 5, 6]}))
    yield eng
    eng.close()


def every_kind_of_check() -> list[CheckConfig]:
    """One passing check of each built-in kind, old and new."""
    names = list(EVERY_KIND_TABLE)
    return [
        NotNullConfig(column="id"),
        BetweenConfig(column="price", min_value=0, max_value=10),
        InSetConfig(column="status", value_set=["a", "b"]),
        UniqueConfig(column="id"),
        RegexConfig(column="status", regex="[ab]"),
        RowCountBetweenConfig(min_value=6, max_value=6),
        CompletenessConfig(column="price", min=1.0),
        vocabulary.IsNullConfig(column="nothing"),
        vocabulary.NotInSetConfig(column="status", value_set=["z"]),
        vocabulary.LengthBetweenConfig(column="status", max_value=1),
        vocabulary.NotRegexConfig(column="status", regex="z+"),
        vocabulary.StrftimeFormatConfig(column="day", strftime_format="%Y-%m-%d"),
        vocabulary.JsonParseableConfig(column="doc"),
        vocabulary.CompoundUniqueConfig(column_list=["id", "status"]),
        vocabulary.PairGreaterConfig(column_A="id", column_B="lo"),
        vocabulary.PairEqualConfig(column_A="id", column_B="id"),
        vocabulary.MulticolumnSumConfig(column_list=["id", "lo"], sum_total=0, mostly=0.0),
        vocabulary.SqlPredicateConfig(name="id above lo", predicate="id > lo"),
        vocabulary.MeanBetweenConfig(column="price", min_value=3.5, max_value=3.5),
        vocabulary.MedianBetweenConfig(column="price", max_value=10),
        vocabulary.StdevBetweenConfig(column="price", max_value=10),
        vocabulary.MinBetweenConfig(column="price", min_value=1),
        vocabulary.MaxBetweenConfig(column="price", max_value=6),
        vocabulary.SumBetweenConfig(column="price", min_value=21, max_value=21),
        vocabulary.DistinctCountBetweenConfig(column="status", min_value=2, max_value=2),
        vocabulary.UniqueProportionBetweenConfig(column="id", min_value=1),
        vocabulary.ColumnsMatchSetConfig(column_set=names),
        vocabulary.ColumnsMatchListConfig(column_list=names),
        vocabulary.SqlMetricConfig(name="rows", expression="count(*)", min_value=6),
        vocabulary.DateutilParseableConfig(column="day"),
        vocabulary.IncreasingConfig(column="id", strictly=True),
        vocabulary.DecreasingConfig(column="lo", order_by="ts", mostly=0.0),
        vocabulary.QuantilesBetweenConfig(
            column="price",
            quantile_ranges={"quantiles": [0.0, 1.0], "value_ranges": [[1, 1], [6, None]]},
        ),
        vocabulary.MostCommonValueInSetConfig(column="status", value_set=["a"]),
        extra.RowCountEqualOtherTableConfig(other_table_name="parents"),
        extra.ValuesExistInConfig(column="parent", to_table="parents", to_column="id"),
        extra.OfTypeConfig(column="id", type_="int64"),
        extra.InTypeListConfig(column="price", type_list=["float64", "DECIMAL"]),
        extra.FreshnessConfig(column="ts", max_age="1h"),
    ]


def test_the_every_kind_suite_covers_every_built_in_check() -> None:
    assert {c.key for c in every_kind_of_check()} == {c.key for c in table.IMPLEMENTATIONS}


def test_every_check_kind_together_sends_exactly_one_statement(
    every_kind_engine: DuckDBEngine,
) -> None:
    env = CheckEnv(tables={"parents": "parents"}, logical_time=NOW)
    before = every_kind_engine.statements
    results = evaluate_checks(every_kind_engine, "everything", every_kind_of_check(), env)
    assert every_kind_engine.statements - before == 1
    assert [(r.check, r.status) for r in results if r.status != "passed"] == []


def test_a_bad_regex_in_the_every_kind_suite_errors_only_itself(
    every_kind_engine: DuckDBEngine,
) -> None:
    env = CheckEnv(tables={"parents": "parents"}, logical_time=NOW)
    suite = every_kind_of_check()
    good = evaluate_checks(every_kind_engine, "everything", suite, env)
    bad = RegexConfig(column="status", regex="([ab]")
    mixed = evaluate_checks(every_kind_engine, "everything", [*suite[:5], bad, *suite[5:]], env)
    assert mixed[5].status == "error"
    assert mixed[5].error is not None and "missing )" in mixed[5].error
    assert mixed[:5] + mixed[6:] == good
