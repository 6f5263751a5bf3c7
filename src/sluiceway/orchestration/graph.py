"""The pipelines of a project and their dependency graph.

Every spec the project lists is loaded once (all spec problems are reported together), the
`depends_on` names are checked against the project's pipelines, and a cycle is a spec error
that names it: `a → b → a`. The graph then answers the orchestration questions: the
topological waves (pipelines of one wave may run at once) and the downstream closure of a
pipeline (itself and everything that depends on it, directly or not).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from sluiceway.core.loader import load_spec
from sluiceway.core.project import Project
from sluiceway.core.registry import did_you_mean
from sluiceway.core.spec import Pipeline
from sluiceway.errors import SpecError, SpecProblem


@dataclass(frozen=True)
class ProjectSpec:
    """One pipeline of a project: its validated spec and the file it came from."""

    pipeline: Pipeline
    path: Path

    @property
    def name(self) -> str:
        return self.pipeline.pipeline


@dataclass(frozen=True)
class PipelineGraph:
    """The project's pipelines by name and, for each, the pipelines it depends on."""

    specs: Mapping[str, ProjectSpec]
    depends_on: Mapping[str, tuple[str, ...]]

    def dependents(self, name: str) -> list[str]:
        """The pipelines that list `name` in their `depends_on`, sorted."""
        return sorted(n for n, deps in self.depends_on.items() if name in deps)

    def resolve(self, name: str) -> ProjectSpec:
        """The pipeline called `name`.

        Raises:
            SpecError: no pipeline of the project has that name (with a did-you-mean).
        """
        if name in self.specs:
            return self.specs[name]
        known = sorted(self.specs)
        message = (
            f"no pipeline '{name}' in the project (pipelines: {', '.join(known) or 'none'})."
            f"{did_you_mean(name, known)}"
        )
        raise SpecError([SpecProblem("pipelines", message)], source="the project")


def load_project_specs(project: Project, root: Path) -> dict[str, ProjectSpec]:
    """Load every spec the project lists, keyed by pipeline name.

    Raises:
        SpecError: a spec is invalid, a listed file is missing, or two specs share a name;
            every problem of every spec is reported at once.
    """
    specs: dict[str, ProjectSpec] = {}
    problems: list[SpecProblem] = []
    paths = project.spec_paths(root)
    if not paths:
        where = ", ".join(project.pipelines)
        message = f"the project lists no spec files (looked in: {where}); add YAML specs there"
        raise SpecError([SpecProblem("pipelines", message)], source="the project")
    for path in paths:
        try:
            pipeline = load_spec(path)
        except SpecError as exc:
            problems.extend(_in_file(p, path) for p in exc.problems)
            continue
        if pipeline.pipeline in specs:
            first = specs[pipeline.pipeline].path
            message = f"pipeline name '{pipeline.pipeline}' is also used by {first}; rename one"
            problems.append(SpecProblem("pipeline", message, file=str(path)))
            continue
        specs[pipeline.pipeline] = ProjectSpec(pipeline, path)
    if problems:
        raise SpecError(problems, source="the project's specs")
    return specs


@dataclass(frozen=True)
class UsableGraph:
    """The part of a project that can run, and what was left out: one team's broken spec
    does not stop the other pipelines (`sluice run --all`, the scheduler)."""

    graph: PipelineGraph
    problems: list[SpecProblem]
    """Every problem of the specs left out: a spec that does not load, a duplicate name,
    a dependency on a pipeline left out or unknown, a cycle, a table masked otherwise."""
    left_out: dict[str, str]
    """Spec file → the pipeline it would run, or its file name when it does not load."""
    waits_on: dict[str, str]
    """A pipeline left out for a dependency → that dependency (left out or unknown)."""

    def left_out_below(self, name: str) -> list[str]:
        """The pipelines left out because they depend on `name`, directly or not."""
        found: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop()
            for waiting, dependency in self.waits_on.items():
                if dependency == current and waiting not in found:
                    found.add(waiting)
                    todo.append(waiting)
        return sorted(found)


def usable_graph(project: Project, root: Path) -> UsableGraph:
    """The graph of the specs that load and whose dependencies are usable; the others are
    left out with their problems (what `load_project_specs` and `build_graph` would raise).

    Raises:
        SpecError: the project lists no spec file.
    """
    paths = project.spec_paths(root)
    if not paths:
        load_project_specs(project, root)  # raises, naming where it looked
    specs: dict[str, ProjectSpec] = {}
    problems: list[SpecProblem] = []
    left_out: dict[str, str] = {}
    waits_on: dict[str, str] = {}
    for path in paths:
        try:
            pipeline = load_spec(path)
        except SpecError as exc:
            problems.extend(_in_file(p, path) for p in exc.problems)
            left_out[str(path)] = _name_in(path) or path.name
            continue
        if pipeline.pipeline in specs:
            first = specs[pipeline.pipeline].path
            message = f"pipeline name '{pipeline.pipeline}' is also used by {first}; rename one"
            problems.append(SpecProblem("pipeline", message, file=str(path)))
            left_out[str(path)] = pipeline.pipeline
            continue
        specs[pipeline.pipeline] = ProjectSpec(pipeline, path)
    known = sorted({*specs, *left_out.values()})

    def leave_out(name: str, problem: SpecProblem | None) -> None:
        if problem is not None:
            problems.append(problem)
        left_out[str(specs.pop(name).path)] = name

    for problem in shared_table_problems(specs):
        writer = next((n for n, sp in specs.items() if str(sp.path) == problem.file), None)
        if writer is not None and writer in specs:
            leave_out(writer, problem)
        else:
            problems.append(problem)
    while True:  # a pipeline whose dependency is left out cannot run either
        missing = {
            name: [d for d in spec.pipeline.depends_on if d not in specs]
            for name, spec in specs.items()
        }
        for name, deps in sorted(missing.items()):
            if deps:
                message = (
                    f"pipeline '{name}' depends on '{deps[0]}', which is left out (its spec "
                    f"has problems) or unknown (pipelines in the project: {', '.join(known)})."
                    f"{did_you_mean(deps[0], known)}"
                )
                waits_on[name] = deps[0]
                leave_out(name, _at(specs[name], "depends_on", message))
        if any(missing.values()):
            continue
        depends_on = {n: tuple(dict.fromkeys(sp.pipeline.depends_on)) for n, sp in specs.items()}
        cycle = find_cycle(depends_on)
        if cycle is None:
            graph = PipelineGraph(dict(specs), depends_on)
            return UsableGraph(graph, problems, left_out, waits_on)
        message = f"dependency cycle: {' → '.join(cycle)}; remove one of these depends_on entries"
        starts = specs[cycle[0]]
        for name in set(cycle):
            leave_out(name, _at(starts, "depends_on", message) if name == cycle[0] else None)


def _name_in(path: Path) -> str | None:
    """The `pipeline:` name a spec that does not validate still gives, if it reads as YAML."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    name = data.get("pipeline") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def build_graph(specs: Mapping[str, ProjectSpec]) -> PipelineGraph:
    """The dependency graph of `specs`.

    Raises:
        SpecError: a `depends_on` names an unknown pipeline (with a did-you-mean), or the
            dependencies form a cycle (named, e.g. `a → b → a`).
    """
    known = sorted(specs)
    problems: list[SpecProblem] = []
    for name, spec in sorted(specs.items()):
        for index, dep in enumerate(spec.pipeline.depends_on):
            if dep not in specs:
                message = (
                    f"pipeline '{name}' depends on unknown pipeline '{dep}' "
                    f"(pipelines in the project: {', '.join(known)}).{did_you_mean(dep, known)}"
                )
                problems.append(_at(spec, f"depends_on[{index}]", message))
    if problems:
        raise SpecError(problems, source="the project's depends_on")
    problems = shared_table_problems(specs)
    if problems:
        raise SpecError(problems, source="the project's sinks")
    graph = PipelineGraph(
        specs=dict(specs),
        depends_on={n: tuple(dict.fromkeys(s.pipeline.depends_on)) for n, s in specs.items()},
    )
    cycle = find_cycle(graph.depends_on)
    if cycle:
        spec = specs[cycle[0]]
        message = f"dependency cycle: {' → '.join(cycle)}; remove one of these depends_on entries"
        raise SpecError([_at(spec, "depends_on", message)], source="the project's depends_on")
    return graph


def shared_table_problems(specs: Mapping[str, ProjectSpec]) -> list[SpecProblem]:
    """Pipelines that write one table (a sink `path`) but do not mask it alike: a column
    one writer masks and another leaves in clear, or masks another way, would hold clear
    PII (or two kinds of token) in the one table. Each such writer is a problem, naming the
    other writer and the `pii` entry to declare."""
    writers: dict[str, list[tuple[ProjectSpec, int]]] = {}
    for spec in specs.values():
        for index, sink in enumerate(spec.pipeline.sinks):
            path = getattr(sink, "path", None)
            if isinstance(path, str):
                where = path if "://" in path else str((spec.path.parent / path).resolve())
                writers.setdefault(where, []).append((spec, index))
    problems: list[SpecProblem] = []
    for where, sharing in sorted(writers.items()):
        if len({spec.name for spec, _ in sharing}) < 2:
            continue
        for spec, index in sharing:
            for other, _ in sharing:
                problems.extend(_unmatched_masking(spec, index, other, where))
    return problems


def unlike_masking_problems(spec: ProjectSpec, project: Project, root: Path) -> list[SpecProblem]:
    """The problems of `spec` (run alone, by path or from Python) writing a table another
    pipeline of the project masks otherwise; the project's broken specs are passed over."""
    try:
        usable = usable_graph(project, root)
    except SpecError:
        return []
    specs = {**usable.graph.specs, spec.name: spec}
    return [p for p in shared_table_problems(specs) if p.file == str(spec.path)]


def _unmatched_masking(
    spec: ProjectSpec, index: int, other: ProjectSpec, where: str
) -> list[SpecProblem]:
    if other.name == spec.name:
        return []
    mine = spec.pipeline.pii
    found: list[SpecProblem] = []
    for column, method in sorted(other.pipeline.pii.items()):
        if mine.get(column) == method:
            continue
        done = f"masks it as {mine[column]}" if column in mine else "leaves it in clear"
        message = (
            f"pipeline '{spec.name}' writes {where}, where pipeline '{other.name}' masks "
            f"column '{column}' ({method}); '{spec.name}' {done}, so the table would hold "
            f"both. Declare `pii: {{{column}: {method}}}` in {spec.path.name} too, or write "
            "another table."
        )
        line = _line_of(spec.path, "sinks")
        found.append(SpecProblem(f"sinks[{index}]", message, line, file=str(spec.path)))
    return found


def find_cycle(depends_on: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A dependency cycle as a closed path (`[a, b, a]`: a depends on b, b on a), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for dep in sorted(depends_on.get(node, ())):
            if state.get(dep) == "open":
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(depends_on):
        if node not in state and (found := visit(node)):
            return found
    return None


def waves(depends_on: Mapping[str, Iterable[str]], names: Iterable[str]) -> list[list[str]]:
    """`names` in topological waves: each wave depends only on earlier ones (dependencies
    outside `names` are taken as met). Each wave is sorted."""
    remaining = {n: {d for d in depends_on.get(n, ()) if d in names} for n in names}
    result: list[list[str]] = []
    while remaining:
        ready = sorted(n for n, deps in remaining.items() if not deps)
        if not ready:
            raise ValueError(f"dependency cycle among {sorted(remaining)}")
        result.append(ready)
        for name in ready:
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    return result


def downstream(graph: PipelineGraph, names: Iterable[str]) -> set[str]:
    """`names` and every pipeline that depends on one of them, directly or not."""
    found: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(graph.dependents(name))
    return found


def _in_file(problem: SpecProblem, path: Path) -> SpecProblem:
    return SpecProblem(problem.path, problem.message, problem.line, problem.file or str(path))


def _at(spec: ProjectSpec, yaml_path: str, message: str) -> SpecProblem:
    return SpecProblem(yaml_path, message, _line_of(spec.path, "depends_on"), file=str(spec.path))


def _line_of(path: Path, key: str) -> int | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    return next((i for i, line in enumerate(lines, 1) if line.startswith(f"{key}:")), None)
