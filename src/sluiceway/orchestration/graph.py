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
