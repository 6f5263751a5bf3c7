"""The `drift` check: PSI and KS against numpy, baselines from the store or a pinned file."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pyarrow as pa
import pytest

import sluiceway.checks.drift  # noqa: F401  (registers the drift check)
from sluiceway.checks.base import CheckEnv, CheckResult
from sluiceway.checks.drift import EPSILON, DriftConfig
from sluiceway.checks.profile import PROBABILITIES, compute_profile, save_profile, store_run_profile
from sluiceway.checks.table import evaluate_checks
from sluiceway.checks.vocabulary import NotNullConfig
from sluiceway.core.loader import pipeline_from_dict
from sluiceway.errors import SpecError

PIPELINE = "shop"
YESTERDAY, TODAY = date(2024, 1, 1), date(2024, 1, 2)
rng = np.random.default_rng(7)
BASE = rng.normal(0.0, 1.0, 5000)
SAME = rng.normal(0.0, 1.0, 4000)
SHIFTED = rng.normal(1.0, 1.0, 4000)
CATEGORIES = [f"cat_{k}" for k in range(30)]
CATEGORY_COUNTS = [(40 - k) * 10 for k in range(30)]  # distinct counts: a clear top 20


def load(engine, name: str, **columns) -> str:
    return engine.register_arrow(name, pa.table(columns))


def keep_baseline(engine, state_dir, table: str, day: date = YESTERDAY, **kwargs) -> None:
    profile = compute_profile(engine, table, **kwargs)
    save_profile(state_dir, PIPELINE, "staged", profile, day)


def drift(engine, table: str, state_dir, **config) -> CheckResult:
    env = CheckEnv(pipeline=PIPELINE, logical_date=TODAY, state_dir=state_dir)
    [result] = evaluate_checks(engine, table, [DriftConfig(**config)], env)
    return result


def numpy_psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e, a = np.maximum(expected, EPSILON), np.maximum(actual, EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def numpy_edges(base: np.ndarray) -> np.ndarray:
    return np.unique(np.quantile(base, PROBABILITIES))


def numpy_binned_psi(base: np.ndarray, current: np.ndarray) -> float:
    edges = numpy_edges(base)

    def shares(x: np.ndarray) -> np.ndarray:
        bins = np.searchsorted(edges, x, side="right")  # bin i: edges[i-1] <= x < edges[i]
        bins = np.where(x > edges[-1], len(edges) + 1, bins)  # the maximum keeps bin n alone
        return np.bincount(bins, minlength=len(edges) + 2) / len(x)

    return numpy_psi(shares(base), shares(current))


def numpy_cdf(x: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.sort(x), points, side="right") / len(x)


def numpy_ks_at_edges(base: np.ndarray, current: np.ndarray) -> float:
    edges = numpy_edges(base)
    return float(np.max(np.abs(numpy_cdf(current, edges) - numpy_cdf(base, edges))))


def numpy_ks_full(base: np.ndarray, current: np.ndarray) -> float:
    points = np.concatenate([base, current])
    return float(np.max(np.abs(numpy_cdf(current, points) - numpy_cdf(base, points))))


def categories(shares: list[float], size: int, extra: str | None = None) -> list[str]:
    names = CATEGORIES + ([extra] if extra else [])
    p = np.array(shares) / np.sum(shares)
    return list(np.random.default_rng(11).choice(names, size=size, p=p))


def base_categories() -> list[str]:
    return [name for name, n in zip(CATEGORIES, CATEGORY_COUNTS, strict=True) for _ in range(n)]


def numpy_categorical_psi(base: list[str], current: list[str]) -> float:
    top = CATEGORIES[:20]

    def shares(values: list[str]) -> np.ndarray:
        counts = np.array([values.count(name) for name in top]) / len(values)
        return np.append(counts, 1 - counts.sum())

    return numpy_psi(shares(base), shares(current))


@pytest.mark.parametrize(
    ("current", "drifted"), [(SAME, False), (SHIFTED, True)], ids=["same", "shifted"]
)
def test_binned_psi_equals_numpy_and_flags_a_shift(engine, tmp_path, current, drifted) -> None:
    keep_baseline(engine, tmp_path, load(engine, "base", x=BASE))

    result = drift(engine, load(engine, "now", x=current), tmp_path, column="x", method="psi")

    assert result.observed_value == pytest.approx(numpy_binned_psi(BASE, current), rel=1e-9)
    assert result.status == ("failed" if drifted else "passed")
    assert (result.observed_value > 0.2) is drifted
    assert "PSI of column 'x' against the baseline profile of 2024-01-01" in result.message


TIES_LOW = np.array([0.0] * 600 + [float(i % 4 + 1) for i in range(400)])
TIES_HIGH = np.array([float(i % 4) for i in range(400)] + [100.0] * 600)


@pytest.mark.parametrize(
    ("base", "current"),
    [
        (np.full(500, 5.0), np.full(500, 4.0)),  # a constant moves below itself
        (np.full(500, 5.0), np.full(500, 6.0)),  # … or above itself
        (TIES_LOW, np.where(TIES_LOW == 0.0, -900.0, TIES_LOW)),  # ties at the minimum go lower
        (TIES_HIGH, np.where(TIES_HIGH == 100.0, 900.0, TIES_HIGH)),  # ties at the max go higher
    ],
    ids=["constant_down", "constant_up", "ties_at_min_down", "ties_at_max_up"],
)
def test_binned_psi_sees_values_leave_the_baselines_range_at_either_end(
    engine, tmp_path, base, current
) -> None:
    keep_baseline(engine, tmp_path, load(engine, "base", x=base))

    result = drift(engine, load(engine, "now", x=current), tmp_path, column="x", method="psi")

    assert result.observed_value == pytest.approx(numpy_binned_psi(base, current), rel=1e-9)
    assert result.status == "failed", result.message


@pytest.mark.parametrize(
    ("current", "drifted"), [(SAME, False), (SHIFTED, True)], ids=["same", "shifted"]
)
def test_ks_at_baseline_quantiles_equals_numpy_and_is_close_to_the_full_statistic(
    engine, tmp_path, current, drifted
) -> None:
    keep_baseline(engine, tmp_path, load(engine, "base", x=BASE))

    result = drift(engine, load(engine, "now", x=current), tmp_path, column="x", method="ks")

    assert result.observed_value == pytest.approx(numpy_ks_at_edges(BASE, current), rel=1e-9)
    full = numpy_ks_full(BASE, current)
    assert full - 0.03 < result.observed_value <= full + 1e-12
    assert result.status == ("failed" if drifted else "passed")


def test_integer_data_with_ties_shows_no_drift_against_itself(engine, tmp_path) -> None:
    ratings = np.random.default_rng(3).choice(
        [1, 2, 3, 4, 5], size=3000, p=[0.1, 0.1, 0.2, 0.3, 0.3]
    )
    table = load(engine, "ratings", stars=ratings)
    keep_baseline(engine, tmp_path, table)

    ks = drift(engine, table, tmp_path, column="stars", method="ks")
    binned = drift(engine, table, tmp_path, column="stars", method="psi")

    assert ks.observed_value == pytest.approx(0.0, abs=1e-12)
    assert binned.observed_value == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("shares", "extra", "drifted"),
    [
        (CATEGORY_COUNTS, None, False),
        (list(reversed(CATEGORY_COUNTS)), None, True),
        ([*CATEGORY_COUNTS, 6000], "brand_new", True),
    ],
    ids=["same", "reversed", "new-category"],
)
def test_categorical_psi_uses_top_values_and_an_other_bucket(
    engine, tmp_path, shares, extra, drifted
) -> None:
    base = base_categories()
    keep_baseline(engine, tmp_path, load(engine, "base", kind=base))
    current = categories(shares, 6000, extra)

    result = drift(engine, load(engine, "now", kind=current), tmp_path, column="kind")

    assert result.observed_value == pytest.approx(numpy_categorical_psi(base, current), rel=1e-9)
    assert result.status == ("failed" if drifted else "passed")
    assert "cat_" not in json.dumps(result.to_dict())


def test_auto_uses_ks_for_numbers_and_psi_for_text(engine, tmp_path) -> None:
    table = load(engine, "t", x=BASE[:100], kind=base_categories()[:100])
    keep_baseline(engine, tmp_path, table)

    number, text = (drift(engine, table, tmp_path, column=c) for c in ("x", "kind"))

    assert number.message.startswith("Expected the KS statistic of column 'x'")
    assert text.message.startswith("Expected the PSI of column 'kind'")
    assert number.observed_value == text.observed_value == pytest.approx(0.0, abs=1e-12)


def test_the_threshold_decides(engine, tmp_path) -> None:
    keep_baseline(engine, tmp_path, load(engine, "base", x=BASE))
    table = load(engine, "now", x=SAME)

    strict = drift(engine, table, tmp_path, column="x", method="ks", threshold=0.001)
    loose = drift(engine, table, tmp_path, column="x", method="ks", threshold=0.5)

    assert (strict.status, loose.status) == ("failed", "passed")
    assert "at most 0.001" in strict.message


def test_a_first_run_has_no_baseline_and_passes(engine, tmp_path) -> None:
    result = drift(engine, load(engine, "now", x=SHIFTED), tmp_path, column="x")

    assert result.status == "passed"
    assert result.observed_value is None
    assert "no baseline profile yet (no stored profile before 2024-01-02: a first run)" in (
        result.message
    )


def test_previous_ignores_profiles_of_the_same_or_a_later_date(engine, tmp_path) -> None:
    base = load(engine, "base", x=BASE)
    keep_baseline(engine, tmp_path, base, day=TODAY)
    keep_baseline(engine, tmp_path, base, day=date(2024, 1, 3))

    result = drift(engine, load(engine, "now", x=SHIFTED), tmp_path, column="x")

    assert "no baseline profile yet" in result.message


def test_outside_a_pipeline_previous_has_no_baseline(engine) -> None:
    [result] = evaluate_checks(engine, load(engine, "now", x=SHIFTED), [DriftConfig(column="x")])

    assert result.status == "passed"
    assert "no baseline profile yet (profiles are stored by pipeline runs only" in result.message


def test_an_empty_table_has_nothing_to_compare_and_passes(engine, tmp_path) -> None:
    keep_baseline(engine, tmp_path, load(engine, "base", x=BASE))
    engine.run("CREATE TABLE empty (x DOUBLE)")

    result = drift(engine, "empty", tmp_path, column="x")

    assert (result.status, result.observed_value) == ("passed", None)
    assert "this table has no non-NULL value of it" in result.message


def test_the_profile_a_run_stores_is_the_next_runs_baseline(engine, tmp_path) -> None:
    yesterday = CheckEnv(pipeline=PIPELINE, logical_date=YESTERDAY, state_dir=tmp_path)
    store_run_profile(engine, load(engine, "base", x=BASE), yesterday)

    result = drift(engine, load(engine, "now", x=SHIFTED), tmp_path, column="x")

    assert result.status == "failed"
    assert result.observed_value == pytest.approx(numpy_ks_at_edges(BASE, SHIFTED), rel=1e-9)


def test_a_pinned_profile_file_is_a_baseline(engine, tmp_path) -> None:
    pinned = tmp_path / "pinned.json"
    pinned.write_text(json.dumps(compute_profile(engine, load(engine, "base", x=BASE)).to_dict()))
    table = load(engine, "now", x=SHIFTED)

    [result] = evaluate_checks(engine, table, [DriftConfig(column="x", baseline=str(pinned))])

    assert result.status == "failed"
    assert f"against the baseline profile in {pinned}" in result.message


def test_a_missing_pinned_file_is_an_error_result_saying_how_to_make_one(engine, tmp_path) -> None:
    config = DriftConfig(column="x", baseline=str(tmp_path / "nope.json"))

    [result] = evaluate_checks(engine, load(engine, "now", x=SAME), [config])

    assert result.status == "error"
    assert "does not exist; write one with `sluice profile" in result.message


def test_a_column_the_baseline_lacks_is_an_error_with_did_you_mean(engine, tmp_path) -> None:
    keep_baseline(engine, tmp_path, load(engine, "base", amount=BASE))

    result = drift(
        engine, load(engine, "now", amount=SAME, amount2=SAME), tmp_path, column="amount2"
    )

    assert result.status == "error"
    assert "column 'amount2' is not in the baseline profile of 2024-01-01" in result.message
    assert "Did you mean 'amount'?" in result.message


def test_ks_on_a_text_column_is_an_error_naming_psi(engine, tmp_path) -> None:
    table = load(engine, "t", kind=base_categories())
    keep_baseline(engine, tmp_path, table)

    result = drift(engine, table, tmp_path, column="kind", method="ks")

    assert result.status == "error"
    assert "method ks compares numbers; column 'kind' is VARCHAR: use method psi" in result.message


def test_a_pii_column_has_no_buckets_and_says_so(engine, tmp_path) -> None:
    table = load(engine, "t", email=base_categories())
    keep_baseline(engine, tmp_path, table, pii_columns={"email"})

    result = drift(engine, table, tmp_path, column="email")

    assert result.status == "error"
    assert "column 'email' is declared PII, so its baseline profile keeps counts only" in (
        result.message
    )


def test_a_numeric_pii_column_says_it_is_pii(engine, tmp_path) -> None:
    table = load(engine, "t", salary=BASE)
    keep_baseline(engine, tmp_path, table, pii_columns={"salary"})

    result = drift(engine, table, tmp_path, column="salary", method="psi")

    assert result.status == "error"
    assert "column 'salary' is declared PII, so its baseline profile keeps counts only" in (
        result.message
    )
    assert "finite" not in result.message


def test_drift_checks_fuse_with_other_checks_in_one_statement(engine, tmp_path) -> None:
    table = load(engine, "t", x=BASE, kind=base_categories()[: len(BASE)])
    keep_baseline(engine, tmp_path, table)
    env = CheckEnv(pipeline=PIPELINE, logical_date=TODAY, state_dir=tmp_path)
    checks = [
        DriftConfig(column="x", method="psi"),
        DriftConfig(column="x", method="ks"),
        DriftConfig(column="kind"),
        NotNullConfig(column="x"),
    ]

    before = engine.statements
    results = evaluate_checks(engine, table, checks, env)

    assert engine.statements - before == 1
    assert [r.status for r in results] == ["passed"] * 4


def test_the_loader_validates_drift_settings() -> None:
    spec = {
        "version": 1,
        "pipeline": "shop",
        "sources": {"orders": {"type": "files", "path": "orders.csv"}},
        "sinks": [{"type": "delta", "path": "lake"}],
        "checks": [{"drift": {"column": "x", "method": "psi", "threshold": 0.3}}],
    }
    assert pipeline_from_dict(spec).checks[0] == DriftConfig(
        column="x", method="psi", threshold=0.3
    )

    spec["checks"] = [{"drift": {"column": "x", "method": "chi2", "mostly": 0.9}}]
    with pytest.raises(SpecError) as caught:
        pipeline_from_dict(spec)

    text = str(caught.value)
    assert "checks[0].drift.method" in text and "'psi', 'ks' or 'auto'" in text


def test_small_samples_of_one_distribution_are_not_drift_but_a_shift_still_is(
    engine, tmp_path
) -> None:
    """300 rows a day of one distribution: PSI reaches ~0.3 and KS ~0.1 by chance alone;
    the default thresholds are raised to that noise, and a real shift still fails."""
    sample = np.random.default_rng(11)
    keep_baseline(engine, tmp_path, load(engine, "base", x=sample.normal(0, 1, 300)))
    now = {"same": sample.normal(0, 1, 300), "moved": sample.normal(1, 1, 300)}
    tables = {name: load(engine, name, x=values) for name, values in now.items()}

    for method in ("psi", "ks"):
        same = drift(engine, tables["same"], tmp_path, column="x", method=method)
        moved = drift(engine, tables["moved"], tmp_path, column="x", method=method)
        assert same.status == "passed", same.message
        assert "differ by chance 1 time in 100" in same.message
        assert moved.status == "failed", moved.message


def test_psi_on_too_few_values_for_its_buckets_gives_no_verdict(engine, tmp_path) -> None:
    sample = np.random.default_rng(5)
    keep_baseline(engine, tmp_path, load(engine, "base", x=sample.normal(0, 1, 100)))

    result = drift(
        engine, load(engine, "now", x=sample.normal(3, 1, 100)), tmp_path, column="x", method="psi"
    )

    assert result.status == "passed"
    assert "too few values to judge by PSI" in result.message and "method ks" in result.message


def test_sampling_noise_fades_with_the_sample_size() -> None:
    from sluiceway.checks.drift import sampling_noise

    assert sampling_noise("psi", 300, 300, 14) == pytest.approx(0.37, abs=0.02)
    assert sampling_noise("psi", 100_000, 100_000, 14) < 0.002
    assert sampling_noise("ks", 100, 100, 10) == pytest.approx(0.23, abs=0.01)
