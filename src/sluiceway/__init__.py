"""sluiceway: production data pipelines with the quality gates built in.

import sluiceway
pipeline = sluiceway.Pipeline.from_yaml("pipeline.yaml")
result = sluiceway.run(pipeline, logical_date=date(2025, 1, 15))
assert result.ok, result.error
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from sluiceway.core.loader import load_spec, parse_spec, pipeline_from_dict
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline
from sluiceway.core.spec import ColumnContract, Contract, Pipeline
from sluiceway.errors import SluicewayError, SpecError


def _from_yaml(cls: type[Pipeline], path: str | Path) -> Pipeline:
    return load_spec(path)


def _from_dict(cls: type[Pipeline], data: dict[str, Any]) -> Pipeline:
    return pipeline_from_dict(data)


Pipeline.from_yaml = classmethod(_from_yaml)  # type: ignore[attr-defined]
Pipeline.from_dict = classmethod(_from_dict)  # type: ignore[attr-defined]


def run(
    pipeline: Pipeline | str | Path,
    *,
    logical_date: date | None = None,
    base_dir: str | Path | None = None,
    state_dir: str | Path | None = None,
) -> RunResult:
    """Run a pipeline (a `Pipeline`, or the path of its YAML spec) once.

    Relative paths in the spec resolve against `base_dir` (default: the spec's folder when
    given a path, else the current folder). Data problems never raise: look at
    `result.status`, `result.error`, `result.checks` and `result.accounting`.

    Raises:
        SpecError: the spec is invalid.
        ConfigError: a key the pipeline needs is missing.
    """
    if not isinstance(pipeline, Pipeline):
        spec_path = Path(pipeline)
        pipeline = load_spec(spec_path)
        base_dir = base_dir or spec_path.resolve().parent
    options = RunOptions(
        logical_date=logical_date,
        base_dir=Path(base_dir) if base_dir else None,
        state_dir=Path(state_dir) if state_dir else None,
    )
    return run_pipeline(pipeline, options)


__all__ = [
    "ColumnContract",
    "Contract",
    "Pipeline",
    "RunResult",
    "SluicewayError",
    "SpecError",
    "load_spec",
    "parse_spec",
    "run",
]
