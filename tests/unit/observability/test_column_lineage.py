"""Column lineage derived from a spec: SQL steps through sqlglot, the reshaping steps, PII
masking, and steps that cannot be analysed."""

from __future__ import annotations

from typing import Any

import pytest

from sluiceway.core.loader import pipeline_from_dict
from sluiceway.observability.column_lineage import ColumnLineage, column_lineage

ORDERS = {
    "type": "files",
    "path": "orders.csv",
    "contract": {
        "columns": {
            "order_id": {"type": "integer"},
            "customer_id": {"type": "integer"},
            "amount": {"type": "double"},
        }
    },
}
CUSTOMERS = {
    "type": "files",
    "path": "customers.csv",
    "contract": {"columns": {"id": {"type": "integer"}, "email": {"type": "string"}}},
}


def lineage_of(
    steps: list[Any], *, pii: dict[str, str] | None = None, **sources: Any
) -> ColumnLineage:
    spec = {
        "version": 1,
        "pipeline": "orders",
        "sources": sources or {"orders": ORDERS, "customers": CUSTOMERS},
        "steps": steps,
        "pii": pii or {},
        "sinks": [{"type": "delta", "path": "out"}],
    }
    return column_lineage(pipeline_from_dict(spec))


def origins(result: ColumnLineage, column: str) -> list[tuple[str, str]]:
    return [(o.source, o.column) for o in result.origins[column]]


def test_a_sql_join_maps_each_output_column_to_the_source_columns_it_reads() -> None:
    result = lineage_of(
        [
            {
                "sql": "SELECT o.order_id, o.amount + o.customer_id AS mixed, c.email "
                "FROM input AS o JOIN customers AS c ON o.customer_id = c.id"
            }
        ]
    )
    assert list(result.columns) == ["order_id", "mixed", "email"]
    assert origins(result, "order_id") == [("orders", "order_id")]
    assert sorted(origins(result, "mixed")) == [("orders", "amount"), ("orders", "customer_id")]
    assert origins(result, "email") == [("customers", "email")]
    assert result.origins["order_id"][0].transformations == ()
    assert result.origins["mixed"][0].transformations[0].subtype == "TRANSFORMATION"
    assert result.notes == []


def test_select_star_expands_from_the_contract_columns() -> None:
    result = lineage_of([{"sql": "SELECT * FROM input"}])
    assert list(result.columns) == ["order_id", "customer_id", "amount"]
    assert origins(result, "amount") == [("orders", "amount")]


def test_an_aggregate_is_marked_as_aggregation_and_typed_by_sqlglot() -> None:
    result = lineage_of(
        [
            {
                "sql": {
                    "query": "SELECT customer_id, sum(amount) AS spent FROM input GROUP BY 1",
                    "rows": "filter",
                }
            }
        ]
    )
    (spent,) = result.origins["spent"]
    assert (spent.source, spent.column) == ("orders", "amount")
    assert spent.transformations[0].subtype == "AGGREGATION"
    assert result.columns["spent"] == "DOUBLE"


def test_lineage_chains_through_two_sql_steps_a_rename_and_a_cast() -> None:
    result = lineage_of(
        [
            {"sql": "SELECT order_id, amount * 2 AS doubled FROM input"},
            {"rename": {"doubled": "total"}},
            {"sql": "SELECT total, order_id FROM input"},
            {"cast": {"total": "decimal"}},
        ]
    )
    assert list(result.columns) == ["total", "order_id"]
    (total,) = result.origins["total"]
    assert (total.source, total.column) == ("orders", "amount")
    assert [t.description for t in total.transformations] == [
        '"input"."amount" * 2',
        "CAST AS DECIMAL",
    ]
    assert result.columns["total"] == "DECIMAL"


def test_select_keeps_only_the_listed_columns_and_dedup_keeps_them_all() -> None:
    result = lineage_of([{"dedup": {"keys": ["order_id"]}}, {"select": ["amount", "order_id"]}])
    assert list(result.columns) == ["amount", "order_id"]
    assert origins(result, "amount") == [("orders", "amount")]


def test_a_masked_column_carries_a_masking_transformation_with_its_method() -> None:
    result = lineage_of(
        [
            {
                "sql": "SELECT i.order_id, c.email FROM input i JOIN customers c ON i.customer_id = c.id"
            }
        ],
        pii={"email": "hmac"},
    )
    (email,) = result.origins["email"]
    assert email.is_masked
    assert email.transformations[-1].description == "MASKED: pii hmac"
    assert not result.origins["order_id"][0].is_masked


def test_a_python_step_maps_every_output_column_to_every_input_column_and_says_so() -> None:
    result = lineage_of([{"python": "my_module:transform"}])
    expected = [("orders", "amount"), ("orders", "customer_id"), ("orders", "order_id")]
    assert sorted(origins(result, "order_id")) == expected
    assert sorted(origins(result, "amount")) == expected
    (note,) = result.notes
    assert note.startswith("steps[0].python cannot be analysed")


def test_a_query_sqlglot_cannot_parse_is_treated_as_opaque() -> None:
    result = lineage_of([{"sql": "SELECT FROM WHERE ("}])
    assert "steps[0].sql cannot be analysed" in result.notes[0]
    assert "sqlglot" in result.notes[0]


@pytest.mark.parametrize("steps", [[], [{"filter": "amount > 0"}]])
def test_a_source_without_a_contract_has_unknown_columns_and_a_note(steps: list[Any]) -> None:
    result = lineage_of(steps, raw={"type": "files", "path": "x.csv"})
    assert result.columns == {}
    assert "the columns of source raw are unknown" in result.notes[0]


def test_quoted_mixed_case_columns_keep_their_names_origins_and_masking() -> None:
    people = {
        "type": "files",
        "path": "people.csv",
        "contract": {"columns": {"Full Name": {"type": "string"}, "Country": {"type": "string"}}},
    }

    result = lineage_of(
        [{"sql": 'SELECT "Full Name", upper("Country") AS Country FROM input'}],
        pii={"Full Name": "hash"},
        people=people,
    )

    assert list(result.columns) == ["Full Name", "Country"]
    assert origins(result, "Full Name") == [("people", "Full Name")]
    assert origins(result, "Country") == [("people", "Country")]
    assert [o.is_masked for o in result.origins["Full Name"]] == [True]
