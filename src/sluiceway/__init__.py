"""sluiceway: production data pipelines with the quality gates built in.

import sluiceway
pipeline = sluiceway.Pipeline.from_yaml("pipeline.yaml")
result = sluiceway.run(pipeline, logical_date=date(2025, 1, 15))
assert result.ok, result.error
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from sluiceway.core.events import Event
from sluiceway.core.loader import cross_checked, load_spec, parse_spec, pipeline_from_dict
from sluiceway.core.runner import RunResult
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
    project: str | Path | None = None,
    subscribers: Sequence[Callable[[Event], None]] = (),
) -> RunResult:
    """Run a pipeline (a `Pipeline`, or the path of its YAML spec) once, as `sluice run`
    does: with the spec's `retries` and `timeout`, and the project's settings (state folder,
    run store, alerts, lineage) when it belongs to one.

    Args:
        pipeline: the model, or its spec file.
        logical_date: the date the run is for (default: today, UTC).
        base_dir: where the spec's relative paths resolve (default: the spec's folder when
            given a path, else the current folder).
        state_dir: where runs are recorded (default: the project's, else $SLUICE_HOME, else
            ./.sluice).
        project: the project file (default: the nearest `sluice.yaml` above `base_dir`
            when given, else above the spec's folder, or the current folder for a model).
        subscribers: called with every event of the run (progress, warnings, the result),
            e.g. to log them from an orchestrator's task.

    Data problems never raise: look at `result.status`, `result.error`, `result.checks` and
    `result.accounting`.

    Raises:
        SpecError: the spec is invalid (a model built in Python is checked as a YAML spec is),
            or it writes a table another pipeline of its project masks otherwise.
        ConfigError: a key the pipeline needs is missing.
    """
    from sluiceway.core.loader import load_project
    from sluiceway.core.project import find_project_file
    from sluiceway.orchestration import ProjectContext, ProjectSpec, run_project_pipeline

    if isinstance(pipeline, Pipeline):
        # The rules between fields a YAML spec is held to (the loader's) hold for a model too.
        pipeline = cross_checked(pipeline)
        folder = Path(base_dir or Path.cwd()).resolve()
        spec_path = folder / f"{pipeline.pipeline}.yaml"
    else:
        spec_path = Path(pipeline).resolve()
        pipeline = load_spec(spec_path)
        folder = Path(base_dir).resolve() if base_dir else spec_path.parent
        spec_path = folder / spec_path.name
    project_file = Path(project) if project else find_project_file(folder)
    context = None
    if project_file is not None:
        project_file = project_file.resolve()
        context = ProjectContext(load_project(project_file), project_file.parent, project_file)
    state = (
        Path(state_dir)
        if state_dir
        else context.state_dir()
        if context is not None
        else Path(os.environ.get("SLUICE_HOME") or Path.cwd() / ".sluice")
    )
    spec = ProjectSpec(pipeline, spec_path)
    if context is not None:
        from sluiceway.orchestration.graph import unlike_masking_problems

        problems = unlike_masking_problems(spec, context.project, context.root)
        if problems:
            raise SpecError(problems, source="the project's sinks")
    return run_project_pipeline(
        spec,
        context,
        state_dir=state,
        logical_date=logical_date,
        subscribers=subscribers,
    )


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
