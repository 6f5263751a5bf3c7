"""`sluice lineage NAME`: the upstream and downstream graph of a pipeline or dataset.

The graph is built from every spec of the project, without running anything: a pipeline
reads its sources' datasets and writes its sinks' datasets, so a pipeline whose (delta)
source path is another pipeline's sink path is downstream of it. With `--columns` each
dataset a pipeline writes lists its columns and the upstream columns each comes from
(observability/column_lineage.py), chained across pipelines.
"""

from __future__ import annotations

import difflib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.markup import escape
from rich.tree import Tree

from sluiceway.core.loader import load_project, load_spec
from sluiceway.core.project import PROJECT_FILE, find_project_file
from sluiceway.core.spec import Pipeline
from sluiceway.errors import SpecError
from sluiceway.observability.column_lineage import ColumnLineage, Columns, column_lineage
from sluiceway.observability.lineage_datasets import Dataset, datasets_of
from sluiceway.terminal import new_console

console = new_console()
err_console = new_console(stderr=True)
Key = tuple[str, str]
"""A dataset's (namespace, name)."""


@dataclass
class PipelineNode:
    """One pipeline of the project and the datasets it reads (by source) and writes."""

    pipeline: Pipeline
    inputs: dict[str, list[Dataset]]
    outputs: list[Dataset]
    lineage: ColumnLineage | None = None


@dataclass
class Graph:
    """Every pipeline of a project, and the datasets between them."""

    root: Path
    pipelines: dict[str, PipelineNode] = field(default_factory=dict)
    datasets: dict[Key, Dataset] = field(default_factory=dict)

    def writers(self, key: Key) -> list[str]:
        """The pipelines that write dataset `key`."""
        return [n for n, p in self.pipelines.items() if any(_key(d) == key for d in p.outputs)]

    def readers(self, key: Key) -> list[str]:
        """The pipelines that read dataset `key`."""
        return [
            n
            for n, p in self.pipelines.items()
            if any(_key(d) == key for ds in p.inputs.values() for d in ds)
        ]

    def label(self, key: Key) -> str:
        """A dataset's short name: a local path relative to the project folder."""
        namespace, name = key
        if namespace == "file":
            path = Path(name)
            return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else name
        return f"{namespace}/{name}"


def _key(dataset: Dataset) -> Key:
    return (dataset.namespace, dataset.name)


def build_graph(root: Path, pipelines: list[tuple[Pipeline, Path]]) -> Graph:
    """The lineage graph of `pipelines` (each with its spec folder), columns included.

    Args:
        root: the project folder (labels are relative to it).
        pipelines: every spec of the project and the folder it is in.
    """
    graph = Graph(root=root.resolve())
    for pipeline, folder in pipelines:
        resolve = _resolver(folder)
        inputs = {
            name: datasets_of(config, resolve, f"{pipeline.pipeline}.{name}")
            for name, config in pipeline.sources.items()
        }
        outputs = [
            d
            for i, sink in enumerate(pipeline.sinks)
            for d in datasets_of(sink, resolve, f"{pipeline.pipeline}.sinks[{i}]")
        ]
        graph.pipelines[pipeline.pipeline] = PipelineNode(pipeline, inputs, outputs)
        for dataset in [*outputs, *(d for ds in inputs.values() for d in ds)]:
            graph.datasets[_key(dataset)] = dataset
    for name in graph.pipelines:
        _columns_of(graph, name, set())
    return graph


def _resolver(folder: Path) -> Any:
    def resolve(path: str) -> str:
        if "://" in path:
            return path
        candidate = Path(path).expanduser()
        return str(candidate if candidate.is_absolute() else (folder / candidate).resolve())

    return resolve


def _columns_of(graph: Graph, name: str, visiting: set[str]) -> ColumnLineage:
    """A pipeline's column lineage; a source written by another pipeline gets its columns."""
    node = graph.pipelines[name]
    if node.lineage is not None:
        return node.lineage
    visiting.add(name)
    known: dict[str, Columns] = {}
    for source, datasets in node.inputs.items():
        for writer in (w for d in datasets[:1] for w in graph.writers(_key(d))):
            if writer not in visiting:
                known[source] = _columns_of(graph, writer, visiting).columns
    node.lineage = column_lineage(node.pipeline, known)
    visiting.discard(name)
    return node.lineage


def _dataset_node(graph: Graph, key: Key, with_columns: bool) -> dict[str, Any]:
    node: dict[str, Any] = {"kind": "dataset", "namespace": key[0], "name": key[1]}
    node["label"] = graph.label(key)
    if with_columns:
        node["columns"] = _dataset_columns(graph, key)
    return node


def _dataset_columns(graph: Graph, key: Key) -> dict[str, list[str]]:
    """Each column of a written dataset and the upstream columns it is derived from."""
    for writer in graph.writers(key):
        node = graph.pipelines[writer]
        lineage = node.lineage or column_lineage(node.pipeline)
        columns: dict[str, list[str]] = {}
        for column in lineage.columns:
            columns[column] = [
                f"{graph.label(_key(node.inputs[o.source][0]))}.{o.column}"
                + (" (masked)" if o.is_masked else "")
                for o in lineage.origins.get(column, [])
                if node.inputs.get(o.source)
            ]
        return columns
    for node in graph.pipelines.values():
        for source, datasets in node.inputs.items():
            contract = node.pipeline.sources[source].contract
            if any(_key(d) == key for d in datasets) and contract is not None:
                return {c: [] for c in contract.columns}
    return {}


def upstream(graph: Graph, key: Key, columns: bool, seen: frozenset[str]) -> dict[str, Any]:
    """A dataset and, below it, the pipelines that write it and their inputs, recursively."""
    node = _dataset_node(graph, key, columns)
    node["children"] = [
        _pipeline_up(graph, w, columns, seen) for w in graph.writers(key) if w not in seen
    ]
    return node


def _pipeline_up(graph: Graph, name: str, columns: bool, seen: frozenset[str]) -> dict[str, Any]:
    inputs = {_key(d) for ds in graph.pipelines[name].inputs.values() for d in ds}
    children = [upstream(graph, k, columns, seen | {name}) for k in sorted(inputs)]
    return {"kind": "pipeline", "name": name, "label": name, "children": children}


def downstream(graph: Graph, key: Key, columns: bool, seen: frozenset[str]) -> dict[str, Any]:
    """A dataset and, below it, the pipelines that read it and what they write, recursively."""
    node = _dataset_node(graph, key, columns)
    node["children"] = [
        _pipeline_down(graph, r, columns, seen) for r in graph.readers(key) if r not in seen
    ]
    return node


def _pipeline_down(graph: Graph, name: str, columns: bool, seen: frozenset[str]) -> dict[str, Any]:
    outputs = [_key(d) for d in graph.pipelines[name].outputs]
    children = [downstream(graph, k, columns, seen | {name}) for k in outputs]
    return {"kind": "pipeline", "name": name, "label": name, "children": children}


def lineage_of(graph: Graph, name: str, *, columns: bool) -> dict[str, Any]:
    """The upstream and downstream trees of a pipeline or dataset.

    Args:
        graph: the project's graph.
        name: a pipeline name, or a dataset's name, URI, `namespace/name` or path.
        columns: list each written dataset's columns and their origins.

    Raises:
        LookupError: nothing is called `name` (the message suggests close names).
    """
    if name in graph.pipelines:
        node = graph.pipelines[name]
        inputs = sorted({_key(d) for ds in node.inputs.values() for d in ds})
        return {
            "kind": "pipeline",
            "name": name,
            "upstream": [upstream(graph, k, columns, frozenset({name})) for k in inputs],
            "downstream": [
                downstream(graph, _key(d), columns, frozenset({name})) for d in node.outputs
            ],
        }
    key = _find_dataset(graph, name)
    return {
        "kind": "dataset",
        "name": graph.label(key),
        "namespace": key[0],
        "upstream": upstream(graph, key, columns, frozenset())["children"],
        "downstream": downstream(graph, key, columns, frozenset())["children"],
        **({"columns": _dataset_columns(graph, key)} if columns else {}),
    }


def _find_dataset(graph: Graph, wanted: str) -> Key:
    as_path = str(Path(wanted).expanduser().resolve()) if "://" not in wanted else wanted
    for key, dataset in graph.datasets.items():
        names = {key[1], dataset.uri, f"{key[0]}/{key[1]}", graph.label(key)}
        if wanted in names or as_path in names or wanted.rstrip("/") in names:
            return key
    choices = [*graph.pipelines, *(graph.label(k) for k in graph.datasets)]
    close = difflib.get_close_matches(wanted, choices, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise LookupError(
        f"No pipeline or dataset is called {wanted!r} in this project ({len(graph.pipelines)} "
        f"pipeline(s)).{hint} Pass a pipeline name, or a dataset path or URI as a spec writes it."
    )


def _add(tree: Tree, node: dict[str, Any]) -> None:
    if node["kind"] == "pipeline":
        branch = tree.add(f"[bold]⚙ {escape(node['label'])}[/]")
    else:
        branch = tree.add(f"[cyan]▤ {escape(node['label'])}[/]")
        for column, origins in node.get("columns", {}).items():
            source = f" ← {escape(', '.join(origins))}" if origins else ""
            branch.add(f"[dim]{escape(column)}{source}[/]")
    for child in node.get("children", []):
        _add(branch, child)


def render(result: dict[str, Any]) -> Tree:
    """The lineage as a rich tree: upstream, then downstream."""
    icon = "⚙" if result["kind"] == "pipeline" else "▤"
    tree = Tree(f"[bold]{icon} {escape(result['name'])}[/] ({result['kind']})")
    for column, origins in result.get("columns", {}).items():
        tree.add(f"[dim]{escape(column)}{' ← ' + escape(', '.join(origins)) if origins else ''}[/]")
    for direction in ("upstream", "downstream"):
        branch = tree.add(f"[magenta]{direction}[/]")
        if not result[direction]:
            branch.add("[dim](none)[/]")
        for node in result[direction]:
            _add(branch, node)
    return tree


def _fail(message: str) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(2)


def _load(project_file: str | None) -> Graph:
    path = Path(project_file) if project_file else find_project_file()
    if path is None or not path.is_file():
        where = project_file or f"{Path.cwd()} or a parent folder"
        _fail(f"No {PROJECT_FILE} found in {where}. Run in a project or pass --project FILE.")
    problems: list[str] = []
    try:
        project = load_project(path)
    except SpecError as exc:
        _fail(f"{path}: {exc.message}")
    pipelines = []
    for spec in project.spec_paths(path.parent.resolve()):
        try:
            pipelines.append((load_spec(spec), spec.parent))
        except SpecError as exc:
            problems.append(f"{spec}: {exc.message}")
    if problems:
        _fail("Cannot build the lineage graph; fix these specs:\n" + "\n".join(problems))
    return build_graph(path.parent.resolve(), pipelines)


@click.command("lineage")
@click.argument("name")
@click.option("--project", "project_file", type=click.Path(dir_okay=False), help="sluice.yaml.")
@click.option("--columns", is_flag=True, help="Show columns and the columns they come from.")
@click.option(
    "--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def lineage(name: str, project_file: str | None, columns: bool, output: str) -> None:
    """Upstream and downstream of a pipeline or dataset NAME, down to columns."""
    graph = _load(project_file)
    try:
        result = lineage_of(graph, name, columns=columns)
    except LookupError as exc:
        _fail(str(exc.args[0]))
    if output == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        console.print(render(result))
