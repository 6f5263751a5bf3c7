"""`sluice validate` names an SQL step's unknown relation before any run reads a source."""

from __future__ import annotations

from typing import Any

import pytest

from sluiceway.core.loader import parse_spec
from sluiceway.errors import SpecError


def spec(*queries: str) -> str:
    steps = "\n".join(f"  - sql: {q!r}" for q in queries)
    return (
        "version: 1\npipeline: orders\nsources:\n"
        "  events: {type: files, path: data/}\n  users: {type: files, path: users/}\n"
        f"steps:\n{steps}\nsinks:\n  - {{type: delta, path: lake/orders}}\n"
    )


def problems(text: str) -> list[Any]:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, source="pipeline.yaml")
    return caught.value.problems


def test_a_misspelt_relation_is_a_problem_of_its_step_with_a_suggestion() -> None:
    [found] = problems(spec("SELECT * FROM input", "SELECT * FROM inptu"))

    assert found.path == "steps[1].sql"
    assert "'inptu'" in found.message and "Did you mean 'input'?" in found.message


def test_a_misspelt_source_in_a_join_is_found_beside_ctes() -> None:
    query = "WITH x AS (SELECT * FROM input) SELECT * FROM x JOIN usres u USING (id)"

    [found] = problems(spec(query))

    assert "'usres'" in found.message and "Did you mean 'users'?" in found.message


@pytest.mark.parametrize(
    "query",
    [
        "WITH x AS (SELECT * FROM input) SELECT * FROM x JOIN users USING (id)",
        "SELECT * FROM input, read_parquet('extra.parquet') p",
        "SELECT * FROM 'lookups/codes.csv'",
        "SELECT table_name FROM information_schema.tables",
        "SELECT * FROM range(10)",
        "SELECT * FROM input WHERE id IN (SELECT id FROM events)",
        "this is not SQL sqlglot can read",
        "SELECT * FROM INPUT JOIN Users USING (id)",
        "WITH Clean AS (SELECT * FROM input) SELECT * FROM clean",
    ],
)
def test_known_relations_files_functions_and_unparsed_queries_pass(query: str) -> None:
    assert parse_spec(spec(query), source="pipeline.yaml").steps[0].query == query
