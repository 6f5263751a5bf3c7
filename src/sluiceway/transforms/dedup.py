"""The `dedup` step: one row per key, the first or last by an order column."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from sluiceway.core import registry
from sluiceway.core.context import ROW_FILE, ROW_NUMBER, RunContext, StepOutput
from sluiceway.core.spec import StepConfig
from sluiceway.engines.duckdb import quote_ident


class DedupStepConfig(StepConfig):
    """Keep one row per key."""

    key: ClassVar[str] = "dedup"
    shorthand: ClassVar[str | None] = "keys"
    keys: list[str] = Field(min_length=1, description="Columns that identify a row.")
    order_by: str | None = Field(
        None, description="Column that orders duplicates (default: arrival order: file, then row)."
    )
    keep: Literal["first", "last"] = Field("first", description="Which duplicate to keep.")
    window: str | None = Field(
        None, description="Time window for streams (batch runs dedup the whole run)."
    )


class DedupStep:
    """Deterministic dedup: ties on the order column break by arrival order."""

    def __init__(self, config: DedupStepConfig) -> None:
        self.config = config

    def apply(self, ctx: RunContext, table: str, *, rows_in: int | None = None) -> StepOutput:
        """Keep the first (or last) row of every key.

        The result is a view (the window runs once, when the result is staged); the number
        of rows it keeps is the number of distinct keys, counted by an aggregate.
        """
        engine = ctx.engine
        direction = "ASC" if self.config.keep == "first" else "DESC"
        order = (
            [f"{quote_ident(self.config.order_by)} {direction} NULLS LAST"]
            if self.config.order_by
            else []
        )
        present = {c for c, _ in engine.columns(table)}
        order += [f"{c} {direction}" for c in (ROW_FILE, ROW_NUMBER) if c in present]
        keys = ", ".join(quote_ident(k) for k in self.config.keys)
        over = f"PARTITION BY {keys}" + (f" ORDER BY {', '.join(order)}" if order else "")
        out = engine.create_view(
            engine.new_name("dedup"),
            f"SELECT * FROM {quote_ident(table)} QUALIFY row_number() OVER ({over}) = 1",
            purpose="dedup step",
        )
        before = engine.count(table) if rows_in is None else rows_in
        kept = int(
            engine.fetch_one(
                f"SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {quote_ident(table)})",
                purpose="count distinct keys",
            )[0]
        )
        return StepOutput(out, deduplicated=before - kept, rows=kept)


registry.register("step", "dedup", DedupStepConfig, DedupStep)
