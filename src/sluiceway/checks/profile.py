"""Column profiles of a table, and the store of past runs' profiles that drift checks read.

`compute_profile` costs two statements whatever the number of columns: one fused aggregate
query (counts, NULLs, distinct estimate, min, max, mean, stdev, quantiles at `PROBABILITIES`,
candidate top values) and one fused count query (exact counts of values at or below each
quantile edge of numeric columns, exact counts of the top values). Quantiles are exact
(`quantile_cont`); the distinct count is an estimate (HyperLogLog), the top values are found
by `approx_top_k` and counted exactly.

A profile holds row values (min, max, quantiles, top values), so it is computed on the
staged, masked table only, and columns named in `pii_columns` keep counts only.
Profiles of runs are kept as `<state_dir>/profiles/<pipeline>/<dataset>/<logical_date>.json`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sluiceway.checks.base import sql_literal
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident
from sluiceway.errors import ConfigError

if TYPE_CHECKING:
    from sluiceway.checks.base import CheckEnv

__all__ = [
    "PROBABILITIES",
    "PROFILE_VERSION",
    "ColumnProfile",
    "Profile",
    "compute_profile",
    "latest_before",
    "load_profile",
    "profile_path",
    "read_profile",
    "save_profile",
    "store_run_profile",
]

PROFILE_VERSION = 1
PROBABILITIES = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
TOP_K = 20
CATEGORICAL_MAX_DISTINCT = 1000

Kind = Literal["numeric", "temporal", "boolean", "text", "other"]

_NUMERIC = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL",
}  # fmt: skip
_TEMPORAL = {"DATE", "TIME", "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"}
_TEXT = {"VARCHAR", "UUID", "ENUM"}


def kind_of(duckdb_type: str) -> Kind:
    """The profile kind of a DuckDB type: what is measured of such a column."""
    base = duckdb_type.upper().split("(")[0].strip()
    if base in _NUMERIC:
        return "numeric"
    if base in _TEMPORAL or base.startswith("TIMESTAMP"):
        return "temporal"
    if base == "BOOLEAN":
        return "boolean"
    return "text" if base in _TEXT else "other"


@dataclass(frozen=True)
class ColumnProfile:
    """What one column looked like.

    Attributes:
        name, type: the column and its DuckDB type; `kind` says which fields apply.
        count, nulls: non-NULL and NULL values.
        distinct: estimated distinct non-NULL values (None for nested types).
        min, max: numbers for numeric columns, ISO text for temporal ones, text otherwise.
        mean, stdev: numeric columns only.
        quantiles: the values at the profile's `probabilities` (numeric and temporal).
        edges: the distinct numeric quantile values, ascending; `count_below[i]` and
            `count_at_or_below[i]` are the exact numbers of values < and <= `edges[i]`.
        top_values: [value as text, count] of the most frequent values, most frequent first;
            kept for categorical columns (text and boolean, or at most `TOP_K` distinct values).
        is_pii: a declared PII column: counts only.
    """

    name: str
    type: str
    kind: Kind
    count: int
    nulls: int
    distinct: int | None = None
    min: float | int | str | None = None
    max: float | int | str | None = None
    mean: float | None = None
    stdev: float | None = None
    quantiles: list[float | str] | None = None
    edges: list[float] | None = None
    count_below: list[int] | None = None
    count_at_or_below: list[int] | None = None
    top_values: list[tuple[str, int]] | None = None
    is_pii: bool = False

    @property
    def null_ratio(self) -> float | None:
        """NULLs over all rows (None for an empty table)."""
        rows = self.count + self.nulls
        return self.nulls / rows if rows else None

    def histogram(self) -> list[int] | None:
        """Counts per bin between the edges: (-inf, e0), [e0, e1), …, [e_last-1, e_last),
        then e_last alone and (e_last, +inf).

        The edges run from the minimum to the maximum, so the two outer bins are empty and
        fill only when values leave the range; the maximum has a bin of its own so that
        values moving above it are not lumped with it.
        """
        if self.edges is None or self.count_below is None or self.count_at_or_below is None:
            return None
        below = [*self.count_below, self.count_at_or_below[-1], self.count]
        return [below[0]] + [b - a for a, b in itertools.pairwise(below)]

    def quantile(self, probability: float, probabilities: Iterable[float]) -> Any:
        """The stored quantile at `probability`, or None."""
        for p, value in zip(probabilities, self.quantiles or [], strict=False):
            if abs(p - probability) < 1e-12:
                return value
        return None


@dataclass(frozen=True)
class Profile:
    """A table's profile: its row count and one `ColumnProfile` per column, in order."""

    rows: int
    columns: list[ColumnProfile]
    probabilities: list[float]
    logical_date: str | None = None
    version: int = PROFILE_VERSION

    def column(self, name: str) -> ColumnProfile | None:
        """The profile of column `name` (case-insensitive), or None."""
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)

    def to_dict(self) -> dict[str, Any]:
        """The profile as JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "profile") -> Profile:
        """A profile from `to_dict` data.

        Raises:
            ConfigError: the data is not a profile of a version this code reads.
        """
        version = data.get("version") if isinstance(data, dict) else None
        if version != PROFILE_VERSION:
            raise ConfigError(
                f"{source} is not a version {PROFILE_VERSION} sluiceway profile "
                f"(version: {version!r}); write it again with `sluice profile --format json`"
            )
        try:
            columns = [_column_from_dict(c) for c in data["columns"]]
            return cls(
                rows=int(data["rows"]),
                columns=columns,
                probabilities=[float(p) for p in data["probabilities"]],
                logical_date=data.get("logical_date"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{source} is not a valid profile ({type(exc).__name__}: {exc}); "
                "write it again with `sluice profile --format json`"
            ) from exc


def _column_from_dict(data: dict[str, Any]) -> ColumnProfile:
    top = data.get("top_values")
    fields = {**data, "top_values": None if top is None else [(str(v), int(n)) for v, n in top]}
    return ColumnProfile(**fields)


def compute_profile(
    engine: DuckDBEngine, table: str, *, pii_columns: Collection[str] = ()
) -> Profile:
    """Profile every column of `table` in two statements.

    Args:
        engine: the engine holding `table`.
        table: the table or view to profile: the staged (masked) result in a pipeline.
        pii_columns: declared PII columns; they keep counts, NULLs and the distinct estimate
            only, no value of theirs (min, max, quantiles, top values).

    Returns:
        The profile, `logical_date` unset.
    """
    pii = {name.lower() for name in pii_columns}
    described = engine.columns(table)
    selects: dict[str, str] = {"rows": "count(*)"}
    for i, (name, duck_type) in enumerate(described):
        stats = _pii_sql(name) if name.lower() in pii else _stat_sql(name, kind_of(duck_type))
        selects.update({f"k{i}_{alias}": sql for alias, sql in stats.items()})
    values = _fetch(engine, table, selects, purpose=f"profile {table}")
    columns = [
        _column_from_stats(name, duck_type, values, f"k{i}_", is_pii=name.lower() in pii)
        for i, (name, duck_type) in enumerate(described)
    ]
    columns = _with_exact_counts(engine, table, columns)
    return Profile(rows=int(values["rows"]), columns=columns, probabilities=list(PROBABILITIES))


def _pii_sql(name: str) -> dict[str, str]:
    c = quote_ident(name)
    return {"count": f"count({c})", "distinct": f"approx_count_distinct({c})"}


def _stat_sql(name: str, kind: Kind) -> dict[str, str]:
    c = quote_ident(name)
    stats = {"count": f"count({c})"}
    if kind == "other":
        return stats
    text = f"CAST({c} AS VARCHAR)"
    probabilities = "[" + ", ".join(repr(p) for p in PROBABILITIES) + "]"
    stats.update(distinct=f"approx_count_distinct({c})", top=f"approx_top_k({text}, {TOP_K})")
    if kind == "numeric":
        number = f"CAST({c} AS DOUBLE)"
        return {
            **stats,
            "min": f"min({c})",
            "max": f"max({c})",
            "mean": f"avg({number})",
            "stdev": f"stddev_samp({number})",
            "quantiles": f"quantile_cont({number}, {probabilities})",
        }
    stats.update(min=f"CAST(min({c}) AS VARCHAR)", max=f"CAST(max({c}) AS VARCHAR)")
    if kind == "temporal":
        stats["quantiles"] = f"CAST(quantile_disc({c}, {probabilities}) AS VARCHAR[])"
    return stats


def _fetch(engine: DuckDBEngine, table: str, selects: dict[str, str], *, purpose: str) -> dict:
    columns = ", ".join(f"{sql} AS {quote_ident(alias)}" for alias, sql in selects.items())
    row = engine.fetch_one(f"SELECT {columns} FROM {quote_ident(table)}", purpose=purpose)
    return dict(zip(selects, row, strict=True))


def _column_from_stats(
    name: str, duck_type: str, values: dict[str, Any], prefix: str, *, is_pii: bool
) -> ColumnProfile:
    def get(alias: str) -> Any:
        return values.get(prefix + alias)

    count = int(get("count"))
    kind = kind_of(duck_type)
    quantiles = get("quantiles")
    numeric = kind == "numeric" and not is_pii
    distinct = get("distinct")
    return ColumnProfile(
        name=name,
        type=duck_type,
        kind=kind,
        count=count,
        nulls=int(values["rows"]) - count,
        distinct=None if distinct is None else int(distinct),
        min=_plain(get("min")),
        max=_plain(get("max")),
        mean=get("mean"),
        stdev=get("stdev"),
        quantiles=None if quantiles is None else [_plain(q) for q in quantiles],
        edges=_edges(quantiles) if numeric and quantiles else None,
        top_values=[(str(v), 0) for v in get("top") or []] or None,
        is_pii=is_pii,
    )


def _edges(quantiles: list[Any]) -> list[float] | None:
    finite = {float(q) for q in quantiles if q is not None and math.isfinite(float(q))}
    return sorted(finite) or None


def _plain(value: Any) -> Any:
    """A JSON-ready number or text: Decimal becomes float."""
    return float(value) if isinstance(value, Decimal) else value


def _with_exact_counts(
    engine: DuckDBEngine, table: str, columns: list[ColumnProfile]
) -> list[ColumnProfile]:
    """Exact counts below and at each numeric edge and of each top value, in one query; top
    values of columns that are not categorical are dropped first."""
    columns = [replace(c, top_values=c.top_values if _is_categorical(c) else None) for c in columns]
    selects: dict[str, str] = {}
    for i, column in enumerate(columns):
        c = quote_ident(column.name)
        for j, edge in enumerate(column.edges or []):
            number, bound = f"CAST({c} AS DOUBLE)", sql_literal(edge)
            selects[f"k{i}_lt{j}"] = f"count(*) FILTER (WHERE {number} < {bound})"
            selects[f"k{i}_le{j}"] = f"count(*) FILTER (WHERE {number} <= {bound})"
        for j, (value, _) in enumerate(column.top_values or []):
            literal = sql_literal(value)
            selects[f"k{i}_top{j}"] = f"count(*) FILTER (WHERE CAST({c} AS VARCHAR) = {literal})"
    if not selects:
        return columns
    values = _fetch(engine, table, selects, purpose=f"profile {table}: exact counts")
    return [_counted(column, values, f"k{i}_") for i, column in enumerate(columns)]


def _counted(column: ColumnProfile, values: dict[str, Any], prefix: str) -> ColumnProfile:
    edges = range(len(column.edges or []))
    top = [
        (value, int(values[f"{prefix}top{j}"]))
        for j, (value, _) in enumerate(column.top_values or [])
    ]
    return replace(
        column,
        count_below=[int(values[f"{prefix}lt{j}"]) for j in edges] if column.edges else None,
        count_at_or_below=[int(values[f"{prefix}le{j}"]) for j in edges] if column.edges else None,
        top_values=sorted(top, key=lambda vn: (-vn[1], vn[0])) if column.top_values else None,
    )


def _is_categorical(column: ColumnProfile) -> bool:
    """Few distinct values: text or boolean with at most `CATEGORICAL_MAX_DISTINCT` distinct
    values that repeat (at most half as many as values), or any column with `TOP_K` or fewer."""
    if column.is_pii or column.distinct is None or not column.top_values:
        return False
    if column.distinct <= TOP_K:
        return True
    repeats = column.distinct <= column.count // 2
    return (
        column.kind in ("text", "boolean")
        and repeats
        and column.distinct <= CATEGORICAL_MAX_DISTINCT
    )


def profile_path(state_dir: Path, pipeline: str, dataset: str, logical_date: date) -> Path:
    """Where the profile of a run of `logical_date` is kept."""
    return _folder(state_dir, pipeline, dataset) / f"{logical_date.isoformat()}.json"


def _folder(state_dir: Path, pipeline: str, dataset: str) -> Path:
    for what, name in (("pipeline", pipeline), ("dataset", dataset)):
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ConfigError(f"cannot keep profiles for {what} name {name!r}: not a plain name")
    return Path(state_dir) / "profiles" / pipeline / dataset


def save_profile(
    state_dir: Path, pipeline: str, dataset: str, profile: Profile, logical_date: date
) -> Path:
    """Keep `profile` as the profile of the run of `logical_date` (a rerun replaces it).

    Returns:
        The JSON file written.
    """
    path = profile_path(state_dir, pipeline, dataset, logical_date)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = replace(profile, logical_date=logical_date.isoformat())
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(stored.to_dict(), indent=1), encoding="utf-8")
    os.replace(temporary, path)
    return path


def read_profile(path: Path) -> Profile:
    """A profile from a JSON file (a stored one, or `sluice profile --format json` output).

    Raises:
        ConfigError: the file is missing, not JSON, or not a profile.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"profile file {path} does not exist; write one with "
            "`sluice profile DATA --format json > FILE` or use baseline: previous"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read profile file {path}: {exc}") from exc
    return Profile.from_dict(data, source=f"profile file {path}")


def load_profile(
    state_dir: Path, pipeline: str, dataset: str, logical_date: date
) -> Profile | None:
    """The stored profile of the run of `logical_date`, or None."""
    path = profile_path(state_dir, pipeline, dataset, logical_date)
    return read_profile(path) if path.exists() else None


def latest_before(
    state_dir: Path, pipeline: str, dataset: str, logical_date: date
) -> Profile | None:
    """The stored profile of the latest logical date before `logical_date`, or None."""
    folder = _folder(state_dir, pipeline, dataset)
    dates = [d for d in map(_date_of, folder.glob("*.json")) if d is not None and d < logical_date]
    return load_profile(state_dir, pipeline, dataset, max(dates)) if dates else None


def _date_of(path: Path) -> date | None:
    try:
        return date.fromisoformat(path.stem)
    except ValueError:
        return None


def store_run_profile(
    engine: DuckDBEngine, table: str, env: CheckEnv, *, pii_columns: Collection[str] = ()
) -> Path | None:
    """Profile the audited `table` of a run and keep it for the drift checks of later runs.

    The runner calls this after a successful audit when the pipeline has drift checks.

    Args:
        engine: the run's engine.
        table: the staged (masked) table.
        env: the run: pipeline, dataset, logical date and state folder.
        pii_columns: the pipeline's PII columns (counts only in the profile).

    Returns:
        The file written, or None when `env` has no state folder or logical date.
    """
    if env.state_dir is None or env.logical_date is None:
        return None
    profile = compute_profile(engine, table, pii_columns=pii_columns)
    return save_profile(env.state_dir, env.pipeline, env.dataset, profile, env.logical_date)
