"""The `filter` step: keep rows matching a condition; dropped rows are counted as filtered."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from sluiceway.core import registry
from sluiceway.core.context import RunContext, StepOutput
from sluiceway.core.spec import StepConfig
from sluiceway.engines.duckdb import quote_ident


class FilterStepConfig(StepConfig):
    """Keep the rows for which `where` is true."""

    key: ClassVar[str] = "filter"
    shorthand: ClassVar[str | None] = "where"
    where: str = Field(
        description="SQL condition; rows where it is false or NULL are filtered out."
    )


class FilterStep:
    """Drops rows on purpose and counts them."""

    def __init__(self, config: FilterStepConfig) -> None:
        self.config = config

    def apply(self, ctx: RunContext, table: str, *, rows_in: int | None = None) -> StepOutput:
        """Keep rows matching the condition."""
        engine = ctx.engine
        out = engine.create_table(
            engine.new_name("filter"),
            f"SELECT * FROM {quote_ident(table)} WHERE coalesce(({self.config.where}), false)",
            purpose="filter step",
        )
        before = engine.count(table) if rows_in is None else rows_in
        after = engine.count(out)
        return StepOutput(out, filtered=before - after, rows=after)


registry.register("step", "filter", FilterStepConfig, FilterStep)
