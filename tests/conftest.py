"""Fixtures shared by the whole suite: a real DuckDB engine and a RunContext around it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest

from sluiceway.core.context import RunContext
from sluiceway.core.events import EventBus
from sluiceway.core.spec import Pipeline
from sluiceway.engines.duckdb import DuckDBEngine

LOGICAL_DATE = date(2024, 1, 2)
MakeContext = Callable[..., RunContext]


@pytest.fixture
def engine() -> Iterator[DuckDBEngine]:
    duck = DuckDBEngine()
    yield duck
    duck.close()


@pytest.fixture
def make_ctx(tmp_path: Path, engine: DuckDBEngine) -> MakeContext:
    """Builds a RunContext for a minimal pipeline (`pipeline` names it) over tmp_path."""

    def build(pipeline: str = "orders", sink: str = "delta") -> RunContext:
        spec = Pipeline.model_validate(
            {
                "version": 1,
                "pipeline": pipeline,
                "sources": {"orders": {"type": "files"}},
                "sinks": [{"type": sink}],
            }
        )
        return RunContext(
            pipeline=spec,
            run_id="run-1",
            logical_date=LOGICAL_DATE,
            engine=engine,
            base_dir=tmp_path,
            state_dir=tmp_path / ".sluice",
            events=EventBus(pipeline, "run-1"),
        )

    return build


@pytest.fixture
def ctx(make_ctx: MakeContext) -> RunContext:
    return make_ctx()
