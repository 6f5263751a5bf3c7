"""Column profiles: numbers against hand-computed values, PII, JSON, the store of past runs."""

from __future__ import annotations

import itertools
import json
import statistics
from datetime import date

import numpy as np
import pytest

from sluiceway.checks.base import CheckEnv
from sluiceway.checks.profile import (
    PROBABILITIES,
    Profile,
    compute_profile,
    latest_before,
    load_profile,
    read_profile,
    save_profile,
    store_run_profile,
)
from sluiceway.errors import ConfigError

AMOUNTS = [10.5, 20.0, None, 7.25, 20.0, 3.0]
STATUSES = ["paid", "paid", "open", None, "paid", "void"]
DAYS = ["2024-01-03", "2024-01-01", None, "2024-01-02", "2024-01-02", "2024-01-05"]
EMAILS = ["a@x.io", "b@x.io", "c@x.io", "a@x.io", None, "d@x.io"]


@pytest.fixture
def orders(engine) -> str:
    rows = ", ".join(
        f"({i}, {_num(a)}, {_text(s)}, {_day(d)}, {_text(e)}, {str(i % 2 == 0).lower()})"
        for i, (a, s, d, e) in enumerate(zip(AMOUNTS, STATUSES, DAYS, EMAILS, strict=True), 1)
    )
    engine.run(
        "CREATE TABLE orders AS SELECT * FROM (VALUES "
        + rows
        + ") v(order_id, amount, status, day, email, is_even)"
    )
    return "orders"


def _num(value: float | None) -> str:
    return "NULL" if value is None else f"CAST({value} AS DOUBLE)"


def _text(value: str | None) -> str:
    return "NULL" if value is None else f"'{value}'"


def _day(value: str | None) -> str:
    return "NULL" if value is None else f"DATE '{value}'"


def test_numeric_column_profile_matches_hand_computed_values(engine, orders) -> None:
    profile = compute_profile(engine, orders)

    amount = profile.column("amount")
    values = [a for a in AMOUNTS if a is not None]
    assert profile.rows == 6
    assert (amount.type, amount.kind, amount.count, amount.nulls) == ("DOUBLE", "numeric", 5, 1)
    assert amount.distinct == 4
    assert (amount.min, amount.max) == (3.0, 20.0)
    assert amount.mean == pytest.approx(statistics.mean(values))
    assert amount.stdev == pytest.approx(statistics.stdev(values))
    assert amount.quantiles == pytest.approx(list(np.quantile(values, PROBABILITIES)))
    assert amount.quantile(0.5, profile.probabilities) == 10.5
    assert amount.null_ratio == pytest.approx(1 / 6)


def test_numeric_edges_carry_exact_counts_below_and_at_or_below(engine, orders) -> None:
    amount = compute_profile(engine, orders).column("amount")

    values = np.array([a for a in AMOUNTS if a is not None])
    assert amount.edges == pytest.approx(sorted(set(np.quantile(values, PROBABILITIES).round(9))))
    assert amount.count_below == [int((values < e).sum()) for e in amount.edges]
    assert amount.count_at_or_below == [int((values <= e).sum()) for e in amount.edges]
    assert sum(amount.histogram()) == 5
    assert amount.histogram()[0] == 0  # nothing below the minimum
    assert amount.histogram()[-1] == 0  # nothing above the maximum


def test_the_histogram_gives_the_maximum_a_bin_of_its_own(engine) -> None:
    sql = "SELECT CASE WHEN i < 400 THEN i % 4 ELSE 100 END AS x FROM range(1000) t(i)"
    engine.run(f"CREATE TABLE capped AS {sql}")
    x = compute_profile(engine, "capped").column("x")

    values = np.array([i % 4 if i < 400 else 100 for i in range(1000)])
    inner = [int(((values >= lo) & (values < hi)).sum()) for lo, hi in itertools.pairwise(x.edges)]
    assert x.edges[-1] == 100
    assert x.histogram() == [0, *inner, 600, 0]  # below the min, between edges, the max, above


def test_text_temporal_and_boolean_columns_keep_range_and_top_values(engine, orders) -> None:
    profile = compute_profile(engine, orders)

    status, day, is_even = (
        profile.column("status"),
        profile.column("day"),
        profile.column("is_even"),
    )
    assert (status.kind, status.count, status.nulls, status.distinct) == ("text", 5, 1, 3)
    assert (status.min, status.max) == ("open", "void")
    assert status.top_values == [("paid", 3), ("open", 1), ("void", 1)]
    assert status.quantiles is None and status.mean is None
    assert (day.kind, day.min, day.max) == ("temporal", "2024-01-01", "2024-01-05")
    assert day.quantile(0.5, profile.probabilities) == "2024-01-02"
    assert is_even.kind == "boolean"
    assert is_even.top_values == [("false", 3), ("true", 3)]


def test_pii_columns_keep_counts_and_no_value(engine, orders) -> None:
    profile = compute_profile(engine, orders, pii_columns={"EMAIL"})

    email = profile.column("email")
    assert (email.is_pii, email.count, email.nulls, email.distinct) == (True, 5, 1, 4)
    assert (email.min, email.max, email.top_values, email.quantiles) == (None, None, None, None)
    assert "@x.io" not in json.dumps(profile.to_dict())


def test_high_cardinality_text_keeps_no_top_values(engine) -> None:
    engine.run(
        "CREATE TABLE ids AS SELECT 'id-' || range AS id, range % 3 AS bucket FROM range(200)"
    )

    profile = compute_profile(engine, "ids")

    assert profile.column("id").top_values is None
    assert profile.column("bucket").top_values == [("0", 67), ("1", 67), ("2", 66)]


def test_profile_costs_the_same_statements_for_one_column_or_thirty(engine) -> None:
    engine.run("CREATE TABLE narrow AS SELECT range AS c0 FROM range(50)")
    columns = ", ".join(f"range * {i} AS c{i}, 'v' || (range % 4) AS t{i}" for i in range(15))
    engine.run(f"CREATE TABLE wide AS SELECT {columns} FROM range(50)")

    before = engine.statements
    compute_profile(engine, "narrow")
    narrow = engine.statements - before
    compute_profile(engine, "wide")
    wide = engine.statements - before - narrow

    assert narrow == wide == 3  # describe, the fused statistics, the fused exact counts


def test_an_empty_table_profiles_without_values(engine) -> None:
    engine.run("CREATE TABLE empty (amount DOUBLE, status VARCHAR)")

    profile = compute_profile(engine, "empty")

    assert profile.rows == 0
    amount = profile.column("amount")
    assert (amount.count, amount.quantiles, amount.edges, amount.null_ratio) == (
        0,
        None,
        None,
        None,
    )


def test_profile_survives_a_json_round_trip(engine, orders, tmp_path) -> None:
    profile = compute_profile(engine, orders)
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile.to_dict()))

    assert read_profile(path) == profile


def test_a_file_of_another_version_is_refused_with_how_to_fix(tmp_path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"version": 99, "rows": 1, "columns": []}))

    with pytest.raises(ConfigError, match=r"not a version 1 .*sluice profile --format json"):
        read_profile(path)


def test_a_missing_profile_file_says_how_to_make_one(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist; write one with `sluice profile"):
        read_profile(tmp_path / "nope.json")


def test_profiles_are_kept_per_logical_date_and_the_latest_earlier_one_is_found(
    engine, orders, tmp_path
) -> None:
    profile = compute_profile(engine, orders)
    for day in (date(2024, 1, 1), date(2024, 1, 5), date(2024, 1, 3)):
        save_profile(tmp_path, "shop", "staged", profile, day)

    found = latest_before(tmp_path, "shop", "staged", date(2024, 1, 5))

    assert (tmp_path / "profiles/shop/staged/2024-01-03.json").is_file()
    assert found is not None and found.logical_date == "2024-01-03"
    assert latest_before(tmp_path, "shop", "staged", date(2024, 1, 1)) is None
    assert latest_before(tmp_path, "shop", "other", date(2024, 2, 1)) is None
    assert load_profile(tmp_path, "shop", "staged", date(2024, 1, 2)) is None


def test_a_rerun_of_a_date_replaces_its_profile(engine, orders, tmp_path) -> None:
    day = date(2024, 1, 1)
    save_profile(tmp_path, "shop", "staged", compute_profile(engine, orders), day)
    engine.run("DELETE FROM orders WHERE order_id > 2")
    save_profile(tmp_path, "shop", "staged", compute_profile(engine, orders), day)

    assert load_profile(tmp_path, "shop", "staged", day).rows == 2


def test_store_run_profile_keeps_the_audited_table_for_the_next_run(
    engine, orders, tmp_path
) -> None:
    env = CheckEnv(pipeline="shop", logical_date=date(2024, 1, 2), state_dir=tmp_path)

    path = store_run_profile(engine, orders, env, pii_columns={"email"})

    assert path == tmp_path / "profiles" / "shop" / "staged" / "2024-01-02.json"
    stored = Profile.from_dict(json.loads(path.read_text()))
    assert stored.rows == 6 and stored.column("email").is_pii
    assert store_run_profile(engine, orders, CheckEnv(pipeline="shop")) is None


def test_a_dataset_name_with_a_path_separator_is_refused(engine, orders, tmp_path) -> None:
    profile = compute_profile(engine, orders)

    with pytest.raises(ConfigError, match="not a plain name"):
        save_profile(tmp_path, "shop", "../escape", profile, date(2024, 1, 1))
