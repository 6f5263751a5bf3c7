"""Which alerts a run_finished event raises, and which routes take them."""

from __future__ import annotations

from typing import Any

from sluiceway.core.events import Event
from sluiceway.core.loader import parse_spec
from sluiceway.core.project import AlertRoute
from sluiceway.observability.alert_payloads import Alert
from sluiceway.observability.alerts import alerts_from_run, route_accepts

SPEC = """
version: 1
pipeline: orders
sources: {orders: {type: files, path: data/, format: csv}}
sinks: [{type: delta, path: lake/orders}]
"""


def check(name: str, kind: str, severity: str, status: str) -> dict[str, Any]:
    return {
        "name": name,
        "check": kind,
        "severity": severity,
        "status": status,
        "observed_value": 7,
        "message": f"{name} judged",
    }


def finished(**fields: Any) -> Event:
    base = {"status": "succeeded", "logical_date": "2025-01-15", "duration_s": 1.0}
    return Event(name="run_finished", pipeline="orders", run_id="r1", fields={**base, **fields})


def kinds(alerts: list[Alert]) -> list[tuple[str, str | None]]:
    return [(a.kind, a.check) for a in alerts]


def test_only_error_checks_and_anomalies_raise_check_alerts() -> None:
    checks = [
        check("not_null", "not_null", "error", "failed"),
        check("unique", "unique", "warn", "failed"),
        check("volume", "anomaly", "warn", "failed"),
        check("range", "between", "error", "passed"),
    ]

    alerts = alerts_from_run(parse_spec(SPEC), finished(checks=checks))

    assert kinds(alerts) == [("check_failed", "not_null"), ("anomaly", "volume")]
    assert alerts[0].observed == 7 and alerts[0].inspect == "sluice show r1"


def test_a_successful_run_without_rejects_raises_nothing() -> None:
    accounting = {"rows_in": 10, "rows_rejected": 0}

    assert alerts_from_run(parse_spec(SPEC), finished(accounting=accounting)) == []


def test_the_dead_letter_alert_goes_only_to_routes_whose_threshold_it_exceeds() -> None:
    accounting = {"rows_in": 100, "rows_rejected": 3}
    [alert] = alerts_from_run(parse_spec(SPEC), finished(accounting=accounting))
    strict = AlertRoute(name="strict", type="http", url="http://x", dead_letter_rate=0.01)
    lenient = AlertRoute(name="lenient", type="http", url="http://x", dead_letter_rate=0.05)

    assert (alert.kind, alert.observed) == ("dead_letter_rate", 0.03)
    assert route_accepts(strict, alert) and not route_accepts(lenient, alert)


def test_routes_filter_by_event_kind_and_pipeline() -> None:
    alert = Alert(kind="run_failed", pipeline="orders", summary="failed")
    failures_only = AlertRoute(name="a", type="http", url="http://x", on=["run_failed"])
    freshness_only = AlertRoute(name="b", type="http", url="http://x", on=["freshness"])
    other_pipeline = AlertRoute(name="c", type="http", url="http://x", pipelines=["payments"])

    assert route_accepts(failures_only, alert)
    assert not route_accepts(freshness_only, alert)
    assert not route_accepts(other_pipeline, alert)
