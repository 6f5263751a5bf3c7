"""What `sluice validate` can tell about SQL steps without running them: the relations
they read. A step may read `input`, the sources by name and its own CTEs; anything else
(a misspelt name) would only fail at run time, after the sources were read."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from sluiceway.core import registry
from sluiceway.core.spec import Pipeline
from sluiceway.errors import SpecProblem


def sql_step_problems(pipeline: Pipeline) -> list[SpecProblem]:
    """An unknown relation in a SQL step, with a did-you-mean; a query sqlglot cannot parse
    is left to DuckDB (its dialect is wider)."""
    known = ["input", *pipeline.sources]
    problems = []
    for index, step in enumerate(pipeline.steps):
        if step.key != "sql":
            continue
        for name in _unknown_relations(getattr(step, "query", ""), known):
            hint = registry.did_you_mean(name, known)
            problems.append(
                SpecProblem(
                    f"steps[{index}].sql",
                    f"the query reads '{name}', which is not input nor a source "
                    f"({', '.join(known)}).{hint}",
                )
            )
    return problems


def _unknown_relations(query: str, known: list[str]) -> list[str]:
    try:
        tree = sqlglot.parse_one(query, dialect="duckdb")
    except sqlglot.errors.SqlglotError:
        return []
    # DuckDB's names are case-insensitive: FROM INPUT and FROM Orders are fine.
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    allowed = {name.lower() for name in known} | ctes
    found = []
    for table in tree.find_all(exp.Table):
        if table.db or table.catalog or not isinstance(table.this, exp.Identifier):
            continue  # schema-qualified (information_schema.x), a table function or a file
        name = table.name
        if any(mark in name for mark in "./*"):
            continue  # FROM 'data/x.parquet': DuckDB reads the file
        if name.lower() not in allowed and name not in found:
            found.append(name)
    return found
