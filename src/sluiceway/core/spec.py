"""The pipeline spec: frozen pydantic models, the same in YAML and in Python.

Plug-in configs (a source's `type: files`, a `dedup` step, a `not_null` check, a `delta`
sink) subclass the bases here and live in their plug-in modules; the loader dispatches
on the registry.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator, model_validator

from sluiceway.core.spec_meta import (
    Compliance,
    CostTargets,
    Inventory,
    Layer,
    QualityTargets,
    RetryPolicy,
    Schedule,
    Sla,
    check_duration,
)
from sluiceway.core.storage import StorageOptions

ColumnType = Literal[
    "string",
    "integer",
    "bigint",
    "double",
    "float",
    "decimal",
    "boolean",
    "date",
    "timestamp",
    "timestamp_ntz",
    "json",
]
ColumnFormat = Literal["email", "ipv4", "ipv6", "ip", "iso_timestamp", "iso_date", "uuid", "url"]
OnViolation = Literal["dead_letter", "fail", "warn"]
Evolution = Literal["evolve", "freeze", "discard_column"]
Severity = Literal["error", "warn"]
OnFail = Literal["fail", "warn", "dead_letter"]


class Model(BaseModel):
    """Base of every spec model: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ColumnContract(Model):
    """What one column of a source must look like."""

    type: ColumnType = Field("string", description="Logical type the column is cast to.")
    description: str | None = Field(
        None, description="What the column means (shown in `sluice doc` and the catalog)."
    )
    nullable: bool = Field(
        True, description="False: a NULL value (an empty CSV field) rejects the row."
    )
    required: bool = Field(
        False,
        description="True: the column must be present in the source; rows without it are rejected.",
    )
    min: float | None = Field(None, description="Smallest allowed value (numbers, after the cast).")
    max: float | None = Field(None, description="Largest allowed value (numbers, after the cast).")
    values: list[str | int | float | bool] | None = Field(
        None, description="The allowed values; anything else rejects the row."
    )
    regex: str | None = Field(None, description="A regular expression the whole value must match.")
    format: ColumnFormat | None = Field(
        None, description="A well-known format the value must have."
    )
    strftime: str | None = Field(
        None,
        description="Explicit strftime format to parse a date or timestamp (e.g. '%d/%m/%Y %H:%M').",
    )
    min_length: int | None = Field(None, description="Shortest allowed string length.", ge=0)
    max_length: int | None = Field(None, description="Longest allowed string length.", ge=0)
    precision: int = Field(18, description="Precision of a decimal column.", ge=1, le=38)
    scale: int = Field(2, description="Scale of a decimal column.", ge=0, le=38)

    @model_validator(mode="after")
    def _bounds_fit_type(self) -> ColumnContract:
        numeric = ("integer", "bigint", "double", "float", "decimal")
        if (self.min is not None or self.max is not None) and self.type not in numeric:
            raise ValueError(
                f"min/max apply to numeric types ({', '.join(numeric)}), not {self.type}; "
                "use a table check `between` for dates, or regex/values for strings"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is greater than max {self.max:g}")
        return self


class Contract(Model):
    """The data contract of a source: its columns and what happens to rows that break it."""

    columns: dict[str, ColumnContract] = Field(description="Column name → its rules.")
    on_violation: OnViolation = Field(
        "dead_letter",
        description="dead_letter: route bad rows; fail: fail the run; warn: keep and record.",
    )
    evolution: Evolution = Field(
        "evolve",
        description="Columns not in the contract: evolve keeps them (new nullable columns), "
        "freeze rejects rows that carry them, discard_column drops them.",
    )


class SourceConfig(Model):
    """Base of every source config; `type` names the plug-in."""

    type: str = Field(description="The source plug-in, e.g. 'files'.")
    contract: Contract | None = Field(None, description="The data contract of this source.")
    inventory: Inventory | None = Field(
        None, description="Volume, freshness, owner and access pattern of the source."
    )


class StepConfig(Model):
    """Base of every step config.

    `key` is the step's YAML key (`- dedup: {...}`); `shorthand` names the field a scalar or
    list value fills (`- sql: SELECT ...`); `wraps_mapping` makes a mapping value fill it too
    (`- rename: {a: b}`).
    """

    key: ClassVar[str] = ""
    shorthand: ClassVar[str | None] = None
    wraps_mapping: ClassVar[bool] = False

    retries: RetryPolicy | None = Field(
        None,
        description="Retry policy of this step: a transient error (e.g. Redis unreachable) "
        "runs the step again after a backoff; other errors fail at once.",
    )
    timeout: str | None = Field(
        None,
        description="Longest one attempt of this step may take, e.g. '30s'; the running query "
        "is interrupted and the step fails (not retried).",
    )

    @model_validator(mode="before")
    @classmethod
    def _unwrap_full_form(cls, data: Any) -> Any:
        """`- rename: {columns: {a: b}, timeout: 5m}`: the loader wraps every mapping of a
        `wraps_mapping` step into its shorthand field; the full form names that field with
        a mapping value (a column named like the field would map to a string)."""
        if not (cls.wraps_mapping and cls.shorthand and isinstance(data, dict)):
            return data
        inner = data.get(cls.shorthand)
        is_full = isinstance(inner, dict) and isinstance(inner.get(cls.shorthand), dict)
        return inner if list(data) == [cls.shorthand] and is_full else data

    @field_validator("timeout")
    @classmethod
    def _timeout_parses(cls, value: str | None) -> str | None:
        return check_duration(value, "timeout")


class CheckConfig(Model):
    """Base of every table check config; `key` is its YAML key (`- not_null: {...}`)."""

    key: ClassVar[str] = ""
    shorthand: ClassVar[str | None] = None
    wraps_mapping: ClassVar[bool] = False

    severity: Severity = Field("error", description="error: blocks publishing; warn: records only.")
    mostly: float | None = Field(
        None, ge=0, le=1, description="Fraction of rows that must pass (1.0 when unset)."
    )
    name: str | None = Field(None, description="A name for the check in results and reports.")
    on_fail: OnFail | None = Field(
        None,
        description=(
            "fail: blocks publishing (severity error); warn: records only (severity warn); "
            "dead_letter: rows that fail this row-level check go to the dead-letter table."
        ),
    )

    @model_validator(mode="after")
    def _on_fail_agrees_with_severity(self) -> CheckConfig:
        implied = {"fail": "error", "warn": "warn"}.get(self.on_fail or "")
        if implied is None:
            return self
        if "severity" in self.model_fields_set and self.severity != implied:
            raise ValueError(
                f"on_fail: {self.on_fail} contradicts severity: {self.severity}; "
                f"keep one of them (on_fail: {self.on_fail} means severity: {implied})"
            )
        object.__setattr__(self, "severity", implied)
        return self


class ChecksFile(Model):
    """A checks file for `sluice check-data`: table checks without a pipeline."""

    version: Literal[1] = Field(description="Checks file format version; 1 is the only one.")
    checks: list[SerializeAsAny[CheckConfig]] = Field(
        min_length=1, description="Table checks to evaluate on the data."
    )


class SinkConfig(Model):
    """Base of every sink config; `type` names the plug-in."""

    type: str = Field(description="The sink plug-in, e.g. 'delta'.")


class DeadLetterConfig(Model):
    """Where rejected rows go."""

    path: str = Field(description="Delta table of the dead-letter rows (local path or s3://).")
    storage_options: StorageOptions = Field(
        default_factory=dict,
        repr=False,
        description="Object-store options (endpoint, region, keys by ${ENV}).",
    )


PiiMethod = Literal["hash", "hmac", "truncate_ip", "email", "redact", "encrypt"]


class StreamSettings(Model):
    """How a `mode: stream` pipeline cuts the stream into micro-batches."""

    max_batch_rows: int = Field(
        50_000, ge=1, description="A batch closes when it holds this many messages."
    )
    max_batch_seconds: float = Field(
        1.0, gt=0, description="A batch closes this long after its first message at the latest."
    )


class Pipeline(Model):
    """A whole pipeline: sources, contract, steps, PII masking, checks and sinks."""

    version: Literal[1] = Field(description="Spec format version; 1 is the only one.")
    pipeline: str = Field(
        pattern=r"^[a-z][a-z0-9_\-]*$", description="Pipeline name (snake or kebab case)."
    )
    owner: str | None = Field(None, description="Who answers for this pipeline.")
    description: str | None = Field(None, description="What the pipeline produces and for whom.")
    mode: Literal["batch", "stream"] = Field("batch", description="batch or stream.")
    stream: StreamSettings = Field(
        default_factory=StreamSettings, description="Micro-batch bounds of a stream pipeline."
    )
    sources: dict[str, SerializeAsAny[SourceConfig]] = Field(
        min_length=1, description="Named sources."
    )
    primary: str | None = Field(
        None, description="The source that feeds `input` (default: the first source)."
    )
    steps: list[SerializeAsAny[StepConfig]] = Field(
        default_factory=list, description="Transforms, in order."
    )
    pii: dict[str, PiiMethod] = Field(default_factory=dict, description="Column → masking method.")
    checks: list[SerializeAsAny[CheckConfig]] = Field(
        default_factory=list, description="Table checks, audited before publish."
    )
    sinks: list[SerializeAsAny[SinkConfig]] = Field(
        min_length=1, description="Where the result lands."
    )
    dead_letter: DeadLetterConfig | None = Field(
        None,
        description="Dead-letter table (default: <state folder>/dead_letter, shared by the "
        "pipelines of that folder, partitioned by pipeline).",
    )

    layer: Layer | None = Field(
        None, description="Medallion layer of the tables it writes: bronze, silver or gold."
    )
    sla: Sla | None = Field(None, description="Latency, freshness and availability targets.")
    quality: QualityTargets | None = Field(
        None, description="Quality standard: completeness and pass rate."
    )
    compliance: Compliance | None = Field(
        None, description="Retention, data-subject key and regulations."
    )
    cost: CostTargets | None = Field(None, description="Monthly budget and growth.")
    retries: RetryPolicy | None = Field(
        None, description="Retry policy of a batch run (transient errors only)."
    )
    timeout: str | None = Field(
        None, description="Longest a batch run may take, e.g. '2h'; a longer run fails."
    )

    depends_on: list[str] = Field(
        default_factory=list,
        description="Pipelines that must succeed first (for --all, --downstream, backfills).",
    )
    schedule: Schedule | None = Field(
        None, description="Cron schedule for `sluice scheduler`: '0 2 * * *' or {cron, ...}."
    )
    range_capable: bool = Field(
        False,
        description="A backfill may run one run over the whole date range instead of one "
        "run per date (the steps use logical_date() ranges themselves).",
    )

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_object(cls, value: object) -> object:
        return {"cron": value} if isinstance(value, str) else value

    @field_validator("timeout")
    @classmethod
    def _timeout_parses(cls, value: str | None) -> str | None:
        return check_duration(value, "timeout")

    @property
    def primary_source(self) -> str:
        """The name of the source that feeds `input`."""
        return self.primary or next(iter(self.sources))

    def spec_hash(self) -> str:
        """A short stable fingerprint of the whole spec."""
        blob = json.dumps(self.to_data(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_data(self) -> dict[str, Any]:
        """The spec as plain data, in the YAML shape (steps and checks under their keys)."""
        data = self.model_dump(mode="json", exclude_none=True)
        data["steps"] = [{s.key: s.model_dump(mode="json", exclude_none=True)} for s in self.steps]
        data["checks"] = [
            {c.key: c.model_dump(mode="json", exclude_none=True)} for c in self.checks
        ]
        return data
