"""Orchestration: a project's pipelines run in dependency order, and backfills over dates.

- `graph`: the project's specs by name, `depends_on` checked, cycles named, waves, downstream.
- `parallel`: a dependency graph run with at most N pipelines at once, in threads.
- `backfill`: which dates to (re)run from the run store, and a sliding window of runs.

`run_project_pipeline` is the one way these run a pipeline: with the spec's retry policy,
the spec's folder as base, and the project's lineage / traces / alerts subscribers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sluiceway.core.events import Subscriber
from sluiceway.core.project import Project
from sluiceway.core.results import RunResult
from sluiceway.core.runner import RunOptions
from sluiceway.core.spec import Pipeline
from sluiceway.core.store_db import StoreLocation, resolve_location
from sluiceway.orchestration.graph import ProjectSpec


@dataclass(frozen=True)
class ProjectContext:
    """A loaded `sluice.yaml`: the project, its folder and the file itself."""

    project: Project
    root: Path
    path: Path

    def state_dir(self) -> Path:
        """The project's state folder (run store, dead letters, audit log)."""
        return (self.root / self.project.state_dir).resolve()


Warn = Callable[[str], None]


def project_hooks(
    context: ProjectContext | None,
    pipeline: Pipeline,
    *,
    base_dir: Path,
    warn: Warn,
    state_dir: Path | None = None,
) -> list[Subscriber]:
    """The project's lineage / traces / alerts subscribers for one run of `pipeline`.

    A hook module that is not installed is reported through `warn` and left out: the run
    itself must not depend on an observability add-on.
    """
    if context is None:
        return []
    from sluiceway.observability.hooks import project_subscribers

    try:
        return project_subscribers(
            context.project, context.root, pipeline, base_dir=base_dir, state_dir=state_dir
        )
    except ImportError as exc:
        warn(f"project hooks (lineage / traces / alerts) are unavailable: {exc}")
        return []


def store_location(context: ProjectContext | None, state_dir: Path) -> StoreLocation:
    """The run store of a run: $SLUICE_RUN_STORE, else the project's `run_store`, else
    `<state_dir>/runs.db`."""
    if context is None:
        return resolve_location(state_dir)
    return resolve_location(state_dir, run_store=context.project.run_store, root=context.root)


def run_project_pipeline(
    spec: ProjectSpec,
    context: ProjectContext | None,
    *,
    state_dir: Path,
    logical_date: date | None,
    subscribers: Sequence[Subscriber] = (),
    date_range: tuple[date, date] | None = None,
    warn: Warn = lambda _: None,
) -> RunResult:
    """Run one pipeline of a project once, with its retry policy and timeout.

    Args:
        spec: the pipeline and its file (relative paths resolve against its folder).
        context: the project, for its hooks; None outside a project.
        state_dir: where the run is recorded.
        logical_date: the date the run is for (default: today, UTC).
        subscribers: event subscribers (progress, logs) added before the project's hooks.
        date_range: first and last date of a range run (`logical_date` is the last).
        warn: receives warnings (a hook that cannot be loaded).

    Raises:
        ConfigError: a key the pipeline needs is missing from the environment.
    """
    from sluiceway.core.retry import run_with_policy

    base_dir = spec.path.parent
    hooks = project_hooks(context, spec.pipeline, base_dir=base_dir, warn=warn, state_dir=state_dir)
    options = RunOptions(
        logical_date=logical_date,
        base_dir=base_dir,
        state_dir=state_dir,
        subscribers=[*subscribers, *hooks],
        date_range=date_range,
        run_store=store_location(context, state_dir),
    )
    return run_with_policy(spec.pipeline, options)


__all__ = [
    "ProjectContext",
    "ProjectSpec",
    "project_hooks",
    "run_project_pipeline",
    "store_location",
]
