"""Anomaly detection on a metric's history: pure functions, no I/O.

A tested value is judged against a training set drawn from the earlier points of its series:
of each logical date (and hour, with `hour_of_day`) only the latest recorded point counts; of
those, points already flagged as anomalies, points of the tested logical date or later, and
points of another seasonal bucket (another weekday, another hour) are left out, then the
window keeps the last N points or the last N days. Fewer than `min_history` points left is
"insufficient history", never an anomaly.

Two methods:

- `zscore`: the robust z-score `0.6745 * (x - median) / MAD`, where MAD is the median absolute
  deviation from the median. When MAD is 0 (more than half the points equal the median), the
  scale falls back to the mean absolute deviation times 1.2533 (`sqrt(pi / 2)`, so the score
  stays in standard deviations of a normal series); when that is 0 too (every point equal),
  the series is constant and any other value is an anomaly (score ±inf), the same value is not.
- `relative_change`: `(x - baseline) / |baseline|`, the baseline being the previous training
  point or the training median; a baseline of 0 makes any non-zero value an infinite change.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

Method = Literal["zscore", "relative_change"]
Direction = Literal["both", "up", "down"]
Seasonality = Literal["none", "day_of_week", "hour_of_day"]
WindowUnit = Literal["points", "days"]
Baseline = Literal["previous", "median"]
Status = Literal["normal", "anomaly", "insufficient_history"]

MAD_TO_Z = 0.6745
"""The robust z-score's constant: the 0.75 quantile of the standard normal distribution."""
MEAN_AD_TO_SIGMA = math.sqrt(math.pi / 2)
"""sigma / mean absolute deviation for a normal distribution (≈ 1.2533)."""
_EQUAL = 1e-9


@dataclass(frozen=True)
class Observation:
    """One value of a metric series.

    Attributes:
        value: the metric.
        logical: the logical date (midnight UTC) or logical time the value is about.
        recorded_at: when the value was measured; the hour of a point whose logical date has
            no time of day.
        has_time: True when `logical` carries a time of day.
        is_flagged: True when the value was judged an anomaly when it was recorded.
    """

    value: float
    logical: datetime
    recorded_at: datetime | None = None
    has_time: bool = False
    is_flagged: bool = False

    @property
    def clock(self) -> datetime:
        """The instant whose hour of day buckets the point: `logical` when it carries a time,
        else `recorded_at` (else `logical`)."""
        if self.has_time or self.recorded_at is None:
            return self.logical
        return self.recorded_at


@dataclass(frozen=True)
class AnomalyRule:
    """How a value is judged against its history; the defaults are the check's defaults."""

    method: Method = "zscore"
    threshold: float = 3.5
    max_relative_change: float = 0.5
    compare_to: Baseline = "previous"
    direction: Direction = "both"
    window: int = 30
    window_unit: WindowUnit = "points"
    seasonality: Seasonality = "none"
    min_history: int = 7


@dataclass(frozen=True)
class Verdict:
    """What the history says about a tested value.

    `score` is the robust z-score (method zscore) or the relative change (relative_change);
    `lower` / `upper` bound the values that are not anomalies (None: unbounded on that side,
    or no training); `median` and `mad` describe the training set.
    """

    status: Status
    score: float | None
    median: float | None
    mad: float | None
    lower: float | None
    upper: float | None
    training_size: int
    reason: str

    @property
    def is_anomaly(self) -> bool:
        """True when the value is an anomaly."""
        return self.status == "anomaly"


def observation(
    value: float, logical_date: str, recorded_at: str | None = None, *, is_flagged: bool = False
) -> Observation:
    """An observation from a stored point's ISO texts (a date or a date-time; naive = UTC)."""
    return Observation(
        value=value,
        logical=_instant(logical_date),
        recorded_at=_instant(recorded_at) if recorded_at else None,
        has_time=len(logical_date.strip()) > len("YYYY-MM-DD"),
        is_flagged=is_flagged,
    )


def current_observation(value: float, logical: date, *, now: datetime | None = None) -> Observation:
    """The observation of a value measured now for the logical date (or date-time) `logical`."""
    has_time = isinstance(logical, datetime)
    instant = _as_utc(logical) if isinstance(logical, datetime) else _midnight(logical)
    return Observation(value, instant, now or datetime.now(UTC), has_time=has_time)


def training_set(
    tested: Observation, history: Sequence[Observation], rule: AnomalyRule
) -> list[Observation]:
    """The points `tested` is judged against, oldest first.

    Of each logical date (and hour, with `hour_of_day`) only the latest recorded point counts:
    a date run again later in the day, or rerun on another day, is one point. Then the points
    earlier than the tested logical date (or time), not flagged, of the same seasonal bucket,
    and the last `window` of them (points) or those of the `window` days before the tested
    date.
    """
    bucket = BUCKETS[rule.seasonality]
    usable = sorted(
        (
            p
            for p in _latest_per_date(history, bucket)
            if p.logical < tested.logical and not p.is_flagged and bucket(p) == bucket(tested)
        ),
        key=lambda p: p.logical,
    )
    if rule.window_unit == "days":
        start = tested.logical - timedelta(days=rule.window)
        return [p for p in usable if p.logical >= start]
    return usable[-rule.window :]


def _latest_per_date(
    history: Sequence[Observation], bucket: Callable[[Observation], int]
) -> list[Observation]:
    """The latest recorded point of each (logical date, bucket); of equal ones, the last."""
    latest: dict[tuple[datetime, int], Observation] = {}
    for point in history:
        key = (point.logical, bucket(point))
        kept = latest.get(key)
        if kept is None or _recorded(point) >= _recorded(kept):
            latest[key] = point
    return list(latest.values())


def _recorded(point: Observation) -> datetime:
    return _as_utc(point.recorded_at) if point.recorded_at else point.logical


def judge(tested: Observation, history: Sequence[Observation], rule: AnomalyRule) -> Verdict:
    """The verdict on `tested` given the earlier points of its series.

    Args:
        tested: the value under test and when it was measured.
        history: earlier points of the series, in any order; flagged ones are not trained on.
        rule: method, thresholds, direction, window, seasonality, minimum history.

    Returns:
        'insufficient_history' when fewer than `rule.min_history` points are usable, else
        'anomaly' or 'normal' with the score and the expected bounds.
    """
    training = training_set(tested, history, rule)
    values = [p.value for p in training]
    if len(values) < rule.min_history:
        return Verdict(
            status="insufficient_history",
            score=None,
            median=statistics.median(values) if values else None,
            mad=_mad(values) if values else None,
            lower=None,
            upper=None,
            training_size=len(values),
            reason=(
                f"insufficient history: {len(values)} usable earlier point(s), "
                f"{rule.min_history} needed"
            ),
        )
    return METHODS[rule.method](tested.value, values, rule)


def robust_zscore(value: float, sample: Sequence[float]) -> tuple[float, float, float, str]:
    """(score, median, scale, basis) of `value` against `sample` (not empty).

    `scale` is the standard deviation estimate: MAD / 0.6745, else mean absolute deviation x
    1.2533, else 0 (a constant sample: score 0 for an equal value, ±inf otherwise). `basis`
    says which one was used: 'MAD', 'mean absolute deviation' or 'constant'.
    """
    median = statistics.median(sample)
    mad = _mad(sample)
    if mad > 0:
        scale, basis = mad / MAD_TO_Z, "MAD"
    else:
        mean_ad = statistics.fmean(abs(x - median) for x in sample)
        scale, basis = mean_ad * MEAN_AD_TO_SIGMA, "mean absolute deviation"
    if scale > 0:
        return (value - median) / scale, median, scale, basis
    if _equal(value, median):
        return 0.0, median, 0.0, "constant"
    return math.copysign(math.inf, value - median), median, 0.0, "constant"


def relative_change(value: float, baseline: float) -> float:
    """`(value - baseline) / |baseline|`; from a baseline of 0, ±inf unless value is 0 too."""
    if baseline == 0:
        return 0.0 if _equal(value, 0.0) else math.copysign(math.inf, value)
    return (value - baseline) / abs(baseline)


def _judge_zscore(value: float, values: list[float], rule: AnomalyRule) -> Verdict:
    score, median, scale, basis = robust_zscore(value, values)
    lower, upper = _bounds(median, rule.threshold * scale, rule.direction)
    is_anomaly = _beyond(score, rule.threshold, rule.direction)
    reason = f"robust z-score {score:.2f}, threshold {rule.threshold:g}{_SCALE_NOTES[basis]}"
    return _verdict(is_anomaly, score, median, values, lower, upper, reason)


def _judge_relative_change(value: float, values: list[float], rule: AnomalyRule) -> Verdict:
    baseline = values[-1] if rule.compare_to == "previous" else statistics.median(values)
    change = relative_change(value, baseline)
    lower, upper = _bounds(baseline, rule.max_relative_change * abs(baseline), rule.direction)
    is_anomaly = _beyond(change, rule.max_relative_change, rule.direction)
    reason = (
        f"change {_percent(change)} from the {rule.compare_to} value, "
        f"at most {rule.max_relative_change:.1%} allowed"
    )
    return _verdict(is_anomaly, change, statistics.median(values), values, lower, upper, reason)


def _verdict(
    is_anomaly: bool,
    score: float,
    median: float,
    values: list[float],
    lower: float | None,
    upper: float | None,
    reason: str,
) -> Verdict:
    return Verdict(
        status="anomaly" if is_anomaly else "normal",
        score=score,
        median=median,
        mad=_mad(values),
        lower=lower,
        upper=upper,
        training_size=len(values),
        reason=reason,
    )


def _beyond(score: float, limit: float, direction: Direction) -> bool:
    if direction == "up":
        return score > limit
    if direction == "down":
        return score < -limit
    return abs(score) > limit


def _bounds(center: float, width: float, direction: Direction) -> tuple[float | None, float | None]:
    lower = None if direction == "up" else center - width
    upper = None if direction == "down" else center + width
    return lower, upper


def _mad(values: Sequence[float]) -> float:
    median = statistics.median(values)
    return statistics.median(abs(x - median) for x in values)


def _equal(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_EQUAL, abs_tol=_EQUAL)


def _percent(fraction: float) -> str:
    return f"{fraction:+.1%}" if math.isfinite(fraction) else f"{fraction:+}"


def _instant(text: str) -> datetime:
    text = text.strip()
    if len(text) <= len("YYYY-MM-DD"):
        return _midnight(date.fromisoformat(text))
    return _as_utc(datetime.fromisoformat(text))


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _as_utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


_SCALE_NOTES = {
    "MAD": "",
    "mean absolute deviation": "; MAD is 0, so the scale is the mean absolute deviation",
    "constant": "; every training value is the same, so only that value is normal",
}

BUCKETS: dict[Seasonality, Callable[[Observation], int]] = {
    "none": lambda p: 0,
    "day_of_week": lambda p: p.logical.weekday(),
    "hour_of_day": lambda p: _as_utc(p.clock).hour,
}
"""Seasonality → the bucket of a point; a value is trained on points of its own bucket."""

METHODS: dict[Method, Callable[[float, list[float], AnomalyRule], Verdict]] = {
    "zscore": _judge_zscore,
    "relative_change": _judge_relative_change,
}
