"""`sluice profile` and `sluice suggest`: a column profile of data, and a starter contract and
checks written from it.

SOURCE is a data path (a file, folder or glob of CSV, JSON, NDJSON, Parquet or Avro; local or
s3://) or a pipeline spec, whose primary source is read. The data is read typed, as
`sluice check-data` reads it (`checks.standalone`).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import click
import yaml
from rich.markup import escape
from rich.table import Table

from sluiceway.checks import standalone
from sluiceway.checks.profile import ColumnProfile, Profile, compute_profile
from sluiceway.core.loader import load_spec
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident
from sluiceway.errors import SluicewayError, SourceError, SpecError
from sluiceway.sources.files import FilesSource, FilesSourceConfig

__all__ = ["profile", "profile_source", "suggest", "suggest_spec", "suggested_yaml"]

SHOWN_TOP_VALUES = 3
SHOWN_CHARS = 30
SUGGEST_MAX_VALUES = 20
UNIQUE_CANDIDATE_RATIO = 0.9

_CONTRACT_TYPES: dict[str, str] = {
    "BOOLEAN": "boolean",
    "TINYINT": "integer",
    "SMALLINT": "integer",
    "INTEGER": "integer",
    "UTINYINT": "integer",
    "USMALLINT": "integer",
    "BIGINT": "bigint",
    "UINTEGER": "bigint",
    "UBIGINT": "bigint",
    "HUGEINT": "bigint",
    "FLOAT": "float",
    "DOUBLE": "double",
    "DECIMAL": "decimal",
    "DATE": "date",
    "TIMESTAMP WITH TIME ZONE": "timestamp",
    "TIMESTAMP": "timestamp_ntz",
    "TIMESTAMP_S": "timestamp_ntz",
    "TIMESTAMP_MS": "timestamp_ntz",
    "TIMESTAMP_NS": "timestamp_ntz",
    "JSON": "json",
}


def _cli() -> Any:
    from sluiceway import cli

    return cli


def profile_source(
    source: str, *, base_dir: Path, pii_columns: Collection[str] = (), find_unique: bool = False
) -> tuple[Profile, set[str]]:
    """Read SOURCE typed and profile it.

    Args:
        source: a data path, or a pipeline spec (YAML) whose primary source is read.
        base_dir: a relative data path resolves against it.
        pii_columns: columns to keep counts only of, besides a spec's `pii:` columns.
        find_unique: also find the columns whose values are all distinct (one more query).

    Returns:
        The profile, and the columns without NULLs whose values are all distinct (by an
        exact count; empty unless `find_unique`).

    Raises:
        SpecError: SOURCE is a pipeline spec with problems.
        SourceError: the data cannot be found or read.
    """
    config, resolve_dir, pii = _source_config(source, base_dir)
    pii |= set(pii_columns)
    engine = DuckDBEngine(redact_values=True)
    try:
        with tempfile.TemporaryDirectory(prefix="sluice-profile-") as cache:
            ctx = standalone._context(engine, config, resolve_dir, Path(cache))
            table = standalone._read_typed(ctx, FilesSource(config))
            profiled = compute_profile(engine, table, pii_columns=pii)
            unique = _unique_columns(engine, table, profiled) if find_unique else set()
            return profiled, unique
    finally:
        engine.close()


def _source_config(source: str, base_dir: Path) -> tuple[FilesSourceConfig, Path, set[str]]:
    """The files to read, the folder their relative paths resolve against, the PII columns."""
    path = Path(source)
    if path.suffix.lower() not in (".yaml", ".yml"):
        return FilesSourceConfig(path=source), base_dir, set()
    if not path.is_file():
        raise SourceError(f"pipeline spec {source} does not exist")
    if not standalone._is_pipeline_spec(path):
        raise SourceError(
            f"{source} is YAML but not a pipeline spec (no pipeline:, sources: or sinks:); "
            "pass a data file, folder or glob, or a pipeline spec"
        )
    pipeline = load_spec(path)
    primary = pipeline.sources[pipeline.primary_source]
    if not isinstance(primary, FilesSourceConfig):
        raise SourceError(
            f"the primary source '{pipeline.primary_source}' of {source} is of type "
            f"'{primary.type}'; profile reads files: pass a data path instead"
        )
    return primary, path.resolve().parent, set(pipeline.pii)


def _unique_columns(engine: DuckDBEngine, table: str, profiled: Profile) -> set[str]:
    """Columns without NULLs whose values are all distinct, confirmed by an exact count."""
    candidates = [
        c.name
        for c in profiled.columns
        if c.nulls == 0
        and c.count > 1
        and c.distinct is not None
        and c.distinct >= UNIQUE_CANDIDATE_RATIO * c.count
    ]
    if not candidates:
        return set()
    counts = ", ".join(f"count(DISTINCT {quote_ident(name)})" for name in candidates)
    row = engine.fetch_one(
        f"SELECT {counts} FROM {quote_ident(table)}", purpose="count distinct values"
    )
    return {
        name for name, distinct in zip(candidates, row, strict=True) if distinct == profiled.rows
    }


def suggest_spec(profiled: Profile, unique_columns: Collection[str] = ()) -> dict[str, Any]:
    """A starter `contract:` and `checks:` that the profiled data passes.

    Args:
        profiled: the profile of the data.
        unique_columns: columns whose values are all distinct (see `profile_source`).

    Returns:
        `{"contract": {"columns": {...}}, "checks": [...]}` in the YAML shape.
    """
    columns = {c.name: _column_contract(c, profiled.rows) for c in profiled.columns}
    checks: list[dict[str, Any]] = []
    for column in profiled.columns:
        checks.extend(_column_checks(column, profiled.rows, column.name in unique_columns))
    rows = profiled.rows
    checks.append({"row_count_between": {"min_value": rows // 2, "max_value": rows * 2}})
    return {"contract": {"columns": columns}, "checks": checks}


def _contract_type(column: ColumnProfile) -> dict[str, Any]:
    base = column.type.upper().split("(")[0].strip()
    kind = _CONTRACT_TYPES.get(base, "json" if _is_nested(base) else "string")
    if kind != "decimal":
        return {"type": kind}
    precision, scale = column.type.split("(")[1].rstrip(")").split(",")
    return {"type": kind, "precision": int(precision), "scale": int(scale)}


def _is_nested(base: str) -> bool:
    return base.endswith("[]") or base.startswith(("STRUCT", "MAP", "LIST", "UNION"))


def _column_contract(column: ColumnProfile, rows: int) -> dict[str, Any]:
    contract = _contract_type(column)
    if rows and column.nulls == 0:
        contract["nullable"] = False
    values = _value_set(column)
    if values is not None:
        contract["values"] = values
    if column.kind == "numeric" and column.min is not None and column.max is not None:
        contract.update(min=column.min, max=column.max)
    return contract


def _value_set(column: ColumnProfile) -> list[str] | None:
    """All values of a low-cardinality text column (that repeat), else None."""
    top = column.top_values
    if column.kind != "text" or not top or len(top) > SUGGEST_MAX_VALUES:
        return None
    if sum(n for _, n in top) != column.count or len(top) * 2 > column.count:
        return None
    return sorted(value for value, _ in top)


def _column_checks(column: ColumnProfile, rows: int, is_unique: bool) -> list[dict[str, Any]]:
    name = column.name
    checks: list[dict[str, Any]] = []
    if rows and column.nulls == 0:
        checks.append({"not_null": {"column": name}})
    if is_unique:
        checks.append({"unique": {"column": name}})
    values = _value_set(column)
    if values is not None:
        checks.append({"in_set": {"column": name, "value_set": values}})
    has_range = column.min is not None and column.max is not None
    if column.kind in ("numeric", "temporal") and has_range:
        checks.append(
            {"between": {"column": name, "min_value": column.min, "max_value": column.max}}
        )
    return checks


def suggested_yaml(source: str, profiled: Profile, suggested: dict[str, Any]) -> str:
    """The YAML `sluice suggest` writes: a header that says where each block goes, then the
    `suggested` contract and checks (see `suggest_spec`)."""
    header = (
        f"# Suggested by `sluice suggest` from {source}: {profiled.rows} rows, "
        f"{len(profiled.columns)} columns.\n"
        "# A starting point: review every bound and value list before relying on it.\n"
        "# `contract:` goes under sources.<name>.contract of a pipeline spec, `checks:` at its\n"
        "# top level (or, with `version: 1` added, in a checks file for `sluice check-data`).\n"
    )
    body = yaml.safe_dump(
        suggested,
        sort_keys=False,
        default_flow_style=None,
        allow_unicode=True,
        width=100,
    )
    return header + body


def _profile_or_exit(
    source: str, pii: tuple[str, ...], *, find_unique: bool = False
) -> tuple[Profile, set[str]]:
    cli = _cli()
    try:
        return profile_source(source, base_dir=Path.cwd(), pii_columns=pii, find_unique=find_unique)
    except SpecError as exc:
        cli._print_problems(source, exc)
        sys.exit(1)
    except SluicewayError as exc:
        cli._fail(exc.message, code=1)
    raise AssertionError("unreachable")


_PII_OPTION = click.option(
    "--pii",
    multiple=True,
    metavar="COLUMN",
    help="A PII column: counts only, no value of it is shown (repeatable; a spec's pii: "
    "columns are always treated so).",
)


@click.command()
@click.argument("source")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@_PII_OPTION
def profile(source: str, fmt: str, pii: tuple[str, ...]) -> None:
    """Print a column profile of SOURCE: types, NULLs, distinct values, range, top values.

    SOURCE: a file, folder or glob (CSV, JSON, NDJSON, Parquet, Avro; local or s3://), or a
    pipeline spec (its primary source). Exit 1 when the data cannot be read.
    """
    profiled, _ = _profile_or_exit(source, pii)
    if fmt == "json":
        print(json.dumps(profiled.to_dict(), indent=1, default=str))
        return
    _cli().console.print(_profile_table(source, profiled))


@click.command()
@click.argument("source")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write here (default: stdout)."
)
@_PII_OPTION
def suggest(source: str, output: str | None, pii: tuple[str, ...]) -> None:
    """Write a starter contract and checks YAML from a profile of SOURCE.

    SOURCE: a file, folder or glob (CSV, JSON, NDJSON, Parquet, Avro; local or s3://), or a
    pipeline spec (its primary source). Exit 1 when the data cannot be read.
    """
    profiled, unique = _profile_or_exit(source, pii, find_unique=True)
    suggested = suggest_spec(profiled, unique)
    text = suggested_yaml(source, profiled, suggested)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        _cli()._fail(f"cannot write {output}: {exc.strerror or exc}", code=1)
    columns, checks = len(profiled.columns), len(suggested["checks"])
    click.echo(f"wrote {output}: a contract of {columns} columns and {checks} checks")


def _profile_table(source: str, profiled: Profile) -> Table:
    table = Table(
        title=f"{escape(source)}: {profiled.rows:,} rows, {len(profiled.columns)} columns",
        header_style="bold",
    )
    for heading in ("column", "type", "null %", "distinct", "min", "max", "mean", "p50"):
        table.add_column(heading, overflow="fold")
    table.add_column("top values", overflow="fold")
    for column in profiled.columns:
        ratio = column.null_ratio
        table.add_row(
            escape(column.name + (" (PII)" if column.is_pii else "")),
            escape(column.type),
            "" if ratio is None else f"{ratio:.1%}",
            "" if column.distinct is None else f"~{column.distinct:,}",
            _shown(column.min),
            _shown(column.max),
            _shown(column.mean),
            _shown(column.quantile(0.5, profiled.probabilities)),
            _top_text(column),
        )
    return table


def _shown(value: Any) -> str:
    if value is None:
        return ""
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return escape(text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…")


def _top_text(column: ColumnProfile) -> str:
    top = (column.top_values or [])[:SHOWN_TOP_VALUES]
    return ", ".join(f"{_shown(value)} ({count:,})" for value, count in top)
