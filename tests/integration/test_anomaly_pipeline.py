"""A pipeline with anomaly checks run over many logical dates: the spike is caught by the gate,
flagged in the metric history, and left out of the training of the runs after it."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from deltalake import DeltaTable

from sluiceway.checks import anomaly  # noqa: F401  (registers the check, as sluiceway.plugins will)
from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline
from sluiceway.core.runstore import RunStore

FIRST_DAY = date(2025, 2, 1)
NORMAL_ROWS = [50, 52, 48, 51, 49, 53, 47, 50, 52, 48]
SPIKE_ROWS = 500

CONTRACT = {"columns": {"order_id": {"type": "string"}, "amount": {"type": "double"}}}
SPEC = {
    "version": 1,
    "pipeline": "orders",
    "checks": [
        {"anomaly": {"metric": "row_count", "min_history": 5, "name": "row_count_zscore"}},
        {
            "anomaly": {
                "metric": "row_count",
                "method": "relative_change",
                "max_relative_change": 0.5,
                "min_history": 1,
                "name": "row_count_vs_previous",
            }
        },
        {
            "anomaly": {
                "metric": "mean",
                "column": "amount",
                "min_history": 5,
                "severity": "warn",
                "name": "amount_mean",
            }
        },
    ],
    "sinks": [{"type": "delta", "path": "lake/orders", "mode": "append"}],
}


def run_day(base: Path, day: date, rows: int) -> RunResult:
    folder = base / "in" / day.isoformat()
    folder.mkdir(parents=True)
    lines = [f"{day:%Y%m%d}-{i},{10 + i % 7}" for i in range(rows)]
    (folder / "orders.csv").write_text("order_id,amount\n" + "\n".join(lines) + "\n")
    source = {"type": "files", "path": f"in/{day.isoformat()}/", "contract": CONTRACT}
    spec = {**SPEC, "sources": {"orders": source}}
    options = RunOptions(logical_date=day, base_dir=base, state_dir=base / ".sluice")
    return run_pipeline(pipeline_from_dict(spec), options)


def by_name(result: RunResult) -> dict[str, str]:
    return {check.name: check.status for check in result.checks}


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("anomaly")


@pytest.fixture(scope="module")
def history(lake: Path) -> list[RunResult]:
    """Ten normal days, a spike on the eleventh, a normal twelfth day, a spike again."""
    counts = [*NORMAL_ROWS, SPIKE_ROWS, 51, SPIKE_ROWS]
    days = [FIRST_DAY + timedelta(days=i) for i in range(len(counts))]
    return [run_day(lake, day, rows) for day, rows in zip(days, counts, strict=True)]


def test_normal_days_pass_while_the_history_builds_up(history: list[RunResult]) -> None:
    for result in history[:10]:
        assert result.ok, result.error
        assert by_name(result) == {
            "row_count_zscore": "passed",
            "row_count_vs_previous": "passed",
            "amount_mean": "passed",
        }
    assert "Not judged" in history[0].checks[0].message
    assert "learned from 9 earlier point(s)" in history[9].checks[0].message


def test_the_spike_fails_the_gate_and_nothing_is_published(
    lake: Path, history: list[RunResult]
) -> None:
    spike = history[10]

    assert spike.status == "failed"
    assert by_name(spike)["row_count_zscore"] == "failed"
    assert by_name(spike)["row_count_vs_previous"] == "failed"
    assert spike.error is not None and "row_count_zscore" in spike.error
    assert "it was 500: an anomaly, above the expected range" in spike.checks[0].message
    published = DeltaTable(str(lake / "lake" / "orders")).to_pyarrow_table()
    assert published.num_rows == sum(NORMAL_ROWS) + 51


def test_the_spike_is_flagged_in_the_metric_history(lake: Path, history: list[RunResult]) -> None:
    store = RunStore(lake / ".sluice" / "runs.db")
    zscore = history[10].checks[0]

    points = store.metric_history("orders", zscore.check_id, "observed_value")

    assert [p.value for p in points] == [*NORMAL_ROWS, SPIKE_ROWS, 51, SPIKE_ROWS]
    assert [p.flagged for p in points] == [False] * 10 + [True, False, True]
    assert {p.dataset for p in points} == {"staged"}


def test_the_day_after_the_spike_passes_because_the_spike_is_not_trained_on(
    history: list[RunResult],
) -> None:
    after = history[11]

    assert after.ok, after.error
    # trained on the ten normal days: the flagged spike is left out
    assert "learned from 10 earlier point(s)" in after.checks[0].message
    # compared with the last normal day (48 rows), not with the spike (500 rows)
    assert "change +6.2% from the previous value" in after.checks[1].message


def test_a_second_spike_is_still_caught(history: list[RunResult]) -> None:
    again = history[12]

    assert again.status == "failed"
    assert by_name(again)["row_count_zscore"] == "failed"
    assert "learned from 11 earlier point(s)" in again.checks[0].message
