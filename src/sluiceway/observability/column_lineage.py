"""Column lineage of a pipeline: each output column and the source columns it comes from.

The walk follows the data: the primary source's columns feed the first step, each step maps
its output columns to its input columns, and PII masking (applied by name when the result is
staged) marks the masked columns last. SQL steps are analysed with sqlglot (`SELECT *`
expands from the known columns of `input` and of every source); `rename`, `select`, `cast`,
`dedup` and `filter` are mapped directly. A step that cannot be analysed (a `python` step, a
query sqlglot cannot resolve) maps every output column to every input column and says so in
`notes`. Only DIRECT lineage is derived: columns used in WHERE, JOIN or GROUP BY are not
listed as origins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import sqlglot
from sqlglot import exp
from sqlglot.lineage import lineage as sqlglot_lineage
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify

from sluiceway.core.spec import Pipeline, StepConfig

CONTRACT_TYPES = {
    "string": "VARCHAR",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "float": "FLOAT",
    "decimal": "DECIMAL",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
    "timestamp_ntz": "TIMESTAMP",
    "json": "JSON",
}
Columns = dict[str, str | None]
"""Column name → type (None when unknown), in order."""


@dataclass(frozen=True)
class Transformation:
    """What happened to a source column on its way to an output column (OpenLineage terms)."""

    type: Literal["DIRECT", "INDIRECT"]
    subtype: Literal["IDENTITY", "TRANSFORMATION", "AGGREGATION"]
    description: str = ""
    masking: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The transformation as an OpenLineage `transformations` item."""
        data: dict[str, Any] = {"type": self.type, "subtype": self.subtype}
        if self.description:
            data["description"] = self.description
        data["masking"] = self.masking
        return data


IDENTITY = Transformation("DIRECT", "IDENTITY")


@dataclass(frozen=True)
class Origin:
    """One source column an output column is derived from."""

    source: str
    column: str
    transformations: tuple[Transformation, ...] = ()

    def then(self, step: Transformation) -> Origin:
        """This origin with one more transformation (identities are not repeated)."""
        if step == IDENTITY:
            return self
        return replace(self, transformations=(*self.transformations, step))

    @property
    def is_masked(self) -> bool:
        return any(t.masking for t in self.transformations)


@dataclass
class ColumnLineage:
    """Output columns, their types where known, their origins, and what was not analysed."""

    columns: Columns
    origins: dict[str, list[Origin]]
    notes: list[str] = field(default_factory=list)


@dataclass
class _State:
    columns: Columns
    origins: dict[str, list[Origin]]
    sources: dict[str, Columns]
    notes: list[str]


def source_columns(pipeline: Pipeline) -> dict[str, Columns]:
    """The columns each source's contract declares (empty for a source without one)."""
    known: dict[str, Columns] = {}
    for name, config in pipeline.sources.items():
        contract = config.contract
        columns = contract.columns if contract is not None else {}
        known[name] = {c: CONTRACT_TYPES.get(rule.type) for c, rule in columns.items()}
    return known


DELTA_TYPES = {
    "string": "VARCHAR",
    "long": "BIGINT",
    "integer": "INTEGER",
    "short": "SMALLINT",
    "byte": "TINYINT",
    "double": "DOUBLE",
    "float": "FLOAT",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
    "timestamp_ntz": "TIMESTAMP",
    "binary": "BLOB",
}


def delta_source_columns(pipeline: Pipeline, resolve: Callable[[str], str]) -> dict[str, Columns]:
    """The columns of each `delta` source without a contract, read from its table's schema.

    Args:
        pipeline: the spec.
        resolve: makes a spec path absolute (URLs are kept).

    Returns:
        Source name → its columns (only sources whose table could be read; `columns:` of the
        source narrows them).
    """
    from deltalake import DeltaTable

    from sluiceway.core.storage import delta_storage_options

    known: dict[str, Columns] = {}
    for name, config in pipeline.sources.items():
        if getattr(config, "type", None) != "delta" or config.contract is not None:
            continue
        uri = resolve(str(getattr(config, "path", "")))
        try:
            options = delta_storage_options(uri, getattr(config, "storage_options", {}))
            fields = DeltaTable(uri, storage_options=options).schema().fields
        except Exception:  # not written yet or unreachable: the columns stay unknown
            continue
        wanted = getattr(config, "columns", None)
        known[name] = {
            f.name: _delta_type(f.type) for f in fields if wanted is None or f.name in wanted
        }
    return known


def _delta_type(kind: Any) -> str | None:
    name = str(getattr(kind, "type", kind))
    if name.startswith("decimal"):
        return name.upper()
    return DELTA_TYPES.get(name)


def column_lineage(
    pipeline: Pipeline, sources: Mapping[str, Columns] | None = None
) -> ColumnLineage:
    """Derive the column lineage of `pipeline` from its spec.

    Args:
        pipeline: the spec.
        sources: known columns per source name (default: from the contracts); a source
            missing here or with no columns is treated as unknown.

    Returns:
        The output columns and, for each, the source columns it is derived from.
    """
    known = dict(source_columns(pipeline))
    known.update({k: dict(v) for k, v in (sources or {}).items() if v})
    primary = pipeline.primary_source
    start = known.get(primary, {})
    state = _State(
        columns=dict(start),
        origins={c: [Origin(primary, c)] for c in start},
        sources=known,
        notes=[] if start else [f"the columns of source {primary} are unknown (no contract)"],
    )
    for index, step in enumerate(pipeline.steps):
        handler = STEP_HANDLERS.get(step.key, _opaque)
        handler(state, step, f"steps[{index}].{step.key}")
    _mask(state, pipeline.pii)
    return ColumnLineage(state.columns, state.origins, state.notes)


def _mask(state: _State, pii: Mapping[str, str]) -> None:
    methods = {name.casefold(): method for name, method in pii.items()}
    for column in state.columns:
        method = methods.get(column.casefold())
        if method is None:
            continue
        step = Transformation("DIRECT", "TRANSFORMATION", f"MASKED: pii {method}", masking=True)
        state.origins[column] = [o.then(step) for o in state.origins.get(column, [])]


def _rename(state: _State, step: Any, label: str) -> None:
    renames: dict[str, str] = dict(step.columns)
    state.columns = {renames.get(c, c): t for c, t in state.columns.items()}
    state.origins = {renames.get(c, c): o for c, o in state.origins.items()}


def _select(state: _State, step: Any, label: str) -> None:
    kept: list[str] = list(step.columns)
    state.columns = {c: state.columns.get(c) for c in kept}
    state.origins = {c: state.origins.get(c, []) for c in kept}


def _cast(state: _State, step: Any, label: str) -> None:
    for column, kind in dict(step.columns).items():
        sql_type = CONTRACT_TYPES.get(kind, kind.upper())
        state.columns[column] = sql_type
        cast = Transformation("DIRECT", "TRANSFORMATION", f"CAST AS {sql_type}")
        state.origins[column] = [o.then(cast) for o in state.origins.get(column, [])]


def _keep_columns(state: _State, step: Any, label: str) -> None:
    """dedup and filter keep every column as it is."""


def _opaque(state: _State, step: Any, label: str) -> None:
    every = _every_origin(state)
    state.origins = {c: list(every) for c in state.columns}
    state.notes.append(
        f"{label} cannot be analysed: each of its output columns is mapped to every input "
        "column, and columns it adds are unknown"
    )


def _every_origin(state: _State) -> list[Origin]:
    seen: dict[tuple[str, str], Origin] = {}
    for origins in state.origins.values():
        for origin in origins:
            seen.setdefault((origin.source, origin.column), Origin(origin.source, origin.column))
    return list(seen.values())


def _sql(state: _State, step: Any, label: str) -> None:
    schema = {
        name: {c: t or "VARCHAR" for c, t in cols.items()} for name, cols in state.sources.items()
    }
    schema["input"] = {c: t or "VARCHAR" for c, t in state.columns.items()}
    tables: dict[str, object] = dict(schema)
    try:
        query = qualify(
            sqlglot.parse_one(step.query, dialect="duckdb"),
            schema=tables,
            dialect="duckdb",
            validate_qualify_columns=False,
        )
        annotate_types(query, schema=tables)
        outputs = _sql_outputs(query, tables, state)
        spelled = _spellings(step.query, state)
    except Exception as exc:  # best effort: a query sqlglot cannot resolve is opaque
        _opaque(state, step, label)
        state.notes[-1] += f" (sqlglot: {type(exc).__name__})"
        return
    # sqlglot folds DuckDB's names to lower case; the table keeps them as written.
    state.columns = {spelled.get(name, name): kind for name, (kind, _) in outputs.items()}
    state.origins = {spelled.get(name, name): origins for name, (_, origins) in outputs.items()}


def _spellings(query: str, state: _State) -> dict[str, str]:
    """Lower-cased name → the name as the step's output spells it: its select aliases and
    columns as written, else the input's and the sources' columns."""
    parsed = sqlglot.parse_one(query, dialect="duckdb")
    selects = parsed.selects if isinstance(parsed, exp.Query) else []
    names = [
        *(c for cols in state.sources.values() for c in cols),
        *state.columns,
        *(s.alias_or_name for s in selects if s.alias_or_name and s.alias_or_name != "*"),
    ]
    return {name.lower(): name for name in names}


def _sql_outputs(
    query: exp.Expr, schema: dict[str, object], state: _State
) -> dict[str, tuple[str | None, list[Origin]]]:
    if not isinstance(query, exp.Query):
        raise ValueError("not a query")
    outputs: dict[str, tuple[str | None, list[Origin]]] = {}
    for select in query.selects:
        name = select.alias_or_name
        if not name or name in outputs:
            continue
        kind = (
            None
            if select.type is None or select.type.is_type("unknown")
            else select.type.sql("duckdb")
        )
        node = sqlglot_lineage(name, query, schema=schema, dialect="duckdb")
        step = _describe(select)
        origins: list[Origin] = []
        for leaf in (n for n in node.walk() if not n.downstream):
            if not isinstance(leaf.source, exp.Table):
                continue
            column = leaf.name.split(".")[-1].strip('"')
            origins.extend(_leaf_origins(leaf.source.name, column, state, step))
        outputs[name] = (kind, _unique(origins))
    return outputs


def _leaf_origins(table: str, column: str, state: _State, step: Transformation) -> list[Origin]:
    if table == "input":
        name = _as_spelled(column, state.origins)
        return [o.then(step) for o in state.origins.get(name, [])]
    if table in state.sources:
        return [Origin(table, _as_spelled(column, state.sources[table])).then(step)]
    return []


def _as_spelled(column: str, names: Mapping[str, Any]) -> str:
    """`column` as `names` spell it (sqlglot hands names back in lower case)."""
    if column in names:
        return column
    return next((name for name in names if name.lower() == column.lower()), column)


def _describe(select: exp.Expr) -> Transformation:
    expression = select.unalias() if isinstance(select, exp.Alias) else select
    if isinstance(expression, exp.Column):
        return IDENTITY
    if expression.find(exp.AggFunc) is not None:
        return Transformation("DIRECT", "AGGREGATION", expression.sql("duckdb"))
    return Transformation("DIRECT", "TRANSFORMATION", expression.sql("duckdb"))


def _unique(origins: list[Origin]) -> list[Origin]:
    seen: dict[tuple[str, str], Origin] = {}
    for origin in origins:
        seen.setdefault((origin.source, origin.column), origin)
    return list(seen.values())


StepHandler = Callable[[_State, StepConfig, str], None]
STEP_HANDLERS: dict[str, StepHandler] = {
    "sql": _sql,
    "rename": _rename,
    "select": _select,
    "cast": _cast,
    "dedup": _keep_columns,
    "filter": _keep_columns,
}
