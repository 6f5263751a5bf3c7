"""The arithmetic of `sluice cost`, checked against numbers computed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sluiceway.core.loader import load_spec
from sluiceway.ops.cost import (
    CostReport,
    TableCost,
    compute_cost,
    daily_growth,
    inventory_bytes_per_day,
    projected_bytes,
    storage_cost,
)

DAY_MS = 86_400_000
NOW_MS = 100 * DAY_MS


def table(projected_per_month: float, per_month: float = 0.0) -> TableCost:
    return TableCost(
        label="sinks[0]",
        tier="local",
        uri="/lake",
        bytes=0,
        files=0,
        storage_per_month=per_month,
        bytes_per_day=0.0,
        growth_from="none",
        projected_bytes=0.0,
        projected_storage_per_month=projected_per_month,
    )


def report(budget: float | None, growth: float | None = 1.5) -> CostReport:
    return CostReport(
        pipeline="p",
        currency="USD",
        tables=[table(1.0, 0.25), table(0.5, 0.75)],
        compute_hours_30d=20.0,
        compute_per_month=2.0,
        growth_per_year=growth,
        budget_per_month=budget,
    )


def test_storage_cost_is_gigabytes_times_the_monthly_price() -> None:
    assert storage_cost(2_500_000_000, 0.02) == pytest.approx(0.05)


def test_projection_adds_a_year_of_daily_growth_times_the_yearly_multiplier() -> None:
    assert projected_bytes(1e9, 1e6, 2.0) == pytest.approx(1.73e9)
    assert projected_bytes(1e9, 1e6, None) == pytest.approx(1.365e9)


def test_compute_cost_is_hours_of_runs_times_the_hourly_price() -> None:
    hours, cost = compute_cost([1800.0, 5400.0], 0.10)
    assert hours == pytest.approx(2.0)
    assert cost == pytest.approx(0.2)


def test_daily_growth_counts_only_the_last_30_days_of_an_old_table() -> None:
    files = [(NOW_MS - DAY_MS, 300), (NOW_MS - 40 * DAY_MS, 1000)]
    assert daily_growth(files, NOW_MS - 60 * DAY_MS, NOW_MS) == pytest.approx(10.0)


def test_daily_growth_of_a_young_table_divides_by_its_age() -> None:
    files = [(NOW_MS - DAY_MS, 300), (NOW_MS - 2 * DAY_MS, 600)]
    assert daily_growth(files, NOW_MS - 3 * DAY_MS, NOW_MS) == pytest.approx(300.0)


def test_daily_growth_of_a_table_younger_than_a_day_counts_one_day() -> None:
    assert daily_growth([(NOW_MS - 1000, 500)], NOW_MS - 3600_000, NOW_MS) == pytest.approx(500.0)


def test_totals_add_storage_and_compute_and_grow_compute_like_the_data() -> None:
    cost = report(budget=None)
    assert cost.storage_per_month == pytest.approx(1.0)
    assert cost.monthly_total == pytest.approx(3.0)
    assert cost.projected_monthly == pytest.approx(1.5 + 2.0 * 1.5)


def test_over_budget_only_when_the_projection_exceeds_the_budget() -> None:
    assert report(budget=4.4).is_over_budget is True
    assert report(budget=4.5).is_over_budget is False
    assert report(budget=None).is_over_budget is False
    assert report(budget=3.4, growth=None).is_over_budget is True


def test_json_form_carries_the_totals_and_the_budget_flag() -> None:
    data = report(budget=4.0).as_dict()
    assert data["over_budget"] is True
    assert data["projected_monthly"] == pytest.approx(4.5)
    assert len(data["tables"]) == 2


def test_inventory_volume_gives_rows_times_row_bytes_per_day(tmp_path: Path) -> None:
    spec = {
        "version": 1,
        "pipeline": "p",
        "sources": {
            "a": {
                "type": "files",
                "path": "data/",
                "format": "csv",
                "inventory": {"volume": "2M rows/day", "row_bytes": 50},
            },
            "b": {
                "type": "files",
                "path": "more/",
                "format": "csv",
                "inventory": {"volume": "1GB/day"},
            },
        },
        "sinks": [{"type": "delta", "path": "lake/t"}],
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert inventory_bytes_per_day(load_spec(path)) == pytest.approx(2e6 * 50 + 1e9)


def test_rows_per_day_counts_merge_inserts_and_one_write_per_logical_date(tmp_path: Path):
    import pyarrow as pa
    from deltalake import CommitProperties, DeltaTable, write_deltalake

    from sluiceway.ops.cost import _rows_per_day

    path = str(tmp_path / "t")

    def meta(day: str) -> CommitProperties:
        return CommitProperties(
            custom_metadata={"sluice.run_id": f"r-{day}", "sluice.logical_date": day}
        )

    rows = pa.table({"id": [1, 2, 3], "d": ["a", "a", "a"]})
    write_deltalake(path, rows, commit_properties=meta("2025-01-01"))  # 3 appended
    again = pa.table({"id": [1, 2], "d": ["a", "a"]})
    for _ in range(2):  # a date written twice (a rerun): its newest write counts, once
        write_deltalake(
            path, again, mode="overwrite", predicate="d = 'a'", commit_properties=meta("2025-01-02")
        )
    DeltaTable(path).merge(
        pa.table({"id": [2, 7, 8], "d": ["a", "a", "a"]}),
        predicate="t.id = s.id",
        source_alias="s",
        target_alias="t",
        commit_properties=meta("2025-01-03"),
    ).when_matched_update_all().when_not_matched_insert_all().execute()  # 2 inserted
    write_deltalake(path, rows, mode="append")  # another writer: not counted

    now_ms = int(DeltaTable(path).history(1)[0]["timestamp"]) + 1
    assert _rows_per_day(DeltaTable(path), now_ms) == 3 + 2 + 2
