"""The `sql` step: a DuckDB query over `input` and every source by name."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from sluiceway.core import registry
from sluiceway.core.context import RunContext, StepOutput
from sluiceway.core.spec import StepConfig
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident
from sluiceway.errors import StepError


class SqlStepConfig(StepConfig):
    """A SELECT over `input` (the previous step's result) and the sources by name."""

    key: ClassVar[str] = "sql"
    shorthand: ClassVar[str | None] = "query"
    query: str = Field(
        description="The SELECT; `input` is the previous result, sources join by name."
    )
    rows: Literal["preserve", "filter"] = Field(
        "preserve",
        description="preserve: the query must keep every row (a changed count fails the run); "
        "filter: rows it drops are counted as filtered.",
    )


class SqlStep:
    """Runs the query and checks it kept the row count it promised."""

    def __init__(self, config: SqlStepConfig) -> None:
        self.config = config

    @property
    def defers_count(self) -> bool:
        """True when the step promises to keep the row count and leaves the check to the
        runner, which verifies it once the result is counted anyway (see `verify`)."""
        return self.config.rows == "preserve"

    def apply(self, ctx: RunContext, table: str, *, rows_in: int | None = None) -> StepOutput:
        """Run the query with `input` bound to `table`.

        With `rows: preserve` the result is a view and is not counted here: the runner
        calls `verify` when it knows the count. With `rows: filter` it is counted now.
        """
        engine = ctx.engine
        engine.create_view("input", f"SELECT * FROM {quote_ident(table)}")
        out = self._create(engine, table, self.config.query)
        if self.defers_count:
            return StepOutput(out)
        before = engine.count(table) if rows_in is None else rows_in
        after = engine.count(out)
        self.verify(before, after)
        return StepOutput(out, filtered=before - after, rows=after)

    def verify(self, before: int, after: int) -> None:
        """Raise StepError when the result's row count breaks what `rows:` promised."""
        if self.config.rows == "preserve" and after != before:
            raise StepError(
                f"the sql step changed the row count from {before} to {after} but says rows: preserve; "
                "if it filters on purpose set `rows: filter` (dropped rows are then counted as filtered), "
                "else fix the join or WHERE that adds or drops rows"
            )
        if after > before:
            raise StepError(
                f"the sql step (rows: filter) grew the row count from {before} to {after}; "
                "a filter can only drop rows"
            )

    def _create(self, engine: DuckDBEngine, table: str, query: str) -> str:
        """A row-preserving query stays a view (the next stage computes it once); a filter is
        materialized, since its result is counted and read again."""
        name = engine.new_name("sql")
        if self.config.rows == "preserve":
            # The newline ends a trailing `-- comment` before the closing parenthesis.
            body = query.strip().rstrip(";")
            bound = f"WITH input AS (SELECT * FROM {quote_ident(table)}) SELECT * FROM ({body}\n)"
            return engine.create_view(name, bound, purpose="sql step")
        return engine.create_table(name, query, purpose="sql step")


registry.register("step", "sql", SqlStepConfig, SqlStep)
