"""The `drift` check: has a column's distribution moved away from a baseline profile?

The baseline is the stored profile of the latest earlier logical date (`baseline: previous`)
or a pinned profile file. Its numbers are known only at a few points (top values, quantile
edges with exact counts), so the current table is measured at the same points, inside the
fused check query:

- PSI of a categorical column: the baseline's top values plus one "other" bucket;
- PSI of a numeric column: bins between the baseline's distinct quantile edges,
  (-inf, e0), [e0, e1), …, [e_last-1, e_last), then e_last alone and (e_last, +inf) — the
  edges span the baseline's minimum to its maximum, so values that move below the one or
  above the other land in a bin of their own that the baseline left empty;
- KS of a numeric column: max |F_current(e) - F_baseline(e)| over the baseline's distinct
  quantile edges e — the Kolmogorov–Smirnov statistic evaluated at those points, which is at
  most the full statistic and close to it when the edges are dense where the data is.

Proportions are of non-NULL values (`completeness` watches NULLs). A first run has no
baseline and passes. The observed value is the PSI or the KS statistic, never a row value.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from sluiceway.checks.base import CheckEnv, CheckResult, Outcome, TableCheck, sql_literal
from sluiceway.checks.profile import ColumnProfile, Profile, latest_before, read_profile
from sluiceway.checks.vocabulary import ColumnCheckConfig
from sluiceway.core import registry
from sluiceway.engines.duckdb import quote_ident
from sluiceway.errors import ConfigError

__all__ = ["DEFAULT_THRESHOLDS", "EPSILON", "DriftCheck", "DriftConfig", "ks_statistic", "psi"]

DriftMethod = Literal["psi", "ks", "auto"]
Measure = Literal["psi_categorical", "psi_binned", "ks"]

EPSILON = 1e-4
DEFAULT_THRESHOLDS: dict[str, float] = {"psi": 0.2, "ks": 0.1}


class DriftConfig(ColumnCheckConfig):
    """The distribution of `column` stays close to a baseline profile (PSI or KS)."""

    key: ClassVar[str] = "drift"

    method: DriftMethod = Field(
        "auto",
        description="psi | ks | auto (psi for text and boolean columns, ks for numeric ones).",
    )
    threshold: float | None = Field(
        None,
        gt=0,
        description="Largest allowed PSI or KS statistic (default: PSI 0.2, KS 0.1, each "
        "raised to what small samples differ by chance; a threshold set here is used as given).",
    )
    baseline: str = Field(
        "previous",
        min_length=1,
        description="previous: the stored profile of the latest earlier logical date; "
        "else the path of a profile JSON file (`sluice profile DATA --format json`).",
    )

    @model_validator(mode="after")
    def _no_mostly(self) -> DriftConfig:
        if self.mostly is not None:
            raise ValueError("'mostly' does not apply to drift: its statistic is one number")
        return self


PSI_ROWS_PER_BUCKET = 10
"""Fewest values per bucket, on each side, for a PSI verdict."""


def sampling_noise(measure: str, n: int, m: int, buckets: int) -> float:
    """How large the statistic grows by chance alone (1 time in 100) when samples of `n`
    and `m` values come from one distribution: the KS critical value at α = 0.01, or for
    PSI (about χ² with buckets − 1 degrees of freedom times 1/n + 1/m) twice its 99th
    percentile. On 300 rows a day PSI reaches ~0.3 by chance: a fixed 0.2 would call that
    drift."""
    if n <= 0 or m <= 0:
        return 0.0
    if measure == "ks":
        return 1.628 * math.sqrt((n + m) / (n * m))
    df = max(buckets - 1, 1)
    # Wilson–Hilferty: the χ² quantile from the normal one (z = 2.326 for 99 %). Doubled:
    # the buckets come from the baseline's own quantiles and empty ones count as EPSILON,
    # so measured PSI of one distribution spreads about twice as wide as χ² says.
    chi2 = df * (1 - 2 / (9 * df) + 2.326 * math.sqrt(2 / (9 * df))) ** 3
    return 2 * chi2 * (1 / n + 1 / m)


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two proportion vectors over the same buckets.

    Empty buckets count as `EPSILON`, so a bucket that appears or vanishes costs a finite
    amount.
    """
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, EPSILON), max(a, EPSILON)
        total += (a - e) * math.log(a / e)
    return total


def ks_statistic(expected_cdf: Sequence[float], actual_cdf: Sequence[float]) -> float:
    """The largest distance between two CDFs known at the same points."""
    return max((abs(a - e) for e, a in zip(expected_cdf, actual_cdf, strict=True)), default=0.0)


@dataclass(frozen=True)
class _Plan:
    """What the check compares: the baseline column and how, or why it cannot."""

    baseline: ColumnProfile | None = None
    label: str = ""
    measure: Measure | None = None
    note: str | None = None
    problem: str | None = None


class DriftCheck(TableCheck):
    """`drift`: PSI or KS of the column against its baseline profile, one fused query."""

    config: DriftConfig

    def __init__(self, config: DriftConfig, env: CheckEnv | None = None) -> None:
        super().__init__(config, env)
        self._plan: _Plan | None = None
        self._table = "the table"

    def aggregates_on(self, table: str) -> dict[str, str]:
        self._table = table
        plan = self.plan()
        if plan.measure is None or plan.baseline is None:
            return {}
        return _AGGREGATES[plan.measure](quote_ident(self._column), plan.baseline)

    def result(self, values: dict[str, Any], rows: int) -> CheckResult:
        problem = self.plan().problem
        return self.error(self._table, problem) if problem else super().result(values, rows)

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        plan = self.plan()
        if plan.measure is None or plan.baseline is None:
            return Outcome(True, None, None, None, f"Drift of {self._subject()}: {plan.note}.")
        baseline, judged = plan.baseline, int(values["judged"])
        if judged == 0:
            note = "this table has no non-NULL value of it, nothing to compare"
            return Outcome(True, None, None, None, f"Drift of {self._subject()}: {note}.")
        expected, actual = _DISTRIBUTIONS[plan.measure](baseline, values, judged)
        statistic = (ks_statistic if plan.measure == "ks" else psi)(expected, actual)
        name = "KS statistic" if plan.measure == "ks" else "PSI"
        fewest = min(judged, baseline.count)
        if plan.measure != "ks" and fewest < PSI_ROWS_PER_BUCKET * len(expected):
            note = (
                f"too few values to judge by PSI: {fewest:,} on one side for {len(expected)} "
                f"buckets (PSI needs about {PSI_ROWS_PER_BUCKET} per bucket; on fewer it "
                "swings widely by chance)"
                + (
                    "; method ks judges numbers on small samples"
                    if plan.measure != "psi_categorical"
                    else ""
                )
            )
            return Outcome(True, statistic, None, None, f"Drift of {self._subject()}: {note}.")
        configured = self._threshold(plan.measure)
        # The default threshold is raised to the sampling noise of small samples; one the
        # spec sets is used as given.
        noise = (
            sampling_noise(plan.measure, judged, baseline.count, len(expected))
            if self.config.threshold is None
            else 0.0
        )
        threshold = max(configured, noise)
        success = statistic <= threshold
        verdict = "no drift" if success else "drifted"
        raised = (
            f" (the threshold {configured:g} raised to what samples of {judged:,} and "
            f"{baseline.count:,} values differ by chance 1 time in 100)"
            if noise > configured
            else ""
        )
        message = (
            f"Expected the {name} of {self._subject()} against the baseline profile "
            f"{plan.label} to be at most {threshold:.4g}{raised}; it was {statistic:.4g} "
            f"({verdict})."
        )
        return Outcome(success, statistic, None, None, message)

    def plan(self) -> _Plan:
        """The baseline column and the measure, resolved once."""
        if self._plan is None:
            self._plan = self._resolve()
        return self._plan

    def _resolve(self) -> _Plan:
        try:
            found = self._baseline()
        except ConfigError as exc:
            return _Plan(problem=exc.message)
        if found is None:
            return _Plan(note=f"no baseline profile yet ({self._why_none()}), nothing to compare")
        profile, label = found
        column = profile.column(self._column)
        if column is None:
            names = ", ".join(c.name for c in profile.columns)
            hint = registry.did_you_mean(self._column, [c.name for c in profile.columns])
            return _Plan(
                problem=f"column '{self._column}' is not in the baseline profile {label}.{hint} "
                f"Its columns: {names}."
            )
        if column.count == 0:
            return _Plan(note=f"the baseline profile {label} has no non-NULL value of it")
        measure = self._measure(column)
        if isinstance(measure, _Plan):
            return measure
        return _Plan(baseline=column, label=label, measure=measure)

    def _baseline(self) -> tuple[Profile, str] | None:
        env, baseline = self.env, self.config.baseline
        if baseline != "previous":
            path = Path(baseline).expanduser()
            if not path.is_absolute():
                path = (env.base_dir or Path.cwd()) / path
            return read_profile(path), f"in {path}"
        if env.state_dir is None or env.logical_date is None:
            return None
        profile = latest_before(env.state_dir, env.pipeline, env.dataset, env.logical_date)
        return None if profile is None else (profile, f"of {profile.logical_date}")

    def _why_none(self) -> str:
        if self.env.state_dir is None or self.env.logical_date is None:
            return "profiles are stored by pipeline runs only; pin one with `baseline: FILE`"
        return f"no stored profile before {self.env.logical_date}: a first run"

    def _measure(self, column: ColumnProfile) -> Measure | _Plan:
        method = self.config.method
        if method == "auto":
            method = "ks" if column.kind == "numeric" else "psi"
        if column.is_pii:
            return _Plan(
                problem=f"column '{column.name}' is declared PII, so its baseline profile "
                "keeps counts only (no value, quantile or top value) and drift has nothing to "
                "compare: drop this check (`completeness` still watches its NULLs)"
            )
        if column.kind == "numeric" and not column.edges:
            return _Plan(
                problem=f"the baseline profile has no finite value of column '{column.name}'"
            )
        if column.kind == "numeric":
            return "ks" if method == "ks" else "psi_binned"
        if method == "ks":
            return _Plan(
                problem=f"method ks compares numbers; column '{column.name}' is {column.type}: "
                "use method psi"
            )
        if column.kind not in ("text", "boolean"):
            return _Plan(
                problem=f"drift compares numeric, text or boolean columns; column "
                f"'{column.name}' is {column.type}"
            )
        if not column.top_values:
            return _Plan(
                problem=f"the baseline profile keeps no top values of column '{column.name}' "
                "(too many distinct values to be categorical), so PSI has no buckets: drop "
                "this check or compare a coarser column"
            )
        return "psi_categorical"

    def _threshold(self, measure: Measure) -> float:
        method = "ks" if measure == "ks" else "psi"
        return self.config.threshold or DEFAULT_THRESHOLDS[method]

    def _subject(self) -> str:
        return f"column '{self._column}'"

    @property
    def _column(self) -> str:
        return self.config.column


def _categorical_sql(column: str, baseline: ColumnProfile) -> dict[str, str]:
    text = f"CAST({column} AS VARCHAR)"
    counts = {
        f"v{j}": f"count(*) FILTER (WHERE {text} = {sql_literal(value)})"
        for j, (value, _) in enumerate(baseline.top_values or [])
    }
    return {"judged": f"count({column})", **counts}


def _binned_sql(column: str, baseline: ColumnProfile) -> dict[str, str]:
    number, edges = f"CAST({column} AS DOUBLE)", [sql_literal(e) for e in baseline.edges or []]
    bins = [f"{number} < {edges[0]}"]
    bins += [f"{number} >= {low} AND {number} < {high}" for low, high in itertools.pairwise(edges)]
    bins += [f"{number} = {edges[-1]}", f"{number} > {edges[-1]}"]
    counts = {f"b{i}": f"count(*) FILTER (WHERE {where})" for i, where in enumerate(bins)}
    return {"judged": f"count({column})", **counts}


def _ks_sql(column: str, baseline: ColumnProfile) -> dict[str, str]:
    number = f"CAST({column} AS DOUBLE)"
    counts = {
        f"le{i}": f"count(*) FILTER (WHERE {number} <= {sql_literal(edge)})"
        for i, edge in enumerate(baseline.edges or [])
    }
    return {"judged": f"count({column})", **counts}


Distributions = tuple[list[float], list[float]]


def _categorical(baseline: ColumnProfile, values: dict[str, Any], judged: int) -> Distributions:
    top = baseline.top_values or []
    expected = [n / baseline.count for _, n in top]
    actual = [int(values[f"v{j}"]) / judged for j in range(len(top))]
    return [*expected, 1 - sum(expected)], [*actual, 1 - sum(actual)]


def _binned(baseline: ColumnProfile, values: dict[str, Any], judged: int) -> Distributions:
    histogram = baseline.histogram() or []
    expected = [n / baseline.count for n in histogram]
    actual = [int(values[f"b{i}"]) / judged for i in range(len(histogram))]
    return expected, actual


def _ks(baseline: ColumnProfile, values: dict[str, Any], judged: int) -> Distributions:
    at_or_below = baseline.count_at_or_below or []
    expected = [n / baseline.count for n in at_or_below]
    actual = [int(values[f"le{i}"]) / judged for i in range(len(at_or_below))]
    return expected, actual


_AGGREGATES: dict[Measure, Callable[[str, ColumnProfile], dict[str, str]]] = {
    "psi_categorical": _categorical_sql,
    "psi_binned": _binned_sql,
    "ks": _ks_sql,
}
_DISTRIBUTIONS: dict[Measure, Callable[[ColumnProfile, dict[str, Any], int], Distributions]] = {
    "psi_categorical": _categorical,
    "psi_binned": _binned,
    "ks": _ks,
}

registry.register("check", DriftConfig.key, DriftConfig, DriftCheck)
