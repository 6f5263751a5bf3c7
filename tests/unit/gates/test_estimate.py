"""The monthly cost estimate from declared volumes, checked against figures computed by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sluiceway.core.loader import load_spec
from sluiceway.core.spec import Pipeline
from sluiceway.gates.estimate import DAYS_PER_MONTH, estimate_cost
from sluiceway.ops.pricing import DEFAULT_PRICES, load_prices


def _spec(tmp_path: Path, **overrides: Any) -> Pipeline:
    """A one-source pipeline: 2M rows/day × 100 bytes into a local Delta table, kept 400 days."""
    data: dict[str, Any] = {
        "version": 1,
        "pipeline": "priced",
        "sources": {
            "events": {
                "type": "files",
                "path": "data/",
                "format": "csv",
                "inventory": {"volume": "2M rows/day", "row_bytes": 100},
            }
        },
        "sinks": [{"type": "delta", "path": "lake/events", "partition_by": ["event_date"]}],
        "compliance": {"retention": "400d"},
    }
    data.update(overrides)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_spec(path)


def test_local_storage_is_daily_bytes_times_retention_at_the_local_price(tmp_path: Path) -> None:
    estimate = estimate_cost(_spec(tmp_path), DEFAULT_PRICES)

    (storage,) = [line for line in estimate.lines if line.category == "storage"]
    # 2,000,000 rows × 100 bytes = 0.2 GB/day; × 400 days = 80 GB; × $0.08 = $6.40.
    assert storage.quantity == pytest.approx(80.0)
    assert storage.unit_price == 0.08
    assert storage.cost == pytest.approx(6.40)
    assert estimate.retention_days == 400


def test_compute_is_rows_per_month_over_rows_per_hour_times_the_hour_price(tmp_path: Path) -> None:
    estimate = estimate_cost(_spec(tmp_path), DEFAULT_PRICES)

    # 2M rows/day × 30.4167 days = 60,833,333 rows; / 500M rows per hour × $0.10.
    assert estimate.of("compute") == pytest.approx(2e6 * 365 / 12 / 5e8 * 0.10)
    assert estimate.of("compute") == pytest.approx(0.0121667, rel=1e-4)
    assert estimate.of("transfer") == 0.0
    assert estimate.total == pytest.approx(6.40 + 0.0121667, rel=1e-6)


def test_remote_sink_uses_the_hot_object_storage_price(tmp_path: Path) -> None:
    sinks = [{"type": "delta", "path": "s3://bucket/events", "partition_by": ["event_date"]}]
    estimate = estimate_cost(_spec(tmp_path, sinks=sinks), DEFAULT_PRICES)

    assert estimate.of("storage") == pytest.approx(80.0 * 0.023)


def test_tiers_split_the_retention_window_by_their_after_ages(tmp_path: Path) -> None:
    tiers = [
        {"name": "warm", "path": "s3://bucket/warm", "after": "30d"},
        {"name": "cold", "path": "s3://bucket/cold", "after": "180d"},
    ]
    sinks = [{"type": "delta", "path": "s3://bucket/hot", "partition_by": ["d"], "tiers": tiers}]
    estimate = estimate_cost(_spec(tmp_path, sinks=sinks), DEFAULT_PRICES)

    by_tier = {line.item.split()[1]: line for line in estimate.lines if line.category == "storage"}
    # 0.2 GB/day: hot 30 days = 6 GB, warm 150 days = 30 GB, cold 220 days = 44 GB.
    assert by_tier["hot"].quantity == pytest.approx(6.0)
    assert by_tier["warm"].quantity == pytest.approx(30.0)
    assert by_tier["cold"].quantity == pytest.approx(44.0)
    assert estimate.of("storage") == pytest.approx(6 * 0.023 + 30 * 0.0125 + 44 * 0.004)


def test_a_tier_older_than_the_retention_holds_nothing(tmp_path: Path) -> None:
    tiers = [{"name": "cold", "path": "cold", "after": "180d"}]
    sinks = [{"type": "delta", "path": "hot", "partition_by": ["d"], "tiers": tiers}]
    estimate = estimate_cost(
        _spec(tmp_path, sinks=sinks, compliance={"retention": "90d"}), DEFAULT_PRICES
    )

    by_tier = {line.item.split()[1]: line for line in estimate.lines if line.category == "storage"}
    assert by_tier["local"].quantity == pytest.approx(18.0)
    assert by_tier["cold"].quantity == 0.0


def test_bytes_read_from_an_object_store_are_priced_as_transfer(tmp_path: Path) -> None:
    sources = {
        "events": {
            "type": "files",
            "path": "s3://bucket/events/",
            "format": "csv",
            "inventory": {"volume": "40GB/day"},
        }
    }
    estimate = estimate_cost(_spec(tmp_path, sources=sources), DEFAULT_PRICES)

    # 40 GB/day × 30.4167 days = 1,216.67 GB × $0.09 = $109.50.
    assert estimate.of("transfer") == pytest.approx(40 * DAYS_PER_MONTH * 0.09)
    assert estimate.of("transfer") == pytest.approx(109.50)
    assert estimate.rows_per_day == pytest.approx(40e9 / 100)


def test_budget_and_growth_give_the_verdict_and_the_twelve_month_projection(
    tmp_path: Path,
) -> None:
    cost = {"budget_per_month": 5.0, "growth_per_year": 2.0}
    estimate = estimate_cost(_spec(tmp_path, cost=cost), DEFAULT_PRICES)

    assert estimate.budget == 5.0
    assert estimate.is_over_budget
    assert estimate.projected_total_12m == pytest.approx(2 * estimate.total)
    assert any("× 2" in note for note in estimate.assumptions)


def test_a_generous_budget_is_not_exceeded(tmp_path: Path) -> None:
    estimate = estimate_cost(_spec(tmp_path, cost={"budget_per_month": 100.0}), DEFAULT_PRICES)

    assert not estimate.is_over_budget
    assert estimate.projected_total_12m == pytest.approx(estimate.total)


def test_without_retention_a_year_is_kept(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    spec = spec.model_copy(update={"compliance": None})
    estimate = estimate_cost(spec, DEFAULT_PRICES)

    assert estimate.retention_days == 365
    assert estimate.of("storage") == pytest.approx(0.2 * 365 * 0.08)


def test_sources_without_volume_count_as_zero_and_are_named(tmp_path: Path) -> None:
    sources = {"events": {"type": "files", "path": "data/", "format": "csv"}}
    estimate = estimate_cost(_spec(tmp_path, sources=sources), DEFAULT_PRICES)

    assert estimate.total == 0.0
    assert estimate.undeclared_sources == ("events",)
    assert any("events" in note for note in estimate.assumptions)


def test_spec_prices_override_the_defaults(tmp_path: Path) -> None:
    spec = _spec(tmp_path, cost={"prices": {"storage_local_gb_month": 0.1}})
    estimate = estimate_cost(spec, load_prices(spec))

    assert estimate.of("storage") == pytest.approx(80.0 * 0.1)
