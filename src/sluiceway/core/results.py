"""What a run did, and how it is recorded: the run record and the metric history points."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeGuard

import pyarrow as pa

from sluiceway.checks.table import CheckResult
from sluiceway.core.accounting import RowAccounting
from sluiceway.core.context import WriteResult
from sluiceway.core.runstore import RUN_METRICS, MetricPoint, RunRecord

RUN_METRIC_NAMES = (
    "rows_in",
    "rows_written",
    "rows_rejected",
    "rows_deduplicated",
    "rows_filtered",
    "duration_s",
)
CHECK_METRIC_NAMES = ("observed_value", "unexpected_count", "unexpected_percent", "rows_checked")

RESULTS_VERSION = 1


@dataclass(frozen=True)
class AuditRecord:
    """What auditing cost and showed: engine statements, seconds, unexpected values per check
    (masked where the column is PII, since checks read the staged table)."""

    statements: int
    duration_s: float
    samples: list[list[str]]


@dataclass
class RunResult:
    """What a run did: status, accounting, checks, where data and dead letters are."""

    run_id: str
    pipeline: str
    logical_date: date
    status: str
    accounting: RowAccounting
    checks: list[CheckResult] = field(default_factory=list)
    sinks: list[WriteResult] = field(default_factory=list)
    dead_letter_uri: str | None = None
    dead_letter_rows: int = 0
    rejected_by_rule: dict[str, int] = field(default_factory=dict)
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    primary_source: str | None = None
    """The source the row accounting counts (the others' rejects are dead letters too)."""
    staged_path: str | None = None
    results_path: str | None = None
    error: str | None = None
    duration_s: float = 0.0
    dead_letters: pa.Table | None = None
    note: str | None = None
    error_type: str | None = None
    """The class of the error a failed run stopped on (`GateFailed`, `SourceError`...)."""
    retryable: bool = False
    """The run failed on a transient error (storage, broker): the same run may succeed later."""
    interrupted: bool = False
    """Ctrl-C / SIGINT stopped the run (before its commit it failed; after, it succeeded)."""
    bytes_written: int | None = None
    """Arrow (uncompressed) size of the rows published, for the bytes metric."""
    date_range: tuple[str, str] | None = None
    """First and last logical date of a range run (a backfill of a range-capable pipeline)."""
    steps: list[dict[str, Any]] = field(default_factory=list)
    """Per step: index, step key, duration_s, deduplicated, filtered."""
    replay: bool = False
    """The run replayed dead letters of an earlier run of its date (`sluice replay`)."""
    attempt: int = 1
    """Which attempt of the retry policy this run was (1 without a policy)."""
    max_attempts: int = 1

    def finished_fields(self) -> dict[str, Any]:
        """The run's outcome as event fields (counts, names and check results; no rows)."""
        return {
            "status": self.status,
            "logical_date": str(self.logical_date),
            "error": self.error,
            "retryable": self.retryable,
            "duration_s": self.duration_s,
            "accounting": self.accounting.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
            "sinks": [
                {"uri": s.uri, "rows_written": s.rows_written, "version": s.version}
                for s in self.sinks
            ],
            "dead_letter_uri": self.dead_letter_uri,
            "dead_letter_rows": self.dead_letter_rows,
            "rejected_by_rule": dict(self.rejected_by_rule),
            "sources": dict(self.sources),
            "steps": list(self.steps),
        }

    @property
    def ok(self) -> bool:
        """True when the run succeeded."""
        return self.status == "succeeded"

    def to_record(self, status: str, *, spec_hash: str) -> RunRecord:
        """The run as the run store keeps it."""
        acc = self.accounting
        finished = None if status == "running" else datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        return RunRecord(
            run_id=self.run_id,
            pipeline=self.pipeline,
            logical_date=str(self.logical_date),
            status=status,
            started_at=self.run_id[:15],
            finished_at=finished,
            duration_s=self.duration_s or None,
            spec_hash=spec_hash,
            rows_in=acc.rows_in,
            rows_written=acc.rows_written,
            rows_rejected=acc.rows_rejected,
            rows_deduplicated=acc.rows_deduplicated,
            rows_filtered=acc.rows_filtered,
            rows_warned=acc.rows_warned,
            error=self.error,
            details={
                "checks": [r.to_dict() for r in self.checks],
                "sinks": [vars(s) for s in self.sinks],
                "sources": self.sources,
                "dead_letter_uri": self.dead_letter_uri,
                "dead_letter_rows": self.dead_letter_rows,
                "rejected_by_rule": self.rejected_by_rule,
                "staged_path": self.staged_path,
                "results_path": self.results_path,
                "steps": self.steps,
                "attempt": self.attempt,
                "bytes_written": self.bytes_written,
                **({"replay": True} if self.replay else {}),
                **({"date_range": list(self.date_range)} if self.date_range else {}),
            },
        )

    def results_document(self, audit: AuditRecord) -> dict[str, Any]:
        """The versioned check results of the run, as written to `results/<run_id>.json`."""
        return {
            "version": RESULTS_VERSION,
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "logical_date": str(self.logical_date),
            "status": self.status,
            "statements": audit.statements,
            "duration_s": audit.duration_s,
            "checks": [
                {**check.to_dict(), "unexpected_sample": sample}
                for check, sample in zip(self.checks, audit.samples, strict=True)
            ],
        }

    def metric_points(self) -> list[MetricPoint]:
        """The run's numbers for the metric history: run-level counts and each evaluated
        check's aggregates. Numbers only, never row values.

        The points of a failed check are flagged: the value broke its expectation (for an
        anomaly check, it was judged an anomaly), so anomaly checks do not train on it.
        """
        run_level = {**self.accounting.to_dict(), "duration_s": self.duration_s}
        series = [(RUN_METRICS, name, run_level.get(name), False) for name in RUN_METRIC_NAMES]
        for check in self.checks:
            if check.status != "error":
                flagged = check.status == "failed"
                series += [
                    (check.check_id, m, getattr(check, m), flagged) for m in CHECK_METRIC_NAMES
                ]
        recorded_at = datetime.now(UTC).isoformat(timespec="seconds")
        return [
            MetricPoint(
                run_id=self.run_id,
                pipeline=self.pipeline,
                dataset="staged",
                check_id=check_id,
                metric=metric,
                logical_date=str(self.logical_date),
                value=float(value),
                recorded_at=recorded_at,
                flagged=flagged,
            )
            for check_id, metric, value, flagged in series
            if _is_number(value)
        ]


def was_published(status: str, details: Mapping[str, Any]) -> bool:
    """Whether a run's rows reached its sinks: it succeeded, or a sink committed before it
    failed (between two sinks), or it is a stream (each batch commits on its own). The rows
    of any other failed run were staged, not written."""
    return status == "succeeded" or bool(details.get("sinks")) or details.get("mode") == "stream"


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
