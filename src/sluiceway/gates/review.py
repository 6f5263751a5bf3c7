"""The pre-flight review of a pipeline spec (`sluice check`, and `sluice run --env prod`).

Five readiness checks ask whether everything a production pipeline must state is stated
(source inventory, sla, quality standards, compliance, cost); five production gates ask
whether it is safe to run (data quality, idempotency, cost, observability, reliability).
The review reads the spec only: it connects to nothing and reads no data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sluiceway.core.loader import load_project, load_spec
from sluiceway.core.project import Project, find_project_file
from sluiceway.core.spec import Pipeline
from sluiceway.errors import ConfigError, SpecError
from sluiceway.gates.findings import Finding, Review
from sluiceway.gates.production import gate_findings
from sluiceway.gates.readiness import readiness_findings
from sluiceway.ops.audit import AuditLog

OVERRIDE_ACTION = "review_override"
_UNSET_VARIABLE = re.compile(r"environment variable '([A-Za-z_][A-Za-z0-9_]*)' is not set")


def review(
    pipeline: Pipeline,
    *,
    raw: Mapping[str, Any] | None = None,
    project: Project | None = None,
) -> Review:
    """Review a spec: one or more findings per readiness check and per gate.

    Args:
        pipeline: the validated spec.
        raw: the YAML data as written (`${ENV}` references not resolved), to tell credentials
            written in clear from references; without it credentials are not checked.
        project: the project (`sluice.yaml`) the spec belongs to, for its alert routes.

    Returns:
        The review; `has_failed` when any finding failed.
    """
    return Review(
        pipeline=pipeline.pipeline,
        findings=[*readiness_findings(pipeline, raw), *gate_findings(pipeline, project)],
    )


def read_raw(path: str | Path) -> Mapping[str, Any] | None:
    """The YAML data of `path` as written (no `${ENV}` resolution), None when not a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, Mapping) else None


def load_for_review(path: str | Path) -> tuple[Pipeline, list[str]]:
    """Load the spec at `path` without needing its secrets: `${NAME}` references to unset
    variables (with no default) stand for themselves, as the text `${NAME}`. The review and
    the document read the spec only, so a CI job can run them without production secrets.

    Args:
        path: the YAML spec.

    Returns:
        The loaded spec and the names of the unset variables (sorted; empty when all set).

    Raises:
        SpecError: the spec does not load for another reason than unset variables (every
            problem, with YAML path and line).
    """
    try:
        return load_spec(path), []
    except SpecError as exc:
        unset = [_UNSET_VARIABLE.search(problem.message) for problem in exc.problems]
        if not all(unset):
            raise
        names = sorted({match.group(1) for match in unset if match})
        environ = {**os.environ, **{name: f"${{{name}}}" for name in names}}
        try:
            return load_spec(path, environ=environ), names
        except SpecError:
            raise exc from None  # a placeholder does not fit (e.g. a port): ask for the value


def review_file(path: str | Path) -> tuple[Pipeline, Review]:
    """Load the spec at `path` (secrets not needed, see `load_for_review`) and review it,
    credentials included.

    Raises:
        SpecError: the spec does not load (every problem, with YAML path and line).
    """
    pipeline, _ = load_for_review(path)
    return pipeline, review(pipeline, raw=read_raw(path), project=project_of(path))


def project_of(spec: str | Path) -> Project | None:
    """The project (nearest `sluice.yaml` above the spec), or None; a project file that does
    not load is a SpecError naming it."""
    found = find_project_file(Path(spec).resolve().parent)
    return load_project(found) if found else None


def enforce_review(
    pipeline: Pipeline,
    spec_path: str | Path,
    *,
    env: str,
    override_reason: str | None,
    state_dir: Path,
) -> Review | None:
    """Refuse a production run of a spec that fails the review, unless overridden.

    Args:
        pipeline: the loaded spec.
        spec_path: its file (read again as written, to check credentials).
        env: the target environment; only "prod" is reviewed.
        override_reason: why the run goes ahead despite failures; recorded in the audit log.
        state_dir: the state folder holding the audit log.

    Returns:
        The review (env prod), or None (any other env: no review).

    Raises:
        ConfigError: env is prod, the review fails and no reason was given.
    """
    if env != "prod":
        return None
    result = review(pipeline, raw=read_raw(spec_path), project=project_of(spec_path))
    if not result.has_failed:
        return result
    failed = result.of("fail")
    if override_reason is None or not override_reason.strip():
        raise ConfigError(refusal_message(pipeline.pipeline, str(spec_path), failed))
    AuditLog(state_dir).append(
        OVERRIDE_ACTION,
        pipeline=pipeline.pipeline,
        details={
            "reason": override_reason,
            "failed": sorted({f.check for f in failed}),
            "spec": str(spec_path),
            "env": env,
        },
    )
    return result


def refusal_message(pipeline: str, spec: str, failed: list[Finding]) -> str:
    """Why a prod run is refused: every failing finding with its fix, and how to override."""
    lines = [
        f"pipeline '{pipeline}' ({spec}) fails the pre-flight review with {len(failed)} "
        "failing finding(s); it does not run in prod:"
    ]
    lines += [f"  - [{f.group}] {f.check}: {f.reason}\n    fix: {f.fix}" for f in failed]
    lines.append(
        "Fix the spec (see `sluice check " + spec + "`), or run anyway with "
        '--override-review "reason" (the reason is recorded in the audit log).'
    )
    return "\n".join(lines)
