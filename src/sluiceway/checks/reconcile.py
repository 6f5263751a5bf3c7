"""`reconcile`: the audited table against another table — row counts, column sums, key sets.

The other table (`against`) is a pipeline source by name (its contract-valid rows) or a file
DuckDB reads (Parquet, CSV, JSON). Every comparison is an uncorrelated scalar subquery, so it
rides in the one fused aggregate query of `table.evaluate_checks` like any other check.

The observed value is one number per check, the first that applies of:
- `keys`: the number of mismatched keys (missing from the target plus not in `against`);
- `sums`: the worst relative difference of a sum, |target - against| / the larger |sum|;
- `row_count`: the row-count difference, target minus `against`.
The message carries every number. Results hold counts and sums only; the sample of
mismatched keys is the one place key values appear (see `unexpected_sample_sql`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from sluiceway.checks.base import (
    SAMPLE_SIZE,
    TOLERANCE,
    CheckEnv,
    CheckResult,
    Outcome,
    TableCheck,
    at_least,
)
from sluiceway.checks.vocabulary import TableCheckConfig
from sluiceway.core import registry
from sluiceway.core.spec import Model
from sluiceway.engines.duckdb import quote_ident, quote_literal

__all__ = ["ReconcileCheck", "ReconcileConfig", "RowCountTolerance", "SumTolerance"]

_READERS = {
    ".parquet": "read_parquet",
    ".csv": "read_csv",
    ".tsv": "read_csv",
    ".json": "read_json_auto",
    ".ndjson": "read_json_auto",
    ".jsonl": "read_json_auto",
}
_COMPRESSIONS = (".gz", ".zst")
_GLOB = set("*?[")


class RowCountTolerance(Model):
    """How far the target's row count may be from the row count of `against`."""

    tolerance: int = Field(0, ge=0, description="Rows of difference allowed, either way.")
    tolerance_percent: float | None = Field(
        None, ge=0, description="Difference allowed as a percent of the row count of `against`."
    )


class SumTolerance(Model):
    """One column whose sum in the target must match a column's sum in `against`."""

    column: str = Field(min_length=1, description="The summed column of the target.")
    against_column: str | None = Field(
        None, min_length=1, description="The summed column of `against` (default: `column`)."
    )
    tolerance: float = Field(0, ge=0, description="Absolute difference of the sums allowed.")
    tolerance_percent: float | None = Field(
        None,
        ge=0,
        description="Relative difference allowed, in percent of the larger absolute sum.",
    )

    @property
    def other(self) -> str:
        """The column summed in `against`."""
        return self.against_column or self.column


class ReconcileConfig(TableCheckConfig):
    """The target table reconciles with `against`: row count, sums and key sets agree.

    `mostly` applies to `keys` only: the share of keys (in either table) found in both.
    """

    key: ClassVar[str] = "reconcile"

    against: str = Field(
        min_length=1,
        description="A pipeline source by name (its contract-valid rows) or a file path "
        "DuckDB reads: .parquet, .csv, .tsv, .json, .ndjson (optionally .gz/.zst), or a glob.",
    )
    row_count: RowCountTolerance | None = Field(
        None, description="Compare row counts; `{}` means exactly equal."
    )
    sums: list[SumTolerance] = Field(
        default_factory=list, description="Columns whose sums must agree."
    )
    keys: list[str] = Field(
        default_factory=list,
        description="Key columns (in both tables): every key of one must be in the other.",
    )

    @model_validator(mode="after")
    def _compares_something(self) -> ReconcileConfig:
        if self.row_count is None and not self.sums and not self.keys:
            raise ValueError("set row_count, sums, keys or several of them")
        if self.mostly is not None and not self.keys:
            raise ValueError("'mostly' applies to the share of matched keys: set keys too")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"keys repeat a column: {self.keys}")
        if any(not key for key in self.keys):
            raise ValueError("keys must be column names, not empty strings")
        return self


class ReconcileCheck(TableCheck):
    """`reconcile`: compares the audited table with `against` in the fused query."""

    config: ReconcileConfig

    def __init__(self, config: ReconcileConfig, env: CheckEnv | None = None) -> None:
        super().__init__(config, env)
        self._table = "?"

    @property
    def name(self) -> str:
        return self.config.name or f"reconcile({self.config.against})"

    def aggregates_on(self, table: str) -> dict[str, str]:
        self._table = table
        other = self._relation()
        if other is None:
            return {}
        target = quote_ident(table)
        selects: dict[str, str] = {}
        if self.config.row_count is not None:
            selects["against_rows"] = f"(SELECT count(*) FROM {other})"
        for i, item in enumerate(self.config.sums):
            selects[f"sum_{i}"] = f"CAST(sum({quote_ident(item.column)}) AS DOUBLE)"
            selects[f"against_sum_{i}"] = (
                f"(SELECT CAST(sum({quote_ident(item.other)}) AS DOUBLE) FROM {other})"
            )
        if self.config.keys:
            keys = self._key_list()
            selects["missing"] = _count_rows(
                f"SELECT {keys} FROM {other} EXCEPT {_keys_of(keys, target)}"
            )
            selects["extra"] = _count_rows(
                f"{_keys_of(keys, target)} EXCEPT SELECT {keys} FROM {other}"
            )
            selects["key_union"] = _count_rows(
                f"SELECT {keys} FROM {other} UNION {_keys_of(keys, target)}"
            )
        return selects

    def result(self, values: dict[str, Any], rows: int) -> CheckResult:
        problem = self._against_problem()
        if problem is not None:
            return self.error(self._table, problem)
        return super().result(values, rows)

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        parts: list[tuple[bool, str]] = []
        observed: float | int | None = None
        unexpected: int | None = None
        unexpected_percent: float | None = None
        if self.config.row_count is not None:
            ok, text, difference = self._row_count(rows, int(values["against_rows"]))
            parts.append((ok, text))
            observed, unexpected = difference, abs(difference)
        if self.config.sums:
            judged = [self._sum(i, values) for i in range(len(self.config.sums))]
            parts.extend((ok, text) for ok, text, _ in judged)
            observed, unexpected = max(relative for _, _, relative in judged), None
        if self.config.keys:
            ok, text, mismatched, share = self._keys(values)
            parts.append((ok, text))
            observed, unexpected, unexpected_percent = mismatched, mismatched, (1 - share) * 100
        success = all(ok for ok, _ in parts)
        failed = [text for ok, text in parts if not ok]
        verdict = "it does" if success else "it does not: " + "; ".join(failed)
        message = (
            f"Expected the table to reconcile with '{self.config.against}' "
            f"({'; '.join(text for _, text in parts)}); {verdict}."
        )
        return Outcome(success, observed, unexpected, unexpected_percent, message)

    def unexpected_sample_sql(self, table: str) -> str | None:
        """Up to `SAMPLE_SIZE` mismatched keys as text, half from each side, labelled.

        Keys missing from the target come from `against`, which is not masked: in a pipeline
        they are shown only when the environment names the PII columns and no key column is
        one of them (`pii_columns`). Keys only in the target come from the masked table.
        """
        other = self._relation()
        if not self.config.keys or other is None:
            return None
        keys, target, half = self._key_list(), quote_ident(table), SAMPLE_SIZE // 2
        text = self._key_text()
        extra = quote_literal(f"in the target, not in '{self.config.against}': ")
        sides = [
            f"(SELECT {extra} || {text} AS value "
            f"FROM ({_keys_of(keys, target)} EXCEPT SELECT {keys} FROM {other}) "
            f"ORDER BY value LIMIT {half})"
        ]
        if self._may_show_against_keys():
            sides.append(
                f"(SELECT 'missing from the target: ' || {text} AS value "
                f"FROM (SELECT {keys} FROM {other} EXCEPT {_keys_of(keys, target)}) "
                f"ORDER BY value LIMIT {half})"
            )
        return f"SELECT value FROM ({' UNION ALL '.join(sides)}) ORDER BY value"

    def _row_count(self, rows: int, against_rows: int) -> tuple[bool, str, int]:
        tolerance = self.config.row_count or RowCountTolerance()
        allowed = float(tolerance.tolerance)
        if tolerance.tolerance_percent is not None:
            allowed = max(allowed, tolerance.tolerance_percent / 100 * against_rows)
        difference = rows - against_rows
        text = (
            f"row count {rows} vs {against_rows}: difference {difference:+d}, allowed ±{allowed:g}"
        )
        return abs(difference) <= allowed + TOLERANCE, text, difference

    def _sum(self, i: int, values: dict[str, Any]) -> tuple[bool, str, float]:
        item = self.config.sums[i]
        ours, theirs = float(values[f"sum_{i}"] or 0), float(values[f"against_sum_{i}"] or 0)
        difference = ours - theirs
        scale = max(abs(ours), abs(theirs))
        relative = abs(difference) / scale if scale else 0.0
        ok = abs(difference) <= item.tolerance + TOLERANCE * max(scale, 1.0)
        if item.tolerance_percent is not None:
            ok = ok or relative * 100 <= item.tolerance_percent + TOLERANCE
        allowed = f"±{item.tolerance:g}"
        if item.tolerance_percent is not None:
            allowed += f" or {item.tolerance_percent:g}%"
        text = (
            f"sum({item.column}) {ours:g} vs sum({item.other}) {theirs:g}: difference "
            f"{difference:+g} ({relative:.4%}), allowed {allowed}"
        )
        return ok, text, relative

    def _keys(self, values: dict[str, Any]) -> tuple[bool, str, int, float]:
        missing, extra, union = (
            int(values["missing"]),
            int(values["extra"]),
            int(values["key_union"]),
        )
        mismatched = missing + extra
        matched = union - mismatched
        share = matched / union if union else 1.0
        required = 1.0 if self.config.mostly is None else self.config.mostly
        text = (
            f"keys ({', '.join(self.config.keys)}): {missing} missing from the target, "
            f"{extra} not in '{self.config.against}', {matched} of {union} matched "
            f"({share:.2%}, required {required:.2%})"
        )
        return at_least(share, required), text, mismatched, share

    def _relation(self) -> str | None:
        """`against` as an SQL relation, or None when it names nothing that can be read."""
        against = self.config.against
        if against in self.env.tables:
            return quote_ident(self.env.tables[against])
        reader = _reader_of(against)
        if reader is None or self._against_problem() is not None:
            return None
        return f"{reader}({quote_literal(self._path())})"

    def _path(self) -> str:
        """`against` as a file path: a relative local path resolves against the spec's folder."""
        against = self.config.against
        if "://" in against or Path(against).is_absolute():
            return against
        return str((self.env.base_dir or Path.cwd()) / against)

    def _against_problem(self) -> str | None:
        against = self.config.against
        if against in self.env.tables:
            return None
        if _reader_of(against) is None:
            return _unknown_against(against, sorted(self.env.tables))
        is_local = "://" not in against and not (_GLOB & set(against))
        if is_local and not Path(self._path()).is_file():
            where = Path(self._path()).resolve()
            return (
                f"against file '{against}' not found (looked at {where}). "
                "Give an absolute path, or a path relative to the spec's folder."
            )
        return None

    def _may_show_against_keys(self) -> bool:
        if not self.env.pipeline:
            return True
        pii = getattr(self.env, "pii_columns", None)
        if pii is None:
            return False
        return not {k.lower() for k in self.config.keys} & {str(c).lower() for c in pii}

    def _key_list(self) -> str:
        return ", ".join(quote_ident(key) for key in self.config.keys)

    def _key_text(self) -> str:
        def text(key: str) -> str:
            return f"coalesce(CAST({quote_ident(key)} AS VARCHAR), 'NULL')"

        if len(self.config.keys) == 1:
            return text(self.config.keys[0])
        labelled = [f"{quote_literal(key + '=')} || {text(key)}" for key in self.config.keys]
        return f"concat_ws(', ', {', '.join(labelled)})"


def _reader_of(against: str) -> str | None:
    """The DuckDB table function that reads the file `against`, or None for a plain name."""
    path = against.lower()
    for compression in _COMPRESSIONS:
        path = path.removesuffix(compression)
    return _READERS.get(Path(path).suffix)


def _unknown_against(against: str, known: list[str]) -> str:
    if not known:
        return (
            f"against '{against}' is not a file DuckDB reads and there are no pipeline "
            f"sources here; name a file ending in {', '.join(_READERS)}."
        )
    hint = registry.did_you_mean(against, known)
    return (
        f"against '{against}' is neither a pipeline source nor a file path.{hint} "
        f"Pipeline sources: {', '.join(known)}; a file ends in {', '.join(_READERS)}."
    )


def _keys_of(keys: str, relation: str) -> str:
    return f"SELECT {keys} FROM {relation}"


def _count_rows(query: str) -> str:
    return f"(SELECT count(*) FROM ({query}))"


registry.register("check", ReconcileConfig.key, ReconcileConfig, ReconcileCheck)
