"""The subscribers a project's settings add to every run: lineage, traces, alerts.

Each is built only when the project configures it, and imported lazily so a plain
`sluice run` pays nothing for them.
"""

from __future__ import annotations

from pathlib import Path

from sluiceway.core.events import Subscriber
from sluiceway.core.project import Project
from sluiceway.core.spec import Pipeline


def project_subscribers(
    project: Project | None,
    root: Path | None,
    pipeline: Pipeline,
    *,
    base_dir: Path,
    state_dir: Path | None = None,
) -> list[Subscriber]:
    """Subscribers for one run of `pipeline` under `project` (none without a project).

    Args:
        project: the loaded `sluice.yaml`, or None.
        root: the project's folder (relative project paths resolve against it).
        pipeline: the spec being run.
        base_dir: the spec's folder.
        state_dir: where the run is recorded (alert state goes next to it; default: the
            project's state folder).
    """
    if project is None or root is None:
        return []
    subscribers: list[Subscriber] = []
    if project.lineage.transport != "none":
        from sluiceway.observability.lineage import LineageEmitter

        subscribers.append(LineageEmitter(project, root, pipeline, base_dir=base_dir))
    if project.traces.endpoint:
        from sluiceway.observability.traces import TraceSubscriber

        subscribers.append(TraceSubscriber.for_project(project, pipeline))
    if project.alerts:
        from sluiceway.observability.alerts import AlertSubscriber

        subscribers.append(AlertSubscriber(project, root, pipeline, state_dir=state_dir))
    return subscribers
