"""The checks added to the vocabulary: dates, order, quantiles, modes, other tables, types,
freshness and references."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from sluiceway.checks import extra, table, vocabulary
from sluiceway.checks.base import CheckEnv
from sluiceway.checks.extra import (
    FreshnessConfig,
    InTypeListConfig,
    OfTypeConfig,
    RowCountEqualOtherTableConfig,
    ValuesExistInConfig,
    parse_duration,
)
from sluiceway.checks.table import CheckResult, evaluate_checks, sample_unexpected
from sluiceway.checks.vocabulary import (
    DateutilParseableConfig,
    DecreasingConfig,
    IncreasingConfig,
    MostCommonValueInSetConfig,
    QuantilesBetweenConfig,
)
from sluiceway.cli import main
from sluiceway.core import registry
from sluiceway.core.loader import load_checks, pipeline_from_dict
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.core.spec import CheckConfig
from sluiceway.engines.duckdb import DuckDBEngine
from sluiceway.errors import SpecError


@pytest.fixture
def duck() -> Iterator[DuckDBEngine]:
    eng = DuckDBEngine()
    yield eng
    eng.close()


def run_on(
    engine: DuckDBEngine,
    columns: dict[str, Any],
    check: CheckConfig,
    env: CheckEnv | None = None,
) -> CheckResult:
    name = engine.new_name("t")
    engine.register_arrow(name, pa.table(columns))
    (result,) = evaluate_checks(engine, name, [check], env)
    return result


def samples(engine: DuckDBEngine, name: str, check: CheckConfig, env: CheckEnv) -> list[str]:
    results = evaluate_checks(engine, name, [check], env)
    (sample,) = sample_unexpected(engine, name, [check], results, env)
    return sample


# --- dateutil_parseable --------------------------------------------------------------------

PARSEABLE = [
    "2024-01-05",
    "2024/01/05",
    "05.01.2024",
    "5.1.2024",
    "Jan 5 2024",
    "jan 5 2024",
    "Jan 5, 2024",
    "January 5, 2024",
    "5 January 2024",
    "2024-01-05T10:00:00Z",
    "2024-01-05 10:00:00.123456+02:00",
    "2024-01-05T10:00",
    "5 Jan 2024 10:00",
    "05-Jan-2024",
    "01/05/2024",
    "31/12/2024 23:59",
    "20240105",
    "Fri, 05 Jan 2024 10:00:00 +0000",
    "Fri Jan  5 10:00:00 2024",
]
NOT_PARSEABLE = [
    "nope",
    "2024-13-01",
    "2024-02-30",
    "31.02.2024",
    "Jan 5 2024 junk",
    "10:00",
    "12345678",
    "2024",
    "Sept 5",
]


@pytest.mark.parametrize("text", PARSEABLE)
def test_dateutil_parseable_accepts_the_documented_forms(duck: DuckDBEngine, text: str) -> None:
    result = run_on(duck, {"d": [text]}, DateutilParseableConfig(column="d"))
    assert (result.status, result.unexpected_count) == ("passed", 0)


@pytest.mark.parametrize("text", NOT_PARSEABLE)
def test_dateutil_parseable_rejects_what_is_not_a_date(duck: DuckDBEngine, text: str) -> None:
    result = run_on(duck, {"d": [text]}, DateutilParseableConfig(column="d"))
    assert (result.status, result.unexpected_count) == ("failed", 1)


def test_dateutil_parseable_leaves_nulls_out_and_honours_mostly(duck: DuckDBEngine) -> None:
    column = {"d": ["2024-01-05", None, "nope", "Jan 5 2024", None]}
    strict = run_on(duck, column, DateutilParseableConfig(column="d"))
    lenient = run_on(duck, column, DateutilParseableConfig(column="d", mostly=0.6))
    assert (strict.status, strict.unexpected_count) == ("failed", 1)
    assert strict.unexpected_percent == pytest.approx(100 / 3)
    assert lenient.status == "passed"


def test_dateutil_parseable_samples_the_values_that_did_not_parse(duck: DuckDBEngine) -> None:
    duck.register_arrow("t", pa.table({"d": ["2024-01-05", "nope", "later", None]}))
    assert samples(duck, "t", DateutilParseableConfig(column="d"), CheckEnv()) == ["later", "nope"]


# --- increasing / decreasing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "unexpected"),
    [
        (IncreasingConfig(column="v"), 1),  # 2 after 3
        (IncreasingConfig(column="v", strictly=True), 2),  # and the second 2
        (DecreasingConfig(column="v"), 2),  # 3 after 1 (the NULL between is skipped), 5 after 2
        (DecreasingConfig(column="v", strictly=True), 3),  # and the second 2
    ],
    ids=["increasing", "strictly increasing", "decreasing", "strictly decreasing"],
)
def test_a_value_is_judged_against_the_previous_non_null_value(
    duck: DuckDBEngine, check: CheckConfig, unexpected: int
) -> None:
    result = run_on(duck, {"v": [1, None, 3, 2, 2, 5]}, check)
    assert (result.status, result.unexpected_count) == ("failed", unexpected)
    assert result.unexpected_percent == pytest.approx(unexpected / 5 * 100)


def test_increasing_passes_on_a_sorted_column_with_nulls(duck: DuckDBEngine) -> None:
    result = run_on(duck, {"v": [None, 1, 1, None, 4, 9]}, IncreasingConfig(column="v"))
    assert (result.status, result.unexpected_count, result.observed_value) == ("passed", 0, 1.0)


def test_order_by_orders_the_rows_before_judging(duck: DuckDBEngine) -> None:
    columns = {"v": [30, 10, 20, 40], "at": [3, 1, 2, None]}
    ordered = run_on(duck, columns, IncreasingConfig(column="v", order_by="at"))
    table_order = run_on(duck, columns, IncreasingConfig(column="v"))
    assert (ordered.status, ordered.unexpected_count) == ("passed", 0)  # NULL 'at' comes last
    assert (table_order.status, table_order.unexpected_count) == ("failed", 1)
    assert "ordered by 'at'" in ordered.message


def test_ties_in_order_by_keep_table_order(duck: DuckDBEngine) -> None:
    columns = {"v": [1, 2, 3, 0], "day": [1, 1, 1, 0]}
    result = run_on(duck, columns, IncreasingConfig(column="v", order_by="day"))
    assert (result.status, result.unexpected_count) == ("passed", 0)


def test_increasing_samples_the_values_that_went_back(duck: DuckDBEngine) -> None:
    duck.register_arrow("t", pa.table({"v": [1, 5, 2, 6, 3, None]}))
    assert samples(duck, "t", IncreasingConfig(column="v"), CheckEnv()) == ["2", "3"]


BIG = 300_000


def big_column(disorder_at: int | None = None) -> pa.Table:
    """0..BIG-1 in several record batches; one value moved back at `disorder_at`."""
    values = list(range(BIG))
    if disorder_at is not None:
        values[disorder_at] = -1
    batches = [
        pa.record_batch([pa.array(values[i : i + 50_000])], ["v"]) for i in range(0, BIG, 50_000)
    ]
    return pa.Table.from_batches(batches)


@pytest.mark.parametrize("register", ["arrow view", "temp table"])
def test_table_order_holds_over_a_parallel_scan_of_300k_rows(register: str) -> None:
    eng = DuckDBEngine(threads=8)
    load = eng.register_view if register == "arrow view" else eng.register_arrow
    load("sorted", big_column())
    load("one_back", big_column(disorder_at=200_000))
    checks: list[CheckConfig] = [IncreasingConfig(column="v", strictly=True)]
    for _ in range(3):  # the same answer every time, not by luck of the scheduler
        (sorted_result,) = evaluate_checks(eng, "sorted", checks)
        (one_back,) = evaluate_checks(eng, "one_back", checks)
        assert (sorted_result.status, sorted_result.unexpected_count) == ("passed", 0)
        assert (one_back.status, one_back.unexpected_count) == ("failed", 1)
    (decreasing,) = evaluate_checks(eng, "sorted", [DecreasingConfig(column="v")])
    assert decreasing.unexpected_count == BIG - 1
    eng.close()


def test_window_checks_and_aggregates_share_one_statement(duck: DuckDBEngine) -> None:
    duck.register_arrow("t", pa.table({"v": [1, 2, 3], "w": [3, 2, 1]}))
    checks: list[CheckConfig] = [
        IncreasingConfig(column="v"),
        DecreasingConfig(column="w"),
        IncreasingConfig(column="w", order_by="v", mostly=0.0),
        vocabulary.NotNullConfig(column="v"),
    ]
    before = duck.statements
    results = evaluate_checks(duck, "t", checks)
    assert duck.statements - before == 1
    assert [r.unexpected_count for r in results] == [0, 0, 2, 0]


# --- quantiles_between ---------------------------------------------------------------------

HUNDRED = {"v": [*range(1, 101), None]}


def quantiles(ranges: list[list[float | None]], qs: list[float] | None = None) -> CheckConfig:
    return QuantilesBetweenConfig(
        column="v",
        quantile_ranges={"quantiles": qs or [0.0, 0.5, 1.0], "value_ranges": ranges},
    )


def test_quantiles_between_passes_when_each_quantile_is_in_its_range(duck: DuckDBEngine) -> None:
    result = run_on(duck, HUNDRED, quantiles([[1, 1], [45, 55], [100, None]]))
    assert (result.status, result.unexpected_count) == ("passed", 0)


def test_quantiles_between_names_each_quantile_out_of_range_but_not_its_value(
    duck: DuckDBEngine,
) -> None:
    result = run_on(duck, HUNDRED, quantiles([[2, None], [None, 40], [None, None]]))
    assert (result.status, result.unexpected_count) == ("failed", 2)
    assert "the 0 quantile was below the minimum, the 0.5 quantile was above the maximum" in (
        result.message
    )
    assert "50" not in result.message


def test_quantiles_are_discrete_values_of_the_column(duck: DuckDBEngine) -> None:
    exact = run_on(duck, {"v": [1, 2, 3, 4]}, quantiles([[2, 2]], [0.5]))
    assert exact.status == "passed"  # quantile_disc: 2, not the interpolated 2.5


def test_quantiles_of_an_empty_column_fail_with_a_clear_message(duck: DuckDBEngine) -> None:
    result = run_on(duck, {"v": pa.array([None, None], pa.int64())}, quantiles([[0, 1]], [0.5]))
    assert (result.status, result.observed_value) == ("failed", None)
    assert "there was no value to judge" in result.message


# --- most_common_value_in_set --------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "value_set", "ties_okay", "status"),
    [
        (["a", "a", "b", None, None, None], ["a"], False, "passed"),
        (["a", "a", "b"], ["b"], False, "failed"),
        (["a", "a", "b", "b"], ["a"], True, "passed"),
        (["a", "a", "b", "b"], ["a"], False, "failed"),
        (["a", "a", "b", "b"], ["c"], True, "failed"),
        (["a", "a", "b", "b"], ["a", "b"], False, "failed"),
    ],
    ids=["single mode", "mode outside", "tie okay", "tie not okay", "tie outside", "tie both in"],
)
def test_most_common_value_follows_great_expectations_on_ties(
    duck: DuckDBEngine, values: list[str | None], value_set: list[str], ties_okay: bool, status: str
) -> None:
    check = MostCommonValueInSetConfig(column="s", value_set=value_set, ties_okay=ties_okay)
    assert run_on(duck, {"s": values}, check).status == status


def test_most_common_value_reports_counts_not_values(duck: DuckDBEngine) -> None:
    check = MostCommonValueInSetConfig(column="s", value_set=["zz"], ties_okay=True)
    result = run_on(duck, {"s": ["secret", "secret", "other", "other", "x"]}, check)
    assert result.status == "failed"
    assert result.unexpected_count == 2
    assert "2 values tied for most common (2 rows each), 0 of them in the set" in result.message
    assert "secret" not in repr(result.to_dict())


def test_most_common_value_of_no_values_fails(duck: DuckDBEngine) -> None:
    check = MostCommonValueInSetConfig(column="s", value_set=["a"])
    result = run_on(duck, {"s": pa.array([None], pa.string())}, check)
    assert result.status == "failed" and "no value to judge" in result.message


# --- other tables --------------------------------------------------------------------------

ORDERS = {"customer": [1, 2, 2, 9, None]}
CUSTOMERS = {"id": [1, 2, 3, None], "customer": [1, 2, 3, 4]}


@pytest.fixture
def shop(duck: DuckDBEngine) -> DuckDBEngine:
    duck.register_arrow("orders", pa.table(ORDERS))
    duck.register_arrow("sw_customers_1", pa.table(CUSTOMERS))
    return duck


SHOP = CheckEnv(tables={"customers": "sw_customers_1"})


def test_row_count_equal_other_table_compares_with_a_pipeline_source(shop: DuckDBEngine) -> None:
    (result,) = evaluate_checks(
        shop, "orders", [RowCountEqualOtherTableConfig(other_table_name="customers")], SHOP
    )
    assert (result.status, result.observed_value, result.unexpected_count) == ("failed", 5, 1)
    assert result.message == "Expected as many rows as table 'customers' (4); found 5."


def test_an_unknown_other_table_errors_and_lists_the_known_ones(shop: DuckDBEngine) -> None:
    checks: list[CheckConfig] = [
        RowCountEqualOtherTableConfig(other_table_name="customer"),
        vocabulary.NotNullConfig(column="customer", mostly=0.5),
    ]
    before = shop.statements
    unknown, other = evaluate_checks(shop, "orders", checks, SHOP)
    assert shop.statements - before == 1  # the others still run, fused
    assert unknown.status == "error"
    assert unknown.error is not None
    assert "unknown table 'customer'. Did you mean 'customers'?" in unknown.error
    assert "known: 'customers'" in unknown.error and ".parquet" in unknown.error
    assert other.status == "passed"


def write_customers(folder: Path, suffix: str) -> None:
    data = pa.table(CUSTOMERS)
    path = folder / f"customers{suffix}"
    if suffix == ".parquet":
        pq.write_table(data, path)
    elif suffix == ".csv":
        path.write_text("id,customer\n1,1\n2,2\n3,3\n,4\n")
    else:
        path.write_text("\n".join(json.dumps(row) for row in data.to_pylist()))


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".json"])
def test_the_other_table_can_be_a_file_relative_to_the_spec(
    shop: DuckDBEngine, tmp_path: Path, suffix: str
) -> None:
    write_customers(tmp_path, suffix)
    env = CheckEnv(base_dir=tmp_path)
    checks: list[CheckConfig] = [
        RowCountEqualOtherTableConfig(other_table_name=f"customers{suffix}"),
        ValuesExistInConfig(column="customer", to_table=f"customers{suffix}", to_column="id"),
    ]
    before = shop.statements
    count, exist = evaluate_checks(shop, "orders", checks, env)
    assert shop.statements - before == 1
    assert (count.status, count.observed_value) == ("failed", 5)
    assert "(4)" in count.message
    assert (exist.status, exist.unexpected_count) == ("failed", 1)


def test_a_missing_file_errors_with_its_path(shop: DuckDBEngine, tmp_path: Path) -> None:
    check = RowCountEqualOtherTableConfig(other_table_name="gone.parquet")
    (result,) = evaluate_checks(shop, "orders", [check], CheckEnv(base_dir=tmp_path))
    assert result.status == "error"
    assert f"file '{tmp_path / 'gone.parquet'}' not found" in (result.error or "")


def test_values_exist_in_counts_values_missing_from_the_other_table(shop: DuckDBEngine) -> None:
    check = ValuesExistInConfig(column="customer", to_table="customers", to_column="id")
    (result,) = evaluate_checks(shop, "orders", [check], SHOP)
    # 9 is missing; the NULL order is not judged; the NULL id does not hide the miss.
    assert (result.status, result.unexpected_count) == ("failed", 1)
    assert result.unexpected_percent == pytest.approx(25.0)
    assert samples(shop, "orders", check, SHOP) == ["9"]


def test_values_exist_in_defaults_to_the_same_column_and_honours_mostly(
    shop: DuckDBEngine,
) -> None:
    same = ValuesExistInConfig(column="customer", to_table="customers")
    lenient = ValuesExistInConfig(column="customer", to_table="customers", mostly=0.75)
    strict, loose = evaluate_checks(shop, "orders", [same, lenient], SHOP)
    assert (strict.status, strict.unexpected_count) == ("failed", 1)
    assert loose.status == "passed"


def test_values_exist_in_an_unknown_table_errors(shop: DuckDBEngine) -> None:
    check = ValuesExistInConfig(column="customer", to_table="clients")
    (result,) = evaluate_checks(shop, "orders", [check], SHOP)
    assert result.status == "error" and "unknown table 'clients'" in (result.error or "")


# --- of_type / in_type_list ----------------------------------------------------------------

TYPED = {
    "i32": pa.array([1], pa.int32()),
    "i64": pa.array([1], pa.int64()),
    "f64": pa.array([1.5], pa.float64()),
    "dec": pa.array([1], pa.decimal128(18, 3)),
    "s": pa.array(["x"], pa.string()),
    "b": pa.array([True], pa.bool_()),
    "d": pa.array([date(2024, 1, 1)], pa.date32()),
    "ts": pa.array([datetime(2024, 1, 1)], pa.timestamp("us")),
    "tstz": pa.array([datetime(2024, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
    "l": pa.array([[1]], pa.list_(pa.int64())),
}


@pytest.mark.parametrize(
    ("column", "spelling"),
    [
        ("i32", "int64"),
        ("i32", "INTEGER"),
        ("i64", "int"),
        ("i64", "BIGINT"),
        ("i64", "LongType"),
        ("f64", "float64"),
        ("f64", "double"),
        ("dec", "decimal"),
        ("dec", "DECIMAL(10,2)"),
        ("s", "str"),
        ("s", "string"),
        ("s", "VARCHAR"),
        ("b", "bool"),
        ("b", "boolean"),
        ("d", "date"),
        ("ts", "datetime64[ns]"),
        ("ts", "timestamp"),
        ("tstz", "datetime64[ns, UTC]"),
        ("tstz", "TIMESTAMP WITH TIME ZONE"),
        ("l", "list"),
    ],
)
def test_of_type_matches_the_type_family_of_each_spelling(
    duck: DuckDBEngine, column: str, spelling: str
) -> None:
    result = run_on(duck, TYPED, OfTypeConfig(column=column, type_=spelling))
    assert result.status == "passed", result.message


@pytest.mark.parametrize(
    ("column", "spelling", "actual"),
    [
        ("s", "int64", "VARCHAR (a text type)"),
        ("f64", "int", "DOUBLE (a floating-point type)"),
        ("ts", "timestamptz", "TIMESTAMP (a timestamp without time zone)"),
        ("d", "datetime64[ns]", "DATE (a date type)"),
    ],
)
def test_of_type_fails_on_another_family_and_names_the_actual_type(
    duck: DuckDBEngine, column: str, spelling: str, actual: str
) -> None:
    result = run_on(duck, TYPED, OfTypeConfig(column=column, type_=spelling))
    assert (result.status, result.unexpected_count, result.observed_value) == ("failed", 1, None)
    assert result.message.endswith(f"it is {actual}.")


def test_in_type_list_passes_when_any_listed_family_matches(duck: DuckDBEngine) -> None:
    numeric = InTypeListConfig(column="dec", type_list=["int64", "float64", "DECIMAL"])
    text_only = InTypeListConfig(column="dec", type_list=["str", "bool"])
    good, bad = (run_on(duck, TYPED, c) for c in (numeric, text_only))
    assert (good.status, bad.status) == ("passed", "failed")
    assert "str (a text type) or bool (a boolean type)" in bad.message


def test_of_type_judges_an_empty_table_by_its_column_type(duck: DuckDBEngine) -> None:
    result = run_on(duck, {"v": pa.array([], pa.int16())}, OfTypeConfig(column="v", type_="int"))
    assert result.status == "passed"


# --- freshness -----------------------------------------------------------------------------

AS_OF = datetime(2024, 1, 2, 12, 0, tzinfo=UTC)
AT_NOON = CheckEnv(logical_time=AS_OF)


@pytest.mark.parametrize(
    ("values", "age"),
    [
        (pa.array([datetime(2024, 1, 2, 9), None], pa.timestamp("us")), 3 * 3600),
        (pa.array([datetime(2024, 1, 2, 9, tzinfo=UTC)], pa.timestamp("us", "UTC")), 3 * 3600),
        (pa.array([datetime(2024, 1, 2, 11, 30)], pa.timestamp("ns")), 1800),
        (pa.array([date(2024, 1, 1), date(2024, 1, 2)], pa.date32()), 12 * 3600),
    ],
    ids=["timestamp is UTC", "timestamptz", "nanoseconds", "date is its midnight"],
)
def test_freshness_observes_the_age_of_the_newest_value_in_seconds(
    duck: DuckDBEngine, values: pa.Array, age: int
) -> None:
    fresh = run_on(duck, {"at": values}, FreshnessConfig(column="at", max_age="1d"), AT_NOON)
    stale = run_on(duck, {"at": values}, FreshnessConfig(column="at", max_age="10m"), AT_NOON)
    assert (fresh.status, fresh.observed_value) == ("passed", pytest.approx(age))
    assert stale.status == "failed"


def test_freshness_at_the_limit_passes_and_its_message_says_the_age(duck: DuckDBEngine) -> None:
    values = {"at": [datetime(2024, 1, 1, 10, 30)]}
    result = run_on(duck, values, FreshnessConfig(column="at", max_age="1d1h30m"), AT_NOON)
    assert result.status == "passed"
    assert result.message == (
        "Expected the newest value of column 'at' to be at most 1d1h30m old at "
        "2024-01-02T12:00:00+00:00; it was 1d1h30m old."
    )


@pytest.mark.parametrize(
    "values",
    [pa.array([], pa.timestamp("us")), pa.array([None, None], pa.timestamp("us"))],
    ids=["empty", "all NULL"],
)
def test_freshness_of_no_value_fails_clearly(duck: DuckDBEngine, values: pa.Array) -> None:
    result = run_on(duck, {"at": values}, FreshnessConfig(column="at", max_age="1h"), AT_NOON)
    assert (result.status, result.observed_value) == ("failed", None)
    assert result.message.endswith("there was no value to judge.")


def test_freshness_on_a_text_column_errors_with_what_to_do(duck: DuckDBEngine) -> None:
    result = run_on(
        duck, {"at": ["2024-01-02 11:00"]}, FreshnessConfig(column="at", max_age="1h"), AT_NOON
    )
    assert result.status == "error"
    assert "column 'at' is VARCHAR; freshness needs a DATE or TIMESTAMP column" in (
        result.error or ""
    )


def test_a_value_in_the_future_is_fresh(duck: DuckDBEngine) -> None:
    values = {"at": [datetime(2024, 1, 2, 13)]}
    result = run_on(duck, values, FreshnessConfig(column="at", max_age="1h"), AT_NOON)
    assert (result.status, result.observed_value) == ("passed", pytest.approx(-3600))
    assert "it was 1h in the future" in result.message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("1d12h", 129600),
        ("1w", 604800),
        ("1.5h", 5400),
        ("PT2H", 7200),
        ("P1DT12H", 129600),
        ("pt30m", 1800),
        ("PT0.5S", 0.5),
    ],
)
def test_max_age_reads_short_and_iso_8601_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "2 hours", "1y", "P1M", "PT", "0s", "-1h", "h"])
def test_a_bad_max_age_is_rejected_with_examples(text: str) -> None:
    with pytest.raises(ValidationError, match=r"is not a positive duration: write e\.g\. '90s'"):
        FreshnessConfig(column="at", max_age=text)


# --- configs, registry, listing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "data", "needle"),
    [
        (
            QuantilesBetweenConfig,
            {"column": "v", "quantile_ranges": {"quantiles": [0.5], "value_ranges": []}},
            "at least 1 item",
        ),
        (
            QuantilesBetweenConfig,
            {"column": "v", "quantile_ranges": {"quantiles": [0.5, 0.9], "value_ranges": [[1, 2]]}},
            "value_ranges has 1 ranges for 2 quantiles",
        ),
        (
            QuantilesBetweenConfig,
            {"column": "v", "quantile_ranges": {"quantiles": [1.5], "value_ranges": [[1, 2]]}},
            "quantiles must lie between 0 and 1",
        ),
        (
            QuantilesBetweenConfig,
            {"column": "v", "quantile_ranges": {"quantiles": [0.5], "value_ranges": [[3, 2]]}},
            "min greater than max",
        ),
        (
            QuantilesBetweenConfig,
            {"column": "v", "quantile_ranges": {"quantiles": [0.5], "value_ranges": [[1]]}},
            r"each value range is \[min, max\]",
        ),
        (
            QuantilesBetweenConfig,
            {
                "column": "v",
                "mostly": 0.5,
                "quantile_ranges": {"quantiles": [0.5], "value_ranges": [[1, 2]]},
            },
            "takes no 'mostly'",
        ),
        (MostCommonValueInSetConfig, {"column": "v", "value_set": []}, "at least 1 item"),
        (OfTypeConfig, {"column": "v", "type_": "intger"}, "Did you mean 'integer'?"),
        (OfTypeConfig, {"column": "v", "type_": "int", "mostly": 0.9}, "takes no 'mostly'"),
        (InTypeListConfig, {"column": "v", "type_list": ["int", "strg"]}, "unknown type 'strg'"),
        (RowCountEqualOtherTableConfig, {"other_table_name": "x", "mostly": 0.5}, "no 'mostly'"),
        (FreshnessConfig, {"column": "v", "max_age": "1h", "mostly": 0.5}, "no 'mostly'"),
        (IncreasingConfig, {"column": "v", "order_by": ""}, "at least 1 character"),
        (ValuesExistInConfig, {"column": "v"}, "to_table"),
    ],
)
def test_invalid_configs_of_the_added_checks_are_rejected(
    model: type[CheckConfig], data: dict[str, object], needle: str
) -> None:
    with pytest.raises(ValidationError, match=needle):
        model.model_validate(data)


def test_every_field_of_the_added_checks_has_a_description() -> None:
    models = [*extra.CHECK_CONFIGS, vocabulary.QuantileRanges]
    undocumented = [
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if not field.description
    ]
    assert undocumented == []


ADDED = {
    "dateutil_parseable": ("expect_column_values_to_be_dateutil_parseable",),
    "increasing": ("expect_column_values_to_be_increasing",),
    "decreasing": ("expect_column_values_to_be_decreasing",),
    "quantiles_between": ("expect_column_quantile_values_to_be_between",),
    "most_common_value_in_set": ("expect_column_most_common_value_to_be_in_set",),
    "row_count_equal_other_table": ("expect_table_row_count_to_equal_other_table",),
    "of_type": ("expect_column_values_to_be_of_type",),
    "in_type_list": ("expect_column_values_to_be_in_type_list",),
    "freshness": (),
    "values_exist_in": ("references",),
}


@pytest.mark.parametrize(("key", "aliases"), ADDED.items())
def test_the_added_checks_are_registered_under_their_names(
    key: str, aliases: tuple[str, ...]
) -> None:
    plugin = registry.lookup("check", key)
    assert plugin is not None and plugin.aliases == aliases
    assert all(registry.lookup("check", alias) is plugin for alias in aliases)
    assert plugin.impl is table.IMPLEMENTATIONS[plugin.config]


def test_a_great_expectations_suite_of_the_added_checks_loads_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "checks.yaml"
    path.write_text(
        "version: 1\n"
        "checks:\n"
        "  - expect_column_values_to_be_of_type: {column: id, type_: int64}\n"
        "  - expect_column_values_to_be_in_type_list: {column: id, type_list: [int, str]}\n"
        "  - expect_column_values_to_be_increasing: {column: id, strictly: true, mostly: 0.9}\n"
        "  - expect_column_quantile_values_to_be_between:\n"
        "      column: id\n"
        "      quantile_ranges: {quantiles: [0.5], value_ranges: [[0, null]]}\n"
        "  - expect_column_most_common_value_to_be_in_set: {column: s, value_set: [a], ties_okay: true}\n"
        "  - expect_table_row_count_to_equal_other_table: {other_table_name: customers}\n"
        "  - expect_column_values_to_be_dateutil_parseable: day\n"
        "  - references: {column: customer, to_table: customers, to_column: id}\n"
        "  - freshness: {column: at, max_age: PT2H, severity: warn}\n"
    )
    checks = load_checks(path)
    assert [c.key for c in checks] == [
        "of_type",
        "in_type_list",
        "increasing",
        "quantiles_between",
        "most_common_value_in_set",
        "row_count_equal_other_table",
        "dateutil_parseable",
        "values_exist_in",
        "freshness",
    ]
    assert checks[0] == OfTypeConfig(column="id", type_="int64")
    assert checks[8].severity == "warn"


def test_a_bad_type_in_yaml_is_reported_with_its_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "checks.yaml"
    path.write_text(
        "version: 1\nchecks:\n  - not_null: id\n  - of_type: {column: id, type_: intt64}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_checks(path)
    text = str(caught.value)
    assert "checks[1]" in text and "line 4" in text and "unknown type 'intt64'" in text


def test_checks_list_shows_the_added_checks_with_their_arguments() -> None:
    result = CliRunner().invoke(main, ["checks", "list", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {r["check"]: r for r in json.loads(result.output)}
    assert set(ADDED) <= set(rows)
    assert set(rows["freshness"]["arguments"]) >= {"column", "max_age"}
    assert set(rows["values_exist_in"]["arguments"]) >= {"column", "to_table", "to_column"}
    assert rows["of_type"]["arguments"]["type_"]
    assert rows["quantiles_between"]["aliases"] == ["expect_column_quantile_values_to_be_between"]


# --- PII -----------------------------------------------------------------------------------


def test_results_of_the_added_checks_never_carry_row_values(shop: DuckDBEngine) -> None:
    shop.register_arrow(
        "people",
        pa.table(
            {
                "email": ["bob@example.com", "alice@example.com", "bob@example.com", "nope", None],
                "seen": [datetime(2024, 1, 2, 9, 17, 23)] * 5,
                "customer": [1, 2, 9, 9, 1],
            }
        ),
    )
    checks: list[CheckConfig] = [
        DateutilParseableConfig(column="email"),
        IncreasingConfig(column="email"),
        MostCommonValueInSetConfig(column="email", value_set=["x"]),
        QuantilesBetweenConfig(
            column="customer",
            quantile_ranges={"quantiles": [0.5], "value_ranges": [[100, None]]},
        ),
        OfTypeConfig(column="email", type_="int"),
        FreshnessConfig(column="seen", max_age="1m"),
        ValuesExistInConfig(column="customer", to_table="customers"),
        RowCountEqualOtherTableConfig(other_table_name="customers"),
    ]
    env = CheckEnv(tables={"customers": "sw_customers_1"}, logical_time=AS_OF)
    results = evaluate_checks(shop, "people", checks, env)
    assert [r.status for r in results] == ["failed"] * len(checks)
    text = repr([r.to_dict() for r in results])
    for value in ("alice", "bob@", "nope", "09:17:23", "'9'"):
        assert value not in text


# --- in a pipeline run ---------------------------------------------------------------------


def test_a_pipeline_checks_references_into_its_other_source(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "orders.csv").write_text(
        "order_id,customer,placed\n1,c1,2024-01-01T10:00:00\n2,c2,2024-01-01T11:00:00\n"
        "3,c9,2024-01-01T12:00:00\n"
    )
    (tmp_path / "customers.csv").write_text("id\nc1\nc2\nc3\n")
    spec = {
        "version": 1,
        "pipeline": "orders",
        "sources": {
            "orders": {"type": "files", "path": "in/"},
            "customers": {"type": "files", "path": "customers.csv"},
        },
        "steps": [{"sql": "SELECT * REPLACE (CAST(placed AS TIMESTAMP) AS placed) FROM input"}],
        "checks": [
            {"references": {"column": "customer", "to_table": "customers", "to_column": "id"}},
            {"expect_table_row_count_to_equal_other_table": {"other_table_name": "customers"}},
            {"increasing": {"column": "placed", "strictly": True}},
            {"freshness": {"column": "placed", "max_age": "1d"}},
        ],
        "sinks": [{"type": "delta", "path": "lake/orders", "mode": "append"}],
    }
    options = RunOptions(
        logical_date=date(2024, 1, 1), base_dir=tmp_path, state_dir=tmp_path / ".sluice"
    )
    result = run_pipeline(pipeline_from_dict(spec), options)
    outcomes = {c.check: (c.status, c.observed_value) for c in result.checks}
    assert outcomes == {
        "values_exist_in": ("failed", pytest.approx(2 / 3)),  # 'c9' is no customer
        "row_count_equal_other_table": ("passed", 3),
        "increasing": ("passed", 1.0),
        "freshness": ("passed", pytest.approx(12 * 3600)),  # 12:00 to the end of the day
    }
    assert result.status == "failed" and "values_exist_in" in (result.error or "")


def test_values_exist_in_names_the_other_tables_columns_when_to_column_is_not_there(
    shop: DuckDBEngine,
) -> None:
    check = ValuesExistInConfig(column="customer", to_table="customers", to_column="idd")
    (result,) = evaluate_checks(shop, "orders", [check], SHOP)
    assert result.status == "error"
    assert "column 'idd' not found in table 'customers'. Did you mean 'id'?" in result.message
    assert "Set to_column" in (result.error or "")


@pytest.mark.parametrize(
    "text", ["Fri, 31 Feb 2024 10:00:00 +0000", "Tue, 31 Apr 2024 10:00:00 +0200"]
)
def test_dateutil_parseable_rejects_an_impossible_zoned_date(duck: DuckDBEngine, text: str) -> None:
    result = run_on(duck, {"d": [text]}, DateutilParseableConfig(column="d"))
    assert (result.status, result.unexpected_count) == ("failed", 1)
