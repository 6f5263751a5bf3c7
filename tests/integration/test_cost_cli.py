"""`sluice cost` on real Delta tables (hot and tiers), a real run store and a price file."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from click.testing import CliRunner, Result
from deltalake import DeltaTable, write_deltalake

from sluiceway.cli_tier import cost, tier
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.core.runstore import RunRecord, RunStore

pytestmark = pytest.mark.integration

AS_OF = date(2026, 1, 31)
PRICES = {
    "storage_local_gb_month": 1000.0,
    "storage_warm_gb_month": 500.0,
    "storage_cold_gb_month": 100.0,
    "compute_hour": 3.0,
}


def spec_of(budget: float | None, **source: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "version": 1,
        "pipeline": "billing",
        "sources": {"events": {"type": "files", "path": "data/", "format": "csv", **source}},
        "sinks": [
            {
                "type": "delta",
                "path": "lake/hot",
                "partition_by": ["day"],
                "tiers": [
                    {"name": "warm", "path": "lake/warm", "after": "30d"},
                    {"name": "cold", "path": "lake/cold", "after": "365d"},
                ],
            }
        ],
        "dead_letter": {"path": "lake/dead_letter"},
    }
    if budget is not None:
        spec["cost"] = {"budget_per_month": budget, "growth_per_year": 2.0}
    return spec


def write_spec(folder: Path, spec: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    (folder / "prices.yaml").write_text(yaml.safe_dump(PRICES))
    return path


def fill_lake(folder: Path) -> None:
    days = [AS_OF - timedelta(days=n) for n in range(0, 500, 25)]
    data = pa.table(
        {
            "id": pa.array(range(len(days) * 50), pa.int64()),
            "day": pa.array([d for d in days for _ in range(50)], pa.date32()),
        }
    )
    write_deltalake(folder / "lake/hot", data, partition_by=["day"])
    CliRunner().invoke(
        tier,
        [str(folder / "pipeline.yaml"), "--as-of", AS_OF.isoformat(), "--state-dir", str(folder)],
    )


def record_runs(folder: Path) -> None:
    store = RunStore(folder / "runs.db")
    now = datetime.now(UTC)
    for index, (age_days, seconds) in enumerate([(1, 1800.0), (10, 5400.0), (45, 36000.0)]):
        started = (now - timedelta(days=age_days)).isoformat()
        store.save(
            RunRecord(f"run-{index}", "billing", "2026-01-01", "succeeded", started, None, seconds)
        )


def run_cost(folder: Path, *args: str) -> Result:
    spec = folder / "pipeline.yaml"
    command = [str(spec), "--prices", str(folder / "prices.yaml"), "--state-dir", str(folder)]
    return CliRunner().invoke(cost, [*command, *args])


def live_bytes(uri: Path) -> int:
    actions = pa.table(DeltaTable(str(uri)).get_add_actions(flatten=True))
    return sum(actions["size_bytes"].to_pylist())


def test_cost_prices_every_tier_from_its_live_files(tmp_path: Path) -> None:
    write_spec(tmp_path, spec_of(budget=None))
    fill_lake(tmp_path)
    record_runs(tmp_path)
    result = run_cost(tmp_path, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["pipelines"][0]
    rows = {row["label"]: row for row in report["tables"]}
    for label, tier_name, price in [
        ("sinks[0]", "hot", 1000.0),
        ("sinks[0].warm", "warm", 500.0),
        ("sinks[0].cold", "cold", 100.0),
    ]:
        size = live_bytes(tmp_path / "lake" / tier_name)
        assert size > 0
        assert rows[label]["bytes"] == size
        assert rows[label]["storage_per_month"] == pytest.approx(size / 1e9 * price)
    assert rows["sinks[0].cold"]["bytes_per_day"] == 0
    assert rows["dead_letter"]["bytes"] == 0
    assert report["compute_hours_30d"] == pytest.approx(2.0)
    assert report["compute_per_month"] == pytest.approx(6.0)
    assert report["runs_30d"] == 2


def test_hot_growth_is_measured_from_the_table_and_projected_a_year(tmp_path: Path) -> None:
    write_spec(tmp_path, spec_of(budget=None))
    fill_lake(tmp_path)
    report = json.loads(run_cost(tmp_path, "--format", "json").output)["pipelines"][0]
    rows = {row["label"]: row for row in report["tables"]}
    hot, warm, cold = rows["sinks[0]"], rows["sinks[0].warm"], rows["sinks[0].cold"]
    assert hot["growth_from"] == "history"
    assert hot["bytes_per_day"] == pytest.approx(hot["bytes"])
    # A year of growth by age: 30 days stay hot (warm: after 30d), 335 reach warm, none
    # cold; what every tier holds now is a year older then, so cold (after 365d) holds it.
    per_day = hot["bytes_per_day"]
    assert hot["projected_bytes"] == pytest.approx(per_day * 30)
    assert warm["growth_from"] == "moves from sinks[0]"
    assert warm["projected_bytes"] == pytest.approx(per_day * 335)
    assert cold["growth_from"] == "none"
    assert cold["projected_bytes"] == pytest.approx(hot["bytes"] + warm["bytes"] + cold["bytes"])


def test_a_tiered_sink_grows_by_what_its_runs_wrote_not_by_what_tiering_left_hot(
    tmp_path: Path,
) -> None:
    """Runs of sluiceway write 40 rows a day; tiering then moves every partition out of the
    hot table. The growth is still 40 rows' bytes a day, landing in the colder tiers."""
    spec = spec_of(budget=None)
    spec["sinks"][0]["tiers"] = [{"name": "cold", "path": "lake/cold", "after": "1d"}]
    path = write_spec(tmp_path, spec)
    (tmp_path / "data").mkdir()
    for index in range(3):
        (tmp_path / "data" / f"d{index}.csv").write_text(
            "id,day\n" + "".join(f"{index}{n},2025-01-0{index + 1}\n" for n in range(40))
        )
    environ = {"SLUICE_HOME": str(tmp_path)}
    options = RunOptions(
        logical_date=date(2025, 1, 3), base_dir=tmp_path, state_dir=tmp_path, environ=environ
    )
    assert run_pipeline(load_spec(path), options).ok
    moved = CliRunner().invoke(
        tier, [str(path), "--as-of", "2026-01-31", "--state-dir", str(tmp_path)]
    )
    assert moved.exit_code == 0, moved.output
    assert live_bytes(tmp_path / "lake" / "hot") == 0

    report = json.loads(run_cost(tmp_path, "--format", "json").output)["pipelines"][0]

    rows = {row["label"]: row for row in report["tables"]}
    cold = rows["sinks[0].cold"]
    per_row = live_bytes(tmp_path / "lake" / "cold") / 120
    assert rows["sinks[0]"]["bytes_per_day"] == pytest.approx(120 * per_row)  # one day old
    assert cold["growth_from"] == "moves from sinks[0]"
    assert cold["projected_bytes"] == pytest.approx(cold["bytes"] + 120 * per_row * 364)
    assert rows["sinks[0]"]["projected_bytes"] == pytest.approx(120 * per_row)  # one day hot


def test_over_budget_warns_exits_zero_and_fails_only_when_asked(tmp_path: Path) -> None:
    write_spec(tmp_path, spec_of(budget=0.01))
    fill_lake(tmp_path)
    shown = run_cost(tmp_path)
    assert shown.exit_code == 0, shown.output
    assert "over its budget of 0.01" in shown.output
    data = json.loads(run_cost(tmp_path, "--format", "json").output)
    assert data["over_budget"] is True
    assert run_cost(tmp_path, "--fail-over-budget").exit_code == 1


def test_within_budget_is_not_flagged(tmp_path: Path) -> None:
    write_spec(tmp_path, spec_of(budget=1e9))
    fill_lake(tmp_path)
    result = run_cost(tmp_path, "--format", "json", "--fail-over-budget")
    assert result.exit_code == 0
    assert json.loads(result.output)["over_budget"] is False


def test_a_table_not_written_yet_grows_by_the_inventory_volume(tmp_path: Path) -> None:
    write_spec(tmp_path, spec_of(budget=None, inventory={"volume": "1M rows/day", "row_bytes": 20}))
    report = json.loads(run_cost(tmp_path, "--format", "json").output)["pipelines"][0]
    hot = next(row for row in report["tables"] if row["label"] == "sinks[0]")
    assert hot["growth_from"] == "inventory"
    assert hot["bytes_per_day"] == pytest.approx(2e7)
    assert hot["projected_storage_per_month"] == pytest.approx(2e7 * 365 / 1e9 * 1000.0)


def test_an_unknown_price_is_a_usage_error_without_traceback(tmp_path: Path) -> None:
    write_spec(tmp_path, spec_of(budget=None))
    (tmp_path / "prices.yaml").write_text(yaml.safe_dump({"storage_moon_gb": 1.0}))
    result = run_cost(tmp_path)
    assert result.exit_code == 2
    assert "unknown price 'storage_moon_gb'" in result.output
    assert "Traceback" not in result.output


def test_pipelines_of_several_layers_are_totalled_per_layer(tmp_path: Path) -> None:
    for layer, budget in (("bronze", None), ("silver", 10.0)):
        folder = tmp_path / layer
        write_spec(
            folder, {**spec_of(budget=budget), "pipeline": f"billing_{layer}", "layer": layer}
        )
        fill_lake(folder)
    command = [
        str(tmp_path / "bronze/pipeline.yaml"),
        str(tmp_path / "silver/pipeline.yaml"),
        "--prices",
        str(tmp_path / "bronze/prices.yaml"),
        "--state-dir",
        str(tmp_path),
        "--format",
        "json",
    ]

    result = CliRunner().invoke(cost, command)

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    reports = {r["pipeline"]: r for r in data["pipelines"]}
    assert set(data["by_layer"]) == {"bronze", "silver"}
    for layer in ("bronze", "silver"):
        report = reports[f"billing_{layer}"]
        assert report["layer"] == layer
        assert data["by_layer"][layer]["monthly_total"] == pytest.approx(report["monthly_total"])
        assert data["by_layer"][layer]["bytes"] == sum(t["bytes"] for t in report["tables"])
