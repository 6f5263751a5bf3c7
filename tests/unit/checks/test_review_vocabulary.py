"""Review of the table-check vocabulary: Great Expectations semantics, quoting, PII in results.

The first tests fail on the reviewed change (each names its bug); the rest pin tricky
behaviour that already holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from sluiceway.checks.base import CheckEnv
from sluiceway.checks.extra import FreshnessConfig, ValuesExistInConfig
from sluiceway.checks.table import CheckResult, evaluate_checks, sample_unexpected
from sluiceway.checks.vocabulary import (
    BetweenConfig,
    DateutilParseableConfig,
    IncreasingConfig,
    MostCommonValueInSetConfig,
    MulticolumnSumConfig,
    QuantilesBetweenConfig,
    SqlPredicateConfig,
)
from sluiceway.core.routing import route_rows
from sluiceway.core.spec import CheckConfig
from sluiceway.engines.duckdb import DuckDBEngine
from sluiceway.errors import StepError


@pytest.fixture
def duck() -> Iterator[DuckDBEngine]:
    eng = DuckDBEngine()
    yield eng
    eng.close()


def table_of(engine: DuckDBEngine, select: str) -> str:
    name = engine.new_name("t")
    engine.run(f"CREATE TABLE {name} AS {select}")
    return name


def check_on(
    engine: DuckDBEngine, select: str, check: CheckConfig, env: CheckEnv | None = None
) -> CheckResult:
    (result,) = evaluate_checks(engine, table_of(engine, select), [check], env)
    return result


def result_text(result: CheckResult) -> str:
    return json.dumps(result.to_dict(), default=str)


# --- bugs -----------------------------------------------------------------------------------


def test_values_exist_in_reports_error_when_the_other_table_lacks_the_column(duck) -> None:
    # `products` has `id`, not `product_id`: the unqualified subquery column binds to the
    # audited table's own column (a correlated subquery), so every value "exists".
    duck.run("CREATE TABLE products AS SELECT * FROM (VALUES (1), (2)) v(id)")
    env = CheckEnv(tables={"products": "products"})
    check = ValuesExistInConfig(column="product_id", to_table="products")

    result = check_on(duck, "SELECT * FROM (VALUES (1), (99)) v(product_id)", check, env)

    assert result.status == "error"


def test_values_exist_in_never_counts_a_null_as_missing_when_the_column_is_absent_there(
    duck,
) -> None:
    duck.run("CREATE TABLE products AS SELECT * FROM (VALUES (1), (2)) v(id)")
    env = CheckEnv(tables={"products": "products"})
    check = ValuesExistInConfig(column="product_id", to_table="products")

    result = check_on(duck, "SELECT * FROM (VALUES (1), (NULL)) v(product_id)", check, env)

    assert result.status == "error"


def test_dateutil_parseable_rejects_an_impossible_rfc_2822_date(duck) -> None:
    # DuckDB's list form of try_strptime rolls 31 February over into 2 March with %z.
    check = DateutilParseableConfig(column="d")
    select = "SELECT * FROM (VALUES ('Fri, 31 Feb 2024 10:00:00 +0000')) v(d)"

    result = check_on(duck, select, check)

    assert result.status == "failed"
    assert result.unexpected_count == 1


def test_dateutil_parseable_still_accepts_a_real_rfc_2822_date(duck) -> None:
    check = DateutilParseableConfig(column="d")
    select = "SELECT * FROM (VALUES ('Thu, 29 Feb 2024 10:00:00 +0100')) v(d)"

    assert check_on(duck, select, check).status == "passed"


def test_multicolumn_sum_of_int_columns_judges_large_sums_instead_of_overflowing(duck) -> None:
    check = MulticolumnSumConfig(column_list=["a", "b"], sum_total=5)
    select = "SELECT 2000000123::INTEGER AS a, 2000000456::INTEGER AS b UNION ALL SELECT 2, 3"

    result = check_on(duck, select, check)

    assert result.status == "failed", result.error
    assert result.unexpected_count == 1


def test_multicolumn_sum_results_never_carry_the_row_values(duck) -> None:
    check = MulticolumnSumConfig(column_list=["a", "b"], sum_total=5)
    select = "SELECT 2000000123::INTEGER AS a, 2000000456::INTEGER AS b"

    text = result_text(check_on(duck, select, check))

    assert "2000000123" not in text
    assert "2000000456" not in text


def test_an_engine_error_in_a_result_blanks_double_quoted_values(duck) -> None:
    check = SqlPredicateConfig(name="has_x", predicate="json_extract(doc, '$.x') IS NOT NULL")
    select = "SELECT '{not json alice@example.com' AS doc"

    result = check_on(duck, select, check)

    assert result.status == "error"
    assert "alice@example.com" not in result_text(result)


def test_an_engine_error_in_a_result_blanks_unquoted_numbers_of_a_row(duck) -> None:
    check = SqlPredicateConfig(name="fits", predicate="card::INTEGER > 0")
    select = "SELECT 4111111111111111::BIGINT AS card"

    result = check_on(duck, select, check)

    assert result.status == "error"
    assert "4111111111111111" not in result_text(result)


def test_between_with_a_zoned_datetime_bound_compares_instants(duck) -> None:
    # 09:00 UTC is 11:00 at +02:00, after the bound 10:00+02:00; the bound's offset was dropped.
    bound = datetime(2024, 1, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    check = BetweenConfig(column="ts", min_value=bound)

    zoned = check_on(duck, "SELECT TIMESTAMPTZ '2024-01-01 09:00:00+00' AS ts", check)
    plain = check_on(duck, "SELECT TIMESTAMP '2024-01-01 09:00:00' AS ts", check)

    assert (zoned.status, plain.status) == ("passed", "passed")


# --- behaviour that holds ---------------------------------------------------------------------


def test_values_exist_in_ignores_nulls_on_both_sides(duck) -> None:
    duck.run("CREATE TABLE refs AS SELECT * FROM (VALUES (1), (NULL)) v(id)")
    env = CheckEnv(tables={"refs": "refs"})
    check = ValuesExistInConfig(column="k", to_table="refs", to_column="id")

    result = check_on(duck, "SELECT * FROM (VALUES (1), (NULL), (7)) v(k)", check, env)

    assert (result.status, result.unexpected_count, result.observed_value) == ("failed", 1, 0.5)


def test_most_common_value_ignores_nulls_even_when_they_dominate(duck) -> None:
    check = MostCommonValueInSetConfig(column="x", value_set=["a"])

    result = check_on(duck, "SELECT * FROM (VALUES (NULL), (NULL), (NULL), ('a')) v(x)", check)

    assert result.status == "passed"


def test_most_common_value_with_a_tie_fails_unless_ties_are_okay(duck) -> None:
    select = "SELECT * FROM (VALUES ('a'), ('a'), ('b'), ('b')) v(x)"

    strict = check_on(duck, select, MostCommonValueInSetConfig(column="x", value_set=["a"]))
    okay = check_on(
        duck, select, MostCommonValueInSetConfig(column="x", value_set=["a"], ties_okay=True)
    )

    assert (strict.status, okay.status) == ("failed", "passed")


def test_quantiles_are_discrete_values_of_the_column(duck) -> None:
    ranges = {"quantiles": [0.25, 0.5, 0.75], "value_ranges": [[1, 1], [2, 2], [3, 3]]}
    check = QuantilesBetweenConfig(column="x", quantile_ranges=ranges)

    result = check_on(duck, "SELECT * FROM (VALUES (1), (2), (3), (4), (NULL)) v(x)", check)

    assert result.status == "passed", result.message


def test_increasing_compares_with_the_previous_non_null_value_by_order_by(duck) -> None:
    check = IncreasingConfig(column="x", order_by="o")
    # by o: 3 (o=1), NULL (o=2), 2 (o=3), 5 (o=NULL, last): 2 goes back from 3.
    select = "SELECT * FROM (VALUES (5, NULL), (2, 3), (NULL, 2), (3, 1)) v(x, o)"
    name = table_of(duck, select)

    (result,) = evaluate_checks(duck, name, [check])
    (sample,) = sample_unexpected(duck, name, [check], [result])

    assert (result.unexpected_count, sample) == (1, ["2"])


def test_freshness_reads_zoned_and_nanosecond_timestamps_as_instants(duck) -> None:
    env = CheckEnv(logical_time=datetime(2024, 1, 2, tzinfo=UTC))
    check = FreshnessConfig(column="ts", max_age="2h")

    zoned = check_on(duck, "SELECT TIMESTAMPTZ '2024-01-01 23:00:00+05' AS ts", check, env)
    nanos = check_on(duck, "SELECT TIMESTAMP_NS '2024-01-01 23:00:00.5' AS ts", check, env)

    assert (zoned.status, zoned.observed_value) == ("failed", 6 * 3600)
    assert nanos.status == "passed" and nanos.observed_value == pytest.approx(3599.5)


def test_odd_column_names_are_quoted_in_every_check_of_one_statement(duck) -> None:
    odd = 'Odd "col" it\'s'
    quoted = odd.replace('"', '""')
    name = table_of(duck, f'SELECT * FROM (VALUES (1, 2), (3, 1)) v("{quoted}", "B b")')
    checks: list[Any] = [
        BetweenConfig(column=odd, max_value=2),
        IncreasingConfig(column=odd, order_by="B b"),
        MulticolumnSumConfig(column_list=[odd, "B b"], sum_total=3),
        MostCommonValueInSetConfig(column=odd, value_set=[1], ties_okay=True),
    ]
    before = duck.statements

    results = evaluate_checks(duck, name, checks)

    assert duck.statements - before == 1
    assert [r.status for r in results] == ["failed", "failed", "failed", "passed"]


def test_routing_by_values_exist_in_never_routes_a_null_for_a_column_absent_there(duck) -> None:
    # Correlated to the routed table's own column, a NULL reference became "missing" and was
    # routed, while the really missing 99 stayed; the broken check must stop the run instead.
    duck.run("CREATE TABLE products AS SELECT * FROM (VALUES (1), (2)) v(id)")
    env = CheckEnv(tables={"products": "products"})
    check = ValuesExistInConfig(column="product_id", to_table="products", on_fail="dead_letter")
    name = table_of(duck, "SELECT * FROM (VALUES (1), (99), (NULL)) v(product_id)")

    with pytest.raises(StepError):
        route_rows(duck, name, [check], env)
