"""Bugs found reviewing the run store adapter (`core.store_db`) and its users, each pinned on
SQLite and on PostgreSQL (the server at 127.0.0.1:5432; start it with
`bash scripts/services/postgres.sh`): prefixes with LIKE wildcards, JSON that readers reject,
NUL characters, schema names, URL parameters and passwords, placeholders in identifiers,
and the order of runs started in the same second."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sluiceway.core import leases
from sluiceway.core.runstore import MetricPoint, RunRecord, RunStore
from sluiceway.core.store_db import StoreLocation, connect, parse_location, scrub_url
from sluiceway.errors import ConfigError
from sluiceway.observability.metrics import render_metrics
from sluiceway.observability.report import RunIndex
from sluiceway.ui.data import StoreReader

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def location(store_location: StoreLocation) -> StoreLocation:
    return store_location


def _unused_schema(pg: psycopg.Connection[Any], name: str) -> Iterator[str]:
    yield name
    pg.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def fresh_schema(pg: psycopg.Connection[Any]) -> Iterator[str]:
    """A schema name nobody created yet, dropped afterwards."""
    yield from _unused_schema(pg, f"sw_review_{uuid.uuid4().hex[:8]}")


@pytest.fixture
def mixed_case_schema(pg: psycopg.Connection[Any]) -> Iterator[str]:
    """A mixed-case schema name nobody created yet, dropped afterwards."""
    yield from _unused_schema(pg, f"Sw_Review_{uuid.uuid4().hex[:8]}")


def run(run_id: str, started_at: str = "20250115T020000", **fields: Any) -> RunRecord:
    values: dict[str, Any] = {"pipeline": "orders", "logical_date": "2025-01-15"}
    values["status"] = "succeeded"
    values.update(fields)
    return RunRecord(run_id=run_id, started_at=started_at, **values)


def test_a_run_prefix_with_an_underscore_or_percent_matches_only_those_characters(
    location: StoreLocation,
) -> None:
    store = RunStore(location)
    store.save(run("batch_1"))
    store.save(run("batchX1"))
    store.save(run("50%-off"))
    store.save(run("50-off"))

    found = store.get("batch_")
    percent = store.get("50%")

    assert found is not None and found.run_id == "batch_1"
    assert percent is not None and percent.run_id == "50%-off"


def test_an_exact_run_id_is_found_even_when_it_prefixes_another_id(
    location: StoreLocation, tmp_path: Path
) -> None:
    store = RunStore(location)
    store.save(run("20250115T020000-aaaa0001"))
    store.save(run("20250115T020000-aaaa0001-stream"))

    found = store.get("20250115T020000-aaaa0001")
    indexed = RunIndex(tmp_path, location=location).record("20250115T020000-aaaa0001")

    assert found is not None and found.run_id == "20250115T020000-aaaa0001"
    assert indexed is not None and indexed.run_id == "20250115T020000-aaaa0001"
    assert store.get("20250115T020000-aaaa") is None


def test_a_nan_in_a_runs_details_does_not_break_crash_detection_or_metrics(
    location: StoreLocation,
) -> None:
    store = RunStore(location)
    nan_details = {"mode": "batch", "checks": [{"name": "mean", "observed_value": math.nan}]}
    store.save(run("odd", status="failed", details=nan_details))
    store.save(run("s1", "2025-01-15T00:00:00", status="running", details={"mode": "stream"}))
    store.save(run("b1", "20000101T000000", status="running", details={"mode": "batch"}))

    interrupted = store.mark_interrupted("orders", mode="stream")
    crashed = leases.mark_crashed(location, "orders", ttl_s=60)
    exposition = render_metrics(location).decode()

    assert interrupted == ["s1"]
    assert [c.run_id for c in crashed] == ["b1"]
    assert 'sluice_runs_total{pipeline="orders",status="failed"} 1.0' in exposition
    odd = store.get("odd")
    assert odd is not None and odd.details["checks"][0]["observed_value"] is None


def test_nul_characters_in_an_error_or_details_are_stored_and_read_back(
    location: StoreLocation,
) -> None:
    store = RunStore(location)
    store.save(run("nul-error", status="failed", error="bad\x00byte", details={"mode": "stream"}))
    store.save(run("nul-details", status="running", details={"mode": "stream", "v": "a\x00b"}))

    marked = store.mark_interrupted("orders", mode="stream")
    record = store.get("nul-error")

    assert marked == ["nul-details"]
    assert record is not None and record.error is not None
    assert record.error.startswith("bad") and record.error.endswith("byte")


def test_unicode_quotes_and_long_details_round_trip(location: StoreLocation) -> None:
    store = RunStore(location)
    details = {"mode": "batch", "note": 'l\'été ☃ "q" ?%_' * 5000, "n": list(range(20000))}
    store.save(run("uni-é", error="it's 100% ? done", details=details))

    record = store.get("uni-é")

    assert record is not None and record.details == details
    assert record.error == "it's 100% ? done"


def test_a_question_mark_or_percent_inside_a_quoted_identifier_is_not_a_placeholder(
    location: StoreLocation,
) -> None:
    RunStore(location)
    with connect(location) as con:
        row = con.execute('SELECT ? AS "what?", \'100%\' AS "a%b" -- why? 5%\n', ("x",)).fetchone()

    assert tuple(row) == ("x", "100%")


def test_the_report_lists_stream_and_batch_runs_by_start_time(
    location: StoreLocation, tmp_path: Path
) -> None:
    store = RunStore(location)
    store.save(run("batch-early", "20250115T020000"))
    store.save(run("stream-late", "2025-01-15T03:00:00+00:00"))

    index = RunIndex(tmp_path, location=location)

    assert [s.run_id for s in index.summaries()] == ["stream-late", "batch-early"]
    assert [r.run_id for r in index.recent_records(None, 1)] == ["stream-late"]


def test_the_dashboard_takes_the_run_saved_last_as_latest_among_runs_of_one_second(
    location: StoreLocation,
) -> None:
    store = RunStore(location)
    store.save(run("20250115T020000-ffff0001", status="failed"))
    store.save(run("20250115T020000-0000aaaa", status="succeeded"))

    state = StoreReader(location).pipeline_states()["orders"]
    page, _ = StoreReader(location).runs("orders", offset=0, limit=10)

    assert state.last is not None and state.last.run_id == "20250115T020000-0000aaaa"
    assert [r.run_id for r in page] == [r.run_id for r in store.list()]


def test_a_replay_is_left_out_of_trends_freshness_and_the_last_success(
    location: StoreLocation, tmp_path: Path
) -> None:
    """A `sluice replay` of a date's dead letters is a run, not a load of the date."""
    store = RunStore(location)
    checks = [{"check_id": "c1", "name": "rows", "check": "row_count", "status": "passed"}]
    store.save(
        run(
            "20250115T020000-load",
            rows_in=1512,
            rows_written=1476,
            rows_rejected=36,
            finished_at="20250115T020100",
            details={"checks": checks},
        )
    )
    store.save(
        run(
            "20250116T090000-replay",
            "20250116T090000",
            rows_in=33,
            rows_written=0,
            rows_rejected=33,
            finished_at="20250116T090100",
            details={"checks": checks, "replay": True},
        )
    )

    state = StoreReader(location).pipeline_states()["orders"]
    index = RunIndex(tmp_path, location=location)
    exposition = render_metrics(location).decode()

    assert state.last is not None and state.last.run_id == "20250116T090000-replay"
    assert state.last_success is not None
    assert state.last_success.run_id == "20250115T020000-load"
    assert [(p.run_id, p.rows_in) for p in index.run_points("orders", 10)] == [
        ("20250115T020000-load", 1512)
    ]
    assert {p.run_id for p in index.check_points("orders", 10)} == {"20250115T020000-load"}
    assert 'sluice_last_success_timestamp_seconds{pipeline="orders"} 1.73690646e+09' in exposition


# --- PostgreSQL locations ---------------------------------------------------------------------


def test_a_mixed_case_schema_is_created_and_used_as_written(
    mixed_case_schema: str, pg: psycopg.Connection[Any], tmp_path: Path
) -> None:
    location = parse_location(f"{PG_URL}?schema={mixed_case_schema}", base=tmp_path)

    RunStore(location).save(run("r1"))

    [(count,)] = pg.execute(f'SELECT count(*) FROM "{mixed_case_schema}".runs').fetchall()
    assert count == 1
    assert [r.run_id for r in RunStore(location).list()] == ["r1"]


def test_a_reserved_pg_schema_name_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="pg_runs"):
        parse_location(f"{PG_URL}?schema=pg_runs", base=Path())


_FIRST_USE = """
import sys
from pathlib import Path
from sluiceway.core import leases
from sluiceway.core.runstore import MetricPoint, RunRecord, RunStore
from sluiceway.core.store_db import parse_location
location = parse_location(sys.argv[1], base=Path())
RunStore(location).save(RunRecord(sys.argv[2], "orders", "2025-01-15", "succeeded", "x"))
leases.prune_daily(location, keep_days=100000, keep_runs=10)
"""


def test_processes_using_a_new_schema_at_once_all_succeed(fresh_schema: str) -> None:
    url = f"{PG_URL}?schema={fresh_schema}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _FIRST_USE, url, f"r{n}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(4)
    ]
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]

    assert [w.returncode for w in workers] == [0] * 4, outputs
    stored = RunStore(parse_location(url, base=Path())).list()
    assert sorted(r.run_id for r in stored) == ["r0", "r1", "r2", "r3"]


def test_connection_options_in_the_url_reach_the_server(schema: str) -> None:
    options = "-c%20statement_timeout%3D4321%20-c%20timezone%3DAsia/Tokyo"
    location = parse_location(f"{PG_URL}?options={options}&schema={schema}", base=Path())

    with connect(location) as con:
        timeout = con.execute("SHOW statement_timeout").fetchone()[0]
        zone = con.execute("SHOW timezone").fetchone()[0]
        current = con.execute("SELECT current_schema()").fetchone()[0]

    assert timeout == "4321ms"
    assert zone == "UTC"
    assert current == schema


def test_a_password_given_as_a_url_parameter_never_appears_in_labels_or_errors() -> None:
    secret = "hunter2-pass"
    location = parse_location(
        f"postgresql://postgres@127.0.0.1:1/postgres?password={secret}&schema=x", base=Path()
    )

    assert secret not in location.label and secret not in repr(location)
    assert secret not in scrub_url(f"postgresql://u@h/db?sslmode=disable&password={secret}")
    with pytest.raises(ConfigError) as caught, connect(location):
        pass
    assert secret not in str(caught.value)


def test_a_percent_encoded_password_is_hidden_in_both_spellings() -> None:
    location = parse_location("postgresql://u:p%40ss%2Fw0rd@127.0.0.1:1/db", base=Path())

    scrubbed = location.scrub("auth failed for p@ss/w0rd (p%40ss%2Fw0rd)")

    assert "p@ss/w0rd" not in scrubbed and "p%40ss%2Fw0rd" not in scrubbed
    assert "p@ss" not in repr(location) and "p%40ss" not in repr(location)


def test_an_ipv6_host_keeps_its_brackets_in_the_label() -> None:
    location = parse_location("postgresql://u:secret@[::1]:5432/db", base=Path())

    assert location.label.startswith("postgresql://u:***@[::1]:5432/db")


def test_a_url_without_a_schema_parameter_uses_the_sluice_schema() -> None:
    location = parse_location("postgres://u@h:5432/db?sslmode=disable", base=Path())

    assert location.schema == "sluice"
    assert location.url == "postgresql://u@h:5432/db?sslmode=disable"


def test_a_read_only_session_refuses_writes(location: StoreLocation) -> None:
    RunStore(location)

    with pytest.raises(Exception) as caught, connect(location, read_only=True) as con:
        con.execute("DELETE FROM runs")

    assert "read" in str(caught.value).lower()


def test_two_writers_of_the_same_metric_points_keep_one_point_per_date_and_hour(
    location: StoreLocation,
) -> None:
    store = RunStore(location)
    days = [f"2025-01-{day:02d}" for day in range(1, 21)]
    start = threading.Barrier(2)

    def write(value: float) -> None:
        for day in days:
            start.wait()
            point = MetricPoint("r", "orders", "staged", "c1", "rows", day, value, f"{day}T10:00")
            store.save_metrics([point])

    writers = [threading.Thread(target=write, args=(v,)) for v in (1.0, 2.0)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    history = store.metric_history("orders", "c1", "rows")
    assert [p.logical_date for p in history] == days


def test_the_store_session_runs_in_utc_whatever_pgtz_says(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGTZ", "America/New_York")
    location = parse_location(f"{PG_URL}?schema={schema}", base=Path())
    store = RunStore(location)

    def point(value: float, at: str) -> MetricPoint:
        return MetricPoint("r", "orders", "staged", "c1", "rows", "2025-01-15", value, at)

    store.save_metrics([point(1, "2025-01-15T10:05:00")])
    store.save_metrics([point(2, "2025-01-15T10:40:00")])
    with connect(location, read_only=True) as con:
        zone = con.execute("SHOW timezone").fetchone()[0]

    assert zone == "UTC"
    assert [p.value for p in store.metric_history("orders", "c1", "rows")] == [2.0]


def test_a_store_written_by_an_earlier_version_with_nan_in_details_still_reads(
    tmp_path: Path,
) -> None:
    location = parse_location(str(tmp_path / "runs.db"), base=tmp_path)
    store = RunStore(location)
    store.save(run("b1", "20000101T000000", status="running", details={"mode": "batch"}))
    with connect(location) as con:
        con.execute(
            "INSERT INTO runs (run_id, pipeline, logical_date, status, started_at, details) "
            "VALUES ('old', 'orders', '2024-01-01', 'running', '20240101T000000', ?)",
            ('{"mode": "stream", "observed_value": NaN}',),
        )

    crashed = leases.mark_crashed(location, "orders", ttl_s=60)
    exposition = render_metrics(location).decode()

    assert [c.run_id for c in crashed] == ["b1"]
    assert 'sluice_runs_in_progress{pipeline="orders"} 1.0' in exposition


def test_a_role_that_may_only_read_an_existing_store_lists_its_runs(
    schema: str, pg: psycopg.Connection[Any]
) -> None:
    RunStore(parse_location(f"{PG_URL}?schema={schema}", base=Path())).save(run("r1"))
    role = f"sw_reader_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE ROLE {role} LOGIN")
    pg.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
    pg.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    try:
        url = f"postgresql://{role}@127.0.0.1:5432/postgres?schema={schema}"
        listed = [r.run_id for r in RunStore(parse_location(url, base=Path())).list()]
    finally:
        pg.execute(f"DROP OWNED BY {role}")
        pg.execute(f"DROP ROLE {role}")

    assert listed == ["r1"]


@pytest.mark.parametrize(
    "value",
    ["host=db.internal dbname=ops user=sluice password=s3cret", "dbname=ops", " PORT = 5432"],
)
def test_a_libpq_keyword_string_is_refused_not_taken_for_a_file(value: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="libpq key=value string") as caught:
        parse_location(value, base=tmp_path)
    assert "s3cret" not in str(caught.value)
    assert not list(tmp_path.iterdir()), "nothing may be created for a refused location"


def test_a_file_whose_name_has_an_equals_sign_is_still_a_file(tmp_path: Path) -> None:
    location = parse_location("runs=2025.db", base=tmp_path)
    assert location.dialect == "sqlite"
    assert location.path == (tmp_path / "runs=2025.db").resolve()
