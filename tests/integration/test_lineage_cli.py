"""`sluice lineage NAME` on a bronze → silver → gold project linked by delta sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from sluiceway.cli import main

BRONZE = {
    "version": 1,
    "pipeline": "bronze_orders",
    "sources": {
        "orders": {
            "type": "files",
            "path": "../raw/orders.csv",
            "contract": {
                "columns": {
                    "order_id": {"type": "integer"},
                    "customer_email": {"type": "string"},
                    "amount": {"type": "double"},
                }
            },
        }
    },
    "sinks": [{"type": "delta", "path": "../data/bronze/orders"}],
}
SILVER = {
    "version": 1,
    "pipeline": "silver_orders",
    "sources": {"bronze": {"type": "delta", "path": "../data/bronze/orders"}},
    "steps": [
        {"sql": "SELECT order_id, amount * 1.2 AS total, customer_email FROM input"},
        {"rename": {"customer_email": "email"}},
    ],
    "pii": {"email": "hmac"},
    "sinks": [{"type": "delta", "path": "../data/silver/orders"}],
}
GOLD = {
    "version": 1,
    "pipeline": "gold_revenue",
    "sources": {"silver": {"type": "delta", "path": "../data/silver/orders"}},
    "steps": [
        {
            "sql": {
                "query": "SELECT count(*) AS orders, sum(total) AS revenue FROM input",
                "rows": "filter",
            }
        }
    ],
    "sinks": [{"type": "delta", "path": "../data/gold/revenue"}],
}


def make_project(root: Path) -> Path:
    (root / "pipelines").mkdir()
    for spec in (BRONZE, SILVER, GOLD):
        (root / "pipelines" / f"{spec['pipeline']}.yaml").write_text(yaml.safe_dump(spec))
    project = root / "sluice.yaml"
    project.write_text(yaml.safe_dump({"version": 1, "project": "shop"}))
    return project


def lineage(*args: str) -> Any:
    return CliRunner().invoke(main, ["lineage", *args], catch_exceptions=False)


def test_lineage_of_the_middle_pipeline_prints_bronze_upstream_and_gold_downstream(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path)
    result = lineage("silver_orders", "--project", str(project))
    assert result.exit_code == 0, result.output
    upstream, downstream = result.output.split("downstream")
    assert "data/bronze/orders" in upstream
    assert "bronze_orders" in upstream
    assert "raw/orders.csv" in upstream
    assert "gold_revenue" not in upstream
    assert "data/silver/orders" in downstream
    assert "gold_revenue" in downstream
    assert "data/gold/revenue" in downstream


def test_lineage_with_columns_chains_gold_revenue_back_through_silver_total(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path)
    result = lineage(
        "data/gold/revenue", "--project", str(project), "--columns", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    graph = json.loads(result.output)
    assert graph["kind"] == "dataset"
    assert graph["columns"] == {
        "orders": [],
        "revenue": ["data/silver/orders.total"],
    }
    (gold,) = graph["upstream"]
    assert gold["name"] == "gold_revenue"
    (silver_table,) = gold["children"]
    assert silver_table["columns"]["total"] == ["data/bronze/orders.amount"]
    assert silver_table["columns"]["email"] == ["data/bronze/orders.customer_email (masked)"]
    (silver,) = silver_table["children"]
    (bronze_table,) = silver["children"]
    assert bronze_table["columns"]["amount"] == ["raw/orders.csv.amount"]
    assert graph["downstream"] == []


def test_lineage_text_with_columns_shows_each_column_and_its_origin(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    result = lineage("bronze_orders", "--project", str(project), "--columns")
    assert result.exit_code == 0, result.output
    assert "total ← data/bronze/orders.amount" in result.output
    assert "revenue ← data/silver/orders.total" in result.output


def test_an_unknown_name_exits_2_with_a_suggestion(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    result = lineage("silver_order", "--project", str(project))
    assert result.exit_code == 2
    assert "No pipeline or dataset is called 'silver_order'" in result.output
    assert "Did you mean 'silver_orders'" in result.output


def test_without_a_project_file_lineage_exits_2_and_says_how_to_fix_it(tmp_path: Path) -> None:
    result = lineage("anything", "--project", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2
    assert "pass --project FILE" in result.output
