"""What a spec declares about a pipeline besides its data flow: the source inventory, service
levels, quality targets, compliance, cost, the storage layer and the retry policy.

The pre-flight review (`sluice check`) reads these to decide whether a pipeline is ready for
production, `sluice doc` renders them, `sluice cost` and `sluice retention` act on them, and
`sluice run` applies the retry policy and timeout.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sluiceway.core.durations import parse_duration
from sluiceway.core.storage import StorageOptions

Layer = Literal["bronze", "silver", "gold"]
AccessPattern = Literal["full", "incremental", "cdc", "stream", "api", "snapshot"]

_PER_DAY = {
    "s": 86_400.0,
    "sec": 86_400.0,
    "second": 86_400.0,
    "min": 1_440.0,
    "minute": 1_440.0,
    "h": 24.0,
    "hour": 24.0,
    "d": 1.0,
    "day": 1.0,
    "w": 1 / 7,
    "week": 1 / 7,
    "month": 12 / 365,
    "year": 1 / 365,
}
_COUNT_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9}
_BYTE_SUFFIX = {"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}
_RATE = re.compile(
    r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]b|[kmb])?\s*(?P<what>rows?|events?|records?|"
    r"messages?|changes?)?\s*/\s*(?P<per>[a-z]+?)s?\s*$",
    re.IGNORECASE,
)
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
DEFAULT_ROW_BYTES = 100


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Volume:
    """A parsed volume: rows per day or bytes per day (one of them)."""

    def __init__(self, *, rows_per_day: float | None = None, bytes_per_day: float | None = None):
        self.rows_per_day = rows_per_day
        self.bytes_per_day = bytes_per_day

    def stored_bytes_per_day(self, row_bytes: int | None) -> float:
        """Bytes landing per day: the declared bytes, or rows × bytes per row."""
        if self.bytes_per_day is not None:
            return self.bytes_per_day
        return (self.rows_per_day or 0.0) * (row_bytes or DEFAULT_ROW_BYTES)


def parse_volume(text: str) -> Volume:
    """'100000/s', '2M rows/day', '40GB/day', '1.5k events/min' → a `Volume`.

    Raises:
        ValueError: `text` is not a count or a size per time unit.
    """
    match = _RATE.match(str(text))
    per = (match.group("per").lower() if match else "").rstrip("s") or "s"
    if not match or per not in _PER_DAY:
        raise ValueError(
            f"volume '{text}' is not a rate: write rows or bytes per time unit, e.g. "
            "'100000/s', '2M rows/day', '40GB/day'"
        )
    number = float(match.group("n"))
    unit = (match.group("unit") or "").lower()
    if unit in _BYTE_SUFFIX:
        return Volume(bytes_per_day=number * _BYTE_SUFFIX[unit] * _PER_DAY[per])
    return Volume(rows_per_day=number * _COUNT_SUFFIX[unit] * _PER_DAY[per])


def parse_percent(value: str | float) -> float:
    """'99.9%' or 99.9 or 0.999 → 0.999."""
    if isinstance(value, int | float):
        number = float(value)
        return number / 100 if number > 1 else number
    match = _PERCENT.match(value)
    if not match:
        raise ValueError(f"'{value}' is not a percentage: write e.g. '99.9%'")
    return float(match.group(1)) / 100


def check_duration(value: str | None, what: str) -> str | None:
    """`value` when it is a duration (or None); raises ValueError naming `what` otherwise."""
    if value is not None:
        parse_duration(value, what=what)
    return value


class Inventory(_Model):
    """What is known about a source before it runs: size, pace, who owns it."""

    volume: str | None = Field(
        None, description="Expected volume per time unit: '100000/s', '2M rows/day', '40GB/day'."
    )
    freshness: str | None = Field(
        None, description="How old the newest source data may be when read, e.g. '5m', '1d'."
    )
    owner: str | None = Field(None, description="Who owns the source system or its export.")
    access_pattern: AccessPattern | None = Field(
        None, description="How it is read: full, incremental, cdc, stream, api or snapshot."
    )
    row_bytes: int | None = Field(
        None, gt=0, description=f"Average stored bytes per row (default {DEFAULT_ROW_BYTES})."
    )

    @field_validator("volume")
    @classmethod
    def _volume_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_volume(value)
        return value

    @field_validator("freshness")
    @classmethod
    def _freshness_parses(cls, value: str | None) -> str | None:
        return check_duration(value, "freshness")


class Sla(_Model):
    """The service levels the pipeline promises its consumers."""

    latency: str | None = Field(
        None, description="Longest run (batch) or p99 end-to-end latency (stream), e.g. '30m'."
    )
    freshness: str | None = Field(
        None, description="How old the newest published data may get, e.g. '1d', '5m'."
    )
    availability: str | float | None = Field(
        None, description="Share of scheduled runs that must succeed, e.g. '99.9%'."
    )
    throughput: str | None = Field(
        None, description="Rate the pipeline must sustain, e.g. '100000/s'."
    )

    @field_validator("latency", "freshness")
    @classmethod
    def _durations_parse(cls, value: str | None) -> str | None:
        return check_duration(value, "sla duration")

    @field_validator("availability")
    @classmethod
    def _availability_parses(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            parse_percent(value)
        return value

    @field_validator("throughput")
    @classmethod
    def _throughput_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_volume(value)
        return value


class QualityTargets(_Model):
    """The quality standard the output must meet."""

    completeness: float | None = Field(
        None, ge=0, le=1, description="Least share of non-null values in required columns."
    )
    pass_rate: float | None = Field(
        None, ge=0, le=1, description="Least share of input rows that must pass (not rejected)."
    )


class Compliance(_Model):
    """How long data is kept, whose data it is, and which rules apply."""

    retention: str | None = Field(
        None, description="How long rows are kept, e.g. '400d'; `sluice retention` enforces it."
    )
    retention_column: str | None = Field(
        None,
        description="Date or timestamp column that dates a row (default: the first "
        "partition column of each table).",
    )
    subject_key: str | None = Field(
        None, description="Column identifying a data subject, for `sluice forget`."
    )
    regulations: list[str] = Field(
        default_factory=list, description="Regulations that apply, e.g. [GDPR, CCPA]."
    )
    audit: bool = Field(True, description="Record operations on this data in the audit log.")

    @field_validator("retention")
    @classmethod
    def _retention_parses(cls, value: str | None) -> str | None:
        return check_duration(value, "retention")


class CostTargets(_Model):
    """What the pipeline may cost and how fast it grows."""

    budget_per_month: float | None = Field(None, ge=0, description="Monthly budget (currency).")
    growth_per_year: float | None = Field(
        None, gt=0, description="Volume multiplier per year, e.g. 2.0 doubles each year."
    )
    currency: str = Field("USD", description="Currency of the budget and the prices.")
    prices: dict[str, float] = Field(
        default_factory=dict,
        description="Overrides of the price table (see `sluice cost --prices`), e.g. "
        "{storage_hot_gb_month: 0.023}.",
    )


class RetryPolicy(_Model):
    """How a failed run is retried: transient errors only, with exponential backoff."""

    max_attempts: int = Field(3, ge=1, le=50, description="Attempts in all, the first included.")
    backoff: str = Field("10s", description="Wait before the second attempt; doubles after.")
    max_backoff: str = Field("5m", description="Longest wait between attempts.")
    jitter: bool = Field(True, description="Randomise each wait by up to ±25 %.")

    @field_validator("backoff", "max_backoff")
    @classmethod
    def _durations_parse(cls, value: str) -> str:
        parse_duration(value, what="backoff")
        return value


class TierConfig(_Model):
    """A storage tier of a Delta sink: where partitions older than `after` move."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Tier name, e.g. warm, cold.")
    path: str = Field(
        description="Table location of this tier: a path (relative to the spec) or s3://..."
    )
    after: str = Field(description="Partitions older than this move here, e.g. '30d'.")
    compression_level: int = Field(
        9, ge=1, le=22, description="ZSTD level of the files written to this tier."
    )
    storage_options: StorageOptions = Field(
        default_factory=dict,
        repr=False,
        description="Object-store options of this tier's location (use ${ENV} for secrets).",
    )

    @field_validator("after")
    @classmethod
    def _after_parses(cls, value: str) -> str:
        parse_duration(value, what="after")
        return value


class Schedule(_Model):
    """When `sluice scheduler` starts runs of the pipeline."""

    cron: str = Field(description="Cron expression, e.g. '0 2 * * *' (minute hour dom mon dow).")
    timezone: str | None = Field(
        None, description="IANA time zone of the cron (default: the project's, else UTC)."
    )
    catchup: Literal["none", "latest", "all"] = Field(
        "latest",
        description="Missed runs after downtime: none skips them, latest runs the newest "
        "missed one, all runs every missed date in order.",
    )

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(
                f"'{value}' is not a cron expression: write five fields, minute hour "
                "day-of-month month day-of-week, e.g. '0 2 * * *' (02:00 every day)"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)


def check_timezone(value: str) -> str:
    """`value` when it names an IANA time zone; raises ValueError otherwise."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone '{value}': use an IANA name such as 'Europe/Paris'"
        ) from None
    return value
