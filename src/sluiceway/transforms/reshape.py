"""The `select`, `rename` and `cast` steps: shape columns, never rows."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from sluiceway.core import registry
from sluiceway.core.context import META_COLUMNS, RunContext, StepOutput
from sluiceway.core.spec import ColumnType, StepConfig
from sluiceway.engines.duckdb import quote_ident
from sluiceway.errors import StepError

_DUCK_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "float": "DOUBLE",
    "decimal": "DECIMAL(18,2)",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
    "timestamp_ntz": "TIMESTAMP",
    "json": "VARCHAR",
}


class SelectStepConfig(StepConfig):
    """Keep these columns, in this order."""

    key: ClassVar[str] = "select"
    shorthand: ClassVar[str | None] = "columns"
    columns: list[str] = Field(min_length=1, description="Columns to keep, in order.")


class RenameStepConfig(StepConfig):
    """Rename columns."""

    key: ClassVar[str] = "rename"
    shorthand: ClassVar[str | None] = "columns"
    wraps_mapping: ClassVar[bool] = True
    columns: dict[str, str] = Field(description="Old name → new name.")


class CastStepConfig(StepConfig):
    """Cast columns; a value that cannot be cast fails the step (the contract is the place to reject rows)."""

    key: ClassVar[str] = "cast"
    shorthand: ClassVar[str | None] = "columns"
    wraps_mapping: ClassVar[bool] = True
    columns: dict[str, ColumnType] = Field(description="Column → type.")


def _existing(ctx: RunContext, table: str, wanted: list[str], step: str) -> list[str]:
    present = [c for c, _ in ctx.engine.columns(table)]
    missing = [c for c in wanted if c not in present]
    if missing:
        raise StepError(
            f"{step}: no column {', '.join(map(repr, missing))}; columns are: "
            f"{', '.join(c for c in present if c not in META_COLUMNS)}"
        )
    return present


class SelectStep:
    """Projection."""

    def __init__(self, config: SelectStepConfig) -> None:
        self.config = config

    def apply(self, ctx: RunContext, table: str, *, rows_in: int | None = None) -> StepOutput:
        """Keep the listed columns (and the row bookkeeping columns)."""
        present = _existing(ctx, table, self.config.columns, "select")
        keep = [*self.config.columns, *(c for c in META_COLUMNS if c in present)]
        sql = f"SELECT {', '.join(quote_ident(c) for c in keep)} FROM {quote_ident(table)}"
        return StepOutput(
            ctx.engine.create_table(ctx.engine.new_name("select"), sql, purpose="select step")
        )


class RenameStep:
    """Renames."""

    def __init__(self, config: RenameStepConfig) -> None:
        self.config = config

    def apply(self, ctx: RunContext, table: str, *, rows_in: int | None = None) -> StepOutput:
        """Rename the listed columns, keep the rest."""
        present = _existing(ctx, table, list(self.config.columns), "rename")
        cols = [
            f"{quote_ident(c)} AS {quote_ident(self.config.columns.get(c, c))}" for c in present
        ]
        sql = f"SELECT {', '.join(cols)} FROM {quote_ident(table)}"
        return StepOutput(
            ctx.engine.create_table(ctx.engine.new_name("rename"), sql, purpose="rename step")
        )


class CastStep:
    """Strict casts."""

    def __init__(self, config: CastStepConfig) -> None:
        self.config = config

    def apply(self, ctx: RunContext, table: str, *, rows_in: int | None = None) -> StepOutput:
        """Cast the listed columns; a failed cast is a StepError naming the column."""
        present = _existing(ctx, table, list(self.config.columns), "cast")
        cols = [
            f"CAST({quote_ident(c)} AS {_DUCK_TYPES[self.config.columns[c]]}) AS {quote_ident(c)}"
            if c in self.config.columns
            else quote_ident(c)
            for c in present
        ]
        sql = f"SELECT {', '.join(cols)} FROM {quote_ident(table)}"
        return StepOutput(
            ctx.engine.create_table(ctx.engine.new_name("cast"), sql, purpose="cast step")
        )


registry.register("step", "select", SelectStepConfig, SelectStep)
registry.register("step", "rename", RenameStepConfig, RenameStep)
registry.register("step", "cast", CastStepConfig, CastStep)
