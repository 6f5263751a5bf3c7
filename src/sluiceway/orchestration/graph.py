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
from typing import Any

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
class Writer:
    """What a spec writes and masks, read from its model or, for a spec that does not
    load, from its YAML as far as it goes: enough to compare masking."""

    name: str
    file: Path
    tables: tuple[str, ...]
    pii: Mapping[str, str]


@dataclass(frozen=True)
class UsableGraph:
    """The part of a project that can run, and what was left out: one team's broken spec
    does not stop the other pipelines (`sluice run --all`, the scheduler)."""

    graph: PipelineGraph
    problems: list[SpecProblem]
    """Every problem of the specs left out: a spec that does not load, a duplicate name,
    a dependency on a pipeline left out or unknown, a cycle, a table masked otherwise."""
    left_out: dict[str, str]
    """Spec file → the pipeline it would run (its file name when even that is unknown)."""
    waits_on: dict[str, list[str]]
    """A pipeline left out → its dependencies (as far as its spec says)."""
    blocked: dict[str, ProjectSpec]
    """Pipelines whose own spec is sound, left out for a dependency only (unique names)."""
    writers_left_out: tuple[Writer, ...] = ()
    """What the specs left out write and mask (a broken spec still masks its tables)."""

    def left_out_below(self, name: str) -> list[str]:
        """The pipelines left out that depend on `name`, directly or not."""
        found: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop()
            for waiting, dependencies in self.waits_on.items():
                if current in dependencies and waiting not in found and waiting != name:
                    found.add(waiting)
                    todo.append(waiting)
        return sorted(found)


def usable_graph(project: Project, root: Path) -> UsableGraph:
    """The graph of the specs that load and whose dependencies are usable; the others are
    left out with their problems (what `load_project_specs` and `build_graph` would raise).
    A spec that writes a table a spec left out masks otherwise is left out too: the broken
    spec's masking still holds for the table.

    Raises:
        SpecError: the project lists no spec file.
    """
    paths = project.spec_paths(root)
    if not paths:
        load_project_specs(project, root)  # raises, naming where it looked
    specs: dict[str, ProjectSpec] = {}
    problems: list[SpecProblem] = []
    left_out: dict[str, str] = {}
    waits_on: dict[str, list[str]] = {}
    left_writers: list[Writer] = []
    for path in paths:
        try:
            pipeline = load_spec(path)
        except SpecError as exc:
            problems.extend(_in_file(p, path) for p in exc.problems)
            raw = _raw_writer(path)
            left_out[str(path)] = raw.name if raw else path.name
            if raw is not None:
                left_writers.append(raw)
                waits_on[raw.name] = _raw_depends_on(path)
            continue
        if pipeline.pipeline in specs:
            first = specs[pipeline.pipeline].path
            message = f"pipeline name '{pipeline.pipeline}' is also used by {first}; rename one"
            problems.append(SpecProblem("pipeline", message, file=str(path)))
            left_out[str(path)] = pipeline.pipeline
            left_writers.append(writer_of(ProjectSpec(pipeline, path)))
            continue
        specs[pipeline.pipeline] = ProjectSpec(pipeline, path)
    named_left = {n for n in left_out.values() if n not in specs}
    blocked: dict[str, ProjectSpec] = {}

    def leave_out(name: str, problem: SpecProblem | None, *, for_dependency: bool) -> None:
        if problem is not None:
            problems.append(problem)
        spec = specs.pop(name)
        left_out[str(spec.path)] = name
        named_left.add(name)
        waits_on[name] = list(spec.pipeline.depends_on)
        if for_dependency:
            blocked[name] = spec
        left_writers.append(writer_of(spec))

    writers = [*map(writer_of, specs.values()), *left_writers]
    for problem in masking_conflicts(list(specs.values()), writers):
        writer = next((n for n, sp in specs.items() if str(sp.path) == problem.file), None)
        if writer is not None:
            leave_out(writer, problem, for_dependency=False)
        else:
            problems.append(problem)
    while True:  # a pipeline whose dependency is left out cannot run either
        missing = {
            name: [d for d in spec.pipeline.depends_on if d not in specs]
            for name, spec in specs.items()
        }
        for name, deps in sorted(missing.items()):
            if deps:
                leave_out(
                    name,
                    _missing_dependency(specs[name], deps, named_left, specs),
                    for_dependency=True,
                )
        if any(missing.values()):
            continue
        depends_on = {n: tuple(dict.fromkeys(sp.pipeline.depends_on)) for n, sp in specs.items()}
        cycle = find_cycle(depends_on)
        if cycle is None:
            graph = PipelineGraph(dict(specs), depends_on)
            ambiguous = {n for n in blocked if list(left_out.values()).count(n) > 1}
            sound = {n: sp for n, sp in blocked.items() if n not in ambiguous}
            return UsableGraph(graph, problems, left_out, waits_on, sound, tuple(left_writers))
        message = f"dependency cycle: {' → '.join(cycle)}; remove one of these depends_on entries"
        for name in dict.fromkeys(cycle):
            leave_out(name, _at(specs[name], "depends_on", message), for_dependency=False)


def _missing_dependency(
    spec: ProjectSpec, deps: list[str], left: set[str], specs: Mapping[str, ProjectSpec]
) -> SpecProblem:
    dep = deps[0]
    if dep in left:
        message = (
            f"pipeline '{spec.name}' depends on '{dep}', which is left out (its spec has "
            "problems): it runs once that one does"
        )
    else:
        known = sorted({*specs, *left})
        message = (
            f"pipeline '{spec.name}' depends on unknown pipeline '{dep}' (pipelines in the "
            f"project: {', '.join(known)}).{did_you_mean(dep, known)}"
        )
    return _at(spec, "depends_on", message)


def writer_of(spec: ProjectSpec) -> Writer:
    paths = [getattr(sink, "path", None) for sink in spec.pipeline.sinks]
    tables = tuple(_table_at(spec.path, p) for p in paths if isinstance(p, str))
    return Writer(spec.name, spec.path, tables, dict(spec.pipeline.pii))


def _raw_writer(path: Path) -> Writer | None:
    """The name, sink paths and `pii` a spec that does not validate still gives."""
    data = _raw(path)
    name = data.get("pipeline")
    if not isinstance(name, str) or not name:
        return None
    sinks = data.get("sinks")
    paths = [s.get("path") for s in sinks if isinstance(s, dict)] if isinstance(sinks, list) else []
    tables = tuple(_table_at(path, p) for p in paths if isinstance(p, str))
    pii = data.get("pii")
    masks = (
        {str(k): str(v) for k, v in pii.items() if isinstance(v, str)}
        if isinstance(pii, dict)
        else {}
    )
    return Writer(name, path, tables, masks)


def _raw_depends_on(path: Path) -> list[str]:
    found = _raw(path).get("depends_on")
    return [d for d in found if isinstance(d, str)] if isinstance(found, list) else []


def _raw(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _table_at(spec_path: Path, path: str) -> str:
    return path if "://" in path else str((spec_path.parent / path).resolve())


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
    return masking_conflicts(list(specs.values()), [writer_of(s) for s in specs.values()])


def masking_conflicts(targets: list[ProjectSpec], writers: list[Writer]) -> list[SpecProblem]:
    """The problems of each of `targets` that writes a table one of `writers` masks
    otherwise."""
    by_table: dict[str, list[Writer]] = {}
    for writer in writers:
        for table in dict.fromkeys(writer.tables):
            by_table.setdefault(table, []).append(writer)
    problems: list[SpecProblem] = []
    for spec in targets:
        for index, sink in enumerate(spec.pipeline.sinks):
            path = getattr(sink, "path", None)
            if not isinstance(path, str):
                continue
            where = _table_at(spec.path, path)
            for other in by_table.get(where, []):
                if other.file != spec.path:
                    problems.extend(_unmatched_masking(spec, index, other, where))
    return problems


def unlike_masking_problems(spec: ProjectSpec, project: Project, root: Path) -> list[SpecProblem]:
    """The problems of `spec` (run alone, by path or from Python) writing a table another
    pipeline of the project masks otherwise, broken specs included (their masking holds)."""
    try:
        usable = usable_graph(project, root)
    except SpecError:
        return []
    writers = [*map(writer_of, usable.graph.specs.values()), *usable.writers_left_out]
    return masking_conflicts([spec], [w for w in writers if w.file != spec.path])


def _unmatched_masking(
    spec: ProjectSpec, index: int, other: Writer, where: str
) -> list[SpecProblem]:
    mine = spec.pipeline.pii
    found: list[SpecProblem] = []
    for column, method in sorted(other.pii.items()):
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
