"""Load a spec: YAML with line numbers, `${ENV}` references, every problem reported at once.

Validation runs in one pass: the top level against `Pipeline`, then every source, step,
check and sink against its plug-in's model. Each problem carries its YAML path
(`sources.events.type`), its line and, for unknown names, a did-you-mean.
Values that came from `${ENV}` references are never echoed in messages.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sluiceway.core import registry
from sluiceway.core.project import Project
from sluiceway.core.spec import CheckConfig, ChecksFile, Pipeline
from sluiceway.errors import SpecError, SpecProblem

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MIN_REDACTED = 3
Path_ = tuple[str | int, ...]


class _Located:
    """YAML data with the line of every path and the paths that hold secrets."""

    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}
        self.secret_paths: set[Path_] = set()
        self.secret_values: dict[str, str] = {}
        self.failed_paths: set[Path_] = set()
        self.problems: list[SpecProblem] = []

    def line(self, path: Path_) -> int | None:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path)

    def problem(self, path: Path_, message: str) -> None:
        # Longest first, so a value that contains another is replaced whole.
        for value in sorted(self.secret_values, key=len, reverse=True):
            message = message.replace(value, f"${{{self.secret_values[value]}}}")
        problem = SpecProblem(path=format_path(path), message=message, line=self.line(path))
        self.problems.append(problem)


def format_path(path: Path_) -> str:
    """('steps', 2, 'dedup', 'keys') → 'steps[2].dedup.keys'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_spec(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Pipeline:
    """Read, resolve and validate a YAML spec file.

    Raises:
        SpecError: with every problem found, each with YAML path and line.
    """
    return parse_spec(_read_spec(path), source=str(path), environ=environ)


def load_checks(path: str | Path, *, environ: Mapping[str, str] | None = None) -> list[CheckConfig]:
    """Read and validate a checks file, `{version: 1, checks: [...]}`, as `load_spec` does.

    Raises:
        SpecError: with every problem found, each with YAML path, line and did-you-mean.
    """
    source = str(path)
    data, located = _compose(_read_spec(path), source, environ)
    built = dict(data) if isinstance(data, dict) else data
    if isinstance(built, dict):
        built["checks"] = _keyed_plugins(data.get("checks"), "checks", "check", located)
    try:
        checks_file = ChecksFile.model_validate(built)
    except ValidationError as exc:
        _report(exc, (), located)
        checks_file = None
    _raise_problems(located, source)
    assert checks_file is not None
    return list(checks_file.checks)


def load_project(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Project:
    """Read and validate a project file (`sluice.yaml`), as `load_spec` does.

    Raises:
        SpecError: with every problem found, each with YAML path, line and did-you-mean.
    """
    source = str(path)
    data, located = _compose(_read_spec(path), source, environ)
    try:
        project = Project.model_validate(data)
    except ValidationError as exc:
        _report(exc, (), located)
        project = None
    _raise_problems(located, source)
    assert project is not None
    return project


def parse_spec(
    text: str, *, source: str = "<spec>", environ: Mapping[str, str] | None = None
) -> Pipeline:
    """Validate a YAML spec given as text. See `load_spec`."""
    data, located = _compose(text, source, environ)
    pipeline = validate_data(data, located)
    _raise_problems(located, source)
    assert pipeline is not None
    return pipeline


def _read_spec(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(
            [SpecProblem("", f"cannot read the spec: {exc}")], source=str(path)
        ) from exc


def _compose(text: str, source: str, environ: Mapping[str, str] | None) -> tuple[Any, _Located]:
    """YAML text as plain data, with the line of every path; raises SpecError if not YAML."""
    located = _Located()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise SpecError(
            [SpecProblem("", f"not valid YAML: {exc}", line=line)], source=source
        ) from exc
    if node is None:
        raise SpecError([SpecProblem("", "the spec is empty")], source=source)
    return _to_data(node, (), located, os.environ if environ is None else environ), located


def _raise_problems(located: _Located, source: str) -> None:
    if located.problems:
        problems = [replace(p, file=source) for p in located.problems]
        raise SpecError(sorted(problems, key=lambda p: (p.line or 0, p.path)), source=source)


def pipeline_from_dict(data: Mapping[str, Any]) -> Pipeline:
    """Validate a spec given as Python data (the YAML shape). Raises SpecError."""
    located = _Located()
    pipeline = validate_data(dict(data), located)
    if located.problems or pipeline is None:
        raise SpecError(located.problems)
    return pipeline


def cross_checked(pipeline: Pipeline) -> Pipeline:
    """`pipeline` (a model built in Python) held to the rules between fields that a YAML spec
    is held to when it is loaded. Raises SpecError with every problem."""
    located = _Located()
    _cross_check(pipeline, located)
    if located.problems:
        raise SpecError(located.problems, source=f"pipeline {pipeline.pipeline!r}")
    return pipeline


def _to_data(node: yaml.Node, path: Path_, located: _Located, environ: Mapping[str, str]) -> Any:
    located.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _key_text(key_node)
            if key in out:
                located.lines[(*path, key)] = key_node.start_mark.line + 1
                located.problem((*path, key), f"duplicate key '{key}'")
            out[key] = _to_data(value_node, (*path, key), located, environ)
            # A problem about a key points at the key's line, not at the first line of its block.
            located.lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(item, (*path, i), located, environ) for i, item in enumerate(node.value)]
    value = yaml.safe_load(yaml.serialize(node))
    if isinstance(value, str) and "${" in value:
        return _resolve_env(value, path, located, environ)
    return value


def _key_text(node: yaml.Node) -> str:
    """A mapping key as written: YAML 1.1 reads a bare `on:` / `yes:` key as a boolean, but a
    spec key is always a name (`on: [run_failed]` in an alert route)."""
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
        return str(node.value)
    return str(yaml.safe_load(yaml.serialize(node)))


def _resolve_env(value: str, path: Path_, located: _Located, environ: Mapping[str, str]) -> str:
    located.secret_paths.add(path)

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            if len(environ[name]) >= _MIN_REDACTED:
                located.secret_values[environ[name]] = name
            return environ[name]
        if default is not None:
            return default
        located.problem(
            path,
            f"environment variable '{name}' is not set; export it or write ${{{name}:-default}}",
        )
        return ""

    return _ENV_REF.sub(substitute, value)


def validate_data(data: Any, located: _Located) -> Pipeline | None:
    """Validate plain data against the top-level model and every plug-in; collect problems."""
    if not isinstance(data, dict):
        located.problem(
            (), "the spec must be a mapping with keys version, pipeline, sources, sinks"
        )
        return None
    built = dict(data)
    built["sources"] = _named_plugins(data.get("sources"), "sources", "source", located)
    built["sinks"] = _listed_typed(data.get("sinks"), "sinks", "sink", located)
    built["steps"] = _keyed_plugins(data.get("steps"), "steps", "step", located)
    built["checks"] = _keyed_plugins(data.get("checks"), "checks", "check", located)
    for key in ("sources", "sinks", "steps", "checks"):
        if built[key] is None:
            built.pop(key)
    try:
        pipeline = Pipeline.model_validate(built)
    except ValidationError as exc:
        _report(exc, (), located)
        return None
    _cross_check(pipeline, located)
    return pipeline


def _named_plugins(raw: Any, section: str, kind: registry.PluginKind, located: _Located) -> Any:
    if raw is None or not isinstance(raw, dict):
        return raw
    return {name: _typed(cfg, (section, name), kind, located) for name, cfg in raw.items()}


def _listed_typed(raw: Any, section: str, kind: registry.PluginKind, located: _Located) -> Any:
    if raw is None or not isinstance(raw, list):
        return raw
    return [_typed(cfg, (section, i), kind, located) for i, cfg in enumerate(raw)]


def _typed(cfg: Any, path: Path_, kind: registry.PluginKind, located: _Located) -> Any:
    if not isinstance(cfg, dict) or "type" not in cfg:
        located.problem(
            path, f"a {kind} needs a 'type:' (one of: {', '.join(registry.names(kind))})"
        )
        located.failed_paths.add(path)
        return None
    name = str(cfg["type"])
    plugin = registry.lookup(kind, name)
    if plugin is None:
        close = registry.closest(name, registry.names(kind))
        hint = f" Did you mean '{close}'?" if close else ""
        located.problem((*path, "type"), f"unknown {kind} type '{name}'.{hint}")
        located.failed_paths.add(path)
        if close:  # the rest of the block, read as the type it most likely means
            _validate_model(
                registry.lookup(kind, close).config,  # type: ignore[union-attr]
                {**cfg, "type": close},
                path,
                located,
            )
        return None
    return _validate_model(plugin.config, cfg, path, located)


def _keyed_plugins(raw: Any, section: str, kind: registry.PluginKind, located: _Located) -> Any:
    if raw is None or not isinstance(raw, list):
        return raw
    out: list[Any] = []
    for i, item in enumerate(raw):
        path: Path_ = (section, i)
        if not isinstance(item, dict) or len(item) != 1:
            located.problem(path, _not_one_key(item, kind))
            continue
        key, value = next(iter(item.items()))
        plugin = registry.lookup(kind, key)
        if plugin is None:
            hint = registry.did_you_mean(key, registry.names(kind))
            located.problem((*path, key), f"unknown {kind} '{key}'.{hint}")
            continue
        value = _expand(plugin.config, value)
        config = _validate_model(plugin.config, value, (*path, key), located)
        if config is None:
            located.failed_paths.add((section, len(out)))
        out.append(config)
    return out


def _not_one_key(item: Any, kind: registry.PluginKind) -> str:
    """The problem of a list item that is not a one-key mapping; options written beside a
    known key (`- sql: ...` then `rows: filter` at the same level) are told to move inside."""
    keys = list(item) if isinstance(item, dict) else []
    known = [k for k in keys if registry.lookup(kind, str(k)) is not None]
    if len(known) != 1:
        return f"each {kind} is a mapping with one key, e.g. '- {_example(kind)}'"
    name, others = known[0], [str(k) for k in keys if k != known[0]]
    shorthand = getattr(registry.lookup(kind, name).config, "shorthand", None)  # type: ignore[union-attr]
    first = f"{shorthand}: ..., " if shorthand else ""
    listed = ", ".join(f"'{k}'" for k in others)
    options = ", ".join(f"{k}: ..." for k in others)
    return (
        f"{listed} is written beside {kind} '{name}' instead of inside it; "
        f"write it as '- {name}: {{{first}{options}}}'"
    )


def _example(kind: str) -> str:
    return "sql: SELECT * FROM input" if kind == "step" else "not_null: {column: user_id}"


def _expand(model: type[BaseModel], value: Any) -> Any:
    shorthand = getattr(model, "shorthand", None)
    if shorthand is None or value is None:
        return {} if value is None else value
    if not isinstance(value, dict) or getattr(model, "wraps_mapping", False):
        return {shorthand: value}
    return value


def _validate_model(model: type[BaseModel], cfg: Any, path: Path_, located: _Located) -> Any:
    try:
        return model.model_validate(cfg)
    except ValidationError as exc:
        _report(exc, path, located)
        located.failed_paths.add(path)
        return None


def _report(exc: ValidationError, prefix: Path_, located: _Located) -> None:
    for err in exc.errors():
        loc = (*prefix, *err["loc"])
        if loc in located.failed_paths:
            continue  # a plug-in config that failed on its own, already reported in detail
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = _unknown_key_message(err["loc"], exc.title)
        elif (
            not _is_secret(loc, located)
            and "storage_options" not in loc  # may hold keys written in the spec
            and "input" in err
            and err["type"] != "missing"
        ):
            message = f"{message} (got {_short(err['input'])})"
            expected = (err.get("ctx") or {}).get("expected")
            if err["type"] == "literal_error" and isinstance(expected, str):
                choices = re.findall(r"'([^']*)'", expected)
                hint = registry.did_you_mean(str(err["input"]), choices)
                message += f".{hint}" if hint else ""
        located.problem(loc, message)


def _unknown_key_message(loc: tuple[Any, ...], title: str) -> str:
    key = loc[-1]
    model = _model_at(_model_named(title), loc[:-1])
    fields = sorted(model.model_fields) if model else []
    hint = registry.did_you_mean(str(key), fields)
    allowed = f" Allowed keys: {', '.join(fields)}." if fields and not hint else ""
    return f"unknown key '{key}'.{hint}{allowed}"


def _model_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model nested in `model` at `loc` (fields, dict keys, list indexes), or None."""
    annotation: Any = model
    for part in loc:
        annotation = _model_in(annotation)
        if annotation is None:
            return None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            annotation = field.annotation if field else None
        else:
            origin, args = typing.get_origin(annotation), typing.get_args(annotation)
            annotation = args[-1] if origin in (dict, list) and args else None
    found = _model_in(annotation)
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


def _model_in(annotation: Any) -> Any:
    """`annotation` without Annotated[...] and Optional: a model, a dict[...] or list[...]."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        options = [_model_in(a) for a in typing.get_args(annotation) if a is not type(None)]
        return next((o for o in options if o is not None), None)
    return annotation


def _model_named(title: str) -> type[BaseModel] | None:
    if title == "Pipeline":
        return Pipeline
    for kind in ("source", "step", "check", "sink"):
        for plugin in registry.canonical(kind):
            if plugin.config.__name__ == title:
                return plugin.config
    from sluiceway.core import project, spec, spec_meta

    for module in (spec, spec_meta, project):
        candidate = getattr(module, title, None)
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_secret(loc: Path_, located: _Located) -> bool:
    """True when the value at `loc` is, or holds, a value that came from ${ENV}."""
    return any(loc[: len(p)] == p or p[: len(loc)] == loc for p in located.secret_paths)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _path_parts(path: str) -> list[str | int]:
    """`sinks[0].mode` → ['sinks', 0, 'mode']."""
    parts: list[str | int] = []
    for piece in path.split("."):
        name, _, index = piece.partition("[")
        parts.append(name)
        if index:
            parts.append(int(index.rstrip("]")))
    return parts


def _cross_check(pipeline: Pipeline, located: _Located) -> None:
    if pipeline.primary and pipeline.primary not in pipeline.sources:
        hint = registry.did_you_mean(pipeline.primary, list(pipeline.sources))
        located.problem(("primary",), f"no source named '{pipeline.primary}'.{hint}")
    incremental = [n for n, s in pipeline.sources.items() if getattr(s, "incremental", False)]
    for index, sink in enumerate(pipeline.sinks):
        if incremental and getattr(sink, "mode", None) == "overwrite_partition":
            located.problem(
                ("sinks", index, "mode"),
                f"source(s) {', '.join(incremental)} are incremental (each run reads only new files) "
                "but overwrite_partition would replace the rows earlier files put in the same "
                "partition; use mode: append or merge",
            )
    from sluiceway.core.routing import routing_problems
    from sluiceway.core.step_rules import sql_step_problems
    from sluiceway.streaming.spec_rules import stream_problems

    if pipeline.mode == "stream":
        for problem in stream_problems(pipeline):
            located.problem(tuple(_path_parts(problem.path)), problem.message)

    for problem in sql_step_problems(pipeline):
        located.problem(tuple(_path_parts(problem.path)), problem.message)
    for index, message in routing_problems(pipeline.checks):
        located.problem(("checks", index, "on_fail"), message)
    for index, field, message in _other_table_problems(pipeline):
        located.problem(("checks", index, field), message)
    for name in pipeline.sources:
        if name == "input" or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            located.problem(
                ("sources", name),
                f"source name '{name}' must be an SQL identifier other than 'input'",
            )


def _other_table_problems(pipeline: Pipeline) -> list[tuple[int, str, str]]:
    """Checks naming another table (`values_exist_in`'s `to_table`, `row_count_equal_other_
    table`'s `other_table_name`) that is neither a source nor a file path: said now, not
    when the run reaches its checks."""
    from sluiceway.checks.extra import FILE_READERS, reader_for

    problems = []
    sources = sorted(pipeline.sources)
    for index, check in enumerate(pipeline.checks):
        for field in ("to_table", "other_table_name"):
            name = getattr(check, field, None)
            if not isinstance(name, str) or name in pipeline.sources:
                continue
            if reader_for(name) and "://" not in name:
                continue
            hint = registry.did_you_mean(name, sources)
            problems.append(
                (
                    index,
                    field,
                    f"unknown table '{name}'.{hint} Name a source of this pipeline (known: "
                    f"{', '.join(sources)}) or a local file path ending in "
                    f"{', '.join(FILE_READERS)} (a local path: object stores are read as a "
                    "source of the pipeline)",
                )
            )
    return problems
