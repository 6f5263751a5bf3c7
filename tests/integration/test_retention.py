"""`sluice retention` on real Delta tables: partitions (or rows) older than as-of − retention
are deleted from the sink, its tier and the dead-letter table; newer ones stay; the figures
reported and audited are exact; a dry run deletes nothing."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from click.testing import CliRunner, Result
from deltalake import DeltaTable, write_deltalake

from sluiceway.cli import main
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.ops.audit import AuditLog

RUN_DAYS = (date(2025, 1, 10), date(2025, 2, 20), date(2025, 3, 25))
ROWS_PER_DAY = (3, 2, 4)
AS_OF = "2025-04-01"  # retention 30d: cutoff 2025-03-02


def spec(**compliance: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "orders_retained",
        "sources": {
            "orders": {
                "type": "files",
                "path": "data/",
                "format": "csv",
                "incremental": True,
                "contract": {
                    "columns": {
                        "order_id": {"type": "string", "nullable": False},
                        "amount": {"type": "double", "min": 0},
                        "order_date": {"type": "date"},
                        "placed_at": {"type": "timestamp"},
                    },
                    "on_violation": "dead_letter",
                },
            }
        },
        "sinks": [
            {
                "type": "delta",
                "path": "lake/orders",
                "partition_by": ["order_date"],
                "tiers": [{"name": "cold", "path": "lake/orders_cold", "after": "60d"}],
            }
        ],
        "dead_letter": {"path": "lake/dead_letter"},
        "compliance": {"retention": "30d", **compliance},
    }


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(spec(), sort_keys=False))
    for index, (day, rows) in enumerate(zip(RUN_DAYS, ROWS_PER_DAY, strict=True)):
        lines = [f"o{index}-{n},{n + 1}.5,{day},{day}T08:00:00" for n in range(rows)]
        lines.append(f"o{index}-bad,-1,{day},{day}T09:00:00")  # one dead letter per day
        data = tmp_path / "data" / f"orders-{index}.csv"
        data.parent.mkdir(exist_ok=True)
        data.write_text("order_id,amount,order_date,placed_at\n" + "\n".join(lines) + "\n")
        options = RunOptions(logical_date=day, base_dir=tmp_path, state_dir=tmp_path / ".sluice")
        result = run_pipeline(load_spec(tmp_path / "pipeline.yaml"), options)
        assert result.ok, result.error
    cold = pa.table(
        {
            "order_id": ["c1", "c2", "c3"],
            "amount": [1.0, 2.0, 3.0],
            "order_date": pa.array([date(2024, 11, 1), date(2024, 11, 1), date(2024, 12, 1)]),
            "placed_at": pa.array([datetime(2024, 11, 1, 8)] * 3, pa.timestamp("us")),
            "_sluice_move": ["m1", "m1", "m2"],
        }
    )
    write_deltalake(str(tmp_path / "lake" / "orders_cold"), cold, partition_by=["order_date"])
    return tmp_path


def retention(folder: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main,
        [
            "retention",
            str(folder / "pipeline.yaml"),
            "--as-of",
            AS_OF,
            "--state-dir",
            str(folder / ".sluice"),
            *args,
        ],
        env={"COLUMNS": "300"},
        catch_exceptions=False,
    )


def dates(folder: Path, table: str, column: str = "order_date") -> list[date]:
    rows = DeltaTable(str(folder / "lake" / table)).to_pyarrow_table()
    return sorted(set(rows[column].to_pylist()))


def reported(output: str) -> dict[str, int]:
    """rows deleted per table label, from the report's table."""
    found = re.findall(r"(sinks\[0\](?: tier cold)?|the dead-letter table)\s+\S+\s+(\d+)", output)
    return {label: int(rows) for label, rows in found}


def test_partitions_older_than_the_cutoff_are_deleted_and_newer_ones_kept(folder: Path) -> None:
    result = retention(folder)

    assert result.exit_code == 0, result.output
    assert dates(folder, "orders") == [RUN_DAYS[2]]
    assert DeltaTable(str(folder / "lake" / "orders")).to_pyarrow_table().num_rows == 4
    assert dates(folder, "orders_cold") == []
    assert dates(folder, "dead_letter", "logical_date") == [RUN_DAYS[2]]


def test_the_rows_deleted_are_reported_and_audited_exactly(folder: Path) -> None:
    result = retention(folder)

    assert reported(result.output) == {
        "sinks[0]": 5,
        "sinks[0] tier cold": 3,
        "the dead-letter table": 2,
    }
    (entry,) = AuditLog(folder / ".sluice").entries(action="retention")
    assert entry.pipeline == "orders_retained"
    assert entry.rows_affected == 10
    assert entry.details["cutoff"].startswith("2025-03-02")


def test_a_dry_run_reports_the_same_figures_and_deletes_nothing(folder: Path) -> None:
    result = retention(folder, "--dry-run")

    assert result.exit_code == 0, result.output
    assert reported(result.output) == {
        "sinks[0]": 5,
        "sinks[0] tier cold": 3,
        "the dead-letter table": 2,
    }
    assert dates(folder, "orders") == list(RUN_DAYS)
    assert len(dates(folder, "orders_cold")) == 2
    assert list(AuditLog(folder / ".sluice").entries()) == []


def test_a_retention_column_that_is_not_a_partition_deletes_row_by_row(folder: Path) -> None:
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec(retention_column="placed_at"), sort_keys=False))

    result = CliRunner().invoke(
        main,
        ["retention", str(path), "--as-of", "2025-03-26", "--state-dir", str(folder / ".sluice")],
        env={"COLUMNS": "300"},
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    # cutoff 2025-02-24T00:00: the 2025-03-25 rows stay.
    assert dates(folder, "orders") == [RUN_DAYS[2]]
    assert reported(result.output)["sinks[0]"] == 5


def test_a_pipeline_without_retention_is_left_alone(tmp_path: Path) -> None:
    plain = spec()
    del plain["compliance"]
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))

    result = CliRunner().invoke(
        main,
        ["retention", str(tmp_path / "pipeline.yaml"), "--state-dir", str(tmp_path / ".s")],
        catch_exceptions=False,
    )

    assert result.exit_code == 0
    assert "no compliance.retention declared" in result.output


def test_a_folder_of_specs_is_taken_whole(folder: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["retention", str(folder), "--as-of", AS_OF, "--state-dir", str(folder / ".sluice")],
        env={"COLUMNS": "300"},
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    assert dates(folder, "orders") == [RUN_DAYS[2]]
