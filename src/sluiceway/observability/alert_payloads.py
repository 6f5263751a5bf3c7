"""An alert, and the bodies each route type sends for it.

- webhook: Slack-compatible JSON, `{"text": ..., "blocks": [...]}` (Slack, Mattermost,
  Rocket.Chat and Teams' Slack-compatible connectors accept it);
- pagerduty: a PagerDuty Events API v2 `trigger` event, deduplicated on the alert key;
- http: the alert itself as JSON;
- command: the alert as JSON on the program's stdin.

An alert names the pipeline, run, check, logical date, observed value and threshold, and the
command that inspects it; it never holds row values, so no PII can reach a route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sluiceway.core.project import AlertEvent, AlertRoute

Severity = Literal["critical", "error", "warning", "info"]
PAGERDUTY_SUMMARY_LIMIT = 1024
SOURCE = "sluiceway"


@dataclass(frozen=True)
class Alert:
    """Something a person should look at.

    Attributes:
        kind: which event (run_failed, check_failed, anomaly, freshness, sla, dead_letter_rate).
        pipeline: the pipeline it concerns.
        summary: one sentence: what happened.
        severity: critical, error, warning or info (PagerDuty's scale).
        run_id: the run it concerns (None for monitor alerts without a run).
        check: the check, sink or measure it concerns (part of the deduplication key).
        logical_date: the run's logical date.
        observed: the value observed (a duration, a share, a check's observed value).
        threshold: the limit it broke.
        inspect: the command that shows the details.
        details: further plain values (counts, URIs, messages; never row values).
        at: when it was raised (ISO 8601, UTC).
    """

    kind: AlertEvent
    pipeline: str
    summary: str
    severity: Severity = "error"
    run_id: str | None = None
    check: str | None = None
    logical_date: str | None = None
    observed: Any = None
    threshold: Any = None
    inspect: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def key(self) -> str:
        """The deduplication key: pipeline + kind + check."""
        return f"{self.pipeline}/{self.kind}/{self.check or '-'}"

    def to_dict(self) -> dict[str, Any]:
        """The alert as plain JSON-ready data, its key included."""
        return {**asdict(self), "key": self.key}

    def text(self) -> str:
        """The alert as a few lines of plain text (Markdown code spans)."""
        lines = [f"[{self.severity.upper()}] {self.kind}: {self.summary}"]
        where = [f"pipeline `{self.pipeline}`"]
        if self.run_id:
            where.append(f"run `{self.run_id}`")
        if self.logical_date:
            where.append(f"logical date {self.logical_date}")
        if self.check:
            where.append(f"check `{self.check}`")
        lines.append(", ".join(where))
        if self.observed is not None:
            lines.append(f"observed: {self.observed}{_limit(self.threshold)}")
        if self.inspect:
            lines.append(f"inspect: `{self.inspect}`")
        return "\n".join(lines)


def _limit(threshold: Any) -> str:
    """' (threshold …)': a check's settings as `min_value 1000, mostly 0.95`."""
    if threshold is None:
        return ""
    if isinstance(threshold, dict):
        threshold = ", ".join(f"{k} {v}" for k, v in threshold.items())
    return f" (threshold {threshold})"


def slack_payload(route: AlertRoute, alert: Alert) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook body: `text` (fallback) and Block Kit blocks."""
    fields = [
        {"type": "mrkdwn", "text": f"*Pipeline*\n`{alert.pipeline}`"},
        {"type": "mrkdwn", "text": f"*Run*\n`{alert.run_id or '-'}`"},
    ]
    if alert.check:
        fields.append({"type": "mrkdwn", "text": f"*Check*\n`{alert.check}`"})
    if alert.observed is not None:
        fields.append(
            {"type": "mrkdwn", "text": f"*Observed*\n{alert.observed}{_limit(alert.threshold)}"}
        )
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*{alert.kind}*: {alert.summary}"},
        },
        {"type": "section", "fields": fields},
    ]
    if alert.inspect:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"Inspect: `{alert.inspect}`"}],
            }
        )
    return {"text": alert.text(), "blocks": blocks}


def pagerduty_payload(route: AlertRoute, alert: Alert) -> dict[str, Any]:
    """A PagerDuty Events API v2 trigger event; `dedup_key` is the alert key, so repeats of
    the same alert update one incident instead of opening new ones."""
    return {
        "routing_key": route.routing_key or "",
        "event_action": "trigger",
        "dedup_key": alert.key,
        "payload": {
            "summary": f"{alert.pipeline}: {alert.summary}"[:PAGERDUTY_SUMMARY_LIMIT],
            "source": SOURCE,
            "severity": alert.severity,
            "component": alert.pipeline,
            "class": alert.kind,
            "timestamp": alert.at,
            "custom_details": {
                k: v for k, v in alert.to_dict().items() if k not in ("summary", "severity")
            },
        },
    }


def json_payload(route: AlertRoute, alert: Alert) -> dict[str, Any]:
    """The alert as JSON (http and command routes)."""
    return alert.to_dict()


PAYLOADS: dict[str, Callable[[AlertRoute, Alert], dict[str, Any]]] = {
    "webhook": slack_payload,
    "pagerduty": pagerduty_payload,
    "http": json_payload,
    "command": json_payload,
}
"""Route type → the body it sends."""


def payload_for(route: AlertRoute, alert: Alert) -> dict[str, Any]:
    """The body `route` sends for `alert`."""
    return PAYLOADS[route.type](route, alert)
