"""The `python` step: a user function Arrow RecordBatch → RecordBatch (or Table → Table).

User code runs at exactly this boundary; its errors come back as StepError naming the
function and the batch, with the original exception as the cause. A function that raises
`sluiceway.errors.TransientError` (a service it calls is down) keeps it: the step's and the
run's `retries` policies retry it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from sluiceway.core import registry
from sluiceway.core.context import RunContext, StepOutput
from sluiceway.core.spec import StepConfig
from sluiceway.errors import StepError, TransientError


class PythonStepConfig(StepConfig):
    """Call `module:function` on Arrow data."""

    key: ClassVar[str] = "python"
    shorthand: ClassVar[str | None] = "function"
    function: str = Field(
        pattern=r"^[\w.]+:[\w]+$", description="Import path 'package.module:function'."
    )
    batch_rows: int = Field(100_000, ge=1, description="Rows per batch handed to the function.")
    rows: Literal["preserve", "filter"] = Field(
        "preserve",
        description="preserve: the function returns as many rows as it got; filter: it may drop rows.",
    )


def load_function(path: str) -> Callable[[Any], Any]:
    """Import 'package.module:function'; StepError says what is missing."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StepError(
            f"python step: cannot import module '{module_name}' ({exc}); is it on PYTHONPATH?"
        ) from exc
    function = getattr(module, attr, None)
    if not callable(function):
        raise StepError(f"python step: '{module_name}' has no function '{attr}'")
    return function


class PythonStep:
    """Runs the function batch by batch and checks what it returns."""

    def __init__(self, config: PythonStepConfig) -> None:
        self.config = config
        self.function = load_function(config.function)

    def apply(self, ctx: RunContext, table: str, *, rows_in: int | None = None) -> StepOutput:
        """Feed every batch of `table` to the function; collect its batches."""
        engine = ctx.engine
        reader = engine.fetch_reader(f'SELECT * FROM "{table}"', batch_rows=self.config.batch_rows)
        outputs = [self._call(batch, index, ctx) for index, batch in enumerate(reader)]
        result = (
            pa.Table.from_batches(outputs)
            if outputs
            else engine.fetch_arrow(f'SELECT * FROM "{table}" LIMIT 0')
        )
        before = engine.count(table) if rows_in is None else rows_in
        if self.config.rows == "preserve" and result.num_rows != before:
            raise StepError(
                f"python step {self.config.function} returned {result.num_rows} rows for {before}; "
                "set rows: filter if it drops rows on purpose"
            )
        out = engine.register_arrow(engine.new_name("python"), result)
        return StepOutput(out, filtered=before - result.num_rows, rows=result.num_rows)

    def _call(self, batch: pa.RecordBatch, index: int, ctx: RunContext) -> pa.RecordBatch:
        try:
            out = self.function(batch)
        except TransientError as exc:
            raise exc.with_context(function=self.config.function, batch=index) from exc.__cause__
        except Exception as exc:
            raise StepError(
                f"python step {self.config.function} raised {type(exc).__name__}: {exc}",
                context={"pipeline": ctx.pipeline.pipeline, "run_id": ctx.run_id, "batch": index},
            ) from exc
        if isinstance(out, pa.Table):
            out = (
                out.combine_chunks().to_batches()[0]
                if out.num_rows
                else pa.RecordBatch.from_pylist([], schema=out.schema)
            )
        if not isinstance(out, pa.RecordBatch):
            raise StepError(
                f"python step {self.config.function} returned {type(out).__name__}, "
                "not a pyarrow RecordBatch or Table",
                context={"batch": index},
            )
        return out


registry.register("step", "python", PythonStepConfig, PythonStep)
