"""What the pre-flight review says about a spec: one finding per check and subject."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["pass", "warn", "fail"]
Group = Literal["readiness", "gate"]

READINESS_CHECKS = ("source inventory", "sla", "quality standards", "compliance", "cost")
GATES = ("data quality", "idempotency", "cost", "observability", "reliability")


@dataclass(frozen=True)
class Finding:
    """One row of the review.

    Attributes:
        group: readiness (is everything stated?) or gate (is it safe to run in production?).
        check: one of READINESS_CHECKS or GATES.
        status: pass, warn or fail.
        reason: what was found, naming the spec path and the value.
        fix: a concrete change to the spec that turns it into a pass ('' when it passed).
        where: the YAML path the finding is about ('' for the whole spec).
    """

    group: Group
    check: str
    status: Status
    reason: str
    fix: str = ""
    where: str = ""


@dataclass(frozen=True)
class Review:
    """Every finding for one spec; it fails when any finding fails."""

    pipeline: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def has_failed(self) -> bool:
        return any(f.status == "fail" for f in self.findings)

    def of(self, status: Status) -> list[Finding]:
        return [f for f in self.findings if f.status == status]

    def to_data(self) -> dict[str, Any]:
        """The review as JSON-ready data (`sluice check --format json`)."""
        counts = {s: len(self.of(s)) for s in ("pass", "warn", "fail")}
        return {
            "pipeline": self.pipeline,
            "passed": not self.has_failed,
            "counts": counts,
            "findings": [asdict(f) for f in self.findings],
        }
