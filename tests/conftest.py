"""Fixtures shared by the whole suite: a real DuckDB engine and a RunContext around it."""

from __future__ import annotations

import os
import sys
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
_EXIT_STATUS = pytest.StashKey[int]()


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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without the native exit handlers once pytest has reported (see
    sluiceway.cli.entry: a reader thread deltalake leaves for pyarrow datasets can abort
    the process at exit, which would turn a green run into exit code 134)."""
    status = config.stash.get(_EXIT_STATUS, None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
